"""The only caller of ``trial.suggest_*``: a space spec and a trial become one candidate.

The space is conditional: ``dropout`` exists only for two or more layers, and per-layer widths
(``hidden_size_0``, ``hidden_size_1``, ...) only for the layers the trial has.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import optuna

from depthsearch.learn.config import ModelConfig
from depthsearch.spec import Choices, Fixed, FloatRange, IntRange, ParamSpec, SpaceSpec

__all__ = ["Candidate", "suggest"]


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One sampled point: the model and its training hyperparameters."""

    model: ModelConfig
    lr: float
    batch_size: int


def _suggest(trial: optuna.Trial, name: str, param: ParamSpec) -> Any:
    if isinstance(param, Fixed):
        return param.value
    if isinstance(param, Choices):
        return trial.suggest_categorical(name, list(param.values))
    if isinstance(param, IntRange):
        return trial.suggest_int(name, param.low, param.high, step=param.step, log=param.log)
    if isinstance(param, FloatRange):
        return trial.suggest_float(name, param.low, param.high, log=param.log)
    raise TypeError(f"unknown parameter spec {param!r}")  # pragma: no cover


def suggest(
    trial: optuna.Trial, space: SpaceSpec, *, input_size: int, output_size: int
) -> Candidate:
    """Samples one candidate from ``space``.

    Parameter names as users read them in the dashboard: ``num_layers``, ``hidden_size`` (or
    ``hidden_size_0``, ``hidden_size_1``, ... when ``per_layer_hidden``), ``dropout``, ``lr``,
    ``batch_size``, and ``bidirectional``, ``residual``, ``layer_norm``, ``readout`` when
    searched.
    """
    layers = int(_suggest(trial, "num_layers", space.num_layers))
    if space.per_layer_hidden:
        widths = tuple(
            int(_suggest(trial, f"hidden_size_{i}", space.hidden_size)) for i in range(layers)
        )
    else:
        widths = (int(_suggest(trial, "hidden_size", space.hidden_size)),) * layers
    # Dropout only acts between layers, so a one-layer candidate has no such parameter.
    dropout = float(_suggest(trial, "dropout", space.dropout)) if layers > 1 else 0.0
    model = ModelConfig(
        input_size=input_size,
        hidden_sizes=widths,
        output_size=output_size,
        dropout=dropout,
        bidirectional=bool(_suggest(trial, "bidirectional", space.bidirectional)),
        residual=bool(_suggest(trial, "residual", space.residual)) if layers > 1 else False,
        layer_norm=bool(_suggest(trial, "layer_norm", space.layer_norm)) if layers > 1 else False,
        # "auto" is the study's to resolve (by its task); a bare space reads the last step.
        readout=str(_suggest(trial, "readout", space.readout)).replace("auto", "last"),
    )
    lr = float(_suggest(trial, "lr", space.lr))
    batch_size = int(_suggest(trial, "batch_size", space.batch_size))
    return Candidate(model, lr, batch_size)
