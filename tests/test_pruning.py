"""The depth-aware pruner: a deep candidate is judged against deep candidates only."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import sqlalchemy
from click.testing import CliRunner
from optuna.distributions import IntDistribution
from optuna.trial import TrialState, create_trial

from depthsearch.cli import main
from depthsearch.search.pruners import (
    CostAwarePruner,
    DepthAwarePruner,
    RecentTrials,
    Separated,
    depth_band,
    make_pruner,
)
from depthsearch.spec import load_spec
from depthsearch.storage import new_complete_trials

from .conftest import write_study

LAYERS = IntDistribution(1, 16)


def complete(layers: int, curve: list[float]) -> optuna.trial.FrozenTrial:
    return create_trial(
        params={"num_layers": layers},
        distributions={"num_layers": LAYERS},
        value=min(curve),
        intermediate_values=dict(enumerate(curve, start=1)),
    )


def running(study: optuna.Study, layers: int, curve: list[float]) -> optuna.trial.FrozenTrial:
    trial = study.ask({"num_layers": LAYERS})
    assert trial.params["num_layers"] == layers
    for step, value in enumerate(curve, start=1):
        trial.report(value, step)
    return study._storage.get_trial(trial._trial_id)


def study_with(trials: list[optuna.trial.FrozenTrial], layers_next: int) -> optuna.Study:
    study = optuna.create_study()
    for t in trials:
        study.add_trial(t)
    study.enqueue_trial({"num_layers": layers_next})
    return study


def assert_pruned_by_the_rule(url: str, name: str, pruner: optuna.pruners.BasePruner) -> None:
    """Replays a one-worker study's trials through ``pruner``: each trial is judged, epoch by
    epoch, against the trials complete before it (one worker: those numbered lower). A
    COMPLETE trial was never behind the bar; a PRUNED one was, at some epoch it reached."""
    study = optuna.load_study(study_name=name, storage=url)
    done = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    assert [t.state for t in done if not t.state.is_finished()] == []
    for t in done:
        before = [p for p in done if p.number < t.number and p.state == TrialState.COMPLETE]
        view = optuna.create_study(direction=study.direction)
        for key, value in study.user_attrs.items():  # the baselines the gate reads
            view.set_user_attr(key, value)
        for p in before:
            view.add_trial(p)
        verdicts = []
        noise = t.user_attrs.get("val_loss_se_curve", [])
        for step in sorted(t.intermediate_values):
            curve = {s: v for s, v in t.intermediate_values.items() if s <= step}
            # What the pruner read at that epoch: its noise (the trial keeps its curve).
            last = {"epoch": step, "val_loss_se": noise[step - 1]} if step <= len(noise) else {}
            trial = create_trial(
                params=t.params,
                distributions=t.distributions,
                user_attrs={**t.user_attrs, "last_epoch": last},
                intermediate_values=curve,
                state=TrialState.RUNNING,
            )
            verdicts.append(pruner.prune(view, trial))
        if t.state == TrialState.PRUNED:
            assert any(verdicts), (t.number, t.intermediate_values)
        else:
            assert t.state == TrialState.COMPLETE and not any(verdicts), (t.number, verdicts)


SHALLOW = [complete(1, [1.0, 0.5, 0.3, 0.25]) for _ in range(3)]
SLOW_DEEP = [2.0, 1.6, 1.2]  # behind every shallow trial at epoch 3, as deep stacks start


@pytest.mark.parametrize(("layers", "band"), [(1, 0), (2, 1), (3, 2), (4, 2), (5, 3), (16, 4)])
def test_depth_bands(layers: int, band: int) -> None:
    assert depth_band(layers) == band


def test_a_slow_deep_start_is_pruned_by_the_median_but_not_by_depth() -> None:
    study = study_with(SHALLOW, 12)
    trial = running(study, 12, SLOW_DEEP)
    assert optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2).prune(study, trial)
    assert not DepthAwarePruner(n_startup_trials=3, n_warmup_steps=2).prune(study, trial)


def test_a_deep_candidate_behind_its_own_band_is_pruned() -> None:
    deep = [complete(12, [1.5, 0.9, 0.6, 0.2]) for _ in range(3)]
    study = study_with(SHALLOW + deep, 9)
    trial = running(study, 9, SLOW_DEEP)
    assert DepthAwarePruner(n_startup_trials=3, n_warmup_steps=2).prune(study, trial)
    # Too few peers yet: the band's first trials train to the end.
    study = study_with(SHALLOW + deep[:2], 9)
    assert not DepthAwarePruner(n_startup_trials=3, n_warmup_steps=2).prune(
        study, running(study, 9, SLOW_DEEP)
    )


def test_a_shallow_candidate_still_meets_the_median_of_its_band() -> None:
    study = study_with(SHALLOW, 1)
    trial = running(study, 1, [1.2, 0.9, 0.8])
    assert DepthAwarePruner(n_startup_trials=3, n_warmup_steps=2).prune(study, trial)
    study = study_with(SHALLOW, 1)
    good = running(study, 1, [0.9, 0.4, 0.2])
    assert not DepthAwarePruner(n_startup_trials=3, n_warmup_steps=2).prune(study, good)


def test_warmup_and_interval() -> None:
    deep = [complete(12, [0.1, 0.1, 0.1, 0.1]) for _ in range(3)]
    study = study_with(deep, 12)
    trial = running(study, 12, SLOW_DEEP[:2])
    assert not DepthAwarePruner(n_startup_trials=3, n_warmup_steps=3).prune(study, trial)
    assert DepthAwarePruner(n_startup_trials=3, n_warmup_steps=2).prune(study, trial)
    study = study_with(deep, 12)
    trial = running(study, 12, SLOW_DEEP)
    # Warm-up 2, every 2nd epoch: epoch 3 is not a check.
    assert not DepthAwarePruner(3, 2, interval_steps=2).prune(study, trial)


def test_recent_trials_decides_on_a_list_at_most_max_age_old_with_the_workers_own() -> None:
    median = optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2)
    study = study_with(SHALLOW, 12)
    trial = running(study, 12, SLOW_DEEP)
    assert RecentTrials(median, max_age_s=3600).prune(study, trial) is median.prune(study, trial)
    study = study_with(SHALLOW[:2], 12)  # two complete trials: below the startup count
    trial = running(study, 12, SLOW_DEEP)
    cached, fresh = RecentTrials(median, max_age_s=3600), RecentTrials(median, max_age_s=0)
    assert not cached.prune(study, trial) and not fresh.prune(study, trial)
    study.add_trial(SHALLOW[2])
    assert not cached.prune(study, trial)  # read under an hour ago: the third is not seen yet
    assert fresh.prune(study, trial) and median.prune(study, trial)
    # A trial this worker told counts at once, however young the list.
    cached.finished(study.get_trials()[-1])
    assert cached.prune(study, trial)


def test_a_recent_list_reads_only_what_completed_since_it_was_read(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'recent.db'}"
    median = optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2)
    study = optuna.create_study(study_name="recent", storage=url)
    other = optuna.load_study(study_name="recent", storage=url)  # another worker's handle
    for t in SHALLOW[:2]:
        other.add_trial(t)
    study.enqueue_trial({"num_layers": 12})
    trial = running(study, 12, SLOW_DEEP)
    pruner = RecentTrials(median, max_age_s=0, read_new=new_complete_trials)
    assert not pruner.prune(study, trial)  # two complete: below the startup count
    statements: list[str] = []
    engine = study._storage._backend.engine
    sqlalchemy.event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    assert not pruner.prune(study, trial)
    # Nothing completed since: a count and the study's attributes, no trial's rows.
    assert len(statements) == 2 and "count" in statements[0].lower(), statements
    other.add_trial(SHALLOW[2])
    other.set_user_attr("seen", True)
    assert pruner.prune(study, trial) and median.prune(study, trial)
    assert [t.intermediate_values for t in pruner.complete] == [
        t.intermediate_values for t in SHALLOW
    ]
    assert pruner._attrs == {"seen": True}


@pytest.mark.parametrize("rule", [DepthAwarePruner, CostAwarePruner])
def test_a_nan_epoch_before_good_ones_is_judged_by_the_good_ones(rule: type) -> None:
    # Optuna's rule (nanmin): one NaN epoch does not sink a trial whose later epochs lead;
    # the hand-written rule before it took min() of the curve, NaN first: pruned.
    study = study_with(SHALLOW, 1)
    nan = float("nan")
    trial = running(study, 1, [nan, 0.2, 0.1])
    assert rule(n_startup_trials=3, n_warmup_steps=1).prune(study, trial) is False
    # All NaN: stopped.
    study = study_with(SHALLOW, 1)
    assert rule(n_startup_trials=3, n_warmup_steps=1).prune(study, running(study, 1, [nan, nan]))


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="interval_steps >= 1"):
        DepthAwarePruner(interval_steps=0)


def test_a_study_file_asks_for_it_and_a_study_runs_with_it(tmp_path: Path) -> None:
    path = write_study(tmp_path, name="da", n_trials=8, max_epochs=4)
    path.write_text(path.read_text().replace('kind = "median"', 'kind = "depth-aware"'))
    spec = load_spec(path)
    assert spec.pruner.kind == "depth-aware"
    pruner = make_pruner(spec)
    assert isinstance(pruner, RecentTrials) and isinstance(pruner.pruner, Separated)
    assert isinstance(pruner.pruner.pruner, DepthAwarePruner)
    assert (pruner.pruner.pruner.n_startup_trials, pruner.pruner.pruner.n_warmup_steps) == (2, 1)
    url = f"sqlite:///{tmp_path / 'da.db'}"
    result = CliRunner().invoke(main, ["run", str(path), "--storage", url])
    assert result.exit_code == 0, result.output
    assert len(optuna.load_study(study_name="da", storage=url).trials) == 8
    assert_pruned_by_the_rule(
        url, "da", Separated(DepthAwarePruner(n_startup_trials=2, n_warmup_steps=1))
    )


def test_percentile_kind_keeps_only_the_best_quarter(tmp_path: Path) -> None:
    path = write_study(tmp_path, name="pct", n_trials=8, max_epochs=4)
    path.write_text(
        path.read_text().replace('kind = "median"', 'kind = "percentile"\npercentile = 25.0')
    )
    spec = load_spec(path)
    assert (spec.pruner.kind, spec.pruner.percentile) == ("percentile", 25.0)
    assert spec.to_dict()["pruner"]["percentile"] == 25.0
    pruner = make_pruner(spec)
    assert isinstance(pruner, RecentTrials) and isinstance(pruner.pruner, Separated)
    assert isinstance(pruner.pruner.pruner, optuna.pruners.PercentilePruner)
    # Four complete curves; at epoch 3 a trial between the best quarter and the median is
    # kept by the median but stopped by the 25th percentile.
    done = [complete(2, [1.0, 0.8, v, v]) for v in (0.2, 0.3, 0.5, 0.6)]
    study = study_with(done, 2)
    trial = running(study, 2, [1.0, 0.8, 0.35])
    assert pruner.prune(study, trial)
    assert not optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1).prune(
        study, trial
    )
    url = f"sqlite:///{tmp_path / 'pct.db'}"
    result = CliRunner().invoke(main, ["run", str(path), "--storage", url])
    assert result.exit_code == 0, result.output
    assert len(optuna.load_study(study_name="pct", storage=url).trials) == 8
    assert_pruned_by_the_rule(url, "pct", pruner.pruner)


def costly(params: int, curve: list[float]) -> optuna.trial.FrozenTrial:
    t = complete(1, curve)
    t.user_attrs["param_count"] = params
    return t


def running_costing(
    study: optuna.Study, params: int, curve: list[float]
) -> optuna.trial.FrozenTrial:
    trial = study.ask({"num_layers": LAYERS})
    trial.set_user_attr("param_count", params)
    for step, value in enumerate(curve, start=1):
        trial.report(value, step)
    return study._storage.get_trial(trial._trial_id)


def params_for(times: int) -> int:
    """The parameter count of a one-layer trial ``times`` as costly as CHEAP's (a layer's
    fixed share is LAYER_OVERHEAD parameters' worth)."""
    from depthsearch.search.trials import LAYER_OVERHEAD

    return times * (10_000 + LAYER_OVERHEAD) - LAYER_OVERHEAD


