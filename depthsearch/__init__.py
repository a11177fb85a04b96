"""depthsearch: find the right depth and width for stacked-LSTM models with Optuna.

The names below are imported on first use, so that ``import depthsearch.study`` (and the
worker's reporting process, which never trains) does not pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from depthsearch.config import StudySpec, load_spec
    from depthsearch.errors import DepthsearchError
    from depthsearch.export import load_config, load_model
    from depthsearch.model import ModelConfig, StackedLSTM, build_model

__all__ = [
    "DepthsearchError",
    "ModelConfig",
    "StackedLSTM",
    "StudySpec",
    "build_model",
    "load_config",
    "load_model",
    "load_spec",
]

__version__ = "0.1.0"

_HOME = {
    "DepthsearchError": "depthsearch.errors",
    "ModelConfig": "depthsearch.model",
    "StackedLSTM": "depthsearch.model",
    "StudySpec": "depthsearch.config",
    "build_model": "depthsearch.model",
    "load_config": "depthsearch.export",
    "load_model": "depthsearch.export",
    "load_spec": "depthsearch.config",
}


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module 'depthsearch' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
