"""Reading a study's data: long-format tables (CSV, Parquet) and arrays (NPZ).

A long-format table has one row per time step. ``id`` (optional) names the series or sequence a
row belongs to, ``time`` (optional) orders the rows within an id (else the file's order). Every
check names the file, the column and the first offending row or id; missing values are refused
or filled within their id (``[data] missing``), the same way for training and for ``predict``.
"""

from __future__ import annotations

import csv
import dataclasses
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from depthsearch.errors import DataError, did_you_mean
from depthsearch.spec import DataSpec

__all__ = ["Arrays", "Group", "fill_missing", "groups", "label_key", "read_npz", "read_table"]

#: What a missing value does, per id (``[data] missing``).
MISSING_RULES = ("error", "ffill", "interpolate", "drop")


@dataclasses.dataclass(frozen=True)
class Group:
    """The rows of one id, in time order: its numeric ``values`` (rows, columns) and, where
    the table has one, the column that is not numeric (a class label) and the time column."""

    key: Any
    values: NDArray[np.float64]
    labels: NDArray[Any] | None
    times: pd.Index


@dataclasses.dataclass(frozen=True)
class Arrays:
    """Sequences as arrays: ``x`` (N, T, F), ``y`` (N,) or (N, k), ``lengths`` (N,)."""

    x: NDArray[np.float64]
    y: NDArray[Any]
    lengths: NDArray[np.int64]


def _repeated_names(path: Path) -> list[str]:
    """The names that the CSV's header holds more than once (pandas renames the later ones)."""
    with path.open(newline="", encoding="utf-8", errors="replace") as f:
        header = next(csv.reader(f), [])
    seen: dict[str, int] = {}
    for name in header:
        seen[name] = seen.get(name, 0) + 1
    return [name for name, n in seen.items() if n > 1]


def read_table(spec: DataSpec, path: str | Path | None = None) -> pd.DataFrame:
    """The whole table of a CSV or Parquet source (``path``: another file of that format)."""
    p = Path(path if path is not None else spec.path or "")
    parquet = spec.source == "parquet" if path is None else p.suffix.lower() == ".parquet"
    kind = "Parquet" if parquet else "CSV"
    try:
        frame = pd.read_parquet(p) if parquet else pd.read_csv(p)
    except FileNotFoundError:
        raise DataError(f"data file not found: {p}") from None
    except Exception as e:  # pandas and pyarrow raise many kinds for a file they cannot read
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"cannot read {p} as {kind}: {first}") from e
    if not parquet:
        twice = _repeated_names(p)
        if twice:
            # pandas would read the second as "NAME.1", silently: which one is meant?
            raise DataError(
                f"{p}: column name(s) {twice} appear more than once in the header; "
                "rename them so that each column has its own name"
            )
    frame.columns = [str(c) for c in frame.columns]
    return frame


def check_columns(frame: pd.DataFrame, needed: Sequence[str], where: object) -> None:
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        names = list(map(str, frame.columns))
        hint = did_you_mean(str(missing[0]), names) if len(missing) == 1 else ""
        raise DataError(f"{where}: no column(s) {missing}{hint} (the file has columns {names})")


def numeric(frame: pd.DataFrame, column: str, where: object) -> NDArray[np.float64]:
    """A column as floats (missing values as NaN); a value that is not a number is refused."""
    values = pd.to_numeric(frame[column], errors="coerce")
    bad = values.isna() & frame[column].notna()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(
            f"{where}: column {column!r} must be numeric, but row {row + 2} holds "
            f"{frame[column].iloc[row]!r}"
        )
    out: NDArray[np.float64] = values.to_numpy(dtype=np.float64)
    if np.isinf(out).any():
        raise DataError(f"{where}: column {column!r} holds an infinite value")
    return out


