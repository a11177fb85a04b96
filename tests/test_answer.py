"""A depth answer you can trust: the held-out test part, baselines, confirmation trials, the
answer with its intervals, and the export of what was confirmed."""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from depthsearch import run_study
from depthsearch.cli import main
from depthsearch.learn.baselines import baselines
from depthsearch.learn.data import prepare
from depthsearch.search.confirm import CONFIRM_OF, interval, t_quantile
from depthsearch.spec import DataSpec, load_spec

from .conftest import create_here, depthsearch_cmd, unique


def cli(*args: str) -> str:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output
    return result.output


FORECAST = """
[study]
name = "{name}"
n_trials = {n_trials}
seed = 3

[data]
source = "csv"
path = "series.csv"
target = "y"
window = {window}
horizon = 2
val_fraction = 0.25
test_fraction = 0.2
{extra}

[space]
num_layers = {{ low = 1, high = 2 }}
hidden_size = [8]
lr = [0.01]
batch_size = [32]

[train]
max_epochs = 3
patience = 0
device = "cpu"
min_batches = 1   # one pass an epoch: these tests are about confirmation, not learning

[sampler]
kind = "random"

[pruner]
kind = "none"
{confirm}
"""


def _series(path: Path, n: int = 240, *, trend: float = 0.0) -> pd.DataFrame:
    t = np.arange(n, dtype=np.float64)
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {"y": np.sin(2 * math.pi * t / 12) + trend * t + 0.1 * rng.standard_normal(n)}
    )
    frame.to_csv(path, index=False)
    return frame


def _study(
    tmp_path: Path,
    name: str,
    *,
    n_trials: int = 3,
    extra: str = "",
    confirm: str = "",
    window: int = 8,
) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(
        FORECAST.format(name=name, n_trials=n_trials, extra=extra, confirm=confirm, window=window),
        encoding="utf-8",
    )
    return path


# ---- the test part ------------------------------------------------------------------------


