"""Your own sequence problem (#24): panels of series, labelled sequences, a value per sequence,
variable lengths packed, arrays, missing values, and every command on each kind."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from depthsearch.cli import main
from depthsearch.errors import DataError, SpecError
from depthsearch.learn.data import prepare
from depthsearch.learn.model import ModelConfig, build_model
from depthsearch.spec import DataSpec, spec_from_dict

from .conftest import create_here, depthsearch_cmd, unique


def cli(*args: str) -> str:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output
    return result.output


# --- variable lengths -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [
        {"hidden_sizes": (6, 6, 6)},  # the fused nn.LSTM
        {"hidden_sizes": (6, 6), "bidirectional": True},
        {"hidden_sizes": (8, 5, 7), "bidirectional": True},
        {"hidden_sizes": (6, 6, 6), "residual": True, "layer_norm": True},
        {"hidden_sizes": (6, 4), "batch_first": False},
        {"hidden_sizes": (6, 6), "bidirectional": True, "readout": "final"},
        {"hidden_sizes": (5, 7), "readout": "mean"},
        {"hidden_sizes": (6, 6), "bidirectional": True, "readout": "max"},
        {"hidden_sizes": (6, 4), "batch_first": False, "readout": "mean"},
    ],
)
def test_a_sequence_gives_the_same_output_whatever_the_padding_around_it(
    config: dict[str, object],
) -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(input_size=3, output_size=2, **config)  # type: ignore[arg-type]
    model = build_model(cfg).eval()
    seq = torch.randn(5, 3)

    def run(x: torch.Tensor, lengths: list[int] | None) -> torch.Tensor:
        if not cfg.batch_first:
            x = x.transpose(0, 1)
        return model(x, lengths=None if lengths is None else torch.tensor(lengths))

    alone = run(seq[None], None)
    for steps, at, others in ((9, 1, [9, 2]), (5, 0, [3, 1]), (12, 2, [1, 12])):
        batch = torch.randn(3, steps, 3) * 10  # padding full of large values, never read
        batch[at, :5] = seq
        lengths = [*others[:at], 5, *others[at:]]
        out = run(batch, lengths)
        torch.testing.assert_close(out[at], alone[0], atol=1e-5, rtol=1e-5)
        # And the other sequences: each as if it were alone.
        for i, n in enumerate(lengths):
            if i != at:
                torch.testing.assert_close(out[i], run(batch[i : i + 1, :n], None)[0])
    with pytest.raises(ValueError, match=r"lengths must be in \[1, 5\]"):
        run(torch.randn(2, 5, 3), [6, 1])


# --- tables of many series or sequences -----------------------------------------------------


def _panel(path: Path, rows: int = 60) -> pd.DataFrame:
    """Two series 1,000x apart, their rows interleaved and shuffled (time orders them)."""
    t = np.arange(rows)
    small = pd.DataFrame({"site": "small", "t": t, "kw": 1.0 + np.sin(t / 3.0)})
    big = pd.DataFrame({"site": "big", "t": t, "kw": 1000.0 * (2.0 + np.cos(t / 4.0))})
    frame = pd.concat([small, big]).sample(frac=1.0, random_state=0)
    frame.to_csv(path, index=False)
    return frame


def _panel_spec(path: Path, **kw: object) -> DataSpec:
    base: dict[str, object] = {
        "source": "csv",
        "path": str(path),
        "id": "site",
        "time": "t",
        "target": "kw",
        "window": 5,
        "horizon": 2,
        "val_fraction": 0.25,
        "test_fraction": 0.0,  # the split's own arithmetic; the test part has its own tests
    }
    return DataSpec(**{**base, **kw})  # type: ignore[arg-type]


def test_panel_windows_never_cross_two_series_and_each_has_its_own_scale(
    tmp_path: Path,
) -> None:
    path = tmp_path / "panel.csv"
    _panel(path)
    w = prepare(_panel_spec(path))
    stats = w.scaler.series
    assert set(stats) == {"small", "big"}
    assert stats["big"].target_mean / stats["small"].target_mean > 500
    # 60 rows, cut at 45: 45 - 5 - 2 + 1 = 39 training windows per series, 15 - 2 + 1 = 14
    # validation windows per series.
    assert w.x_train.shape == (78, 5, 1) and w.x_val.shape == (28, 5, 1)
    # Every window, unscaled with its own series' statistics, is 7 consecutive steps of it.
    for x, y, part in ((w.x_train, w.y_train, "train"), (w.x_val, w.y_val, "val")):
        n = len(x) // 2
        first, second = list(stats)  # the series in the order their windows come
        for k, rows in ((first, slice(0, n)), (second, slice(n, None))):
            s = stats[k]
            seq = (
                np.concatenate([x[rows, :, 0].numpy(), y[rows].numpy()], axis=1) * s.target_std
                + s.target_mean
            )
            t = np.arange(60)
            truth = 1.0 + np.sin(t / 3.0) if k == "small" else 1000.0 * (2.0 + np.cos(t / 4.0))
            start = 0 if part == "train" else 45 - 5
            for i, window in enumerate(seq):
                np.testing.assert_allclose(
                    window, truth[start + i : start + i + 7], atol=1e-3 * abs(truth).max()
                )
    # Scaled per series, both sit near 0; scaled globally, the small one is crushed.
    assert abs(float(w.x_train[:39].mean())) < 1.0 and abs(float(w.x_train[39:].mean())) < 1.0
    g = prepare(_panel_spec(path, scale="global"))
    small = slice(0, 39) if next(iter(stats)) == "small" else slice(39, None)
    assert not g.scaler.series and float(g.x_train[small].std()) < 0.01


def test_an_id_too_short_for_a_window_is_named(tmp_path: Path) -> None:
    path = tmp_path / "panel.csv"
    frame = _panel(path)
    short = pd.DataFrame({"site": "tiny", "t": range(6), "kw": 1.0})
    pd.concat([frame, short]).to_csv(path, index=False)
    with pytest.raises(DataError, match=r"id 'tiny' has 6 rows, too few for window=5"):
        prepare(_panel_spec(path))


def _sequences(
    path: Path, n: int = 40, *, seed: int = 0, labels: tuple[str, str] = ("up", "down")
) -> pd.DataFrame:
    """Rising or falling noisy sequences of 6-20 steps, labelled by text; a second feature
    is noise. One row per step, ids in a shuffled order."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        length = int(rng.integers(6, 21))
        label = labels[i % 2]
        slope = 1.0 if label == labels[0] else -1.0
        x = slope * np.linspace(0, 1, length) + 0.1 * rng.standard_normal(length)
        rows.append(
            pd.DataFrame(
                {
                    "seq": f"{label}-{seed}-{i}",
                    "step": np.arange(length),
                    "x": x,
                    "noise": rng.standard_normal(length),
                    "label": label,
                    "score": float(x[-1] * 10.0 + 100.0),
                }
            )
        )
    frame = pd.concat(rows, ignore_index=True)
    frame.sample(frac=1.0, random_state=seed).to_csv(path, index=False)
    return frame


