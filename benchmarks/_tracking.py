"""overhead.py --mlflow: trials of a running worker logged to MLflow against the same trials
not logged, in the steady state of a worker (its start, MLflow's import, the connection to the
server and the last flush left out).

A sample is one worker of :data:`TRIALS` trials; its trials 2 to ``TRIALS - 2`` are timed from
the first one's ``ask`` to the ``ask`` after the last (ask to ask: everything a trial costs),
divided by their count. That window spans several of the tracker's flushes for every shape
here, so it holds what a study of many trials pays per trial: a run created, its batches and
its end, and the server's share of the machine's CPU when the server runs here. Each repeat
times one untracked and one tracked worker, in alternating order (off-on, on-off, ...), and
the figure is the median of the paired ratios, with a 95 % bootstrap interval (the pairs
resampled): on a small shared machine one pair's ratio spreads by 5 % or more, and the interval
says whether the pairs run were enough to tell 2 % apart.

The wall clock of a small shared machine swings by 10 % and more from minute to minute; so
each ask also reads the training thread's CPU time and every thread's run delay (Linux
schedstat). Training's *lost time*, its thread off its CPU (waiting for the pruner's answers
and the database, or for a CPU) plus the other threads' waits for a CPU (torch's compute pool:
the training thread spins at a barrier while a pool thread waits), is where tracking, which
adds no work to training, can show; being small, it moves little with the machine's speed.
Each pair's extra lost time is printed as a share of the untracked trial, with its interval.
What it cannot hold: training's own work slowed through shared caches by the tracker and the
server (the wall-clock ratio holds that, within its noise).

``local`` starts an ``mlflow server`` here (SQLite backend, a temporary folder) at idle CPU
priority (``chrt --idle 0``) in this process's session, as the README says to start a server
beside training: the stand-in for the server on another machine that a study of many workers
has. (It once ran in a session of its own, where Linux's autogroup gave it as much
CPU as the training session whatever its priority: RESULTS.md.) With
MLflow 3's job runner off (``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false``: its
eight consumer processes spend about 25 s of CPU booting and ~2 % of a core polling, for GenAI
jobs a tracking server does not run), and waits until it is idle before timing. Its CPU per
tracked trial is printed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

TRACKING_ENV = "DEPTHSEARCH_MLFLOW_URI"
#: Trials per sample worker (trials 2 .. TRIALS - 2 are timed).
TRIALS = 8
#: The local server's environment: MLflow 3's job runner (GenAI jobs) off.
SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def group_cpu(pgid: int) -> float:
    """CPU seconds of the live processes of process group ``pgid`` (and their reaped
    children), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # utime, stime, cutime, cstime
            total += sum(int(f) for f in fields[11:15]) / tick
    return total


@dataclasses.dataclass(frozen=True)
class Server:
    """A tracking server: its URI, and its process group when this script started it."""

    uri: str
    pgid: int | None = None

    def cpu(self) -> float:
        """CPU seconds the server used so far (0 for a server elsewhere)."""
        return group_cpu(self.pgid) if self.pgid is not None else 0.0

    def settle(self, timeout: float = 120.0) -> None:
        """Waits until the server uses under 2 % of a core over a second."""
        deadline = time.monotonic() + timeout
        while self.pgid is not None and time.monotonic() < deadline:
            before = self.cpu()
            time.sleep(1.0)
            if self.cpu() - before < 0.02:
                return


def idle_priority() -> None:
    """This process (and what it starts) runs only on a CPU nothing else wants (Linux's
    SCHED_IDLE, ``chrt --idle 0``): a waking training thread takes its CPU back at once.
    In a process group of its own (stopped as one) but this session: with autogroup on (most
    distributions' default), a process in another session competes as a group of its own,
    whatever its policy, as much as all of this session's training together."""
    os.setpgid(0, 0)
    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))


@contextlib.contextmanager
def mlflow_server(uri: str | None, folder: Path) -> Iterator[Server | None]:
    """``uri`` as given, or for ``local`` an ``mlflow server`` started here (stopped after)."""
    if uri != "local":
        yield None if uri is None else Server(uri)
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "mlflow"),
            "server",
            "--backend-store-uri",
            f"sqlite:///{folder / 'mlflow.db'}",
            "--artifacts-destination",
            str(folder / "mlflow-artifacts"),
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **SERVER_ENV},
        preexec_fn=idle_priority,
    )
    server = Server(f"http://127.0.0.1:{port}", process.pid)
    try:
        for _ in range(600):
            try:
                with urllib.request.urlopen(f"{server.uri}/health", timeout=2):
                    break
            except OSError:
                time.sleep(0.2)
        server.settle()
        yield server
    finally:
        os.killpg(process.pid, 15)
        process.wait()


@contextlib.contextmanager
def tracked(server: Server | None) -> Iterator[None]:
    """Workers started within log to ``server`` (none: untracked)."""
    if server is None:
        yield
        return
    os.environ[TRACKING_ENV] = server.uri
    try:
        yield
    finally:
        del os.environ[TRACKING_ENV]


