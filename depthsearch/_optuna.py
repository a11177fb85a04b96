"""Small shims over Optuna used by several modules."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import optuna

__all__ = ["quiet_experimental"]


@contextlib.contextmanager
def quiet_experimental() -> Iterator[None]:
    """Silences Optuna's ExperimentalWarning for the features we depend on knowingly.

    Heartbeats, stale-trial retries and TPE's multivariate/group/constant_liar flags have been
    "experimental" for years; a warning on every worker start says nothing to our users.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield
