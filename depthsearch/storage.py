"""Storage URLs, engine options, heartbeats, the cross-worker lock, retries and masking.

SQLite (one machine) and PostgreSQL (many machines) go through Optuna's RDB storage. Each
worker holds a small pool (see :data:`POOL_SIZE`), so hundreds of workers stay under the
server's ``max_connections``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import random
import time
import zlib
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import optuna
import sqlalchemy
from optuna.exceptions import StorageInternalError
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, OperationalError

from depthsearch.errors import StorageError
from depthsearch.search._optuna import (
    needs_first_read,
    prime_cache,
    quiet_experimental,
    rdb_backend,
    rdb_models,
    schema_versions,
    study_id,
    study_storage,
)
from depthsearch.spec import WorkersSpec

RetryHeartbeatStaleTrialCallback = optuna.storages.RetryHeartbeatStaleTrialCallback

__all__ = [
    "DEFAULT_STORAGE",
    "POOL_SIZE",
    "BudgetCounts",
    "LockedStudy",
    "RetryHeartbeatStaleTrialCallback",
    "Running",
    "add_indexes",
    "best_complete",
    "dialect_of",
    "load_all_trials",
    "locked_study",
    "mask_url",
    "open_storage",
    "prime_trials",
    "recent_finishes",
    "resolve_storage",
    "retry_attrs",
    "retry_for",
    "retrying",
    "running_trials",
    "running_without_heartbeat",
    "sqlite_file",
    "storage_lock",
    "take_waiting_trial",
    "trial_counts",
]

_log = logging.getLogger(__name__)

DEFAULT_STORAGE = "sqlite:///depthsearch.db"
ENV_VAR = "DEPTHSEARCH_STORAGE"
#: The connections a process holds to PostgreSQL, at most: a worker's training thread and
#: heartbeat thread share one (a heartbeat that falls during a tell waits for it, a few
#: milliseconds), its reporting process has one: two per worker, never more, so a server's
#: ``max_connections`` fits half as many workers. Every storage call in depthsearch holds one
#: connection at a time (a reservation's lock, count and insert share one transaction).
POOL_SIZE = 1
#: How long a thread waits for the process's connection before the pool gives up.
POOL_TIMEOUT_S = 30
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


def _engine_kwargs(url: URL, connections: int = POOL_SIZE) -> dict[str, Any]:
    dialect = _dialect(url)
    if dialect == "postgresql":
        return {
            "pool_size": connections,
            "max_overflow": 0,
            "pool_timeout": POOL_TIMEOUT_S,
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
    """The engine of :func:`storage_lock` (schema and study creation) and of the schema probe
    before a storage opens: no pool, so nothing stays open afterwards. A worker's reservations
    run on the storage's own engine instead (:func:`locked_study`)."""
    engine = _LOCK_ENGINES.get(url)
    if engine is None:
        args = _connect_args(parsed) if _dialect(parsed) == "postgresql" else {"timeout": 60}
        engine = sqlalchemy.create_engine(
            parsed, poolclass=sqlalchemy.pool.NullPool, connect_args=args
        )
        _LOCK_ENGINES[url] = engine
    return engine


@contextlib.contextmanager
def _advisory_lock(
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
            "SELECT CASE WHEN pg_try_advisory_xact_lock(:k) THEN (SELECT count(*) FROM "
            "(SELECT 1 FROM studies WHERE study_id = :s FOR UPDATE) AS study) END"
        )
        params = {"k": key, "s": study_row}
    delay = 0.002
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
        time.sleep(delay * (0.5 + random.random()))
        delay = min(delay * 2, 0.05)
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


def _lock_key(scope: str) -> int:
    return zlib.crc32(f"depthsearch:{scope}".encode()) & 0x7FFFFFFF


def sqlite_file(url: str) -> Path | None:
    """The database file of a SQLite URL (absolute); None for other URLs and ``:memory:``."""
    parsed = _parse(url)
    if _dialect(parsed) != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database).expanduser().resolve()


@contextlib.contextmanager
def storage_lock(url: str, *, scope: str = "") -> Iterator[None]:
    """A lock shared by every process that uses this storage (and ``scope``, e.g. a study).

    It serialises schema creation (two Optuna processes on an empty PostgreSQL database
    otherwise race on ``CREATE TYPE``), study creation (scope ``""``) and, on SQLite, a
    study's budget check and trial creation (scope: the study's name; PostgreSQL does those
    in one transaction, :func:`locked_study`). PostgreSQL: a transaction-level advisory lock,
    held until the lock's own transaction ends, so that it works unchanged through PgBouncer
    in transaction pooling mode. SQLite: ``flock`` on a file beside the database (SQLite is
    one machine by nature).
    """
    parsed = _parse(url)
    dialect = _dialect(parsed)
    if dialect == "postgresql":
        with _advisory_lock(_lock_engine(url, parsed), _lock_key(scope)):
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