def test_poisoned_test_rows_change_no_trial_of_the_search(tmp_path: Path) -> None:
    """The test part is cut before anything else: poisoning it (a thousandfold) leaves the
    training and validation samples, the scaling and every trial of the search unchanged."""
    clean_dir, poisoned_dir = tmp_path / "clean", tmp_path / "poisoned"
    clean_dir.mkdir()
    poisoned_dir.mkdir()
    frame = _series(clean_dir / "series.csv")
    poisoned = frame.copy()
    rows = len(frame)
    held = round(rows * 0.2)
    poisoned.loc[rows - held :, "y"] *= 1000.0
    poisoned.to_csv(poisoned_dir / "series.csv", index=False)
    specs = [load_spec(_study(d, "poison")) for d in (clean_dir, poisoned_dir)]
    a, b = (prepare(s.data, seed=s.seed) for s in specs)
    for name in ("x_train", "y_train", "x_val", "y_val"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert a.scaler == b.scaler
    assert a.x_test is not None and b.x_test is not None
    assert not torch.equal(a.x_test, b.x_test)  # the poison did land in the test part
    values = []
    for d in (clean_dir, poisoned_dir):
        study = run_study(d / "poison.toml", storage=f"sqlite:///{d / 's.db'}")
        values.append([t.value for t in study.trials])
    assert values[0] == values[1] and len(values[0]) == 3


def test_a_poisoned_test_sequence_changes_no_classification_sample(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    rows = []
    for i in range(60):
        label = "up" if i % 2 else "down"
        for step in range(10):
            rows.append((f"s{i}", step, (1 if label == "up" else -1) * step + rng.normal(), label))
    frame = pd.DataFrame(rows, columns=["seq", "step", "x", "label"])
    spec = _seq_spec(tmp_path / "c.csv", 0.2)
    frame.to_csv(tmp_path / "c.csv", index=False)
    clean = prepare(spec, seed=4, kind="classify")
    assert clean.y_test is not None and len(clean.y_test) == 12  # 20% of each class
    assert sorted(clean.y_test.tolist()) == [0] * 6 + [1] * 6
    # Which ids are held out does not depend on the values: poison every id's values, and
    # find those of the test part by their (unchanged) training/validation neighbours.
    test_ids = set(frame["seq"].unique()) - _ids_of(clean, frame)
    poisoned = frame.copy()
    poisoned.loc[poisoned["seq"].isin(test_ids), "x"] = 1e6
    poisoned.to_csv(tmp_path / "c.csv", index=False)
    again = prepare(spec, seed=4, kind="classify")
    for name in ("x_train", "y_train", "x_val", "y_val"):
        assert torch.equal(getattr(clean, name), getattr(again, name)), name
    assert again.x_test is not None and float(again.x_test.abs().max()) > 1e3


def _seq_spec(path: Path, test_fraction: float) -> DataSpec:
    return DataSpec(
        source="csv",
        path=str(path),
        id="seq",
        time="step",
        target="label",
        features=("x",),
        test_fraction=test_fraction,
    )


def _ids_of(w: object, frame: pd.DataFrame) -> set[str]:
    """The ids whose (scaled) sequences are among the training and validation samples."""
    scaler = w.scaler  # type: ignore[attr-defined]
    seen = torch.cat([w.x_train, w.x_val])  # type: ignore[attr-defined]
    found = set()
    for key, g in frame.groupby("seq"):
        x = torch.tensor(scaler.transform(g[["x"]].to_numpy()), dtype=torch.float32)
        if any(torch.allclose(s[: len(x)], x, atol=1e-5) for s in seen):
            found.add(str(key))
    return found


# ---- baselines ----------------------------------------------------------------------------


def test_naive_baselines_are_scored_on_the_same_split_and_scale(tmp_path: Path) -> None:
    frame = _series(tmp_path / "series.csv", trend=0.0)
    spec = load_spec(_study(tmp_path, "b", extra="season = 12", window=12))
    w = prepare(spec.data, seed=0)
    got = baselines(w)
    assert set(got) == {"last value", "seasonal naive (12)", "climatology + anomaly (12)"}
    # By hand: the last value of each validation window, in the target's units.
    y = frame["y"].to_numpy()
    rows, held = len(y), round(len(y) * 0.2)
    end = rows - held
    cut = round(end * 0.75)
    errors = [y[t + k] - y[t - 1] for t in range(cut, end - 1) for k in range(2)]
    rmse = math.sqrt(float(np.mean(np.square(errors))))
    assert got["last value"]["val_rmse"] == pytest.approx(rmse, rel=1e-5)
    # A pure season of 12 (noise 0.1) is forecast far better by its seasonal naive.
    assert got["seasonal naive (12)"]["val_rmse"] < 0.5 * got["last value"]["val_rmse"]
    assert got["last value"]["test_loss"] > 0
    # Climatology (each month's training mean) plus the last value's anomaly, by hand.
    train = y[:cut]
    climate = np.array([train[m::12].mean() for m in range(12)])
    by_hand = [
        climate[(t - 1 + k) % 12] + y[t - 1] - climate[(t - 1) % 12] - y[t - 1 + k]
        for t in range(cut, end - 1)
        for k in (1, 2)
    ]
    assert got["climatology + anomaly (12)"]["val_rmse"] == pytest.approx(
        math.sqrt(float(np.mean(np.square(by_hand)))), rel=1e-5
    )


def test_majority_class_baseline(tmp_path: Path) -> None:
    rows = [(f"s{i}", s, float(s), "a" if i < 30 else "b") for i in range(40) for s in range(4)]
    pd.DataFrame(rows, columns=["seq", "step", "x", "label"]).to_csv(
        tmp_path / "c.csv", index=False
    )
    spec = _seq_spec(tmp_path / "c.csv", 0.25)
    w = prepare(spec, seed=0, kind="classify")
    scores = baselines(w)["majority class"]
    assert scores["val_accuracy"] == pytest.approx(float((w.y_val == 0).double().mean()))
    assert scores["test_accuracy"] == pytest.approx(0.8)  # 8 of the 10 held out are "a"
    assert scores["val_loss"] == pytest.approx(
        -float(np.mean([math.log(0.75) if c == 0 else math.log(0.25) for c in w.y_val.tolist()])),
        rel=1e-3,
    )


# ---- intervals ----------------------------------------------------------------------------


def test_t_quantiles_and_interval_coverage_on_a_known_distribution() -> None:
    for df, expected in ((1, 12.7062), (2, 4.3027), (4, 2.7764), (9, 2.2622), (30, 2.0423)):
        assert t_quantile(0.975, df) == pytest.approx(expected, abs=1e-4)
    rng = np.random.default_rng(7)
    for n in (3, 5, 10):
        hits = 0
        for _ in range(2000):
            got = interval(list(rng.normal(3.0, 2.0, size=n)))
            hits += got.low <= 3.0 <= got.high
        assert 0.93 <= hits / 2000 <= 0.97, (n, hits)  # 95 % +- 2 % (sd of the rate: 0.5 %)
    one = interval([1.0])
    assert one.n == 1 and math.isinf(one.half)


# ---- confirmation, answer, export -------------------------------------------------------


# PostgreSQL, where many workers share a study; the reservation of confirmations is tested on
# both storages below.
@pytest.mark.parametrize("fresh_storage_url", ["postgresql"], indirect=True)
def test_confirm_with_two_workers_then_answer_and_export_confirmed(
    tmp_path: Path, fresh_storage_url: str
) -> None:
    """Two launched workers run the search and then the study file's confirmations (queued
    by the first to see the budget met); `confirm --wait` queues more and runs them here."""
    url = fresh_storage_url
    name = unique("conf")
    _series(tmp_path / "series.csv")
    wanted = "[confirm]\nper_depth = true\nseeds = 2\n"
    create_here(_study(tmp_path, name, n_trials=4, confirm=wanted), url)
    first = depthsearch_cmd("launch", "--study", name, "--storage", url, "--cpu-workers", "2")
    assert first.returncode == 0, first.stderr
    assert "confirmation trial(s) queued" in first.stderr
    said = cli(
        "confirm", "--study", name, "--storage", url, "--per-depth", "--seeds", "3", "--wait"
    )
    assert "queued 2 confirmation trials" in said, said  # one more seed of each depth
    assert "test_loss (95% CI)" in said and ": take " in said, said
    # Asked again: nothing new (those queued or done count).
    assert "queued 0 confirmation trials" in cli(
        "confirm", "--study", name, "--storage", url, "--per-depth", "--seeds", "3"
    )
    study = optuna.load_study(study_name=name, storage=url)
    trials = study.get_trials()
    confirms = [t for t in trials if CONFIRM_OF in t.user_attrs]
    search = [t for t in trials if CONFIRM_OF not in t.user_attrs]
    assert len(search) == 4  # the search's budget untouched
    assert len(confirms) == 6  # two depths x three seeds
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in confirms)
    # The first four by the launched workers, the last two by `confirm --wait`, here.
    pids = [t.user_attrs["worker_pid"] for t in sorted(confirms, key=lambda t: t.number)]
    assert os.getpid() not in pids[:4] and pids[4:] == [os.getpid()] * 2
    seeds = {t.user_attrs["seed"] for t in confirms}
    assert len(seeds) == 6 and not seeds & {t.user_attrs["seed"] for t in search}
    for t in confirms:
        source = study.trials[t.user_attrs[CONFIRM_OF]]
        assert t.params == source.params
        assert t.user_attrs["test_loss"] > 0 and "test_rmse" in t.user_attrs
    assert all("test_loss" not in t.user_attrs for t in search)  # the search never saw it
    text = cli("answer", "--study", name, "--storage", url)
    assert "test_loss (95% CI)" in text and ": take " in text, text
    assert "baseline last value" in text
    data = json.loads(cli("answer", "--study", name, "--storage", url, "--json"))
    assert len(data["candidates"]) == 2
    assert all(c["val_loss"]["seeds"] == 3 for c in data["candidates"])
    status = cli("status", "--study", name, "--storage", url)
    assert "4 of 4 search trials finished; confirmations: 6 complete" in status
    assert "budget met" in status
    out = tmp_path / "best"
    exported = cli(
        "export",
        "--study",
        name,
        "--storage",
        url,
        "--pick",
        "confirmed",
        "--retrain",
        "-o",
        str(out),
    )
    assert "held-out test part" in exported and "confirmed over 3 seeds" in exported
    doc = json.loads((out / "config.json").read_text())
    assert doc["origin"]["trial"] == data["recommended"]
    assert doc["retrain"]["test_loss"] > 0 and doc["confirmed"]["seeds"] == 3


def test_a_confirmation_that_ends_for_good_frees_no_slot_for_a_search_trial(
    tmp_path: Path, storage_url: str
) -> None:
    """A confirmation failed for good (past max_retry, dropped by Ctrl-C twice, out of
    memory): the search's budget stays exact, status and answer say so, confirm asks again."""
    _series(tmp_path / "series.csv")
    name = unique("ended")
    path = _study(tmp_path, name, n_trials=4)
    run_study(path, storage=storage_url)
    cli("confirm", "--study", name, "--storage", storage_url, "--top", "1", "--seeds", "2")
    study = optuna.load_study(study_name=name, storage=storage_url)
    waiting = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert len(waiting) == 2
    # What a worker does with a confirmation that failed for good: RUNNING, then FAIL.
    storage = optuna.storages.RDBStorage(storage_url)
    sid = storage.get_study_id_from_name(name)
    tid = storage.get_trial_id_from_study_id_trial_number(sid, waiting[0].number)
    storage.set_trial_state_values(tid, state=optuna.trial.TrialState.RUNNING)
    storage.set_trial_user_attr(tid, "fail_reason", "out of memory on cuda:0")
    storage.set_trial_state_values(tid, state=optuna.trial.TrialState.FAIL)
    run_study(path, storage=storage_url)  # to the budget: the other confirmation, nothing new
    trials = optuna.load_study(study_name=name, storage=storage_url).get_trials()
    assert len([t for t in trials if CONFIRM_OF not in t.user_attrs]) == 4
    states = sorted(t.state.name for t in trials if CONFIRM_OF in t.user_attrs)
    assert states == ["COMPLETE", "FAIL"]
    said = "1 confirmation trial(s) ended without a result (1 of trial "
    status = cli("status", "--study", name, "--storage", storage_url)
    assert "4 of 4 search trials finished" in status and said in status, status
    assert "budget met" in status
    best = re.search(r"best so far: trial (\d+)", status)
    assert best is not None and int(best.group(1)) < 4, status  # a search trial, always
    answer = cli("answer", "--study", name, "--storage", storage_url)
    assert said in answer and "ask again with `depthsearch confirm" in answer, answer
    # One finished confirmation is no interval: left out of the verdict, and said.
    assert "has 1 finished confirmation; an interval needs two" in answer
    assert ": take " not in answer
    data = json.loads(cli("answer", "--study", name, "--storage", storage_url, "--json"))
    assert data["candidates"] == [] and len(data["left_out"]) == 1
    again = cli("confirm", "--study", name, "--storage", storage_url, "--top", "1", "--seeds", "2")
    assert "queued 1 confirmation trial" in again, again


def test_one_seed_is_not_an_interval_and_json_has_no_infinity(tmp_path: Path) -> None:
    from depthsearch.errors import SpecError

    _series(tmp_path / "series.csv")
    path = _study(tmp_path, "one", confirm="[confirm]\ntop = 1\nseeds = 1\n")
    with pytest.raises(SpecError, match=r"\[confirm\] seeds: must be 0 \(no confirmation\) or at"):
        load_spec(path)
    done = depthsearch_cmd("run", str(path), "--storage", f"sqlite:///{tmp_path / 's.db'}")
    assert done.returncode == 2 and "[confirm] seeds" in done.stderr, done.stderr
    # Every JSON the package writes is strict: no NaN, no Infinity.
    from depthsearch._text import json_text

    text = json_text({"a": math.inf, "b": [math.nan, 1.5], "c": {"d": -math.inf}})
    assert json.loads(text, parse_constant=lambda c: pytest.fail(c)) == {
        "a": None,
        "b": [None, 1.5],
        "c": {"d": None},
    }


def test_the_study_file_confirms_at_the_end_of_the_search(tmp_path: Path) -> None:
    _series(tmp_path / "series.csv")
    path = _study(tmp_path, "auto", confirm="[confirm]\ntop = 1\nseeds = 2\n")
    study = run_study(path, storage=f"sqlite:///{tmp_path / 's.db'}")
    confirms = [t for t in study.trials if CONFIRM_OF in t.user_attrs]
    assert len(study.trials) == 5 and len(confirms) == 2
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in confirms)
    again = run_study(path, storage=f"sqlite:///{tmp_path / 's.db'}")  # queued once only
    assert len(again.trials) == 5


