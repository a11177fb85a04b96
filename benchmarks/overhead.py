"""A depthsearch trial against a bare PyTorch loop: same model, same data, same epochs.

The bare loop is what a user writes by hand: `nn.LSTM` + `nn.Linear`, Adam, MSE, shuffled
batches by `randperm`, gradient clipping, validation under `no_grad` after every epoch.
The depthsearch side is a trial of a study in the default storage (a SQLite file), run by
`run_worker` as a worker runs it: reserving it under the budget lock, building the model,
training, reporting every epoch and asking the median pruner (with a start-up count no study
reaches, so it asks and never stops the trial: trials stay the same length), the user
attributes and the tell. One CPU thread for training; medians of --repeats, alternating.

Two figures per shape:
* **a trial in a running worker**: a worker runs 3 trials; the middle one is timed from its
  ``ask`` to the next trial's ``ask`` (the whole cycle: reserve, train, report, tell). What
  every trial of a study costs once its worker has started.
* **a one-trial worker**: ``run_worker(n_trials=1)`` whole, the worker's start included
  (its reporting process, a second Python that imports Optuna, starts there).

A second table lists the storage calls left in the training process, by call, in CPU
milliseconds (``time.thread_time`` of the calling thread) per trial, and the CPU time of the
reporting process (per worker start and per trial), which runs beside training on another
core: the storage work moved there, it did not vanish.

    python benchmarks/overhead.py [--repeats 5] [--storage URL]

Last line: ``overhead_ratio=X``, the larger of the two shapes' ratios for a trial in a
running worker.
"""

from __future__ import annotations

import argparse
import collections
import logging
import resource
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import torch
from torch import nn

#: name: (layers, hidden, batch size, epochs). "small" is the default study's smallest trial.
SHAPES = {"small (quickstart: 1 x 16)": (1, 16, 64, 12), "medium (2 x 64)": (2, 64, 64, 12)}
LR = 3e-3


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


def children_cpu() -> float:
    """CPU seconds of this process's reaped children (the reporting processes)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Worker:
    """Runs workers on one study, timing trials by the storage calls they make."""

    def __init__(self, study: Any, spec: Any, url: str, data: Any) -> None:
        self.study, self.spec, self.url, self.data = study, spec, url, data
        self.cpu: dict[tuple[str, str], float] = collections.defaultdict(float)
        self.calls: collections.Counter[tuple[str, str]] = collections.Counter()
        self.asked: list[float] = []

    def record(self, name: str, wall_s: float, cpu_s: float) -> None:
        key = (threading.current_thread().name.removeprefix("depthsearch-"), name)
        self.cpu[key] += cpu_s
        self.calls[key] += 1
        if name == "create_new_trial":
            self.asked.append(time.perf_counter())

    def run(self, n_trials: int) -> tuple[float, float]:
        """(seconds of the whole call, CPU seconds of its reporting process)."""
        from _timing import timed_methods

        from depthsearch.worker.loop import run_worker

        self.asked.clear()
        cpu, started = children_cpu(), time.perf_counter()
        with timed_methods(self.study._storage, self.record):
            report = run_worker(
                self.study, self.spec, self.url, n_trials=n_trials, data=self.data, threads=1
            )
        assert report.complete == n_trials
        return time.perf_counter() - started, children_cpu() - cpu

    def middle_trial(self) -> tuple[float, float]:
        """(seconds of the middle trial of a 3-trial worker, ask to next ask; CPU seconds of
        that worker's reporting process)."""
        _, cpu = self.run(3)
        return self.asked[2] - self.asked[1], cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--storage", default=None, help="default: a SQLite file in a temp dir")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import optuna
    from _study import SUNSPOTS, study_spec

    from depthsearch.learn.data import prepare
    from depthsearch.studies import create_study

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(1)
    print(
        f"# training on 1 CPU thread, torch {torch.__version__}, median of {args.repeats} "
        "(after 1 warm-up)"
    )
    print(
        "| shape | epochs | bare loop s | trial in a running worker s | ratio "
        "| one-trial worker s | ratio |"
    )
    print("|---|---|---|---|---|---|---|")
    ratios = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        url = args.storage or f"sqlite:///{Path(tmp) / 'overhead.db'}"
        for label, (layers, hidden, batch, epochs) in SHAPES.items():
            name = f"overhead-{uuid.uuid4().hex[:6]}"
            spec = study_spec(
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
                train={"max_epochs": epochs, "device": "cpu", "threads": 1},
                # Asked every epoch, as in the default study; never prunes (trials stay equal).
                pruner={"kind": "median", "n_startup_trials": 100_000, "n_warmup_steps": 0},
            )
            data = prepare(spec.data, "cpu", seed=0)
            worker = Worker(create_study(spec, url), spec, url, data)
            worker.run(1), bare_loop(data, layers, hidden, batch, epochs)  # warm-up
            worker.cpu.clear(), worker.calls.clear()
            times: dict[str, list[float]] = {"bare": [], "trial": [], "one": []}
            child: dict[int, list[float]] = {1: [], 3: []}
            for _ in range(args.repeats):
                times["bare"].append(bare_loop(data, layers, hidden, batch, epochs))
                trial, cpu = worker.middle_trial()
                times["trial"].append(trial)
                child[3].append(cpu)
                one, cpu = worker.run(1)
                times["one"].append(one)
                child[1].append(cpu)
            b, t, o = (statistics.median(times[k]) for k in ("bare", "trial", "one"))
            ratios.append(t / b)
            cells = f"{b:.3f} | {t:.3f} | {t / b:.3f} | {o:.3f} | {o / b:.3f}"
            print(f"| {label} | {epochs} | {cells} |")
            start = statistics.median(child[1])
            per_trial = (statistics.median(child[3]) - start) / 2
            trials_run = args.repeats * (3 + 1)
            rows = [
                (thread, call, n / trials_run, ms / trials_run * 1000)
                for (thread, call), ms in worker.cpu.items()
                for n in [worker.calls[thread, call]]
            ]
            notes.append(
                f"{label}: the reporting process used {start:.2f} s of CPU per worker start and "
                f"{per_trial * 1000:.0f} ms per trial, beside training"
            )
            if len(notes) == 1:  # the small shape, where storage weighs most
                breakdown, small = sorted(rows, key=lambda r: -r[3]), (label, t - b)
    label, extra = small
    print()
    for note in notes:
        print(note)
    print()
    print(f"Storage calls left in the training process, per {label} trial (CPU ms; the trial")
    print(f"in a running worker is {extra * 1000:.0f} ms longer than the bare loop):")
    print("| thread | call | calls per trial | CPU ms per trial |")
    print("|---|---|---|---|")
    for thread, name, n, ms in breakdown:
        if n >= 0.3:
            print(f"| {thread} | {name} | {n:.2f} | {ms:.1f} |")
    total = sum(ms for *_, ms in breakdown)
    print(f"| all | | {sum(n for _, _, n, _ in breakdown):.1f} | {total:.1f} |")
    print(f"overhead_ratio={max(ratios):.3f}")


if __name__ == "__main__":
    main()
