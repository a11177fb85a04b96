"""The saved-model format: a config document (``best.json`` / ``config.json``,
:mod:`depthsearch.learn.config`) and weights.

Torch, numpy and pandas only: a model exported by ``depthsearch export`` loads and predicts
here without Optuna, SQLAlchemy or a database. The document rebuilds the model by itself (as
nanoGPT's checkpoint keeps its ``model_args``); ``model.pt`` holds only tensors, read back with
``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from depthsearch.errors import InputError
from depthsearch.learn.config import (
    CONFIG_FILE,
    FORMAT,
    MODEL_FILE,
    ModelConfig,
    load_config,
    read_document,
    write_document,
)
from depthsearch.learn.model import StackedLSTM, build_model
from depthsearch.learn.scaling import Scaler

__all__ = [
    "CONFIG_FILE",
    "FORMAT",
    "MODEL_FILE",
    "load_config",
    "load_model",
    "read_document",
    "save_model",
    "write_document",
]


def save_model(
    model: StackedLSTM,
    config: ModelConfig | Mapping[str, Any] | None,
    directory: str | Path,
    *,
    scaler: Scaler | None = None,
) -> Path:
    """Saves ``model``'s weights as ``model.pt`` and what rebuilds it as ``config.json`` in a
    folder, for :func:`load_model` (and, with a scaler, a ``Predictor``).

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


def _check_shapes(state: dict[str, Any], config: ModelConfig, what: str) -> None:
    """Compares the weights' names and shapes with those ``config`` makes, on the meta
    device (nothing allocated): a config that does not describe the weights is refused
    before a model of its size is built."""
    try:
        with torch.device("meta"):
            made = build_model(config).state_dict()
    except (RuntimeError, ValueError, OverflowError) as e:  # too large even to describe
        raise InputError(f"{what}: its model cannot be built ({str(e).splitlines()[0]})") from e
    expected = {k: tuple(v.shape) for k, v in made.items()}
    got = {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)}
    if got == expected:
        return
    wrong = next((k for k in expected if k in got and got[k] != expected[k]), None)
    if wrong is not None:
        detail = (
            f"{wrong} is {list(got[wrong])} in the weights, {list(expected[wrong])} by the config"
        )
    else:
        absent = sorted(set(expected) - set(got))
        extra = sorted(set(got) - set(expected))
        detail = f"missing {absent[:3]}" if absent else f"unexpected {extra[:3]}"
    raise InputError(f"{what}: {detail}")


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
    _check_shapes(state, cfg, f"{path} does not fit {folder / CONFIG_FILE}")
    model = build_model(cfg)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise InputError(f"{path} does not fit {folder / CONFIG_FILE}: {e}") from e
    return model.eval()
