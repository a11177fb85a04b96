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
from depthsearch.learn.sources import groups, read_table
from depthsearch.spec import DataSpec

__all__ = [
    "Scaler",
    "Windows",
    "input_windows",
    "load_frame",
    "make_windows",
    "prepare",
    "synthetic_series",
]


@dataclasses.dataclass(frozen=True)
class SeriesStats:
    """One series' own scale (a panel scaled ``per-series``): its inputs' and target's."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    target_mean: float
    target_std: float


@dataclasses.dataclass(frozen=True)
class Scaler:
    """Standardisation fitted on the training rows: ``(x - mean) / std`` per column.

    A panel scaled ``per-series`` also keeps each series' own statistics in ``series`` (keyed
    by ``str(id)``); :meth:`for_series` gives the scaler of one series. Several outputs (an
    NPZ ``y`` of k columns) keep one mean and std each in ``output_mean``/``output_std``.
    """

    columns: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    target: str
    target_mean: float
    target_std: float
    series: dict[str, SeriesStats] = dataclasses.field(default_factory=dict)
    output_mean: tuple[float, ...] = ()
    output_std: tuple[float, ...] = ()

    def for_series(self, key: Any) -> Scaler | None:
        """The scaler of series ``key`` (None when the panel has no statistics for it)."""
        stats = self.series.get(str(key))
        if stats is None:
            return None
        return Scaler(
            self.columns, stats.mean, stats.std, self.target, stats.target_mean, stats.target_std
        )

    def transform(self, values: NDArray[np.float64]) -> NDArray[np.float64]:
        """values: ``(rows, len(columns))`` -> the same, standardised."""
        out: NDArray[np.float64] = (values - np.asarray(self.mean)) / np.asarray(self.std)
        return out

    def transform_target(self, values: NDArray[np.float64]) -> NDArray[np.float64]:
        if self.output_mean:
            out: NDArray[np.float64] = (values - np.asarray(self.output_mean)) / np.asarray(
                self.output_std
            )
            return out
        return (values - self.target_mean) / self.target_std

    def inverse_target(self, values: NDArray[Any]) -> NDArray[np.float64]:
        """Scaled predictions back to the target's own units."""
        if self.output_mean:
            scaled: NDArray[np.float64] = np.asarray(values, dtype=np.float64) * np.asarray(
                self.output_std
            ) + np.asarray(self.output_mean)
            return scaled
        return np.asarray(values, dtype=np.float64) * self.target_std + self.target_mean

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "columns": list(self.columns),
            "mean": list(self.mean),
            "std": list(self.std),
            "target": self.target,
            "target_mean": self.target_mean,
            "target_std": self.target_std,
        }
        if self.series:
            out["series"] = {
                key: {
                    "mean": list(s.mean),
                    "std": list(s.std),
                    "target_mean": s.target_mean,
                    "target_std": s.target_std,
                }
                for key, s in self.series.items()
            }
        if self.output_mean:
            out["output_mean"] = list(self.output_mean)
            out["output_std"] = list(self.output_std)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Scaler:
        def floats(values: Any) -> tuple[float, ...]:
            return tuple(float(v) for v in values)

        return cls(
            columns=tuple(data["columns"]),
            mean=floats(data["mean"]),
            std=floats(data["std"]),
            target=str(data["target"]),
            target_mean=float(data["target_mean"]),
            target_std=float(data["target_std"]),
            series={
                str(key): SeriesStats(
                    floats(s["mean"]),
                    floats(s["std"]),
                    float(s["target_mean"]),
                    float(s["target_std"]),
                )
                for key, s in data.get("series", {}).items()
            },
            output_mean=floats(data.get("output_mean", ())),
            output_std=floats(data.get("output_std", ())),
        )


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

    def to(self, device: torch.device | str) -> Windows:
        return dataclasses.replace(
            self,
            x_train=self.x_train.to(device),
            y_train=self.y_train.to(device),
            x_val=self.x_val.to(device),
            y_val=self.y_val.to(device),
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


def column_stats(values: NDArray[np.float64]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Each column's mean and std of ``values: (rows, columns)``, a column at a time.

    A constant column carries no scale: its std is 1, which keeps it finite."""
    means, stds = [], []
    for j in range(values.shape[1]):
        part = np.ascontiguousarray(values[:, j])
        std = float(part.std())
        means.append(float(part.mean()))
        stds.append(std if std > 1e-12 else 1.0)
    return tuple(means), tuple(stds)


def _fit_scaler(frame: pd.DataFrame, spec: DataSpec, cut: int) -> Scaler:
    cols = spec.input_columns
    mean, std = column_stats(frame[list(cols)].to_numpy(dtype=np.float64)[:cut])
    (tm,), (ts,) = column_stats(frame[[spec.target]].to_numpy(dtype=np.float64)[:cut])
    return Scaler(cols, mean, std, spec.target, tm, ts)


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
) -> tuple[Tensor, Tensor]:
    y_all = np.lib.stride_tricks.sliding_window_view(target, horizon)  # (n, H)
    idx = np.asarray(starts, dtype=np.int64)
    y = np.ascontiguousarray(y_all[idx + window], dtype=np.float32)
    return input_windows(inputs, window, starts), torch.from_numpy(y)


def make_windows(frame: pd.DataFrame, spec: DataSpec) -> Windows:
    """Cuts a frame into scaled training and validation windows (on the CPU).

    The first ``1 - val_fraction`` of the rows are the training part; a validation window's
    targets all lie after it, though its inputs may reach back into it.
    """
    rows = len(frame)
    w, h = spec.window, spec.horizon
    cut = round(rows * (1.0 - spec.val_fraction))
    n_train = cut - w - h + 1
    n_val = rows - cut - h + 1
    if n_train < 1 or n_val < 1:
        raise DataError(
            f"{rows} rows are too few for window={w}, horizon={h}, val_fraction="
            f"{spec.val_fraction}: that leaves {max(n_train, 0)} training and {max(n_val, 0)} "
            "validation windows (each needs >= 1); use a smaller window or more data"
        )
    _check_fits(n_train + n_val, w, len(spec.input_columns), rows)
    scaler = _fit_scaler(frame, spec, cut)
    inputs = scaler.transform(frame[list(spec.input_columns)].to_numpy(dtype=np.float64))
    target = scaler.transform_target(frame[spec.target].to_numpy(dtype=np.float64))
    try:
        x_tr, y_tr = _windows(inputs, target, w, h, range(0, n_train))
        x_va, y_va = _windows(inputs, target, w, h, range(cut - w, cut - w + n_val))
    except MemoryError as e:  # what the estimate below did not foresee
        raise DataError(f"the windows of window={w} over {rows} rows do not fit: {e}") from e
    return Windows(x_tr, y_tr, x_va, y_va, scaler)


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
