"""Storage URLs, engine options, heartbeats, the cross-worker lock, retries and masking.

SQLite (one machine) and PostgreSQL (many machines) go through Optuna's RDB storage. Each
worker holds a small pool (see :data:`POOL_SIZE`), so hundreds of workers stay under the
server's ``max_connections``.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import random
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import optuna
import sqlalchemy
from optuna.exceptions import StorageInternalError
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, OperationalError

from depthsearch.errors import StorageError
from depthsearch.search._optuna import (
    quiet_experimental,
    rdb_backend,
    rdb_models,
    study_id,
    study_storage,
)
from depthsearch.spec import WorkersSpec

RetryHeartbeatStaleTrialCallback = optuna.storages.RetryHeartbeatStaleTrialCallback

__all__ = [
    "DEFAULT_STORAGE",
    "MAX_OVERFLOW",
    "POOL_SIZE",
    "RetryHeartbeatStaleTrialCallback",
    "best_complete",
    "dialect_of",
    "mask_url",
    "open_storage",
    "resolve_storage",
    "retry_for",
    "retrying",
    "running_without_heartbeat",
    "storage_lock",
    "take_waiting_trial",
    "trial_counts",
]

_log = logging.getLogger(__name__)

DEFAULT_STORAGE = "sqlite:///depthsearch.db"
ENV_VAR = "DEPTHSEARCH_STORAGE"
#: The connections one engine keeps open to PostgreSQL. A worker's training thread, heartbeat
#: thread and reservation lock share one (they rarely overlap), its reporting process has one:
#: two per worker, so a server's ``max_connections`` fits about half as many workers.
POOL_SIZE = 1
#: Extra short-lived connections at a peak (a reservation holds the lock on one while Optuna
#: creates the trial on another; a heartbeat that falls during a tell), closed once returned.
MAX_OVERFLOW = 2
CONNECT_TIMEOUT_S = 10

T = TypeVar("T")


def resolve_storage(cli_value: str | None) -> str:
    """``--storage`` > ``$DEPTHSEARCH_STORAGE`` > ``sqlite:///depthsearch.db``."""
    if cli_value:
        return cli_value
    return os.environ.get(ENV_VAR) or DEFAULT_STORAGE


def _parse(url: str) -> URL:
    try:
        return make_url(url)
    except (ArgumentError, ValueError) as e:
        raise StorageError(
            f"cannot parse storage URL {_mask_text(url)!r}: expected e.g. "
            "'sqlite:///depthsearch.db' or 'postgresql+psycopg://user:password@host:5432/db'"
        ) from e


def _mask_text(url: str) -> str:
    # For strings that do not even parse: hide whatever sits between "://user:" and "@".
    if "://" in url and "@" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        if ":" in creds:
            creds = creds.split(":", 1)[0] + ":***"
        return f"{scheme}://{creds}@{host}"
    return url


