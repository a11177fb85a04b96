"""Every source read into one shape: :class:`Sequences`.

A CSV or Parquet table in long format (one row per step: ``[data] id`` names the series or
sequence a row belongs to, ``[data] time`` orders the rows within it), NPZ arrays, the
synthetic series, and a DataFrame or arrays handed over from Python are read here and nowhere
else; a single series is a panel of one. Sequences come in the order of their ids, rows in
time order (else the file's). Ids and labels keep the exact text of the file (``01`` and ``1``
are two ids; ``NA`` is a label); numeric columns read pandas' missing-value strings as
missing, which ``[data] missing`` refuses, fills or drops within each sequence. Every check
names the file, the column and the row (counted as a spreadsheet does: the header is row 1)
or the id.
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import math
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from depthsearch.errors import DataError, did_you_mean
from depthsearch.spec import DataSpec

__all__ = ["LARGEST", "Sequences", "fill_missing", "read"]

#: The largest magnitude a value may have: scaling squares deviations and sums them, which
#: overflows float64 (1.8e308) for values much larger.
LARGEST = 1e150
#: What pandas reads as missing in a numeric column (its defaults, written out: the text
#: columns, ids and labels, read none of them).
NA_TEXT = (
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
    "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Sequences:
    """Sequences from any source, stacked: sequence ``i`` is ``values[offsets[i]:offsets[i +
    1]]``, its id ``keys[i]``.

    ``values: (rows, len(columns))`` numbers, complete; ``times: (rows,)`` each row's time
    (the time column, else the table's first column that is not read, else its position in
    its sequence); ``labels`` one class label per sequence (a classification), ``targets:
    (n, k)`` the values to regress per sequence (a regression, NPZ arrays).
    """

    columns: tuple[str, ...]
    values: NDArray[np.float64]
    offsets: NDArray[np.int64]
    keys: tuple[str, ...]
    times: NDArray[Any]
    time_name: str | None = None
    id_name: str | None = None
    labels: tuple[str, ...] | None = None
    targets: NDArray[np.float64] | None = None

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def lengths(self) -> NDArray[np.int64]:
        return np.diff(self.offsets)

    def rows(self, i: int) -> NDArray[np.float64]:
        """Sequence ``i``'s rows ``(steps, len(columns))``."""
        return self.values[self.offsets[i] : self.offsets[i + 1]]

    def times_of(self, i: int) -> NDArray[Any]:
        return self.times[self.offsets[i] : self.offsets[i + 1]]

    def at(self, names: Sequence[str]) -> list[int]:
        """The positions of columns ``names`` in ``values``."""
        return [self.columns.index(n) for n in names]


def read(
    spec: DataSpec,
    kind: str,
    *,
    seed: int = 0,
    data: pd.DataFrame | Mapping[str, Any] | None = None,
    inputs: Sequence[str] | None = None,
) -> Sequences:
    """The spec's data (or ``data``, a frame or arrays from Python) as :class:`Sequences`.

    ``kind`` says what the sequences carry besides their values: a forecast reads its inputs
    and target as columns, a classification a label per sequence, a regression the last
    value of each target column. ``inputs``: read these columns and nothing else (new data
    to predict from). ``seed`` draws the synthetic series.

    Raises:
        DataError: an unreadable file, a missing or bad column, a bad value, in one line.
    """
    if isinstance(data, pd.DataFrame):
        return _table(data, spec, kind, inputs, "the frame")
    if data is not None or spec.source in ("npz", "ts"):
        loaded = (
            dict(data) if data is not None else _npz(spec) if spec.source == "npz" else _ts(spec)
        )
        return _arrays(loaded, spec, kind, inputs)
    if spec.source == "synthetic":
        return _synthetic(spec, seed)
    return _table(_read_file(spec, kind, inputs), spec, kind, inputs, spec.path)


# ---- files -----------------------------------------------------------------------------


def _header(path: Path) -> list[str]:
    with path.open(newline="", encoding="utf-8", errors="replace") as f:
        return next(csv.reader(f), [])


def _text_columns(spec: DataSpec, kind: str, inputs: Sequence[str] | None) -> set[str]:
    """The columns read as text: the id, and a classification's label."""
    label = spec.target if kind == "classify" and inputs is None else None
    return {c for c in (spec.id, label) if c is not None}


