"""Samples as tensors: windows of a series with the naive forecasts of each, and whole
sequences padded after their end with their lengths. Training and ``predict`` cut them here,
and nowhere else.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from depthsearch.errors import DataError
from depthsearch.learn.scaling import Scaler
from depthsearch.learn.split import TimeCut

__all__ = ["check_fits", "input_windows", "naive_pairs", "pad", "series_windows"]


def input_windows(inputs: NDArray[np.float64], window: int, starts: range | None = None) -> Tensor:
    """``inputs: (rows, features)`` -> float32 ``(n, window, features)``, one per start row
    (every start row, ``rows - window + 1`` windows, when ``starts`` is None)."""
    x_all = np.lib.stride_tricks.sliding_window_view(inputs, window, axis=0)  # (n, F, W)
    if starts is not None:  # a slice stays a view: the one copy made is the float32 result
        x_all = x_all[starts.start : starts.stop : starts.step]
    return torch.from_numpy(np.ascontiguousarray(x_all.transpose(0, 2, 1), dtype=np.float32))


def _targets(
    target: NDArray[np.float64], window: int, horizon: int, starts: range, relative: bool
) -> Tensor:
    """The next ``horizon`` target values after each window (less the window's last value,
    ``relative``: a forecast of changes)."""
    idx = np.asarray(starts, dtype=np.int64)
    y = np.lib.stride_tricks.sliding_window_view(target, horizon)[idx + window]  # (n, H)
    if relative:
        y = y - target[idx + window - 1][:, None]
    return torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32))


def _naive(
    target: NDArray[np.float64],
    window: int,
    horizon: int,
    starts: range,
    *,
    season: int,
    relative: bool,
    climate: NDArray[np.float64] | None,
) -> dict[str, Tensor]:
    """The naive forecasts of the windows at ``starts``, in the scaled target's units: the
    window's last value repeated; with ``season``, the value one season before each step
    (the window's last season, repeated), and the season's climatology (its mean by position
    over the training rows, ``climate``) plus the last value's anomaly from it, persisted."""
    idx = np.asarray(starts, dtype=np.int64)
    last = idx + window - 1
    anchor = target[last][:, None] if relative else 0.0
    out = {"last value": np.repeat(target[last][:, None], horizon, axis=1) - anchor}
    if season:
        steps = np.arange(1, horizon + 1)
        back = season * np.ceil(steps / season).astype(np.int64)
        out[f"seasonal naive ({season})"] = target[last[:, None] + steps - back] - anchor
    if season and climate is not None:
        ahead = climate[(last[:, None] + steps) % season]
        anomaly = target[last] - climate[last % season]
        out[f"climatology + anomaly ({season})"] = ahead + anomaly[:, None] - anchor
    return {k: torch.from_numpy(np.asarray(v, dtype=np.float32)) for k, v in out.items()}


def _climate(target: NDArray[np.float64], cut: TimeCut, season: int) -> NDArray[np.float64] | None:
    """Each season position's mean over the training rows (None without a whole season)."""
    train = target[cut.first : cut.cut]
    if not season or len(train) < season:
        return None
    at = (np.arange(cut.first, cut.cut)) % season
    return np.asarray([train[at == pos].mean() for pos in range(season)])


def series_windows(
    inputs: NDArray[np.float64],
    target: NDArray[np.float64],
    cut: TimeCut,
    *,
    window: int,
    horizon: int,
    season: int = 0,
    relative: bool = False,
) -> tuple[list[Tensor], dict[str, list[Tensor]]]:
    """One series' scaled rows -> ``[x_train, y_train, x_val, y_val(, x_test, y_test)]`` and
    the naive forecasts of its validation (and test) windows."""
    out: list[Tensor] = []
    naive: dict[str, list[Tensor]] = {}
    climate = _climate(target, cut, season)
    for i, starts in enumerate(cut.starts(window)):
        out += [
            input_windows(inputs, window, starts),
            _targets(target, window, horizon, starts, relative),
        ]
        if i:
            found = _naive(
                target, window, horizon, starts, season=season, relative=relative, climate=climate
            )
            for name, pred in found.items():
                naive.setdefault(name, []).append(pred)
    return out, naive


def naive_pairs(
    naive: dict[str, list[Tensor]], has_test: bool
) -> dict[str, tuple[Tensor, Tensor | None]]:
    """Validation and test parts of naive forecasts collected series by series (each list
    alternates: validation, test, validation, test ...; validation only without a test)."""
    step = 2 if has_test else 1
    return {
        name: (torch.cat(parts[0::step]), torch.cat(parts[1::step]) if has_test else None)
        for name, parts in naive.items()
    }


def pad(seqs: list[NDArray[np.float64]], scaler: Scaler) -> tuple[Tensor, Tensor | None]:
    """Scaled sequences padded after their end into ``(n, longest, features)`` float32, and
    their lengths (None when all are as long)."""
    lengths = np.asarray([len(q) for q in seqs], dtype=np.int64)
    longest = int(lengths.max())
    out = np.zeros((len(seqs), longest, seqs[0].shape[1]), dtype=np.float32)
    for i, q in enumerate(seqs):
        out[i, : len(q)] = scaler.transform(q)
    whole = bool((lengths == longest).all())
    return torch.from_numpy(out), None if whole else torch.from_numpy(lengths)


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.3g} {unit}"
        n /= 1024
    raise AssertionError


def check_fits(samples: int, steps: int, features: int, rows: int) -> None:
    """Refuses samples that this machine's memory cannot hold (float32, one copy each)."""
    needed = samples * steps * features * 4
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not a POSIX system: no estimate
        return
    if needed > total:
        raise DataError(
            f"window={steps} over {rows} rows makes {samples} windows of {steps} x "
            f"{features} values: {_size(needed)} in memory, more than this machine's "
            f"{_size(total)}; use a smaller window or fewer rows"
        )
