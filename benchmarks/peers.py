"""depthsearch against the ways users search without it, on one task, over seeds.

The task (issue #16): the shipped monthly sunspot series, a 48-month window -> the next month,
1-6 LSTM layers, width 16-128 (log), dropout 0-0.5, learning rate 1e-4..1e-2 (log), 30 trials
of at most 20 epochs, a median pruner, two CPU workers on one SQLite study.

Runners (each from a fresh database, timed from its first command to its last process's exit):

* ``plain``: ``_plain_optuna.py``, a hand-written Optuna study in the style of Optuna's PyTorch
  example (TPE, ``MedianPruner()``, a ``DataLoader`` of batch 128), in two processes on one
  study, ``n_trials=15`` each. It trains on the very windows depthsearch trains on.
* ``ds``: ``depthsearch create`` + ``depthsearch launch --cpu-workers 2`` of a study file that
  names the task (space, epochs, seed) and leaves every other key to depthsearch's defaults.
* ``ds-before``: the same with the defaults depthsearch had before issue #16, written out
  (batch 32/64/128, TPE's random start-up of 5, median pruner 3/2, no early stopping).
* ``ds-tuned``: the same with ``--tuned`` (study-file tables, ``[train]\npatience = 3`` say)
  on top of the defaults: for trying settings before they become defaults.
* ``ray``: Ray Tune with ASHA and Optuna's TPE as its searcher, two concurrent trials, when
  ``ray`` is installed (skipped with the reason otherwise).

Per run: wall seconds, best validation MSE, epochs trained, trials per hour. Then the medians
per runner, the anytime curve (the best loss each runner had reached by 25/50/100 % of the plain
script's median wall, median over seeds) and, last, ``wall_ratio=X loss_ratio=Y``: ``ds``'s
median over ``plain``'s.

    python benchmarks/peers.py [--seeds 1,2,3] [--runners plain,ds,ds-before,ray] [--trials 30]
        [--tuned '[train]\npatience = 3']
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SUNSPOTS = REPO / "studies" / "data" / "sunspots.csv"
BIN = Path(sys.executable).parent

RUNNERS = "plain, ds, ds-before, ds-tuned, ray"

#: The task, as a study file names it (what every runner is given).
WINDOW, HORIZON, MAX_LAYERS, WIDTH, EPOCHS, WORKERS = 48, 1, 6, (16, 128), 20, 2

#: depthsearch's defaults before issue #16, written out for the ``ds-before`` runner.
BEFORE = """
[space]
batch_size = [32, 64, 128]
[train]
patience = 0
[sampler]
n_startup_trials = 5
startup = "random"
[pruner]
kind = "median"
n_startup_trials = 3
n_warmup_steps = 2
"""


def study_file(name: str, seed: int, trials: int, extra: str) -> str:
    """The study file a user writes for the task; ``extra`` adds or overrides tables."""
    base = {
        "study": f'name = "{name}"\nn_trials = {trials}\nseed = {seed}',
        "data": (
            f'source = "csv"\npath = "{SUNSPOTS}"\ntarget = "sunspots"\n'
            f"window = {WINDOW}\nhorizon = {HORIZON}"
        ),
        "space": (
            f"num_layers = {{ low = 1, high = {MAX_LAYERS} }}\n"
            f"hidden_size = {{ low = {WIDTH[0]}, high = {WIDTH[1]}, log = true }}\n"
            "dropout = { low = 0.0, high = 0.5 }\n"
            "lr = { low = 1e-4, high = 1e-2, log = true }"
        ),
        "train": f'max_epochs = {EPOCHS}\ndevice = "cpu"',
        "sampler": "",
        "pruner": "",
    }
    # Tables in `extra` add keys to (or replace keys of) the base tables.
    table = None
    for line in extra.strip().splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith("["):
            table = line.strip("[]")
            continue
        assert table is not None, f"a key outside a table in {extra!r}"
        key = line.split("=")[0].strip()
        kept = [ln for ln in base[table].splitlines() if ln.split("=")[0].strip() != key]
        base[table] = "\n".join([*kept, line])
    return "\n".join(f"[{t}]\n{body}\n" for t, body in base.items() if body)


@dataclasses.dataclass
class Run:
    runner: str
    seed: int
    wall: float
    best: float
    epochs: int
    trials: int
    #: (seconds from the run's start, value) of each complete trial.
    completed: list[tuple[float, float]]

    def best_by(self, seconds: float) -> float:
        return min((v for t, v in self.completed if t <= seconds), default=math.inf)


def save_run(path: Path, run: Run) -> None:
    """Appends ``run`` to a JSON-lines file (``--save``)."""
    with path.open("a", encoding="utf-8") as out:
        out.write(json.dumps(dataclasses.asdict(run)) + "\n")


def load_runs(path: Path, runners: list[str], seeds: list[int]) -> list[Run]:
    """The runs of ``runners`` and ``seeds`` saved in ``path`` (``--reuse``)."""
    runs = []
    for line in path.read_text(encoding="utf-8").splitlines():
        fields = json.loads(line)
        fields["completed"] = [tuple(c) for c in fields["completed"]]
        run = Run(**fields)
        if run.runner in runners and run.seed in seeds:
            runs.append(run)
    return runs


def read_study(url: str, name: str, started: datetime.datetime) -> tuple[float, int, int, Any]:
    import optuna

    study = optuna.load_study(study_name=name, storage=url)
    trials = study.get_trials(deepcopy=False)
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    completed = sorted(
        ((t.datetime_complete - started).total_seconds(), float(t.value))
        for t in done
        if t.datetime_complete is not None and t.value is not None
    )
    epochs = sum(len(t.intermediate_values) for t in trials)
    finished = sum(t.state.is_finished() for t in trials)
    return min(v for _, v in completed), epochs, finished, completed


def write_windows(path: Path) -> None:
    """The task's windows, as depthsearch cuts and scales them, for the plain script."""
    import numpy as np

    from depthsearch.learn.data import prepare
    from depthsearch.spec import DataSpec

    spec = DataSpec(
        source="csv", path=str(SUNSPOTS), target="sunspots", window=WINDOW, horizon=HORIZON
    )
    data = prepare(spec, "cpu", seed=0)
    np.savez(
        path,
        x_train=data.x_train.numpy(),
        y_train=data.y_train.numpy(),
        x_val=data.x_val.numpy(),
        y_val=data.y_val.numpy(),
    )


