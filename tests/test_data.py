"""Windows, the chronological split, train-only scaling, and bad CSVs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from depthsearch.errors import DataError
from depthsearch.learn.data import prepare
from depthsearch.learn.read import read
from depthsearch.spec import DataSpec, file_sha256

from .conftest import REPO


def csv_spec(path: Path, **kw: object) -> DataSpec:
    base: dict[str, object] = {
        "source": "csv",
        "path": str(path),
        "target": "y",
        "window": 3,
        "horizon": 2,
        "test_fraction": 0.0,  # the split's own arithmetic; the test part has its own tests
    }
    base.update(kw)
    return DataSpec(**base)  # type: ignore[arg-type]


def test_windows_are_chronological_and_aligned(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    pd.DataFrame({"y": np.arange(20, dtype=float)}).to_csv(path, index=False)
    spec = csv_spec(path, val_fraction=0.25)
    w = prepare(spec)
    s = w.scaler
    x_tr = w.x_train.numpy()[..., 0] * s.std[0] + s.mean[0]
    y_tr = w.y_train.numpy() * s.target_std + s.target_mean
    x_va = w.x_val.numpy()[..., 0] * s.std[0] + s.mean[0]
    y_va = w.y_val.numpy() * s.target_std + s.target_mean
    # 20 rows, cut at 15: train windows end their targets by row 14; val targets start at 15.
    assert w.x_train.shape == (11, 3, 1) and w.y_train.shape == (11, 2)
    np.testing.assert_allclose(x_tr[0], [0, 1, 2], atol=1e-5)
    np.testing.assert_allclose(y_tr[0], [3, 4], atol=1e-5)
    assert y_tr.max() == pytest.approx(14, abs=1e-4)
    assert w.x_val.shape == (4, 3, 1)
    np.testing.assert_allclose(x_va[0], [12, 13, 14], atol=1e-4)
    np.testing.assert_allclose(y_va[0], [15, 16], atol=1e-4)
    np.testing.assert_allclose(y_va[-1], [18, 19], atol=1e-4)
    # Scaling is fitted on the 15 training rows only.
    assert s.mean[0] == pytest.approx(7.0) and s.target_mean == pytest.approx(7.0)


def test_features_and_odd_column_names(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    pd.DataFrame(
        {"demand (MW)": np.sin(np.arange(60.0)), "temp °C": np.arange(60.0), "other": 1.0}
    ).to_csv(path, index=False)
    spec = csv_spec(path, target="demand (MW)", features=("temp °C", "demand (MW)"))
    w = prepare(spec)
    assert w.input_size == 2 and w.output_size == 2
    assert w.scaler.columns == ("temp °C", "demand (MW)")


def test_shipped_taylor_series_loads() -> None:
    path = REPO / "studies" / "data" / "taylor.csv"
    spec = DataSpec("csv", str(path), "demand (MW)", (), 48, 4, 0.2, sha256=file_sha256(path))
    w = prepare(spec)
    assert len(read(spec, "forecast").values) == 4032 and w.x_train.shape[1:] == (48, 1)


def test_synthetic_series_is_seeded() -> None:
    spec = DataSpec(length=300, window=10)
    a, b = prepare(spec, seed=1), prepare(spec, seed=1)
    assert bool((a.x_train == b.x_train).all())
    assert not bool((prepare(spec, seed=2).x_train == a.x_train).all())


@pytest.mark.parametrize(
    ("content", "kw", "message"),
    [
        ("x\n1\n2\n", {}, "no column(s) ['y'] (the file has columns ['x'])"),
        ("Y\n1\n2\n", {}, "no column(s) ['y']; did you mean 'Y'? (the file has columns ['Y'])"),
        ("y\n1\nabc\n3\n", {}, "column 'y' must be numeric, but row 3 holds 'abc'"),
        ("y,z\n1,1\n,2\n3,3\n", {}, "column 'y' has 1 missing value(s), the first on row 3"),
        ("y\n1\n2\n3\n4\n", {"window": 3}, "too few for window=3"),
        ("", {}, "cannot read"),
        # pandas would train on the first "y" and call the second "y.1".
        ("y,x,y\n1,2,3\n4,5,6\n", {}, "column name(s) ['y'] appear more than once"),
    ],
)
def test_bad_csv_gives_one_line_error(
    tmp_path: Path, content: str, kw: dict[str, object], message: str
) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content, encoding="utf-8")
    spec = csv_spec(path, **kw)
    with pytest.raises(DataError) as info:
        prepare(spec)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_windows_too_big_for_this_machine_are_one_line_before_any_allocation() -> None:
    from depthsearch.spec import DataSpec

    # 3.9 million windows of 100,000 steps: over a terabyte, on any machine these tests run on.
    spec = DataSpec(source="synthetic", length=4_000_000, window=100_000, horizon=1)
    with pytest.raises(DataError, match="in memory, more than this machine's") as info:
        prepare(spec)
    assert "\n" not in str(info.value) and "window=100000 over 4000000 rows" in str(info.value)
