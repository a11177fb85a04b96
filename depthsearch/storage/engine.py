"""SQLAlchemy engines: pool sizes, connect arguments, SQLite's journal, the lock engines."""

from __future__ import annotations

import os
from typing import Any

import sqlalchemy
from sqlalchemy.engine import URL

from depthsearch.storage.urls import dialect

__all__ = [
    "CONNECT_TIMEOUT_S",
    "POOL_SIZE",
    "POOL_TIMEOUT_S",
    "connect_args",
    "dispose_lock_engines",
    "engine_kwargs",
    "lock_engine",
    "sqlite_wal",
]

#: The connections a process holds to PostgreSQL, at most: a worker's threads (training,
#: writer, heartbeat) share one (a heartbeat that falls during a write waits for it, a few
#: milliseconds): one per worker, never more. Every storage call in depthsearch holds one
#: connection at a time (a reservation's lock, count and insert share one transaction).
POOL_SIZE = 1
#: How long a thread waits for the process's connection before the pool gives up.
POOL_TIMEOUT_S = 30
CONNECT_TIMEOUT_S = 10


def connect_args(url: URL) -> dict[str, Any]:
    """The driver's arguments for a PostgreSQL connection."""
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


def engine_kwargs(url: URL, connections: int = POOL_SIZE) -> dict[str, Any]:
    """What Optuna's RDB storage gets as ``engine_kwargs`` for ``url``."""
    kind = dialect(url)
    if kind == "postgresql":
        return {
            "pool_size": connections,
            "max_overflow": 0,
            "pool_timeout": POOL_TIMEOUT_S,
            "pool_pre_ping": True,
            "pool_recycle": 300,
            "connect_args": connect_args(url),
        }
    if kind == "sqlite":
        # Several processes write one SQLite file: wait for its lock instead of failing.
        return {"connect_args": {"timeout": 60}}
    return {"pool_pre_ping": True}


_LOCK_ENGINES: dict[str, sqlalchemy.Engine] = {}


def lock_engine(url: str, parsed: URL) -> sqlalchemy.Engine:
    """The engine of :func:`depthsearch.storage.locks.storage_lock` (schema and study
    creation) and of the schema probe before a storage opens: no pool, so nothing stays open
    between uses. A worker's reservations run on the storage's own engine instead."""
    engine = _LOCK_ENGINES.get(url)
    if engine is None:
        args = connect_args(parsed) if dialect(parsed) == "postgresql" else {"timeout": 60}
        engine = sqlalchemy.create_engine(
            parsed, poolclass=sqlalchemy.pool.NullPool, connect_args=args
        )
        _LOCK_ENGINES[url] = engine
    return engine


def dispose_lock_engines() -> None:
    """Forgets the lock engines (they hold no connection: NullPool): what a library call that
    made them leaves behind."""
    while _LOCK_ENGINES:
        _LOCK_ENGINES.popitem()[1].dispose()


def sqlite_wal(engine: sqlalchemy.Engine) -> None:
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
