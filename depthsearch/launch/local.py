"""Spawn workers per device: K per GPU (pinned with ``CUDA_VISIBLE_DEVICES``) or N on the CPU.

The launcher forwards SIGINT and SIGTERM to its workers and waits for them; each worker marks
its running trial FAIL before it exits, so a stopped launch leaves no trial RUNNING.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any, Protocol

from depthsearch._text import counted
from depthsearch.errors import InputError

#: Workers per GPU by default. Measured on one H100 (benchmarks/gpu.py, RESULTS.md): 1, 2, 4
#: and 8 workers gave 4,642, 7,980, 11,109 and 11,120 trials an hour on 64 small-to-medium
#: trials; 4 takes as many as 8 with half the processes and GPU memory.
PER_GPU = 4

__all__ = [
    "PER_GPU",
    "LaunchOutput",
    "WorkerProcess",
    "available_cores",
    "launch",
    "parse_gpus",
    "plan_workers",
]

_log = logging.getLogger(__name__)


def _own_process_group() -> dict[str, Any]:
    """Popen's arguments for a child in a new process group of this session."""
    if sys.version_info >= (3, 11):
        return {"process_group": 0}
    return {"preexec_fn": os.setpgrp}  # pragma: no cover - Python 3.10


@dataclasses.dataclass
class WorkerProcess:
    """One planned (and later started) worker."""

    device: str
    visible_devices: str | None
    threads: int
    process: subprocess.Popen[bytes] | None = None


#: What a Linux machine with an NVIDIA or AMD GPU driver shows (WSL: ``/dev/dxg``). Where none
#: is there torch sees no CUDA device, and the launcher, which only supervises, learns so
#: without importing torch (a second of CPU and its memory, in every launch).
_GPU_DRIVER_PATHS = ("/proc/driver/nvidia", "/dev/nvidiactl", "/dev/kfd", "/dev/dxg")


def visible_gpus() -> list[int]:
    """Indices of the CUDA devices this process can see (none without CUDA)."""
    if sys.platform == "linux" and not any(map(os.path.exists, _GPU_DRIVER_PATHS)):
        return []
    import torch

    return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []


def available_cores() -> int:
    """The cores this process may use: its CPU affinity, capped by what a Slurm job step was
    given on this node (``SLURM_CPUS_ON_NODE``, set by Slurm even without CPU binding)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = cores or 1
    slurm = os.environ.get("SLURM_CPUS_ON_NODE", "")
    if slurm.isdigit() and int(slurm) > 0:
        cores = min(cores, int(slurm))
    return cores


def parse_gpus(value: str, available: Sequence[int]) -> list[int]:
    """``all`` or a comma list such as ``0,2``, checked against the visible devices."""
    if value.strip() == "all":
        return list(available)
    try:
        wanted = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise InputError(
            f"--gpus must be 'all' or a comma list of device indices like '0,2', but got {value!r}"
        ) from None
    missing = [g for g in wanted if g not in available]
    if missing or not wanted:
        raise InputError(
            f"--gpus {value!r} names device(s) {missing or wanted} that are not visible; "
            f"visible CUDA devices: {list(available) or 'none'}"
        )
    return list(dict.fromkeys(wanted))


def plan_workers(
    *,
    gpus: Sequence[int],
    per_gpu: int,
    cpu_workers: int,
    cores: int,
    visible: str | None = None,
) -> list[WorkerProcess]:
    """K workers per GPU plus N CPU workers sharing the cores (at least one thread each).

    Small LSTMs train faster as several one-thread processes than as one process with many
    threads, so CPU workers split the cores between them.

    ``gpus`` are indices as this process sees them; ``visible`` is this process's own
    ``CUDA_VISIBLE_DEVICES`` (Slurm sets it to the job's GPUs, ``2,3`` say): each worker is
    pinned to the entry its index names there (``3`` for index 1), not to a physical index.
    """
    entries = [e.strip() for e in visible.split(",")] if visible else []
    plan: list[WorkerProcess] = []
    gpu_threads = max(1, cores // max(1, len(gpus) * per_gpu + cpu_workers))
    for gpu in gpus:
        device = entries[gpu] if gpu < len(entries) else str(gpu)
        for _ in range(per_gpu):
            plan.append(WorkerProcess("cuda", device, gpu_threads))
    if cpu_workers:
        threads = max(1, cores // cpu_workers)
        for _ in range(cpu_workers):
            plan.append(WorkerProcess("cpu", "" if gpus else None, threads))
    return plan


class LaunchOutput(Protocol):
    """Where a launch's lines go (the CLI's terminal): the launch itself prints nothing."""

    def line(self, text: str, *, worker: bool = False) -> None:
        """One line: a worker's relayed line (``worker``) or the launcher's own."""

    def live(self, text: str) -> None:
        """The study's progress, redrawn in place under the lines."""


