"""An ONNX file run by ONNX Runtime where depthsearch would run the PyTorch model
(``predict --runtime onnxruntime``); ``export --format onnx`` writes it
(:mod:`depthsearch.results.portable`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from depthsearch.errors import InputError

__all__ = ["ONNX_FILE", "TORCHSCRIPT_FILE", "OnnxModel", "onnx_runtime"]

TORCHSCRIPT_FILE = "model.ts"
ONNX_FILE = "model.onnx"


def onnx_runtime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise InputError(
            "ONNX Runtime is not installed: pip install 'depthsearch[onnx]'"
        ) from None
    return onnxruntime


class OnnxModel:
    """An ONNX file written by ``export --format onnx``, run by ONNX Runtime on the CPU, called as
    depthsearch calls its PyTorch model: ``model(x)``, or ``model(x, lengths=...)`` for a
    padded batch of sequences of different lengths (each runs on its own steps).

    Raises:
        InputError: onnxruntime is not installed, or the file is not a model it can run.
    """

    def __init__(self, path: str | Path) -> None:
        onnxruntime = onnx_runtime()
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