def _seq_spec(path: Path, **kw: object) -> DataSpec:
    base: dict[str, object] = {
        "source": "csv",
        "path": str(path),
        "id": "seq",
        "time": "step",
        "target": "label",
        "features": ("x", "noise"),
        "val_fraction": 0.25,
        "test_fraction": 0.0,
    }
    return DataSpec(**{**base, **kw})  # type: ignore[arg-type]


def test_classification_takes_text_labels_and_splits_by_label_with_the_seed(
    tmp_path: Path,
) -> None:
    path = tmp_path / "seqs.csv"
    _sequences(path, n=41, labels=("rise", "fall"))
    w = prepare(_seq_spec(path), seed=1, kind="classify")
    assert w.classes == ("fall", "rise") and w.output_size == 2
    assert w.y_train.dtype == torch.int64 and len(w.y_train) + len(w.y_val) == 41
    # Stratified: a quarter of each class (21 rise, 20 fall) validates.
    assert sorted(torch.bincount(w.y_val).tolist()) == [5, 5]
    assert w.len_train is not None and w.len_val is not None
    assert int(w.len_train.max()) <= w.x_train.shape[1] <= 20
    again = prepare(_seq_spec(path), seed=1, kind="classify")
    other = prepare(_seq_spec(path), seed=2, kind="classify")
    assert torch.equal(again.x_val, w.x_val)
    assert not torch.equal(other.len_val, w.len_val) or not torch.equal(other.x_val, w.x_val)
    # max_length keeps each sequence's last steps.
    cut = prepare(_seq_spec(path, max_length=4), seed=1, kind="classify")
    assert cut.x_train.shape[1] == 4 and cut.len_train is None


