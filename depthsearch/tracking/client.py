"""The MLflow client as a worker's tracker runs it: its settings, and its import done where
the caller chooses."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys

__all__ = ["CLIENT_ENV", "client_env", "preload", "settle_probes"]

#: MLflow client settings in a worker (each kept when already set): a lost server costs a
#: few seconds of one thread, not the client's default minutes of retries; no run links
#: printed on stdout.
CLIENT_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}
#: Modules MLflow's client imports on every request to tell whether it runs on Databricks
#: (request headers); where one is absent, every try searches ``sys.path`` again: about 2 ms of
#: CPU per request, a third of what a trial's requests cost this process.
_PROBED = ("dbruntime", "IPython", "pyspark")


def client_env() -> None:
    """:data:`CLIENT_ENV` in this process's environment, where not set already."""
    for key, value in CLIENT_ENV.items():
        os.environ.setdefault(key, value)


def settle_probes() -> None:
    """Makes the :data:`_PROBED` modules that are not installed fail to import at once (a
    ``None`` in ``sys.modules``), as they would after the search; installed ones are left."""
    for name in _PROBED:
        if name not in sys.modules and importlib.util.find_spec(name) is None:
            sys.modules[name] = None  # type: ignore[assignment]


def preload() -> None:
    """Imports the MLflow client (a second or two of CPU) now, where the caller chooses: a
    worker does it while it loads its data, instead of beside its first trials. A missing
    MLflow is said by the tracker."""
    client_env()
    settle_probes()
    with contextlib.suppress(ImportError):
        import mlflow.entities
        import mlflow.tracking  # noqa: F401
