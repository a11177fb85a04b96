"""Confirmation: the best candidates trained again with new seeds, and what they say.

A search's best value is the best of many noisy numbers, chosen on the split it is scored on:
optimistic. Confirmation trials are trials of the same study tagged with the candidate they
re-train (``confirm_of``) and their own seed (``confirm_seed``); they are not pruned, do not
count against ``[study] n_trials``, and score the held-out test part at their best epoch.
This module picks the candidates and reads the trials back into means with 95 % intervals.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import statistics
from collections.abc import Iterable, Sequence
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from depthsearch.search.trials import (
    BEST_VAL_LOSS,
    CONFIRM_INDEX,
    CONFIRM_OF,
    CONFIRM_SEED,
    PARAM_COUNT,
    SECONDS_PER_EPOCH,
    is_confirm,
    trial_layers,
)

__all__ = [
    "BASELINES",
    "CONFIRM_AUTO",
    "CONFIRM_INDEX",
    "CONFIRM_OF",
    "CONFIRM_SEED",
    "CONFIRM_TRIALS",
    "Candidate",
    "Interval",
    "confirm_plan",
    "confirmed",
    "ended",
    "ended_text",
    "interval",
    "is_confirm",
    "pick_candidates",
    "search_trials",
    "t_quantile",
]

# Study user attributes.
#: How many confirmation trials were enqueued in all (the budget grows by as many).
CONFIRM_TRIALS = "confirm_trials"
#: Set once the study file's ``[confirm]`` was enqueued at the end of the search.
CONFIRM_AUTO = "confirm_auto"
#: The baselines' scores (``depthsearch.learn.baselines``), written by the workers.
BASELINES = "baselines"


def search_trials(trials: Iterable[FrozenTrial]) -> list[FrozenTrial]:
    """The search's own trials (no confirmation)."""
    return [t for t in trials if not is_confirm(t)]


def _ranked(trials: Iterable[FrozenTrial], maximise: bool) -> list[FrozenTrial]:
    complete = [
        t
        for t in search_trials(trials)
        if t.state == TrialState.COMPLETE and t.values and math.isfinite(t.values[0])
    ]
    sign = -1.0 if maximise else 1.0
    return sorted(complete, key=lambda t: (sign * t.values[0], t.number))


def pick_candidates(
    trials: Iterable[FrozenTrial], *, top: int, per_depth: bool, maximise: bool = False
) -> list[FrozenTrial]:
    """The search's best complete trials with distinct parameters: the ``top`` best, or the
    best of every depth (``per_depth``), best first. With ``per_depth``, a depth whose every
    trial was pruned is represented by its pruned trial with the best value reached (so that
    the answer covers every depth the search tried)."""
    trials = list(trials)
    chosen: list[FrozenTrial] = []
    seen_params: list[dict[str, Any]] = []
    depths: set[int | None] = set()
    for t in _ranked(trials, maximise):
        if t.params in seen_params:
            continue
        if per_depth:
            depth = trial_layers(t)
            if depth in depths:
                continue
            depths.add(depth)
        elif len(chosen) >= top:
            break
        chosen.append(t)
        seen_params.append(t.params)
    if per_depth:
        sign = -1.0 if maximise else 1.0
        pruned: dict[int | None, tuple[float, FrozenTrial]] = {}
        for t in search_trials(trials):
            reached = [v for v in t.intermediate_values.values() if math.isfinite(v)]
            depth = trial_layers(t)
            if t.state != TrialState.PRUNED or not reached or depth in depths:
                continue
            best = min(sign * v for v in reached)
            if depth not in pruned or best < pruned[depth][0]:
                pruned[depth] = (best, t)
        chosen += [pruned[d][1] for d in sorted(pruned, key=lambda d: d or 0)]
    return chosen


def ended(trials: Iterable[FrozenTrial]) -> list[tuple[int, int]]:
    """The confirmations that ended without a result, as (candidate's trial number, index):
    every try of them failed (a failure past ``[workers] max_retry``, a trial dropped by
    Ctrl-C twice, out of memory) and none is waiting or running. ``confirm`` asks again."""
    tries: dict[tuple[int, int], list[TrialState]] = {}
    for t in trials:
        if is_confirm(t):
            key = (int(t.user_attrs[CONFIRM_OF]), int(t.user_attrs.get(CONFIRM_INDEX, 0)))
            tries.setdefault(key, []).append(t.state)
    return sorted(k for k, states in tries.items() if all(s == TrialState.FAIL for s in states))


def ended_text(gone: Sequence[tuple[int, int]], study_name: str) -> str | None:
    """One line saying which confirmations ended without a result, and how to ask again."""
    if not gone:
        return None
    by_candidate: dict[int, int] = {}
    for number, _ in gone:
        by_candidate[number] = by_candidate.get(number, 0) + 1
    which = ", ".join(f"{n} of trial {c}" for c, n in sorted(by_candidate.items()))
    return (
        f"{len(gone)} confirmation trial(s) ended without a result ({which}): ask again with "
        f"`depthsearch confirm --study {study_name}` and the same --top/--per-depth/--seeds"
    )


def confirm_seed(study_seed: int, source: int, index: int) -> int:
    """The seed of candidate ``source``'s ``index``-th confirmation: none of the search's
    (study seed + trial number), none of another confirmation's."""
    return (study_seed + 1_000_003 * (index + 1) + 7_919 * source) % (2**31)


