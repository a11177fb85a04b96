"""Every use of Optuna's private names, and the warnings we silence, in one file.

depthsearch relies on a few things Optuna does not document: a study's storage and id, a
trial's id and the frozen trial ``ask()`` read, an ``optuna.Trial`` made for an existing trial
id (the reporting process reports to the worker's trial so; the worker makes the trial it
created under its lock so), and the RDB storage's table models (for the queries Optuna's API has
no call for: counts, waiting ids, the best value, trials without a heartbeat). An Optuna
upgrade that changes them breaks this file alone; ``tests/test_layers.py`` checks that no other
module names them.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

import optuna
from optuna.storages._rdb import models as rdb_models  # the RDB storage's table models

__all__ = [
    "asked_trial",
    "frozen_trial",
    "ignore_optuna_warnings",
    "quiet_experimental",
    "rdb_backend",
    "rdb_models",
    "study_id",
    "study_storage",
    "trial_for_id",
    "trial_id",
]


@contextlib.contextmanager
def quiet_experimental() -> Iterator[None]:
    """Silences Optuna's ExperimentalWarning for the features we depend on knowingly.

    Heartbeats, stale-trial retries and TPE's multivariate/group/constant_liar flags have been
    "experimental" for years; a warning on every worker start says nothing to our users.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def ignore_optuna_warnings() -> None:
    """For a whole command line process: the same filters, for good (the CLI's start)."""
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", category=FutureWarning, module="optuna")


def study_storage(study: optuna.Study) -> optuna.storages.BaseStorage:
    """The storage a study reads and writes (Optuna wraps RDB storages in a cache)."""
    storage: optuna.storages.BaseStorage = study._storage
    return storage


def study_id(study: optuna.Study) -> int:
    return int(study._study_id)


def trial_id(trial: optuna.Trial) -> int:
    """The storage's id of a trial (not its number, which counts within the study)."""
    return int(trial._trial_id)


def frozen_trial(trial: optuna.Trial) -> optuna.trial.FrozenTrial:
    """The trial as ``ask()`` read it (system attributes included), without a storage round
    trip where Optuna kept it."""
    cached = getattr(trial, "_cached_frozen_trial", None)
    if isinstance(cached, optuna.trial.FrozenTrial):
        return cached
    return study_storage(trial.study).get_trial(trial_id(trial))


def trial_for_id(study: optuna.Study, trial_id: int) -> optuna.Trial:
    """An ``optuna.Trial`` for a trial another process asked for: ``report``,
    ``should_prune`` and ``set_user_attr`` on it are Optuna's own calls on that trial."""
    return optuna.Trial(study, trial_id)


def asked_trial(study: optuna.Study, trial_id: int, *, was_waiting: bool) -> optuna.Trial:
    """What ``study.ask()`` returns for a trial this process created (or took from the
    waiting ones) itself: ``ask`` minus the creation, so that a worker can create the trial
    under its budget lock and leave the rest (reading the trial, the sampler's
    ``before_trial``) outside it. Relative sampling happens later, at the first suggest."""
    study._thread_local.cached_all_trials = None  # as ask() does: the next read is fresh
    if was_waiting:
        # Optuna's cached storage writes a trial's params only once it has read the trial in
        # a study-wide read (ask() does one to find waiting trials): an incremental read after
        # the first, and the first is what the sampler needs anyway.
        study._storage.get_all_trials(
            study._study_id, deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)
        )
    return optuna.Trial(study, trial_id)


def rdb_backend(storage: Any) -> optuna.storages.RDBStorage | None:
    """The RDB storage behind ``storage`` (itself, or the one Optuna's cache wraps)."""
    backend = getattr(storage, "_backend", storage)
    return backend if isinstance(backend, optuna.storages.RDBStorage) else None