def test_a_differenced_forecast_predicts_in_the_series_units(tmp_path: Path) -> None:
    frame = _series(tmp_path / "series.csv", trend=5.0)  # climbs to ~1200
    path = _study(tmp_path, "diff", extra="difference = true", n_trials=1)
    spec = load_spec(path)
    w = prepare(spec.data, seed=0)
    y = frame["y"].to_numpy()
    # The first training window starts at row 1; its outputs are changes from its last row.
    change = w.y_train[0].numpy() * w.scaler.target_std
    np.testing.assert_allclose(change, y[9:11] - y[8], rtol=1e-4, atol=1e-4)
    url = f"sqlite:///{tmp_path / 's.db'}"
    run_study(path, storage=url)
    cli("export", "--study", "diff", "--storage", url, "--retrain", "-o", str(tmp_path / "m"))
    cli(
        "predict",
        str(tmp_path / "m"),
        "--csv",
        str(tmp_path / "series.csv"),
        "-o",
        str(tmp_path / "p.csv"),
    )
    pred = pd.read_csv(tmp_path / "p.csv")
    assert len(pred) == len(frame) - 8  # one per window, from row 1
    # Integrated back: near the series' level (~1200 at the end), not near a change (~5).
    last = pred["y+1"].to_numpy()[-1]
    assert abs(last - (y[-1] + 5.0)) < 50.0, last


