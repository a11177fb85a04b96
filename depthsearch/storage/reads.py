"""Reads the database answers better than Optuna's API: counts, the first study-wide read,
the running trials with their heartbeats, retry attributes, recent finishes, the best value.

Each falls back to Optuna's API (or says ``None``) where the storage is not an RDB one.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Collection, Iterator
from datetime import datetime
from typing import Any

import optuna
import sqlalchemy
from optuna.trial import TrialState

from depthsearch._optuna import (
    needs_first_read,
    prime_cache,
    rdb_backend,
    study_id,
    study_storage,
    tables,
)
from depthsearch.search.confirm import CONFIRM_OF

__all__ = [
    "Running",
    "best_complete",
    "confirmation_counts",
    "confirmation_trials",
    "load_all_trials",
    "new_complete_trials",
    "prime_trials",
    "recent_spans",
    "retry_attrs",
    "running_trials",
    "running_without_heartbeat",
    "trial_counts",
    "trial_of",
]


def trial_counts(study: optuna.Study) -> dict[TrialState, int]:
    """How many of the study's trials are in each state, counted by the database (no trial is
    read where the storage is an RDB one)."""
    backend = rdb_backend(study_storage(study))
    if backend is None:
        trials = study.get_trials(deepcopy=False)
        return {s: sum(t.state == s for t in trials) for s in TrialState}
    with backend.engine.connect() as conn:
        return tables.state_counts(conn, study_id(study))


def confirmation_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The study's confirmation trials (a few of many), read by the database alone."""
    backend = rdb_backend(study_storage(study))
    if backend is None:
        return [t for t in study.get_trials(deepcopy=False) if CONFIRM_OF in t.user_attrs]
    with backend.engine.connect() as conn:
        return tables.read_trials(conn, study_id(study), tagged=CONFIRM_OF)


def confirmation_counts(study: optuna.Study) -> dict[TrialState, int]:
    """How many of the study's confirmation trials are in each state, by the database."""
    backend = rdb_backend(study_storage(study))
    if backend is None:
        trials = [t for t in study.get_trials(deepcopy=False) if CONFIRM_OF in t.user_attrs]
        return {s: sum(t.state == s for t in trials) for s in TrialState}
    with backend.engine.connect() as conn:
        return tables.tagged_counts(conn, study_id(study), CONFIRM_OF)


def running_without_heartbeat(study: optuna.Study) -> set[int] | None:
    """Ids of the study's RUNNING trials that never recorded a heartbeat.

    A worker records its first heartbeat milliseconds after ``ask()``; a worker killed in
    between leaves a RUNNING trial that Optuna's stale check never fails (it looks only at
    trials with a heartbeat). ``None`` where the storage keeps no heartbeats.
    """
    backend = rdb_backend(study_storage(study))
    if backend is None:
        return None
    with backend.engine.connect() as conn:
        return tables.unbeaten_running(conn, study_id(study))


def load_all_trials(study: optuna.Study) -> int:
    """Makes the study's first study-wide read (what its sampler and pruner read, and
    ``study.trials``) fast; see :func:`prime_trials`. Returns the trials read."""
    return prime_trials(study_storage(study), study_id(study))


def prime_trials(storage: optuna.storages.BaseStorage, sid: int) -> int:
    """Every trial of study ``sid``, read in one snapshot and handed to Optuna's trial cache
    in ``storage``, whose reads are incremental from then on: seconds at 100,000 trials,
    where Optuna's own first read takes minutes. Does nothing (returns 0) where the study was
    read already or the storage is not a cached RDB one."""
    backend = rdb_backend(storage)
    if backend is None or not needs_first_read(storage, sid):
        return 0
    with _snapshot(backend) as conn:
        trials = tables.read_trials(conn, sid)
    return len(trials) if prime_cache(storage, sid, trials) else 0


def new_complete_trials(
    study: optuna.Study, known: Collection[int]
) -> tuple[list[optuna.trial.FrozenTrial], dict[str, Any]] | None:
    """The study's COMPLETE trials whose numbers are not in ``known`` (every complete trial
    a caller already holds), and the study's user attributes, in one snapshot: a count and
    the attributes when no trial completed since (where Optuna's cached read loads every
    running trial whole), the new trials' rows when some did. ``None`` where the storage is
    not an RDB one."""
    backend = rdb_backend(study_storage(study))
    if backend is None:
        return None
    sid = study_id(study)
    with _snapshot(backend) as conn:
        numbers = tables.complete_numbers(conn, sid, len(known))
        new = numbers - set(known) if numbers is not None else set()
        trials = tables.read_trials(conn, sid, numbers=new) if new else []
        attrs = tables.study_user_attrs(conn, sid)
    return trials, attrs


@contextlib.contextmanager
def _snapshot(backend: optuna.storages.RDBStorage) -> Iterator[sqlalchemy.Connection]:
    """A connection in one transaction that sees one state of the database (PostgreSQL:
    repeatable read): no trial half-read while a worker writes it."""
    with backend.engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            yield conn


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
            for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        ]
    with backend.engine.connect() as conn:
        running = tables.read_trials(conn, study_id(study), (TrialState.RUNNING,))
        ages = tables.heartbeat_ages(conn, study_id(study))
    return [Running(t, ages.get(t.number)) for t in running]


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
    with backend.engine.connect() as conn:
        return list(tables.user_attr_rows(conn, study_id(study), wanted).values())


def recent_spans(study: optuna.Study, n: int = 20) -> list[tuple[datetime, datetime]]:
    """When the study's last ``n`` finished (complete or pruned) trials started and ended,
    newest end first (naive local time, as Optuna gives datetimes)."""
    backend = rdb_backend(study_storage(study))
    done = (TrialState.COMPLETE, TrialState.PRUNED)
    if backend is None:
        spans = [
            (t.datetime_start, t.datetime_complete)
            for t in study.get_trials(deepcopy=False, states=done)
            if t.datetime_start is not None and t.datetime_complete is not None
        ]
        return sorted(spans, key=lambda span: span[1], reverse=True)[:n]
    with backend.engine.connect() as conn:
        return tables.recent_spans(conn, study_id(study), done, n)


def best_complete(study: optuna.Study) -> tuple[float, int] | None:
    """``(value, number)`` of the search's complete trial (no confirmation) with the lowest
    first objective, asked of the database (ties: the lower number); ``None`` when none is
    complete, or not RDB."""
    backend = rdb_backend(study_storage(study))
    if backend is None:
        return None
    with backend.engine.connect() as conn:
        return tables.best_value(conn, study_id(study), untagged=CONFIRM_OF)


def trial_of(study: optuna.Study, number: int) -> optuna.trial.FrozenTrial:
    """The study's trial ``number`` (one trial read)."""
    storage = study_storage(study)
    tid = storage.get_trial_id_from_study_id_trial_number(study_id(study), number)
    return storage.get_trial(tid)


def trial_user_attrs(study: optuna.Study, number: int) -> dict[str, Any]:
    """The user attributes of the study's trial ``number`` (one trial read)."""
    return dict(trial_of(study, number).user_attrs)
