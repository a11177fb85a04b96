"""A retrained model in a form that serves without depthsearch (or its Python code): a
TorchScript archive or an ONNX file (``export --retrain --format``), each checked against the
PyTorch model before it is kept; ``predict --runtime onnxruntime`` runs the ONNX file
(:class:`depthsearch.learn.portable.OnnxModel`)."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from depthsearch.errors import RuntimeFailure
from depthsearch.learn.portable import ONNX_FILE, TORCHSCRIPT_FILE, OnnxModel, onnx_runtime

__all__ = [
    "ONNX_FILE",
    "TOLERANCE",
    "TORCHSCRIPT_FILE",
    "trace_checked",
    "write_onnx",
    "write_torchscript",
]

#: The largest difference from PyTorch's outputs an export may show on its check.
TOLERANCE = 1e-5


class _Whole(nn.Module):
    """The model on whole sequences, ``x`` its only (positional) input: what exporters take."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.model(x)
        return out


def _check(
    run: Callable[[torch.Tensor], torch.Tensor],
    source: nn.Module,
    path: Path | None,
    *,
    input_size: int,
    length: int,
    what: str,
) -> float:
    """The largest difference between ``run`` and ``source`` on random inputs of four batch
    sizes and lengths; above TOLERANCE, ``path`` (if any) is removed and RuntimeFailure
    raised."""
    generator = torch.Generator().manual_seed(1)
    worst = 0.0
    with torch.inference_mode():
        for batch, steps in ((1, length), (5, length), (3, max(1, length // 2)), (4, 2 * length)):
            x = torch.randn(batch, steps, input_size, generator=generator)
            worst = max(worst, float((run(x) - source(x)).abs().max()))
    if worst > TOLERANCE:
        if path is not None:
            path.unlink(missing_ok=True)
        raise RuntimeFailure(
            f"the {what} export differs from the PyTorch model by {worst:.3g} (more than "
            f"{TOLERANCE:g}); not {'written' if path is not None else 'used'}"
        )
    return worst


def _traced(model: nn.Module, *, input_size: int, length: int) -> tuple[nn.Module, Any]:
    """``model`` on the CPU in eval mode (a copy), and its trace on a random input."""
    source = copy.deepcopy(model).to("cpu").eval()
    example = torch.randn(2, length, input_size, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        # torch 2.9+ calls tracing deprecated in favour of torch.export; the archive it writes
        # is what torch.jit.load (and LibTorch in C++) reads today.
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(source, example, check_trace=False)  # type: ignore[no-untyped-call]
    return source, traced


def trace_checked(model: nn.Module, *, input_size: int, length: int) -> tuple[Any, float]:
    """``model`` traced (TorchScript, in memory) and checked as :func:`write_torchscript`
    checks its archive; returns it with the largest difference seen.

    Raises:
        RuntimeFailure: the check found a difference above :data:`TOLERANCE`.
    """
    source, traced = _traced(model, input_size=input_size, length=length)
    worst = _check(traced, source, None, input_size=input_size, length=length, what="TorchScript")
    return traced, worst


def write_torchscript(model: nn.Module, path: Path, *, input_size: int, length: int) -> float:
    """Writes ``model`` (traced on the CPU, in eval mode) to ``path`` as TorchScript, loads it
    back with ``torch.jit.load`` and compares it with the model on random inputs of other
    batch sizes and sequence lengths. Returns the largest absolute difference seen.

    The archive takes ``(batch, steps, features)`` of any batch size and length and returns
    what the model does; it reads whole sequences (no ``lengths``): a padded batch of
    sequences of different lengths goes one sequence at a time.

    Raises:
        RuntimeFailure: the check found a difference above :data:`TOLERANCE` (nothing is
            left at ``path``).
    """
    source, traced = _traced(model, input_size=input_size, length=length)
    traced.save(str(path))
    loaded = torch.jit.load(str(path), map_location="cpu")  # type: ignore[no-untyped-call]
    return _check(loaded, source, path, input_size=input_size, length=length, what="TorchScript")


def write_onnx(model: nn.Module, path: Path, *, input_size: int, length: int) -> float:
    """Writes ``model`` (on the CPU, in eval mode) to ``path`` as ONNX (input ``x``:
    ``(batch, steps, features)``, both of any size; output ``y``), runs it with ONNX Runtime
    and compares it with the model on random inputs of other batch sizes and lengths.
    Returns the largest absolute difference seen.

    Stacks of one width become ONNX's own ``LSTM`` operator (all layers, both directions);
    per-layer widths, residual connections and layer norm, one operator per layer with the
    ops between them.

    Raises:
        RuntimeFailure: onnx or onnxruntime is missing, or the check found a difference
            above :data:`TOLERANCE` (nothing is left at ``path``).
    """
    onnx_runtime()  # before anything is written
    source = copy.deepcopy(model).to("cpu").eval()
    example = torch.randn(2, length, input_size, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        # The TorchScript-based exporter (dynamo=False): torch 2.13's dynamo exporter fixes
        # the sequence length of a fused LSTM to the example's, and takes seconds, not tenths.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _Whole(source).eval(),
            (example,),
            str(path),
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": {0: "batch", 1: "steps"}, "y": {0: "batch"}},
            dynamo=False,
        )
    return _check(OnnxModel(path), source, path, input_size=input_size, length=length, what="ONNX")