def mask_url(url: str) -> str:
    """The URL with its password replaced by ``***`` (``postgresql://user:***@host/db``)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return _mask_text(url)


def _dialect(url: URL) -> str:
    return url.get_backend_name()


def dialect_of(url: str) -> str:
    """``sqlite``, ``postgresql``, ``mysql``, ... of a storage URL."""
    return _dialect(_parse(url))


def _connect_args(url: URL) -> dict[str, Any]:
    # pg_stat_activity names each connection's process: "depthsearch[PID]".
    args: dict[str, Any] = {
        "connect_timeout": CONNECT_TIMEOUT_S,
        "application_name": f"depthsearch[{os.getpid()}]",
    }
    if url.get_driver_name() == "psycopg":
        # No server-side prepared statements (psycopg 3 prepares a query it ran 5 times): a
        # PgBouncer in transaction mode hands each transaction to any server connection, where
        # the statement was never prepared.
        args["prepare_threshold"] = None
    return args


def _engine_kwargs(url: URL) -> dict[str, Any]:
    dialect = _dialect(url)
    if dialect == "postgresql":
        return {
            "pool_size": POOL_SIZE,
            "max_overflow": MAX_OVERFLOW,
            "pool_pre_ping": True,
            "pool_recycle": 300,
            "connect_args": _connect_args(url),
        }
    if dialect == "sqlite":
        # Several processes write one SQLite file: wait for its lock instead of failing.
        return {"connect_args": {"timeout": 60}}
    return {"pool_pre_ping": True}


def _check_supported(url: URL, raw: str) -> None:
    dialect = _dialect(url)
    if dialect not in ("sqlite", "postgresql", "mysql"):
        raise StorageError(
            f"unsupported storage {mask_url(raw)!r}: use sqlite:///FILE or "
            "postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB"
        )
    if dialect == "sqlite" and url.database in (None, "", ":memory:"):
        raise StorageError(
            f"cannot use {raw!r}: an in-memory SQLite database lives and dies with "
            "one connection, so workers could not share it; use a file, e.g. "
            "sqlite:///depthsearch.db"
        )
    if dialect == "sqlite" and url.database:
        parent = Path(url.database).expanduser().resolve().parent
        if not parent.is_dir():
            raise StorageError(
                f"cannot open storage {mask_url(raw)!r}: the folder {parent} does not exist"
            )


def _describe(e: BaseException) -> str:
    text = str(getattr(e, "orig", None) or e).strip().splitlines()
    return text[0] if text else type(e).__name__


_LOCK_ENGINES: dict[str, sqlalchemy.Engine] = {}


def _lock_engine(url: str, parsed: URL) -> sqlalchemy.Engine:
    """The lock's engine where no storage engine is given (schema and study creation, once per
    process): no pool, so nothing stays open afterwards. A worker's reservations pass the
    storage's own engine instead, whose pooled connection saves a log-in per trial."""
    engine = _LOCK_ENGINES.get(url)
    if engine is None:
        engine = sqlalchemy.create_engine(
            parsed, poolclass=sqlalchemy.pool.NullPool, connect_args=_connect_args(parsed)
        )
        _LOCK_ENGINES[url] = engine
    return engine


@contextlib.contextmanager
def _advisory_lock(engine: sqlalchemy.Engine, key: int) -> Iterator[None]:
    """``pg_try_advisory_xact_lock`` until it is granted, each try a short transaction.

    A worker waiting for the lock holds no server connection between tries: with a blocking
    ``pg_advisory_xact_lock``, waiters would each hold one, and behind a PgBouncer pool
    smaller than the waiting crowd the holder could not get the second connection it needs
    to create its trial (a deadlock that PgBouncer ends by ``query_wait_timeout``).
    """
    delay = 0.002
    while True:
        conn = engine.connect()
        try:
            tx = conn.begin()
            granted = conn.execute(
                sqlalchemy.text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": key}
            ).scalar()
        except BaseException:
            conn.close()
            raise
        if granted:
            break
        tx.rollback()
        conn.close()
        time.sleep(delay * (0.5 + random.random()))
        delay = min(delay * 2, 0.05)
    try:
        yield
    except BaseException:
        with contextlib.suppress(DBAPIError):
            tx.rollback()  # ends the transaction, and with it the lock
        raise
    else:
        tx.commit()
    finally:
        conn.close()


def _lock_key(scope: str) -> int:
    return zlib.crc32(f"depthsearch:{scope}".encode()) & 0x7FFFFFFF


@contextlib.contextmanager
def storage_lock(
    url: str, *, scope: str = "", engine: sqlalchemy.Engine | None = None
) -> Iterator[None]:
    """A lock shared by every process that uses this storage (and ``scope``, e.g. a study).

    It serialises schema creation (two Optuna processes on an empty PostgreSQL database
    otherwise race on ``CREATE TYPE``), study creation (scope ``""``) and a study's budget
    check and trial creation (scope: the study's name). PostgreSQL: a transaction-level
    advisory lock, held until the lock's own transaction ends, so that it works unchanged
    through PgBouncer in transaction pooling mode; ``engine`` (the storage's own) saves a
    connection. SQLite: ``flock`` on a file beside the database (SQLite is one
    machine by nature).
    """
    parsed = _parse(url)
    dialect = _dialect(parsed)
    if dialect == "postgresql":
        with _advisory_lock(engine or _lock_engine(url, parsed), _lock_key(scope)):
            yield
    elif dialect == "sqlite" and parsed.database not in (None, "", ":memory:"):
        lock_path = (
            Path(parsed.database)
            .expanduser()
            .resolve()
            .with_name(Path(parsed.database).name + ".lock")
        )
        with lock_path.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
    else:
        yield


