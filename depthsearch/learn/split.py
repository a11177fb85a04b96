"""Which samples train, validate and test: indices only, never the values.

A series is cut in time (its last ``test_fraction`` of rows held out first, the last
``val_fraction`` of the rest validates); whole sequences are split by sequence: the test part
first, with a seed of its own, then the validation part of the rest, each stratified by label
for a classification (at least one of each class on either side) and seeded.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from depthsearch.errors import DataError
from depthsearch.spec import DataSpec

__all__ = ["Parts", "TimeCut", "split_sequences", "time_cut"]

#: Added to the study's seed to draw the test part (so it differs from the validation draw).
_TEST_SEED = 7_919


@dataclasses.dataclass(frozen=True)
class TimeCut:
    """Where one series' parts lie: training windows start at ``first``; the training rows
    end at ``cut``, the validation rows at ``end`` (the test rows follow)."""

    first: int
    cut: int
    end: int
    n_train: int
    n_val: int
    n_test: int

    def starts(self, window: int) -> list[range]:
        """The windows' first rows: training, validation (and test)."""
        parts = [
            range(self.first, self.first + self.n_train),
            range(self.cut - window, self.cut - window + self.n_val),
        ]
        if self.n_test:
            parts.append(range(self.end - window, self.end - window + self.n_test))
        return parts


def time_cut(rows: int, spec: DataSpec) -> TimeCut | None:
    """The parts of a series of ``rows`` rows; None when a part would hold no window."""
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
    return TimeCut(first, cut, end, n_train, n_val, n_test)


@dataclasses.dataclass(frozen=True)
class Parts:
    """Sequence indices (ascending) of each part; ``test`` None without a test part."""

    train: NDArray[np.int64]
    val: NDArray[np.int64]
    test: NDArray[np.int64] | None


def _stratified(
    labels: NDArray[np.int64], names: Sequence[str], keys: Sequence[str], share: float, seed: int
) -> NDArray[np.bool_]:
    """Which of the sequences go: ``share`` of each class (at least one; at least one
    stays), drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    chosen = np.zeros(len(labels), dtype=bool)
    for c, name in enumerate(names):
        members = np.flatnonzero(labels == c)
        if len(members) < 2:
            raise DataError(
                f"class {name!r} has a single sequence (id {keys[members[0]]!r}): the split "
                "by label cannot put it in both training and validation; add sequences of "
                "that class or drop it"
            )
        n = min(len(members) - 1, max(1, round(len(members) * share)))
        chosen[rng.permutation(members)[:n]] = True
    return chosen


def _drawn(n: int, share: float, seed: int, *, ordered: bool) -> NDArray[np.bool_]:
    """``share`` of ``n`` sequences: the last ones (``ordered``) or a seeded draw."""
    if n < 2:
        raise DataError(
            f"{n} sequence(s): a split needs at least 2 (one to train, one to validate)"
        )
    k = min(n - 1, max(1, round(n * share)))
    chosen = np.zeros(n, dtype=bool)
    chosen[np.arange(n - k, n) if ordered else np.random.default_rng(seed).permutation(n)[:k]] = (
        True
    )
    return chosen


def split_sequences(
    keys: Sequence[str],
    spec: DataSpec,
    seed: int,
    *,
    labels: NDArray[np.int64] | None = None,
    classes: Sequence[str] = (),
    ordered: bool = False,
) -> Parts:
    """Whole sequences into parts: stratified by ``labels`` (class indices into ``classes``)
    when given, else drawn (or the last ones, ``ordered``: arrays in time order)."""

    def pick(among: NDArray[np.int64], share: float, drawn: int) -> NDArray[np.bool_]:
        if labels is None:
            return _drawn(len(among), share, drawn, ordered=ordered)
        return _stratified(labels[among], classes, [keys[i] for i in among], share, drawn)

    everyone = np.arange(len(keys))
    test = None
    if spec.test_fraction:
        test = pick(everyone, spec.test_fraction, seed + _TEST_SEED)
    rest = everyone if test is None else everyone[~test]
    val = np.zeros(len(keys), dtype=bool)
    val[rest[pick(rest, spec.val_fraction, seed)]] = True
    train = ~val if test is None else ~(val | test)
    return Parts(
        np.flatnonzero(train), np.flatnonzero(val), None if test is None else np.flatnonzero(test)
    )
