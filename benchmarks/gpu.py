"""On a GPU: the fused multi-layer kernel against the per-layer stack, and workers per GPU.

Part 1 trains the same architecture two ways, PyTorch's fused multi-layer `nn.LSTM` (one
cuDNN call) and depthsearch's stack of single-layer LSTMs (what mixed widths, residual and
layer-norm need), with bf16 autocast (`[train] amp = true`), and the fused model in fp32 too; it
reports training samples per second.
Part 2 runs `depthsearch launch --per-gpu K --gpus 0` on a fresh SQLite study of --budget
trials (hidden sizes 64-256, 1-4 layers, random sampler, no pruning) for
K = 1, 2, 4, 8 and reports trials per hour; the K with the most is the one to make the default.

    python benchmarks/gpu.py [--budget 32] [--epochs 10] [--device cuda] [--ks 1,2,4,8] [--bf16]

`--device cpu` runs part 1 on the CPU (a check of the script, not a GPU figure); part 2 needs
CUDA. Last line: ``best_per_gpu=K`` (or ``fused_speedup=X`` without CUDA).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path


def fused_vs_stacked(device: str, steps: int) -> float:
    import torch

    from depthsearch.learn.evaluate import autocast_for
    from depthsearch.learn.model import ModelConfig, StackedLSTM

    dev = torch.device(device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    print(
        "| layers | hidden | batch | fused bf16 samples/s | per-layer bf16 samples/s | "
        "fused / per-layer | fused fp32 samples/s | bf16 / fp32 (fused) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    ratios, amp_ratios = [], []
    for layers in (2, 4, 8):
        for hidden in (64, 256):
            batch, window = 256, 48
            x = torch.randn(batch, window, 1, device=dev)
            y = torch.randn(batch, 3, device=dev)
            rates = []
            for fused, amp in ((True, True), (False, True), (True, False)):
                cfg = ModelConfig(input_size=1, hidden_sizes=(hidden,) * layers, output_size=3)
                model = StackedLSTM(cfg, fused=fused).to(dev)
                opt = torch.optim.Adam(model.parameters(), lr=1e-3)

                def step() -> None:
                    with autocast_for(dev, amp):  # noqa: B023
                        loss = torch.nn.functional.mse_loss(model(x).float(), y)  # noqa: B023
                    opt.zero_grad(set_to_none=True)  # noqa: B023
                    loss.backward()
                    opt.step()  # noqa: B023

                for _ in range(5):
                    step()
                times = []
                for _ in range(3):
                    if dev.type == "cuda":
                        torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    for _ in range(steps):
                        step()
                    if dev.type == "cuda":
                        torch.cuda.synchronize()
                    times.append(time.perf_counter() - t0)
                rates.append(batch * steps / statistics.median(times))
            ratios.append(rates[0] / rates[1])
            amp_ratios.append(rates[0] / rates[2])
            print(
                f"| {layers} | {hidden} | 256 | {rates[0]:.0f} | {rates[1]:.0f} | "
                f"{rates[0] / rates[1]:.2f} | {rates[2]:.0f} | {rates[0] / rates[2]:.2f} |",
                flush=True,
            )
    print(f"median bf16 / fp32 (fused): {statistics.median(amp_ratios):.2f}x")
    return statistics.median(ratios)


def per_gpu_sweep(budget: int, epochs: int, ks: list[int], amp: bool) -> int:
    from _study import DEMAND, study_spec

    from depthsearch.studies import create_study

    print()
    print("| workers per GPU | trials/hour | s for the budget |")
    print("|---|---|---|")
    best = (0.0, 1)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'gpu.db'}"
        exe = [sys.executable, "-m", "depthsearch"]
        for k in ks:
            name = f"k{k}-{uuid.uuid4().hex[:6]}"
            spec = study_spec(
                name,
                budget,
                data=DEMAND,
                space={
                    "num_layers": {"low": 1, "high": 4},
                    "hidden_size": [64, 128, 256],
                    "dropout": 0.1,
                    "lr": 0.002,
                    "batch_size": 128,
                },
                train={"max_epochs": epochs, "device": "cuda", "amp": amp},
                sampler={"kind": "random"},
                pruner={"kind": "none"},
            )
            create_study(spec, url)
            t0 = time.perf_counter()
            launch = ["launch", "--study", name, "--storage", url, "--gpus", "0"]
            subprocess.run([*exe, *launch, "--per-gpu", str(k)], check=True, capture_output=True)
            took = time.perf_counter() - t0
            rate = budget / took * 3600
            best = max(best, (rate, k))
            print(f"| {k} | {rate:.0f} | {took:.1f} |", flush=True)
    return best[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--ks", default="1,2,4,8", help="Workers per GPU to try (part 2).")
    parser.add_argument("--bf16", action="store_true", help="Part 2's trials with [train] amp.")
    parser.add_argument("--no-kernels", action="store_true", help="Skip part 1.")
    args = parser.parse_args()
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("gpu.py: no CUDA device here; run it on a GPU machine (or --device cpu)")
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    print(f"# {name}, torch {torch.__version__}")
    if not args.no_kernels:
        fused = fused_vs_stacked(args.device, args.steps)
        print(f"median fused / per-layer: {fused:.2f}x")
    if not args.device.startswith("cuda"):
        print(f"fused_speedup={fused:.2f}")
        return
    ks = [int(k) for k in args.ks.split(",")]
    print(f"\n# part 2: trials in {'bf16' if args.bf16 else 'fp32'}")
    print(f"best_per_gpu={per_gpu_sweep(args.budget, args.epochs, ks, args.bf16)}")


if __name__ == "__main__":
    main()
