"""A depthsearch trial against a bare PyTorch loop: same model, same data, same epochs.

The bare loop is what a user writes by hand: `nn.LSTM` + `nn.Linear`, Adam, MSE, shuffled
batches by `randperm`, gradient clipping, validation under `no_grad` after every epoch.
The depthsearch side is a trial of a study in the default storage (a SQLite file), run by
`run_worker` as a worker runs it: reserving it under the budget lock, building the model,
training, reporting every epoch and asking the median pruner (with a start-up count no study
reaches, so it asks and never stops the trial: trials stay the same length), the user
attributes and the tell. Each repeat of a row is a process of its own (see below).

Two figures per shape:
* **a trial in a running worker**: a worker runs N trials (13 small, 6 medium) and runs the bare
  loop in its training thread right after each tell (outside every lock and transaction);
  each trial after the first (the worker's warm-up) is timed from the end of the previous
  tell to the end of its own, less the bare loop between (the whole cycle: reserve, train,
  report, tell), and paired with the bare loops just before and just after it (their mean).
  What every trial of a study costs once its worker has started. Each repeat runs in a new
  process (on a 2-core VM the same loop runs a few percent faster or slower from one process
  to the next, and from one second to the next by up to 15 %: a bare loop on either side of
  every trial shares that drift); the ratio is the median of all the paired ratios of all
  the processes, with the spread of the processes' own medians.
  Two columns say how quiet the machine was meanwhile: the processes' median bare loops,
  the slowest over the fastest (1.000: the machine ran at one speed; a VM's neighbours slow it
  unseen), and the cores other work kept busy, on average, in the busiest process (other
  processes and time the hypervisor stole, from /proc/stat). A row with other load or a drift
  of more than a few percent was not timed on a quiet machine.
* **a one-trial worker**: ``run_worker(n_trials=1)`` whole, the worker's start included
  (its writer and heartbeat threads, the study's first read), over the bare loop before it.

Both at every torch thread count that ``run`` and ``launch`` choose on this machine (``launch``
gives each of its K CPU workers cores // K threads; ``run`` takes torch's default).

Then **each trial of a fresh ``depthsearch run``** (a new process, 3 trials, no pruner), as a
user starts one: every trial's ``seconds_per_epoch`` over a bare loop of the same shape and
threads in a fresh process started right after, the first trial included (torch's one-time
start in a process falls in it).

A further table lists the storage calls of the worker, by thread and call, in CPU milliseconds
(``time.thread_time`` of the calling thread) per trial: the training thread's (reservation,
the sampler's read, the tell) and the writer's and heartbeat's beside it.

    python benchmarks/overhead.py [--repeats 5] [--storage URL] [--threads 1,2] [--mlflow local]
        [--pairs N] [--tracking-only]

With ``--mlflow URI`` (``local``: an ``mlflow server`` this script starts on a free port, SQLite
backend, in a temporary folder) each shape and thread count is also timed with its trials logged
to that server (``DEPTHSEARCH_MLFLOW_URI``) against the same trials untracked, in a worker's
steady state (``_tracking.py`` says how), in ``--pairs`` pairs (default ``--repeats``); the
``tracking_ratio=X`` line is the largest (over shapes and threads) median of the paired ratios
tracked / untracked, with their geometric mean and its 95 % bootstrap interval, and the
``tracking_lost_share=`` line the same for training's extra lost time (``_tracking.py``).
``--tracking-only`` times that comparison alone.

``first_trial_ratio=X`` closes the fresh ``run`` table (the worst median ratio of a fresh
``run``'s first trial, over shapes and thread counts; ``--fresh-only`` prints that table alone);
the last line is ``overhead_ratio=X``, the largest ratio for a trial in a running worker.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import torch
from _tracking import HEADER, Pairs, compare, interval, mlflow_server
from torch import nn

#: name: (layers, hidden, batch size, epochs). "small" is the default study's smallest trial;
#: "medium" trains 6 epochs (2 s here): a trial's fixed costs weigh twice what they would at
#: 12, and its row gets 15 pairs (not 9) within the time.
SHAPES = {"small (quickstart: 1 x 16)": (1, 16, 64, 12), "medium (2 x 64)": (2, 64, 64, 6)}
#: Trials of a row's worker, by layers: its first is the warm-up, each other a pair. A small
#: row's 36 pairs (12 a process) move its median about a point less from run to run than 24
#: did; the script runs in 6-9 minutes on these 2-vCPU hosts.
TRIALS = {1: 13, 2: 6}
LR = 3e-3
#: The storage table's name for a trial's reservation (the worker's statements under the
#: study's lock: the count, the insert or the waiting trial taken, the first heartbeat).
RESERVED = "reserve (lock, count, insert, first beat)"
#: ... and for its tell (the writer's last batch with the trial's end, in one transaction).
TOLD = "tell (last reports and the end)"
SUNSPOTS_CSV = Path(__file__).resolve().parents[1] / "studies" / "data" / "sunspots.csv"


class Bare(nn.Module):
    def __init__(self, layers: int, hidden: int, horizon: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(1, hidden, layers, batch_first=True)
        self.head = nn.Linear(hidden, horizon)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        return self.head(out[:, -1])  # type: ignore[no-any-return]


def bare_loop(data: object, layers: int, hidden: int, batch: int, epochs: int) -> float:
    """Seconds to train and validate for ``epochs`` epochs, by hand."""
    x, y = data.x_train, data.y_train  # type: ignore[attr-defined]
    xv, yv = data.x_val, data.y_val  # type: ignore[attr-defined]
    started = time.perf_counter()
    torch.manual_seed(0)
    model = Bare(layers, hidden, y.shape[1])
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    loss_fn = nn.MSELoss()
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(x.shape[0])
        for i in range(0, x.shape[0], batch):
            idx = perm[i : i + batch]
            loss = loss_fn(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
        model.eval()
        with torch.no_grad():
            val = loss_fn(model(xv), yv).item()
        assert val == val  # the loss is used, as a user's loop would (and not NaN)
    return time.perf_counter() - started


def thread_counts() -> list[int]:
    """The torch thread counts ``launch`` (cores // K for K CPU workers) and ``run`` (torch's
    default) choose here."""
    from depthsearch.launch.local import available_cores

    cores = available_cores()
    return sorted({max(1, cores // k) for k in range(1, cores + 1)} | {torch.get_num_threads()})


def fresh_bare(layers: int, hidden: int, batch: int, epochs: int, threads: int) -> float:
    """Seconds per epoch of the bare loop in a new process (``--bare``), after one untimed
    epoch: torch's one-time start-up in a process (a second or more on this machine) would
    otherwise swamp the loop. The trials it is compared with pay theirs."""
    out = subprocess.run(
        [sys.executable, __file__, "--bare", *map(str, (layers, hidden, batch, epochs, threads))],
        check=True,
        capture_output=True,
        text=True,
    )
    return float(out.stdout.split()[-1])


def fresh_run(
    tmp: Path, layers: int, hidden: int, batch: int, epochs: int, threads: int
) -> list[float]:
    """``seconds_per_epoch`` of each trial of a new ``depthsearch run`` process: 3 trials of the
    shape, no pruner, ``[train] threads`` (0: run's default)."""
    import optuna

    name = f"fresh-{uuid.uuid4().hex[:6]}"
    path = tmp / f"{name}.toml"
    path.write_text(
        f'[study]\nname = "{name}"\nn_trials = 3\n'
        f'[data]\nsource = "csv"\npath = "{SUNSPOTS_CSV}"\ntarget = "sunspots"\n'
        "window = 24\nhorizon = 3\n"
        f"[space]\nnum_layers = {layers}\nhidden_size = {hidden}\ndropout = 0.0\n"
        f"lr = {LR}\nbatch_size = {batch}\n"
        f'[train]\nmax_epochs = {epochs}\ndevice = "cpu"\nthreads = {threads}\npatience = 0\n'
        '[pruner]\nkind = "none"\n[workers]\ncheckpoints = "off"\n'
    )
    url = f"sqlite:///{tmp / (name + '.db')}"
    exe = Path(sys.executable).parent / "depthsearch"
    subprocess.run([str(exe), "run", str(path), "--storage", url], check=True, capture_output=True)
    study = optuna.load_study(study_name=name, storage=url)
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    return [float(t.user_attrs["seconds_per_epoch"]) for t in trials]


def run_delay() -> dict[int, float]:
    """Seconds each live thread of this process (torch's compute pool included) spent runnable
    but waiting for a CPU (Linux schedstat), by thread id."""
    delays = {}
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(OSError, IndexError, ValueError):
            delays[int(task.name)] = int((task / "schedstat").read_text().split()[1]) / 1e9
    return delays


class Worker:
    """Runs workers on one study, timing trials by the storage calls they make."""

    def __init__(
        self, study: Any, spec: Any, url: str, data: Any, threads: int, *, sched: bool = False
    ) -> None:
        self.study, self.spec, self.url, self.data = study, spec, url, data
        self.threads = threads
        self.cpu: dict[tuple[str, str], float] = collections.defaultdict(float)
        self.calls: collections.Counter[tuple[str, str]] = collections.Counter()
        self.asked: list[float] = []
        #: With a bare loop to interleave (:meth:`interleaved`): when each tell returned,
        #: and the seconds of the bare loop run right after it.
        self.after_tell: Any = None
        self.told: list[tuple[float, float]] = []
        #: With ``sched``, each ask's CPU seconds and id of the asking thread (it trains), and
        #: the seconds each thread of this process waited for a CPU (/proc reads kept out of
        #: the other tables' asks).
        self.sched: list[tuple[float, int, dict[int, float]]] | None = [] if sched else None

    def record(self, name: str, wall_s: float, cpu_s: float) -> None:
        key = (threading.current_thread().name.removeprefix("depthsearch-"), name)
        self.cpu[key] += cpu_s
        self.calls[key] += 1
        if name == RESERVED:
            self.asked.append(time.perf_counter())
            if self.sched is not None:
                self.sched.append((time.thread_time(), threading.get_native_id(), run_delay()))
        if name == TOLD and self.after_tell is not None:
            told = time.perf_counter()
            self.told.append((told, self.after_tell()))

    def run(self, n_trials: int) -> float:
        """Seconds of the whole call."""
        from _timing import timed_methods

        from depthsearch.worker.run import run_worker

        self.asked.clear()
        if self.sched is not None:
            self.sched.clear()
        started = time.perf_counter()
        with timed_methods(self.study._storage, self.record), self.marks():
            report = run_worker(
                self.study,
                self.spec,
                self.url,
                n_trials=n_trials,
                data=self.data,
                threads=self.threads,
                tune_process=True,  # as the CLI's workers run
            )
        assert report.complete == n_trials
        return time.perf_counter() - started

    @contextlib.contextmanager
    def marks(self) -> Any:
        """Records each reservation of a trial (the worker's own statements under the study's
        lock, not a storage call) as :data:`RESERVED` (its CPU time, and the ask's time), and
        each tell as :data:`TOLD` (its end: the bare loop runs right after it)."""
        import optuna

        from depthsearch.worker.trial import Trials

        plain_reserve, plain_tell = Trials.reserve, Trials.tell

        def reserve(trials: Trials, budget: int | None) -> Any:
            wall, cpu = time.perf_counter(), time.thread_time()
            got = plain_reserve(trials, budget)
            if isinstance(got, optuna.Trial):
                self.record(RESERVED, time.perf_counter() - wall, time.thread_time() - cpu)
            return got

        def tell(trials: Trials, *args: Any, **kwargs: Any) -> bool:
            wall, cpu = time.perf_counter(), time.thread_time()
            told = plain_tell(trials, *args, **kwargs)
            self.record(TOLD, time.perf_counter() - wall, time.thread_time() - cpu)
            return told

        Trials.reserve, Trials.tell = reserve, tell  # type: ignore[method-assign,assignment]
        try:
            yield
        finally:
            Trials.reserve, Trials.tell = plain_reserve, plain_tell  # type: ignore[method-assign]

    def interleaved(self, n_trials: int, bare: Any) -> list[tuple[float, float, float]]:
        """A worker of ``n_trials`` that runs ``bare()`` in its training thread after each
        tell: each trial but the first as (its seconds from the previous tell's end to its
        own, less the bare loop between; the bare loop before it; the one after it)."""
        self.told.clear()
        self.after_tell = bare
        try:
            self.run(n_trials)
        finally:
            self.after_tell = None
        assert len(self.told) == n_trials, self.told
        return [
            (end - start - before, before, after)
            for (start, before), (end, after) in zip(self.told, self.told[1:], strict=False)
        ]


def row_spec(name: str, layers: int, hidden: int, batch: int, epochs: int, threads: int) -> Any:
    """The study of one row: the shape fixed, asked by the median pruner every epoch with a
    start-up count no study reaches (trials stay the same length)."""
    from _study import SUNSPOTS, study_spec

    return study_spec(
        name,
        1000,
        data=SUNSPOTS,
        space={
            "num_layers": layers,
            "hidden_size": hidden,
            "dropout": 0.0,
            "lr": LR,
            "batch_size": batch,
        },
        train={"max_epochs": epochs, "device": "cpu", "threads": threads, "patience": 0},
        pruner={"kind": "median", "n_startup_trials": 100_000, "n_warmup_steps": 0},
    )


def measure_row(shape: list[int], url: str | None) -> dict[str, Any]:
    """One repeat of a row, in this (new) process: a worker whose trials alternate with the
    bare loop (:meth:`Worker.interleaved`), then a one-trial worker; every storage call's CPU
    time by thread. A process's speed on a VM differs from the next one's by a few percent
    for the same loop (memory layout, where its threads land): each repeat is a process."""
    from depthsearch.learn.data import prepare
    from depthsearch.studies import create_study
    from depthsearch.worker.process import keep_freed_memory

    layers, hidden, batch, epochs, threads = shape
    torch.set_num_threads(threads)
    keep_freed_memory()  # as the worker sets it, for the bare loops before it too
    with tempfile.TemporaryDirectory() as tmp:
        url = url or f"sqlite:///{Path(tmp) / 'overhead.db'}"
        spec = row_spec(f"overhead-{uuid.uuid4().hex[:6]}", layers, hidden, batch, epochs, threads)
        data = prepare(spec.data, "cpu", seed=0)
        worker = Worker(create_study(spec, url), spec, url, data, threads)
        bare_loop(data, layers, hidden, batch, 1)  # torch's first steps in this process
        pairs = worker.interleaved(
            TRIALS[layers], lambda: bare_loop(data, layers, hidden, batch, epochs)
        )
        one = worker.run(1)
    bare = [before for _, before, _ in pairs] + [pairs[-1][2]]
    return {
        "bare": bare,
        "trial": [trial for trial, _, _ in pairs],
        "one": one,
        "ratios": [trial / ((before + after) / 2) for trial, before, after in pairs],
        "one_ratio": one / bare[-1],
        "trials_run": TRIALS[layers] + 1,
        "cpu": [[*key, ms] for key, ms in worker.cpu.items()],
        "calls": [[*key, n] for key, n in worker.calls.items()],
    }


def machine_busy_s() -> float | None:
    """CPU seconds this machine's CPUs were busy since it booted, time the hypervisor stole
    included (Linux's /proc/stat); None where there is no such file."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields)
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def children_cpu_s() -> float:
    """CPU seconds of this process's finished children."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def run_row(shape: list[int], url: str | None) -> dict[str, Any]:
    """:func:`measure_row` in a new process, with ``others``: the cores that other work kept
    busy meanwhile, on average (other processes, and time the hypervisor stole)."""
    argv = [sys.executable, __file__, "--row", *map(str, shape), *([url] if url else [])]
    busy, own, started = machine_busy_s(), children_cpu_s(), time.perf_counter()
    out = subprocess.run(argv, check=True, capture_output=True, text=True)
    result: dict[str, Any] = json.loads(out.stdout.splitlines()[-1])
    after = machine_busy_s()
    if busy is not None and after is not None:
        others = (after - busy) - (children_cpu_s() - own)
        result["others"] = max(0.0, others) / (time.perf_counter() - started)
    return result


def main() -> None:
    if len(sys.argv) == 7 and sys.argv[1] == "--bare":  # one bare loop in this new process
        layers, hidden, batch, epochs, threads = map(int, sys.argv[2:])
        torch.set_num_threads(threads or torch.get_num_threads())
        from depthsearch.learn.data import prepare
        from depthsearch.worker.process import keep_freed_memory

        # The allocator setting every worker makes (the bare loop in this script's own
        # process has it too, once a worker ran): without it the bare loop, not the trial,
        # would pay glibc's page faults.
        keep_freed_memory()
        from depthsearch.spec import DataSpec

        spec = DataSpec(source="csv", path=str(SUNSPOTS_CSV), target="sunspots", window=24)
        data = prepare(dataclasses.replace(spec, horizon=3), "cpu", seed=0)
        bare_loop(data, layers, hidden, batch, 1)  # torch's one-time start-up, not timed
        print(bare_loop(data, layers, hidden, batch, epochs) / epochs)
        return
    if len(sys.argv) in (7, 8) and sys.argv[1] == "--row":  # one repeat of a row
        logging.basicConfig(level=logging.WARNING)
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        shape = [int(a) for a in sys.argv[2:7]]
        print(json.dumps(measure_row(shape, sys.argv[7] if len(sys.argv) == 8 else None)))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--storage", default=None, help="default: a SQLite file in a temp dir")
    parser.add_argument(
        "--threads", default=None, help="comma list (default: those run and launch choose)"
    )
    parser.add_argument("--fresh-only", action="store_true", help="only the fresh `run` table")
    parser.add_argument("--no-fresh", action="store_true", help="skip the fresh `run` table")
    parser.add_argument(
        "--mlflow", default=None, help="also time trials logged to this MLflow URI ('local')"
    )
    parser.add_argument("--pairs", type=int, default=None, help="tracked pairs per row")
    parser.add_argument(
        "--shapes", default=None, help="comma list of shape names' first words (default: all)"
    )
    parser.add_argument(
        "--tracking-only", action="store_true", help="only the tracked comparison (--mlflow)"
    )
    args = parser.parse_args()
    if args.tracking_only and not args.mlflow:
        parser.error("--tracking-only needs --mlflow URI")
    known = [label.split()[0] for label in SHAPES]
    if args.shapes and (unknown := set(args.shapes.split(",")) - set(known)):
        parser.error(f"--shapes: unknown {', '.join(sorted(unknown))}; known: {', '.join(known)}")
    logging.basicConfig(level=logging.WARNING)
    import optuna

    from depthsearch.learn.data import prepare
    from depthsearch.studies import create_study

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    counts = [int(t) for t in args.threads.split(",")] if args.threads else thread_counts()
    print(
        f"# torch {torch.__version__}, {os.cpu_count()} CPUs, thread counts {counts}, "
        f"{args.repeats} repeats, each a new process: seconds are medians; a ratio is the "
        "median of all the processes' paired ratios (a trial over the mean of the bare loops "
        "just before and after it), with the spread of the processes' own medians"
    )
    if not args.tracking_only:
        print(
            "| shape | threads | epochs | bare loop s | trial in a running worker s | ratio "
            "| one-trial worker s | ratio | bare loop, slowest process / fastest | other load "
            "(cores) |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")
    ratios: list[float] = []
    tracked_pairs: list[Pairs] = []
    breakdown: list[tuple[str, str, float, float]] = []
    small = ("", 0.0)
    tracked_rows: list[str] = []
    with tempfile.TemporaryDirectory() as tmp, mlflow_server(args.mlflow, Path(tmp)) as server:
        url = args.storage or f"sqlite:///{Path(tmp) / 'overhead.db'}"
        for threads in [] if args.fresh_only else counts:
            torch.set_num_threads(threads)
            for label, (layers, hidden, batch, epochs) in SHAPES.items():
                if args.shapes and label.split()[0] not in args.shapes.split(","):
                    continue
                if args.tracking_only or server is not None:
                    name = f"overhead-{uuid.uuid4().hex[:6]}"
                    spec = row_spec(name, layers, hidden, batch, epochs, threads)
                    data = prepare(spec.data, "cpu", seed=0)
                    tracked = Worker(create_study(spec, url), spec, url, data, threads, sched=True)
                    tracked.run(1)  # warm-up
                    pairs = compare(tracked, server, args.pairs or args.repeats)
                    tracked_pairs.append(pairs)
                    tracked_rows.append(pairs.describe(label, threads))
                    if args.tracking_only:
                        print(tracked_rows[-1], flush=True)  # as it comes; the table at the end
                        continue
                shape = [layers, hidden, batch, epochs, threads]
                runs = [run_row(shape, args.storage) for _ in range(args.repeats)]
                b = statistics.median(x for r in runs for x in r["bare"])
                t = statistics.median(x for r in runs for x in r["trial"])
                o = statistics.median(r["one"] for r in runs)
                per_process = [statistics.median(r["ratios"]) for r in runs]
                ratio = statistics.median(x for r in runs for x in r["ratios"])
                one_ratio = statistics.median(r["one_ratio"] for r in runs)
                ratios.append(ratio)
                spread = f"{min(per_process):.3f}-{max(per_process):.3f}"
                cells = f"{b:.3f} | {t:.3f} | {ratio:.3f} ({spread}) | {o:.3f} | {one_ratio:.3f}"
                cells += f" | {quiet(runs)}"
                print(f"| {label} | {threads} | {epochs} | {cells} |", flush=True)
                if threads != counts[0] or breakdown:
                    continue
                # The first shape (small), where storage weighs most: CPU ms a trial.
                cpu: dict[tuple[str, str], float] = collections.defaultdict(float)
                calls: collections.Counter[tuple[str, str]] = collections.Counter()
                for r in runs:
                    for thread, call, ms in r["cpu"]:
                        cpu[thread, call] += ms
                    for thread, call, n in r["calls"]:
                        calls[thread, call] += n
                trials_run = sum(r["trials_run"] for r in runs)
                rows = [
                    (thread, call, calls[thread, call] / trials_run, ms / trials_run * 1000)
                    for (thread, call), ms in cpu.items()
                ]
                breakdown, small = sorted(rows, key=lambda r: -r[3]), (label, t - b)

        if not (args.no_fresh or args.tracking_only):
            print()
            print(
                "Each trial of a fresh `depthsearch run` (3 trials, no pruner): seconds_per_epoch "
                "over a bare loop in a fresh process"
            )
            ratios_head = " | ".join(f"trial {k} ratio" for k in (1, 2, 3))
            print(f"| shape | threads | bare s/epoch | {ratios_head} |")
            print("|---|---|---|---|---|---|")
        firsts = []
        for threads in [] if args.no_fresh or args.tracking_only else counts:
            for label, (layers, hidden, batch, epochs) in SHAPES.items():
                per: list[list[float]] = [[], [], []]
                bares = []
                for _ in range(args.repeats):
                    trials = fresh_run(Path(tmp), layers, hidden, batch, epochs, threads)
                    bare = fresh_bare(layers, hidden, batch, epochs, threads)
                    bares.append(bare)
                    for k, seconds in enumerate(trials):
                        per[k].append(seconds / bare)
                medians = [statistics.median(r) for r in per]
                firsts.append(medians[0])
                cells = " | ".join(f"{m:.3f}" for m in medians)
                print(
                    f"| {label} | {threads} | {statistics.median(bares):.4f} | {cells} |",
                    flush=True,
                )
    if firsts:
        print(f"first_trial_ratio={max(firsts):.3f}")
    if args.tracking_only:
        print_tracked(args.mlflow, tracked_rows, tracked_pairs)
        return
    if args.fresh_only:
        return
    label, extra = small
    print()
    print(f"Storage calls of the worker, by thread, per {label} trial at {counts[0]}")
    print(f"thread(s) (CPU ms; the trial in a running worker is {extra * 1000:.0f} ms longer")
    print("than the bare loop):")
    print("| thread | call | calls per trial | CPU ms per trial |")
    print("|---|---|---|---|")
    for thread, name, n, ms in breakdown:
        if n >= 0.3:
            print(f"| {thread} | {name} | {n:.2f} | {ms:.1f} |")
    total = sum(ms for *_, ms in breakdown)
    print(f"| all | | {sum(n for _, _, n, _ in breakdown):.1f} | {total:.1f} |")
    if tracked_rows:
        print_tracked(args.mlflow, tracked_rows, tracked_pairs)
    print(f"overhead_ratio={max(ratios):.3f}")


def quiet(runs: list[dict[str, Any]]) -> str:
    """Two cells that say how quiet the machine was during a row: its processes' median bare
    loops, the slowest over the fastest (the machine's own speed drifting), and the largest of
    their other loads (:func:`run_row`; "?" where it could not be read)."""
    bare = [statistics.median(r["bare"]) for r in runs]
    others = [r["others"] for r in runs if "others" in r]
    load = f"{max(others):.2f}" if len(others) == len(runs) else "?"
    return f"{max(bare) / min(bare):.3f} | {load}"


def print_tracked(uri: str, rows: list[str], pairs: list[Pairs]) -> None:
    """The tracked table and its ``tracking_ratio=`` line."""
    print()
    print(f"Trials logged to MLflow ({uri}) against the same trials untracked:")
    print(HEADER)
    print("\n".join(rows))
    medians = [p.ratio() for p in pairs]
    lo, hi = interval(pairs)
    print(
        f"tracking_ratio={max(medians):.3f} (geometric mean over rows "
        f"{statistics.geometric_mean(medians):.3f}, 95 % interval {lo:.3f}-{hi:.3f})"
    )
    shares = [statistics.median(p.lost_shares()) * 100 for p in pairs]
    s_lo, s_hi = (x * 100 for x in interval(pairs, Pairs.lost_shares, statistics.fmean))
    print(
        f"tracking_lost_share={max(shares):+.2f} % (mean over rows "
        f"{statistics.fmean(shares):+.2f} %, 95 % interval {s_lo:+.2f} to {s_hi:+.2f} %)"
    )


if __name__ == "__main__":
    main()