def confirm_plan(
    trials: Sequence[FrozenTrial], candidates: Sequence[FrozenTrial], seeds: int, study_seed: int
) -> list[tuple[FrozenTrial, int, int]]:
    """What is still missing for ``seeds`` confirmations of each candidate: (candidate,
    index, seed). A confirmation counts once it is waiting, running or complete; one that
    failed for good is replaced."""
    have: dict[int, set[int]] = {}
    for t in trials:
        if is_confirm(t) and t.state in (
            TrialState.COMPLETE,
            TrialState.RUNNING,
            TrialState.WAITING,
        ):
            have.setdefault(int(t.user_attrs[CONFIRM_OF]), set()).add(
                int(t.user_attrs.get(CONFIRM_INDEX, 0))
            )
    plan = []
    for c in candidates:
        done = have.get(c.number, set())
        index = 0
        while len(done) < seeds:
            if index not in done:
                plan.append((c, index, confirm_seed(study_seed, c.number, index)))
                done.add(index)
            index += 1
    return plan


@functools.lru_cache(maxsize=256)
def t_quantile(p: float, df: int) -> float:
    """Student's t quantile (``p`` in (0.5, 1)): the CDF inverted by bisection; the CDF from
    the regularised incomplete beta function (Lentz's continued fraction). Remembered: an
    answer asks for the same few (one per seed count)."""
    if df < 1:
        raise ValueError(f"df must be >= 1, but got {df}")

    def cdf(t: float) -> float:
        x = df / (df + t * t)
        return 1.0 - 0.5 * _betainc(df / 2.0, 0.5, x)

    low, high = 0.0, 1.0
    while cdf(high) < p:
        high *= 2.0
    for _ in range(200):
        mid = (low + high) / 2.0
        low, high = (mid, high) if cdf(mid) < p else (low, mid)
    return (low + high) / 2.0


def _betainc(a: float, b: float, x: float) -> float:
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x > (a + 1.0) / (a + b + 2.0):
        return 1.0 - _betainc(b, a, 1.0 - x)
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    f = d
    for m in range(1, 400):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            f *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return front * f / a


@dataclasses.dataclass(frozen=True)
class Interval:
    """A mean over ``n`` seeds and the half-width of its 95 % t-interval (inf for one)."""

    mean: float
    half: float
    n: int

    @property
    def low(self) -> float:
        return self.mean - self.half

    @property
    def high(self) -> float:
        return self.mean + self.half

    def overlaps(self, other: Interval) -> bool:
        return self.low <= other.high and other.low <= self.high

    def text(self) -> str:
        if self.n < 2:
            return f"{self.mean:.4g} (1 seed)"
        return f"{self.mean:.4g} ± {self.half:.2g}"


def interval(values: Sequence[float], level: float = 0.95) -> Interval:
    """The mean of ``values`` with its t-interval: ``mean ± t(1 - (1-level)/2, n-1) s/√n``."""
    n = len(values)
    if n == 0:
        raise ValueError("no values")
    mean = statistics.fmean(values)
    if n == 1:
        return Interval(mean, math.inf, 1)
    half = t_quantile(1.0 - (1.0 - level) / 2.0, n - 1) * statistics.stdev(values) / math.sqrt(n)
    return Interval(mean, half, n)


@dataclasses.dataclass(frozen=True)
class Candidate:
    """A candidate's confirmations: its search trial, and per metric the values over seeds."""

    source: FrozenTrial
    trials: list[FrozenTrial]
    depth: int | None
    values: dict[str, list[float]]

    def metric(self, name: str) -> Interval | None:
        got = self.values.get(name, [])
        return interval(got) if got else None

    @property
    def param_count(self) -> int | None:
        value = self.source.user_attrs.get(PARAM_COUNT)
        return int(value) if isinstance(value, (int, float)) else None

    @property
    def seconds_per_epoch(self) -> float | None:
        got = [
            float(t.user_attrs[SECONDS_PER_EPOCH])
            for t in self.trials
            if isinstance(t.user_attrs.get(SECONDS_PER_EPOCH), (int, float))
        ]
        return statistics.fmean(got) if got else None


def confirmed(trials: Sequence[FrozenTrial], names: Sequence[str]) -> list[Candidate]:
    """The candidates with at least one complete confirmation, in the order of their search
    trials' numbers; ``names``: the metrics read (the first objective, ``val_loss``...),
    each from the trial's value (the first objective) or its user attributes."""
    by_number = {t.number: t for t in trials}
    groups: dict[int, list[FrozenTrial]] = {}
    for t in trials:
        if is_confirm(t) and t.state == TrialState.COMPLETE:
            groups.setdefault(int(t.user_attrs[CONFIRM_OF]), []).append(t)
    out = []
    for number in sorted(groups):
        source = by_number.get(number)
        if source is None:
            continue
        members = groups[number]
        values: dict[str, list[float]] = {}
        for name in names:
            got = [_value(t, name) for t in members]
            values[name] = [v for v in got if v is not None]
        out.append(Candidate(source, members, trial_layers(source), values))
    return out


def _value(trial: FrozenTrial, name: str) -> float | None:
    value = trial.user_attrs.get(BEST_VAL_LOSS if name == "val_loss" else name)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None
