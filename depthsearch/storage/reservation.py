"""A study's reservation: the budget's counts and the trial a worker takes, under one lock."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator

import optuna
import sqlalchemy
from optuna.trial import FrozenTrial, TrialState

from depthsearch._optuna import cache_created, rdb_backend, study_id, study_storage, tables
from depthsearch.search.trials import CONFIRM_OF, FAIL_REASON
from depthsearch.storage import locks
from depthsearch.storage.reads import confirmation_counts, trial_counts
from depthsearch.storage.urls import dialect, parse

__all__ = ["BudgetCounts", "LockedStudy", "drop_retry", "locked_study", "take_waiting_trial"]


@dataclasses.dataclass(frozen=True)
class BudgetCounts:
    """What the budget check needs: trials finished (complete + pruned), running and
    waiting, and of them the confirmation trials, which come on top of the search's
    budget (one that fails for good frees no slot for a search trial)."""

    finished: int
    running: int
    waiting: int
    confirm_finished: int = 0
    confirm_running: int = 0
    confirm_waiting: int = 0

    @property
    def search_finished(self) -> int:
        return self.finished - self.confirm_finished

    @property
    def search_alive(self) -> int:
        """The search's trials finished, running or waiting: never more than ``n_trials``."""
        return (
            self.search_finished
            + self.running
            - self.confirm_running
            + self.waiting
            - self.confirm_waiting
        )


class LockedStudy:
    """A study under its reservation lock: the budget's count, and the trial a worker takes.

    On PostgreSQL everything runs in the lock's own transaction, on the one connection that
    holds it, in three round trips once it is granted (with the study's row, locked as Optuna
    locks it to number a trial): one count, one insert (or a waiting trial taken), and the
    commit that makes the trial visible and frees the lock. The count reads the RUNNING,
    WAITING and FAIL trials and the highest trial number by index
    (:func:`depthsearch.storage.add_indexes`), and the confirmations by their attribute's
    index, not every trial, so the lock is held as briefly at 100,000 trials as at 1,000.
    Trial numbers are 0, 1, 2, ... in order of creation: the next is the highest plus one.
    SQLite does the same in one transaction that holds the database's write lock from its
    start (under the study's file lock): nothing is numbered between the count and the
    insert. A storage without SQL (``conn`` None) goes through Optuna's calls.
    """

    def __init__(self, study: optuna.Study, conn: sqlalchemy.Connection | None) -> None:
        self._study = study
        self._conn = conn
        self._id = study_id(study)
        self._next_number: int | None = None
        self._waiting: int | None = None
        self._created: FrozenTrial | None = None

    def counts(self) -> BudgetCounts:
        """The budget's counts, by the database (no trial is read)."""
        if self._conn is None:
            counted = trial_counts(self._study)
            tagged = confirmation_counts(self._study)
            return BudgetCounts(
                finished=counted[TrialState.COMPLETE] + counted[TrialState.PRUNED],
                running=counted[TrialState.RUNNING],
                waiting=counted[TrialState.WAITING],
                confirm_finished=tagged[TrialState.COMPLETE] + tagged[TrialState.PRUNED],
                confirm_running=tagged[TrialState.RUNNING],
                confirm_waiting=tagged[TrialState.WAITING],
            )
        got = tables.reservation_counts(self._conn, self._id, CONFIRM_OF)
        self._next_number, self._waiting = got.total, got.waiting
        return BudgetCounts(
            finished=got.total - got.running - got.waiting - got.failed,
            running=got.running,
            waiting=got.waiting,
            confirm_finished=got.tagged_finished,
            confirm_running=got.tagged_running,
            confirm_waiting=got.tagged_waiting,
        )

    def take_waiting(self) -> int | None:
        """The oldest WAITING trial (enqueued, or a retry), set RUNNING; ``None`` if none."""
        if self._conn is None:
            return take_waiting_trial(self._study)
        if self._waiting == 0:
            return None  # counted under this lock: none
        return tables.take_oldest_waiting(self._conn, self._id)

    def create(self) -> int:
        """A new RUNNING trial's id, numbered after the study's last."""
        if self._conn is None:
            return study_storage(self._study).create_new_trial(self._id)
        if self._next_number is None:  # no budget was counted: the number alone
            self._next_number = tables.next_number(self._conn, self._id)
        created, self._created = tables.insert_running(self._conn, self._id, self._next_number)
        return created

    def opened(self) -> None:
        """Once committed: the trial created is put in Optuna's cache, as its own
        ``create_new_trial`` puts it (``ask`` then opens it without a read)."""
        if self._created is not None:
            cache_created(study_storage(self._study), self._id, self._created)

    def beat(self, trial_id: int) -> None:
        """The reserved trial's first heartbeat: it exists with one (in the lock's own
        transaction on PostgreSQL), and a worker that dies before its next beat leaves it
        to the stale check."""
        if self._conn is not None:
            tables.first_heartbeat(self._conn, trial_id)
            return
        backend = rdb_backend(study_storage(self._study))
        if backend is not None:
            with backend.engine.begin() as conn:
                tables.first_heartbeat(conn, trial_id)