def test_regression_predicts_the_last_target_value_of_each_id(tmp_path: Path) -> None:
    path = tmp_path / "seqs.csv"
    frame = _sequences(path, n=20)
    spec = _seq_spec(path, target="score", features=("x",))
    w = prepare(spec, seed=0, kind="regress")
    values = torch.cat([w.y_train, w.y_val])[:, 0].numpy() * w.scaler.target_std
    values += w.scaler.target_mean
    expected = frame.groupby("seq")["score"].last()
    np.testing.assert_allclose(sorted(values), sorted(expected), rtol=1e-5)


def test_a_regression_of_several_target_columns(tmp_path: Path) -> None:
    path = tmp_path / "seqs.csv"
    frame = _sequences(path, n=20)
    frame.assign(twice=frame["score"] * 2.0).to_csv(path, index=False)
    doc = {
        "study": {"name": "two", "n_trials": 1},
        "task": {"kind": "regress"},
        "data": {
            "source": "csv",
            "path": str(path),
            "id": "seq",
            "time": "step",
            "target": ["score", "twice"],
            "features": ["x"],
        },
    }
    spec = spec_from_dict(doc)
    assert spec.data.targets == ("score", "twice")
    assert spec_from_dict(spec.to_dict()) == spec  # stored and read back as a list
    w = prepare(spec.data, kind="regress")
    assert w.output_size == 2
    values = w.scaler.inverse_target(torch.cat([w.y_train, w.y_val]).numpy())
    np.testing.assert_allclose(values[:, 1], 2.0 * values[:, 0], rtol=1e-5)
    with pytest.raises(SpecError, match="a list of columns is for \\[task\\] kind = 'regress'"):
        spec_from_dict({**doc, "task": {"kind": "classify"}})


@pytest.mark.parametrize(
    ("rule", "expected_small", "expected_rows"),
    [
        ("ffill", [1.0, 1.0, 3.0], 3),
        ("interpolate", [1.0, 2.0, 3.0], 3),
        ("drop", [1.0, 3.0], 2),
    ],
)
def test_missing_values_are_treated_within_each_id(
    tmp_path: Path, rule: str, expected_small: list[float], expected_rows: int
) -> None:
    from depthsearch.learn.read import read

    path = tmp_path / "gaps.csv"
    pd.DataFrame(
        {
            "id": ["a", "a", "a", "b", "b", "b"],
            "v": [1.0, None, 3.0, None, 5.0, 6.0],
        }
    ).to_csv(path, index=False)
    spec = DataSpec(source="csv", path=str(path), id="id", target="v", missing=rule)
    seqs = read(spec, "forecast")
    parts = {key: seqs.rows(i) for i, key in enumerate(seqs.keys)}
    assert parts["a"][:, 0].tolist() == expected_small
    # b's leading gap is never filled from a: it is dropped (ffill, drop) or takes b's own
    # nearest value (interpolate).
    assert parts["b"][:, 0].tolist()[-2:] == [5.0, 6.0]
    assert len(parts["b"]) == (3 if rule == "interpolate" else 2)
    assert len(parts["a"]) == expected_rows
    error = DataSpec(source="csv", path=str(path), id="id", target="v")
    with pytest.raises(
        DataError, match=r"id 'a': column 'v' has 1 missing value\(s\), the first on row 3"
    ):
        read(error, "forecast")