@dataclasses.dataclass(frozen=True)
class BudgetCounts:
    """What the budget check needs: trials finished (complete + pruned), running, waiting."""

    finished: int
    running: int
    waiting: int


#: Indexes depthsearch adds to Optuna's ``trials`` table (``create`` makes them): the counts
#: under the reservation lock read the few RUNNING, WAITING and FAIL trials and the highest
#: trial number through them instead of every trial of the study.
_INDEXES = {
    "ix_depthsearch_trials_study_state": "trials (study_id, state)",
    "ix_depthsearch_trials_study_number": "trials (study_id, number)",
}


def add_indexes(storage: optuna.storages.RDBStorage) -> None:
    """Creates depthsearch's indexes on Optuna's tables where missing (PostgreSQL, SQLite);
    Optuna ignores them, and its migrations keep or drop them."""
    if storage.engine.dialect.name not in ("postgresql", "sqlite"):
        return
    with storage.engine.begin() as conn:
        for name, target in _INDEXES.items():
            conn.execute(sqlalchemy.text(f"CREATE INDEX IF NOT EXISTS {name} ON {target}"))


class LockedStudy:
    """A study under its reservation lock: the budget's count, and the trial a worker takes.

    On PostgreSQL everything runs in the lock's own transaction, on the one connection that
    holds it, in three round trips once it is granted (with the study's row, locked as Optuna
    locks it to number a trial): one count, one insert (or a waiting trial taken), and the
    commit that makes the trial visible and frees the lock. The count reads the RUNNING,
    WAITING and FAIL trials and the highest trial number by index (:func:`add_indexes`), not
    every trial, so the lock is held as briefly at 100,000 trials as at 1,000. Trial numbers
    are 0, 1, 2, ... in order of creation (Optuna numbers a trial by the trials before it,
    under the same row lock): the next is the highest plus one, and the study holds that many
    trials. Elsewhere (SQLite) each step is a transaction of its own under the file lock.
    """

    def __init__(self, study: optuna.Study, conn: sqlalchemy.Connection | None) -> None:
        self._study = study
        self._conn = conn
        self._id = study_id(study)
        self._next_number: int | None = None
        self._waiting: int | None = None

    def counts(self) -> BudgetCounts:
        """The budget's counts, by the database (no trial is read)."""
        states = optuna.trial.TrialState
        if self._conn is None:
            counted = trial_counts(self._study)
            if counted is None:
                trials = self._study.get_trials(deepcopy=False)
                counted = {s: sum(t.state == s for t in trials) for s in states}
            return BudgetCounts(
                finished=counted[states.COMPLETE] + counted[states.PRUNED],
                running=counted[states.RUNNING],
                waiting=counted[states.WAITING],
            )
        trial = rdb_models.TrialModel.__table__
        of_study = trial.c.study_id == self._id
        highest = sqlalchemy.select(sqlalchemy.func.max(trial.c.number)).where(of_study)
        few = (states.RUNNING, states.WAITING, states.FAIL)
        row = self._conn.execute(
            sqlalchemy.select(
                highest.scalar_subquery(),
                *(sqlalchemy.func.count().filter(trial.c.state == s) for s in few),
            ).where(of_study, trial.c.state.in_(few))
        ).one()
        top, running, waiting, failed = row
        total = 0 if top is None else int(top) + 1
        self._next_number, self._waiting = total, int(waiting)
        return BudgetCounts(
            finished=total - int(running) - int(waiting) - int(failed),
            running=int(running),
            waiting=int(waiting),
        )

    def take_waiting(self) -> int | None:
        """The oldest WAITING trial (enqueued, or a retry), set RUNNING; ``None`` if none."""
        if self._conn is None:
            return take_waiting_trial(self._study)
        if self._waiting == 0:
            return None  # counted under this lock: none
        trial = rdb_models.TrialModel.__table__
        # What Optuna's set_trial_state_values(RUNNING) writes for a WAITING trial (its
        # datetimes are stored as naive UTC).
        oldest = (
            sqlalchemy.select(trial.c.trial_id)
            .where(
                trial.c.study_id == self._id,
                trial.c.state == optuna.trial.TrialState.WAITING,
            )
            .order_by(trial.c.trial_id)
            .limit(1)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        taken = self._conn.execute(
            sqlalchemy.update(trial)
            .where(trial.c.trial_id == oldest)
            .values(
                {trial.c.state: optuna.trial.TrialState.RUNNING, trial.c.datetime_start: _utcnow()}
            )
            .returning(trial.c.trial_id)
        ).scalar()
        return None if taken is None else int(taken)

    def create(self) -> int:
        """A new RUNNING trial's id, numbered after the study's last."""
        if self._conn is None:
            return study_storage(self._study).create_new_trial(self._id)
        if self._next_number is None:
            self.counts()
        trial = rdb_models.TrialModel.__table__
        created = self._conn.execute(
            sqlalchemy.insert(trial)
            .values(
                {
                    trial.c.number: self._next_number,
                    trial.c.study_id: self._id,
                    trial.c.state: optuna.trial.TrialState.RUNNING,
                    trial.c.datetime_start: _utcnow(),
                }
            )
            .returning(trial.c.trial_id)
        ).scalar_one()
        return int(created)


def _utcnow() -> datetime:
    # Optuna's RDB storage keeps naive UTC datetimes.
    return datetime.now(timezone.utc).replace(tzinfo=None)


@contextlib.contextmanager
def locked_study(study: optuna.Study, url: str) -> Iterator[LockedStudy]:
    """The study's reservation lock (one per study, shared by every worker on any machine);
    what is done through the :class:`LockedStudy` is committed when the block ends."""
    backend = rdb_backend(study_storage(study))
    if backend is not None and _dialect(_parse(url)) == "postgresql":
        key, row = _lock_key(study.study_name), study_id(study)
        with _advisory_lock(backend.engine, key, study_row=row) as conn:
            yield LockedStudy(study, conn)
    else:
        with storage_lock(url, scope=study.study_name):
            yield LockedStudy(study, None)


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
    connections the storage may hold at once (a worker's processes hold one each; a server
    of many threads, as the dashboard, more). ``existing``: for the commands that only read
    or join (``trials``, ``report``, ``export``, ``dashboard``, ``worker``): a database that
    holds no study yet (a SQLite file that does not exist, a PostgreSQL database without
    Optuna's tables) is an error, and nothing is created.

    Raises:
        StorageError: bad URL, unreachable server, or a schema from an older Optuna.
    """
    parsed = _parse(url)
    _check_supported(parsed, url)
    hint = f"create a study there first: `depthsearch create STUDY.toml --storage {mask_url(url)}`"
    if existing and _dialect(parsed) == "sqlite" and parsed.database:
        path = Path(parsed.database).expanduser()
        if not path.exists():  # asked before the probe below, which would create the file
            raise StorageError(f"no study database at {path} (the file does not exist); {hint}")
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
        if _dialect(parsed) in ("postgresql", "sqlite") and not _has_schema(url, parsed):
            if existing:
                raise StorageError(f"the database {mask_url(url)} holds no study yet; {hint}")
            # An empty database: one process creates the schema, under the lock (Optuna's
            # schema creation holds two connections at once); then it opens as any other.
            with storage_lock(url), quiet_experimental():
                creating = {**_engine_kwargs(parsed), "max_overflow": 1}
                optuna.storages.RDBStorage(url, engine_kwargs=creating).engine.dispose()
        # A worker joining a study takes no lock and no connection more than its own.
        with quiet_experimental():
            storage = optuna.storages.RDBStorage(
                url,
                engine_kwargs=_engine_kwargs(parsed, connections),
                skip_compatibility_check=True,  # made below, one connection at a time
                **kwargs,
            )
        if _dialect(parsed) == "sqlite":
            _sqlite_wal(storage.engine)
        current, head = schema_versions(storage)
    except (OperationalError, DBAPIError, StorageInternalError, NoSuchModuleError, OSError) as e:
        raise StorageError(
            f"cannot connect to the database {mask_url(url)}: {_describe(e)}"
        ) from e
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


def _has_schema(url: str, parsed: URL) -> bool:
    """Whether Optuna's schema is complete (its alembic revision, written last, is there),
    asked on a connection closed before the storage opens its own."""
    with _lock_engine(url, parsed).connect() as conn:
        if not sqlalchemy.inspect(conn).has_table("alembic_version"):
            return False
        revision = conn.execute(sqlalchemy.text("SELECT version_num FROM alembic_version"))
        return revision.first() is not None


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
    # Built in place: the Select's generic parameters differ between SQLAlchemy 2.0 and 2.1.
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


def _local(utc: datetime | None) -> datetime | None:
    # As Optuna's TrialModel reads its naive-UTC columns: naive local time.
    if utc is None:
        return None
    return utc.replace(tzinfo=timezone.utc).astimezone().replace(tzinfo=None)


def _read_study_trials(
    conn: sqlalchemy.Connection,
    sid: int,
    states: tuple[optuna.trial.TrialState, ...] | None = None,
) -> list[optuna.trial.FrozenTrial]:
    """Every trial of the study, as Optuna's ``RDBStorage`` builds them, in six plain queries
    (one per table) on ``conn``, which the caller opens in one snapshot.

    Optuna's own read loads ORM objects with ``selectinload``: about 18 s for a 20,000-trial
    study here; this reads the same rows without the ORM, and parses each distinct
    distribution once.
    """
    m = rdb_models
    trial = m.TrialModel.__table__
    of_study = trial.c.study_id == sid
    if states is not None:  # ``states`` only (e.g. the running ones, for ``status``)
        of_study = sqlalchemy.and_(of_study, trial.c.state.in_(states))

    def rows_of(table: Any, *columns: str, order: Any = None) -> Any:
        query = sqlalchemy.select(table.c.trial_id, *(table.c[c] for c in columns)).join(
            trial, trial.c.trial_id == table.c.trial_id
        )
        query = query.where(of_study)
        if order is not None:
            query = query.order_by(order)
        return conn.execute(query)

    base = conn.execute(
        sqlalchemy.select(
            trial.c.trial_id,
            trial.c.number,
            trial.c.state,
            trial.c.datetime_start,
            trial.c.datetime_complete,
        )
        .where(of_study)
        .order_by(trial.c.trial_id)
    ).all()
    params: dict[int, dict[str, Any]] = {}
    dists: dict[int, dict[str, optuna.distributions.BaseDistribution]] = {}
    parsed: dict[str, optuna.distributions.BaseDistribution] = {}
    table = m.TrialParamModel.__table__
    for tid, name, value, dist_json in rows_of(
        table, "param_name", "param_value", "distribution_json", order=table.c.param_id
    ):
        dist = parsed.get(dist_json)
        if dist is None:
            dist = parsed[dist_json] = optuna.distributions.json_to_distribution(dist_json)
        params.setdefault(tid, {})[name] = dist.to_external_repr(value)
        dists.setdefault(tid, {})[name] = dist
    values: dict[int, dict[int, float]] = {}
    to_value = m.TrialValueModel.stored_repr_to_value
    for tid, objective, value, kind in rows_of(
        m.TrialValueModel.__table__, "objective", "value", "value_type"
    ):
        values.setdefault(tid, {})[objective] = to_value(value, kind)
    steps: dict[int, dict[int, float]] = {}
    to_step = m.TrialIntermediateValueModel.stored_repr_to_intermediate_value
    for tid, step, value, kind in rows_of(
        m.TrialIntermediateValueModel.__table__,
        "step",
        "intermediate_value",
        "intermediate_value_type",
    ):
        steps.setdefault(tid, {})[step] = to_step(value, kind)
    attrs: list[dict[int, dict[str, Any]]] = []
    for model in (m.TrialUserAttributeModel, m.TrialSystemAttributeModel):
        got: dict[int, dict[str, Any]] = {}
        for tid, key, value_json in rows_of(model.__table__, "key", "value_json"):
            got.setdefault(tid, {})[key] = json.loads(value_json)
        attrs.append(got)
    user, system = attrs
    out = []
    for tid, number, state, start, complete in base:
        objectives = values.get(tid)
        out.append(
            optuna.trial.FrozenTrial(
                number=number,
                state=state,
                value=None,
                values=[objectives[k] for k in sorted(objectives)] if objectives else None,
                datetime_start=_local(start),
                datetime_complete=_local(complete),
                params=params.get(tid, {}),
                distributions=dists.get(tid, {}),
                user_attrs=user.get(tid, {}),
                system_attrs=system.get(tid, {}),
                intermediate_values=steps.get(tid, {}),
                trial_id=tid,
            )
        )
    return out


def load_all_trials(study: optuna.Study) -> int:
    """Makes the study's first study-wide read (what its sampler and pruner read, and
    ``study.trials``) fast; see :func:`prime_trials`. Returns the trials read."""
    return prime_trials(study_storage(study), study_id(study))


def prime_trials(storage: optuna.storages.BaseStorage, sid: int) -> int:
    """Every trial of study ``sid``, read with :func:`_read_study_trials` in one snapshot
    and handed to Optuna's trial cache in ``storage``, whose reads are incremental from then
    on: seconds at 100,000 trials, where Optuna's own first read takes minutes. Does nothing
    (returns 0) where the study was read already or the storage is not a cached RDB one."""
    backend = rdb_backend(storage)
    if backend is None or not needs_first_read(storage, sid):
        return 0
    with backend.engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():  # one snapshot: no trial half-read while a worker writes it
            trials = _read_study_trials(conn, sid)
    return len(trials) if prime_cache(storage, sid, trials) else 0


@dataclasses.dataclass(frozen=True)
class Running:
    """A RUNNING trial as ``status`` shows it."""

    trial: optuna.trial.FrozenTrial
    #: Seconds since its worker's last heartbeat, by the database's clock; ``None``: none yet.
    heartbeat_age_s: float | None


def running_trials(study: optuna.Study) -> list[Running]:
    """The study's RUNNING trials with their heartbeats' ages, read by the database alone
    (no other trial is read): what ``status`` shows of each."""
    backend = rdb_backend(study_storage(study))
    if backend is None:
        return [
            Running(t, None)
            for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        ]
    beat = rdb_models.TrialHeartbeatModel.__table__
    trial = rdb_models.TrialModel.__table__
    if backend.engine.dialect.name == "sqlite":
        age = (
            sqlalchemy.func.julianday("now") - sqlalchemy.func.julianday(beat.c.heartbeat)
        ) * 86400
    else:
        age = sqlalchemy.extract("epoch", sqlalchemy.func.localtimestamp() - beat.c.heartbeat)
    with backend.engine.connect() as conn:
        running = _read_study_trials(conn, study_id(study), (optuna.trial.TrialState.RUNNING,))
        ages: dict[int, Any] = dict(
            conn.execute(
                sqlalchemy.select(trial.c.number, age)
                .join(trial, trial.c.trial_id == beat.c.trial_id)
                .where(
                    trial.c.study_id == study_id(study),
                    trial.c.state == optuna.trial.TrialState.RUNNING,
                )
            ).all()
        )
    return [
        Running(t, None if ages.get(t.number) is None else float(ages[t.number])) for t in running
    ]


def retry_attrs(study: optuna.Study) -> list[dict[str, Any]]:
    """The ``resumed_from_epoch`` / ``epochs_lost`` attributes of the study's retries, by one
    query on the attribute rows (no trial is read): what ``status`` sums."""
    wanted = ("resumed_from_epoch", "epochs_lost")
    backend = rdb_backend(study_storage(study))
    if backend is None:
        return [
            {k: t.user_attrs[k] for k in wanted if k in t.user_attrs}
            for t in study.get_trials(deepcopy=False)
        ]
    attr = rdb_models.TrialUserAttributeModel.__table__
    trial = rdb_models.TrialModel.__table__
    by_trial: dict[int, dict[str, Any]] = {}
    with backend.engine.connect() as conn:
        rows = conn.execute(
            sqlalchemy.select(attr.c.trial_id, attr.c.key, attr.c.value_json)
            .join(trial, trial.c.trial_id == attr.c.trial_id)
            .where(trial.c.study_id == study_id(study), attr.c.key.in_(wanted))
        ).all()
    for tid, key, value in rows:
        by_trial.setdefault(tid, {})[key] = json.loads(value)
    return list(by_trial.values())


def recent_finishes(study: optuna.Study, n: int = 20) -> list[datetime]:
    """When the study's last ``n`` finished (complete or pruned) trials ended, newest first
    (naive local time, as Optuna gives datetimes)."""
    backend = rdb_backend(study_storage(study))
    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    if backend is None:
        ends = [t.datetime_complete for t in study.get_trials(deepcopy=False, states=done)]
        return sorted((e for e in ends if e is not None), reverse=True)[:n]
    trial = rdb_models.TrialModel.__table__
    with backend.engine.connect() as conn:
        rows = conn.execute(
            sqlalchemy.select(trial.c.datetime_complete)
            .where(
                trial.c.study_id == study_id(study),
                trial.c.state.in_(done),
                trial.c.datetime_complete.is_not(None),
            )
            .order_by(trial.c.datetime_complete.desc())
            .limit(n)
        ).scalars()
        return [local for utc in rows if (local := _local(utc)) is not None]


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
    if row is None or row[0] is None:  # the query excludes NULL values; typed optional
        return None
    return float(row[0]), int(row[1])
