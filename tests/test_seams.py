"""Hostile input at the seams (#37): ids and labels keep their text, values that overflow,
sequences left empty by the missing-value rule, NPZ members that are not arrays, row numbers
that mean the same in every format, and predictions that check before they allocate."""

from __future__ import annotations

import io
import json
import resource
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from depthsearch.errors import DataError, InputError
from depthsearch.learn.data import prepare
from depthsearch.learn.model import ModelConfig, build_model
from depthsearch.learn.predictor import Predictor
from depthsearch.learn.read import read
from depthsearch.learn.saved import save_model
from depthsearch.spec import DataSpec

from .conftest import depthsearch_cmd

# --- ids and labels are text ----------------------------------------------------------------


def _meters(rows: int = 40) -> pd.DataFrame:
    """Meters '01' (about 2 kW), '1' (about 2,000 kW) and '0012' (about 5 kW)."""
    t = np.arange(rows)
    parts = [
        pd.DataFrame({"meter": m, "hour": t, "kw": level * (1.0 + 0.1 * np.sin(t / 3.0 + k))})
        for k, (m, level) in enumerate((("01", 2.0), ("1", 2000.0), ("0012", 5.0)))
    ]
    return pd.concat(parts, ignore_index=True)


def _meter_spec(path: Path, source: str = "csv") -> DataSpec:
    return DataSpec(
        source=source,
        path=str(path),
        id="meter",
        time="hour",
        target="kw",
        window=4,
        horizon=1,
        test_fraction=0.0,
    )


@pytest.mark.parametrize("source", ["csv", "parquet"])
def test_ids_01_and_1_are_two_series_each_scaled_on_its_own(tmp_path: Path, source: str) -> None:
    frame = _meters()
    path = tmp_path / f"meters.{source}"
    if source == "csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    seqs = read(_meter_spec(path, source), "forecast")
    assert sorted(seqs.keys) == ["0012", "01", "1"] and seqs.lengths.tolist() == [40, 40, 40]
    w = prepare(_meter_spec(path, source))
    stats = w.scaler.series
    assert set(stats) == {"01", "1", "0012"}
    assert stats["01"].target_mean == pytest.approx(2.0, rel=0.1)
    assert stats["1"].target_mean == pytest.approx(2000.0, rel=0.1)
    assert stats["0012"].target_mean == pytest.approx(5.0, rel=0.1)
    # 3 series of 40 rows cut at 32: 32 - 4 - 1 + 1 = 28 training windows each, none across two.
    assert w.x_train.shape == (84, 4, 1)