def test_arrays_from_npz_with_lengths(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((30, 12, 2))
    lengths = rng.integers(3, 13, size=30)
    y = np.array([i % 3 for i in range(30)])
    np.savez(tmp_path / "d.npz", X=x, y=y, lengths=lengths)
    spec = DataSpec(source="npz", path=str(tmp_path / "d.npz"))
    w = prepare(spec, seed=0, kind="classify")
    assert w.classes == ("0", "1", "2") and w.input_size == 2
    assert w.len_train is not None and w.len_val is not None and w.len_test is not None
    got = sorted(torch.cat([w.len_train, w.len_val, w.len_test]).tolist())
    assert got == sorted(lengths.tolist())
    r = prepare(spec, seed=0, kind="regress")
    assert r.y_train.shape[1] == 1 and r.output_size == 1
    np.savez(tmp_path / "k.npz", X=x, y=rng.standard_normal((30, 4)))
    k = prepare(DataSpec(source="npz", path=str(tmp_path / "k.npz")), kind="regress")
    assert k.output_size == 4 and k.len_train is None and len(k.scaler.output_mean) == 4


def _bad_inputs(tmp_path: Path) -> list[tuple[DataSpec, str, str]]:
    seqs = tmp_path / "seqs.csv"
    frame = _sequences(seqs, n=12)
    mixed = tmp_path / "mixed.csv"
    frame.assign(label=np.where(np.arange(len(frame)) % 5 == 0, "up", frame["label"])).to_csv(
        mixed, index=False
    )
    lonely = tmp_path / "lonely.csv"
    one = frame[frame["seq"] == frame["seq"].iloc[0]].assign(label="odd", seq="only-one")
    pd.concat([frame, one]).to_csv(lonely, index=False)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "nox.npz", x=rng.standard_normal((4, 3, 1)), y=np.zeros(4))
    np.savez(
        tmp_path / "len.npz", X=rng.standard_normal((4, 3, 1)), y=np.zeros(4), lengths=[1, 2, 3]
    )
    np.savez(
        tmp_path / "long.npz",
        X=rng.standard_normal((4, 3, 1)),
        y=np.zeros(4),
        lengths=[1, 2, 3, 4],
    )
    np.savez(tmp_path / "ylen.npz", X=rng.standard_normal((4, 3, 1)), y=np.zeros(5))
    npz = DataSpec(source="npz", path=str(tmp_path / "nox.npz"))
    (tmp_path / "text.npz").write_text("not arrays\n", encoding="utf-8")
    text = DataSpec(source="npz", path=str(tmp_path / "text.npz"))
    return [
        (_seq_spec(mixed), "classify", "must be the same on every row of an id, but id"),
        (_seq_spec(lonely), "classify", "class 'odd' has a single sequence (id 'only-one')"),
        (npz, "classify", "no array(s) ['X'] (it has ['x', 'y'])"),
        (text, "regress", "not a zip of .npy arrays"),
        (
            DataSpec(source="npz", path=str(tmp_path / "len.npz")),
            "regress",
            "lengths must be (N,)",
        ),
        (DataSpec(source="npz", path=str(tmp_path / "long.npz")), "regress", "lengths[3] = 4"),
        (
            DataSpec(source="npz", path=str(tmp_path / "ylen.npz")),
            "regress",
            "y must be (N,) or (N, k) with N = 4",
        ),
        (_seq_spec(seqs, target="label"), "regress", "column 'label' must be numeric"),
    ]


def test_bad_sequence_data_gives_one_line_naming_what_is_wrong(tmp_path: Path) -> None:
    for spec, kind, message in _bad_inputs(tmp_path):
        with pytest.raises(DataError) as info:
            prepare(spec, kind=kind)
        assert message in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_a_study_file_says_what_a_task_needs() -> None:
    base = {"study": {"name": "x", "n_trials": 1}}
    csv = {"source": "csv", "path": "/etc/hostname", "target": "label"}
    cases = [
        (
            {"task": {"kind": "classify"}, "data": csv},
            "[data] id: is required for [task] kind = 'classify'",
        ),
        (
            {"task": {"kind": "regress"}, "data": {**csv, "id": "i", "window": 8}},
            "[data] window: applies to [task] kind = 'forecast' only",
        ),
        ({"task": {"kind": "classify"}}, "a synthetic series can only be forecast"),
        ({"data": {**csv, "max_length": 5}}, "[data] max_length: applies to [task] kind"),
        (
            {"task": {"kind": "sort"}},
            "[task] kind: must be one of ['forecast', 'classify', 'regress']",
        ),
        (
            {"study": {"name": "x", "n_trials": 1, "objectives": ["val_loss", "val_accuracy"]}},
            "measured for [task] kind = 'classify' only",
        ),
    ]
    for extra, message in cases:
        with pytest.raises(SpecError) as info:
            spec_from_dict({**base, **extra})
        assert message in str(info.value), str(info.value)


# --- every command, on each kind ------------------------------------------------------------


