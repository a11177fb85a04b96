"""Optuna compatibility: the one home of what depthsearch uses of Optuna beyond its public API.

Here: private names on Optuna's objects (a study's storage and id, a trial's id and the frozen
trial ``ask()`` read, an ``optuna.Trial`` for an existing trial id, the trial cache's first
read) and the warnings we silence. In :mod:`.tables`: every statement on Optuna's tables.

A bottom layer: only :mod:`depthsearch.storage` and :mod:`depthsearch.search` import it
(import-linter), and ``tests/test_layers.py`` checks that no other module names Optuna's private
names, its table models or its tables. An Optuna upgrade that changes any of it breaks this
package alone.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import optuna
from optuna.pruners import _filter_study
from optuna.storages._cached_storage import _CachedStorage, _StudyInfo
from optuna.study._tell import _check_values_are_feasible, _tell_with_warning

__all__ = [
    "asked_trial",
    "cache_created",
    "cached",
    "frozen_trial",
    "ignore_optuna_warnings",
    "needs_first_read",
    "prime_cache",
    "quiet_experimental",
    "rdb_backend",
    "schema_versions",
    "seed_sampler",
    "study_id",
    "study_ids",
    "study_storage",
    "tell_trial",
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


def asked_trial(study: optuna.Study, trial_id: int) -> optuna.Trial:
    """What ``study.ask()`` returns for a trial this process created (or took from the
    waiting ones) itself: ``ask`` minus the creation, so that a worker can create the trial
    under its budget lock and leave the rest (reading the trial, the sampler's
    ``before_trial``) outside it. Relative sampling happens later, at the first suggest."""
    study._thread_local.cached_all_trials = None  # as ask() does: the next read is fresh
    # Optuna's cached storage writes a trial's params only once it knows the trial: it
    # created it (SQLite's reservation creates through it), or read it in a study-wide read
    # (ask() does one to find waiting trials): an incremental read after the first (new and
    # unfinished trials only), and the first is what the sampler needs anyway.
    storage = study._storage
    if not _cache_knows(storage, trial_id):
        storage.get_all_trials(
            study._study_id, deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)
        )
    known = _running_in_cache(storage, trial_id)
    if known is None:  # a waiting trial the cache saw before this worker took it: read it
        return optuna.Trial(study, trial_id)
    # The cache's copy is the trial as created (SQLite) or as just read (above): Optuna's
    # Trial reads it once more in its constructor; it is handed this copy instead.
    read = storage.get_trial

    def get_trial(tid: int) -> optuna.trial.FrozenTrial:
        return known if tid == trial_id else read(tid)

    own = vars(storage).get("get_trial")  # a caller's own (a test's count), put back after
    storage.get_trial = get_trial  # type: ignore[method-assign,assignment]
    try:
        return optuna.Trial(study, trial_id)
    finally:
        if own is None:
            del storage.get_trial
        else:
            storage.get_trial = own  # type: ignore[method-assign]


def _running_in_cache(
    storage: optuna.storages.BaseStorage, trial_id: int
) -> optuna.trial.FrozenTrial | None:
    """A copy of trial ``trial_id`` as Optuna's cache holds it, if it holds it RUNNING (a
    trial this worker just reserved: created through the cache, or read after it was taken)."""
    if not isinstance(storage, _CachedStorage):
        return None
    with storage._lock:
        where = storage._trial_id_to_study_id_and_number.get(trial_id)
        if where is None:
            return None
        trial = storage._studies[where[0]].trials[where[1]]
        if trial.state != optuna.trial.TrialState.RUNNING:
            return None
        return copy.deepcopy(trial)


def _cache_knows(storage: optuna.storages.BaseStorage, trial_id: int) -> bool:
    """Whether ``storage`` can write trial ``trial_id``'s params without a read first. A
    trial the cache created stays out of its unfinished list until its next study-wide
    read, which returns it: its id is above every trial finished when the cache last read."""
    if not isinstance(storage, _CachedStorage):
        return True
    with storage._lock:
        return trial_id in storage._trial_id_to_study_id_and_number


def tell_trial(
    study: optuna.Study,
    trial: optuna.Trial,
    state: optuna.trial.TrialState | None,
    values: float | tuple[float, ...] | None,
    known: optuna.trial.FrozenTrial | None = None,
    end: Callable[[optuna.trial.TrialState, list[float] | None], None] | None = None,
) -> optuna.trial.TrialState:
    """``study.tell(trial, values, state, skip_if_finished=True)`` without the read of the
    told trial that ``tell`` returns (a round trip of six statements): the state the trial
    ended in, another worker's where it was finished already.

    ``known``: the RUNNING trial as the database holds it (what this worker read and wrote
    of it): then not even ``tell``'s own read of the trial before the write, which ``end``
    makes where given (raising ``UpdateFinishedTrialError`` for a finished trial). The storage
    refuses to end a finished trial, so a trial another worker's stale check ended meanwhile
    (or a try of this tell that reached the database) is found by that refusal and read
    then; its sampler's ``after_trial`` has been called by then (Optuna's ``tell`` skips it
    for a finished trial; the built-in samplers write nothing there that a finished trial
    would keep)."""
    if known is None:
        ended, _, _ = _tell_with_warning(
            study, trial, value_or_values=values, state=state, skip_if_finished=True
        )
        return ended
    tid = trial_id(trial)
    frozen = copy.copy(known)
    frozen._trial_id = tid
    state, told = _told(study, frozen, state, values)
    study._thread_local.cached_all_trials = None  # as tell() does
    try:
        try:
            study.sampler.after_trial(_filter_study(study, frozen), frozen, state, told)
        finally:
            if end is None:
                study._storage.set_trial_state_values(tid, state, told)
            else:
                end(state, told)
    except optuna.exceptions.UpdateFinishedTrialError:
        return study._storage.get_trial(tid).state
    return state


def _told(
    study: optuna.Study,
    trial: optuna.trial.FrozenTrial,
    state: optuna.trial.TrialState | None,
    values: float | tuple[float, ...] | None,
) -> tuple[optuna.trial.TrialState, list[float] | None]:
    """The state and values ``tell`` writes, checked as ``tell`` checks them: a complete
    trial's values (state ``None``: COMPLETE when they are fit, else FAIL with a warning),
    a pruned trial's last report as its value, no values for a pruned or failed one."""
    told = None if values is None else [float(v) for v in _as_tuple(values)]
    done = optuna.trial.TrialState
    if state in (done.PRUNED, done.FAIL) and told is not None:
        raise ValueError(f"values {told} told for a {state.name} trial: it takes none")
    if state in (None, done.COMPLETE):
        problem = (
            "The value None could not be cast to float."
            if told is None
            else _check_values_are_feasible(study, told)
        )
        if problem is None:
            return done.COMPLETE, told
        if state == done.COMPLETE:
            raise ValueError(problem)
        warnings.warn(problem, stacklevel=3)
        return done.FAIL, None
    if state == done.PRUNED and trial.last_step is not None:
        last = trial.intermediate_values[trial.last_step]
        return state, [last] if _check_values_are_feasible(study, [last]) is None else None
    if state not in (done.PRUNED, done.FAIL):
        raise ValueError(f"cannot tell a trial {state}: COMPLETE, PRUNED or FAIL only")
    return state, None


