"""Serve optuna-dashboard over a study database, in process."""

from __future__ import annotations

import logging
import socketserver
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from depthsearch.errors import InputError
from depthsearch.storage import cached_storage as cached
from depthsearch.storage import mask_url, open_storage, prime_trials
from depthsearch.storage import study_ids_in as study_ids

__all__ = ["READ_METHODS", "read_only", "serve"]

#: Connections the dashboard's request threads may hold to PostgreSQL at once.
DASHBOARD_CONNECTIONS = 4

_log = logging.getLogger(__name__)


#: What a read-only dashboard answers; every other method (POST, PUT, PATCH, DELETE: deleting a
#: study, renaming it, writing notes) is refused with 405.
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_Wsgi = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def read_only(app: _Wsgi) -> _Wsgi:
    """``app`` refusing every request that could change the database (405, Allow header)."""

    def guarded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        method = str(environ.get("REQUEST_METHOD", "GET")).upper()
        if method in READ_METHODS:
            return app(environ, start_response)
        _log.warning("dashboard: refused %s %s (read-only)", method, environ.get("PATH_INFO"))
        body = (
            b"depthsearch dashboard is read-only: restart it with --allow-writes to let the "
            b"dashboard change the study database\n"
        )
        start_response(
            "405 Method Not Allowed",
            [
                ("Allow", ", ".join(sorted(READ_METHODS))),
                ("Content-Type", "text/plain; charset=utf-8"),
                ("Content-Length", str(len(body))),
            ],
        )
        return [body]

    return guarded


class _ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        _log.debug("dashboard: " + format, *args)


def serve(
    storage_url: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    on_ready: Callable[[str], None] | None = None,
    allow_writes: bool = False,
) -> None:
    """Serves optuna-dashboard for every study in ``storage_url`` until interrupted.

    Read-only unless ``allow_writes``: optuna-dashboard's API can delete and rename studies
    and write notes, unauthenticated, for anyone who reaches the port.

    Raises:
        StorageError: the database cannot be reached.
        InputError: the port is taken or the address cannot be bound.
    """
    from optuna_dashboard import wsgi

    # optuna-dashboard reads a study's trials anew every few seconds: through Optuna's trial
    # cache those reads are incremental, and the first one is made here, fast, per study.
    backend = open_storage(storage_url, connections=DASHBOARD_CONNECTIONS, existing=True)
    storage = cached(backend)
    for sid in study_ids(storage):
        prime_trials(storage, sid)
    app = wsgi(storage)
    if not allow_writes:
        app = read_only(app)
    try:
        server = make_server(
            host, port, app, server_class=_ThreadingServer, handler_class=_QuietHandler
        )
    except OSError as e:
        raise InputError(
            f"cannot serve the dashboard on {host}:{port}: {e.strerror or e} "
            "(is another server on that port? choose one with --port)"
        ) from e
    url = f"http://{host}:{server.server_port}/dashboard"
    _log.info("optuna-dashboard for %s on %s", mask_url(storage_url), url)
    if on_ready is not None:
        on_ready(url)
    try:
        server.serve_forever()
    finally:
        server.server_close()
