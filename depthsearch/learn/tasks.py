"""Samples for every task beyond one series' windows (:func:`depthsearch.learn.data.prepare`
calls these): a panel of series cut into windows series by series, and one sample per
sequence for a classification or a regression, split by sequence and padded with lengths.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from depthsearch.errors import DataError
from depthsearch.learn.data import (
    SeriesCut,
    Windows,
    _check_fits,
    cut_series,
    naive_pairs,
    series_cut,
)
from depthsearch.learn.scaling import (
    Scaler,
    SeriesStats,
    column_stats,
    fit_scaler,
    training_rows,
)
from depthsearch.learn.sources import Group, groups, label_key, read_npz, read_table
from depthsearch.spec import DataSpec

#: Added to the study's seed to draw the test part (so it differs from the validation draw).
_TEST_SEED = 7_919

__all__ = ["from_npz", "from_table", "pad_sequences", "panel_windows"]


def _panel(parts: list[Group], spec: DataSpec, needed: list[str]) -> Windows:
    """A forecast over many series: windows cut within each series (never across two), each
    series split by time (its last ``test_fraction`` held out, the last ``val_fraction`` of
    the rest validates), scaled on its own training rows (``scale = "per-series"``) or on all
    series' training rows (``global``)."""
    w, h = spec.window, spec.horizon
    inputs_at = [needed.index(c) for c in spec.input_columns]
    target_at = needed.index(spec.target)
    cuts: list[SeriesCut] = []
    rows_of: list[tuple[NDArray[np.float64], NDArray[np.float64]]] = []
    for g in parts:
        rows = len(g.values)
        cut = series_cut(rows, spec)
        if cut is None:
            kept = (1.0 - spec.val_fraction) * (1.0 - spec.test_fraction)
            least = math.ceil((w + h + 1) / kept)
            raise DataError(
                f"{spec.path}: id {g.key!r} has {rows} rows, too few for window={w}, "
                f"horizon={h}, val_fraction={spec.val_fraction}, test_fraction="
                f"{spec.test_fraction} (each series needs about {max(least, w + 3 * h)}); "
                "drop the id, or use a smaller window"
            )
        cuts.append(cut)
        rows_of.append((g.values[:, inputs_at], g.values[:, target_at]))
    total = sum(len(g.values) - w - h + 1 for g in parts)
    _check_fits(total, w, len(inputs_at), sum(len(g.values) for g in parts))
    fitted = [
        training_rows(x, y, cut.cut, spec) for (x, y), cut in zip(rows_of, cuts, strict=True)
    ]
    scaler = fit_scaler(
        (np.concatenate([x for x, _ in fitted]), np.concatenate([y for _, y in fitted])), spec
    )
    series: dict[str, SeriesStats] = {}
    pieces: list[list[Tensor]] = []
    naive: dict[str, list[Tensor]] = {}
    for g, (x, y), cut, own_rows in zip(parts, rows_of, cuts, fitted, strict=True):
        own = scaler
        if spec.scale == "per-series":
            own = fit_scaler(own_rows, spec)
            series[str(g.key)] = SeriesStats(own.mean, own.std, own.target_mean, own.target_std)
        windows, predicted = cut_series(own.inputs(x), own.target_values(y), spec, cut)
        pieces.append(windows)
        for name, values in predicted.items():
            naive.setdefault(name, []).extend(values)
    joined = [torch.cat([p[i] for p in pieces]) for i in range(len(pieces[0]))]
    has_test = len(joined) > 4
    scaler = dataclasses.replace(scaler, series=series)
    return Windows(
        joined[0],
        joined[1],
        joined[2],
        joined[3],
        scaler,
        x_test=joined[4] if has_test else None,
        y_test=joined[5] if has_test else None,
        naive=naive_pairs(naive, has_test),
    )


