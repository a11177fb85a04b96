"""How much pruning saves, what it costs, and whether it is fair to deep candidates.

Part 1 runs the same study (the shipped sunspot series; 1-8 layers, plain or residual) with
the pruner `none`, `median`, `percentile`, `hyperband` and `successive-halving`, for --seeds
seeds of --trials trials each, and reports the best validation loss and the epochs trained.
epochs_saved = epochs without pruning / epochs with it; loss_gap = median over seeds of
(best with - best without) / best without.

Part 2 replays pruners on the runs without pruning, where every candidate trained to the end:
candidates come in their original order, each reports its epochs one by one to a fresh
in-memory study whose pruner decides, exactly as Optuna's would live. A stop is unfair when the
candidate's final loss was in the top 10% of its run. It counts unfair stops by layer count for
`median`, `depth-aware` (same settings) and `percentile`, the epochs each would have trained,
and how far the best candidate it leaves running is behind the run's best.

    python benchmarks/pruning.py [--seeds 3] [--first-seed 1] [--trials 24] [--epochs 20]

Last line: ``epochs_saved=X loss_gap=Y`` for the better pruner of part 1.

``--default`` runs part 3 instead (issue #23): does the *default* pruner give every depth a fair
chance? The task of ``peers.py`` (a 48-step window -> the next value, 1-6 layers, width 16-128,
30 trials of up to 20 epochs, every other key depthsearch's default: cheap-first start-up, TPE,
``patience = 4``) is run without pruning on the sunspot series and on the half-hourly demand
series, for --seeds seeds each, so that every candidate trains as far as the default would let
it. Each candidate's curve is saved (``--curves FILE``; a file that exists is read instead of
training again). The default pruner and the variants in ``VARIANTS`` are then replayed on each
run's candidates in trial order. Per variant: in how many runs it would have stopped the
candidate that ends best, which depths lost their best candidate, the epochs it would have
trained and how far the best candidate it leaves running is behind the run's best.

    python benchmarks/pruning.py --default [--seeds 3] [--curves curves.json]

Last line: ``default: kept the eventual best in K of N runs, epochs_saved=X``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

SPACE = {
    "num_layers": {"low": 1, "high": 8},
    "hidden_size": [16, 32],
    "dropout": {"low": 0.0, "high": 0.3},
    "lr": {"low": 1e-3, "high": 1e-2, "log": True},
    "batch_size": [64, 128],
    "residual": [False, True],
}

MEDIAN = {"n_startup_trials": 3, "n_warmup_steps": 3}
HALVING = {"min_resource": 2, "reduction_factor": 3}
PRUNERS: dict[str, dict[str, Any]] = {
    "none": {"kind": "none"},
    "median": {"kind": "median", **MEDIAN},
    # Keeps the best quarter from epoch 1 on (chosen on a replay of seeds 1-3; see RESULTS.md).
    "percentile": {
        "kind": "percentile",
        "percentile": 25.0,
        "n_startup_trials": 3,
        "n_warmup_steps": 1,
    },
    "hyperband": {"kind": "hyperband", **HALVING},
    "successive-halving": {"kind": "successive-halving", **HALVING},
}
REPLAYED = {
    "median": PRUNERS["median"],
    "depth-aware": {"kind": "depth-aware", **MEDIAN},
    "percentile": PRUNERS["percentile"],
}


def run_study(folder: Path, pruner: str, seed: int, trials: int, epochs: int) -> Any:
    import optuna
    from _study import SUNSPOTS, study_spec

    from depthsearch.studies import create_study
    from depthsearch.worker.run import run_worker

    spec = study_spec(
        f"{pruner}-{seed}",
        trials,
        seed=seed,
        data=SUNSPOTS,
        space=SPACE,
        train={"max_epochs": epochs, "device": "cpu", "threads": 1},
        sampler={"kind": "tpe", "n_startup_trials": 6},
        pruner=PRUNERS[pruner],
    )
    url = f"sqlite:///{folder / 'pruning.db'}"
    study = create_study(spec, url)
    run_worker(study, spec, url, budget=trials)
    done = study.get_trials(
        deepcopy=False, states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    )
    return done


def replay(
    candidates: list[Any], pruner: dict[str, Any], epochs: int
) -> tuple[dict[int, int], int, float]:
    """Pruner decisions on fully trained curves: (stops of top-10% candidates by layer count,
    epochs that would have been trained, loss gap of the best candidate left running)."""
    import optuna
    from optuna.distributions import IntDistribution

    from depthsearch.search.pruners import make_pruner
    from depthsearch.spec import spec_from_dict

    spec = spec_from_dict({"study": {"name": "replay", "n_trials": 1}, "pruner": pruner})
    study = optuna.create_study(pruner=make_pruner(spec))
    dist = {"num_layers": IntDistribution(1, 64)}
    finals = sorted(min(c.intermediate_values.values()) for c in candidates)
    cutoff = finals[max(0, math.ceil(len(finals) * 0.1) - 1)]
    unfair: dict[int, int] = defaultdict(int)
    trained = 0
    kept = math.inf
    for c in candidates:
        layers = int(c.params["num_layers"])
        study.enqueue_trial({"num_layers": layers})
        trial = study.ask(dist)
        curve = [c.intermediate_values[s] for s in sorted(c.intermediate_values)]
        stopped = False
        for step, value in enumerate(curve, start=1):
            trial.report(value, step)
            if trial.should_prune():
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                trained += step
                stopped = True
                break
        if not stopped:
            study.tell(trial, min(curve))
            trained += len(curve)
            kept = min(kept, min(curve))
        elif min(curve) <= cutoff:
            unfair[layers] += 1
    return unfair, trained, (kept - finals[0]) / finals[0]


# Part 3 (--default): the default pruner replayed on the default study's fully trained curves.

#: The task of peers.py (issue #16), on two series; every other key is depthsearch's default.
DEFAULT_SPACE = {
    "num_layers": {"low": 1, "high": 6},
    "hidden_size": {"low": 16, "high": 128, "log": True},
    "dropout": {"low": 0.0, "high": 0.5},
    "lr": {"low": 1e-4, "high": 1e-2, "log": True},
}
DEFAULT_TRIALS, DEFAULT_EPOCHS = 30, 20


def _default_data(name: str) -> dict[str, Any]:
    from _study import DEMAND, SUNSPOTS

    return {**{"sunspots": SUNSPOTS, "demand": DEMAND}[name], "window": 48, "horizon": 1}


def train_curves(job: tuple[str, int]) -> list[dict[str, Any]]:
    """Every candidate of one run of the default study without pruning: its number, params,
    distributions, the attributes the pruners read, and its validation curve."""
    import optuna
    import torch
    from _study import study_spec

    from depthsearch.search.trials import MODEL_CONFIG, PARAM_COUNT
    from depthsearch.spec import TrainSpec
    from depthsearch.studies import create_study
    from depthsearch.worker.run import run_worker

    dataset, seed = job
    logging.basicConfig(level=logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(1)
    spec = study_spec(
        f"{dataset}-{seed}",
        DEFAULT_TRIALS,
        seed=seed,
        data=_default_data(dataset),
        space=DEFAULT_SPACE,
        train={
            "max_epochs": DEFAULT_EPOCHS,
            "device": "cpu",
            "threads": 1,
            "patience": TrainSpec().patience,
        },
        pruner={"kind": "none"},
    )
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'curves.db'}"
        study = create_study(spec, url)
        run_worker(study, spec, url, budget=DEFAULT_TRIALS)
        trials = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return [
        {
            "number": t.number,
            "params": t.params,
            "distributions": {
                k: optuna.distributions.distribution_to_json(d) for k, d in t.distributions.items()
            },
            "user_attrs": {k: t.user_attrs[k] for k in (PARAM_COUNT, MODEL_CONFIG)},
            "curve": [t.intermediate_values[s] for s in sorted(t.intermediate_values)],
        }
        for t in sorted(trials, key=lambda t: t.number)
    ]


def load_curves(
    path: Path | None, datasets: list[str], seeds: list[int]
) -> dict[str, list[dict[str, Any]]]:
    """The runs' candidates by ``dataset-seed``: read from ``path`` where it has them, trained
    (two runs at a time, one thread each) and added to it otherwise."""
    import json
    from concurrent.futures import ProcessPoolExecutor

    runs: dict[str, list[dict[str, Any]]] = {}
    if path is not None and path.exists():
        runs = json.loads(path.read_text(encoding="utf-8"))
    jobs = [(d, s) for d in datasets for s in seeds if f"{d}-{s}" not in runs]
    if jobs:
        with ProcessPoolExecutor(max_workers=2) as pool:
            for (d, s), candidates in zip(jobs, pool.map(train_curves, jobs), strict=True):
                runs[f"{d}-{s}"] = candidates
                if path is not None:
                    path.write_text(json.dumps(runs), encoding="utf-8")
    return {f"{d}-{s}": runs[f"{d}-{s}"] for d in datasets for s in seeds}


#: The pruners replayed by --default: the default first, then the settings tried against it.
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "cost-aware 3/1": {"kind": "cost-aware", "n_startup_trials": 3, "n_warmup_steps": 1},
    "cost-aware 3/1, depth_warmup 1": {"kind": "cost-aware", "depth_warmup": 1},
    "cost-aware 3/1, depth_warmup 2": {"kind": "cost-aware", "depth_warmup": 2},
    "cost-aware 5/1": {"kind": "cost-aware", "n_startup_trials": 5},
    "cost-aware 3/2": {"kind": "cost-aware", "n_warmup_steps": 2},
    "median 3/1": {"kind": "median", "n_startup_trials": 3, "n_warmup_steps": 1},
    "depth-aware 3/1": {"kind": "depth-aware", "n_startup_trials": 3, "n_warmup_steps": 1},
    "depth-aware 3/1, depth_warmup 1": {"kind": "depth-aware", "depth_warmup": 1},
}


@dataclasses.dataclass
class Replayed:
    """One pruner on one run's candidates."""

    #: Final (best) loss of every candidate, by trial number, and the epoch it was stopped at.
    final: dict[int, float]
    stopped: dict[int, int]
    layers: dict[int, int]
    trained: int
    total: int
    #: The same in cost (epochs x the trial's cost per epoch, ``trial_cost``): what wall
    #: time pays for, where a 6 x 128 epoch costs 80 times a 1 x 16 one.
    cost_trained: float = 0.0
    cost_total: float = 0.0

    @property
    def best(self) -> int:
        return min(self.final, key=lambda n: (self.final[n], n))

    def depth_bests(self) -> dict[int, int]:
        """The best candidate of each layer count."""
        out: dict[int, int] = {}
        for n, loss in self.final.items():
            d = self.layers[n]
            if d not in out or loss < self.final[out[d]]:
                out[d] = n
        return out

    def gap(self) -> float:
        kept = min((v for n, v in self.final.items() if n not in self.stopped), default=math.inf)
        return (kept - self.final[self.best]) / self.final[self.best]