def _read_file(spec: DataSpec, kind: str, inputs: Sequence[str] | None) -> pd.DataFrame:
    path = Path(spec.path or "")
    parquet = spec.source == "parquet"
    try:
        if parquet:
            frame = pd.read_parquet(path)
        else:
            header = _header(path)
            twice = sorted({n for n in header if header.count(n) > 1})
            if twice:  # pandas would read the second as "NAME.1", silently: which one?
                raise DataError(
                    f"{path}: column name(s) {twice} appear more than once in the header; "
                    "rename them so that each column has its own name"
                )
            text = _text_columns(spec, kind, inputs) & set(header)
            frame = pd.read_csv(
                path,
                dtype={c: str for c in text},
                keep_default_na=False,
                na_values={c: list(NA_TEXT) for c in header if c not in text},
            )
    except FileNotFoundError:
        raise DataError(f"data file not found: {path}") from None
    except DataError:
        raise
    except Exception as e:  # pandas and pyarrow raise many kinds for a file they cannot read
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"cannot read {path} as {'Parquet' if parquet else 'CSV'}: {first}") from e
    frame.columns = [str(c) for c in frame.columns]
    return frame


def _npz(spec: DataSpec) -> dict[str, Any]:
    path = Path(spec.path or "")
    if path.is_file() and not zipfile.is_zipfile(path):  # np.load would talk of pickles
        raise DataError(
            f"cannot read {path} as NPZ: not a zip of .npy arrays (as numpy.savez writes)"
        )
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except FileNotFoundError:
        raise DataError(f"data file not found: {path}") from None
    except Exception as e:  # zipfile, numpy and pickle refusals
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"cannot read {path} as NPZ: {first}") from e
    for name, value in arrays.items():
        if not isinstance(value, np.ndarray):  # a member numpy could not read as .npy
            raise DataError(f"{path}: member {name!r} is not a .npy array (as numpy.save writes)")
    return arrays


def _ts_case(line: str, n: int, labelled: bool, where: object) -> tuple[list[list[float]], str]:
    """One case of a ``.ts`` file: its dimensions' values (``?`` missing) and its label."""
    fields = line.split(":")
    label = fields.pop().strip() if labelled else ""
    try:
        dims = [
            [float(v) if v.strip() not in ("?", "") else math.nan for v in f.split(",")]
            for f in fields
        ]
    except ValueError as e:
        raise DataError(f"{where}: case {n + 1} after @data: {e}") from None
    if len({len(d) for d in dims}) > 1:
        raise DataError(f"{where}: case {n + 1} has dimensions of different lengths")
    return dims, label


def _ts(spec: DataSpec) -> dict[str, Any]:
    """A UCR/UEA ``.ts`` file (sktime's format) as arrays: ``X`` (N, T, dimensions) padded
    with ``lengths``, ``y`` its class labels (``@classLabel``) or values (``@targetLabel``)."""
    path = Path(spec.path or "")
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        raise DataError(f"data file not found: {path}") from None
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from e
    at = next((i for i, line in enumerate(lines) if line.strip().lower() == "@data"), None)
    if at is None:
        raise DataError(f"cannot read {path} as a .ts file: no @data line")
    head = {
        words[0][1:].lower(): [w.lower() for w in words[1:]]
        for words in (line.split() for line in lines[:at])
        if words and words[0].startswith("@")
    }
    if head.get("timestamps", ["false"])[0] == "true":
        raise DataError(f"{path}: @timeStamps true is not read; give the values without them")
    labelled = any(head.get(k, ["false"])[0] == "true" for k in ("classlabel", "targetlabel"))
    cases = [
        _ts_case(c, n, labelled, path)
        for n, c in enumerate(x for x in lines[at + 1 :] if x.strip())
    ]
    if not cases:
        raise DataError(f"{path}: no case after @data")
    if len({len(dims) for dims, _ in cases}) > 1:
        raise DataError(f"{path}: the cases have different numbers of dimensions")
    lengths = np.asarray([len(dims[0]) for dims, _ in cases], dtype=np.int64)
    x = np.zeros((len(cases), int(lengths.max()), len(cases[0][0])))
    for n, (dims, _) in enumerate(cases):
        x[n, : lengths[n]] = np.asarray(dims).T
    labels = np.asarray([label for _, label in cases])
    return {"X": x, "lengths": lengths, **({"y": labels} if labelled else {})}


# ---- values ----------------------------------------------------------------------------


