"""Throughput of 1 and 2 CPU workers on one study, and the share of a trial spent in storage.

Part 1 launches `depthsearch launch --cpu-workers N` on a fresh PostgreSQL study with a fixed
budget of identical trials (a fixed architecture, no pruning), for both trial shapes below, and
reports trials per hour for N = 1 and 2, timed from the command's start to its exit (process
start-up included). A third row runs one `depthsearch worker --threads 1`: the per-worker
baseline, with the one thread each of the two launched workers gets. The same work done by a
bare PyTorch loop (benchmarks/overhead.py's: no Optuna, no database, no threads beside it) in
1 process with 1 and 2 threads and in 2 one-thread processes gives the machine's own ceiling:
how much a second process can add on these cores at all.
Part 2 runs one in-process worker with every storage call timed, on SQLite and on PostgreSQL,
for two trial shapes: "small" (sunspots, 2 x 32, 8 epochs) and "medium" (the half-hourly demand
series, window 48, 2 x 64, 12 epochs). The share is the time the training thread spends in
storage calls (reserving, the seed, the closing flush and the tell), over the wall time. The
epochs' reports and the attributes are written by the worker's writer thread, and the pruner
reads a cache: neither is on the training thread (a worker starts no process: the last
column, its children's CPU, stays 0). Heartbeat-thread calls are not counted.

    python benchmarks/workers.py [--budget N] [--repeats 3] [--pg postgresql+psycopg://...]

Last line: ``speedup_2_workers=X storage_share_pg=Y``: X is the lower of the two shapes'
speedups over one worker as `launch` starts it; Y is the medium shape's share.
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy

#: Trial shapes: (data, hidden size, epochs), 2 layers each.
SHAPES = {"small": ("sunspots", 32, 8), "medium": ("demand", 64, 12)}


def shape_spec(name: str, budget: int, shape: str) -> Any:
    """The study of ``budget`` identical trials of one shape (fixed architecture, no pruning)."""
    from _study import DEMAND, SUNSPOTS, study_spec

    data, hidden, epochs = SHAPES[shape]
    return study_spec(
        name,
        budget,
        data=SUNSPOTS if data == "sunspots" else DEMAND,
        space={
            "num_layers": 2,
            "hidden_size": hidden,
            "dropout": 0.1,
            "lr": 0.003,
            "batch_size": 64,
        },
        train={"max_epochs": epochs, "device": "cpu"},
        pruner={"kind": "none"},
    )


def fresh_pg(admin_url: str) -> tuple[str, Any]:
    name = f"depthsearch_bench_{uuid.uuid4().hex[:8]}"
    admin = sqlalchemy.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return admin_url.rsplit("/", 1)[0] + "/" + name, drop


def throughput(url: str, shape: str, workers: int, budget: int, one_thread: bool) -> float:
    """Trials per hour for `launch --cpu-workers workers` (or one 1-thread `worker`)."""
    from depthsearch.studies import create_study

    name = f"tp{workers}-{uuid.uuid4().hex[:6]}"
    create_study(shape_spec(name, budget, shape), url)
    exe = [sys.executable, "-m", "depthsearch"]
    command = (
        [*exe, "worker", "--study", name, "--storage", url, "--threads", "1"]
        if one_thread
        else [*exe, "launch", "--study", name, "--storage", url, "--cpu-workers", str(workers)]
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"} if one_thread else None
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env=env)
    return budget / (time.perf_counter() - started) * 3600


_BARE = """
import os, sys, torch
from overhead import bare_loop
from workers import SHAPES, shape_spec
from depthsearch.learn.data import prepare
from depthsearch.worker.process import keep_freed_memory
shape, n = sys.argv[1], int(sys.argv[2])
torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
keep_freed_memory()  # as a worker does
spec = shape_spec("bare", 1, shape)
data = prepare(spec.data, "cpu", seed=0)
_, hidden, epochs = SHAPES[shape]
for _ in range(n):
    bare_loop(data, 2, hidden, 64, epochs)
