"""The cost-aware start-up: every depth at a cheap width first, then TPE; seeded draws."""

from __future__ import annotations

import math

import optuna
import pytest

from depthsearch._optuna import seed_sampler
from depthsearch.search.samplers import CheapFirst, depth_point, make_sampler
from depthsearch.search.space import suggest
from depthsearch.spec import Choices, spec_from_dict

SPACE = {
    "num_layers": {"low": 1, "high": 6},
    "hidden_size": {"low": 16, "high": 128, "log": True},
}


def study_spec(
    seed: int, sampler: dict[str, object] | None = None, space: dict[str, object] | None = None
) -> object:
    doc: dict[str, object] = {
        "study": {"name": "s", "n_trials": 30, "seed": seed},
        "space": space or SPACE,
    }
    if sampler is not None:
        doc["sampler"] = sampler
    return spec_from_dict(doc, where="test")


def drive(spec: object, n: int, value: object = None) -> optuna.Study:
    """Runs ``n`` trials one after another as a worker does (the sampler reseeded per trial);
    ``value(params)`` is each trial's loss (default: wider is better)."""
    sampler = make_sampler(spec, spec.seed)  # type: ignore[attr-defined]
    study = optuna.create_study(sampler=sampler)
    for _ in range(n):
        trial = study.ask()
        seed_sampler(sampler, spec.seed + trial.number)  # type: ignore[attr-defined]
        cand = suggest(trial, spec.space, input_size=1, output_size=1)  # type: ignore[attr-defined]
        loss = value(trial.params) if value else 1.0 / max(cand.model.hidden_sizes)  # type: ignore[operator]
        study.tell(trial, loss)
    return study


@pytest.mark.parametrize("seed", [0, 1, 7, 12345])
def test_depth_points_take_one_stratum_each_shallow_first(seed: int) -> None:
    points = [depth_point(k, 8, seed) for k in range(8)]
    assert [int(p * 8) for p in points] == list(range(8))
    # Past the count (too few complete yet) they go round again.
    assert depth_point(9, 8, seed) == points[1]


@pytest.mark.parametrize("seed", [0, 3, 99])
def test_start_up_covers_shallow_to_deep_at_cheap_widths(seed: int) -> None:
    study = drive(study_spec(seed), 5)
    depths = [t.params["num_layers"] for t in study.trials]
    widths = [t.params["hidden_size"] for t in study.trials]
    assert depths == sorted(depths) and depths[0] <= 2 and depths[-1] >= 5, depths
    assert all(16 <= w <= math.sqrt(16 * 128) for w in widths), widths
    assert isinstance(study.sampler, CheapFirst)


def test_tpe_takes_over_and_goes_wide_when_wide_pays() -> None:
    study = drive(study_spec(5), 25)
    later = [t.params["hidden_size"] for t in study.trials[5:]]
    assert max(later) > math.sqrt(16 * 128), later


def test_categorical_widths_and_depths_use_the_lower_half() -> None:
    space = {"num_layers": [1, 2, 3, 4], "hidden_size": [256, 16, 64, 32]}
    study = drive(study_spec(2, space=space), 5)
    assert {t.params["hidden_size"] for t in study.trials} <= {16, 32}
    assert len({t.params["num_layers"] for t in study.trials}) == 4


def test_per_layer_widths_are_cheap_too() -> None:
    space = {**SPACE, "per_layer_hidden": True}
    study = drive(study_spec(4, space=space), 5)
    widths = [v for t in study.trials for k, v in t.params.items() if k.startswith("hidden")]
    assert widths and all(w <= math.sqrt(16 * 128) for w in widths)


def test_same_seed_same_candidates_other_seed_others() -> None:
    def params(seed: int) -> list[dict[str, object]]:
        return [t.params for t in drive(study_spec(seed), 12).trials]

    assert params(11) == params(11)
    assert params(11) != params(12)


def test_random_start_up_is_tpe_alone() -> None:
    spec = study_spec(1, sampler={"startup": "random"})
    assert isinstance(make_sampler(spec, 1), optuna.samplers.TPESampler)  # type: ignore[arg-type]
    with pytest.raises(Exception, match="startup"):
        study_spec(1, sampler={"startup": "cheapest"})


def test_default_space_start_up_uses_the_smaller_width_choices() -> None:
    spec = study_spec(3, space={"num_layers": {"low": 1, "high": 4}})
    assert spec.space.hidden_size == Choices((16, 32, 64))  # type: ignore[attr-defined]
    study = drive(spec, 5)
    assert {t.params["hidden_size"] for t in study.trials} <= {16, 32}


def test_pruned_start_up_trials_count_as_finished() -> None:
    # A pruner that stops every start-up candidate must not keep the study in its start-up.
    spec = study_spec(1)
    sampler = make_sampler(spec, 1)  # type: ignore[arg-type]
    study = optuna.create_study(sampler=sampler)
    for _ in range(6):
        trial = study.ask()
        suggest(trial, spec.space, input_size=1, output_size=1)  # type: ignore[attr-defined]
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    assert sampler._phase == (5, False)  # type: ignore[attr-defined]