def _split_stratified(
    labels: NDArray[np.int64], classes: list[Any], keys: list[Any], fraction: float, seed: int
) -> NDArray[np.bool_]:
    """Which sequences validate: ``fraction`` of each class (at least one; at least one
    left to train on), drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    val = np.zeros(len(labels), dtype=bool)
    for c, name in enumerate(classes):
        members = np.flatnonzero(labels == c)
        if len(members) < 2:
            raise DataError(
                f"class {name!r} has a single sequence (id {keys[members[0]]!r}): the split "
                "by label cannot put it in both training and validation; add sequences of "
                "that class or drop it"
            )
        n_val = min(len(members) - 1, max(1, round(len(members) * fraction)))
        val[rng.permutation(members)[:n_val]] = True
    return val


def _split_random(n: int, fraction: float, seed: int, *, ordered: bool) -> NDArray[np.bool_]:
    """``fraction`` of ``n`` sequences to validate: the last ones (``ordered``) or a seeded
    draw."""
    if n < 2:
        raise DataError(
            f"{n} sequence(s): a split needs at least 2 (one to train, one to validate)"
        )
    n_val = min(n - 1, max(1, round(n * fraction)))
    val = np.zeros(n, dtype=bool)
    chosen = (
        np.arange(n - n_val, n) if ordered else np.random.default_rng(seed).permutation(n)[:n_val]
    )
    val[chosen] = True
    return val


def _classes(labels: Sequence[Any]) -> list[Any]:
    """The distinct labels, sorted (numbers by value; anything else by its text)."""
    distinct = list(dict.fromkeys(label_key(v) for v in labels))
    try:
        return sorted(distinct)
    except TypeError:
        return sorted(distinct, key=str)


def pad_sequences(seqs: list[NDArray[np.float64]], scaler: Scaler) -> tuple[Tensor, Tensor | None]:
    """Scaled sequences padded after their end into ``(n, longest, features)`` float32, and
    their lengths (None when all are as long)."""
    lengths = np.asarray([len(q) for q in seqs], dtype=np.int64)
    longest = int(lengths.max())
    out = np.zeros((len(seqs), longest, seqs[0].shape[1]), dtype=np.float32)
    for i, q in enumerate(seqs):
        out[i, : len(q)] = scaler.transform(q)
    whole = bool((lengths == longest).all())
    return torch.from_numpy(out), None if whole else torch.from_numpy(lengths)


def _sequences(
    seqs: list[NDArray[np.float64]],
    y: NDArray[Any],
    keys: list[Any],
    *,
    kind: str,
    columns: tuple[str, ...],
    target: str,
    fraction: float,
    test_fraction: float,
    max_length: int,
    seed: int,
    ordered: bool = False,
) -> Windows:
    """One sample per sequence: a class (``classify``) or values (``regress``, or a forecast
    from arrays), split by sequence, inputs scaled on the training sequences' steps."""
    if max_length:
        seqs = [q[-max_length:] for q in seqs]
    _check_fits(len(seqs), max(len(q) for q in seqs), seqs[0].shape[1], sum(len(q) for q in seqs))
    classes: list[Any] = []
    if kind == "classify":
        if y.ndim != 1:
            raise DataError(
                f"a classification has one label per sequence, but y has shape {y.shape}"
            )
        classes = _classes(list(y))
        if len(classes) < 2:
            raise DataError(
                f"every sequence has the label {classes[0]!r}: a classification needs at "
                "least two classes"
            )
        index = {c: i for i, c in enumerate(classes)}
        labels = np.asarray([index[label_key(v)] for v in y], dtype=np.int64)

        def split(among: NDArray[np.int64], share: float, drawn: int) -> NDArray[np.bool_]:
            part = [keys[i] for i in among]
            return _split_stratified(labels[among], classes, part, share, drawn)
    else:
        values = y.reshape(len(y), -1)
        try:
            values = values.astype(np.float64)
        except (TypeError, ValueError):
            raise DataError(
                f"the target must be numeric for [task] kind = {kind!r}, but it holds "
                f"{values.ravel()[0]!r}; use kind = 'classify' for labels"
            ) from None
        if not np.isfinite(values).all():
            raise DataError("the target holds a missing or infinite value")

        def split(among: NDArray[np.int64], share: float, drawn: int) -> NDArray[np.bool_]:
            return _split_random(len(among), share, drawn, ordered=ordered)

    everyone = np.arange(len(seqs))
    # The test part first, drawn with a seed of its own: the same whatever else changes.
    test = split(everyone, test_fraction, seed + _TEST_SEED) if test_fraction else None
    rest = everyone if test is None else everyone[~test]
    val = np.zeros(len(seqs), dtype=bool)
    val[rest[split(rest, fraction, seed)]] = True
    train = ~val if test is None else ~(val | test)
    mean, std = column_stats(np.concatenate([q for q, t in zip(seqs, train, strict=True) if t]))
    if kind == "classify":
        scaler = Scaler(columns, mean, std, target, 0.0, 1.0)
        y_all = torch.from_numpy(labels)
    else:
        om, osd = column_stats(values[train])
        single = values.shape[1] == 1
        scaler = Scaler(
            columns,
            mean,
            std,
            target,
            om[0] if single else 0.0,
            osd[0] if single else 1.0,
            output_mean=() if single else om,
            output_std=() if single else osd,
        )
        y_all = torch.from_numpy(scaler.transform_target(values).astype(np.float32))
    x_tr, l_tr = pad_sequences([q for q, t in zip(seqs, train, strict=True) if t], scaler)
    x_va, l_va = pad_sequences([q for q, v in zip(seqs, val, strict=True) if v], scaler)
    x_te = l_te = None
    if test is not None:
        x_te, l_te = pad_sequences([q for q, t in zip(seqs, test, strict=True) if t], scaler)
    if l_tr is not None or l_va is not None or l_te is not None:
        # One part whole, another not: every part gets lengths.
        l_tr = l_tr if l_tr is not None else torch.full((len(x_tr),), x_tr.shape[1])
        l_va = l_va if l_va is not None else torch.full((len(x_va),), x_va.shape[1])
        if x_te is not None and l_te is None:
            l_te = torch.full((len(x_te),), x_te.shape[1])
    tr, va = torch.from_numpy(train), torch.from_numpy(val)
    y_te = None if test is None else y_all[torch.from_numpy(test)]
    return Windows(
        x_tr,
        y_all[tr],
        x_va,
        y_all[va],
        scaler,
        l_tr,
        l_va,
        kind=kind,
        classes=tuple(classes),
        x_test=x_te,
        y_test=y_te,
        len_test=l_te,
    )


