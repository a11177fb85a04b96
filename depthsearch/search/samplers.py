"""The study's sampler: TPE (or random search) behind a cost-aware start-up.

A stacked LSTM's epoch costs about ``layers x width^2`` plus a fixed share per layer: on the
shipped sunspot task a 6 x 128 candidate trains 80 times slower than a 1 x 16 one. The start-up
trials are the ones nothing prunes (the pruner has no finished trials to compare with yet) and
the ones TPE learns its first model from; drawn at random over the whole space, one of them is
often a deep, wide stack that holds a worker for minutes while the others wait for a bar to
prune against.

:class:`CheapFirst` draws the start-up trials from a design instead: **every depth, at a cheap
width**, shallow first. The depth range is cut into ``n_startup_trials`` strata and start-up
trial *k* takes its layer count from the *k*-th (at a point within it set by the study's seed),
so the first trials cover shallow, middle and deep stacks evenly, and the cheap shallow ones
finish first: by the time the deep ones train, the pruner has a bar to judge them by. Widths
come from the lower half (in log scale) of the width range; every other parameter (dropout,
learning rate, batch size, ...) is drawn at random from its whole range. Once
``n_startup_trials`` trials are finished (complete or pruned, as TPE counts them), the wrapped
sampler (TPE) takes over with their results: wide candidates are drawn from then on where TPE
expects them to pay, and a cost-aware pruner (``depthsearch.search.pruners.CostAwarePruner``)
stops the costly ones that do not.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    IntDistribution,
)
from optuna.trial import FrozenTrial, TrialState

from depthsearch._optuna import quiet_experimental, seed_sampler
from depthsearch.spec import StudySpec

__all__ = ["CheapFirst", "depth_point", "make_sampler"]

#: The parameters the start-up draws cheaply (``space.suggest`` names them so).
_WIDTH = "hidden_size"
_DEPTH = "num_layers"
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


def depth_point(k: int, n: int, seed: int) -> float:
    """Where in [0, 1) the depth of start-up trial ``k`` of ``n`` lies: in the ``k``-th of
    ``n`` equal strata (ascending: the cheap shallow stacks first), at an offset within it set
    by ``seed``. Trials past ``n`` (start-up trials beyond the count, while too few are
    complete) go round the strata again."""
    offset = (seed * _GOLDEN) % 1.0
    return ((k % n) + offset) / n


def _is_width(name: str) -> bool:
    return name == _WIDTH or (name.startswith(_WIDTH + "_") and name[len(_WIDTH) + 1 :].isdigit())


def _pick(values: Sequence[Any], point: float) -> Any:
    return values[min(len(values) - 1, int(point * len(values)))]


class CheapFirst(optuna.samplers.BaseSampler):
    """Start-up trials from a cheap design covering every depth, then ``sampler``.

    Args:
        sampler: takes over once ``n_startup_trials`` trials are finished (TPE, whose own
            start-up count should be the same, so that it models their results at once).
        n_startup_trials: finished (complete or pruned) trials before ``sampler`` takes over.
        seed: rotates the depth sequence (the study's seed) and seeds the start-up's draws.
    """

    def __init__(
        self, sampler: optuna.samplers.BaseSampler, *, n_startup_trials: int, seed: int = 0
    ) -> None:
        self.sampler = sampler
        self.n_startup_trials = n_startup_trials
        self.seed = seed
        self._random = optuna.samplers.RandomSampler(seed=seed)
        #: (trial number, whether it is a start-up trial), decided at its first suggest.
        self._phase: tuple[int, bool] | None = None

    def seed_trial(self, seed: int) -> None:
        """Seeds every random state for the next trial (see ``seed_sampler``)."""
        seed_sampler(self._random, seed)
        seed_sampler(self.sampler, seed)

    def reseed_rng(self) -> None:
        self._random.reseed_rng()
        self.sampler.reseed_rng()

    def _startup(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        if self._phase is None or self._phase[0] != trial.number:
            # Finished trials, pruned ones included, as TPE counts its start-up (a study whose
            # pruner stops most start-up candidates must still leave the start-up).
            finished = study.get_trials(
                deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)
            )
            self._phase = (trial.number, len(finished) < self.n_startup_trials)
        return self._phase[1]

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        if self._startup(study, trial):
            return {}
        return self.sampler.infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if not search_space or self._startup(study, trial):
            return {}
        return self.sampler.sample_relative(study, trial, search_space)

    def sample_independent(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        if not self._startup(study, trial):
            return self.sampler.sample_independent(study, trial, param_name, param_distribution)
        narrowed = self._design(trial.number, param_name, param_distribution)
        if isinstance(narrowed, BaseDistribution):
            return self._random.sample_independent(study, trial, param_name, narrowed)
        return narrowed

    def _design(self, number: int, name: str, dist: BaseDistribution) -> Any:
        """The start-up value of ``name`` for trial ``number``: a value, or a narrower
        distribution to draw it from."""
        if name == _DEPTH:
            point = depth_point(number, self.n_startup_trials, self.seed)
            if isinstance(dist, IntDistribution):
                return _pick(range(dist.low, dist.high + 1, dist.step), point)
            if isinstance(dist, CategoricalDistribution):
                return _pick(sorted(dist.choices, key=_order), point)
        elif _is_width(name):
            if isinstance(dist, IntDistribution):
                # The lower half of the range in log scale: at most high/low times cheaper.
                cap = int(math.sqrt(dist.low * dist.high))
                cap = max(dist.low, dist.low + (cap - dist.low) // dist.step * dist.step)
                return IntDistribution(dist.low, cap, log=dist.log, step=dist.step)
            if isinstance(dist, CategoricalDistribution) and len(dist.choices) > 1:
                ordered = sorted(dist.choices, key=_order)
                return CategoricalDistribution(ordered[: math.ceil(len(ordered) / 2)])
        return dist

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.sampler.before_trial(study, trial)

    def after_trial(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        self.sampler.after_trial(study, trial, state, values)


def _order(value: Any) -> tuple[int, Any]:
    """Numbers by value, anything else after them by its text."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, value)
    return (1, str(value))


def make_sampler(spec: StudySpec, seed: int | None) -> optuna.samplers.BaseSampler:
    """TPE (multivariate, grouped for the conditional space, constant liar for parallel
    workers) or random sampling, behind the cheap-first start-up unless ``[sampler] startup =
    "random"``. ``seed`` seeds the random states (the worker loop reseeds them per trial)."""
    inner: optuna.samplers.BaseSampler
    if spec.sampler.kind == "random":
        inner = optuna.samplers.RandomSampler(seed=seed)
    else:
        with quiet_experimental():
            inner = optuna.samplers.TPESampler(
                seed=seed,
                n_startup_trials=spec.sampler.n_startup_trials,
                multivariate=True,
                group=True,
                constant_liar=True,
            )
    if spec.sampler.startup == "random" or spec.sampler.n_startup_trials == 0:
        return inner
    return CheapFirst(inner, n_startup_trials=spec.sampler.n_startup_trials, seed=spec.seed)