"""


def bare_throughput(shape: str, processes: int, threads: int, budget: int) -> float:
    """Trials per hour of ``budget`` bare loops split over ``processes`` processes."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent), env.get("PYTHONPATH", "")])
    shares = [budget // processes + (i < budget % processes) for i in range(processes)]
    started = time.perf_counter()
    procs = [
        subprocess.Popen([sys.executable, "-c", _BARE, shape, str(n)], env=env) for n in shares
    ]
    for p in procs:
        if p.wait() != 0:
            raise RuntimeError(f"the bare loop exited with {p.returncode}")
    return budget / (time.perf_counter() - started) * 3600


def storage_share(url: str, budget: int, shape: str) -> tuple[float, float, float, float]:
    """(share of wall time the training thread spends in storage calls, seconds per trial,
    its storage ms per trial, CPU ms per trial of the worker's child processes: none)."""
    import contextlib
    import threading

    import optuna
    from _timing import timed_methods

    import depthsearch.worker.trial as worker_module
    from depthsearch.studies import create_study
    from depthsearch.worker.run import run_worker

    name = f"share-{uuid.uuid4().hex[:6]}"
    spec = shape_spec(name, budget, shape)
    study = create_study(spec, url)
    spent = {"training": 0.0}
    main_thread = threading.main_thread()
    in_lock = threading.Event()

    def record(name: str, wall_s: float, cpu_s: float) -> None:
        # Calls made under the study's lock are in the lock's own time (below).
        if threading.current_thread() is main_thread and not in_lock.is_set():
            spent["training"] += wall_s

    # Heartbeats run in their own thread every few seconds; not part of a trial's work.
    timing = timed_methods(
        study._storage, record, skip=lambda n: n.startswith("_") or n == "record_heartbeat"
    )
    plain_lock = worker_module.locked_study

    @contextlib.contextmanager
    def timed_lock(*args: Any, **kwargs: Any) -> Any:
        # Waiting for the lock, and what is done under it, on the training thread.
        t0 = time.perf_counter()
        in_lock.set()
        try:
            with plain_lock(*args, **kwargs) as locked:
                yield locked
        finally:
            in_lock.clear()
            spent["training"] += time.perf_counter() - t0

    worker_module.locked_study = timed_lock  # type: ignore[assignment]
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    with timing:
        run_worker(study, spec, url, budget=budget)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    reporting_s = (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
    worker_module.locked_study = plain_lock  # type: ignore[assignment]
    done = [t for t in study.get_trials() if t.state == optuna.trial.TrialState.COMPLETE]
    n = max(1, len(done))
    return (
        spent["training"] / wall,
        wall / n,
        spent["training"] / n * 1000,
        reporting_s / n * 1000,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--budget", type=int, default=0, help="trials per study (default: 32 small, 8 medium)"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres", help="admin URL"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import optuna
    import torch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(1)
    cores = len(os.sched_getaffinity(0))
    budgets = {shape: args.budget or {"small": 32, "medium": 8}[shape] for shape in SHAPES}
    print(f"# {cores} cores; budgets {budgets} identical trials; median of {args.repeats}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        url, drop = fresh_pg(args.pg)
        try:
            runs = (("1 (launch: 2 threads)", 1, False), ("1 (worker --threads 1)", 1, True))
            runs += (("2 (launch: 1 thread each)", 2, False),)
            bare_runs = (
                ("bare loop: 1 process, 2 threads", 1, 2),
                ("bare loop: 1 process, 1 thread", 1, 1),
                ("bare loop: 2 processes, 1 thread each", 2, 1),
            )
            print("| shape | CPU workers | trials/hour (median) | runs |")
            print("|---|---|---|---|")
            speedups: dict[str, tuple[float, float]] = {}
            ceilings: dict[str, tuple[float, float]] = {}
            for shape in SHAPES:
                rates: dict[str, list[float]] = {label: [] for label, _, _ in runs + bare_runs}
                for _ in range(args.repeats):
                    for label, n, one_thread in runs:
                        rates[label].append(throughput(url, shape, n, budgets[shape], one_thread))
                    for label, n, threads in bare_runs:
                        rates[label].append(bare_throughput(shape, n, threads, budgets[shape]))
                med = {label: statistics.median(r) for label, r in rates.items()}
                for label, r in rates.items():
                    runs_text = ", ".join(f"{x:.0f}" for x in r)
                    print(f"| {shape} | {label} | {med[label]:.0f} | {runs_text} |")
                one, one_1t, two, bare_2t, bare_1t, bare_two = med.values()
                speedups[shape] = (two / one, two / one_1t)
                ceilings[shape] = (bare_two / bare_2t, bare_two / bare_1t)
            for shape, (default, per_thread) in speedups.items():
                print(
                    f"{shape}: 2 workers over 1 (launch defaults) {default:.2f}x; "
                    f"over one 1-thread worker {per_thread:.2f}x; the bare loop's own: "
                    f"2 processes over 1 process of 2 threads {ceilings[shape][0]:.2f}x, "
                    f"over 1 of 1 thread {ceilings[shape][1]:.2f}x"
                )
            speedup = min(default for default, _ in speedups.values())
            print()
            print(
                "| storage | trial shape | s/trial | storage ms/trial, training thread | "
                "share of wall time | child processes CPU ms/trial |"
            )
            print("|---|---|---|---|---|---|")
            shares: dict[tuple[str, str], float] = {}
            for shape in SHAPES:
                for label, store in (
                    ("sqlite", f"sqlite:///{folder / f'share-{shape}.db'}"),
                    ("postgresql", url),
                ):
                    share, per_trial, ms, beside = storage_share(store, budgets[shape], shape)
                    shares[label, shape] = share
                    print(
                        f"| {label} | {shape} | {per_trial:.2f} | {ms:.0f} | "
                        f"{share * 100:.2f}% | {beside:.0f} |"
                    )
        finally:
            drop()
    print(
        f"speedup_2_workers={speedup:.2f} "
        f"storage_share_pg={shares['postgresql', 'medium'] * 100:.2f}%"
    )


if __name__ == "__main__":
    main()
