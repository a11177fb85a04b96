"""Series -> windows -> tensors on the training device.

A window is the last ``window`` steps of the input columns; its target is the next ``horizon``
values of the target column. The split is chronological and the scaling is fitted on the
training part only, so no validation value leaks into training.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from numpy.typing import NDArray
from torch import Tensor

from depthsearch.errors import DataError
from depthsearch.learn.scaling import (
    Scaler,
    SeriesStats,
    column_stats,
    fit_scaler,
    training_rows,
)
from depthsearch.learn.sources import groups, read_table
from depthsearch.spec import DataSpec

__all__ = [
    "Scaler",
    "SeriesStats",
    "Windows",
    "column_stats",
    "input_windows",
    "load_frame",
    "make_windows",
    "prepare",
    "synthetic_series",
]


@dataclasses.dataclass(frozen=True)
class Windows:
    """Training and validation sequences, already on their device.

    Shapes: ``x_*: (n, steps, features)``; ``y_*: (n, horizon)`` for a forecast, ``(n, k)``
    for a regression, ``(n,)`` class indices (int64) for a classification. Sequences of
    different lengths are padded after their last step, and ``len_*`` (int64 on the CPU, as
    packing wants them) holds each one's length; None when every sequence is whole.
    """

    x_train: Tensor
    y_train: Tensor
    x_val: Tensor
    y_val: Tensor
    scaler: Scaler
    len_train: Tensor | None = None
    len_val: Tensor | None = None
    kind: str = "forecast"
    #: A classification's labels, by class index.
    classes: tuple[Any, ...] = ()
    #: The held-out test samples (``[data] test_fraction``), as the validation ones; None
    #: without a test part. Training, pruning and picking never read them.
    x_test: Tensor | None = None
    y_test: Tensor | None = None
    len_test: Tensor | None = None
    #: A forecast's naive predictions (repeat the last value; seasonal naive), by name: on
    #: the validation and the test samples, in the scaled target's units, on the CPU.
    naive: dict[str, tuple[Tensor, Tensor | None]] = dataclasses.field(default_factory=dict)

    @property
    def input_size(self) -> int:
        return int(self.x_train.shape[-1])

    @property
    def unit_scale(self) -> tuple[float, ...] | None:
        """The target's standard deviation (one per output, or one for all), which turns a
        scaled error into the target's units; None for a classification, and for a panel
        scaled per series (whose series have units of their own)."""
        if self.kind == "classify" or self.scaler.series:
            return None
        return self.scaler.output_std or (self.scaler.target_std,)

    @property
    def output_size(self) -> int:
        if self.kind == "classify":
            return len(self.classes)
        return int(self.y_train.shape[-1])

    @property
    def has_test(self) -> bool:
        return self.x_test is not None and self.y_test is not None

    def to(self, device: torch.device | str) -> Windows:
        return dataclasses.replace(
            self,
            x_train=self.x_train.to(device),
            y_train=self.y_train.to(device),
            x_val=self.x_val.to(device),
            y_val=self.y_val.to(device),
            x_test=None if self.x_test is None else self.x_test.to(device),
            y_test=None if self.y_test is None else self.y_test.to(device),
        )


def synthetic_series(length: int, noise: float, seed: int) -> pd.DataFrame:
    """Two seasonalities, a slow trend and Gaussian noise, as a one-column frame ``y``."""
    rng = np.random.default_rng(seed)
    t = np.arange(length, dtype=np.float64)
    y = (
        np.sin(2 * math.pi * t / 24.0)
        + 0.5 * np.sin(2 * math.pi * t / 168.0 + 0.3)
        + 0.002 * t
        + noise * rng.standard_normal(length)
    )
    return pd.DataFrame({"y": y})


def load_frame(
    spec: DataSpec, *, seed: int = 0, columns: Sequence[str] | None = None, timed: bool = False
) -> pd.DataFrame:
    """One series: the columns the spec needs (inputs and target), numeric and complete.

    ``columns`` reads only those instead: predicting needs the inputs, not the target.
    ``timed``: the frame's index is the time column (``[data] time``, else the table's first
    column that is not read, such as ``month`` or ``timestamp``), where it has one. Rows are
    in time order; missing values are treated by ``[data] missing``.

    Raises:
        DataError: unreadable file, missing or non-numeric column, missing values.
    """
    if spec.source == "synthetic":
        return synthetic_series(spec.length, spec.noise, seed)
    frame = read_table(spec)
    needed = list(dict.fromkeys(columns or [*spec.input_columns, spec.target]))
    (group,) = groups(frame, dataclasses.replace(spec, id=None), needed, where=spec.path)
    result = pd.DataFrame(group.values, columns=needed)
    if spec.time is not None:
        result.index = pd.Index(group.times, name=spec.time)
        return result
    others = [c for c in frame.columns if c not in needed and c != spec.target]
    if timed and others:
        result.index = pd.Index(frame[others[0]].to_numpy()[group.times], name=str(others[0]))
    return result


def input_windows(inputs: NDArray[np.float64], window: int, starts: range | None = None) -> Tensor:
    """``inputs: (rows, features)`` -> float32 ``(n, window, features)``, one per start row.

    Every start row (``rows - window + 1`` windows) when ``starts`` is None.
    """
    x_all = np.lib.stride_tricks.sliding_window_view(inputs, window, axis=0)  # (n, F, W)
    if starts is not None:  # a slice stays a view: the one copy made is the float32 result
        x_all = x_all[starts.start : starts.stop : starts.step]
    return torch.from_numpy(np.ascontiguousarray(x_all.transpose(0, 2, 1), dtype=np.float32))


def _windows(
    inputs: NDArray[np.float64],
    target: NDArray[np.float64],
    window: int,
    horizon: int,
    starts: range,
    *,
    relative: bool = False,
) -> tuple[Tensor, Tensor]:
    """Windows of ``inputs`` starting at ``starts`` and their next ``horizon`` target values
    (less the window's last value, ``relative``: a forecast of changes)."""
    y_all = np.lib.stride_tricks.sliding_window_view(target, horizon)  # (n, H)
    idx = np.asarray(starts, dtype=np.int64)
    y = y_all[idx + window]
    if relative:
        y = y - target[idx + window - 1][:, None]
    y = np.ascontiguousarray(y, dtype=np.float32)
    return input_windows(inputs, window, starts), torch.from_numpy(y)


def _naive(
    target: NDArray[np.float64],
    window: int,
    horizon: int,
    starts: range,
    *,
    season: int,
    relative: bool,
) -> dict[str, Tensor]:
    """The naive forecasts of the windows at ``starts``, in the scaled target's units: the
    window's last value repeated, and with ``season`` the value one season before each
    step (the window's last season, repeated)."""
    idx = np.asarray(starts, dtype=np.int64)
    last = idx + window - 1
    anchor = target[last][:, None] if relative else 0.0
    out = {"last value": np.repeat(target[last][:, None], horizon, axis=1) - anchor}
    if season:
        steps = np.arange(1, horizon + 1)
        back = season * np.ceil(steps / season).astype(np.int64)
        out[f"seasonal naive ({season})"] = target[last[:, None] + steps - back] - anchor
    return {k: torch.from_numpy(np.asarray(v, dtype=np.float32)) for k, v in out.items()}


@dataclasses.dataclass(frozen=True)
class SeriesCut:
    """Where one series' parts lie: training windows start at ``first``; the training rows
    end at ``cut``, the validation rows at ``end`` (the test rows follow)."""

    first: int
    cut: int
    end: int
    n_train: int
    n_val: int
    n_test: int


def series_cut(rows: int, spec: DataSpec) -> SeriesCut | None:
    """The parts of a series of ``rows`` rows: the last ``test_fraction`` of the rows are
    held out first, the last ``val_fraction`` of the rest validates. None when a part would
    hold no window."""
    w, h = spec.window, spec.horizon
    first = 1 if spec.difference else 0  # a differenced series has no change at row 0
    test_rows = max(h, round(rows * spec.test_fraction)) if spec.test_fraction else 0
    end = rows - test_rows
    cut = round(end * (1.0 - spec.val_fraction))
    n_train = cut - w - h + 1 - first
    n_val = end - cut - h + 1
    n_test = rows - end - h + 1 if test_rows else 0
    if n_train < 1 or n_val < 1 or (test_rows and n_test < 1):
        return None
    return SeriesCut(first, cut, end, n_train, n_val, n_test)


def cut_series(
    inputs: NDArray[np.float64], target: NDArray[np.float64], spec: DataSpec, cut: SeriesCut
) -> tuple[list[Tensor], dict[str, list[Tensor]]]:
    """One series' scaled rows -> ``[x_train, y_train, x_val, y_val(, x_test, y_test)]`` and
    the naive forecasts of its validation (and test) windows."""
    w, h, rel = spec.window, spec.horizon, spec.difference
    parts = [
        range(cut.first, cut.first + cut.n_train),
        range(cut.cut - w, cut.cut - w + cut.n_val),
    ]
    if cut.n_test:
        parts.append(range(cut.end - w, cut.end - w + cut.n_test))
    out: list[Tensor] = []
    naive: dict[str, list[Tensor]] = {}
    for i, starts in enumerate(parts):
        out.extend(_windows(inputs, target, w, h, starts, relative=rel))
        if i:
            for name, pred in _naive(
                target, w, h, starts, season=spec.season, relative=rel
            ).items():
                naive.setdefault(name, []).append(pred)
    return out, naive


def _too_few(spec: DataSpec) -> str:
    return (
        f"window={spec.window}, horizon={spec.horizon}, val_fraction={spec.val_fraction}, "
        f"test_fraction={spec.test_fraction}"
    )


def naive_pairs(
    naive: dict[str, list[Tensor]], has_test: bool
) -> dict[str, tuple[Tensor, Tensor | None]]:
    """Validation and test parts of naive forecasts collected series by series (each list
    alternates: validation, test, validation, test ...; validation only without a test)."""
    step = 2 if has_test else 1
    return {
        name: (
            torch.cat(parts[0::step]),
            torch.cat(parts[1::step]) if has_test else None,
        )
        for name, parts in naive.items()
    }


def make_windows(frame: pd.DataFrame, spec: DataSpec) -> Windows:
    """Cuts a frame into scaled training, validation and test windows (on the CPU).

    The last ``test_fraction`` of the rows are held out; of the rest, the first
    ``1 - val_fraction`` are the training part. A validation or test window's targets all lie
    after the part before it, though its inputs may reach back into it. The scaling is fitted
    on the training rows alone.
    """
    rows = len(frame)
    w = spec.window
    cut = series_cut(rows, spec)
    if cut is None:
        raise DataError(
            f"{rows} rows are too few for {_too_few(spec)}: each part needs at least "
            "one window; use a smaller window or more data"
        )
    _check_fits(rows - w + 1, w, len(spec.input_columns), rows)
    values = frame[list(spec.input_columns)].to_numpy(dtype=np.float64)
    target_raw = frame[spec.target].to_numpy(dtype=np.float64)
    scaler = fit_scaler(training_rows(values, target_raw, cut.cut, spec), spec)
    try:
        parts, naive = cut_series(
            scaler.inputs(values), scaler.target_values(target_raw), spec, cut
        )
    except MemoryError as e:  # what the estimate below did not foresee
        raise DataError(f"the windows of window={w} over {rows} rows do not fit: {e}") from e
    test = parts[4:6] if cut.n_test else [None, None]
    return Windows(
        parts[0],
        parts[1],
        parts[2],
        parts[3],
        scaler,
        x_test=test[0],
        y_test=test[1],
        naive=naive_pairs(naive, bool(cut.n_test)),
    )


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.3g} {unit}"
        n /= 1024
    raise AssertionError


