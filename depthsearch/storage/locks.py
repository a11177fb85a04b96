"""The cross-worker locks: schema and study creation, and a study's reservation.

PostgreSQL: transaction-level advisory locks, taken in short tries so that a waiting worker holds
no server connection (it works unchanged through PgBouncer in transaction pooling mode). SQLite:
``flock`` on a file beside the database (SQLite is one machine by nature).
"""

from __future__ import annotations

import contextlib
import fcntl
import time
import zlib
from collections.abc import Iterator

import sqlalchemy
from sqlalchemy.exc import DBAPIError

from depthsearch._optuna import tables
from depthsearch.storage.engine import lock_engine
from depthsearch.storage.retry import Backoff
from depthsearch.storage.urls import dialect, parse, sqlite_file

__all__ = ["advisory_lock", "lock_key", "sqlite_write", "storage_lock"]


@contextlib.contextmanager
def advisory_lock(
    engine: sqlalchemy.Engine, key: int, *, study_row: int | None = None
) -> Iterator[sqlalchemy.Connection]:
    """``pg_try_advisory_xact_lock`` until it is granted, each try a short transaction;
    yields the connection whose transaction holds it (committed at the end, which frees it).
    ``study_row``: once granted, that study's row is locked ``FOR UPDATE`` too, in the same
    statement (one round trip less while the lock is held).

    A worker waiting for the lock holds no server connection between tries: with a blocking
    ``pg_advisory_xact_lock``, waiters would each hold one, and behind a PgBouncer pool
    smaller than the waiting crowd the heartbeats and reports of running trials could not
    get one.
    """
    if study_row is None:
        attempt = sqlalchemy.text("SELECT CASE WHEN pg_try_advisory_xact_lock(:k) THEN 1 END")
        params = {"k": key}
    else:
        # CASE evaluates its THEN only when the lock was granted.
        attempt = sqlalchemy.text(
            f"SELECT CASE WHEN pg_try_advisory_xact_lock(:k) THEN {tables.STUDY_ROW_LOCK} END"
        )
        params = {"k": key, "s": study_row}
    backoff = Backoff(0.002, 0.05, jitter=0.5)
    while True:
        conn = engine.connect()
        try:
            tx = conn.begin()
            granted = conn.execute(attempt, params).scalar() is not None
        except BaseException:
            conn.close()
            raise
        if granted:
            break
        tx.rollback()
        conn.close()
        time.sleep(backoff.next())
    try:
        yield conn
    except BaseException:
        with contextlib.suppress(DBAPIError):
            tx.rollback()  # ends the transaction, and with it the lock
        raise
    else:
        tx.commit()
    finally:
        conn.close()


@contextlib.contextmanager
def sqlite_write(engine: sqlalchemy.Engine) -> Iterator[sqlalchemy.Connection]:
    """A connection in a SQLite transaction that holds the database's write lock from its
    first statement (``BEGIN IMMEDIATE``, waiting up to the driver's busy timeout): what it
    reads, no other writer changes before it commits, as the study's row lock keeps it on
    PostgreSQL. Committed when the block ends, rolled back when it raises."""
    with engine.connect() as conn:
        conn.exec_driver_sql("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            with contextlib.suppress(DBAPIError):
                conn.rollback()
            raise
        conn.commit()


def lock_key(scope: str) -> int:
    """The advisory lock's key of a scope ("" for the database, a study's name)."""
    return zlib.crc32(f"depthsearch:{scope}".encode()) & 0x7FFFFFFF


@contextlib.contextmanager
def storage_lock(url: str, *, scope: str = "") -> Iterator[None]:
    """A lock shared by every process that uses this storage (and ``scope``, e.g. a study).

    It serialises schema creation (two Optuna processes on an empty PostgreSQL database
    otherwise race on ``CREATE TYPE``), study creation (scope ``""``) and, on SQLite, a
    study's budget check and trial creation (scope: the study's name; PostgreSQL does those
    in one transaction, :func:`depthsearch.storage.reservation.locked_study`).
    """
    parsed = parse(url)
    if dialect(parsed) == "postgresql":
        with advisory_lock(lock_engine(url, parsed), lock_key(scope)):
            yield
    elif (database := sqlite_file(url)) is not None:
        with database.with_name(database.name + ".lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
    else:
        yield
