"""The saved-model format: a config document (``best.json`` / ``config.json``) and weights.

Torch, numpy and pandas only: a model exported by ``depthsearch export`` loads and predicts
here without Optuna, SQLAlchemy or a database. The document rebuilds the model by itself (as
nanoGPT's checkpoint keeps its ``model_args``); ``model.pt`` holds only tensors, read back with
``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from depthsearch.errors import InputError
from depthsearch.learn.data import Scaler, input_windows
from depthsearch.learn.model import ModelConfig, StackedLSTM, build_model
from depthsearch.learn.portable import OnnxModel

__all__ = [
    "CONFIG_FILE",
    "FORMAT",
    "MODEL_FILE",
    "Forecaster",
    "load_config",
    "load_model",
    "read_document",
    "save_model",
    "write_document",
]

FORMAT = "depthsearch.config/1"
MODEL_FILE = "model.pt"
CONFIG_FILE = "config.json"


def write_document(path: Path, doc: dict[str, Any]) -> None:
    """Writes a config document as JSON, atomically (a reader never sees half a file)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        tmp.replace(path)
    except OSError as e:
        raise InputError(f"cannot write {path}: {e.strerror or e}") from e


def read_document(path: str | Path) -> dict[str, Any]:
    """Reads a config document (as ``depthsearch export`` writes it)."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{p}: no such file") from None
    except (OSError, ValueError) as e:
        raise InputError(f"{p}: not a depthsearch export ({e})") from e
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or "model" not in doc:
        raise InputError(f"{p}: not a depthsearch export (expected format {FORMAT!r})")
    return doc


def load_config(path: str | Path) -> ModelConfig:
    """The :class:`ModelConfig` of an exported config file (``best.json``)."""
    doc = read_document(path)
    try:
        return ModelConfig.from_dict(doc["model"])
    except ValueError as e:
        raise InputError(f"{path}: bad model config: {e}") from e


def save_model(
    model: StackedLSTM,
    config: ModelConfig | Mapping[str, Any] | None,
    directory: str | Path,
    *,
    scaler: Scaler | None = None,
) -> Path:
    """Saves ``model``'s weights as ``model.pt`` and what rebuilds it as ``config.json`` in a
    folder, for :func:`load_model` (and, with a scaler, :class:`Forecaster`).

    Args:
        model: the network (its weights are saved, moved to the CPU).
        config: what rebuilds it: its :class:`ModelConfig` (``None``: ``model.config``), the
            same as a dict (:meth:`ModelConfig.to_dict`), or a whole config document as
            ``depthsearch export`` writes it (with ``format``, ``model`` and more).
        directory: the folder (made when missing).
        scaler: the data's scaler (:meth:`Scaler.to_dict`), so that :func:`predict_csv`
            predicts in the target's own units.

    Raises:
        InputError: ``config`` does not describe ``model``, or the folder cannot be written.
    """
    doc: dict[str, Any]
    if config is None:
        config = model.config
    if isinstance(config, ModelConfig):
        doc = {"format": FORMAT, "model": config.to_dict()}
    elif "format" in config or "model" in config:
        doc = dict(config)
        if doc.get("format", FORMAT) != FORMAT or not isinstance(doc.get("model"), Mapping):
            raise InputError(
                f"config: a config document needs format {FORMAT!r} and a 'model' table, "
                f"but got format={doc.get('format')!r}"
            )
        doc["format"] = FORMAT
    else:
        doc = {"format": FORMAT, "model": dict(config)}
    try:
        described = ModelConfig.from_dict(doc["model"])
    except (TypeError, ValueError) as e:
        raise InputError(f"config: not a model config: {e}") from e
    if described != model.config:
        raise InputError(
            f"config: it describes {described}, but the model is {model.config}: "
            "pass the model's own config (or None)"
        )
    if scaler is not None:
        doc["scaler"] = scaler.to_dict()
    out = Path(directory)
    try:
        out.mkdir(parents=True, exist_ok=True)
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, out / MODEL_FILE)
    except OSError as e:
        raise InputError(f"cannot write to {out}: {e.strerror or e}") from e
    write_document(out / CONFIG_FILE, doc)
    return out


def read_retrained(folder: Path) -> dict[str, Any]:
    """The config document of a folder written by ``export --retrain`` (it has a scaler)."""
    doc = read_document(folder / CONFIG_FILE)
    if "scaler" not in doc:
        raise InputError(f"{folder / CONFIG_FILE} has no scaler: export with --retrain")
    return doc


def load_model(directory: str | Path) -> StackedLSTM:
    """Loads a model saved by ``depthsearch export --retrain`` (in eval mode, on the CPU).

    The weights are read with ``torch.load(..., weights_only=True)``: no pickled code runs.
    """
    folder = Path(directory)
    cfg = load_config(folder / CONFIG_FILE)
    path = folder / MODEL_FILE
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file (export with --retrain)") from None
    except Exception as e:  # torch raises what its unpickler met: KeyError, UnpicklingError...
        raise InputError(
            f"{path}: not a weights file written by `depthsearch export --retrain` "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'unreadable'})"
        ) from e
    if not isinstance(state, dict):
        raise InputError(f"{path}: holds a {type(state).__name__}, not a model's weights")
    model = build_model(cfg)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise InputError(f"{path} does not fit {folder / CONFIG_FILE}: {e}") from e
    return model.eval()


class Forecaster:
    """A saved model with its scaler and window: forecasts in the target's own units.

    ``load_model`` alone gives the network, whose outputs are standardised (the scale the
    study trained on); a ``Forecaster`` takes a frame with the study's columns, scales its
    inputs, runs the model and turns the outputs back into the target's units.
    """

    def __init__(
        self, model: StackedLSTM | OnnxModel, scaler: Scaler, window: int, horizon: int
    ) -> None:
        self.model = model
        self.scaler = scaler
        self.window = window
        self.horizon = horizon

    @classmethod
    def load(cls, directory: str | Path) -> Forecaster:
        """From a folder written by ``depthsearch export --retrain``."""
        folder = Path(directory)
        doc = read_retrained(folder)
        data = doc["data"]
        return cls(
            load_model(folder),
            Scaler.from_dict(doc["scaler"]),
            int(data["window"]),
            int(data["horizon"]),
        )

    @property
    def columns(self) -> list[str]:
        """The columns a frame must hold (the model's inputs)."""
        return list(self.scaler.columns)

    def _outputs(self, frame: pd.DataFrame) -> np.ndarray:
        missing = [c for c in self.columns if c not in frame.columns]
        if missing:
            raise InputError(
                f"the frame has no column(s) {missing}; the model needs {self.columns}"
            )
        if len(frame) < self.window:
            raise InputError(f"{len(frame)} rows, but one window needs {self.window}")
        values = frame[self.columns].to_numpy(dtype=np.float64)
        if not np.isfinite(values).all():
            raise InputError(
                f"the frame's columns {self.columns} hold a missing or infinite value"
            )
        scaler, first = self.scaler, int(self.scaler.difference)
        if len(frame) < self.window + first:
            raise InputError(
                f"{len(frame)} rows, but one window of changes needs {self.window + first}"
            )
        x = input_windows(scaler.inputs(values)[first:], self.window)
        with torch.inference_mode():
            y = self.model(x).numpy()
        out = np.asarray(scaler.inverse_target(y))
        if scaler.difference:  # changes from each window's last value, added back
            last = values[first + self.window - 1 :, self.columns.index(scaler.target)]
            out = out + last[:, None]
        return out

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The forecast for the ``horizon`` steps after the frame's last row: one row per
        step (``step`` 1, 2, ...), the target's column in its own units."""
        last = self._outputs(frame.iloc[-(self.window + int(self.scaler.difference)) :])[-1]
        return pd.DataFrame(
            {"step": np.arange(1, self.horizon + 1), self.scaler.target: last}
        ).set_index("step")

    def predict_windows(self, frame: pd.DataFrame) -> pd.DataFrame:
        """One row per window of the frame, indexed by the frame's index at the window's last
        row: ``{target}+1`` ... ``{target}+horizon`` in the target's own units."""
        values = self._outputs(frame)
        return pd.DataFrame(
            values,
            columns=[f"{self.scaler.target}+{i + 1}" for i in range(values.shape[1])],
            index=frame.index[self.window - 1 + int(self.scaler.difference) :],
        )
