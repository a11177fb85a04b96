"""The learning code, torch / numpy / pandas only: the model, the data, the training loop and
the saved-model format. Nothing here imports Optuna or SQLAlchemy: a saved model loads and
predicts with torch alone (checked by import-linter).

The names below are imported on first use: :mod:`depthsearch.learn.config` (what rebuilds a
model, and its document) loads without torch, for the commands that never build one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from depthsearch._lazy import lazy_names

if TYPE_CHECKING:
    from depthsearch.learn.config import ModelConfig, load_config
    from depthsearch.learn.model import StackedLSTM, build_model
    from depthsearch.learn.predictor import Forecaster, Predictor, predict_csv
    from depthsearch.learn.saved import load_model, save_model

__all__ = [
    "Forecaster",
    "ModelConfig",
    "Predictor",
    "StackedLSTM",
    "build_model",
    "load_config",
    "load_model",
    "predict_csv",
    "save_model",
]

_HOME = {
    "Forecaster": "depthsearch.learn.predictor",
    "ModelConfig": "depthsearch.learn.config",
    "Predictor": "depthsearch.learn.predictor",
    "StackedLSTM": "depthsearch.learn.model",
    "build_model": "depthsearch.learn.model",
    "load_config": "depthsearch.learn.config",
    "load_model": "depthsearch.learn.saved",
    "predict_csv": "depthsearch.learn.predictor",
    "save_model": "depthsearch.learn.saved",
}


__getattr__ = lazy_names(__name__, _HOME)
