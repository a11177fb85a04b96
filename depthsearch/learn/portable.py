"""A retrained model in a form that serves without depthsearch (or its Python code): a
TorchScript archive, checked against the PyTorch model before it is kept."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import torch
from torch import nn

from depthsearch.errors import RuntimeFailure

__all__ = ["TOLERANCE", "write_torchscript"]

#: The largest difference from PyTorch's outputs an export may show on its check.
TOLERANCE = 1e-5


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
    source = copy.deepcopy(model).to("cpu").eval()
    generator = torch.Generator().manual_seed(0)

    def example(batch: int, steps: int) -> torch.Tensor:
        return torch.randn(batch, steps, input_size, generator=generator)

    with warnings.catch_warnings():
        # torch 2.9+ calls tracing deprecated in favour of torch.export; the archive it writes
        # is what torch.jit.load (and LibTorch in C++) reads today.
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(  # type: ignore[no-untyped-call]
            source, example(2, length), check_trace=False
        )
    traced.save(str(path))
    loaded = torch.jit.load(str(path), map_location="cpu")  # type: ignore[no-untyped-call]
    worst = 0.0
    with torch.inference_mode():
        for batch, steps in ((1, length), (5, length), (3, max(1, length // 2)), (4, 2 * length)):
            x = example(batch, steps)
            worst = max(worst, float((loaded(x) - source(x)).abs().max()))
    if worst > TOLERANCE:
        path.unlink(missing_ok=True)
        raise RuntimeFailure(
            f"the TorchScript export differs from the PyTorch model by {worst:.3g} (more than "
            f"{TOLERANCE:g}); not written"
        )
    return worst