def replay_run(candidates: list[dict[str, Any]], pruner: dict[str, Any]) -> Replayed:
    """The pruner's decisions, live as in a study of one worker, on fully trained curves."""
    import optuna
    from optuna.distributions import json_to_distribution

    from depthsearch.search.pruners import make_pruner
    from depthsearch.spec import spec_from_dict

    doc: dict[str, Any] = {"study": {"name": "replay", "n_trials": 1}}
    if pruner:
        doc["pruner"] = pruner
    study = optuna.create_study(pruner=make_pruner(spec_from_dict(doc)))
    from depthsearch.search.trials import trial_cost

    out = Replayed({}, {}, {}, 0, 0)
    for c in candidates:
        study.enqueue_trial(c["params"])
        trial = study.ask({k: json_to_distribution(v) for k, v in c["distributions"].items()})
        for key, value in c["user_attrs"].items():
            trial.set_user_attr(key, value)
        curve = c["curve"]
        number = c["number"]
        out.final[number] = min(curve)
        out.layers[number] = len(c["user_attrs"]["model_config"]["hidden_sizes"])
        out.total += len(curve)
        for step, value in enumerate(curve, start=1):
            trial.report(value, step)
            if trial.should_prune():
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                out.stopped[number] = step
                break
        else:
            study.tell(trial, min(curve))
        out.trained += out.stopped.get(number, len(curve))
        cost = trial_cost(study.trials[-1]) or 0.0
        out.cost_total += cost * len(curve)
        out.cost_trained += cost * out.stopped.get(number, len(curve))
    return out