CLASSIFY = """
[study]
name = "{name}"
n_trials = 4
seed = 2

[task]
kind = "classify"

[data]
source = "csv"
path = "seqs.csv"
id = "seq"
time = "step"
target = "label"
features = ["x", "noise"]
val_fraction = 0.25

[space]
num_layers = {{ low = 1, high = 2 }}
hidden_size = [8, 16]
lr = [0.02]
batch_size = [16]

[train]
max_epochs = 8
patience = 0
device = "cpu"

[sampler]
kind = "random"

[pruner]
kind = "none"
"""


# One backend each: the storage does not depend on the task's kind (the classification on
# PostgreSQL, the panel on SQLite, the NPZ regression on SQLite).
@pytest.mark.parametrize("fresh_storage_url", ["postgresql"], indirect=True)
def test_classification_end_to_end_with_two_launched_workers(
    tmp_path: Path, fresh_storage_url: str
) -> None:
    url = fresh_storage_url
    name = unique("cls")
    _sequences(tmp_path / "seqs.csv", n=48)
    study_file = tmp_path / "cls.toml"
    study_file.write_text(CLASSIFY.format(name=name), encoding="utf-8")
    create_here(study_file, url)
    proc = depthsearch_cmd("launch", "--study", name, "--storage", url, "--cpu-workers", "2")
    assert proc.returncode == 0, proc.stderr
    assert "val_accuracy=" in proc.stderr
    study = optuna.load_study(study_name=name, storage=url)
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(complete) == 4
    best = min(complete, key=lambda t: t.value or 0.0)
    promised = best.user_attrs["val_accuracy"]
    assert promised >= 0.75  # two classes, half each: well above the majority class
    assert len(best.user_attrs["val_accuracy_curve"]) == 8
    assert np.sum(best.user_attrs["val_confusion"]) == 12  # 12 validation sequences
    assert best.user_attrs["classes"] == ["down", "up"]
    assert "val_accuracy=" in cli("status", "--study", name, "--storage", url)
    assert "user_attrs_val_accuracy" in cli("trials", "--study", name, "--storage", url)
    cli("report", "--study", name, "--storage", url, "-o", str(tmp_path / "report"))
    page = (tmp_path / "report" / "index.html").read_text()
    assert "Confusion matrix of trial" in page and "best accuracy" in page
    assert (tmp_path / "report" / "accuracy.png").is_file()
    out = tmp_path / "best"
    said = cli(
        "export",
        "--study",
        name,
        "--storage",
        url,
        "--retrain",
        "--format",
        "onnx",
        "-o",
        str(out),
    )
    assert "val_accuracy=" in said and "model.onnx (ONNX" in said
    # Sequences the study never saw: one row per id, a label and a probability per class.
    fresh = _sequences(tmp_path / "new.csv", n=30, seed=9).drop(columns=["label", "score"])
    fresh.sample(frac=1.0, random_state=1).to_csv(tmp_path / "new.csv", index=False)
    cli("predict", str(out), "--csv", str(tmp_path / "new.csv"), "-o", str(tmp_path / "p.csv"))
    pred = pd.read_csv(tmp_path / "p.csv")
    assert list(pred.columns) == ["seq", "label", "prob_down", "prob_up"]
    assert sorted(pred["seq"]) == sorted(fresh["seq"].unique())
    np.testing.assert_allclose(pred[["prob_down", "prob_up"]].sum(axis=1), 1.0, rtol=1e-5)
    truth = pred["seq"].str.split("-").str[0]
    accuracy = float((pred["label"] == truth).mean())
    retrained = json.loads((out / "config.json").read_text())["retrain"]["val_accuracy"]
    assert accuracy >= min(promised, retrained) - 0.15, (accuracy, promised, retrained)
    # The ONNX file under ONNX Runtime: the same answers (sequences of many lengths).
    cli(
        "predict",
        str(out),
        "--csv",
        str(tmp_path / "new.csv"),
        "--runtime",
        "onnxruntime",
        "-o",
        str(tmp_path / "p_onnx.csv"),
    )
    by_onnx = pd.read_csv(tmp_path / "p_onnx.csv")
    assert list(by_onnx["label"]) == list(pred["label"])
    np.testing.assert_allclose(by_onnx["prob_up"], pred["prob_up"], atol=1e-5)


