"""The trials as a table: one row per trial, on stdout or as CSV, Parquet or JSON."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from depthsearch._text import json_text, spreadsheet_cells
from depthsearch.errors import InputError
from depthsearch.search import trials as keys
from depthsearch.search.trials import metric_names
from depthsearch.studies import open_study

__all__ = ["trials_frame", "write_trials"]


def trials_frame(study_name: str, storage_url: str) -> pd.DataFrame:
    """One row per trial: number, state, value, flattened params, user attributes, duration."""
    study = open_study(study_name, storage_url)
    names = metric_names(study)
    multi = len(study.directions) > 1
    rows = []
    for t in study.get_trials(deepcopy=False):
        of = t.user_attrs.get(keys.CONFIRM_OF)
        row: dict[str, Any] = {
            "number": t.number,
            "state": t.state.name,
            # A confirmation trains a search trial's candidate again: never the search's own.
            "role": "search" if of is None else f"confirmation of {of}",
            "value": t.values[0] if t.values else math.nan,
            **(
                {f"values_{n}": v for n, v in zip(names, t.values or (), strict=False)}
                if multi
                else {}
            ),
            "duration_s": t.duration.total_seconds() if t.duration is not None else math.nan,
            "datetime_start": t.datetime_start.isoformat() if t.datetime_start else None,
        }
        row.update({f"params_{k}": v for k, v in t.params.items()})
        for key, value in t.user_attrs.items():
            row[f"user_attrs_{key}"] = (
                json_text(value, indent=None) if isinstance(value, (dict, list)) else value
            )
        rows.append(row)
    return pd.DataFrame(rows)


def write_trials(study_name: str, storage_url: str, output: str | Path) -> pd.DataFrame:
    """Writes :func:`trials_frame` as CSV, Parquet or JSON, chosen by the file's extension."""
    frame = trials_frame(study_name, storage_url)
    path = Path(output)
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            spreadsheet_cells(frame).to_csv(path, index=False)
        elif suffix == ".parquet":
            try:
                frame.to_parquet(path, index=False)
            except ImportError as e:
                raise InputError(
                    f"writing {path} needs a Parquet engine: pip install pyarrow ({e})"
                ) from e
        elif suffix == ".json":
            frame.to_json(path, orient="records", indent=2)
        else:
            raise InputError(
                f"cannot tell the format of {path}: use a .csv, .parquet or .json file name"
            )
    except OSError as e:
        raise InputError(f"cannot write {path}: {e.strerror or e}") from e
    return frame
