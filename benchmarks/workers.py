"""Throughput of 1 and 2 CPU workers on one study, and the share of a trial spent in storage.

Part 1 launches `depthsearch launch --cpu-workers N` on a fresh study with a fixed budget of
identical trials (a fixed architecture, no pruning) and reports trials per hour for N = 1, 2.
Part 2 runs one in-process worker with every storage call timed, on SQLite and on PostgreSQL,
and reports the share of the trials' wall time spent in storage calls.

    python benchmarks/workers.py [--budget 8] [--epochs 6] [--pg postgresql+psycopg://...]

Last line: ``speedup_2_workers=X storage_share_pg=Y``.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy

REPO = Path(__file__).resolve().parents[1]

STUDY = """
[study]
name = "{name}"
n_trials = {budget}
seed = 1

[data]
source = "csv"
path = "{data}"
target = "sunspots"
window = 24
horizon = 3

[space]
num_layers = 2
hidden_size = 32
dropout = 0.1
lr = 0.003
batch_size = 64

[train]
max_epochs = {epochs}
device = "cpu"

[pruner]
kind = "none"
"""


def write_study(folder: Path, name: str, budget: int, epochs: int) -> Path:
    path = folder / f"{name}.toml"
    data = REPO / "studies" / "data" / "sunspots.csv"
    path.write_text(STUDY.format(name=name, budget=budget, epochs=epochs, data=data))
    return path


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


def throughput(folder: Path, url: str, workers: int, budget: int, epochs: int) -> float:
    """Trials per hour for `launch --cpu-workers workers` to finish the budget."""
    name = f"tp{workers}-{uuid.uuid4().hex[:6]}"
    study = write_study(folder, name, budget, epochs)
    exe = [sys.executable, "-m", "depthsearch"]
    subprocess.run([*exe, "create", str(study), "--storage", url], check=True, capture_output=True)
    started = time.perf_counter()
    subprocess.run(
        [*exe, "launch", "--study", name, "--storage", url, "--cpu-workers", str(workers)],
        check=True,
        capture_output=True,
    )
    return budget / (time.perf_counter() - started) * 3600


def storage_share(folder: Path, url: str, budget: int, epochs: int) -> tuple[float, float]:
    """(share of trial wall time in storage calls, mean seconds per trial), one worker."""
    import optuna

    from depthsearch.config import load_spec
    from depthsearch.study import create_study
    from depthsearch.worker import run_worker

    name = f"share-{uuid.uuid4().hex[:6]}"
    spec = load_spec(write_study(folder, name, budget, epochs))
    study = create_study(spec, url)
    spent = [0.0]
    storage = study._storage
    for attr in dir(type(storage)):
        # Heartbeats run in their own thread, beside training, not in the trial's path.
        if attr.startswith("_") or attr == "record_heartbeat":
            continue
        method = getattr(storage, attr)
        if not callable(method):
            continue

        def timed(*args: Any, __m: Any = method, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return __m(*args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - t0

        setattr(storage, attr, functools.wraps(method)(timed))
    import contextlib

    import depthsearch.worker as worker_module

    plain_lock = worker_module.storage_lock

    @contextlib.contextmanager
    def timed_lock(u: str) -> Any:
        t0 = time.perf_counter()
        with plain_lock(u):
            spent[0] += time.perf_counter() - t0
            yield

    worker_module.storage_lock = timed_lock  # type: ignore[assignment]
    started = time.perf_counter()
    run_worker(study, spec, url, budget=budget)
    wall = time.perf_counter() - started
    done = [t for t in study.get_trials() if t.state == optuna.trial.TrialState.COMPLETE]
    return spent[0] / wall, wall / max(1, len(done))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres", help="admin URL"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    cores = len(os.sched_getaffinity(0))
    print(
        f"# {cores} cores, budget {args.budget} identical trials x {args.epochs} epochs, "
        f"median of {args.repeats}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        url, drop = fresh_pg(args.pg)
        try:
            rates: dict[int, list[float]] = {1: [], 2: []}
            for _ in range(args.repeats):
                for n in (1, 2):
                    rates[n].append(throughput(folder, url, n, args.budget, args.epochs))
            one, two = statistics.median(rates[1]), statistics.median(rates[2])
            print("| CPU workers | trials/hour (median) | runs |")
            print("|---|---|---|")
            for n in (1, 2):
                runs = ", ".join(f"{r:.0f}" for r in rates[n])
                print(f"| {n} | {statistics.median(rates[n]):.0f} | {runs} |")
            print(f"speedup of 2 workers over 1: {two / one:.2f}x")
            print()
            print("| storage | share of trial wall time in storage calls | s/trial |")
            print("|---|---|---|")
            shares = {}
            for label, store in (
                ("sqlite", f"sqlite:///{folder / 'share.db'}"),
                ("postgresql", url),
            ):
                share, per_trial = storage_share(folder, store, args.budget, args.epochs)
                shares[label] = share
                print(f"| {label} | {share * 100:.2f}% | {per_trial:.2f} |")
        finally:
            drop()
    print(f"speedup_2_workers={two / one:.2f} storage_share_pg={shares['postgresql'] * 100:.2f}%")


if __name__ == "__main__":
    main()
