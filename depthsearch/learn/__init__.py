"""The learning code, torch / numpy / pandas only: the model, the data, the training loop and
the saved-model format. Nothing here imports Optuna or SQLAlchemy: a saved model loads and
predicts with torch alone (checked by import-linter)."""

from depthsearch.learn.model import ModelConfig, StackedLSTM, build_model
from depthsearch.learn.predictor import Predictor, predict_csv
from depthsearch.learn.saved import load_config, load_model, save_model

__all__ = [
    "ModelConfig",
    "Predictor",
    "StackedLSTM",
    "build_model",
    "load_config",
    "load_model",
    "predict_csv",
    "save_model",
]
