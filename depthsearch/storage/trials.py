"""A running trial as the worker needs it of the storage: its id and object, its batched
writes, its heartbeat, the retry of a failed one, the stale check, the sampler's seed."""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from depthsearch._optuna import (
    asked_trial,
    frozen_trial,
    quiet_experimental,
    rdb_backend,
    seed_sampler,
    study_id,
    study_storage,
    tables,
    trial_id,
)
from depthsearch._optuna import tell_trial as _tell_trial

__all__ = [
    "TrialWrites",
    "fail_stale",
    "heartbeat_interval",
    "opened_trial",
    "rdb_backend_of",
    "read_trial",
    "record_heartbeat",
    "requeue",
    "reseed",
    "set_failed",
    "tell_trial",
    "trial_number_id",
    "trial_of_id",
    "trial_ref",
]


def rdb_backend_of(study: optuna.Study) -> optuna.storages.RDBStorage | None:
    """The RDB storage behind a study (None for an in-memory one)."""
    return rdb_backend(study_storage(study))


def trial_ref(trial: optuna.Trial) -> int:
    """The storage's id of a trial (not its number, which counts within its study)."""
    return trial_id(trial)


def opened_trial(study: optuna.Study, tid: int) -> optuna.Trial:
    """The ``optuna.Trial`` of a trial this worker reserved (see the reservation)."""
    return asked_trial(study, tid)


def trial_of_id(study: optuna.Study, tid: int) -> FrozenTrial:
    """Trial ``tid`` as the database holds it now."""
    return copy.deepcopy(study_storage(study).get_trial(tid))


def trial_number_id(study: optuna.Study, number: int) -> int:
    """The id of the study's trial ``number``."""
    return int(
        study_storage(study).get_trial_id_from_study_id_trial_number(study_id(study), number)
    )


def read_trial(trial: optuna.Trial) -> FrozenTrial:
    """The trial as ``ask()`` read it (its retry history, a confirmation's attributes)."""
    return frozen_trial(trial)


def tell_trial(
    study: optuna.Study,
    trial: optuna.Trial,
    state: TrialState | None,
    value: float | tuple[float, ...] | None,
    known: FrozenTrial | None = None,
    end: Callable[[TrialState, list[float] | None], None] | None = None,
) -> TrialState:
    """Ends ``trial`` as ``study.tell(trial, value, state, skip_if_finished=True)`` does: the
    state it ended in, another worker's where another worker's stale check had ended it
    already. ``known``: the running trial as the database will hold it (this worker's
    writes): the write goes without a read of the trial first; ``end`` then writes the state
    and values (the worker's writer, with its last reports) instead of the storage."""
    if known is not None and end is None:  # the writer's transaction, without reports
        end = functools.partial(TrialWrites(study).end, trial_id(trial))
    return _tell_trial(study, trial, state, value, known, end)


def reseed(study: optuna.Study, seed: int) -> None:
    """The study's sampler drawing from ``seed`` (Optuna's ``reseed_rng`` with a seed)."""
    seed_sampler(study.sampler, seed)


def heartbeat_interval(study: optuna.Study) -> float | None:
    """The study storage's heartbeat interval (None: it keeps no heartbeats)."""
    get = getattr(study_storage(study), "get_heartbeat_interval", None)
    interval = get() if get is not None else None
    return float(interval) if interval else None


def record_heartbeat(study: optuna.Study) -> Callable[[int], None]:
    """What records a trial's heartbeat (by trial id)."""
    storage: Any = study_storage(study)
    return lambda tid: storage.record_heartbeat(tid)


def requeue(study: optuna.Study, failed: FrozenTrial) -> bool:
    """Queues a failed trial to run again (Optuna's retry of a failed trial: same parameters,
    the retry history in its system attributes, within the storage's ``max_retry``, which
    the caller checks where it bounds it). False where the storage keeps no heartbeats."""
    get = getattr(study_storage(study), "get_heartbeat_stale_trial_callback", None)
    callback = get() if get is not None else None
    if callback is None:
        return False
    callback(study, failed)
    return True


def fail_stale(study: optuna.Study) -> None:
    """Optuna's stale-heartbeat check: fails (and retries) trials whose worker stopped."""
    with quiet_experimental():
        optuna.storages.fail_stale_trials(study)


def set_failed(study: optuna.Study, tid: int, reason: str, key: str) -> bool:
    """Marks RUNNING trial ``tid`` FAIL with ``reason`` (user attribute ``key``); False when
    it was not running any more."""
    storage = study_storage(study)
    try:
        storage.set_trial_user_attr(tid, key, reason)
        return bool(storage.set_trial_state_values(tid, state=TrialState.FAIL))
    except optuna.exceptions.UpdateFinishedTrialError:
        return False


class TrialWrites:
    """A study's trial writes in batches: a trial's epochs' values and attributes in one
    transaction (:func:`depthsearch._optuna.tables.write_reports`), with the trial's end in the
    same transaction when it ends, or Optuna's calls one by one where the storage is not an
    RDB one."""

    def __init__(self, study: optuna.Study) -> None:
        self._study = study
        self._rdb = rdb_backend(study_storage(study))

    def write(
        self,
        tid: int,
        values: dict[int, float],
        attrs: dict[str, Any],
        end: tuple[TrialState, list[float] | None] | None = None,
    ) -> None:
        """Writes the reports, and the trial's ``end`` (its finished state and values) after
        them where given. Raises ``optuna.exceptions.UpdateFinishedTrialError`` when the
        trial is finished already, and writes nothing then."""
        if self._rdb is None:
            storage = study_storage(self._study)
            for step, value in values.items():
                storage.set_trial_intermediate_value(tid, step, value)
            for key, value in attrs.items():
                storage.set_trial_user_attr(tid, key, value)
            if end is not None:
                storage.set_trial_state_values(tid, *end)
            return
        with self._rdb.engine.begin() as conn:
            written = tables.write_reports(conn, tid, values, attrs) and (
                end is None or tables.end_running(conn, tid, *end)
            )
            if not written:
                raise optuna.exceptions.UpdateFinishedTrialError(
                    f"trial id {tid} is finished: another worker ended it"
                )

    def end(self, tid: int, state: TrialState, values: list[float] | None) -> None:
        """Writes the trial's end alone (:meth:`write` without reports)."""
        self.write(tid, {}, {}, (state, values))