#: Five complete one-layer trials of 10,000 parameters: their epoch-2 losses are 0.5 ... 0.9.
CHEAP = [costly(10_000, [1.0, 0.5 + 0.1 * i, 0.4]) for i in range(5)]


@pytest.mark.parametrize(
    ("times", "loss", "pruned"),
    [
        (1, 0.65, False),  # ordinary cost, better than the median (0.7): goes on
        (1, 0.75, True),  # ordinary cost, behind the median: stopped, as MedianPruner would
        (64, 0.65, True),  # 64x the cost: must be in the best 10 % (0.54): stopped
        (64, 0.52, False),  # 64x the cost and near the front: goes on
        (4, 0.62, True),  # 4x: must be in the best 25 % (0.6)
        (4, 0.58, False),
    ],
)
def test_a_costly_candidate_must_be_near_the_front_to_go_on(
    times: int, loss: float, pruned: bool
) -> None:
    from depthsearch.search.pruners import CostAwarePruner

    study = study_with(CHEAP, 1)
    trial = running_costing(study, params_for(times), [1.0, loss])
    pruner = CostAwarePruner(n_startup_trials=3, n_warmup_steps=1)
    assert pruner.prune(study, trial) is pruned
    ordinary = optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    if times == 1:  # at ordinary cost it is the median rule
        assert bool(ordinary.prune(study, trial)) is pruned