def _as_tuple(values: float | tuple[float, ...]) -> tuple[float, ...]:
    return values if isinstance(values, tuple) else (values,)


def schema_versions(backend: optuna.storages.RDBStorage) -> tuple[str, str]:
    """``(the database's schema version, this Optuna's)``: the check Optuna's constructor
    makes unless told to skip it, made with one connection at a time (Optuna's holds two)."""
    manager = backend._version_manager
    return manager.get_current_version(), manager.get_head_version()


def seed_sampler(sampler: optuna.samplers.BaseSampler, seed: int) -> None:
    """Seeds the sampler's random state (and TPE's start-up random sampler's): Optuna's own
    ``reseed_rng()``, with a seed chosen instead of a random one. A sampler that wraps others
    seeds them itself (``seed_trial``)."""
    seed_trial = getattr(sampler, "seed_trial", None)
    if callable(seed_trial):
        seed_trial(seed)
        return
    for part in (sampler, getattr(sampler, "_random_sampler", None)):
        state = getattr(part, "_rng", None)
        if state is not None:
            state.rng.seed(seed)


def rdb_backend(storage: Any) -> optuna.storages.RDBStorage | None:
    """The RDB storage behind ``storage`` (itself, or the one Optuna's cache wraps)."""
    backend = getattr(storage, "_backend", storage)
    return backend if isinstance(backend, optuna.storages.RDBStorage) else None


def cached(backend: optuna.storages.RDBStorage) -> optuna.storages.BaseStorage:
    """The storage wrapped in Optuna's trial cache, as ``optuna.load_study`` wraps it: its
    reads of a study's trials are incremental after the first."""
    return _CachedStorage(backend)


def study_ids(storage: optuna.storages.BaseStorage) -> list[int]:
    """The ids of every study in ``storage``."""
    return [int(s._study_id) for s in storage.get_all_studies()]


def needs_first_read(storage: optuna.storages.BaseStorage, sid: int) -> bool:
    """Whether Optuna's trial cache of study ``sid`` is still empty (its first study-wide
    read, the costly one, is ahead)."""
    if not isinstance(storage, _CachedStorage):
        return False
    with storage._lock:
        known = storage._studies.get(sid)
        return known is None or not (known.trials or known.last_finished_trial_id >= 0)


def cache_created(
    storage: optuna.storages.BaseStorage, sid: int, trial: optuna.trial.FrozenTrial
) -> None:
    """Tells Optuna's trial cache of study ``sid`` about a trial created (and committed)
    beside it, as its own ``create_new_trial`` does: ``ask`` then opens it without a read."""
    if not isinstance(storage, _CachedStorage):
        return
    with storage._lock:
        storage._studies.setdefault(sid, _StudyInfo())
        storage._add_trials_to_cache(sid, [trial])


def prime_cache(
    storage: optuna.storages.BaseStorage, sid: int, trials: list[optuna.trial.FrozenTrial]
) -> bool:
    """Fills Optuna's empty trial cache of study ``sid`` with ``trials`` (every trial of the
    study, read in one snapshot) as its first study-wide read would: from then on each read
    is incremental (new and unfinished trials only), as Optuna's always are after the first.
    ``False`` (and nothing done) where the cache is not empty any more."""
    if not isinstance(storage, _CachedStorage):
        return False
    with storage._lock:
        info = storage._studies.setdefault(sid, _StudyInfo())
        if info.trials or info.last_finished_trial_id >= 0:
            return False  # read meanwhile
        storage._add_trials_to_cache(sid, trials)
        for t in trials:
            if t.state.is_finished():
                info.last_finished_trial_id = max(info.last_finished_trial_id, t._trial_id)
            else:
                info.unfinished_trial_ids.add(t._trial_id)
    return True