def _shown(value: Any) -> str:
    """A cell as a message quotes it (numpy's scalars as Python's)."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def _row(i: int) -> str:
    """Row ``i`` (0-based, of the data) as a spreadsheet counts it: the header is row 1."""
    return f"row {i + 2}"


def _numbers(frame: pd.DataFrame, column: str, where: object) -> NDArray[np.float64]:
    """A column as floats (missing values as NaN); text that is not a number, an infinite
    value, or one too large to scale is refused."""
    raw = frame[column]
    values = pd.to_numeric(raw, errors="coerce")
    bad = values.isna() & raw.notna()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(
            f"{where}: column {column!r} must be numeric, but {_row(row)} holds {raw.iloc[row]!r}"
        )
    out: NDArray[np.float64] = values.to_numpy(dtype=np.float64)
    _check_size(out, lambda i: f"{where}: column {column!r} {_row(i)}")
    return out


def _check_size(values: NDArray[np.float64], place: Callable[[int], str]) -> None:
    """Refuses an infinite value, or one whose scaling would overflow (the first, placed by
    ``place(flat index)``)."""
    with np.errstate(invalid="ignore"):
        huge = np.abs(values) > LARGEST
    if not huge.any():
        return
    i = int(np.flatnonzero(huge.ravel())[0])
    value = float(values.ravel()[i])
    if math.isinf(value):
        raise DataError(f"{place(i)} holds an infinite value")
    raise DataError(
        f"{place(i)} holds {value:g}: values beyond ±{LARGEST:g} cannot be scaled (their "
        "squares overflow); rescale the column"
    )


def _as_text(raw: pd.Series) -> NDArray[Any]:
    """A column as the text its file writes (numbers of a typed file as Python writes them),
    None where it is missing or empty."""
    missing = raw.isna().to_numpy()
    text = raw.astype(str).to_numpy(dtype=object)
    text[missing | (text == "")] = None
    out: NDArray[Any] = text
    return out


def _labels_of(frame: pd.DataFrame, column: str, what: str, where: object) -> NDArray[Any]:
    text = _as_text(frame[column])
    empty = np.flatnonzero(pd.isna(text))
    if len(empty):
        raise DataError(f"{where}: column {column!r} ({what}) is empty on {_row(int(empty[0]))}")
    return text


def fill_missing(
    values: NDArray[np.float64],
    rule: str,
    what: str,
    columns: Sequence[str],
    place: Callable[[int], str],
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """One sequence's rows with its missing values treated by ``rule``; also the rows kept.

    ``ffill`` carries the last value forward (rows before the first value are dropped),
    ``interpolate`` fills linearly between values (and with the nearest at either end),
    ``drop`` drops the rows with a missing value, ``error`` refuses any (naming the column
    and ``place(row)``, where its first missing value is).
    """
    gaps = np.isnan(values)
    keep = np.ones(len(values), dtype=bool)
    if not gaps.any():
        return values, keep
    if rule == "error":
        col = int(np.flatnonzero(gaps.any(axis=0))[0])
        row = int(np.flatnonzero(gaps[:, col])[0])
        raise DataError(
            f"{what}: column {columns[col]!r} has {int(gaps[:, col].sum())} missing value(s), "
            f"the first {place(row)}; fill or drop them, or set [data] missing = 'ffill', "
            "'interpolate' or 'drop'"
        )
    frame = pd.DataFrame(values)
    if rule == "ffill":
        frame = frame.ffill()
    elif rule == "interpolate":
        frame = frame.interpolate(method="linear", limit_direction="both")
    keep = ~frame.isna().any(axis=1).to_numpy()
    out = frame.to_numpy(dtype=np.float64)[keep]
    if not len(out):
        raise DataError(
            f"{what}: no row is left after [data] missing = {rule!r} (a column is missing "
            "on every row); drop it from the data"
        )
    return out, keep


# ---- tables ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Read:
    """What a table's reading needs: the numeric columns, the label, the regressed ones."""

    numeric: list[str]
    label: str | None
    outputs: list[str]
    inputs: list[str]