def test_labels_and_ids_named_na_or_null_are_values(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = []
    names = ["cat", "dog", "NA", "None", "null"]
    for i in range(20):
        label = names[i % 5]
        key = "NA" if i == 0 else ("nan" if i == 1 else f"s{i}")
        rows += [(key, s, rng.normal() + i % 5, label) for s in range(6)]
    path = tmp_path / "labels.csv"
    pd.DataFrame(rows, columns=["id", "step", "x", "label"]).to_csv(path, index=False)
    spec = DataSpec(source="csv", path=str(path), id="id", time="step", target="label")
    seqs = read(spec, "classify")
    assert {"NA", "nan"} <= set(seqs.keys) and len(seqs) == 20
    w = prepare(spec, kind="classify")
    assert set(w.classes) == {"cat", "dog", "NA", "None", "null"}
    # A numeric column keeps pandas' reading: "NA" there is a missing value.
    frame = pd.DataFrame({"id": ["a"] * 4, "x": ["1", "NA", "3", "4"], "label": ["u"] * 4})
    frame.to_csv(path, index=False)
    with pytest.raises(
        DataError, match=r"column 'x' has 1 missing value\(s\), the first on row 3"
    ):
        read(DataSpec(source="csv", path=str(path), id="id", target="label"), "classify")


def test_npz_ids_and_text_labels_keep_their_text(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((8, 5, 1))
    path = tmp_path / "a.npz"
    ids = np.array(["007", "7", "a", "b", "c", "d", "e", "f"])
    np.savez(path, X=x, y=np.array(["01", "1"] * 4), ids=ids)
    seqs = read(DataSpec(source="npz", path=str(path)), "classify")
    assert seqs.keys == tuple(ids) and set(seqs.labels or ()) == {"01", "1"}
    np.savez(path, X=x, y=np.zeros(8), ids=np.array(["a", "b", "a", "c", "d", "e", "f", "g"]))
    with pytest.raises(DataError, match=r"ids\[0\] and ids\[2\] are both 'a'"):
        read(DataSpec(source="npz", path=str(path)), "regress")


def test_a_panel_model_predicts_each_id_with_its_own_text(tmp_path: Path) -> None:
    """The scaler of '01' is never the one of '1', and '0012' comes back as '0012'."""
    path = tmp_path / "meters.csv"
    _meters().to_csv(path, index=False)
    data = prepare(_meter_spec(path))
    torch.manual_seed(0)
    model = build_model(ModelConfig(input_size=1, output_size=1, hidden_sizes=(4,)))
    doc = {
        "format": "depthsearch.config/1",
        "model": model.config.to_dict(),
        "data": {"source": "csv", "id": "meter", "time": "hour", "target": "kw", "window": 4},
        "task": {"kind": "forecast"},
    }
    save_model(model, doc, tmp_path / "m", scaler=data.scaler)
    out = Predictor.load(tmp_path / "m").predict(path)
    assert sorted(set(out["meter"])) == ["0012", "01", "1"]
    by_id = out.groupby("meter")["kw+1"].mean()
    # Each back in its own units: '1' is a thousand times '01', whatever the untrained model.
    assert abs(by_id["1"] - 2000.0) < abs(by_id["01"] - 2000.0)
    csv = depthsearch_cmd("predict", str(tmp_path / "m"), "--data", str(path))
    assert csv.returncode == 0, csv.stderr
    first_ids = {line.split(",")[0] for line in csv.stdout.splitlines()[1:]}
    assert first_ids == {"0012", "01", "1"}


# --- values, empty sequences, NPZ members ---------------------------------------------------


@pytest.mark.parametrize("source", ["csv", "parquet"])
def test_a_value_whose_scaling_overflows_is_refused_naming_column_and_row(
    tmp_path: Path, source: str
) -> None:
    y = np.sin(np.arange(60.0))
    y[7] = 1e308
    frame = pd.DataFrame({"y": y})
    path = tmp_path / f"big.{source}"
    frame.to_csv(path, index=False) if source == "csv" else frame.to_parquet(path, index=False)
    spec = DataSpec(source=source, path=str(path), target="y", window=4, horizon=1)
    with pytest.raises(DataError) as info:
        prepare(spec)
    message = str(info.value)
    # Row 9 as a spreadsheet counts it, in both formats: the header is row 1.
    assert "column 'y' row 9 holds 1e+308" in message and "cannot be scaled" in message


@pytest.mark.parametrize("rule", ["ffill", "interpolate", "drop"])
@pytest.mark.parametrize("kind", ["classify", "regress"])
def test_a_sequence_with_every_value_missing_is_one_line(
    tmp_path: Path, rule: str, kind: str
) -> None:
    rows = [
        (f"s{i}", s, np.nan if i == 3 else float(s), i % 2) for i in range(8) for s in range(5)
    ]
    path = tmp_path / "gaps.csv"
    pd.DataFrame(rows, columns=["id", "t", "x", "label"]).to_csv(path, index=False)
    spec = DataSpec(source="csv", path=str(path), id="id", time="t", target="label", missing=rule)
    with pytest.raises(DataError) as info:
        prepare(spec, kind=kind)
    assert "id 's3'" in str(info.value) and "no row is left" in str(info.value)
    assert "\n" not in str(info.value)


def test_an_npz_member_that_is_not_an_array_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("X.npy", b"not an array")
        buffer = io.BytesIO()
        np.save(buffer, np.zeros(3))
        z.writestr("y.npy", buffer.getvalue())
    with pytest.raises(DataError, match=r"member .X. is not a \.npy array"):
        prepare(DataSpec(source="npz", path=str(path)), kind="regress")


def test_csv_and_parquet_name_the_same_row_for_every_error(tmp_path: Path) -> None:
    """One bad value, one missing value, one empty id, one repeated time: the same row
    numbers whatever the format."""
    base = pd.DataFrame({"id": ["a"] * 6, "t": range(6), "y": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]})
    cases = [
        (base.assign(y=["1", "2", "3", "x", "5", "6"]), "row 5"),
        (base.assign(y=base["y"].where(base.index != 2)), "row 4"),
        (base.assign(id=base["id"].where(base.index != 4)), "row 6"),
        (base.assign(t=[0, 1, 2, 3, 3, 5]), "row 6"),
    ]
    for frame, row in cases:
        messages = []
        for source in ("csv", "parquet"):
            path = tmp_path / f"d.{source}"
            if source == "csv":
                frame.to_csv(path, index=False)
            else:
                frame.to_parquet(path, index=False)
            spec = DataSpec(source=source, path=str(path), id="id", time="t", window=2)
            with pytest.raises(DataError) as info:
                prepare(spec)
            messages.append(str(info.value).split(": ", 1)[1])
        assert messages[0] == messages[1] and row in messages[0], messages


# --- predict checks the weights before it builds the model ----------------------------------


def _saved(tmp_path: Path) -> Path:
    path = tmp_path / "s.csv"
    pd.DataFrame({"y": np.sin(np.arange(80.0) / 4.0)}).to_csv(path, index=False)
    data = prepare(DataSpec(source="csv", path=str(path), target="y", window=6, horizon=2))
    model = build_model(ModelConfig(input_size=1, output_size=2, hidden_sizes=(8,)))
    doc = {
        "format": "depthsearch.config/1",
        "model": model.config.to_dict(),
        "data": {"source": "csv", "target": "y", "window": 6, "horizon": 2},
        "task": {"kind": "forecast"},
    }
    return save_model(model, doc, tmp_path / "m", scaler=data.scaler)


@pytest.mark.parametrize("width", [20_000, 1_000_000_000])
def test_predict_refuses_a_config_that_does_not_fit_its_weights_before_allocating(
    tmp_path: Path, width: int
) -> None:
    folder = _saved(tmp_path)
    config = folder / "config.json"
    doc = json.loads(config.read_text())
    doc["model"]["hidden_sizes"] = [width]
    config.write_text(json.dumps(doc))
    with pytest.raises(InputError, match="does not fit"):
        Predictor.load(folder)
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    done = depthsearch_cmd("predict", str(folder), "--data", str(tmp_path / "s.csv"), timeout=120)
    assert done.returncode == 2 and "does not fit" in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    peak_kib = max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    assert peak_kib < 2_000_000  # a 20000-wide LSTM alone is 6.4 GB of float32 weights


# --- what predict writes --------------------------------------------------------------------


def test_predict_csv_cells_that_a_spreadsheet_would_run_are_escaped(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    rows = []
    for i, key in enumerate(["=cmd|' /C calc'!A0", "+1", "-2", "@SUM(A1)", "plain"] * 2):
        rows += [(f"{key}{i}" if i >= 5 else key, s, rng.normal(), i % 2) for s in range(4)]
    path = tmp_path / "s.csv"
    pd.DataFrame(rows, columns=["id", "t", "x", "label"]).to_csv(path, index=False)
    spec = DataSpec(source="csv", path=str(path), id="id", time="t", target="label")
    data = prepare(spec, kind="classify")
    model = build_model(ModelConfig(input_size=1, output_size=2, hidden_sizes=(4,)))
    doc = {
        "format": "depthsearch.config/1",
        "model": model.config.to_dict(),
        "data": {"source": "csv", "id": "id", "time": "t", "target": "label"},
        "task": {"kind": "classify", "classes": ["=0", "1"]},
    }
    save_model(model, doc, tmp_path / "m", scaler=data.scaler)
    done = depthsearch_cmd("predict", str(tmp_path / "m"), "--data", str(path))
    assert done.returncode == 0, done.stderr
    cells = [c for line in done.stdout.splitlines()[1:] for c in line.split(",")[:2]]
    assert not any(c.startswith(("=", "+", "-", "@")) for c in cells), cells
    assert "'=cmd|' /C calc'!A0" in done.stdout.replace('"', "")
    labels = {line.split(",")[1] for line in done.stdout.splitlines()[1:]}
    assert labels <= {"'=0", "1"} and labels, labels
