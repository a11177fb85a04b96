"""A retrained model in a form that serves without depthsearch (or its Python code): a
TorchScript archive or an ONNX file, each checked against the PyTorch model before it is kept,
and :class:`OnnxModel`, which runs an ONNX file with ONNX Runtime where depthsearch would run
the PyTorch model (``predict --runtime onnxruntime``)."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from depthsearch.errors import InputError, RuntimeFailure

__all__ = [
    "ONNX_FILE",
    "TOLERANCE",
    "TORCHSCRIPT_FILE",
    "OnnxModel",
    "trace_checked",
    "write_onnx",
    "write_torchscript",
]

#: The largest difference from PyTorch's outputs an export may show on its check.
TOLERANCE = 1e-5
TORCHSCRIPT_FILE = "model.ts"
ONNX_FILE = "model.onnx"


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
    _onnx_runtime()  # before anything is written
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


def _onnx_runtime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise InputError(
            "ONNX Runtime is not installed: pip install 'depthsearch[onnx]'"
        ) from None
    return onnxruntime


class OnnxModel:
    """An ONNX file written by :func:`write_onnx`, run by ONNX Runtime on the CPU, called as
    depthsearch calls its PyTorch model: ``model(x)``, or ``model(x, lengths=...)`` for a
    padded batch of sequences of different lengths (each runs on its own steps).

    Raises:
        InputError: onnxruntime is not installed, or the file is not a model it can run.
    """

    def __init__(self, path: str | Path) -> None:
        onnxruntime = _onnx_runtime()
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(f"{self.path}: no such file (export with --format onnx)")
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only
        try:
            self.session: Any = onnxruntime.InferenceSession(
                str(self.path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as e:
            first = (str(e).splitlines() or [""])[0]
            raise InputError(f"{self.path}: not a model ONNX Runtime can run ({first})") from e
        self.input = self.session.get_inputs()[0].name

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        feed = {self.input: np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)}
        return torch.from_numpy(self.session.run(None, feed)[0])

    def __call__(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        if lengths is None:
            return self._run(x)
        out: torch.Tensor | None = None
        for steps in torch.unique(lengths).tolist():
            rows = (lengths == steps).nonzero().flatten()
            part = self._run(x[rows, : int(steps)])
            if out is None:
                out = torch.empty(len(x), *part.shape[1:], dtype=part.dtype)
            out[rows] = part
        assert out is not None
        return out