def _check(procs: list[subprocess.Popen[bytes]], what: str, log: Path) -> None:
    codes = [p.wait() for p in procs]
    if any(codes):
        sys.stderr.write(log.read_text()[-4000:])
        raise SystemExit(f"{what} failed with exit codes {codes} (log: {log})")


def run_plain(tmp: Path, seed: int, trials: int, windows: Path) -> tuple[str, str, Any]:
    import optuna

    url = f"sqlite:///{tmp / 'plain.db'}"
    name = f"plain-{seed}"
    log = tmp / "plain.log"
    started = datetime.datetime.now()
    # The study exists before the workers start (two processes racing to create one SQLite
    # study can fail); each worker then loads it, as the example's distributed recipe does.
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna.create_study(study_name=name, storage=url, direction="minimize")
    per = trials // WORKERS
    with log.open("wb") as out:
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    str(HERE / "_plain_optuna.py"),
                    *("--storage", url, "--study", name, "--data", str(windows)),
                    *("--n-trials", str(per + (rank < trials % WORKERS))),
                    *("--epochs", str(EPOCHS), "--max-layers", str(MAX_LAYERS)),
                    *("--width", str(WIDTH[0]), str(WIDTH[1])),
                    *("--seed", str(seed), "--rank", str(rank)),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
            for rank in range(WORKERS)
        ]
        _check(procs, "the plain Optuna script", log)
    return url, name, started


def run_depthsearch(
    tmp: Path, seed: int, trials: int, extra: str, tag: str
) -> tuple[str, str, Any]:
    url = f"sqlite:///{tmp / (tag + '.db')}"
    name = f"{tag}-{seed}"
    path = tmp / f"{name}.toml"
    path.write_text(study_file(name, seed, trials, extra))
    log = tmp / f"{tag}.log"
    exe = str(BIN / "depthsearch")
    started = datetime.datetime.now()
    with log.open("wb") as out:
        for argv in (
            [exe, "create", str(path), "--storage", url],
            [exe, "launch", "--study", name, "--storage", url, "--cpu-workers", str(WORKERS)],
        ):
            _check([subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)], argv[1], log)
    return url, name, started


