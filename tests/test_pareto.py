"""Multi-objective studies: loss and size at once, the Pareto front, picks chosen from it."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pandas as pd
import pytest
from click.testing import CliRunner
from optuna.trial import TrialState

from depthsearch.cli import main

from .conftest import OBJECTIVES, pareto_study, unique


def cli(*args: str) -> str:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_two_objectives_make_a_pareto_front_and_picks_come_from_it(
    storage_url: str, tmp_path: Path
) -> None:
    name = unique("pareto")
    out = cli("run", str(pareto_study(tmp_path, name)), "--storage", storage_url)
    assert "Pareto front (val_loss, param_count): trial" in out
    study = optuna.load_study(study_name=name, storage=storage_url)
    assert len(study.directions) == 2 and study.metric_names == ["val_loss", "param_count"]
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 10
    for t in complete:
        # Optuna keeps no intermediate values on such a study: the curve is a user attribute.
        curve = t.user_attrs["val_loss_curve"]
        assert len(curve) == t.user_attrs["epochs_trained"] == 3
        assert t.values[0] == pytest.approx(min(curve))
        assert t.values[1] == t.user_attrs["param_count"]
    front = {t.number for t in study.best_trials}
    picks = {}
    for pick in ("best", "smallest-within=2%", "smallest-within=1000%"):
        target = tmp_path / f"{pick}.json"
        cli("export", "--study", name, "--storage", storage_url, "--pick", pick, "-o", str(target))
        picks[pick] = json.loads(target.read_text())
    for doc in picks.values():
        assert doc["origin"]["trial"] in front
        assert set(doc["metrics"]["objectives"]) == {"val_loss", "param_count"}
    best, small, tiny = picks.values()
    assert best["metrics"]["val_loss"] == min(t.values[0] for t in complete)
    assert small["metrics"]["param_count"] <= best["metrics"]["param_count"]
    assert small["metrics"]["val_loss"] <= best["metrics"]["val_loss"] * 1.02
    # With a loose enough tolerance, the smallest model on the front is the smallest of all.
    assert tiny["metrics"]["param_count"] == min(t.values[1] for t in complete)


def test_report_and_table_of_a_pareto_study(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'p.db'}"
    cli("run", str(pareto_study(tmp_path, "p", n_trials=8)), "--storage", url)
    study = optuna.load_study(study_name="p", storage=url)
    cli("report", "--study", "p", "--storage", url, "-o", str(tmp_path / "rep"))
    page = (tmp_path / "rep" / "index.html").read_text()
    assert "Pareto front (val_loss, param_count)" in page
    for t in study.best_trials:
        assert f"trial {t.number} (" in page
    names = {p.name for p in (tmp_path / "rep").iterdir()}
    assert {"size.png", "curves.png", "depth.png", "history.png"} <= names
    cli("trials", "--study", "p", "--storage", url, "-o", str(tmp_path / "t.csv"))
    frame = pd.read_csv(tmp_path / "t.csv")
    assert list(frame["values_param_count"]) == [t.values[1] for t in study.trials]
    assert list(frame["value"]) == pytest.approx([t.values[0] for t in study.trials])


def test_a_third_objective_is_minimised_too(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'p3.db'}"
    path = pareto_study(tmp_path, "p3", n_trials=4)
    path.write_text(
        path.read_text().replace(OBJECTIVES, OBJECTIVES[:-1] + ', "seconds_per_epoch"]')
    )
    cli("run", str(path), "--storage", url)
    study = optuna.load_study(study_name="p3", storage=url)
    assert study.metric_names == ["val_loss", "param_count", "seconds_per_epoch"]
    for t in study.trials:
        assert t.values[2] == pytest.approx(t.user_attrs["seconds_per_epoch"])
