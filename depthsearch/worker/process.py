"""What training sets on the whole process (torch threads, cuDNN's autotuner, glibc's
allocator, the garbage collector), set for a worker and put back for a library caller."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import logging
import os
import sys
from collections.abc import Iterator

import torch

__all__ = ["keep_freed_memory", "settle_heap", "training_settings"]

_log = logging.getLogger(__name__)


def settle_heap() -> None:
    """Collects what start-up left behind and freezes what survives (``gc.freeze``): the
    collector's full passes then walk what training made since, not the ~400,000 objects of
    torch, Optuna and SQLAlchemy.

    Start-up's garbage (imports, the study's first read, the samples) otherwise tips the
    collector into full passes during the first trial: two of about 150 ms each in a fresh
    worker here, in a trial of 0.6 s. For a process that exists to train (what it froze
    stays for good)."""
    gc.collect()
    gc.freeze()


def keep_freed_memory() -> bool:
    """Asks glibc to keep freed memory for reuse instead of returning it to the OS.

    A training step on the CPU allocates and frees activation buffers of a few MiB each batch;
    glibc serves those with ``mmap`` and returns them with ``munmap``, so every batch pays page
    faults. In a VM, and with several workers on one machine, that costs: two one-thread workers
    on a 2-core machine ran 30-50% slower each than one alone, with the kernel time up tenfold
    (benchmarks/RESULTS.md). Serving buffers up to 32 MiB from the heap and keeping up to
    512 MiB of freed memory removes that. Skipped where the user already set glibc's
    ``MALLOC_*`` variables, and off glibc. Returns whether the setting was applied.
    """
    if not sys.platform.startswith("linux") or any(k.startswith("MALLOC_") for k in os.environ):
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    ok = all(
        mallopt(option, value) == 1
        for option, value in (
            (m_mmap_threshold, 32 << 20),
            (m_trim_threshold, 512 << 20),
            (m_top_pad, 64 << 20),
        )
    )
    _log.debug("glibc keeps freed memory for reuse: %s", ok)
    return ok


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
