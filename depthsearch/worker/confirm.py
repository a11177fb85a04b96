"""Queueing confirmation trials (see :mod:`depthsearch.search.confirm`): the best candidates'
parameters enqueued as WAITING trials of the study, so that every running or future worker
(``launch``, Slurm, Kubernetes, by hand) takes them like any other queued trial."""

from __future__ import annotations

import dataclasses
import logging

import optuna
from optuna.trial import TrialState

from depthsearch.search.confirm import (
    CONFIRM_AUTO,
    CONFIRM_INDEX,
    CONFIRM_OF,
    CONFIRM_SEED,
    CONFIRM_TRIALS,
    confirm_plan,
    is_confirm,
    pick_candidates,
)
from depthsearch.spec import StudySpec
from depthsearch.storage import storage_lock

__all__ = ["Queued", "confirm_at_end", "enqueue_confirmations"]

_log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Queued:
    """What one call queued: (candidate's trial number, seed) each, and the candidates."""

    runs: list[tuple[int, int]]
    candidates: list[int]


def _enqueue(
    study: optuna.Study, spec: StudySpec, *, top: int, seeds: int, per_depth: bool
) -> Queued:
    """Under the caller's lock: the missing confirmations queued, the count updated."""
    trials = study.get_trials(deepcopy=False)
    maximise = spec.directions[0] == "maximize"
    candidates = pick_candidates(trials, top=top, per_depth=per_depth, maximise=maximise)
    plan = confirm_plan(trials, candidates, seeds, spec.seed)
    for candidate, index, seed in plan:
        study.enqueue_trial(
            dict(candidate.params),
            user_attrs={CONFIRM_OF: candidate.number, CONFIRM_INDEX: index, CONFIRM_SEED: seed},
        )
    if plan:
        # The budget grows by the confirmations that can still finish (not those that
        # failed for good): finished + running + waiting never passes it.
        alive = sum(1 for t in trials if is_confirm(t) and t.state != TrialState.FAIL) + len(plan)
        study.set_user_attr(CONFIRM_TRIALS, alive)
    return Queued([(c.number, seed) for c, _, seed in plan], [c.number for c in candidates])


def enqueue_confirmations(
    study: optuna.Study,
    spec: StudySpec,
    url: str,
    *,
    top: int,
    seeds: int,
    per_depth: bool,
) -> Queued:
    """Queues ``seeds`` confirmations of each candidate (the ``top`` best of the search, or
    its best per depth), less those already queued, running or complete: calling it twice
    queues nothing new. One caller at a time (a lock of the study's own)."""
    with storage_lock(url, scope=f"{study.study_name}/confirm"):
        return _enqueue(study, spec, top=top, seeds=seeds, per_depth=per_depth)


def confirm_at_end(study: optuna.Study, spec: StudySpec, url: str) -> bool:
    """The study file's ``[confirm]``, queued once when the search's budget is met (by the
    first worker to see it). True when this call queued trials."""
    wanted = spec.confirm
    if not wanted.seeds:
        return False
    with storage_lock(url, scope=f"{study.study_name}/confirm"):
        if study.user_attrs.get(CONFIRM_AUTO):  # read afresh, under the lock
            return False
        queued = _enqueue(
            study, spec, top=wanted.top, seeds=wanted.seeds, per_depth=wanted.per_depth
        )
        study.set_user_attr(CONFIRM_AUTO, True)
    if queued.runs:
        _log.info(
            "the search is done: %d confirmation trial(s) queued ([confirm]: %d seed(s) of "
            "trial(s) %s)",
            len(queued.runs),
            wanted.seeds,
            ", ".join(map(str, queued.candidates)),
        )
    return bool(queued.runs)
