"""Standardisation fitted on training rows only, and its inverse for predictions.

A forecast with ``[data] difference = true`` learns the series' changes: its target column is
fed to the model as first differences, and its outputs are the change from the window's last
value (scaled by the spread of one step's change), which a prediction adds back.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "Scaler",
    "SeriesStats",
    "column_stats",
    "differenced",
    "fit_scaler",
    "per_sequence",
    "training_rows",
]


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


def per_sequence(steps: NDArray[np.float64]) -> NDArray[np.float64]:
    """One sequence ``(steps, channels)`` z-normalised on its own, channel by channel (a
    constant channel becomes zeros): ``[data] normalize = "per-sequence"``."""
    mean, std = column_stats(steps)
    out: NDArray[np.float64] = (steps - np.asarray(mean)) / np.asarray(std)
    return out


def differenced(values: NDArray[np.float64], at: int | None) -> NDArray[np.float64]:
    """``values`` with column ``at`` replaced by its first differences (row 0: 0, a change
    nobody saw; no window starts there)."""
    if at is None:
        return values
    out = np.array(values, dtype=np.float64, copy=True)
    out[1:, at] = np.diff(values[:, at])
    out[0, at] = 0.0
    return out


def training_rows(
    values: NDArray[np.float64],
    target: NDArray[np.float64],
    cut: int,
    *,
    at: int | None,
    difference: bool,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """What a forecast's scaler is fitted on: the input rows ``values[:cut]`` and the
    target's ``(cut, 1)``; for a forecast of changes the target's changes (and, as an input,
    the target column's: ``at``, its position among the inputs, None when it is none)."""
    if not difference:
        return values[:cut], target[:cut].reshape(-1, 1)
    return differenced(values[:cut], at)[1:], np.diff(target[:cut]).reshape(-1, 1)


def fit_scaler(
    columns: tuple[str, ...],
    target: str,
    inputs: NDArray[np.float64],
    outputs: NDArray[np.float64] | None,
    *,
    difference: bool = False,
) -> Scaler:
    """The one fit: each input column's mean and std over ``inputs: (rows, columns)``, and
    the outputs': none for a classification (``None``), the target's for one column (for a
    forecast of changes: mean 0, the std of one step's change), one each for ``k``."""
    mean, std = column_stats(inputs)
    if outputs is None:
        return Scaler(columns, mean, std, target, 0.0, 1.0)
    om, osd = column_stats(outputs)
    if outputs.shape[1] > 1:
        return Scaler(columns, mean, std, target, 0.0, 1.0, output_mean=om, output_std=osd)
    return Scaler(
        columns, mean, std, target, 0.0 if difference else om[0], osd[0], difference=difference
    )


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
    ``difference``: a forecast of changes (see the module's docstring).
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
    difference: bool = False

    def for_series(self, key: Any) -> Scaler | None:
        """The scaler of series ``key`` (None when the panel has no statistics for it)."""
        stats = self.series.get(str(key))
        if stats is None:
            return None
        return Scaler(
            self.columns,
            stats.mean,
            stats.std,
            self.target,
            stats.target_mean,
            stats.target_std,
            difference=self.difference,
        )

    def transform(self, values: NDArray[np.float64]) -> NDArray[np.float64]:
        """values: ``(rows, len(columns))`` -> the same, standardised."""
        out: NDArray[np.float64] = (values - np.asarray(self.mean)) / np.asarray(self.std)
        return out

    def inputs(self, values: NDArray[np.float64]) -> NDArray[np.float64]:
        """Raw input rows ``(rows, len(columns))`` -> what the model reads: standardised, the
        target column differenced first for a forecast of changes (row 0 then means
        nothing: windows start at row 1)."""
        if not self.difference:
            return self.transform(values)
        at = self.columns.index(self.target) if self.target in self.columns else None
        return self.transform(differenced(values, at))

    def target_values(self, target: NDArray[np.float64]) -> NDArray[np.float64]:
        """The raw target series, scaled for cutting windows (a window's outputs are these
        values after its end, less its last one's for a forecast of changes)."""
        if self.difference:
            out: NDArray[np.float64] = np.asarray(target, dtype=np.float64) / self.target_std
            return out
        return self.transform_target(target)

    def transform_target(self, values: NDArray[np.float64]) -> NDArray[np.float64]:
        if self.output_mean:
            out: NDArray[np.float64] = (values - np.asarray(self.output_mean)) / np.asarray(
                self.output_std
            )
            return out
        return (values - self.target_mean) / self.target_std

    def inverse_target(self, values: NDArray[Any]) -> NDArray[np.float64]:
        """Scaled predictions back to the target's own units (for a forecast of changes:
        the change from the window's last value)."""
        if self.output_mean:
            scaled: NDArray[np.float64] = np.asarray(values, dtype=np.float64) * np.asarray(
                self.output_std
            ) + np.asarray(self.output_mean)
            return scaled
        return np.asarray(values, dtype=np.float64) * self.target_std + self.target_mean

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (the keys a scaler does not use left out); :meth:`from_dict` reads it."""
        out = dataclasses.asdict(self)
        for key in ("series", "output_mean", "output_std", "difference"):
            if not out[key]:
                del out[key]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Scaler:
        def floats(values: Any) -> tuple[float, ...]:
            return tuple(float(v) for v in values)

        def stats(s: dict[str, Any]) -> SeriesStats:
            return SeriesStats(
                floats(s["mean"]),
                floats(s["std"]),
                float(s["target_mean"]),
                float(s["target_std"]),
            )

        return cls(
            tuple(data["columns"]),
            floats(data["mean"]),
            floats(data["std"]),
            str(data["target"]),
            float(data["target_mean"]),
            float(data["target_std"]),
            {str(k): stats(s) for k, s in data.get("series", {}).items()},
            floats(data.get("output_mean", ())),
            floats(data.get("output_std", ())),
            bool(data.get("difference", False)),
        )
