"""What a model must beat, scored on the same validation (and test) samples, in the units of
the models' losses and with the task's metrics: the naive forecasts (the last value, the
seasonal naive, the season's climatology plus the persisted anomaly), the training mean of a
regression; the majority class of a classification, and the nearest neighbour (1-NN,
Euclidean on the prepared sequences), the field's reference."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from depthsearch.learn.data import Windows
from depthsearch.learn.evaluate import macro_f1

__all__ = ["baselines"]

#: The most distances (samples x training samples x values each) 1-NN computes.
_NN_LIMIT = 4e9


def _errors(pred: Tensor, y: Tensor, scale: Sequence[float] | None, part: str) -> dict[str, float]:
    error = (pred.double() - y.double().cpu()).reshape(len(y), -1)
    out = {f"{part}_loss": float((error**2).mean())}
    if scale:
        units = error * torch.tensor(scale, dtype=torch.float64)
        out[f"{part}_rmse"] = math.sqrt(float((units**2).mean()))
        out[f"{part}_mae"] = float(units.abs().mean())
    return out


def _labels(predicted: Tensor, labels: Tensor, k: int, part: str) -> dict[str, float]:
    confusion = torch.bincount(labels * k + predicted, minlength=k * k).view(k, k)
    return {
        f"{part}_accuracy": float((predicted == labels).double().mean()),
        f"{part}_f1": macro_f1(confusion),
        f"{part}_count": len(labels),
    }


def _majority(data: Windows, y: Tensor, part: str) -> dict[str, float]:
    k = len(data.classes)
    counts = torch.bincount(data.y_train.cpu(), minlength=k).double()
    prior = (counts / counts.sum()).clamp_min(1e-12)
    labels = y.cpu()
    predicted = torch.full_like(labels, int(counts.argmax()))
    return {
        f"{part}_loss": float(-prior.log()[labels].mean()),
        **_labels(predicted, labels, k, part),
    }


def _nearest(data: Windows, x: Tensor, y: Tensor, part: str) -> dict[str, float] | None:
    """1-NN: each sample takes the label of the training sample nearest to it (Euclidean
    over its padded, scaled steps); None where that is too many distances to compute."""
    train = data.x_train.cpu().flatten(1)
    steps = min(train.shape[1], x.shape[1] * x.shape[2])
    if len(train) * len(x) * steps > _NN_LIMIT:
        return None
    query = torch.zeros(len(x), train.shape[1])
    query[:, :steps] = x.cpu().flatten(1)[:, :steps]
    nearest = torch.cat([torch.cdist(q, train).argmin(1) for q in torch.split(query, 1024)])
    predicted = data.y_train.cpu()[nearest]
    return _labels(predicted, y.cpu(), len(data.classes), part)


def baselines(data: Windows) -> dict[str, dict[str, float]]:
    """Each baseline's scores, by name: ``val_loss`` (the loss the models train on, where it
    has one) and the task's metrics, and the same with ``test_`` on the test samples where
    there are some."""
    parts: list[tuple[str, Tensor | None, Tensor]] = [("val", data.x_val, data.y_val)]
    if data.y_test is not None:
        parts.append(("test", data.x_test, data.y_test))
    if data.kind == "classify":
        majority: dict[str, float] = {}
        nearest: dict[str, float] | None = {}
        for part, x, y in parts:
            majority.update(_majority(data, y, part))
            found = _nearest(data, x, y, part) if x is not None and nearest is not None else None
            nearest = None if found is None else {**(nearest or {}), **found}
        return {"majority class": majority, **({"1-NN (Euclidean)": nearest} if nearest else {})}
    scale = data.unit_scale
    if data.kind == "forecast" and data.naive:
        out = {}
        for name, (val, test) in data.naive.items():
            scores = _errors(val, data.y_val, scale, "val")
            if test is not None and data.y_test is not None:
                scores.update(_errors(test, data.y_test, scale, "test"))
            out[name] = scores
        return out
    mean = data.y_train.double().cpu().mean(0)
    scores = {}
    for part, _, y in parts:
        scores.update(_errors(mean.expand(y.shape), y, scale, part))
    return {"training mean": scores}
