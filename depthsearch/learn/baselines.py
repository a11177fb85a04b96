"""What a model must beat: the naive forecasts (repeat the last value; the seasonal naive),
the training mean of a regression, the majority class of a classification, scored on the
same validation (and test) samples, in the same units as the models' losses."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from depthsearch.learn.data import Windows

__all__ = ["baselines"]


def _errors(pred: Tensor, y: Tensor, scale: Sequence[float] | None, part: str) -> dict[str, float]:
    error = (pred.double() - y.double().cpu()).reshape(len(y), -1)
    out = {f"{part}_loss": float((error**2).mean())}
    if scale:
        units = error * torch.tensor(scale, dtype=torch.float64)
        out[f"{part}_rmse"] = math.sqrt(float((units**2).mean()))
        out[f"{part}_mae"] = float(units.abs().mean())
    return out


def _majority(data: Windows, y: Tensor, part: str) -> dict[str, float]:
    k = len(data.classes)
    counts = torch.bincount(data.y_train.cpu(), minlength=k).double()
    prior = (counts / counts.sum()).clamp_min(1e-12)
    labels = y.cpu()
    majority = int(counts.argmax())
    hit = labels == majority
    # Macro-F1 over the classes that occur: only the majority class is ever predicted.
    seen = len(set(labels.tolist()) | {majority})
    tp = float(hit.sum())
    f1 = 2 * tp / (2 * tp + (len(labels) - tp) + 0.0) if len(labels) else 0.0
    return {
        f"{part}_loss": float(-prior.log()[labels].mean()),
        f"{part}_accuracy": float(hit.double().mean()),
        f"{part}_f1": f1 / seen,
    }


def baselines(data: Windows) -> dict[str, dict[str, float]]:
    """Each baseline's scores, by name: ``val_loss`` (the loss the models train on) and the
    task's metrics, and the same with ``test_`` on the test samples where there are some."""
    parts: list[tuple[str, Tensor]] = [("val", data.y_val)]
    if data.y_test is not None:
        parts.append(("test", data.y_test))
    out: dict[str, dict[str, float]] = {}
    if data.kind == "classify":
        scores: dict[str, float] = {}
        for part, y in parts:
            scores.update(_majority(data, y, part))
        return {"majority class": scores}
    scale = data.unit_scale
    if data.kind == "forecast" and data.naive:
        for name, (val, test) in data.naive.items():
            scores = _errors(val, data.y_val, scale, "val")
            if test is not None and data.y_test is not None:
                scores.update(_errors(test, data.y_test, scale, "test"))
            out[name] = scores
        return out
    mean = data.y_train.double().cpu().mean(0)
    scores = {}
    for part, y in parts:
        scores.update(_errors(mean.expand(y.shape), y, scale, part))
    return {"training mean": scores}