def from_table(spec: DataSpec, kind: str, seed: int) -> Windows:
    frame = read_table(spec)
    columns = spec.features or tuple(
        c for c in frame.columns if c not in (spec.id, spec.time, spec.target, *spec.targets)
    )
    if not columns:
        raise DataError(
            f"{spec.path}: no input column: the table has only the id, the time and the "
            "target; name the inputs in [data] features"
        )
    where = spec.path
    if kind == "classify":
        parts = groups(frame, spec, columns, label=spec.target, where=where)
        labels = []
        for g in parts:
            assert g.labels is not None
            distinct = list(dict.fromkeys(label_key(v) for v in g.labels))
            if len(distinct) > 1:
                raise DataError(
                    f"{where}: the label {spec.target!r} must be the same on every row of an "
                    f"id, but id {g.key!r} has {distinct[:3]}"
                )
            labels.append(distinct[0])
        y = np.asarray(labels, dtype=object)
    else:
        targets = list(spec.targets or (spec.target,))
        needed = list(dict.fromkeys([*columns, *targets]))
        parts = groups(frame, spec, needed, where=where)
        at = [needed.index(t) for t in targets]
        y = np.asarray([g.values[-1, at] for g in parts], dtype=np.float64)
        keep = [needed.index(c) for c in columns]
        parts = [dataclasses.replace(g, values=g.values[:, keep]) for g in parts]
    return _sequences(
        [g.values for g in parts],
        y,
        [g.key for g in parts],
        kind=kind,
        columns=tuple(columns),
        target=spec.target,
        fraction=spec.val_fraction,
        test_fraction=spec.test_fraction,
        max_length=spec.max_length,
        seed=seed,
    )


def from_npz(spec: DataSpec, kind: str, seed: int) -> Windows:
    arrays = read_npz(spec)
    seqs = [arrays.x[i, : arrays.lengths[i]] for i in range(len(arrays.x))]
    y = arrays.y
    if kind == "classify" and y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    columns = tuple(f"x{i}" for i in range(arrays.x.shape[2]))
    return _sequences(
        seqs,
        y,
        list(range(len(seqs))),
        kind=kind,
        columns=columns,
        target="y",
        fraction=spec.val_fraction,
        test_fraction=spec.test_fraction,
        max_length=spec.max_length,
        seed=seed,
        ordered=kind == "forecast",
    )


def panel_windows(spec: DataSpec) -> Windows:
    """A forecast over the series of a long-format table (``[data] id``)."""
    needed = list(dict.fromkeys([*spec.input_columns, spec.target]))
    return _panel(groups(read_table(spec), spec, needed, where=spec.path), spec, needed)
