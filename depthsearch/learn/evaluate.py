"""Judging a model on validation samples: the loss it trains on and, for a classification,
accuracy, macro-F1 and the confusion matrix (torch only)."""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from depthsearch.learn.data import Windows

__all__ = [
    "Evaluation",
    "assess",
    "assess_test",
    "assess_val",
    "autocast_for",
    "evaluate",
    "run_batch",
]


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """A model judged on validation samples: the loss it trains on (MSE, or cross-entropy
    for a classification) and, for a classification, accuracy, macro-F1 and the confusion
    matrix."""

    loss: float
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    confusion: list[list[int]] | None = None


def autocast_for(device: torch.device, amp: bool) -> contextlib.AbstractContextManager[object]:
    # bf16 autocast needs no loss scaling; on the CPU it is slower for LSTMs, so CUDA only.
    if amp and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def run_batch(model: Callable[..., Tensor], x: Tensor, lengths: Tensor | None) -> Tensor:
    """The model on a batch; sequences of different lengths packed, the batch cut to its
    longest sequence."""
    if lengths is None:
        out: Tensor = model(x)
        return out
    out = model(x[:, : int(lengths.max())], lengths=lengths)
    return out


def _macro_f1(confusion: Tensor) -> float:
    """The mean of every class's F1 (``2 TP / (2 TP + FP + FN)``) over the classes that occur
    in the labels or the predictions."""
    tp = confusion.diag().double()
    fp = confusion.sum(0).double() - tp
    fn = confusion.sum(1).double() - tp
    seen = (tp + fp + fn) > 0
    if not bool(seen.any()):
        return 0.0
    return float((2 * tp[seen] / (2 * tp[seen] + fp[seen] + fn[seen])).mean())


def assess(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    lengths: Tensor | None = None,
    classify: bool = False,
    unit_scale: Sequence[float] | None = None,
    batch_size: int = 4096,
    amp: bool = True,
) -> Evaluation:
    """``model`` on validation samples: mean squared error, or for a classification
    (``y``: class indices) the mean cross-entropy, accuracy, macro-F1 and confusion matrix.

    ``unit_scale`` (the target's standard deviation, one per output or one for all): also the
    RMSE and MAE in the target's own units, ``val_rmse`` and ``val_mae``."""
    was_training = model.training
    model.eval()
    total = torch.zeros((), device=x.device, dtype=torch.float64)
    # Squared and absolute errors in the target's units, summed on the device.
    in_units = torch.zeros(2, device=x.device, dtype=torch.float64)
    scale = (
        torch.tensor(unit_scale, device=x.device, dtype=torch.float32)
        if unit_scale and not classify
        else None
    )
    confusion: Tensor | None = None
    try:
        with torch.inference_mode(), autocast_for(x.device, amp):
            for start in range(0, x.shape[0], batch_size):
                part = slice(start, start + batch_size)
                pred = run_batch(
                    model, x[part], None if lengths is None else lengths[part]
                ).float()
                if not classify:
                    error = pred - y[part]
                    total += (error**2).sum(dtype=torch.float64)
                    if scale is not None:
                        error = error * scale
                        in_units[0] += (error**2).sum(dtype=torch.float64)
                        in_units[1] += error.abs().sum(dtype=torch.float64)
                    continue
                total += nn.functional.cross_entropy(pred, y[part], reduction="sum").double()
                k = pred.shape[-1]
                counts = torch.bincount(y[part] * k + pred.argmax(-1), minlength=k * k)
                confusion = counts if confusion is None else confusion + counts
    finally:
        model.train(was_training)
    if not classify:
        count = y.numel() or 1
        if scale is None:
            return Evaluation(float(total.item()) / count)
        loss, squared, absolute = torch.cat([total.view(1), in_units]).tolist()
        return Evaluation(
            loss / count, {"val_rmse": math.sqrt(squared / count), "val_mae": absolute / count}
        )
    n = max(1, y.shape[0])
    assert confusion is not None
    matrix = confusion.view(int(confusion.numel() ** 0.5), -1).cpu()
    return Evaluation(
        float(total.item()) / n,
        {
            "val_accuracy": float(matrix.diag().sum()) / n,
            "val_f1": _macro_f1(matrix),
        },
        matrix.tolist(),
    )


def _assess_part(model: nn.Module, data: Windows, part: str, amp: bool) -> Evaluation:
    x, y = getattr(data, f"x_{part}"), getattr(data, f"y_{part}")
    if x is None or y is None:
        raise ValueError(f"the data has no {part} part ([data] {part}_fraction = 0)")
    return assess(
        model,
        x,
        y,
        lengths=getattr(data, f"len_{part}"),
        classify=data.kind == "classify",
        unit_scale=data.unit_scale,
        amp=amp,
    )


def assess_val(model: nn.Module, data: Windows, *, amp: bool = True) -> Evaluation:
    """:func:`assess` on the validation samples of ``data``, as its task judges them."""
    return _assess_part(model, data, "val", amp)


def assess_test(model: nn.Module, data: Windows, *, amp: bool = True) -> Evaluation:
    """:func:`assess` on the held-out test samples of ``data`` (its metrics named ``test_*``,
    its loss ``test_loss``). Only for a choice already made: a confirmation, an export."""
    judged = _assess_part(model, data, "test", amp)
    metrics = {"test_loss": judged.loss}
    metrics.update({f"test_{k.removeprefix('val_')}": v for k, v in judged.metrics.items()})
    return Evaluation(judged.loss, metrics, judged.confusion)


def evaluate(model: nn.Module, x: Tensor, y: Tensor, **options: Any) -> float:
    """The validation loss of :func:`assess` (its keyword options): mean squared error of
    ``model`` on ``x: (n, window, features)``, ``y: (n, horizon)``, or cross-entropy."""
    return assess(model, x, y, **options).loss