def _relay(process: subprocess.Popen[bytes], tag: str, out: LaunchOutput) -> None:
    """Copies a worker's output to ours, line by line, each line behind ``tag``."""
    assert process.stdout is not None
    for raw in iter(process.stdout.readline, b""):
        out.line(f"{tag} {raw.decode('utf-8', 'replace').rstrip()}", worker=True)
    process.stdout.close()


def launch(
    plan: Sequence[WorkerProcess],
    worker_args: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    out: LaunchOutput,
    progress: Callable[[], str] | None = None,
    progress_every_s: float = 2.0,
    poll_s: float = 0.1,
) -> int:
    """Starts every planned worker and waits; returns 0, or the first failing exit code.

    Args:
        worker_args: arguments after ``depthsearch worker`` (study, data, ...).
        env: extra environment for every worker (the storage URL travels here).
        out: takes the workers' lines and one line per started and per finished worker.
        progress: the study's progress in one line, given to ``out.live`` every
            ``progress_every_s`` seconds (a database briefly away skips a redraw).
    """
    procs: list[WorkerProcess] = []
    relays: list[threading.Thread] = []
    stopping: list[int] = []

    def forward(signum: int, frame: FrameType | None) -> None:
        stopping.append(signum)
        for w in procs:
            if w.process is not None and w.process.poll() is None:
                w.process.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for i, w in enumerate(plan):
            relays.append(_start(i, w, worker_args, env or {}, out))
            procs.append(w)
            if stopping:
                break
        ticker = _Ticker(out, progress, progress_every_s)
        codes = _wait(procs, relays, out, ticker, poll_s)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if stopping:
        return 128 + stopping[0]
    failed = [c for c in codes.values() if c != 0]
    return failed[0] if failed else 0


def _start(
    i: int, w: WorkerProcess, worker_args: Sequence[str], env: dict[str, str], out: LaunchOutput
) -> threading.Thread:
    """Starts worker ``i`` and the thread that relays its lines to ``out``."""
    child_env = {**os.environ, **env, "OMP_NUM_THREADS": str(w.threads)}
    if w.visible_devices is not None:
        child_env["CUDA_VISIBLE_DEVICES"] = w.visible_devices
    cmd = [sys.executable, "-m", "depthsearch", "worker", *worker_args]
    cmd += ["--device", w.device, "--threads", str(w.threads)]
    # Each worker gets its own process group: a Ctrl-C on the terminal reaches the launcher
    # only, which forwards it once (not twice) to every worker. Not a session of its own:
    # with Linux's autogroup, each session competes for the CPU as one, so a server started
    # at idle priority from this shell would take as much CPU as a worker. Its output comes
    # back through a pipe, each line prefixed with the worker's id and device.
    w.process = subprocess.Popen(
        cmd,
        env=child_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        **_own_process_group(),
    )
    gpu = w.device == "cuda"
    where = f"GPU {w.visible_devices}" if gpu else f"CPU, {counted(w.threads, 'thread')}"
    tag = f"[{i} {'cuda:' + str(w.visible_devices) if gpu else 'cpu'}]"
    relay = threading.Thread(
        target=_relay, args=(w.process, tag, out), name=f"relay-{i}", daemon=True
    )
    relay.start()
    out.line(f"worker {i}: pid {w.process.pid} on {where}")
    return relay


@dataclasses.dataclass
class _Ticker:
    """The study's progress line, redrawn every ``every_s`` seconds."""

    out: LaunchOutput
    progress: Callable[[], str] | None
    every_s: float
    drawn_at: float = -float("inf")

    def tick(self) -> None:
        if self.progress is None or time.monotonic() - self.drawn_at < self.every_s:
            return
        self.drawn_at = time.monotonic()
        try:
            self.out.live(self.progress())
        except Exception as e:  # the database away for a moment: workers ride it out
            _log.debug("progress line: %s", e)


def _wait(
    procs: Sequence[WorkerProcess],
    relays: Sequence[threading.Thread],
    out: LaunchOutput,
    ticker: _Ticker,
    poll_s: float,
) -> dict[int, int]:
    """Waits for every started worker; their exit codes by index."""
    codes: dict[int, int] = {}
    while len(codes) < len(procs):
        for i, w in enumerate(procs):
            assert w.process is not None
            if i not in codes and (code := w.process.poll()) is not None:
                relays[i].join(timeout=10)  # its last lines first
                codes[i] = code
                out.line(f"worker {i}: pid {w.process.pid} exited with code {code}")
        ticker.tick()
        time.sleep(poll_s)
    return codes
