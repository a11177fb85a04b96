"""A study at cluster scale: what a worker pays, and what the results commands take, as the
study grows to 1,000, 20,000 and 100,000 trials on PostgreSQL.

For each size N a fresh database gets the tiny study below (TPE, median pruner), filled with N
finished trials shaped like its own (benchmarks/_fill.py: bulk COPY), then:

- ``first trial`` / ``2 trials``: a new ``depthsearch worker --n-trials 2``, from its start to
  its first finished trial, and to its exit; the same on a 3-trial study for reference;
- ``4 x 4``: four workers started together, 4 tiny trials each, start to the last exit, with
  the server connections each worker holds (its two processes, from ``pg_stat_activity``,
  sampled every 20 ms) at their most;
- ``lock p50/p95``: how long a reservation holds the study's lock (granted to committed),
  over the reservations of 1, 4 and 16 workers running no-op trials (the worker loop itself:
  stale checks, lock, count, create, the incremental read, heartbeat, tell; no training, no
  sampling) for ``--noop-seconds`` each, with the reservations per second they reached;
- ``trials``/``report``/``export``: the commands' wall time on the N-trial study;
  ``dashboard``: from its start to serving, and its study page's API answer (every trial),
  first and second time.

    python benchmarks/scale.py [--pg postgresql+psycopg://postgres@127.0.0.1:5432]
                               [--sizes 1000,20000,100000] [--noop-seconds 10]

Last line: ``lock_p95_ms=X first_trial_s=Y``: X the highest p95 over the sizes and worker
counts, Y a new worker's time to its first finished trial at the largest size.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

STUDY = """
[study]
name = "scale"
n_trials = {budget}
seed = 3

[data]
source = "synthetic"
length = 400
window = 8
horizon = 2

[space]
num_layers = {{ low = 1, high = 3 }}
hidden_size = [4, 8]
dropout = {{ low = 0.0, high = 0.3 }}
lr = {{ low = 1e-3, high = 3e-2, log = true }}
batch_size = [32, 64]

[train]
max_epochs = 12
device = "cpu"
threads = 1

[sampler]
kind = "tpe"

[pruner]
kind = "median"
n_startup_trials = 3
n_warmup_steps = 3
"""

#: Runs in each no-op worker process: the real worker loop on the study, with trials that
#: return at once, the lock's hold times recorded. argv: url, go file, seconds, output file.
_NOOP = r"""
import contextlib, json, os, random, sys, time
import depthsearch.storage as storage
import depthsearch.storage.locks as locks
from depthsearch.studies import load_study
from depthsearch.learn.train import EpochResult
from depthsearch.search.objective import Planned
from depthsearch.storage.trials import TrialWrites
from depthsearch.worker.trial import Finished, Trials, WorkerResult
from depthsearch.worker.writer import Writer

url, go, seconds, out = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
holds = []
plain = locks.advisory_lock

@contextlib.contextmanager
def timed(engine, key, **kw):
    with plain(engine, key, **kw) as conn:
        granted = time.perf_counter()
        yield conn
    holds.append(time.perf_counter() - granted)  # the commit included

locks.advisory_lock = timed

class NoOp:
    def plan(self, trial):
        return Planned(None, None, 0, False, {})
    def train(self, planned, trial, history, *, on_epoch_end, resume=None):
        history.epochs.append(EpochResult(1, 0.0, random.random()))
        return {}

study, spec = load_study("scale", url)
storage.load_all_trials(study)
writer = Writer(TrialWrites(study), storage.retry_for(url, 120.0))
loop = Trials(study, spec, url, NoOp(), writer=writer)
open(out + ".ready", "w").close()
while not os.path.exists(go):
    time.sleep(0.01)
result = WorkerResult()
holds.clear()
end = time.perf_counter() + seconds
while time.perf_counter() < end:
    step = loop.run_trial(spec.n_trials)
    if isinstance(step, Finished):
        result.count(step.state)
with open(out, "w") as f:
    json.dump({"holds": holds, "trials": result.ran}, f)
