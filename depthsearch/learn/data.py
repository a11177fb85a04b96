"""A study's samples, from its data to tensors: :func:`prepare`, the only place that tells the
task kinds apart.

The data is read once into :class:`~depthsearch.learn.read.Sequences` (any source; a single
series is a panel of one), then goes one way down: split (indices,
:mod:`~depthsearch.learn.split`) -> scaling fitted on the training part alone
(:mod:`~depthsearch.learn.scaling`) -> windows of each series with their naive forecasts, or
whole sequences padded with their lengths (:mod:`~depthsearch.learn.samples`). A prediction
runs the same reading, the saved scaler and the same samples
(:mod:`~depthsearch.learn.predictor`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from depthsearch.errors import DataError
from depthsearch.learn.read import Sequences, read
from depthsearch.learn.samples import check_fits, naive_pairs, pad, series_windows
from depthsearch.learn.scaling import (
    Scaler,
    SeriesStats,
    fit_scaler,
    per_sequence,
    training_rows,
)
from depthsearch.learn.split import Parts, TimeCut, split_sequences, time_cut
from depthsearch.spec import DataSpec

__all__ = ["Windows", "class_order", "prepare", "sequence_steps"]


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

    def with_validation_trained(self) -> Windows:
        """These samples with the validation part added to the training part (``export
        --refit all``: a model trained on both, for users who hold their own test file).
        Sequences of different lengths are padded to the longest of both."""
        steps = max(self.x_train.shape[1], self.x_val.shape[1])

        def padded(x: Tensor) -> Tensor:
            return torch.nn.functional.pad(x, (0, 0, 0, steps - x.shape[1]))

        lengths = None
        if self.len_train is not None or self.len_val is not None:
            lengths = torch.cat(
                [
                    n if n is not None else torch.full((len(x),), x.shape[1])
                    for x, n in ((self.x_train, self.len_train), (self.x_val, self.len_val))
                ]
            )
        return dataclasses.replace(
            self,
            x_train=torch.cat([padded(self.x_train), padded(self.x_val)]),
            y_train=torch.cat([self.y_train, self.y_val]),
            len_train=lengths,
        )

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


def prepare(
    spec: DataSpec, device: torch.device | str = "cpu", *, seed: int = 0, kind: str = "forecast"
) -> Windows:
    """The spec's data as training, validation (and test) samples on ``device``.

    ``kind`` (``[task] kind``): ``forecast`` cuts windows within each series (one, or each
    of a panel: ``[data] id``); ``classify`` and ``regress`` take one sample per sequence
    (per id, or per row of an NPZ's ``X``), as does a forecast from NPZ arrays (``X`` the
    windows, ``y`` what follows each, in time order); ``seed`` draws their split.

    Raises:
        DataError: the data cannot make this study's samples, in one line.
    """
    seqs = read(spec, kind, seed=seed)
    if seqs.labels is None and seqs.targets is None:
        return _forecast(seqs, spec).to(device)
    return _per_sequence(seqs, spec, kind, seed).to(device)


def _cuts(seqs: Sequences, spec: DataSpec) -> list[TimeCut]:
    cuts = []
    for i, rows in enumerate(seqs.lengths.tolist()):
        cut = time_cut(rows, spec)
        if cut is not None:
            cuts.append(cut)
            continue
        w, h = spec.window, spec.horizon
        parts = (
            f"window={w}, horizon={h}, val_fraction={spec.val_fraction}, "
            f"test_fraction={spec.test_fraction}"
        )
        if seqs.id_name is None:
            raise DataError(
                f"{rows} rows are too few for {parts}: each part needs at least one window; "
                "use a smaller window or more data"
            )
        kept = (1.0 - spec.val_fraction) * (1.0 - spec.test_fraction)
        least = max(math.ceil((w + h + 1) / kept), w + 3 * h)
        raise DataError(
            f"{spec.path}: id {seqs.keys[i]!r} has {rows} rows, too few for {parts} (each "
            f"series needs about {least}); drop the id, or use a smaller window"
        )
    return cuts


def _forecast(seqs: Sequences, spec: DataSpec) -> Windows:
    """Windows cut within each series (never across two), each series split by time and
    scaled on its own training rows (``scale = "per-series"``, a panel) or on all series'
    training rows (one series, or ``global``)."""
    cuts = _cuts(seqs, spec)
    inputs_at, (target_at,) = seqs.at(spec.input_columns), seqs.at([spec.target])
    check_fits(
        int((seqs.lengths - spec.window + 1).sum()), spec.window, len(inputs_at), len(seqs.values)
    )
    series = [(seqs.rows(i)[:, inputs_at], seqs.rows(i)[:, target_at]) for i in range(len(seqs))]
    at = spec.input_columns.index(spec.target) if spec.target in spec.input_columns else None
    fitted = [
        training_rows(x, y, c.cut, at=at, difference=spec.difference)
        for (x, y), c in zip(series, cuts, strict=True)
    ]
    scaler = _fit(
        spec, np.concatenate([x for x, _ in fitted]), np.concatenate([y for _, y in fitted])
    )
    own_scale = seqs.id_name is not None and spec.scale == "per-series"
    stats: dict[str, SeriesStats] = {}
    pieces: list[list[Tensor]] = []
    naive: dict[str, list[Tensor]] = {}
    for key, (x, y), cut, rows in zip(seqs.keys, series, cuts, fitted, strict=True):
        own = _fit(spec, *rows) if own_scale else scaler
        if own_scale:
            stats[key] = SeriesStats(own.mean, own.std, own.target_mean, own.target_std)
        windows, predicted = series_windows(
            own.inputs(x),
            own.target_values(y),
            cut,
            window=spec.window,
            horizon=spec.horizon,
            season=spec.season,
            relative=spec.difference,
        )
        pieces.append(windows)
        for name, values in predicted.items():
            naive.setdefault(name, []).extend(values)
    joined = [torch.cat([p[i] for p in pieces]) for i in range(len(pieces[0]))]
    has_test = len(joined) > 4
    return Windows(
        joined[0],
        joined[1],
        joined[2],
        joined[3],
        dataclasses.replace(scaler, series=stats),
        x_test=joined[4] if has_test else None,
        y_test=joined[5] if has_test else None,
        naive=naive_pairs(naive, has_test),
    )


def _fit(spec: DataSpec, inputs: NDArray[np.float64], target: NDArray[np.float64]) -> Scaler:
    return fit_scaler(spec.input_columns, spec.target, inputs, target, difference=spec.difference)


def class_order(labels: list[str] | tuple[str, ...]) -> list[str]:
    """The distinct labels in the order of the model's outputs: by value where every label
    is a number (ties and the rest by text), else by text."""
    distinct = set(labels)
    try:
        numbers = {label: float(label) for label in distinct}
    except ValueError:
        return sorted(distinct)
    if not all(math.isfinite(v) for v in numbers.values()):
        return sorted(distinct)
    return sorted(distinct, key=lambda label: (numbers[label], label))


def sequence_steps(seqs: Sequences, spec: DataSpec) -> list[NDArray[np.float64]]:
    """Each sequence's steps as a model reads them: its last ``max_length``, normalised on
    its own with ``normalize = "per-sequence"`` (before the scaling, fitted after it)."""
    steps = [seqs.rows(i) for i in range(len(seqs))]
    if spec.max_length:
        steps = [q[-spec.max_length :] for q in steps]
    if spec.normalize == "per-sequence":
        steps = [per_sequence(q) for q in steps]
    return steps


def _per_sequence(seqs: Sequences, spec: DataSpec, kind: str, seed: int) -> Windows:
    """One sample per sequence: a class (``classify``) or values (``regress``, a forecast
    from arrays), split by sequence, inputs scaled on the training sequences' steps."""
    steps = sequence_steps(seqs, spec)
    check_fits(len(steps), max(len(q) for q in steps), steps[0].shape[1], sum(map(len, steps)))
    target = "y" if spec.source in ("npz", "ts") else spec.target
    if seqs.labels is not None:
        classes = class_order(seqs.labels)
        if len(classes) < 2:
            raise DataError(
                f"every sequence has the label {classes[0]!r}: a classification needs at "
                "least two classes"
            )
        index = {c: i for i, c in enumerate(classes)}
        labels = np.asarray([index[v] for v in seqs.labels], dtype=np.int64)
        parts = split_sequences(seqs.keys, spec, seed, labels=labels, classes=classes)
        train_rows = np.concatenate([steps[i] for i in parts.train])
        scaler = fit_scaler(seqs.columns, target, train_rows, None)
        y_all = torch.from_numpy(labels)
    else:
        assert seqs.targets is not None
        classes = []
        parts = split_sequences(seqs.keys, spec, seed, ordered=kind == "forecast")
        train_rows = np.concatenate([steps[i] for i in parts.train])
        scaler = fit_scaler(seqs.columns, target, train_rows, seqs.targets[parts.train])
        y_all = torch.from_numpy(scaler.transform_target(seqs.targets).astype(np.float32))
    return _padded(steps, y_all, parts, scaler, kind, classes)


def _padded(
    steps: list[NDArray[np.float64]],
    y_all: Tensor,
    parts: Parts,
    scaler: Scaler,
    kind: str,
    classes: list[str],
) -> Windows:
    order = [parts.train, parts.val] + ([parts.test] if parts.test is not None else [])
    padded = [pad([steps[i] for i in idx], scaler) for idx in order]
    if any(lengths is not None for _, lengths in padded):
        # One part whole, another not: every part gets lengths.
        padded = [
            (x, n if n is not None else torch.full((len(x),), x.shape[1])) for x, n in padded
        ]
    (x_tr, l_tr), (x_va, l_va) = padded[:2]
    x_te, l_te = padded[2] if len(padded) > 2 else (None, None)
    return Windows(
        x_tr,
        y_all[torch.from_numpy(parts.train)],
        x_va,
        y_all[torch.from_numpy(parts.val)],
        scaler,
        l_tr,
        l_va,
        kind=kind,
        classes=tuple(classes),
        x_test=x_te,
        y_test=None if parts.test is None else y_all[torch.from_numpy(parts.test)],
        len_test=l_te,
    )
