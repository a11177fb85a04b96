"""The study's pruner, built from the spec; a depth-aware median pruner.

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
from collections.abc import Callable, Collection, Container
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from depthsearch._optuna import study_storage
from depthsearch.search.confirm import BASELINES
from depthsearch.search.trials import LAST_EPOCH, VAL_LOSS_SE, trial_cost, trial_layers
from depthsearch.spec import StudySpec

__all__ = [
    "CostAwarePruner",
    "DepthAwarePruner",
    "NewComplete",
    "RecentTrials",
    "Separated",
    "depth_band",
    "make_pruner",
]


def depth_band(layers: int | None) -> int | None:
    """The band of a layer count: 0 for 1 layer, 1 for 2, 2 for 3-4, 3 for 5-8, ..."""
    if layers is None:
        return None
    return max(0, math.ceil(math.log2(layers)))


class _Peers:
    """The study as one of Optuna's pruning rules reads it, with a chosen list as its complete
    trials (a trial's depth band, or a recent read) and its user attributes as read with
    them. Passes on only what a rule reads, as Optuna's ``_BracketStudy`` does for
    Hyperband's brackets."""

    def __init__(
        self,
        study: optuna.Study,
        complete: list[FrozenTrial],
        user_attrs: dict[str, Any] | None = None,
    ) -> None:
        self._study = study
        self._complete = complete
        self.user_attrs = user_attrs if user_attrs is not None else dict(study.user_attrs)
        self.direction = study.direction
        self.directions = study.directions
        self.study_name = study.study_name

    def get_trials(
        self, deepcopy: bool = True, states: Container[TrialState] | None = None
    ) -> list[FrozenTrial]:
        if states is not None and {s for s in TrialState if s in states} <= {TrialState.COMPLETE}:
            return [t for t in self._complete if t.state in states]
        return self._study.get_trials(deepcopy=deepcopy, states=states)


def _complete(study: optuna.Study) -> list[FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def _checked(n_startup_trials: int, n_warmup_steps: int, interval_steps: int) -> None:
    if n_startup_trials < 0 or n_warmup_steps < 0 or interval_steps < 1:
        raise ValueError(
            "n_startup_trials >= 0, n_warmup_steps >= 0 and interval_steps >= 1 must hold, "
            f"but got ({n_startup_trials}, {n_warmup_steps}, {interval_steps})"
        )


class DepthAwarePruner(optuna.pruners.BasePruner):
    """Optuna's median rule within depth bands: :class:`optuna.pruners.MedianPruner` itself,
    shown only the complete trials of the trial's band (its start-up count counts them).

    Args:
        n_startup_trials: complete trials a band needs before it prunes.
        n_warmup_steps: epochs every trial trains before it can be pruned.
        interval_steps: check every this many epochs after the warm-up.
        depth_warmup: warm-up epochs added per depth band beyond the first.
    """

    def __init__(
        self,
        n_startup_trials: int = 3,
        n_warmup_steps: int = 2,
        interval_steps: int = 1,
        depth_warmup: int = 0,
    ) -> None:
        _checked(n_startup_trials, n_warmup_steps, interval_steps)
        self.n_startup_trials = n_startup_trials
        self.n_warmup_steps = n_warmup_steps
        self.interval_steps = interval_steps
        self.depth_warmup = depth_warmup

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        band = depth_band(trial_layers(trial))
        peers = [t for t in _complete(study) if depth_band(trial_layers(t)) == band]
        view: Any = _Peers(study, peers)
        rule = optuna.pruners.MedianPruner(
            n_startup_trials=self.n_startup_trials,
            n_warmup_steps=self.n_warmup_steps + self.depth_warmup * (band or 0),
            interval_steps=self.interval_steps,
        )
        return bool(rule.prune(view, trial))  # Optuna gives numpy booleans


class CostAwarePruner(optuna.pruners.BasePruner):
    """The median rule for candidates of ordinary cost, a stricter one for costly candidates.

    An epoch of a stacked LSTM costs about its parameter count (``layers x width^2``) plus a
    fixed share per layer and batch (:func:`~depthsearch.search.trials.trial_cost`), and the
    candidates of one study differ in cost a hundredfold. A trial is stopped when its best loss
    so far is worse than the ``q``-th percentile of the complete trials' losses at the same
    epoch, where ``q = 50 / sqrt(c)`` and ``c`` is its cost over the complete trials' median
    (``q = 50``, the median rule, for ``c <= 1``; at least ``min_percentile``).
    A candidate 16 times as costly as the typical one must be in the best 12.5 % to go on:
    it may, when it is good, and it pays for its epochs only then. The rule is Optuna's
    :class:`optuna.pruners.PercentilePruner` with that trial's ``q`` (its warm-up, interval
    and start-up semantics, NaN handling and interpolation).

    Args:
        n_startup_trials: complete trials before anything is pruned.
        n_warmup_steps: epochs every trial trains before it can be pruned.
        interval_steps: check every this many epochs after the warm-up.
        min_percentile: the strictest bar, for the costliest candidates.
        depth_warmup: warm-up epochs added per depth band (:func:`depth_band`: none for one
            layer, one for two, two for 3-4, ...): deep stacks start slower.
    """

    def __init__(
        self,
        n_startup_trials: int = 3,
        n_warmup_steps: int = 1,
        interval_steps: int = 1,
        min_percentile: float = 10.0,
        depth_warmup: int = 0,
    ) -> None:
        _checked(n_startup_trials, n_warmup_steps, interval_steps)
        if not 0.0 < min_percentile <= 50.0:
            raise ValueError(f"min_percentile must be in (0, 50], but got {min_percentile}")
        self.n_startup_trials = n_startup_trials
        self.n_warmup_steps = n_warmup_steps
        self.interval_steps = interval_steps
        self.min_percentile = min_percentile
        self.depth_warmup = depth_warmup

    def percentile_for(self, cost: float | None, peer_costs: list[float]) -> float:
        """The percentile a trial of ``cost`` must reach, given the complete trials' costs."""
        known = [c for c in peer_costs if c > 0]
        if cost is None or cost <= 0 or not known:
            return 50.0
        ratio = cost / statistics.median(known)
        return max(self.min_percentile, 50.0 / math.sqrt(max(1.0, ratio)))

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        complete = _complete(study)
        costs = [c for t in complete if (c := trial_cost(t)) is not None]
        rule = optuna.pruners.PercentilePruner(
            self.percentile_for(trial_cost(trial), costs),
            n_startup_trials=self.n_startup_trials,
            n_warmup_steps=self.n_warmup_steps
            + self.depth_warmup * (depth_band(trial_layers(trial)) or 0),
            interval_steps=self.interval_steps,
        )
        view: Any = _Peers(study, complete)  # read once, for the costs and the rule alike
        return bool(rule.prune(view, trial))


class Separated(optuna.pruners.BasePruner):
    """Lets ``pruner`` stop a trial only once the curves stand apart by more than their noise.

    At an epoch where every trial still sits where a model that learned nothing would, or
    where this trial is within the noise of the complete trials' median, a verdict would
    rest on noise: the trial goes on; after that, ``pruner``'s own rule (depth- or
    cost-aware) decides as before. The noise, at ``sigmas`` standard errors: for a
    classification, of the accuracy on the validation part (binomial, around the majority
    class's: "nobody learned" is nobody above it by that much); otherwise of the validation
    loss over its samples (the trial's own ``val_loss_se``: "nobody learned" is every loss
    within it of the strongest baseline's). The baselines are the study's (``baselines``).
    """

    def __init__(self, pruner: optuna.pruners.BasePruner, *, sigmas: float = 2.0) -> None:
        self.pruner = pruner
        self.sigmas = sigmas

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        last = trial.user_attrs.get(LAST_EPOCH)
        if step is not None and isinstance(last, dict) and last.get("epoch") == step:
            complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            baselines = getattr(study, "user_attrs", {}).get(BASELINES)
            baselines = baselines if isinstance(baselines, dict) else {}
            if "val_accuracy" in last and "majority class" in baselines:
                noisy = self._chance(last, step, complete, baselines["majority class"])
            else:
                noisy = self._loss(
                    trial.intermediate_values[step], last, step, complete, baselines
                )
            if noisy:
                return False
        return bool(self.pruner.prune(study, trial))

    def _chance(
        self, last: dict[str, Any], step: int, complete: list[FrozenTrial], majority: Any
    ) -> bool:
        """Whether a classification's accuracies at ``step`` are within the noise."""
        p, n = majority.get("val_accuracy"), majority.get("val_count")
        if not isinstance(p, (int, float)) or not isinstance(n, int) or n < 1:
            return False
        margin = self.sigmas * math.sqrt(max(p * (1 - p), 1.0 / n) / n)
        others = [
            float(curve[step - 1])
            for t in complete
            if isinstance(curve := t.user_attrs.get("val_accuracy_curve"), list)
            and len(curve) >= step
            and isinstance(curve[step - 1], (int, float))
        ]
        mine = float(last["val_accuracy"])
        if max([mine, *others]) <= p + margin:
            return True  # nobody above the majority class yet
        return bool(others) and statistics.median(others) - mine <= margin

    def _loss(
        self,
        value: float,
        last: dict[str, Any],
        step: int,
        complete: list[FrozenTrial],
        baselines: dict[str, Any],
    ) -> bool:
        """Whether losses at ``step`` are within the trial's noise of each other, or all of
        the strongest baseline's."""
        noise = last.get(VAL_LOSS_SE)
        if not isinstance(noise, (int, float)) or not noise > 0:
            return False
        margin = self.sigmas * float(noise)
        at_step = [
            v
            for t in complete
            if (v := t.intermediate_values.get(step)) is not None and math.isfinite(v)
        ]
        losses = [
            float(s["val_loss"])
            for s in baselines.values()
            if isinstance(s, dict) and isinstance(s.get("val_loss"), (int, float))
        ]
        if losses and all(abs(v - min(losses)) <= margin for v in [value, *at_step]):
            return True  # nobody learned more than the baseline knows
        return bool(at_step) and value - statistics.median(at_step) <= margin


#: What :class:`RecentTrials` reads when it holds a list already: the study's complete trials
#: not among the numbers it holds, and the study's user attributes (None: it cannot tell).
NewComplete = Callable[
    [optuna.Study, Collection[int]], "tuple[list[FrozenTrial], dict[str, Any]] | None"
]


class RecentTrials(optuna.pruners.BasePruner):
    """Hands ``pruner`` the study's complete trials as read at most ``max_age_s`` ago, with
    those this worker finished since (:meth:`finished`).

    A median-style pruner reads every complete trial at every epoch, and Optuna's cached
    storage re-reads the running trials (the asking one included) from the database each
    time: several milliseconds, twelve times in a twelve-epoch trial that may last under a
    second. Within a few seconds, the list changes only by other workers' trials, which come
    when they come; this worker's own are added as it tells them, so one worker decides
    the same way run after run. Epochs longer than ``max_age_s`` read afresh every time:
    with ``read_new``, only what completed since (a count when nothing did).
    """

    def __init__(
        self,
        pruner: optuna.pruners.BasePruner,
        max_age_s: float = 2.0,
        read_new: NewComplete | None = None,
    ) -> None:
        self.pruner = pruner
        self.max_age_s = max_age_s
        self._read_new = read_new
        self._read_at = -math.inf
        self._key: tuple[str, int] | None = None
        self._complete: list[FrozenTrial] = []
        self._attrs: dict[str, Any] = {}

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        now = time.monotonic()
        key = (study.study_name, id(study_storage(study)))
        if key != self._key or now - self._read_at > self.max_age_s:
            self._refresh(study, same=key == self._key)
            self._read_at, self._key = now, key
        view: Any = _Peers(study, self._complete, self._attrs)
        return self.pruner.prune(view, trial)

    def _refresh(self, study: optuna.Study, *, same: bool) -> None:
        got = None
        if same and self._read_new is not None:
            got = self._read_new(study, [t.number for t in self._complete])
        if got is None:
            self._complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            self._attrs = dict(study.user_attrs)
            return
        new, self._attrs = got
        if new:
            self._complete = sorted([*self._complete, *new], key=lambda t: t.number)

    @property
    def complete(self) -> list[FrozenTrial]:
        """The complete trials its next verdict reads (unless the list is older than
        ``max_age_s`` by then)."""
        return list(self._complete)

    def finished(self, trial: FrozenTrial) -> None:
        """A trial this worker just told: complete, it counts from the next verdict on."""
        known = {t.number for t in self._complete}
        if trial.state == TrialState.COMPLETE and trial.number not in known:
            self._complete = [*self._complete, trial]


def make_pruner(spec: StudySpec, read_new: NewComplete | None = None) -> optuna.pruners.BasePruner:
    """The spec's pruner; a median-style rule reads the complete trials through
    :class:`RecentTrials` (``read_new``: its incremental read)."""
    p = spec.pruner
    if p.kind == "none":
        return optuna.pruners.NopPruner()
    if p.kind == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=p.min_resource,
            max_resource=spec.train.max_epochs,
            reduction_factor=p.reduction_factor,
        )
    if p.kind == "successive-halving":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=p.min_resource,
            reduction_factor=p.reduction_factor,
            min_early_stopping_rate=p.min_early_stopping_rate,
        )
    return RecentTrials(Separated(_median_rule(spec)), read_new=read_new)


def _median_rule(spec: StudySpec) -> optuna.pruners.BasePruner:
    """The median-style rule of ``[pruner] kind``."""
    p = spec.pruner
    common = {
        "n_startup_trials": p.n_startup_trials,
        "n_warmup_steps": p.n_warmup_steps,
        "interval_steps": p.interval_steps,
    }
    if p.kind == "depth-aware":
        return DepthAwarePruner(**common, depth_warmup=p.depth_warmup)
    if p.kind == "cost-aware":
        return CostAwarePruner(**common, depth_warmup=p.depth_warmup)
    if p.kind == "percentile":
        return optuna.pruners.PercentilePruner(p.percentile, **common)
    return optuna.pruners.MedianPruner(**common)