"""


def fresh_database(base: str, name: str) -> str:
    admin = sqlalchemy.create_engine(f"{base}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return f"{base}/{name}"


def depthsearch(*args: str, url: str) -> subprocess.Popen[str]:
    env = {**os.environ, "DEPTHSEARCH_STORAGE": url, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [str(BIN / "depthsearch"), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run(*args: str, url: str) -> float:
    """Wall seconds of one depthsearch command (it must succeed)."""
    started = time.perf_counter()
    proc = depthsearch(*args, url=url)
    _, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"depthsearch {' '.join(args)} failed: {err.strip()[-2000:]}")
    return time.perf_counter() - started


def make_study(base: str, n: int, folder: Path) -> str:
    from _fill import fill

    from depthsearch.spec import load_spec

    url = fresh_database(base, f"ds_scale_{n}")
    path = folder / "scale.toml"
    path.write_text(STUDY.format(budget=1_000_000), encoding="utf-8")
    run("create", str(path), url=url)
    started = time.perf_counter()
    fill(url, "scale", load_spec(path), n)
    print(f"  filled {n} trials in {time.perf_counter() - started:.1f}s", flush=True)
    return url


_FINISHED = re.compile(r"trial \d+ (complete|pruned|failed)")


def new_worker(url: str) -> tuple[float, float]:
    """(seconds to the first finished trial, to the exit) of a new ``worker --n-trials 2``."""
    started = time.perf_counter()
    proc = depthsearch("worker", "--study", "scale", "--n-trials", "2", url=url)
    first = None
    assert proc.stderr is not None
    for line in proc.stderr:
        if first is None and _FINISHED.search(line):
            first = time.perf_counter() - started
    proc.wait()
    if proc.returncode != 0 or first is None:
        raise RuntimeError(f"the worker exited with {proc.returncode}")
    return first, time.perf_counter() - started


def _connections(url: str) -> dict[int, int]:
    """Server connections per depthsearch process (pid in its application_name)."""
    engine = sqlalchemy.create_engine(url.rsplit("/", 1)[0] + "/postgres")
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sqlalchemy.text(
                    "SELECT application_name FROM pg_stat_activity WHERE datname = :d"
                    " AND application_name LIKE 'depthsearch[%'"
                ),
                {"d": url.rsplit("/", 1)[1]},
            ).scalars()
            counts: dict[int, int] = {}
            for name in rows:
                pid = int(name[len("depthsearch[") : -1])
                counts[pid] = counts.get(pid, 0) + 1
            return counts
    finally:
        engine.dispose()


def _parent(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def four_by_four(url: str) -> tuple[float, int]:
    """(wall seconds of 4 workers x 4 tiny trials, most server connections one worker held)."""
    started = time.perf_counter()
    procs = [
        depthsearch("worker", "--study", "scale", "--n-trials", "4", url=url) for _ in range(4)
    ]
    workers = {p.pid for p in procs}
    most = 0
    parents: dict[int, int | None] = {}
    while any(p.poll() is None for p in procs):
        per_worker: dict[int, int] = {}
        for pid, n in _connections(url).items():
            owner = pid if pid in workers else parents.setdefault(pid, _parent(pid))
            if owner in workers:
                per_worker[owner] = per_worker.get(owner, 0) + n
        most = max([most, *per_worker.values()])
        time.sleep(0.02)
    wall = time.perf_counter() - started
    for p in procs:
        _, err = p.communicate()
        if p.returncode != 0:
            raise RuntimeError(f"a worker exited with {p.returncode}: {err.strip()[-2000:]}")
    return wall, most


def noop_workers(url: str, k: int, seconds: float, folder: Path) -> tuple[list[float], int]:
    """(lock hold times in seconds, trials) of ``k`` no-op workers running ``seconds``."""
    go = folder / f"go-{k}"
    outs = [folder / f"noop-{k}-{i}.json" for i in range(k)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _NOOP, url, str(go), str(seconds), str(out)],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for out in outs
    ]
    deadline = time.monotonic() + 600
    while not all(Path(f"{o}.ready").exists() for o in outs):
        if any(p.poll() not in (None, 0) for p in procs) or time.monotonic() > deadline:
            errs = [p.communicate()[1][-1500:] for p in procs if p.poll() not in (None, 0)]
            raise RuntimeError(f"a no-op worker did not start: {errs}")
        time.sleep(0.05)
    go.touch()
    holds: list[float] = []
    trials = 0
    for p, out in zip(procs, outs, strict=True):
        _, err = p.communicate()
        if p.returncode != 0:
            raise RuntimeError(f"a no-op worker failed: {err.strip()[-2000:]}")
        got = json.loads(out.read_text())
        holds += got["holds"]
        trials += got["trials"]
    return holds, trials


def dashboard(url: str) -> tuple[float, float, float]:
    """(seconds from ``depthsearch dashboard`` to serving, its first answer with the study's
    trials, a second one) on the study."""
    import urllib.request

    engine = sqlalchemy.create_engine(url)
    with engine.connect() as conn:
        sid = conn.execute(
            sqlalchemy.text("SELECT study_id FROM studies WHERE study_name = 'scale'")
        ).scalar_one()
    engine.dispose()
    started = time.perf_counter()
    proc = depthsearch("dashboard", "--port", "0", url=url)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("dashboard: "):
            raise RuntimeError(f"the dashboard did not start: {proc.communicate()[1][-2000:]}")
        ready = time.perf_counter() - started
        api = line.split(": ", 1)[1].strip().rsplit("/dashboard", 1)[0]
        answers = []
        for _ in range(2):
            t0 = time.perf_counter()
            with urllib.request.urlopen(f"{api}/api/studies/{sid}?after=0", timeout=600) as r:
                n = len(json.loads(r.read())["trials"])
            answers.append(time.perf_counter() - t0)
        if n == 0:
            raise RuntimeError("the dashboard answered with no trials")
        return ready, answers[0], answers[1]
    finally:
        proc.terminate()
        proc.communicate(timeout=60)


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if values else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432")
    parser.add_argument("--sizes", default="1000,20000,100000")
    parser.add_argument("--workers", default="1,4,16")
    parser.add_argument("--noop-seconds", type=float, default=10.0)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    sizes = [int(s) for s in args.sizes.split(",")]
    counts = [int(k) for k in args.workers.split(",")]
    rows = []
    worst_p95 = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        print("reference: a 3-trial study", flush=True)
        ref_url = make_study(args.pg, 3, folder)
        ref_first, ref_two = new_worker(ref_url)
        print(f"  first trial {ref_first:.1f}s, 2 trials {ref_two:.1f}s", flush=True)
        for n in sizes:
            print(f"{n} trials", flush=True)
            url = make_study(args.pg, n, folder)
            first, two = new_worker(url)
            print(f"  new worker: first trial {first:.1f}s, 2 trials {two:.1f}s", flush=True)
            wall4, conns = four_by_four(url)
            print(f"  4 workers x 4 trials: {wall4:.1f}s, <= {conns} connections", flush=True)
            lock = []
            for k in counts:
                holds, done = noop_workers(url, k, args.noop_seconds, folder)
                p50, p95 = percentile(holds, 50) * 1e3, percentile(holds, 95) * 1e3
                worst_p95 = max(worst_p95, p95)
                rate = done / args.noop_seconds
                lock.append((k, p50, p95, rate))
                print(
                    f"  {k} no-op workers: {rate:.1f} reservations/s, "
                    f"lock p50 {p50:.1f} ms p95 {p95:.1f} ms",
                    flush=True,
                )
            parquet = folder / "trials.parquet"
            t_trials = run("trials", "--study", "scale", "-o", str(parquet), url=url)
            t_report = run("report", "--study", "scale", "-o", str(folder / "report"), url=url)
            t_export = run("export", "--study", "scale", "-o", str(folder / "b.json"), url=url)
            board = dashboard(url)
            print(
                f"  trials -o parquet {t_trials:.1f}s, report {t_report:.1f}s, "
                f"export {t_export:.1f}s, dashboard up {board[0]:.1f}s, its study page's "
                f"trials {board[1]:.1f}s (again {board[2]:.1f}s)",
                flush=True,
            )
            rows.append((n, first, two, wall4, conns, lock, t_trials, t_report, t_export, board))
    print()
    print(
        f"reference (3 trials): a new worker's first trial {ref_first:.1f}s, 2 trials "
        f"{ref_two:.1f}s"
    )
    header = ["trials", "first trial s", "2 trials s", "4x4 s", "conns/worker"]
    header += [f"{k} no-op workers: res/s \\| lock p50/p95 ms" for k in counts]
    header += ["trials -o parquet s", "report s", "export s", "dashboard up / trials / again s"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for n, first, two, wall4, conns, lock, t_trials, t_report, t_export, board in rows:
        cells = [f"{n}", f"{first:.1f}", f"{two:.1f}", f"{wall4:.1f}", f"{conns}"]
        cells += [f"{rate:.1f} \\| {p50:.1f}/{p95:.1f}" for _, p50, p95, rate in lock]
        cells += [f"{t_trials:.1f}", f"{t_report:.1f}", f"{t_export:.1f}"]
        cells += [" / ".join(f"{b:.1f}" for b in board)]
        print("| " + " | ".join(cells) + " |")
    last_first = rows[-1][1] if rows else 0.0
    print(f"lock_p95_ms={worst_p95:.1f} first_trial_s={last_first:.1f}")


if __name__ == "__main__":
    main()