def _check_fits(windows: int, window: int, features: int, rows: int) -> None:
    """Refuses windows that this machine's memory cannot hold (float32, one copy each)."""
    needed = windows * window * features * 4
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not a POSIX system: no estimate
        return
    if needed > total:
        raise DataError(
            f"window={window} over {rows} rows makes {windows} windows of {window} x "
            f"{features} values: {_size(needed)} in memory, more than this machine's "
            f"{_size(total)}; use a smaller window or fewer rows"
        )


def prepare(
    spec: DataSpec, device: torch.device | str = "cpu", *, seed: int = 0, kind: str = "forecast"
) -> Windows:
    """Loads the spec's data and returns its training and validation samples on ``device``.

    ``kind`` (``[task] kind``): ``forecast`` cuts windows from one series, or within each
    series of a panel (``[data] id``); ``classify`` and ``regress`` take one sample per
    sequence (per id, or per row of an NPZ's ``X``); ``seed`` draws their split.
    """
    if spec.source != "npz" and kind == "forecast" and spec.id is None:
        return make_windows(load_frame(spec, seed=seed), spec).to(device)
    from depthsearch.learn import tasks  # panels and sequences, built on this module

    if spec.source == "npz":
        return tasks.from_npz(spec, kind, seed).to(device)
    if kind != "forecast":
        return tasks.from_table(spec, kind, seed).to(device)
    return tasks.panel_windows(spec).to(device)