def replay_default(runs: dict[str, list[dict[str, Any]]]) -> None:
    n_runs = len(runs)
    print(
        f"# the default study (peers.py's task), no pruning, {DEFAULT_TRIALS} trials x up to "
        f"{DEFAULT_EPOCHS} epochs; runs: {', '.join(runs)}"
    )
    print()
    print(
        "| pruner | eventual best kept | best of its depth stopped | epochs trained "
        "| saves (epochs) | saves (cost) | best left running, behind the run's best |"
    )
    print("|---|---|---|---|---|---|---|")
    detail: dict[str, Replayed] = {}
    summary: dict[str, tuple[int, float]] = {}
    for label, pruner in VARIANTS.items():
        kept = depth_stops = depth_total = trained = total = 0
        cost_trained = cost_total = 0.0
        gaps = []
        for run, candidates in runs.items():
            r = replay_run(candidates, pruner)
            if label == "default":
                detail[run] = r
            kept += r.best not in r.stopped
            bests = r.depth_bests()
            depth_total += len(bests)
            depth_stops += sum(n in r.stopped for n in bests.values())
            trained += r.trained
            total += r.total
            cost_trained += r.cost_trained
            cost_total += r.cost_total
            gaps.append(r.gap())
        summary[label] = (kept, total / trained)
        print(
            f"| {label} | {kept} of {n_runs} | {depth_stops} of {depth_total} | "
            f"{trained} of {total} | {total / trained:.2f}x | {cost_total / cost_trained:.2f}x | "
            f"{', '.join(f'{g * 100:+.1f}%' for g in gaps)} |"
        )
    print()
    print("The default, run by run:")
    print(
        "| run | candidates by depth | the eventual best | its fate "
        "| depths whose best was stopped |"
    )
    print("|---|---|---|---|---|")
    for run, r in detail.items():
        counts: dict[int, int] = defaultdict(int)
        for d in r.layers.values():
            counts[d] += 1
        best = r.best
        fate = f"stopped at epoch {r.stopped[best]}" if best in r.stopped else "kept"
        lost = [
            f"{d} (trial {n}, epoch {r.stopped[n]}, "
            f"{(r.final[n] / r.final[best] - 1) * 100:+.1f}%)"
            for d, n in sorted(r.depth_bests().items())
            if n in r.stopped
        ]
        print(
            f"| {run} | {', '.join(f'{d}: {counts[d]}' for d in sorted(counts))} | trial {best}, "
            f"{r.layers[best]} layers, {r.final[best]:.5f} | {fate} | {'; '.join(lost) or '-'} |"
        )
    kept, saved = summary["default"]
    print(f"default: kept the eventual best in {kept} of {n_runs} runs, epochs_saved={saved:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=1, help="seeds first..first+seeds-1")
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument(
        "--default", action="store_true", help="part 3 only: the default pruner's replay"
    )
    parser.add_argument("--curves", type=Path, help="--default: the curves file (read/written)")
    parser.add_argument("--datasets", default="sunspots,demand", help="--default: the series")
    args = parser.parse_args()
    if args.default:
        logging.basicConfig(level=logging.WARNING)
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        seeds = list(range(args.first_seed, args.first_seed + args.seeds))
        replay_default(load_curves(args.curves, args.datasets.split(","), seeds))
        return
    logging.basicConfig(level=logging.WARNING)
    import optuna
    import torch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(1)
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    print(
        f"# sunspots, {args.trials} trials x up to {args.epochs} epochs, seeds {seeds}, "
        "1 CPU thread"
    )
    runs: dict[tuple[str, int], list[Any]] = {}
    wall: dict[str, float] = defaultdict(float)
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            for pruner in PRUNERS:
                started = time.perf_counter()
                runs[pruner, seed] = run_study(Path(tmp), pruner, seed, args.trials, args.epochs)
                wall[pruner] += time.perf_counter() - started

    def best(trials: list[Any]) -> float:
        return min(t.values[0] for t in trials if t.state.name == "COMPLETE")

    def epochs(trials: list[Any]) -> int:
        return sum(int(t.user_attrs["epochs_trained"]) for t in trials)

    print("| pruner | best val loss per seed | median | epochs trained | wall s |")
    print("|---|---|---|---|---|")
    for pruner in PRUNERS:
        bests = [best(runs[pruner, s]) for s in seeds]
        total = sum(epochs(runs[pruner, s]) for s in seeds)
        print(
            f"| {pruner} | {', '.join(f'{b:.5f}' for b in bests)} | "
            f"{statistics.median(bests):.5f} | {total} | {wall[pruner]:.0f} |"
        )
    base_epochs = sum(epochs(runs["none", s]) for s in seeds)
    summary = {}
    for pruner in PRUNERS:
        if pruner == "none":
            continue
        saved = base_epochs / sum(epochs(runs[pruner, s]) for s in seeds)
        gap = statistics.median(
            (best(runs[pruner, s]) - best(runs["none", s])) / best(runs["none", s]) for s in seeds
        )
        summary[pruner] = (saved, gap)
        print(f"{pruner}: epochs_saved={saved:.2f}x loss_gap={gap * 100:+.2f}%")
    within = [p for p in summary if summary[p][1] <= 0.02]
    better = (
        max(within, key=lambda p: summary[p][0])
        if within
        else min(summary, key=lambda p: summary[p][1])
    )

    print()
    print("Replay on the runs without pruning (every candidate trained to the end):")
    candidates = [runs["none", s] for s in seeds]
    total_by_layers: dict[int, int] = defaultdict(int)
    top_by_layers: dict[int, int] = defaultdict(int)
    for run in candidates:
        finals = sorted(min(t.intermediate_values.values()) for t in run)
        cutoff = finals[max(0, math.ceil(len(finals) * 0.1) - 1)]
        for t in run:
            total_by_layers[int(t.params["num_layers"])] += 1
            if min(t.intermediate_values.values()) <= cutoff:
                top_by_layers[int(t.params["num_layers"])] += 1
    results = {}
    for label, settings in REPLAYED.items():
        unfair: dict[int, int] = defaultdict(int)
        trained = 0
        gaps = []
        for run in candidates:
            u, e, g = replay(sorted(run, key=lambda t: t.number), settings, args.epochs)
            trained += e
            gaps.append(g)
            for k, v in u.items():
                unfair[k] += v
        results[label] = (unfair, trained, gaps)
    layers = sorted(total_by_layers)
    print(
        "| layers | candidates | top 10% | "
        + " | ".join(f"unfair stops, {label}" for label in REPLAYED)
        + " |"
    )
    print("|---|---|---|" + "---|" * len(REPLAYED))
    for n in layers:
        print(
            f"| {n} | {total_by_layers[n]} | {top_by_layers[n]} | "
            + " | ".join(str(results[label][0].get(n, 0)) for label in REPLAYED)
            + " |"
        )
    tops = sum(top_by_layers.values())
    for label, (unfair, trained, gaps) in results.items():
        stops = sum(unfair.values())
        print(
            f"{label}: {stops} of {tops} top-10% candidates stopped "
            f"({stops / max(1, tops) * 100:.0f}%); epochs {trained} of {base_epochs} "
            f"(saves {base_epochs / max(1, trained):.2f}x); best candidate left running: "
            f"{', '.join(f'{g * 100:+.2f}%' for g in gaps)} behind the run's best"
        )
    saved, gap = summary[better]
    print(f"better pruner: {better}")
    print(f"epochs_saved={saved:.2f} loss_gap={gap * 100:.2f}%")


if __name__ == "__main__":
    main()