def run_ray(tmp: Path, seed: int, trials: int, windows: Path) -> Run:
    """Ray Tune, ASHA (grace period 1, reduction 4, max 20 epochs), TPE through OptunaSearch,
    two trials at a time with one CPU each."""
    import numpy as np
    import ray
    import torch
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    arrays = {k: v for k, v in np.load(windows).items()}
    started = time.perf_counter()
    ray.init(num_cpus=WORKERS, include_dashboard=False, log_to_driver=False)
    try:

        def trainable(config: dict[str, Any]) -> None:
            from torch import nn
            from torch.utils.data import DataLoader, TensorDataset

            torch.set_num_threads(1)
            xt, yt, xv, yv = (
                torch.from_numpy(arrays[k]) for k in ("x_train", "y_train", "x_val", "y_val")
            )
            layers = int(config["num_layers"])
            lstm = nn.LSTM(
                1,
                int(config["hidden_size"]),
                layers,
                batch_first=True,
                dropout=float(config["dropout"]) if layers > 1 else 0.0,
            )
            head = nn.Linear(int(config["hidden_size"]), yt.shape[1])
            params = [*lstm.parameters(), *head.parameters()]
            opt = torch.optim.Adam(params, lr=float(config["lr"]))
            loader = DataLoader(TensorDataset(xt, yt), batch_size=128, shuffle=True)
            best = math.inf
            for _ in range(EPOCHS):
                for xb, yb in loader:
                    opt.zero_grad()
                    loss = ((head(lstm(xb)[0][:, -1]) - yb) ** 2).mean()
                    loss.backward()
                    opt.step()
                with torch.no_grad():
                    val = float(((head(lstm(xv)[0][:, -1]) - yv) ** 2).mean())
                best = min(best, val)
                tune.report({"val_loss": val, "best": best, "t": time.perf_counter() - started})

        space = {
            "num_layers": tune.randint(1, MAX_LAYERS + 1),
            "hidden_size": tune.lograndint(WIDTH[0], WIDTH[1] + 1),
            "dropout": tune.uniform(0.0, 0.5),
            "lr": tune.loguniform(1e-4, 1e-2),
        }
        tuner = tune.Tuner(
            tune.with_resources(trainable, {"cpu": 1}),
            param_space=space,
            tune_config=tune.TuneConfig(
                metric="val_loss",
                mode="min",
                num_samples=trials,
                max_concurrent_trials=WORKERS,
                search_alg=OptunaSearch(seed=seed),
                scheduler=ASHAScheduler(max_t=EPOCHS, grace_period=1, reduction_factor=4),
            ),
            run_config=tune.RunConfig(storage_path=str(tmp / "ray"), verbose=0),
        )
        grid = tuner.fit()
        wall = time.perf_counter() - started
    finally:
        ray.shutdown()
    completed: list[tuple[float, float]] = []
    epochs = 0
    best = math.inf
    for result in grid:
        frame = result.metrics_dataframe
        if frame is None or frame.empty:
            continue
        epochs += len(frame)
        best = min(best, float(frame["best"].min()))
        if len(frame) == EPOCHS:  # ran to the end: a complete trial
            completed.append((float(frame["t"].iloc[-1]), float(frame["best"].min())))
    return Run("ray", seed, wall, best, epochs, len(grid), sorted(completed))


def one_run(
    runner: str, seed: int, trials: int, windows: Path, tuned: str, keep: Path | None
) -> Run:
    with tempfile.TemporaryDirectory(prefix=f"peers-{runner}-") as name:
        tmp = Path(name)
        if keep is not None:
            tmp = keep / f"{runner}-{seed}"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        if runner == "ray":
            return run_ray(tmp, seed, trials, windows)
        t0 = time.perf_counter()
        if runner == "plain":
            url, study, started = run_plain(tmp, seed, trials, windows)
        else:
            extra = {"ds-before": BEFORE, "ds-tuned": tuned}.get(runner, "")
            url, study, started = run_depthsearch(tmp, seed, trials, extra, runner)
        wall = time.perf_counter() - t0
        best, epochs, finished, completed = read_study(url, study, started)
        return Run(runner, seed, wall, best, epochs, finished, completed)


