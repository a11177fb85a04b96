"""The study's sampler and pruner, built from the spec; a depth-aware median pruner.

Deep stacks learn more slowly in their first epochs. Optuna's median pruner compares epoch 3 of
a 12-layer stack with epoch 3 of every other trial, 1-layer ones included, and so stops deep
candidates that would have ended near the top. :class:`DepthAwarePruner` applies the same rule
(stop when the trial's best loss so far is worse than the median of the complete trials at
the same epoch) within the trial's depth band only: 1, 2, 3-4, 5-8, 9-16, ... layers. A band
with fewer than ``n_startup_trials`` complete trials prunes nothing yet, so the first deep
candidates train to the end and set the bar for those that follow.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Container
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from depthsearch.search._optuna import quiet_experimental, study_storage
from depthsearch.search.trials import trial_layers
from depthsearch.spec import StudySpec

__all__ = ["DepthAwarePruner", "RecentTrials", "depth_band", "make_pruner", "make_sampler"]


def depth_band(layers: int | None) -> int | None:
    """The band of a layer count: 0 for 1 layer, 1 for 2, 2 for 3-4, 3 for 5-8, ..."""
    if layers is None:
        return None
    return max(0, math.ceil(math.log2(layers)))


class DepthAwarePruner(optuna.pruners.BasePruner):
    """Median pruning within depth bands.

    Args:
        n_startup_trials: complete trials a band needs before it prunes.
        n_warmup_steps: epochs every trial trains before it can be pruned.
        interval_steps: check every this many epochs after the warm-up.
    """

    def __init__(
        self, n_startup_trials: int = 3, n_warmup_steps: int = 2, interval_steps: int = 1
    ) -> None:
        if n_startup_trials < 0 or n_warmup_steps < 0 or interval_steps < 1:
            raise ValueError(
                "n_startup_trials >= 0, n_warmup_steps >= 0 and interval_steps >= 1 must hold, "
                f"but got ({n_startup_trials}, {n_warmup_steps}, {interval_steps})"
            )
        self.n_startup_trials = n_startup_trials
        self.n_warmup_steps = n_warmup_steps
        self.interval_steps = interval_steps

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is None or step < self.n_warmup_steps:
            return False
        if (step - self.n_warmup_steps) % self.interval_steps:
            return False
        best = min(trial.intermediate_values.values())
        if math.isnan(best):
            return True
        band = depth_band(trial_layers(trial))
        peers = [
            t
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if depth_band(trial_layers(t)) == band
        ]
        if len(peers) < max(1, self.n_startup_trials):
            return False
        at_step = [
            v
            for t in peers
            if (v := t.intermediate_values.get(step)) is not None and not math.isnan(v)
        ]
        if not at_step:
            return False
        return best > statistics.median(at_step)


class _CompleteTrialsView:
    """A study whose complete trials are a given list; everything else is the study's."""

    def __init__(self, study: optuna.Study, complete: list[FrozenTrial]) -> None:
        self._study = study
        self._complete = complete

    def get_trials(
        self, deepcopy: bool = True, states: Container[TrialState] | None = None
    ) -> list[FrozenTrial]:
        if states is not None and {s for s in TrialState if s in states} <= {TrialState.COMPLETE}:
            return [t for t in self._complete if t.state in states]
        return self._study.get_trials(deepcopy=deepcopy, states=states)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)


class RecentTrials(optuna.pruners.BasePruner):
    """Hands ``pruner`` the study's complete trials as read at most ``max_age_s`` ago, and
    read afresh for each new trial.

    A median-style pruner reads every complete trial at every epoch, and Optuna's cached
    storage re-reads the running trials (the asking one included) from the database each
    time: several milliseconds, twelve times in a twelve-epoch trial that may last under a
    second. Within one trial, a list a second or two old changes no decision that matters (new
    complete trials come only from other workers); epochs longer than ``max_age_s`` still read
    afresh every time.
    """

    def __init__(self, pruner: optuna.pruners.BasePruner, max_age_s: float = 2.0) -> None:
        self.pruner = pruner
        self.max_age_s = max_age_s
        self._read_at = -math.inf
        self._key: tuple[str, int, int] | None = None
        self._complete: list[FrozenTrial] = []

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        now = time.monotonic()
        key = (study.study_name, id(study_storage(study)), trial.number)
        if key != self._key or now - self._read_at > self.max_age_s:
            self._complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            self._read_at, self._key = now, key
        view: Any = _CompleteTrialsView(study, self._complete)
        return self.pruner.prune(view, trial)


def make_sampler(spec: StudySpec, seed: int | None) -> optuna.samplers.BaseSampler:
    """TPE (multivariate, grouped for the conditional space, constant liar for parallel
    workers) or random sampling."""
    if spec.sampler.kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    with quiet_experimental():
        return optuna.samplers.TPESampler(
            seed=seed,
            n_startup_trials=spec.sampler.n_startup_trials,
            multivariate=True,
            group=True,
            constant_liar=True,
        )


def make_pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    p = spec.pruner
    if p.kind == "none":
        return optuna.pruners.NopPruner()
    if p.kind == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=p.min_resource,
            max_resource=spec.train.max_epochs,
            reduction_factor=p.reduction_factor,
        )
    if p.kind == "depth-aware":
        return RecentTrials(
            DepthAwarePruner(
                n_startup_trials=p.n_startup_trials,
                n_warmup_steps=p.n_warmup_steps,
                interval_steps=p.interval_steps,
            )
        )
    if p.kind == "percentile":
        return RecentTrials(
            optuna.pruners.PercentilePruner(
                p.percentile,
                n_startup_trials=p.n_startup_trials,
                n_warmup_steps=p.n_warmup_steps,
                interval_steps=p.interval_steps,
            )
        )
    if p.kind == "successive-halving":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=p.min_resource,
            reduction_factor=p.reduction_factor,
            min_early_stopping_rate=p.min_early_stopping_rate,
        )
    return RecentTrials(
        optuna.pruners.MedianPruner(
            n_startup_trials=p.n_startup_trials,
            n_warmup_steps=p.n_warmup_steps,
            interval_steps=p.interval_steps,
        )
    )
