"""A depthsearch trial against a bare PyTorch loop: same model, same data, same epochs.

The bare loop is what a user writes by hand: `nn.LSTM` + `nn.Linear`, Adam, MSE, shuffled
batches by `randperm`, gradient clipping, validation under `no_grad` after every epoch.
The depthsearch side is one whole trial of a study in the default storage (a SQLite file):
reserving it under the budget lock, building the model, training, reporting every epoch and
asking the median pruner (with a startup count no study reaches, so it asks and never stops
the trial: trials stay the same length), the user attributes and the tell. Both run in this
process on one CPU thread, alternating, after one warm-up run each; medians of --repeats.

A second table breaks a trial's storage work down by call: how many per trial and the CPU
milliseconds they cost (``time.thread_time`` of the calling thread, so a call waiting for the
GIL costs nothing here). On one core every one of those milliseconds is added to the trial,
whichever thread spends it: that sum is the part of the overhead the database API sets.

    python benchmarks/overhead.py [--repeats 5] [--storage URL]

Last line: ``overhead_ratio=X``, the larger of the two shapes' ratios.
"""

from __future__ import annotations

import argparse
import collections
import logging
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


def storage_cpu(study: Any, run: Any, trials: int) -> list[tuple[str, str, float, float]]:
    """(thread, storage call, calls per trial, CPU ms per trial) over ``trials`` runs."""
    from _timing import timed_methods

    cpu: dict[tuple[str, str], float] = collections.defaultdict(float)
    calls: collections.Counter[tuple[str, str]] = collections.Counter()

    def record(name: str, wall_s: float, cpu_s: float) -> None:
        key = (threading.current_thread().name.removeprefix("depthsearch-"), name)
        cpu[key] += cpu_s
        calls[key] += 1

    with timed_methods(study._storage, record):
        for _ in range(trials):
            run()
    rows = [(t, n, calls[t, n] / trials, ms / trials * 1000) for (t, n), ms in cpu.items()]
    return sorted(rows, key=lambda r: -r[3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--storage", default=None, help="default: a SQLite file in a temp dir")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import optuna
    from _study import SUNSPOTS, study_spec

    from depthsearch.data import prepare
    from depthsearch.study import create_study
    from depthsearch.worker import run_worker

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(1)
    print(f"# 1 CPU thread, torch {torch.__version__}, median of {args.repeats} (after 1 warm-up)")
    print("| shape | epochs | bare loop s | depthsearch trial s | ratio |")
    print("|---|---|---|---|---|")
    ratios = []
    breakdown: list[tuple[str, str, float, float]] = []
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
            study = create_study(spec, url)

            def ours() -> float:
                started = time.perf_counter()
                report = run_worker(study, spec, url, n_trials=1, data=data, threads=1)  # noqa: B023
                assert report.complete == 1
                return time.perf_counter() - started

            def bare() -> float:
                return bare_loop(data, layers, hidden, batch, epochs)  # noqa: B023

            ours(), bare()  # warm-up
            times: dict[str, list[float]] = {"bare": [], "ours": []}
            for _ in range(args.repeats):
                times["bare"].append(bare())
                times["ours"].append(ours())
            b, o = statistics.median(times["bare"]), statistics.median(times["ours"])
            ratios.append(o / b)
            print(f"| {label} | {epochs} | {b:.3f} | {o:.3f} | {o / b:.3f} |")
            if not breakdown:  # the first (small) shape, where storage weighs most
                breakdown = storage_cpu(study, ours, args.repeats)
                small = (label, o - b)
    label, extra = small
    print()
    print(f"Storage calls of one {label} trial (CPU ms; the trial is {extra * 1000:.0f} ms longer")
    print("than the bare loop):")
    print("| thread | call | calls per trial | CPU ms per trial |")
    print("|---|---|---|---|")
    for thread, name, n, ms in breakdown:
        if n >= 0.5:
            print(f"| {thread} | {name} | {n:.1f} | {ms:.1f} |")
    total = sum(ms for *_, ms in breakdown)
    print(f"| all | | {sum(n for _, _, n, _ in breakdown):.1f} | {total:.1f} |")
    print(f"overhead_ratio={max(ratios):.3f}")


if __name__ == "__main__":
    main()
