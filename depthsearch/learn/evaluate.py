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
    "macro_f1",
    "run_batch",
]


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """A model judged on validation samples: the loss it trains on (MSE, or cross-entropy
    for a classification), its standard error over the samples (``se``: how far apart two
    losses must be to tell their models apart on this split) and the task's metrics (a
    classification's accuracy and macro-F1 with its confusion matrix; a forecast's or a
    regression's RMSE and MAE in the target's units)."""

    loss: float
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    confusion: list[list[int]] | None = None
    se: float = 0.0


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


def macro_f1(confusion: Tensor) -> float:
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
    amp: bool = False,
) -> Evaluation:
    """``model`` on validation samples: mean squared error, or for a classification
    (``y``: class indices) the mean cross-entropy, accuracy, macro-F1 and confusion matrix;
    the loss's standard error over the samples.

    ``unit_scale`` (the target's standard deviation, one per output or one for all): also the
    RMSE and MAE in the target's own units, ``val_rmse`` and ``val_mae``."""
    was_training = model.training
    model.eval()
    parts = []
    try:
        with torch.inference_mode(), autocast_for(x.device, amp):
            for start in range(0, x.shape[0], batch_size):
                part = slice(start, start + batch_size)
                pred = run_batch(model, x[part], None if lengths is None else lengths[part])
                parts.append(_Batch(pred.float(), y[part], classify, unit_scale))
    finally:
        model.train(was_training)
    return _judged(parts, classify)


class _Batch:
    """One batch's sums, on the device: the loss (as it always was summed), each sample's
    loss (for the standard error), the errors in the target's units (only when it has unit
    scales) or the confusion."""

    def __init__(
        self, pred: Tensor, y: Tensor, classify: bool, unit_scale: Sequence[float] | None
    ) -> None:
        self.count = y.shape[0] if classify else y.numel()
        self.extra: Tensor | None = None
        if classify:
            self.total = nn.functional.cross_entropy(pred, y, reduction="sum").double()
            self.each = nn.functional.cross_entropy(pred, y, reduction="none").double()
            k = pred.shape[-1]
            self.extra = torch.bincount(y * k + pred.argmax(-1), minlength=k * k)
            return
        error = pred - y
        squared = error**2
        self.total = squared.sum(dtype=torch.float64)
        self.each = squared.reshape(len(y), -1).mean(dim=1, dtype=torch.float64)
        if unit_scale:
            units = error * torch.tensor(unit_scale, device=pred.device, dtype=torch.float32)
            self.extra = torch.stack(
                [(units**2).sum(dtype=torch.float64), units.abs().sum(dtype=torch.float64)]
            )


def _judged(parts: list[_Batch], classify: bool) -> Evaluation:
    """The batches' sums as one :class:`Evaluation`: read from the device once (the
    validation part is one batch but for the largest sets; each read waits for the device,
    and on the CPU each small op costs as much as a large one)."""
    if not parts:
        return Evaluation(0.0)
    count = sum(p.count for p in parts)
    one = parts[0]
    total = one.total if len(parts) == 1 else torch.stack([p.total for p in parts]).sum()
    each = one.each if len(parts) == 1 else torch.cat([p.each for p in parts])
    spread = each.std(unbiased=False) if len(each) > 1 else torch.zeros_like(total)
    extra = one.extra if len(parts) == 1 else _summed([p.extra for p in parts])
    if not classify:
        sums = [total.reshape(1), spread.reshape(1)]
        read = torch.cat(sums + ([extra] if extra is not None else [])).tolist()
        loss, se = read[0] / count, read[1] / math.sqrt(len(each))
        if len(read) == 2:
            return Evaluation(loss, se=se)
        squared, absolute = read[2:]
        return Evaluation(
            loss, {"val_rmse": math.sqrt(squared / count), "val_mae": absolute / count}, se=se
        )
    assert extra is not None
    loss, sd = torch.stack([total, spread]).tolist()
    matrix = extra.view(int(extra.numel() ** 0.5), -1).cpu()
    accuracy = float(matrix.diag().sum()) / count
    return Evaluation(
        loss / count,
        {"val_accuracy": accuracy, "val_f1": macro_f1(matrix)},
        matrix.tolist(),
        sd / math.sqrt(len(each)),
    )


def _summed(extras: list[Tensor | None]) -> Tensor | None:
    present = [e for e in extras if e is not None]
    return torch.stack(present).sum(0) if present else None


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


def assess_val(model: nn.Module, data: Windows, *, amp: bool = False) -> Evaluation:
    """:func:`assess` on the validation samples of ``data``, as its task judges them."""
    return _assess_part(model, data, "val", amp)


def assess_test(model: nn.Module, data: Windows, *, amp: bool = False) -> Evaluation:
    """:func:`assess` on the held-out test samples of ``data`` (its metrics named ``test_*``,
    its loss ``test_loss``). Only for a choice already made: a confirmation, an export."""
    judged = _assess_part(model, data, "test", amp)
    metrics = {"test_loss": judged.loss}
    metrics.update({f"test_{k.removeprefix('val_')}": v for k, v in judged.metrics.items()})
    return Evaluation(judged.loss, metrics, judged.confusion, judged.se)


def evaluate(model: nn.Module, x: Tensor, y: Tensor, **options: Any) -> float:
    """The validation loss of :func:`assess` (its keyword options): mean squared error of
    ``model`` on ``x: (n, window, features)``, ``y: (n, horizon)``, or cross-entropy."""
    return assess(model, x, y, **options).loss
