"""depthsearch: find the right depth and width for stacked-LSTM models with Optuna."""

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
