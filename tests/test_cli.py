"""The CLI end to end: run a study, resume it, export it, and refuse bad input cleanly."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import optuna
import pytest
import torch
from click.testing import CliRunner
from optuna.trial import TrialState

from depthsearch import build_model, load_config
from depthsearch.cli import main

from .conftest import create_here, depthsearch_cmd, unique, write_study


def invoke(*args: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def states(url: str, name: str) -> dict[TrialState, int]:
    study = optuna.load_study(study_name=name, storage=url)
    trials = study.get_trials(deepcopy=False)
    return {s: sum(t.state == s for t in trials) for s in TrialState}


def test_run_prunes_completes_and_exports(tmp_path: Path, storage_url: str) -> None:
    name = unique("tiny")
    study_file = write_study(tmp_path, name=name, n_trials=8)
    result = invoke("run", str(study_file), "--storage", storage_url)
    assert result.exit_code == 0, result.output
    assert "best: trial" in result.output
    count = states(storage_url, name)
    assert count[TrialState.COMPLETE] >= 1 and count[TrialState.PRUNED] >= 1
    assert count[TrialState.COMPLETE] + count[TrialState.PRUNED] == 8
    assert count[TrialState.RUNNING] == 0

    study = optuna.load_study(study_name=name, storage=storage_url)
    for t in study.trials:
        for key in (
            "param_count",
            "epochs_trained",
            "seconds_per_epoch",
            "train_windows",
            "torch_threads",
            "device",
            "best_epoch",
            "model_config",
            "seed",
        ):
            assert key in t.user_attrs, (t.number, key)
        assert len(t.intermediate_values) == t.user_attrs["epochs_trained"]
        assert t.user_attrs["seed"] == 3 + t.number
    assert "spec" in study.user_attrs and "stacked LSTM" in study.user_attrs["summary"]

    out = tmp_path / "best.json"
    pick = ("--pick", "best")
    result = invoke("export", "--study", name, "--storage", storage_url, "-o", str(out), *pick)
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert doc["origin"]["trial"] == study.best_trial.number
    assert doc["metrics"]["val_loss"] == pytest.approx(study.best_value)
    cfg = load_config(out)
    model = build_model(cfg)
    trained = study.best_trial.user_attrs
    assert sum(p.numel() for p in model.parameters()) == trained["param_count"]
    assert cfg.to_dict() == trained["model_config"]
    # The default pick: the smallest candidate within the best's noise (two standard errors).
    result = invoke("export", "--study", name, "--storage", storage_url, "-o", str(out))
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    picked = study.trials[doc["origin"]["trial"]]
    best = study.best_trial
    assert doc["origin"]["pick"] == "smallest-within=noise"
    assert picked.value <= best.value + 2 * best.user_attrs["val_loss_se"] + 1e-12
    assert picked.user_attrs["param_count"] <= best.user_attrs["param_count"]


def test_export_rebuilds_a_model_of_identical_structure(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    study_file = write_study(tmp_path, name="structure", n_trials=3, max_epochs=2)
    assert invoke("run", str(study_file), "--storage", url).exit_code == 0
    out = tmp_path / "b.json"
    assert (
        invoke("export", "--study", "structure", "--storage", url, "-o", str(out)).exit_code == 0
    )
    best = optuna.load_study(study_name="structure", storage=url).best_trial
    depth, width = best.params["num_layers"], best.params["hidden_size"]
    cfg = load_config(out)
    assert cfg.hidden_sizes == (width,) * depth
    model = build_model(cfg)
    # The weights a stack of `depth` LSTM layers of `width` on 1 feature, with a head to the
    # 2-step horizon, has: layer i reads the width of layer i - 1 (the first, the input).
    shapes = sorted(tuple(v.shape) for v in model.state_dict().values())
    expected = [(2, width), (2,)]
    for i in range(depth):
        expected += [(4 * width, 1 if i == 0 else width), (4 * width, width)]
        expected += [(4 * width,), (4 * width,)]
    assert shapes == sorted(expected)
    assert sum(p.numel() for p in model.parameters()) == best.user_attrs["param_count"]
    assert model.eval()(torch.randn(5, 8, cfg.input_size)).shape == (5, 2)


def test_resume_runs_to_the_budget_and_n_trials_runs_more(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    study_file = write_study(tmp_path, name="resume", n_trials=3, max_epochs=2)
    assert invoke("run", str(study_file), "--storage", url).exit_code == 0
    # Same spec, same budget: nothing left to do.
    assert invoke("run", str(study_file), "--storage", url).exit_code == 0
    assert sum(states(url, "resume").values()) == 3
    # A larger budget resumes up to it.
    write_study(tmp_path, name="resume", n_trials=5, max_epochs=2)
    assert invoke("run", str(study_file), "--storage", url).exit_code == 0
    assert sum(states(url, "resume").values()) == 5
    # --n-trials runs that many more, whatever the budget.
    assert invoke("run", str(study_file), "--storage", url, "--n-trials", "2").exit_code == 0
    assert sum(states(url, "resume").values()) == 7
    # A budget below what the study holds: said, and nothing runs.
    write_study(tmp_path, name="resume", n_trials=2, max_epochs=2)
    caplog.clear()
    assert invoke("run", str(study_file), "--storage", url).exit_code == 0
    assert "n_trials went from 5 to 2" in caplog.text
    assert "already holds 7 finished trials: no new trial will run" in caplog.text
    assert sum(states(url, "resume").values()) == 7


def test_parquet_needs_no_extra_install() -> None:
    from importlib.metadata import requires

    needs = [r for r in requires("depthsearch") or [] if "extra ==" not in r]
    assert any(r.startswith("pyarrow") for r in needs), needs


def test_storage_from_environment(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'env.db'}"
    study_file = write_study(tmp_path, name="envstudy", n_trials=1, max_epochs=1)
    result = invoke("run", str(study_file), env={"DEPTHSEARCH_STORAGE": url})
    assert result.exit_code == 0, result.output
    assert (tmp_path / "env.db").exists()


def table_counts(db: Path) -> dict[str, int]:
    if not db.exists():
        return {}
    with sqlite3.connect(db) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in tables}


def bad_cases(tmp: Path) -> list[tuple[list[str], str]]:
    good = write_study(tmp, name="good", n_trials=2, max_epochs=1)
    unknown_key = tmp / "unknown.toml"
    unknown_key.write_text(good.read_text().replace("[train]", "[train]\nepochz = 3"))
    bad_value = tmp / "badvalue.toml"
    bad_value.write_text(good.read_text().replace("hidden_size = [4, 8]", "hidden_size = [4, -8]"))
    (tmp / "d.csv").write_text("a,b\n" + "\n".join(f"{i},{i}" for i in range(50)))
    bad_column = tmp / "badcolumn.toml"
    bad_column.write_text(
        good.read_text().replace(
            'source = "synthetic"\nlength = 400', 'source = "csv"\npath = "d.csv"\ntarget = "y"'
        )
    )
    other_spec = tmp / "other.toml"
    other_spec.write_text(good.read_text().replace("max_epochs = 1", "max_epochs = 2"))
    return [
        (["run", str(tmp / "absent.toml")], "no such study file"),
        (["run", str(unknown_key)], "[train] unknown key(s) ['epochz']"),
        (["run", str(bad_value)], "[space] hidden_size: choice -8 must be >= 1, but got -8"),
        (["run", str(bad_column)], "no column(s) ['y'] (the file has columns ['a', 'b'])"),
        (
            ["run", str(other_spec)],
            "was created from a different spec (differs at: train.max_epochs)",
        ),
        (["run", str(good), "--storage", "notaurl"], "cannot parse storage URL"),
        (["run", str(good), "--storage", f"sqlite:///{tmp}/no/such/dir/x.db"], "does not exist"),
        (["export", "--study", "absent"], "no study named 'absent'"),
        (
            ["run", str(good), "--storage", "postgresql+psycopg://u:secret@127.0.0.1:1/db"],
            "cannot connect",
        ),
    ]


def test_bad_input_is_one_line_exit_2_and_leaves_the_database_as_it_was(tmp_path: Path) -> None:
    db = tmp_path / "depthsearch.db"
    url = f"sqlite:///{db}"
    cases = bad_cases(tmp_path)
    good = tmp_path / "good.toml"
    assert invoke("run", str(good), "--storage", url).exit_code == 0
    before = table_counts(db)
    for args, message in cases:
        if "--storage" not in args:
            args = [*args, "--storage", url]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2, (args, result.output)
        err = result.stderr if hasattr(result, "stderr") else result.output
        lines = [line for line in err.splitlines() if line.startswith("depthsearch: error:")]
        assert len(lines) == 1 and message in lines[0], (args, err)
        assert "Traceback" not in result.output and "secret" not in result.output
        assert table_counts(db) == before, args


def test_console_script_errors_have_no_traceback(tmp_path: Path) -> None:
    proc = depthsearch_cmd("run", str(tmp_path / "absent.toml"), cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"depthsearch: error: {tmp_path / 'absent.toml'}: no such study file"
    ]
    assert not (tmp_path / "depthsearch.db").exists()


def test_exit_codes_tell_bad_input_from_a_failure_while_running() -> None:
    import click

    from depthsearch.cli import _user_errors
    from depthsearch.errors import InputError, RuntimeFailure

    for error, code in ((InputError("bad value"), 2), (RuntimeFailure("gave up"), 1)):

        @click.command()
        @_user_errors
        def fails(error: Exception = error) -> None:
            raise error

        result = CliRunner().invoke(fails, [])
        assert result.exit_code == code, (error, result.output)
        assert result.output.strip() == f"depthsearch: error: {error}"


@pytest.mark.parametrize("command", ["run", "create"])
def test_a_bad_study_file_or_url_is_refused_before_torch_loads(
    tmp_path: Path, command: str
) -> None:
    import subprocess
    import sys

    bad_file = tmp_path / "bad.toml"
    bad_file.write_text("[prunner]\nkind = 'median'\n")
    good_file = write_study(tmp_path, name="fine")
    for study_file, url in ((bad_file, "sqlite:///x.db"), (good_file, "mysqlx://a@b/c")):
        args = [command, str(study_file), "--storage", url]
        proc = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "depthsearch", *args],
            capture_output=True,
            text=True,
            cwd=tmp_path,
        )
        assert proc.returncode == 2, proc.stderr[-2000:]
        imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()}
        assert "torch" not in imported, "torch was imported before the input was checked"
    assert not (tmp_path / "x.db").exists()


def test_a_worker_started_by_hand_on_the_cpu_with_torchs_threads_says_to_share_the_cores(
    tmp_path: Path, sqlite_url: str
) -> None:
    # Several hand-started workers with torch's default (a thread a core) fight over the
    # cores; launch gives each its share (its workers' lines are checked in test_worker.py).
    import re

    create_here(write_study(tmp_path, name="byhand", n_trials=1, max_epochs=1), sqlite_url)
    args = ["worker", "--study", "byhand", "--storage", sqlite_url, "--device", "cpu"]
    proc = depthsearch_cmd(*args, env={"OMP_NUM_THREADS": None})
    assert proc.returncode == 0, proc.stderr
    found = re.search(r"worker on cpu \((\d+) torch threads\)", proc.stderr)
    assert found, proc.stderr
    threads = int(found[1])
    hint = f"torch trains on {threads} threads here, one a core"
    assert (hint in proc.stderr) == (threads >= 2), proc.stderr
