"""What training sets on the whole process (torch threads, cuDNN's autotuner, glibc's
allocator), set for a worker and put back for a library caller."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from depthsearch.learn.train import keep_freed_memory

__all__ = ["training_settings"]


@contextlib.contextmanager
def training_settings(
    device: torch.device, threads: int | None, *, tune_allocator: bool
) -> Iterator[None]:
    """Torch's CPU threads (``threads``, when given) and cuDNN's autotuner (on a CUDA device)
    for the block, then back as they were.

    ``tune_allocator``: also keep freed memory for reuse (:func:`keep_freed_memory`, glibc's
    ``mallopt``). glibc cannot say what it was set to, so it cannot be put back: only a process
    that exists to train (the CLI's ``run`` and ``worker``, launch's workers) asks for it, and
    a notebook's ``run_study`` leaves the allocator alone.
    """
    threads_before = torch.get_num_threads()
    cudnn_before = torch.backends.cudnn.benchmark
    if tune_allocator:
        keep_freed_memory()
    if threads:
        torch.set_num_threads(threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = cudnn_before
        if torch.get_num_threads() != threads_before:
            torch.set_num_threads(threads_before)