def fill_missing(
    values: NDArray[np.float64],
    rule: str,
    what: str,
    columns: Sequence[str],
    place: Callable[[int], str],
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """One id's rows with its missing values treated by ``rule``; also the rows kept.

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
    return out, keep


def label_key(value: Any) -> Any:
    """A label as JSON keeps it: numpy scalars become Python ones."""
    return value.item() if isinstance(value, np.generic) else value


def _order(frame: pd.DataFrame, spec: DataSpec, where: object) -> pd.DataFrame:
    """The rows in time order within each id (stable: the file's order among equal times)."""
    if spec.time is None:
        return frame
    raw = frame[spec.time]
    if raw.isna().any():
        row = int(np.flatnonzero(raw.isna().to_numpy())[0])
        raise DataError(f"{where}: column {spec.time!r} (the time) is empty on row {row + 2}")
    if pd.api.types.is_numeric_dtype(raw) or pd.api.types.is_datetime64_any_dtype(raw):
        order = raw
    else:
        try:
            order = pd.to_datetime(raw, format="mixed")
        except (ValueError, TypeError) as e:
            raise DataError(
                f"{where}: column {spec.time!r} (the time) must hold numbers or dates, but "
                f"{str(e).splitlines()[0]}"
            ) from None
    keys = ["_id"] if "_id" in frame.columns else []
    if keys:
        clash = pd.DataFrame({"id": frame["_id"].to_numpy(), "t": order.to_numpy()}).duplicated()
    else:
        clash = pd.Series(order.to_numpy()).duplicated()
    if clash.any():
        row = int(np.flatnonzero(clash.to_numpy())[0])
        owner = f" of id {label_key(frame['_id'].iloc[row])!r}" if keys else ""
        raise DataError(
            f"{where}: two rows{owner} have the time {raw.iloc[row]!r} (row {row + 2}); "
            "each time may appear once per id"
        )
    sorted_frame = frame.assign(_order=order.to_numpy()).sort_values(
        [*keys, "_order"], kind="stable"
    )
    return sorted_frame.drop(columns="_order")


def groups(
    frame: pd.DataFrame,
    spec: DataSpec,
    columns: Sequence[str],
    *,
    label: str | None = None,
    where: object,
) -> list[Group]:
    """The table as one group per id (one group without ``id``), in the order ids first
    appear, each in time order, its missing values treated by ``[data] missing``.

    ``columns`` are read as numbers; ``label`` (a class column) is kept as it is and must be
    constant within an id.
    """
    needed = [*columns, *([label] if label else []), *(c for c in (spec.id, spec.time) if c)]
    check_columns(frame, list(dict.fromkeys(needed)), where)
    if len(frame) == 0:
        raise DataError(f"{where}: the table has no rows")
    numbers = np.column_stack([numeric(frame, c, where) for c in columns])
    table = pd.DataFrame(numbers, columns=list(columns), index=frame.index)
    if spec.id is not None:
        ids = frame[spec.id]
        if ids.isna().any():
            row = int(np.flatnonzero(ids.isna().to_numpy())[0])
            raise DataError(f"{where}: column {spec.id!r} (the id) is empty on row {row + 2}")
        table["_id"] = ids.to_numpy()
    if label is not None:
        table["_label"] = frame[label].to_numpy()
    if spec.time is not None:
        table[spec.time] = frame[spec.time].to_numpy()
    table = _order(table, spec, where)
    parts = (
        [(key, part) for key, part in table.groupby("_id", sort=False)]
        if spec.id is not None
        else [(None, table)]
    )
    out = []
    line = "on line {}" if spec.source == "csv" else "in row {}"
    for key, part in parts:
        what = f"{where}: id {label_key(key)!r}" if key is not None else f"{where}"
        rows = part.index.to_numpy()

        def place(i: int, rows: NDArray[Any] = rows) -> str:
            return line.format(int(rows[i]) + (2 if spec.source == "csv" else 1))

        values, kept = fill_missing(
            part[list(columns)].to_numpy(dtype=np.float64), spec.missing, what, columns, place
        )
        labels = None
        if label is not None:
            labels = part["_label"].to_numpy()[kept]
            if pd.isna(labels).any():
                raise DataError(f"{what}: column {label!r} (the label) has a missing value")
        times = (
            pd.Index(part[spec.time].to_numpy()[kept])
            if spec.time
            else pd.Index(np.flatnonzero(kept))
        )
        out.append(Group(label_key(key), values, labels, times))
    return out


def read_npz(spec: DataSpec, path: str | Path | None = None, *, need_y: bool = True) -> Arrays:
    """``X`` (N, T, F), ``y`` (N,) or (N, k) and optional ``lengths`` (N,) from an NPZ file,
    checked; missing steps of ``X`` treated by ``[data] missing`` within each sequence."""
    p = Path(path if path is not None else spec.path or "")
    if p.is_file() and not zipfile.is_zipfile(p):  # np.load would talk of pickles
        raise DataError(
            f"cannot read {p} as NPZ: not a zip of .npy arrays (as numpy.savez writes)"
        )
    try:
        with np.load(p, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except FileNotFoundError:
        raise DataError(f"data file not found: {p}") from None
    except Exception as e:  # zipfile, numpy and pickle refusals
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"cannot read {p} as NPZ: {first}") from e
    names = sorted(arrays)
    wanted = ["X", "y"] if need_y else ["X"]
    missing = [k for k in wanted if k not in arrays]
    if missing:
        raise DataError(
            f"{p}: no array(s) {missing} (it has {names}); an NPZ source holds X (N, T, F), "
            "y (N,) or (N, k) and optionally lengths (N,)"
        )
    x = arrays["X"]
    if x.ndim != 3 or x.shape[0] < 1 or x.shape[1] < 1 or x.shape[2] < 1:
        raise DataError(f"{p}: X must be (N, T, F) with N, T, F >= 1, but has shape {x.shape}")
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise DataError(f"{p}: X must hold real numbers, but its dtype is {x.dtype}")
    n, t = x.shape[0], x.shape[1]
    y = arrays.get("y", np.zeros((n,), dtype=np.float64))
    if y.ndim not in (1, 2) or y.shape[0] != n:
        raise DataError(
            f"{p}: y must be (N,) or (N, k) with N = {n} (the sequences in X), but has shape "
            f"{y.shape}"
        )
    if "lengths" in arrays:
        lengths = arrays["lengths"]
        if lengths.shape != (n,) or not np.issubdtype(lengths.dtype, np.integer):
            raise DataError(
                f"{p}: lengths must be (N,) integers with N = {n}, but has shape "
                f"{lengths.shape} and dtype {lengths.dtype}"
            )
        bad = np.flatnonzero((lengths < 1) | (lengths > t))
        if len(bad):
            raise DataError(
                f"{p}: lengths[{int(bad[0])}] = {int(lengths[bad[0]])}, but each length must be "
                f"in [1, {t}] (T, the steps in X)"
            )
    else:
        lengths = np.full(n, t, dtype=np.int64)
    xf = x.astype(np.float64)
    if np.isinf(xf).any():
        raise DataError(f"{p}: X holds an infinite value")
    out = np.zeros_like(xf)
    new_lengths = lengths.astype(np.int64).copy()
    for i in range(n):
        seq, _ = fill_missing(
            xf[i, : lengths[i]],
            spec.missing,
            f"{p}: sequence {i} of X",
            [f"feature {j}" for j in range(x.shape[2])],
            lambda step: f"at step {step}",
        )
        if len(seq) == 0:
            raise DataError(f"{p}: sequence {i} has no step left after [data] missing")
        out[i, : len(seq)] = seq
        new_lengths[i] = len(seq)
    return Arrays(out, y, new_lengths)