PANEL = """
[study]
name = "panel"
n_trials = 2
seed = 1

[data]
source = "csv"
path = "panel.csv"
id = "site"
time = "t"
target = "kw"
window = 5
horizon = 2
val_fraction = 0.25

[space]
num_layers = [1]
hidden_size = [8]
lr = [0.01]
batch_size = [16]

[train]
max_epochs = 3
device = "cpu"

[pruner]
kind = "none"
"""


@pytest.mark.parametrize("fresh_storage_url", ["sqlite"], indirect=True)
def test_a_panel_forecast_comes_back_in_each_series_own_units(
    tmp_path: Path, fresh_storage_url: str
) -> None:
    url = fresh_storage_url
    _panel(tmp_path / "panel.csv")
    (tmp_path / "panel.toml").write_text(PANEL, encoding="utf-8")
    create_here(tmp_path / "panel.toml", url)
    proc = depthsearch_cmd("launch", "--study", "panel", "--storage", url, "--cpu-workers", "2")
    assert proc.returncode == 0, proc.stderr
    assert "val_loss=" in cli("status", "--study", "panel", "--storage", url)
    # Scaled per series, the panel's errors have no one unit: no val_rmse.
    assert "val_rmse" not in proc.stderr
    cli("report", "--study", "panel", "--storage", url, "-o", str(tmp_path / "report"))
    cli("export", "--study", "panel", "--storage", url, "--retrain", "-o", str(tmp_path / "m"))
    cli(
        "predict",
        str(tmp_path / "m"),
        "--csv",
        str(tmp_path / "panel.csv"),
        "-o",
        str(tmp_path / "f.csv"),
    )
    pred = pd.read_csv(tmp_path / "f.csv")
    assert list(pred.columns) == ["site", "t", "kw+1", "kw+2"]
    assert pred.groupby("site").size().to_dict() == {"big": 56, "small": 56}
    assert pred.groupby("site")["t"].min().to_dict() == {"big": 4, "small": 4}
    means = pred.groupby("site")["kw+1"].mean()
    # Each in its own units: about 2,000 kW and about 1 kW.
    assert 1000 < means["big"] < 3000 and -1 < means["small"] < 3


@pytest.mark.parametrize("fresh_storage_url", ["sqlite"], indirect=True)
def test_regression_from_npz_through_every_command(tmp_path: Path, fresh_storage_url: str) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((60, 10, 1))
    lengths = rng.integers(4, 11, size=60)
    y = np.array([x[i, : lengths[i], 0].sum() for i in range(60)]) * 50.0 + 500.0
    np.savez(tmp_path / "d.npz", X=x, y=y, lengths=lengths)
    (tmp_path / "r.toml").write_text(
        PANEL.replace('name = "panel"', 'name = "reg"')
        .replace(
            'source = "csv"\npath = "panel.csv"\nid = "site"\ntime = "t"\ntarget = "kw"\n'
            "window = 5\nhorizon = 2\n",
            'source = "npz"\npath = "d.npz"\n',
        )
        .replace("[data]", '[task]\nkind = "regress"\n\n[data]'),
        encoding="utf-8",
    )
    url = fresh_storage_url
    create_here(tmp_path / "r.toml", url)
    proc = depthsearch_cmd("launch", "--study", "reg", "--storage", url, "--cpu-workers", "2")
    assert proc.returncode == 0, proc.stderr
    assert "val_rmse=" in proc.stderr  # in the target's units
    assert "val_rmse=" in cli("status", "--study", "reg", "--storage", url)
    assert "user_attrs_epochs_trained" in cli("trials", "--study", "reg", "--storage", url)
    cli("report", "--study", "reg", "--storage", url, "-o", str(tmp_path / "report"))
    cli("export", "--study", "reg", "--storage", url, "--retrain", "-o", str(tmp_path / "m"))
    np.savez(tmp_path / "new.npz", X=x[:7], lengths=lengths[:7])
    cli(
        "predict",
        str(tmp_path / "m"),
        "--data",
        str(tmp_path / "new.npz"),
        "-o",
        str(tmp_path / "p.csv"),
    )
    pred = pd.read_csv(tmp_path / "p.csv")
    assert list(pred.columns) == ["sequence", "y"] and len(pred) == 7
    assert 0 < pred["y"].mean() < 1500  # in the target's units (about 500), not scaled ones


