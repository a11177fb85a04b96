"""depthsearch: find the right depth and width for stacked-LSTM models with Optuna.

The names below are imported on first use, so that ``import depthsearch.studies`` (and a
command that never trains, such as ``status``) does not pay for importing torch.

The package is layered along the data path (import-linter checks it; see pyproject.toml):
``spec`` (the study file) -> ``learn`` (torch only) -> ``search`` (Optuna) -> ``storage`` ->
``studies`` -> ``worker`` | ``results`` -> ``cli``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from depthsearch._lazy import lazy_names

if TYPE_CHECKING:
    from depthsearch.errors import DepthsearchError
    from depthsearch.learn import (
        Forecaster,
        ModelConfig,
        Predictor,
        StackedLSTM,
        build_model,
        load_config,
        load_model,
        save_model,
    )
    from depthsearch.spec import StudySpec, load_spec
    from depthsearch.worker.run import run_study

__all__ = [
    "DepthsearchError",
    "Forecaster",
    "ModelConfig",
    "Predictor",
    "StackedLSTM",
    "StudySpec",
    "build_model",
    "load_config",
    "load_model",
    "load_spec",
    "run_study",
    "save_model",
]

__version__ = "0.1.0"

#: The module each name is imported from: the learning code's through depthsearch.learn,
#: which alone knows its own modules.
_HOME = {
    "DepthsearchError": "depthsearch.errors",
    "Forecaster": "depthsearch.learn",
    "ModelConfig": "depthsearch.learn",
    "Predictor": "depthsearch.learn",
    "StackedLSTM": "depthsearch.learn",
    "StudySpec": "depthsearch.spec",
    "build_model": "depthsearch.learn",
    "load_config": "depthsearch.learn",
    "load_model": "depthsearch.learn",
    "load_spec": "depthsearch.spec",
    "run_study": "depthsearch.worker.run",
    "save_model": "depthsearch.learn",
}


__getattr__ = lazy_names(__name__, _HOME)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
