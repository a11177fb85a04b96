"""The conditional space: parameter names, per-layer widths, dropout only for stacks."""

from __future__ import annotations

import optuna
import pytest

from depthsearch.search.space import suggest
from depthsearch.spec import Choices, Fixed, FloatRange, IntRange, SpaceSpec


def sample(space: SpaceSpec, fixed: dict[str, object]) -> tuple[optuna.trial.FrozenTrial, object]:
    study = optuna.create_study()
    study.enqueue_trial(fixed)
    trial = study.ask()
    cand = suggest(trial, space, input_size=3, output_size=2)
    study.tell(trial, 0.0)
    return study.trials[0], cand


def test_one_layer_has_no_dropout_parameter() -> None:
    frozen, cand = sample(SpaceSpec(), {"num_layers": 1})
    assert "dropout" not in frozen.params
    assert set(frozen.params) == {"num_layers", "hidden_size", "lr", "batch_size"}
    assert cand.model.dropout == 0.0  # type: ignore[attr-defined]


def test_stack_samples_dropout_and_shares_its_width() -> None:
    frozen, cand = sample(SpaceSpec(), {"num_layers": 3, "hidden_size": 32, "dropout": 0.2})
    assert frozen.params["dropout"] == 0.2
    assert cand.model.hidden_sizes == (32, 32, 32)  # type: ignore[attr-defined]


def test_per_layer_widths_only_for_existing_layers() -> None:
    space = SpaceSpec(per_layer_hidden=True, hidden_size=IntRange(4, 64, log=True))
    frozen, cand = sample(space, {"num_layers": 2, "hidden_size_0": 8, "hidden_size_1": 40})
    widths = {k for k in frozen.params if k.startswith("hidden_size")}
    assert widths == {"hidden_size_0", "hidden_size_1"}
    assert cand.model.hidden_sizes == (8, 40)  # type: ignore[attr-defined]


def test_fixed_values_are_not_parameters() -> None:
    space = SpaceSpec(
        num_layers=Fixed(2), lr=Fixed(0.01), batch_size=Fixed(16), dropout=FloatRange(0.1, 0.1)
    )
    frozen, cand = sample(space, {})
    assert "num_layers" not in frozen.params and "lr" not in frozen.params
    assert cand.lr == 0.01 and cand.batch_size == 16  # type: ignore[attr-defined]


@pytest.mark.parametrize("flag", ["bidirectional", "residual", "layer_norm"])
def test_searched_flags_reach_the_model(flag: str) -> None:
    space = SpaceSpec(num_layers=Fixed(2), **{flag: Choices((False, True))})  # type: ignore[arg-type]
    frozen, cand = sample(space, {flag: True})
    assert frozen.params[flag] is True and getattr(cand.model, flag) is True  # type: ignore[attr-defined]


def test_tpe_handles_the_conditional_space() -> None:
    from depthsearch.search.samplers import make_sampler
    from depthsearch.spec import load_spec

    from .conftest import REPO

    spec = load_spec(REPO / "studies" / "quickstart.toml")
    study = optuna.create_study(sampler=make_sampler(spec, 0))
    for i in range(12):
        trial = study.ask()
        cand = suggest(trial, spec.space, input_size=1, output_size=3)
        study.tell(trial, float(cand.model.num_layers + i % 3))
    layers = {t.params["num_layers"] for t in study.trials}
    assert len(layers) > 1