def _sqlite_wal(engine: sqlalchemy.Engine) -> None:
    """Write-ahead logging with ``synchronous = NORMAL`` on every connection from now on.

    SQLite's default (a rollback journal, ``synchronous = FULL``) syncs the disk several times
    per commit; a trial commits once per epoch and once per attribute. In WAL mode with NORMAL,
    a commit is durable when the writing process crashes or is killed (what a worker must
    survive), readers do not block the writer, and only a power cut or an OS crash can drop
    the last commits. WAL needs the database on a local file system, as SQLite always does.
    """

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
        finally:
            cursor.close()

    sqlalchemy.event.listen(engine, "connect", on_connect)
    engine.dispose()  # connections made so far lack the pragmas


def _is_transient(e: BaseException) -> bool:
    if isinstance(e, StorageInternalError):
        return True
    if isinstance(e, OperationalError):
        return True
    return isinstance(e, DBAPIError) and bool(e.connection_invalidated)


def retrying(fn: Callable[[], T], *, wait_s: float, what: str, url: str) -> T:
    """Calls ``fn``, retrying a lost database with backoff for up to ``wait_s`` seconds.

    Raises:
        StorageError: the database stayed away for ``wait_s`` seconds.
    """
    deadline = time.monotonic() + wait_s
    delay = 0.5
    while True:
        try:
            return fn()
        except Exception as e:
            if not _is_transient(e):
                raise
            left = deadline - time.monotonic()
            if left <= 0:
                raise StorageError(
                    f"the database {mask_url(url)} was unreachable for {wait_s:.0f}s while "
                    f"{what}: {_describe(e)}"
                ) from e
            _log.warning(
                "database %s unreachable while %s (%s); retrying in %.1fs",
                mask_url(url),
                what,
                _describe(e),
                min(delay, left),
            )
            time.sleep(min(delay, left) * (0.8 + 0.4 * random.random()))
            delay = min(delay * 2, 15.0)


def retry_for(url: str, wait_s: float) -> Callable[[Callable[[], T], str], T]:
    """:func:`retrying` bound to one database and one wait: what a worker, and its reporting
    process, wrap every storage call in."""

    def retry(fn: Callable[[], T], what: str) -> T:
        return retrying(fn, wait_s=wait_s, what=what, url=url)

    return retry


def open_storage(url: str, workers: WorkersSpec | None = None) -> optuna.storages.RDBStorage:
    """Connects to the study database (creating its tables when needed).

    Heartbeats are on when ``workers`` is given: a trial whose worker stopped beating for
    ``grace_period`` seconds is marked FAIL and retried (up to ``max_retry`` times) with the
    same parameters by the next worker that looks.

    Raises:
        StorageError: bad URL, unreachable server, or a schema from an older Optuna.
    """
    parsed = _parse(url)
    _check_supported(parsed, url)
    kwargs: dict[str, Any] = {}
    if workers is not None:
        with quiet_experimental():
            retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=workers.max_retry)
        kwargs = {
            "heartbeat_interval": workers.heartbeat_interval,
            "grace_period": workers.grace_period,
            "heartbeat_stale_trial_callback": retry,
        }
    try:
        with storage_lock(url), quiet_experimental():
            storage = optuna.storages.RDBStorage(
                url, engine_kwargs=_engine_kwargs(parsed), **kwargs
            )
        if _dialect(parsed) == "sqlite":
            _sqlite_wal(storage.engine)
        return storage
    except RuntimeError as e:
        if "storage upgrade" in str(e):
            raise StorageError(
                f"the database {mask_url(url)} holds an older Optuna schema; upgrade it with "
                f"`optuna storage upgrade --storage {mask_url(url)}` (back it up first)"
            ) from e
        raise
    except (OperationalError, DBAPIError, StorageInternalError, NoSuchModuleError, OSError) as e:
        raise StorageError(
            f"cannot connect to the database {mask_url(url)}: {_describe(e)}"
        ) from e
    except ImportError as e:
        raise StorageError(
            f"cannot use {mask_url(url)}: its database driver is not installed ({e})"
        ) from e