def test_bad_data_stops_run_with_one_line_and_writes_nothing(tmp_path: Path) -> None:
    for i, (spec, kind, message) in enumerate(_bad_inputs(tmp_path)):
        doc = {
            "study": {"name": f"bad{i}", "n_trials": 1},
            "task": {"kind": kind},
            "data": {
                k: (list(v) if isinstance(v, tuple) else v)
                for k, v in {
                    "source": spec.source,
                    "path": spec.path,
                    "id": spec.id,
                    "time": spec.time,
                    "target": spec.target if spec.source != "npz" else None,
                    "features": spec.features if spec.source != "npz" else None,
                }.items()
                if v is not None
            },
        }
        study_file = tmp_path / f"bad{i}.toml"
        study_file.write_text(
            "".join(
                f"[{table}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in body.items())
                for table, body in doc.items()
            ),
            encoding="utf-8",
        )
        db = tmp_path / f"bad{i}.db"
        result = CliRunner().invoke(main, ["run", str(study_file), "--storage", f"sqlite:///{db}"])
        assert result.exit_code == 2, result.output
        assert message in result.output and not db.exists(), result.output


def test_run_study_takes_the_data_itself_and_records_its_hash(tmp_path: Path) -> None:
    from depthsearch import Predictor, run_study
    from depthsearch.studies import read_spec

    frame = _sequences(tmp_path / "unused.csv", n=24)
    doc = {
        "study": {"name": "inline", "n_trials": 1, "seed": 1},
        "task": {"kind": "classify"},
        "data": {"id": "seq", "time": "step", "target": "label", "features": ["x"]},
        "space": {"num_layers": [1], "hidden_size": [8], "batch_size": [8]},
        "train": {"max_epochs": 2, "device": "cpu"},
        "pruner": {"kind": "none"},
    }
    url = f"sqlite:///{tmp_path / 'db' / 'inline.db'}"
    (tmp_path / "db").mkdir()
    run_study(doc, storage=url, data=frame)
    written = tmp_path / "db" / "inline.data.parquet"
    stored = read_spec("inline", url).data
    assert stored.source == "parquet" and stored.path == str(written)
    assert stored.sha256 is not None and len(stored.sha256) == 64
    pd.testing.assert_frame_equal(pd.read_parquet(written), frame)
    cli("export", "--study", "inline", "--storage", url, "--retrain", "-o", str(tmp_path / "m"))
    pred = Predictor.load(tmp_path / "m").predict(frame.drop(columns=["label"]))
    assert len(pred) == 24 and set(pred["label"]) <= {"up", "down"}
    x = np.zeros((10, 5, 1))
    run_study(
        {
            **doc,
            "study": {"name": "arrays", "n_trials": 1},
            "task": {"kind": "regress"},
            "data": {},
        },
        storage=url,
        data={"X": x + np.arange(10)[:, None, None], "y": np.arange(10.0)},
    )
    assert read_spec("arrays", url).data.source == "npz"
    assert (tmp_path / "db" / "arrays.data.npz").is_file()


def test_accuracy_can_be_an_objective_and_is_maximised(tmp_path: Path) -> None:
    _sequences(tmp_path / "seqs.csv", n=24)
    text = CLASSIFY.format(name="front").replace(
        "seed = 2\n", 'seed = 2\nobjectives = ["val_loss", "val_accuracy"]\n'
    )
    text = text.replace("n_trials = 4", "n_trials = 2").replace("max_epochs = 8", "max_epochs = 2")
    (tmp_path / "front.toml").write_text(text, encoding="utf-8")
    url = f"sqlite:///{tmp_path / 'f.db'}"
    cli("run", str(tmp_path / "front.toml"), "--storage", url)
    study = optuna.load_study(study_name="front", storage=url)
    assert study.directions == [
        optuna.study.StudyDirection.MINIMIZE,
        optuna.study.StudyDirection.MAXIMIZE,
    ]
    for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
        assert t.values[1] == t.user_attrs["val_accuracy"]
    cli("export", "--study", "front", "--storage", url, "-o", str(tmp_path / "b.json"))
    doc = json.loads((tmp_path / "b.json").read_text())
    assert set(doc["metrics"]["objectives"]) == {"val_loss", "val_accuracy"}
    assert doc["task"] == {"kind": "classify", "classes": ["down", "up"]}