def _wanted(frame: pd.DataFrame, spec: DataSpec, kind: str, inputs: Sequence[str] | None) -> _Read:
    if inputs is not None:
        return _Read(list(inputs), None, [], list(inputs))
    if kind == "forecast":
        numeric = list(dict.fromkeys([*spec.input_columns, spec.target]))
        return _Read(numeric, None, [], numeric)
    named = (spec.id, spec.time, spec.target, *spec.targets)
    features = list(spec.features or (c for c in frame.columns if c not in named))
    if not features:
        raise DataError(
            f"{spec.path}: no input column: the table has only the id, the time and the "
            "target; name the inputs in [data] features"
        )
    if kind == "classify":
        return _Read(features, spec.target, [], features)
    outputs = list(spec.targets or (spec.target,))
    return _Read(list(dict.fromkeys([*features, *outputs])), None, outputs, features)


def _check_columns(frame: pd.DataFrame, needed: Sequence[str], where: object) -> None:
    missing = [c for c in dict.fromkeys(needed) if c not in frame.columns]
    if missing:
        names = list(map(str, frame.columns))
        hint = did_you_mean(str(missing[0]), names) if len(missing) == 1 else ""
        raise DataError(f"{where}: no column(s) {missing}{hint} (the file has columns {names})")


def _order_key(frame: pd.DataFrame, time: str, where: object) -> NDArray[Any]:
    """The time column as something that sorts: numbers or dates."""
    raw = frame[time]
    if raw.isna().any():
        row = int(np.flatnonzero(raw.isna().to_numpy())[0])
        raise DataError(f"{where}: column {time!r} (the time) is empty on {_row(row)}")
    if pd.api.types.is_numeric_dtype(raw) or pd.api.types.is_datetime64_any_dtype(raw):
        return np.asarray(raw.to_numpy())
    try:
        parsed = pd.to_datetime(raw, format="mixed")
        return np.asarray(parsed.to_numpy())
    except (ValueError, TypeError, OverflowError) as e:
        raise DataError(
            f"{where}: column {time!r} (the time) must hold numbers or dates, but "
            f"{str(e).splitlines()[0]}"
        ) from None


def _sorted_rows(
    frame: pd.DataFrame, ids: NDArray[Any] | None, spec: DataSpec, where: object
) -> NDArray[np.int64]:
    """The rows' order: by id (as text), then by time (stable: the file's order among
    equal keys); each time once per id."""
    order = pd.DataFrame({"id": ids if ids is not None else np.zeros(len(frame))})
    keys = ["id"]
    if spec.time is not None:
        order["t"] = _order_key(frame, spec.time, where)
        clash = order.duplicated(["id", "t"]).to_numpy()
        if clash.any():
            row = int(np.flatnonzero(clash)[0])
            owner = f" of id {ids[row]!r}" if ids is not None else ""
            raise DataError(
                f"{where}: two rows{owner} have the time {_shown(frame[spec.time].iloc[row])} "
                f"({_row(row)}); each time may appear once per id"
            )
        keys.append("t")
    try:
        rows: NDArray[np.int64] = order.sort_values(keys, kind="stable").index.to_numpy(np.int64)
    except TypeError as e:  # dates with and without a time zone
        raise DataError(f"{where}: column {spec.time!r} (the time) does not sort: {e}") from None
    return rows


def _table(
    frame: pd.DataFrame, spec: DataSpec, kind: str, inputs: Sequence[str] | None, where: object
) -> Sequences:
    want = _wanted(frame, spec, kind, inputs)
    _check_columns(
        frame, [*want.numeric, *(c for c in (want.label, spec.id, spec.time) if c)], where
    )
    if len(frame) == 0:
        raise DataError(f"{where}: the table has no rows")
    frame = frame.reset_index(drop=True)
    numbers = np.column_stack([_numbers(frame, c, where) for c in want.numeric])
    ids = _labels_of(frame, spec.id, "the id", where) if spec.id else None
    labels = _labels_of(frame, want.label, "the label", where) if want.label else None
    time_name, times = _times(frame, spec, want)
    order = _sorted_rows(frame, ids, spec, where)
    starts = [0]
    if ids is not None:
        in_order = ids[order]
        starts += (np.flatnonzero(in_order[1:] != in_order[:-1]) + 1).tolist()
    starts.append(len(order))
    groups = [_Group(order[a:b], ids) for a, b in itertools.pairwise(starts)]
    for g in groups:
        g.fill(numbers, spec, want, where)
        g.times = times[g.rows][g.kept] if spec.time or ids is None else np.flatnonzero(g.kept)
    per_label = None
    if labels is not None:
        per_label = [g.label(labels, want, where) for g in groups]
    return _stacked(groups, want, spec, time_name, per_label)