def running_without_heartbeat(study: optuna.Study) -> set[int] | None:
    """Ids of the study's RUNNING trials that never recorded a heartbeat.

    A worker records its first heartbeat milliseconds after ``ask()``; a worker killed in
    between leaves a RUNNING trial that Optuna's stale check never fails (it looks only at
    trials with a heartbeat). ``None`` where the storage keeps no heartbeats.
    """
    backend = rdb_backend(study_storage(study))
    if backend is None:
        return None
    trial, beat = rdb_models.TrialModel, rdb_models.TrialHeartbeatModel
    query = (
        sqlalchemy.select(trial.trial_id)
        .outerjoin(beat, beat.trial_id == trial.trial_id)
        .where(
            trial.study_id == study_id(study),
            trial.state == optuna.trial.TrialState.RUNNING,
            beat.trial_id.is_(None),
        )
    )
    with backend.engine.connect() as conn:
        return set(conn.scalars(query))


def trial_counts(study: optuna.Study) -> dict[optuna.trial.TrialState, int] | None:
    """How many of the study's trials are in each state, counted by the database (no trial is
    read); ``None`` where the storage is not an RDB storage."""
    backend = rdb_backend(study_storage(study))
    if backend is None:
        return None
    trial = rdb_models.TrialModel
    query = (
        sqlalchemy.select(trial.state, sqlalchemy.func.count())
        .where(trial.study_id == study_id(study))
        .group_by(trial.state)
    )
    with backend.engine.connect() as conn:
        counted = {state: int(n) for state, n in conn.execute(query)}
    return {state: counted.get(state, 0) for state in optuna.trial.TrialState}


def take_waiting_trial(study: optuna.Study) -> int | None:
    """Sets the study's oldest WAITING trial (an enqueued or retried one) RUNNING and returns
    its id; ``None`` when none is waiting. Read by id alone: no trial is loaded."""
    backend = rdb_backend(study_storage(study))
    if backend is None:
        return None
    trial = rdb_models.TrialModel
    query = (
        sqlalchemy.select(trial.trial_id)
        .where(
            trial.study_id == study_id(study),
            trial.state == optuna.trial.TrialState.WAITING,
        )
        .order_by(trial.trial_id)
    )
    with backend.engine.connect() as conn:
        waiting = list(conn.scalars(query))
    storage = study_storage(study)
    for trial_id in waiting:
        try:
            if storage.set_trial_state_values(trial_id, state=optuna.trial.TrialState.RUNNING):
                return int(trial_id)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
    return None


def best_complete(study: optuna.Study) -> tuple[float, int] | None:
    """``(value, number)`` of the complete trial with the lowest first objective, asked of
    the database (ties: the lower number); ``None`` when none is complete, or not RDB."""
    backend = rdb_backend(study_storage(study))
    if backend is None:
        return None
    trial, value = rdb_models.TrialModel, rdb_models.TrialValueModel
    query = (
        sqlalchemy.select(value.value, trial.number)
        .join(trial, trial.trial_id == value.trial_id)
        .where(
            trial.study_id == study_id(study),
            trial.state == optuna.trial.TrialState.COMPLETE,
            value.objective == 0,
            value.value.is_not(None),
        )
        .order_by(value.value, trial.number)
        .limit(1)
    )
    with backend.engine.connect() as conn:
        row = conn.execute(query).first()
    return None if row is None else (float(row[0]), int(row[1]))
