"""The readers under fire (#37 item 11): seeded, generated tables and arrays for every task
kind and source, with ids of mixed forms and types, missing values in every column, dates,
unsorted and repeated times, empty ids, huge and tiny values and unicode. Each case either
becomes samples from the data as given (every id and every row accounted for) or is refused
with one line (a DataError, which the CLI turns into exit 2); never anything else.

``DEPTHSEARCH_FUZZ_EXAMPLES`` sets the cases per source and kind (default 30: 270 a run).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from depthsearch.errors import DataError
from depthsearch.learn.data import prepare
from depthsearch.learn.read import read
from depthsearch.spec import DataSpec

EXAMPLES = int(os.environ.get("DEPTHSEARCH_FUZZ_EXAMPLES", "30"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,  # the same cases every run: seeded
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

ID_TEXT = st.sampled_from(["01", "1", "0012", "12", "NA", "nan", "None", "é", "s 1", "-3", "a"])
VALUE = st.floats(-5, 5)
#: What may spoil a table's or an array's numbers: nothing (most often), missing values, or
#: one value that is huge, tiny or infinite.
SPOIL = st.sampled_from(["none", "none", "none", "nan", "nan", "huge", "tiny", "inf"])
HOSTILE = {"huge": 1e300, "tiny": 1e-300, "inf": math.inf}
LABEL = st.sampled_from(["cat", "dog", "NA", "01", "1", "null", "=1+1", "ünï"])


@st.composite
def tables(draw: Any) -> pd.DataFrame:
    """A long-format table: ids (text, or numbers, or both), times (numbers, dates, or none;
    unsorted, sometimes repeated), a value and a feature, and a label per row."""
    n_ids = draw(st.integers(0, 5))
    typed = draw(st.sampled_from(["text", "int", "mixed"]))
    ids = draw(st.lists(ID_TEXT, min_size=n_ids, max_size=n_ids, unique=True))
    rows: list[dict[str, Any]] = []
    for k, key in enumerate(ids):
        shown: Any = key
        if typed == "int" or (typed == "mixed" and k % 2):
            shown = k * 7 - 3
        length = draw(st.integers(0, 14))
        label = draw(LABEL)
        for step in range(length):
            rows.append(
                {
                    "id": shown,
                    "t": step,
                    "y": draw(VALUE),
                    "x": draw(VALUE),
                    "label": label if draw(st.integers(0, 20)) else draw(LABEL),
                }
            )
    frame = pd.DataFrame(rows, columns=["id", "t", "y", "x", "label"])
    _spoil(frame, ["y", "x"], draw)
    if len(frame) and draw(st.booleans()):
        frame = frame.sample(frac=1.0, random_state=draw(st.integers(0, 9)))
    if len(frame) and draw(st.integers(0, 4)) == 0:
        frame.loc[frame.index[0], "t"] = frame["t"].iloc[-1]  # a repeated time, maybe
    if draw(st.integers(0, 3)) == 0:
        frame["t"] = [f"2024-01-{int(t) + 1:02d}" for t in frame["t"]]
    return frame


def _spoil(frame: pd.DataFrame, columns: list[str], draw: Any) -> None:
    """Missing values here and there, or one hostile value, in ``columns``."""
    how = draw(SPOIL)
    if not len(frame) or how == "none":
        return
    if how == "nan":
        for column in columns:
            mask = draw(st.lists(st.booleans(), min_size=len(frame), max_size=len(frame)))
            frame.loc[np.asarray(mask) & (np.arange(len(frame)) % 3 == 0), column] = math.nan
        return
    row = draw(st.integers(0, len(frame) - 1))
    frame.loc[frame.index[row], draw(st.sampled_from(columns))] = HOSTILE[how]


def _write(frame: pd.DataFrame, folder: Path, source: str) -> Path | None:
    path = folder / f"data.{source}"
    if source == "csv":
        frame.to_csv(path, index=False)
        return path
    try:
        frame.to_parquet(path, index=False)
    except (TypeError, ValueError, OverflowError) as e:  # pyarrow: mixed types in a column
        assert "id" in str(e) or "label" in str(e) or "Conversion" in type(e).__name__ or e
        return None
    return path


def _spec(path: Path, source: str, kind: str, missing: str) -> DataSpec:
    common: dict[str, Any] = {
        "source": source,
        "path": str(path),
        "missing": missing,
        "val_fraction": 0.3,
        "test_fraction": 0.0,
    }
    if source == "npz":
        return DataSpec(**common)
    if kind == "forecast":
        return DataSpec(
            **common, id="id", time="t", target="y", features=("x", "y"), window=2, horizon=1
        )
    target = "label" if kind == "classify" else "y"
    return DataSpec(**common, id="id", time="t", target=target, features=("x",))


def _kept_rows(values: pd.DataFrame, missing: str) -> int | None:
    """The rows one id keeps under ``missing`` (None: it must be refused)."""
    gaps = values.isna().to_numpy()
    if not gaps.any():
        return len(values)
    if missing == "error":
        return None
    if missing == "drop":
        kept = int((~gaps.any(axis=1)).sum())
    elif missing == "interpolate":
        kept = len(values) if not gaps.all(axis=0).any() else 0
    else:  # ffill: from the first row at which every column has had a value
        seen = np.maximum.accumulate(~gaps, axis=0).all(axis=1)
        kept = int(seen.sum())
    return kept or None


def _check_accounted(frame: pd.DataFrame, spec: DataSpec, kind: str) -> None:
    """Every id of the file, as its text, and the rows the missing rule keeps."""
    seqs = read(spec, kind)
    texts = frame["id"].astype(str)
    assert sorted(seqs.keys) == sorted(set(texts)), (seqs.keys, set(texts))
    columns = ["x", "y"] if kind != "classify" else ["x"]
    for i, key in enumerate(seqs.keys):
        values = frame.loc[texts == key, columns].astype(float)
        assert seqs.lengths[i] == _kept_rows(values, spec.missing), key
    assert np.isfinite(seqs.values).all()


def _samples_are_sound(frame: pd.DataFrame, spec: DataSpec, kind: str) -> None:
    try:
        w = prepare(spec, kind=kind, seed=1)
    except DataError as e:
        text = str(e)
        assert text and "\n" not in text and "Traceback" not in text, text
        return
    for part in (w.x_train, w.x_val, w.y_train, w.y_val):
        assert part.numel() and bool(part.float().isfinite().all())
    if kind == "classify":
        assert len(w.classes) >= 2 and int(w.y_train.max()) < len(w.classes)
    if spec.source != "npz":
        _check_accounted(frame, spec, kind)


@pytest.mark.parametrize("kind", ["forecast", "classify", "regress"])
@pytest.mark.parametrize("source", ["csv", "parquet"])
@FUZZ
@given(frame=tables(), missing=st.sampled_from(["error", "ffill", "interpolate", "drop"]))
def test_a_generated_table_trains_as_given_or_is_refused_in_one_line(
    tmp_path_factory: pytest.TempPathFactory,
    source: str,
    kind: str,
    frame: pd.DataFrame,
    missing: str,
) -> None:
    folder = tmp_path_factory.mktemp("fuzz")
    path = _write(frame, folder, source)
    if path is None:
        return  # pyarrow refused the frame itself: not the reader's case
    _samples_are_sound(frame, _spec(path, source, kind, missing), kind)


@st.composite
def arrays(draw: Any) -> dict[str, np.ndarray]:
    n, t, f = draw(st.integers(1, 8)), draw(st.integers(1, 6)), draw(st.integers(1, 3))
    flat = draw(st.lists(VALUE, min_size=n * t * f, max_size=n * t * f))
    x = pd.DataFrame({"x": flat})
    _spoil(x, ["x"], draw)
    out: dict[str, np.ndarray] = {"X": x["x"].to_numpy().reshape(n, t, f)}
    y_kind = draw(st.sampled_from(["float", "int", "text", "2d", "bad", "nan"]))
    if y_kind == "float":
        out["y"] = np.asarray(draw(st.lists(VALUE, min_size=n, max_size=n)))
    elif y_kind == "int":
        out["y"] = np.arange(n) % 3
    elif y_kind == "text":
        out["y"] = np.asarray(draw(st.lists(LABEL, min_size=n, max_size=n)))
    elif y_kind == "nan":
        out["y"] = np.where(np.arange(n) == 0, math.nan, 1.0)
    elif y_kind == "2d":
        out["y"] = np.arange(2 * n, dtype=np.float64).reshape(n, 2)
    else:
        out["y"] = np.zeros(n + 1)
    if draw(st.booleans()):
        at_most = st.integers(1, t) if draw(st.integers(0, 4)) else st.integers(0, t + 1)
        out["lengths"] = np.asarray(draw(st.lists(at_most, min_size=n, max_size=n)))
    if draw(st.booleans()):
        out["ids"] = np.asarray(draw(st.lists(ID_TEXT, min_size=n, max_size=n)))
    return out


@pytest.mark.parametrize("kind", ["forecast", "classify", "regress"])
@FUZZ
@given(data=arrays(), missing=st.sampled_from(["error", "ffill", "interpolate", "drop"]))
def test_generated_arrays_train_as_given_or_are_refused_in_one_line(
    tmp_path_factory: pytest.TempPathFactory, kind: str, data: dict[str, np.ndarray], missing: str
) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "data.npz"
    np.savez(path, **data)  # type: ignore[arg-type]
    spec = _spec(path, "npz", kind, missing)
    _samples_are_sound(pd.DataFrame(), spec, kind)
    try:
        seqs = read(spec, kind)
    except DataError:
        return
    assert len(seqs) == len(data["X"])
    if "ids" in data:
        assert seqs.keys == tuple(str(k) for k in data["ids"])
