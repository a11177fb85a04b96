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
"""

from __future__ import annotations

import argparse
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=1, help="seeds first..first+seeds-1")
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args()
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
