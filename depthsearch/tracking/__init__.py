"""The trials where a team already looks: an MLflow tracking server (``[tracking] mlflow``).

The study database stays the record; this package copies it, trial by trial, into MLflow from
a thread of the worker (:class:`Tracker`: every call returns at once, training never waits
for it), and registers a retrained model (:func:`register_model`). It imports neither Optuna
nor torch at module level, and MLflow only when a URI is set:
``pip install 'depthsearch[mlflow]'``.
"""

from depthsearch.tracking.client import preload
from depthsearch.tracking.records import ENV_VAR, PARENT_ATTR, Target, TrialRecord, target_of
from depthsearch.tracking.runs import Tracker

__all__ = [
    "ENV_VAR",
    "PARENT_ATTR",
    "Target",
    "Tracker",
    "TrialRecord",
    "preload",
    "target_of",
]
