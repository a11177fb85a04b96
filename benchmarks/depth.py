"""Do deep stacks learn? 2, 8 and 16 layers, plain against residual, on the sunspot series.

Every model: hidden size 32, Adam at lr 3e-3, batch 64, gradient clipping at 1, forget-gate
bias 1, --epochs epochs, the same data split as the default study (window 24, horizon 3),
on one CPU thread. Reports the validation loss (scaled MSE) of the last epoch and the best
epoch, median over --seeds seeds.

    python benchmarks/depth.py [--seeds 3] [--epochs 15]

Last line: ``residual_16_vs_plain_16=X`` (best validation loss of the residual 16-layer stack
divided by the plain one's; below 1 means residual connections help at that depth).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=15)
    args = parser.parse_args()
    import torch

    from depthsearch.learn.data import prepare
    from depthsearch.learn.model import ModelConfig, build_model
    from depthsearch.learn.train import FitOptions, fit
    from depthsearch.spec import load_spec

    torch.set_num_threads(1)
    spec = load_spec(REPO / "studies" / "quickstart.toml")
    data = prepare(spec.data, "cpu", seed=spec.seed)
    print(f"# sunspots, hidden 32, {args.epochs} epochs, median of {args.seeds} seeds, 1 thread")
    print("| layers | kind | last-epoch val loss | best val loss | s/epoch |")
    print("|---|---|---|---|---|")
    best_of: dict[tuple[int, str], float] = {}
    for layers in (2, 8, 16):
        for residual in (False, True):
            last, best, speed = [], [], []
            for seed in range(args.seeds):
                torch.manual_seed(seed)
                model = build_model(
                    ModelConfig(
                        input_size=data.input_size,
                        hidden_sizes=(32,) * layers,
                        output_size=data.output_size,
                        residual=residual,
                    )
                )
                started = time.perf_counter()
                history = fit(
                    model,
                    data,
                    FitOptions(lr=3e-3, batch_size=64, max_epochs=args.epochs, seed=seed),
                )
                speed.append((time.perf_counter() - started) / len(history.epochs))
                last.append(history.epochs[-1].val_loss)
                assert history.best is not None
                best.append(history.best.val_loss)
            kind = "residual" if residual else "plain"
            best_of[layers, kind] = statistics.median(best)
            print(
                f"| {layers} | {kind} | {statistics.median(last):.4f} | "
                f"{statistics.median(best):.4f} | {statistics.median(speed):.3f} |"
            )
    ratio = best_of[16, "residual"] / best_of[16, "plain"]
    print(f"residual_16_vs_plain_16={ratio:.3f}")


if __name__ == "__main__":
    main()