@contextlib.contextmanager
def locked_study(
    study: optuna.Study, url: str, *, first: Callable[[], object] = lambda: None
) -> Iterator[LockedStudy]:
    """The study's reservation lock (one per study, shared by every worker on any machine);
    what is done through the :class:`LockedStudy` is committed when the block ends, and a
    trial it created is then known to Optuna's cache as one it created itself.

    ``first`` runs before the reservation: on PostgreSQL before the lock is asked for (its
    row locks make a stale check safe to race), elsewhere under the lock, before the
    reservation's transaction (SQLite's write lock would stop the check's own writes)."""
    backend = rdb_backend(study_storage(study))
    kind = dialect(parse(url)) if backend is not None else None
    conn: sqlalchemy.Connection | None = None
    with contextlib.ExitStack() as held:
        if backend is not None and kind == "postgresql":
            first()
            key, row = locks.lock_key(study.study_name), study_id(study)
            conn = held.enter_context(locks.advisory_lock(backend.engine, key, study_row=row))
        else:
            held.enter_context(locks.storage_lock(url, scope=study.study_name))
            first()
            if backend is not None and kind == "sqlite":
                conn = held.enter_context(locks.sqlite_write(backend.engine))
        locked = LockedStudy(study, conn)
        yield locked
    locked.opened()  # committed


def take_waiting_trial(study: optuna.Study) -> int | None:
    """Sets the study's oldest WAITING trial (an enqueued or retried one) RUNNING and returns
    its id; ``None`` when none is waiting. Read by id alone: no trial is loaded."""
    backend = rdb_backend(study_storage(study))
    if backend is None:
        return None
    with backend.engine.connect() as conn:
        waiting = tables.waiting_ids(conn, study_id(study))
    storage = study_storage(study)
    for trial_id in waiting:
        try:
            if storage.set_trial_state_values(trial_id, state=TrialState.RUNNING):
                return trial_id
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
    return None


def drop_retry(study: optuna.Study, number: int, reason: str) -> bool:
    """Fails the WAITING retry of trial ``number`` (Optuna's retry callback marks it with the
    trial it retries), with ``reason`` as its ``fail_reason``; False when there is none (not
    queued, or another worker took it already)."""
    storage = study_storage(study)
    for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        if t.system_attrs.get("failed_trial") != number:
            continue
        tid = storage.get_trial_id_from_study_id_trial_number(study_id(study), t.number)
        try:
            storage.set_trial_user_attr(tid, FAIL_REASON, reason)
            return bool(storage.set_trial_state_values(tid, state=TrialState.FAIL))
        except optuna.exceptions.UpdateFinishedTrialError:
            return False
    return False
