"""Taking the result: trials table, report, retrained model, predictions, the smallest pick."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import optuna
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from depthsearch import load_model
from depthsearch.cli import main
from depthsearch.learn.data import prepare
from depthsearch.learn.saved import read_document
from depthsearch.studies import read_spec

from .conftest import write_study


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    folder = tmp_path_factory.mktemp("report")
    url = f"sqlite:///{folder / 'study.db'}"
    study_file = write_study(folder, name="result", n_trials=8, max_epochs=4)
    result = CliRunner().invoke(main, ["run", str(study_file), "--storage", url])
    assert result.exit_code == 0, result.output
    return url, folder


def cli(*args: str) -> str:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_the_commands_that_build_no_network_start_without_torch(
    finished_study: tuple[str, Path], tmp_path: Path
) -> None:
    """status, trials, answer, export (without --retrain) and report read the study and write
    files: none builds a model, so none loads torch (a second or more of CPU at every start)."""
    url, _ = finished_study
    study = ["--study", "result", "--storage", url]
    commands = [
        ["status", *study],
        ["trials", *study, "-o", str(tmp_path / "trials.csv")],
        ["answer", *study],
        ["export", *study, "-o", str(tmp_path / "best.json")],
        ["report", *study, "-o", str(tmp_path / "report")],
    ]
    code = (
        "import json, sys\nfrom depthsearch.cli import main\n"
        "for args in json.loads(sys.argv[1]):\n"
        "    main(args, standalone_mode=False)\n"
        "    print(args[0], 'torch' in sys.modules, file=sys.stderr)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps(commands)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = [
        line.split()
        for line in proc.stderr.splitlines()
        if line.split()[-1:] in (["True"], ["False"])
    ]
    assert seen == [[args[0], "False"] for args in commands], proc.stderr[-3000:]
    assert (tmp_path / "best.json").exists() and (tmp_path / "report" / "index.html").exists()


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".json"])
def test_trials_table_round_trips_through_pandas(
    finished_study: tuple[str, Path], suffix: str
) -> None:
    url, folder = finished_study
    out = folder / f"trials{suffix}"
    cli("trials", "--study", "result", "--storage", url, "-o", str(out))
    read = {".csv": pd.read_csv, ".parquet": pd.read_parquet, ".json": pd.read_json}[suffix]
    frame = read(out)
    study = optuna.load_study(study_name="result", storage=url)
    assert list(frame["number"]) == [t.number for t in study.trials]
    assert list(frame["state"]) == [t.state.name for t in study.trials]
    for col in (
        "value",
        "duration_s",
        "params_num_layers",
        "params_lr",
        "user_attrs_param_count",
        "user_attrs_seconds_per_epoch",
        "user_attrs_device",
    ):
        assert col in frame.columns, col
    complete = frame[frame["state"] == "COMPLETE"]
    assert complete["value"].min() == pytest.approx(study.best_value)
    cfg = json.loads(frame["user_attrs_model_config"].iloc[0])
    assert cfg["input_size"] == 1


def test_trials_refuses_an_unknown_format(finished_study: tuple[str, Path]) -> None:
    url, folder = finished_study
    result = CliRunner().invoke(
        main, ["trials", "--study", "result", "--storage", url, "-o", str(folder / "t.xlsx")]
    )
    assert result.exit_code == 2 and "use a .csv, .parquet or .json file name" in result.output


def test_report_writes_page_and_plots_with_no_network(finished_study: tuple[str, Path]) -> None:
    url, folder = finished_study
    out = folder / "rep"
    cli("report", "--study", "result", "--storage", url, "-o", str(out))
    names = {p.name for p in out.iterdir()}
    assert {"index.html", "history.png", "depth.png", "width.png", "curves.png"} <= names
    page = (out / "index.html").read_text()
    assert "How deep?" in page and "smallest within 2%" in page
    assert "http://" not in page and "https://" not in page
    for name in names - {"index.html"}:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f'src="{name}"' in page


def test_retrained_model_reloads_and_predicts_bit_for_bit(
    finished_study: tuple[str, Path],
) -> None:
    url, folder = finished_study
    out = folder / "best"
    text = cli("export", "--study", "result", "--storage", url, "--retrain", "-o", f"{out}/")
    assert "retrained on the training part of synthetic series" in text
    # A trailing slash in -o is the user's: the paths shown are the files'.
    assert f"wrote {out / 'model.pt'} and {out / 'config.json'}: " in text, text
    doc = read_document(out / "config.json")
    study = optuna.load_study(study_name="result", storage=url)
    # Same data, seed and epochs on the CPU: the retrained model is the trial's best state.
    assert doc["retrain"]["val_loss"] == pytest.approx(study.best_value, rel=1e-6)
    model = load_model(out)
    again = load_model(str(out))
    data = prepare(read_spec("result", url).data, seed=3)
    with torch.inference_mode():
        a, b = model(data.x_val), again(data.x_val)
    assert torch.equal(a, b)
    state = torch.load(out / "model.pt", weights_only=True)
    assert set(state) == set(model.state_dict())
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_predict_writes_one_row_per_window(finished_study: tuple[str, Path]) -> None:
    url, folder = finished_study
    out = folder / "best-p"
    cli("export", "--study", "result", "--storage", url, "--retrain", "-o", str(out))
    csv = folder / "new.csv"
    pd.DataFrame({"y": [float(i % 7) for i in range(30)]}).to_csv(csv, index=False)
    cli("predict", str(out), "--csv", str(csv), "-o", str(folder / "pred.csv"))
    pred = pd.read_csv(folder / "pred.csv")
    assert list(pred.columns) == ["row", "y+1", "y+2"]
    assert len(pred) == 30 - 8 + 1 and pred["row"].iloc[0] == 7
    bad = folder / "bad.csv"
    bad.write_text("z\n1\n2\n")
    result = CliRunner().invoke(main, ["predict", str(out), "--csv", str(bad)])
    assert result.exit_code == 2 and "no column(s) ['y']" in result.output


def test_predict_needs_the_target_column_only_when_it_is_an_input(tmp_path: Path) -> None:
    rows = 200
    frame = pd.DataFrame(
        {
            "load": [float(i % 11) for i in range(rows)],
            "temp": [float((i * 3) % 7) for i in range(rows)],
        }
    )
    frame["price ($)"] = frame["load"] * 0.5 + frame["temp"]
    frame.to_csv(tmp_path / "train.csv", index=False)
    study_file = write_study(tmp_path, name="feat", n_trials=2, max_epochs=2)
    study_file.write_text(
        study_file.read_text().replace(
            'source = "synthetic"\nlength = 400',
            'source = "csv"\npath = "train.csv"\ntarget = "price ($)"\n'
            'features = ["load", "temp"]',
        )
    )
    url = f"sqlite:///{tmp_path / 'feat.db'}"
    cli("run", str(study_file), "--storage", url)
    out = tmp_path / "model"
    cli("export", "--study", "feat", "--storage", url, "--retrain", "-o", str(out))
    future = tmp_path / "future.csv"
    frame[["temp", "load"]].iloc[:20].to_csv(future, index=False)  # no target, other order
    cli("predict", str(out), "--csv", str(future), "-o", str(tmp_path / "pred.csv"))
    pred = pd.read_csv(tmp_path / "pred.csv")
    assert list(pred.columns) == ["row", "price ($)+1", "price ($)+2"]
    assert len(pred) == 20 - 8 + 1
    frame[["load"]].to_csv(future, index=False)
    result = CliRunner().invoke(main, ["predict", str(out), "--csv", str(future)])
    assert result.exit_code == 2 and "no column(s) ['temp']" in result.output


def test_smallest_within_picks_no_larger_model(finished_study: tuple[str, Path]) -> None:
    url, folder = finished_study
    for pick, name in (
        ("best", "best"),
        ("smallest-within=2%", "small"),
        ("smallest-within=1000%", "tiny"),
    ):
        cli(
            "export",
            "--study",
            "result",
            "--storage",
            url,
            "--pick",
            pick,
            "-o",
            str(folder / f"{name}.json"),
        )
    best, small, tiny = (
        json.loads((folder / f).read_text()) for f in ("best.json", "small.json", "tiny.json")
    )
    assert small["format"] == best["format"] and set(small) == set(best)
    assert small["metrics"]["param_count"] <= best["metrics"]["param_count"]
    assert small["metrics"]["val_loss"] <= best["metrics"]["val_loss"] * 1.02
    study = optuna.load_study(study_name="result", storage=url)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert tiny["metrics"]["param_count"] == min(t.user_attrs["param_count"] for t in complete)
    result = CliRunner().invoke(
        main, ["export", "--study", "result", "--storage", url, "--pick", "smallest"]
    )
    assert (
        result.exit_code == 2 and "--pick must be 'best', 'smallest-within=noise'" in result.output
    )


def test_the_report_shows_a_depth_whose_every_trial_was_pruned(tmp_path: Path) -> None:
    """A depth with only pruned trials gets its lowest loss, marked pruned, not nan."""
    url = f"sqlite:///{tmp_path / 'pruned.db'}"
    study = optuna.create_study(storage=url, study_name="deep-pruned")
    layers = optuna.distributions.IntDistribution(1, 4)
    for k, (depth, state, loss) in enumerate(
        [(1, "COMPLETE", 0.5), (1, "COMPLETE", 0.4), (4, "PRUNED", 0.9), (4, "PRUNED", 0.8)]
    ):
        trial = optuna.trial.create_trial(
            params={"num_layers": depth},
            distributions={"num_layers": layers},
            value=loss,
            state=optuna.trial.TrialState[state],
            intermediate_values={1: loss},
            user_attrs={
                "model_config": {"input_size": 1, "hidden_sizes": [8] * depth, "output_size": 2},
                "param_count": 100 * depth + k,
            },
        )
        study.add_trial(trial)
    cli("report", "--study", "deep-pruned", "--storage", url, "-o", str(tmp_path / "r"))
    page = (tmp_path / "r" / "index.html").read_text()
    assert "<tr><td>4</td><td>2</td><td>2</td><td>0.8 (pruned)</td>" in page, page
    assert "nan" not in page.lower()
    assert (tmp_path / "r" / "depth.png").stat().st_size > 0


def test_a_forecaster_predicts_the_next_steps_in_the_targets_units(tmp_path: Path) -> None:
    from depthsearch.learn.predictor import Forecaster

    rows = 240
    frame = pd.DataFrame(
        {
            "month": [f"{1900 + i // 12}-{i % 12 + 1:02d}" for i in range(rows)],
            "level": [100.0 + 10.0 * (i % 12) for i in range(rows)],
        }
    )
    frame.to_csv(tmp_path / "series.csv", index=False)
    study_file = write_study(tmp_path, name="units", n_trials=2, max_epochs=2)
    study_file.write_text(
        study_file.read_text().replace(
            'source = "synthetic"\nlength = 400',
            'source = "csv"\npath = "series.csv"\ntarget = "level"',
        )
    )
    url = f"sqlite:///{tmp_path / 'units.db'}"
    cli("run", str(study_file), "--storage", url)
    out = tmp_path / "model"
    cli("export", "--study", "units", "--storage", url, "--retrain", "-o", str(out))
    forecaster = Forecaster.load(out)
    ahead = forecaster.predict(frame)
    assert list(ahead.index) == [1, 2] and list(ahead.columns) == ["level"]
    # The target's units (the series runs 100-210), not the model's standardised outputs.
    assert 50 < float(ahead["level"].mean()) < 300
    raw = load_model(out)(torch.zeros(1, 8, 1)).detach()
    assert float(raw.abs().max()) < 20
    windows = forecaster.predict_windows(frame)
    assert list(windows.index) == list(frame.index[7:])
    assert ahead["level"].tolist() == pytest.approx(windows.iloc[-1].tolist())
    # `predict` keeps the CSV's time column instead of a row number.
    cli("predict", str(out), "--csv", str(tmp_path / "series.csv"), "-o", str(tmp_path / "p.csv"))
    pred = pd.read_csv(tmp_path / "p.csv")
    assert list(pred.columns) == ["month", "level+1", "level+2"]
    assert pred["month"].iloc[0] == "1900-08" and len(pred) == rows - 7
