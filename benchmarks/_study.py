"""Study specs for the benchmark scripts: one document shape, validated as a study file is."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from depthsearch.spec import StudySpec, spec_from_dict

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "studies" / "data"

#: The shipped series, cut as the benchmarks use them.
SUNSPOTS = {"source": "csv", "path": str(DATA / "sunspots.csv"), "target": "sunspots"}
SUNSPOTS |= {"window": 24, "horizon": 3}
DEMAND = {"source": "csv", "path": str(DATA / "taylor.csv"), "target": "demand (MW)"}
DEMAND |= {"window": 48, "horizon": 3}


def study_spec(
    name: str,
    n_trials: int,
    *,
    data: dict[str, Any],
    space: dict[str, Any],
    train: dict[str, Any],
    pruner: dict[str, Any],
    sampler: dict[str, Any] | None = None,
    seed: int = 1,
) -> StudySpec:
    """A validated spec, as if read from a study file with these tables. Trials train their
    full ``max_epochs`` (``patience = 0``) unless ``train`` asks for early stopping: the
    scripts compare trials of known length."""
    doc: dict[str, Any] = {
        "study": {"name": name, "n_trials": n_trials, "seed": seed},
        "data": data,
        "space": space,
        "train": {"patience": 0, **train},
        "pruner": pruner,
    }
    if sampler is not None:
        doc["sampler"] = sampler
    return spec_from_dict(doc, where=f"benchmark study {name!r}")