class _Group:
    """One id's rows while a table is read: its rows (in time order), then its values and
    the rows kept by ``[data] missing``."""

    def __init__(self, rows: NDArray[np.int64], ids: NDArray[Any] | None) -> None:
        self.rows = rows
        self.key = "" if ids is None else str(ids[rows[0]])
        self.named = ids is not None
        self.values: NDArray[np.float64] = np.empty((0, 0))
        self.kept: NDArray[np.bool_] = np.ones(len(rows), dtype=bool)
        self.times: NDArray[Any] = np.empty(0)

    def what(self, where: object) -> str:
        return f"{where}: id {self.key!r}" if self.named else f"{where}"

    def fill(
        self, numbers: NDArray[np.float64], spec: DataSpec, want: _Read, where: object
    ) -> None:
        rows = self.rows

        def place(i: int) -> str:
            return f"on {_row(int(rows[i]))}"

        self.values, self.kept = fill_missing(
            numbers[rows], spec.missing, self.what(where), want.numeric, place
        )

    def label(self, labels: NDArray[Any], want: _Read, where: object) -> str:
        distinct = list(dict.fromkeys(labels[self.rows][self.kept].tolist()))
        if len(distinct) > 1:
            raise DataError(
                f"{where}: the label {want.label!r} must be the same on every row of an id, "
                f"but id {self.key!r} has {distinct[:3]}"
            )
        return str(distinct[0])


def _times(frame: pd.DataFrame, spec: DataSpec, want: _Read) -> tuple[str | None, NDArray[Any]]:
    """Each row's time as predictions show it: the time column; for a single series the
    table's first column that is not read (``month``, ``timestamp``); else the row."""
    if spec.time is not None:
        return spec.time, frame[spec.time].to_numpy()
    if spec.id is None:
        read = {*want.numeric, spec.target, *spec.targets}
        others = [c for c in frame.columns if c not in read]
        if others:
            return others[0], frame[others[0]].to_numpy()
    return None, np.arange(len(frame))


def _stacked(
    groups: list[_Group],
    want: _Read,
    spec: DataSpec,
    time_name: str | None,
    labels: list[str] | None,
) -> Sequences:
    values = np.concatenate([g.values for g in groups])
    targets = None
    if want.outputs:
        at = [want.numeric.index(c) for c in want.outputs]
        targets = np.asarray([g.values[-1, at] for g in groups], dtype=np.float64)
        values = values[:, [want.numeric.index(c) for c in want.inputs]]
    return Sequences(
        tuple(want.inputs),
        values,
        _offsets([len(g.values) for g in groups]),
        tuple(g.key for g in groups),
        np.concatenate([g.times for g in groups]),
        time_name,
        spec.id,
        None if labels is None else tuple(labels),
        targets,
    )


def _offsets(lengths: list[int]) -> NDArray[np.int64]:
    return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)


# ---- arrays and the synthetic series ---------------------------------------------------


def _synthetic(spec: DataSpec, seed: int) -> Sequences:
    """Two seasonalities, a slow trend and Gaussian noise: one series ``y``."""
    rng = np.random.default_rng(seed)
    t = np.arange(spec.length, dtype=np.float64)
    y = (
        np.sin(2 * math.pi * t / 24.0)
        + 0.5 * np.sin(2 * math.pi * t / 168.0 + 0.3)
        + 0.002 * t
        + spec.noise * rng.standard_normal(spec.length)
    )
    offsets = np.asarray([0, spec.length], dtype=np.int64)
    return Sequences(("y",), y[:, None], offsets, ("",), np.arange(spec.length))


def _array_checks(
    arrays: Mapping[str, Any], where: object, need_y: bool
) -> tuple[NDArray[Any], NDArray[np.int64]]:
    names = sorted(arrays)
    wanted = ["X", "y"] if need_y else ["X"]
    missing = [k for k in wanted if k not in arrays]
    if missing:
        raise DataError(
            f"{where}: no array(s) {missing} (it has {names}); an NPZ source holds X (N, T, F), "
            "y (N,) or (N, k) and optionally lengths (N,) and ids (N,)"
        )
    x = np.asarray(arrays["X"])
    if x.ndim != 3 or x.shape[0] < 1 or x.shape[1] < 1 or x.shape[2] < 1:
        raise DataError(f"{where}: X must be (N, T, F) with N, T, F >= 1, but has shape {x.shape}")
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise DataError(f"{where}: X must hold real numbers, but its dtype is {x.dtype}")
    n, t = x.shape[0], x.shape[1]
    if "lengths" not in arrays:
        return x, np.full(n, t, dtype=np.int64)
    lengths = np.asarray(arrays["lengths"])
    if lengths.shape != (n,) or not np.issubdtype(lengths.dtype, np.integer):
        raise DataError(
            f"{where}: lengths must be (N,) integers with N = {n}, but has shape "
            f"{lengths.shape} and dtype {lengths.dtype}"
        )
    bad = np.flatnonzero((lengths < 1) | (lengths > t))
    if len(bad):
        raise DataError(
            f"{where}: lengths[{int(bad[0])}] = {int(lengths[bad[0]])}, but each length must be "
            f"in [1, {t}] (T, the steps in X)"
        )
    return x, lengths.astype(np.int64)