def _trial(value: float, **attrs: object) -> optuna.trial.FrozenTrial:
    return optuna.trial.create_trial(value=value, user_attrs=dict(attrs))


def test_a_best_counts_only_when_it_beats_the_baseline_beyond_the_noise() -> None:
    from depthsearch.results.answer import baseline_lines
    from depthsearch.results.verdict import NOTHING_LEARNED, verdict_of

    scores = {"last value": {"val_loss": 0.1, "val_rmse": 2.0, "test_loss": 0.2}}
    (line,) = baseline_lines(scores)
    assert line == "baseline last value: val_rmse=2, val_loss=0.1 (test part: test_loss=0.2)"
    worse = verdict_of(_trial(0.3, val_loss_se=0.01), scores)
    assert worse is not None and not worse.beat and worse.text.startswith(NOTHING_LEARNED)
    assert "difference = true" in worse.text  # what to try
    within = verdict_of(_trial(0.095, val_loss_se=0.01), scores)  # 0.095 + 2 x 0.01 > 0.1
    assert within is not None and not within.beat
    better = verdict_of(_trial(0.05, val_loss_se=0.01), scores)
    assert better is not None and better.beat and "beats the baseline 'last value'" in better.text
    # A classification: accuracy beyond two binomial standard errors of the majority's, and
    # a loss below the majority's.
    majority = {"majority class": {"val_loss": 0.693, "val_accuracy": 0.5, "val_count": 10}}
    chance = verdict_of(_trial(0.69, val_accuracy=0.7, val_loss_se=0.01), majority)
    assert chance is not None and not chance.beat and "readout" in chance.text  # 0.7 < 0.816
    learned = verdict_of(_trial(0.2, val_accuracy=0.9, val_loss_se=0.05), majority)
    assert learned is not None and learned.beat
    lucky = verdict_of(_trial(0.9, val_accuracy=0.9, val_loss_se=0.05), majority)
    assert lucky is not None and not lucky.beat  # accurate by chance, its loss no better
    # At chance on shuffled labels, 9 of 10 right by luck, the loss a hair below the
    # majority's with a tiny standard error: a likelihood ratio of 1.04, no evidence.
    shuffled = verdict_of(_trial(0.6909, val_accuracy=0.9, val_loss_se=0.001), majority)
    assert shuffled is not None and not shuffled.beat, shuffled.text
    assert "where evidence needs 20" in shuffled.text
    assert "val_accuracy" not in shuffled.text  # its accuracy passed: only what failed is said
    # The loss has the evidence (n = 10: 10 x (0.693 - 0.2) nats, a ratio of 139), the
    # accuracy does not (0.6 < 0.5 + 2 standard errors): the verdict names the accuracy alone.
    loss_only = verdict_of(_trial(0.2, val_accuracy=0.6, val_loss_se=0.05), majority)
    assert loss_only is not None and not loss_only.beat
    assert "val_accuracy 0.6 against" in loss_only.text and "likelihood" not in loss_only.text


