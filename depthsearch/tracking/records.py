"""What a tracker copies: the target (server, experiment, study) and a trial as the study
database holds it, in plain values (no Optuna here)."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any, NamedTuple

from depthsearch.spec import StudySpec

__all__ = [
    "ENV_VAR",
    "PARENT_ATTR",
    "Target",
    "TrialRecord",
    "describe_error",
    "final_metrics",
    "target_of",
]

#: Names the tracking server when set (it wins over ``[tracking] mlflow``).
ENV_VAR = "DEPTHSEARCH_MLFLOW_URI"
#: The study attribute holding the parent run: ``{uri, experiment, experiment_id, run_id}``.
PARENT_ATTR = "mlflow_parent_run"
#: User attributes logged as metrics too, beside every ``val_*`` (as ``best_val_*``) and
#: ``test_*`` number.
_NUMBERS = ("param_count", "seconds_per_epoch", "epochs_trained", "best_epoch")


class Target(NamedTuple):
    """Where a study's runs go."""

    uri: str
    experiment: str
    study: str
    #: The study's database, masked (a tag of every run).
    storage: str


def target_of(spec: StudySpec, *, storage: str) -> Target | None:
    """The study's tracking target: ``DEPTHSEARCH_MLFLOW_URI``, else ``[tracking] mlflow``;
    None when neither is set."""
    uri = (os.environ.get(ENV_VAR) or "").strip() or spec.tracking.mlflow
    if not uri:
        return None
    return Target(uri, spec.tracking.experiment or spec.name, spec.name, storage)


class TrialRecord(NamedTuple):
    """What a run shows of a trial, as the study database holds it."""

    number: int
    state: str
    params: dict[str, Any]
    user_attrs: dict[str, Any]
    #: Each epoch's validation loss (``trial.report``), by epoch.
    intermediate: dict[int, float]
    #: The trial this one retries (its number), if any.
    retry_of: int | None


def final_metrics(attrs: Mapping[str, Any]) -> dict[str, float]:
    """A finished trial's numbers from its user attributes: ``best_val_*`` (the best epoch's
    validation metrics), ``test_*`` and :data:`_NUMBERS`."""
    out: dict[str, float] = {}
    for key, value in attrs.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if not math.isfinite(value):
            continue
        if key.startswith("val_"):
            out[f"best_{key}"] = float(value)
        elif key.startswith("test_") or key in _NUMBERS or key == "best_val_loss":
            out[key] = float(value)
    return out


def describe_error(error: BaseException) -> str:
    """An MLflow error in one short line (a lost server as such, not urllib3's chain)."""
    first = (str(error).strip().splitlines() or [""])[0]
    if any(s in first for s in ("Max retries exceeded", "Connection refused", "timed out")):
        return "no answer: connection refused or timed out"
    if len(first) > 200:
        first = first[:197] + "..."
    return f"{type(error).__name__}: {first}" if first else type(error).__name__
