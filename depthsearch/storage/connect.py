"""Opening a study database: Optuna's RDB storage, its schema created once, heartbeats on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
from optuna.exceptions import StorageInternalError
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, NoSuchModuleError, OperationalError

from depthsearch._optuna import (
    cached,
    ignore_optuna_warnings,
    quiet_experimental,
    schema_versions,
    study_ids,
    tables,
)
from depthsearch.errors import StorageError
from depthsearch.spec import WorkersSpec
from depthsearch.storage.engine import POOL_SIZE, engine_kwargs, lock_engine, sqlite_wal
from depthsearch.storage.locks import storage_lock
from depthsearch.storage.urls import check_supported, describe, dialect, mask_url, parse

__all__ = [
    "RetryHeartbeatStaleTrialCallback",
    "add_indexes",
    "cached_storage",
    "experimental",
    "open_storage",
    "quiet_optuna",
    "study_ids_in",
]

RetryHeartbeatStaleTrialCallback = optuna.storages.RetryHeartbeatStaleTrialCallback


def add_indexes(storage: optuna.storages.RDBStorage) -> None:
    """Creates depthsearch's indexes on Optuna's tables where missing (PostgreSQL, SQLite):
    the reservation's counts read through them. Optuna ignores them, and its migrations keep
    or drop them."""
    with storage.engine.begin() as conn:
        tables.add_indexes(conn)


def open_storage(
    url: str,
    workers: WorkersSpec | None = None,
    *,
    connections: int = POOL_SIZE,
    existing: bool = False,
) -> optuna.storages.RDBStorage:
    """Connects to the study database (creating its tables when needed).

    Heartbeats are on when ``workers`` is given: a trial whose worker stopped beating for
    ``grace_period`` seconds is marked FAIL and retried (up to ``max_retry`` times) with the
    same parameters by the next worker that looks. ``connections``: how many PostgreSQL
    connections the storage may hold at once (a worker holds one; a server of many threads,
    as the dashboard, more). ``existing``: for the commands that only read
    or join (``trials``, ``report``, ``export``, ``dashboard``, ``worker``): a database that
    holds no study yet (a SQLite file that does not exist, a PostgreSQL database without
    Optuna's tables) is an error, and nothing is created.

    Raises:
        StorageError: bad URL, unreachable server, or a schema from an older Optuna.
    """
    parsed = parse(url)
    check_supported(parsed, url)
    hint = f"create a study there first: `depthsearch create STUDY.toml --storage {mask_url(url)}`"
    if existing and dialect(parsed) == "sqlite" and parsed.database:
        path = Path(parsed.database).expanduser()
        if not path.exists():  # asked before the probe below, which would create the file
            raise StorageError(f"no study database at {path} (the file does not exist); {hint}")
    try:
        if dialect(parsed) in ("postgresql", "sqlite") and not _has_schema(url, parsed):
            if existing:
                raise StorageError(f"the database {mask_url(url)} holds no study yet; {hint}")
            _create_schema(url, parsed)
        # A worker joining a study takes no lock and no connection more than its own.
        with quiet_experimental():
            storage = optuna.storages.RDBStorage(
                url,
                engine_kwargs=engine_kwargs(parsed, connections),
                skip_compatibility_check=True,  # made below, one connection at a time
                **_heartbeats(workers),
            )
        if dialect(parsed) == "sqlite":
            sqlite_wal(storage.engine)
        current, head = schema_versions(storage)
    except (OperationalError, DBAPIError, StorageInternalError, NoSuchModuleError, OSError) as e:
        raise StorageError(f"cannot connect to the database {mask_url(url)}: {describe(e)}") from e
    except ImportError as e:
        raise StorageError(
            f"cannot use {mask_url(url)}: its database driver is not installed ({e})"
        ) from e
    if current != head:
        storage.engine.dispose()
        raise StorageError(
            f"the database {mask_url(url)} holds an older Optuna schema ({current}, this "
            f"Optuna needs {head}); upgrade it with `optuna storage upgrade --storage "
            f"{mask_url(url)}` (back it up first)"
        )
    return storage


def _heartbeats(workers: WorkersSpec | None) -> dict[str, Any]:
    """The storage's heartbeat arguments from ``[workers]`` (none without it)."""
    if workers is None:
        return {}
    with quiet_experimental():
        retry = RetryHeartbeatStaleTrialCallback(max_retry=workers.max_retry)
    return {
        "heartbeat_interval": workers.heartbeat_interval,
        "grace_period": workers.grace_period,
        "heartbeat_stale_trial_callback": retry,
    }


def _create_schema(url: str, parsed: URL) -> None:
    """An empty database: one process creates the schema, under the lock (Optuna's schema
    creation holds two connections at once); then it opens as any other."""
    with storage_lock(url), quiet_experimental():
        creating = {**engine_kwargs(parsed), "max_overflow": 1}
        optuna.storages.RDBStorage(url, engine_kwargs=creating).engine.dispose()


def _has_schema(url: str, parsed: URL) -> bool:
    """Whether Optuna's schema is complete, asked on a connection closed before the storage
    opens its own."""
    with lock_engine(url, parsed).connect() as conn:
        return tables.has_schema(conn)


def experimental() -> Any:
    """A block in which Optuna's ExperimentalWarning is not shown (heartbeats, retries and
    TPE's flags have been "experimental" for years: nothing for our users to act on)."""
    return quiet_experimental()


def quiet_optuna() -> None:
    """For a whole command line process: Optuna's experimental and future warnings off."""
    ignore_optuna_warnings()


def cached_storage(backend: optuna.storages.RDBStorage) -> optuna.storages.BaseStorage:
    """``backend`` behind Optuna's trial cache, as ``optuna.load_study`` puts it."""
    return cached(backend)


def study_ids_in(storage: optuna.storages.BaseStorage) -> list[int]:
    """The ids of every study in ``storage``."""
    return study_ids(storage)