def test_the_cost_bar_narrows_with_the_square_root_of_cost_down_to_its_floor() -> None:
    from depthsearch.search.pruners import CostAwarePruner

    pruner = CostAwarePruner(min_percentile=10.0)
    assert pruner.percentile_for(500.0, [1000.0, 1000.0]) == 50.0
    assert pruner.percentile_for(4000.0, [1000.0, 1000.0]) == 25.0
    assert pruner.percentile_for(16_000.0, [1000.0, 3000.0, 500.0]) == 12.5
    assert pruner.percentile_for(1e9, [1000.0]) == 10.0
    assert pruner.percentile_for(None, [1000.0]) == 50.0  # no cost known: the median rule
    with pytest.raises(ValueError, match="min_percentile"):
        CostAwarePruner(min_percentile=0.0)


def test_cost_aware_is_a_pruner_kind_of_the_study_file(tmp_path: Path) -> None:
    path = write_study(tmp_path, extra="")
    path.write_text(path.read_text().replace('kind = "median"', 'kind = "cost-aware"'))
    pruner = make_pruner(load_spec(path))
    assert isinstance(pruner, RecentTrials)
    assert isinstance(pruner.pruner, Separated)
    assert type(pruner.pruner.pruner).__name__ == "CostAwarePruner"
    assert (pruner.pruner.pruner.n_startup_trials, pruner.pruner.pruner.n_warmup_steps) == (2, 1)