def _array_keys(arrays: Mapping[str, Any], n: int, where: object) -> tuple[str, ...]:
    """``ids`` as text, each once; else the sequences' positions."""
    if "ids" not in arrays:
        return tuple(str(i) for i in range(n))
    ids = np.asarray(arrays["ids"])
    if ids.shape != (n,):
        raise DataError(f"{where}: ids must be (N,) with N = {n}, but has shape {ids.shape}")
    text = _as_text(pd.Series(ids, dtype=object))
    empty = np.flatnonzero(pd.isna(text))
    if len(empty):
        raise DataError(f"{where}: ids[{int(empty[0])}] is empty")
    seen: dict[str, int] = {}
    for i, key in enumerate(text):
        if key in seen:
            raise DataError(f"{where}: ids[{seen[key]}] and ids[{i}] are both {key!r}")
        seen[key] = i
    return tuple(text)


def _array_outcome(
    y: NDArray[Any], kind: str, n: int, where: object
) -> tuple[tuple[str, ...] | None, NDArray[np.float64] | None]:
    """A classification's labels as text, or the values to regress ``(n, k)``."""
    if y.ndim not in (1, 2) or y.shape[0] != n:
        raise DataError(
            f"{where}: y must be (N,) or (N, k) with N = {n} (the sequences in X), but has shape "
            f"{y.shape}"
        )
    if kind == "classify":
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim != 1:
            raise DataError(
                f"a classification has one label per sequence, but y has shape {y.shape}"
            )
        text = _as_text(pd.Series(y, dtype=object))
        empty = np.flatnonzero(pd.isna(text))
        if len(empty):
            raise DataError(f"{where}: y[{int(empty[0])}] (a label) is missing")
        return tuple(text), None
    values = y.reshape(n, -1)
    try:
        values = values.astype(np.float64)
    except (TypeError, ValueError):
        raise DataError(
            f"the target must be numeric for [task] kind = {kind!r}, but it holds "
            f"{values.ravel()[0]!r}; use kind = 'classify' for labels"
        ) from None
    if not np.isfinite(values).all():
        raise DataError("the target holds a missing or infinite value")
    _check_size(values, lambda i: f"{where}: y[{i // values.shape[1]}]")
    return None, values


def _arrays(
    arrays: Mapping[str, Any], spec: DataSpec, kind: str, inputs: Sequence[str] | None
) -> Sequences:
    where = spec.path if spec.source in ("npz", "ts") else "the arrays"
    x, lengths = _array_checks(arrays, where, need_y=inputs is None)
    xf = x.astype(np.float64)
    _check_size(xf, lambda i: f"{where}: X[{', '.join(map(str, np.unravel_index(i, x.shape)))}]")
    columns = tuple(f"x{j}" for j in range(x.shape[2]))
    blocks, times = [], []
    for i in range(len(x)):
        seq, kept = fill_missing(
            xf[i, : lengths[i]],
            spec.missing,
            f"{where}: sequence {i} of X",
            [f"feature {j}" for j in range(x.shape[2])],
            lambda step: f"at step {step}",
        )
        blocks.append(seq)
        times.append(np.flatnonzero(kept))
    labels, targets = (None, None)
    if inputs is None:
        labels, targets = _array_outcome(np.asarray(arrays["y"]), kind, len(x), where)
    return Sequences(
        columns,
        np.concatenate(blocks),
        _offsets([len(b) for b in blocks]),
        _array_keys(arrays, len(x), where),
        np.concatenate(times),
        None,
        "ids" if "ids" in arrays else None,
        labels,
        targets,
    )