@dataclasses.dataclass
class Pairs:
    """Seconds per steady-state trial, untracked and tracked, one pair per repeat."""

    off: list[float] = dataclasses.field(default_factory=list)
    on: list[float] = dataclasses.field(default_factory=list)
    #: Seconds per trial training lost: its thread's off its CPU (wall - its CPU time: waiting
    #: for the pruner's answers, for the database, or for a CPU), and the other threads'
    #: waits for a CPU (torch's compute pool: the training thread spins while one waits).
    lost_off: list[float] = dataclasses.field(default_factory=list)
    lost_on: list[float] = dataclasses.field(default_factory=list)
    #: Of that, all threads' seconds runnable but waiting for a CPU (schedstat's run delay).
    delay_off: list[float] = dataclasses.field(default_factory=list)
    delay_on: list[float] = dataclasses.field(default_factory=list)
    #: The server's CPU seconds per tracked trial, per tracked sample.
    server_cpu: list[float] = dataclasses.field(default_factory=list)

    def add(self, on: bool, worker: Any) -> None:
        """A sample worker (overhead.py's ``Worker``, with ``sched``): its asks' wall clock,
        training thread's CPU time and id, each thread's run delay."""
        n = TRIALS - 3
        wall = (worker.asked[TRIALS - 1] - worker.asked[2]) / n
        (cpu0, tid, delay0), (cpu1, _, delay1) = worker.sched[2], worker.sched[TRIALS - 1]
        # Threads that ended within the window are not counted (no pool thread ends there).
        waits = {k: v - delay0.get(k, 0.0) for k, v in delay1.items()}
        delay, own = sum(waits.values()) / n, waits.get(tid, 0.0) / n
        (self.on if on else self.off).append(wall)
        # Off its CPU (waiting for answers or the database, or for a CPU), and the other
        # threads' waits for a CPU: a pool thread held off stalls the training thread on CPU.
        (self.lost_on if on else self.lost_off).append(wall - (cpu1 - cpu0) / n + delay - own)
        (self.delay_on if on else self.delay_off).append(delay)

    def ratios(self) -> list[float]:
        """Each tracked sample over the untracked one of its repeat."""
        return [a / b for a, b in zip(self.on, self.off, strict=True)]

    def ratio(self) -> float:
        """The median of the paired ratios."""
        return statistics.median(self.ratios())

    def lost_shares(self) -> list[float]:
        """Each pair's extra lost time of training (tracked - untracked) over
        the untracked trial's time."""
        return [(a - b) / t for a, b, t in zip(self.lost_on, self.lost_off, self.off, strict=True)]

    def describe(self, label: str, threads: int) -> str:
        off, on = statistics.median(self.off), statistics.median(self.on)
        server = statistics.median(self.server_cpu) * 1000
        ratios = sorted(self.ratios())
        spread = f"{ratios[len(ratios) // 4]:.2f}-{ratios[(3 * len(ratios)) // 4]:.2f}"
        lo, hi = interval([self])
        lost = [statistics.median(x) * 1000 for x in (self.lost_off, self.lost_on)]
        delay = [statistics.median(x) * 1000 for x in (self.delay_off, self.delay_on)]
        share = statistics.median(self.lost_shares()) * 100
        s_lo, s_hi = (x * 100 for x in interval([self], Pairs.lost_shares, statistics.fmean))
        return (
            f"| {label} | {threads} | {len(ratios)} | {off:.3f} | {on:.3f} | {self.ratio():.3f} "
            f"| {lo:.3f}-{hi:.3f} | {spread} | {lost[0]:.0f} / {lost[1]:.0f} "
            f"| {delay[0]:.1f} / {delay[1]:.1f} | {share:+.2f} ({s_lo:+.2f} to {s_hi:+.2f}) "
            f"| {server:.0f} |"
        )


#: Bootstrap draws for an interval (a fixed seed: the same pairs give the same interval).
DRAWS = 4000


def interval(
    rows: list[Pairs],
    values: Callable[[Pairs], list[float]] = Pairs.ratios,
    combine: Callable[[list[float]], float] = statistics.geometric_mean,
    level: float = 0.95,
) -> tuple[float, float]:
    """A bootstrap interval of ``combine`` over ``rows`` of each row's median of ``values``
    (by default the geometric mean of the rows' median paired ratios): each draw resamples
    every row's pairs."""
    rng = random.Random(0)
    draws = []
    for _ in range(DRAWS):
        medians = []
        for row in rows:
            each = values(row)
            medians.append(statistics.median(rng.choices(each, k=len(each))))
        draws.append(combine(medians))
    draws.sort()
    cut = int(DRAWS * (1 - level) / 2)
    return draws[cut], draws[DRAWS - 1 - cut]


HEADER = (
    "| shape | threads | pairs | untracked s/trial | tracked s/trial | ratio (median of pairs) "
    "| its 95 % interval | pairs' quartiles | training's lost ms/trial, untracked / tracked "
    "| of which waiting for a CPU | extra lost time, % of a trial (95 % interval) "
    "| server CPU ms/trial |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def compare(worker: Any, server: Server, repeats: int) -> Pairs:
    """``repeats`` pairs of sample workers (``worker``: overhead.py's ``Worker``), after an
    untimed tracked one (the server's first requests of the study, its caches)."""
    with tracked(server):
        worker.run(TRIALS)
    server.settle()
    pairs = Pairs()
    for i in range(repeats):
        for on in (False, True) if i % 2 == 0 else (True, False):
            before = server.cpu() if on else 0.0
            with tracked(server if on else None):
                worker.run(TRIALS)
            pairs.add(on, worker)
            if on:
                pairs.server_cpu.append((server.cpu() - before) / TRIALS)
    return pairs