def test_a_study_stored_before_the_test_part_resumes_without_one(tmp_path: Path) -> None:
    from depthsearch.errors import StudyMismatchError
    from depthsearch.search.trials import SPEC
    from depthsearch.studies import create_study, read_spec

    _series(tmp_path / "series.csv")
    url = f"sqlite:///{tmp_path / 's.db'}"
    path = _study(tmp_path, "old")
    path.write_text(path.read_text().replace("test_fraction = 0.2\n", ""), encoding="utf-8")
    spec = load_spec(path)
    assert spec.data.test_fraction == 0.1  # a new study's default
    study = create_study(spec, url)
    stored = dict(study.user_attrs[SPEC])
    stored["data"] = {k: v for k, v in stored["data"].items() if k != "test_fraction"}
    study.set_user_attr(SPEC, stored)  # as a study created before the key existed
    assert read_spec("old", url).data.test_fraction == 0.0  # workers joining: no test part
    with pytest.raises(StudyMismatchError, match="add `test_fraction = 0` to \\[data\\]"):
        create_study(spec, url)
    path.write_text(
        path.read_text().replace("val_fraction = 0.25", "val_fraction = 0.25\ntest_fraction = 0"),
        encoding="utf-8",
    )
    create_study(load_spec(path), url)  # resumes