def ray_missing() -> str | None:
    try:
        import ray  # noqa: F401
        from ray import tune  # noqa: F401
        from ray.tune.search.optuna import OptunaSearch  # noqa: F401
    except ImportError as e:
        return f"ray[tune] is not installed ({e}); pip install 'ray[tune]' to include it"
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--runners", default="plain,ds,ds-before,ray")
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--tuned", default="", help="study-file tables for ds-tuned")
    parser.add_argument("--keep", type=Path, default=None, help="keep each run's files here")
    parser.add_argument("--save", type=Path, default=None, help="append each run to this file")
    parser.add_argument(
        "--reuse",
        type=Path,
        default=None,
        help="take the runs of --reuse-runners for these seeds from a --save file",
    )
    parser.add_argument("--reuse-runners", default="plain")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    runners = [r.strip() for r in args.runners.split(",") if r.strip()]
    unknown = set(runners) - {"plain", "ds", "ds-before", "ds-tuned", "ray"}
    if unknown or not runners:
        raise SystemExit(f"--runners: unknown {sorted(unknown)}; known: {RUNNERS}")
    if "ray" in runners and (why := ray_missing()) is not None:
        print(f"# ray skipped: {why}")
        runners.remove("ray")
    import torch

    print(
        f"# sunspots, window {WINDOW} -> {HORIZON}, 1-{MAX_LAYERS} layers, width "
        f"{WIDTH[0]}-{WIDTH[1]}, {args.trials} trials of <= {EPOCHS} epochs, {WORKERS} CPU "
        f"workers; torch {torch.__version__}, {os.cpu_count()} CPUs; seeds {seeds}"
    )
    print("| runner | seed | wall s | best val MSE | epochs | trials/hour |")
    print("|---|---|---|---|---|---|")
    runs: list[Run] = []
    if args.reuse is not None:
        reused = [r.strip() for r in args.reuse_runners.split(",") if r.strip()]
        runs = load_runs(args.reuse, reused, seeds)
        for run in runs:
            print(
                f"| {run.runner} (from {args.reuse.name}) | {run.seed} | {run.wall:.1f} | "
                f"{run.best:.4f} | {run.epochs} | {run.trials / run.wall * 3600:.0f} |"
            )
        runners = [r for r in reused if any(run.runner == r for run in runs)] + [
            r for r in runners if r not in reused
        ]
    with tempfile.TemporaryDirectory(prefix="peers-") as tmp:
        windows = Path(tmp) / "windows.npz"
        write_windows(windows)
        # Seed by seed, the runners in turn: a slow spell of the machine hits all of them.
        for seed in seeds:
            for runner in runners:
                if any(r.runner == runner and r.seed == seed for r in runs):
                    continue  # reused
                tuned = args.tuned.replace("\\n", "\n")
                run = one_run(runner, seed, args.trials, windows, tuned, args.keep)
                runs.append(run)
                if args.save is not None:
                    save_run(args.save, run)
                print(
                    f"| {runner} | {seed} | {run.wall:.1f} | {run.best:.4f} | {run.epochs} | "
                    f"{run.trials / run.wall * 3600:.0f} |",
                    flush=True,
                )
        shutil.rmtree(tmp, ignore_errors=True)

    def med(runner: str, field: str) -> float:
        return statistics.median(getattr(r, field) for r in runs if r.runner == runner)

    print()
    print("| runner (median) | wall s | best val MSE | epochs | trials/hour |")
    print("|---|---|---|---|---|")
    for runner in runners:
        per_hour = statistics.median(r.trials / r.wall * 3600 for r in runs if r.runner == runner)
        print(
            f"| {runner} | {med(runner, 'wall'):.1f} | {med(runner, 'best'):.4f} | "
            f"{med(runner, 'epochs'):.0f} | {per_hour:.0f} |"
        )
    if "plain" not in runners:
        return
    plain_wall = med("plain", "wall")
    print()
    print(
        f"Best val MSE reached by a share of the plain script's median wall ({plain_wall:.0f} s):"
    )
    print("| runner | 25 % | 50 % | 100 % |")
    print("|---|---|---|---|")
    for runner in runners:
        cells = []
        for share in (0.25, 0.5, 1.0):
            value = statistics.median(
                r.best_by(share * plain_wall) for r in runs if r.runner == runner
            )
            cells.append("-" if math.isinf(value) else f"{value:.4f}")
        print(f"| {runner} | {' | '.join(cells)} |")
    print()
    ours = "ds" if "ds" in runners else "ds-tuned"
    if ours in runners:
        print(
            f"wall_ratio={med(ours, 'wall') / plain_wall:.3f} "
            f"loss_ratio={med(ours, 'best') / med('plain', 'best'):.3f}"
        )


if __name__ == "__main__":
    main()