@pytest.mark.parametrize("rule", [CostAwarePruner, DepthAwarePruner])
def test_depth_warmup_gives_deeper_candidates_more_epochs_before_a_verdict(rule: type) -> None:
    # Three complete trials of its depth set the bar; a candidate far behind it at epoch 1
    # (Optuna's rule: a step below n_warmup_steps is not judged; epochs count from 1).
    behind = [3.0]
    for layers, band in ((1, 0), (2, 1), (4, 2)):
        peers = [complete(layers, [1.0, 0.5, 0.3, 0.25]) for _ in range(3)]
        # warm-up 1 + 1 per band: epoch 1 is judged only for the 1-layer candidate.
        study = study_with(peers, layers)
        trial = running(study, layers, behind)
        judged = rule(n_startup_trials=3, n_warmup_steps=1, depth_warmup=1).prune(study, trial)
        assert judged == (band == 0), (layers, judged)
        # Without depth_warmup every depth is judged at epoch 1.
        study = study_with(peers, layers)
        assert rule(n_startup_trials=3, n_warmup_steps=1).prune(
            study, running(study, layers, behind)
        )


def _gate_study(curves: list[list[float]], accuracies: list[list[float]] | None) -> optuna.Study:
    study = optuna.create_study()
    baselines = {"majority class": {"val_loss": 0.693, "val_accuracy": 0.5, "val_count": 10}}
    study.set_user_attr(
        "baselines", baselines if accuracies is not None else {"last value": {"val_loss": 1.0}}
    )
    for i, curve in enumerate(curves):
        t = complete(1, curve)
        if accuracies is not None:
            t.user_attrs["val_accuracy_curve"] = accuracies[i]
        study.add_trial(t)
    return study


def _asking(curve: list[float], **last: float) -> optuna.trial.FrozenTrial:
    return create_trial(
        params={"num_layers": 1},
        distributions={"num_layers": optuna.distributions.IntDistribution(1, 4)},
        user_attrs={"last_epoch": {"epoch": len(curve), **last}},
        intermediate_values=dict(enumerate(curve, 1)),
        state=TrialState.RUNNING,
    )


def test_no_verdict_while_the_curves_sit_within_their_noise() -> None:
    """Epoch-1 noise decides nothing: at chance (a classification whose every trial is
    within two binomial standard errors of the majority class), or within the trial's own
    noise of the median, the trial goes on; once separated, the rule decides."""
    rule = optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    gate = Separated(rule)
    # Three complete trials at chance at epoch 1 (0.6931 and so on): the asking one is
    # behind their median (0.6933 against 0.6891), which the median rule alone would prune.
    at_chance = _gate_study([[0.6891, 0.3]] * 3, [[0.5, 0.9]] * 3)
    behind = _asking([0.6933], val_accuracy=0.6, val_loss_se=0.001)
    assert rule.prune(at_chance, behind) and not gate.prune(at_chance, behind)
    # At epoch 2 the others stand apart (accuracy 0.9 > 0.5 + 0.32): behind them, it stops.
    apart = _asking([0.6933, 0.69], val_accuracy=0.5, val_loss_se=0.001)
    assert gate.prune(at_chance, apart)
    # A forecast: within two standard errors of the median, it goes on; beyond, it stops.
    losses = _gate_study([[0.5, 0.2]] * 3, None)
    assert not gate.prune(losses, _asking([0.55], val_loss_se=0.05))
    assert gate.prune(losses, _asking([0.65], val_loss_se=0.05))
    # Every loss within the noise of the baseline's (1.0): nobody learned yet.
    flat = _gate_study([[1.01, 0.5]] * 3, None)
    assert not gate.prune(flat, _asking([1.2], val_loss_se=0.1))
