"""Every use of Optuna's private names, and the warnings we silence, in one file.

depthsearch relies on a few things Optuna does not document: a study's storage and id, a
trial's id and the frozen trial ``ask()`` read, an ``optuna.Trial`` made for an existing trial
id (the reporting process reports to the worker's trial so), the RDB storage's table models
(for the queries Optuna's API has no call for) and the texts of two warnings. An Optuna
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
    "frozen_trial",
    "ignore_optuna_warnings",
    "quiet_experimental",
    "quiet_heartbeat_warning",
    "rdb_backend",
    "rdb_models",
    "study_id",
    "study_storage",
    "trial_for_id",
    "trial_id",
]

#: ``study.ask()`` warns so when the storage keeps heartbeats and the caller runs none of
#: Optuna's own: the worker runs its heartbeat thread around each trial instead.
_HEARTBEAT_WARNING = "Heartbeat of storage is supposed"


@contextlib.contextmanager
def quiet_experimental() -> Iterator[None]:
    """Silences Optuna's ExperimentalWarning for the features we depend on knowingly.

    Heartbeats, stale-trial retries and TPE's multivariate/group/constant_liar flags have been
    "experimental" for years; a warning on every worker start says nothing to our users.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


@contextlib.contextmanager
def quiet_heartbeat_warning() -> Iterator[None]:
    """Silences ``ask()``'s warning that the caller runs no heartbeat of Optuna's own."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_HEARTBEAT_WARNING)
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


def rdb_backend(storage: Any) -> optuna.storages.RDBStorage | None:
    """The RDB storage behind ``storage`` (itself, or the one Optuna's cache wraps)."""
    backend = getattr(storage, "_backend", storage)
    return backend if isinstance(backend, optuna.storages.RDBStorage) else None
