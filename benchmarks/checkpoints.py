"""What checkpoints cost, and what they save.

* **Overhead**: trials of the default study's space (studies/quickstart.toml: sunspots, window
  24, 12 epochs) trained by ``fit`` with and without a checkpoint every epoch (the state copied
  to the CPU, then written by the trial's writer thread to a folder, as workers do); one torch
  thread; median seconds per epoch over --repeats, the two alternating. Ratio > 1 is the cost.
* **Preemption**: the default study at 16 trials (``--epochs`` per trial, 12 by default) with
  two workers; worker 0 is SIGKILLed every
  --kill-every seconds and started again, until the budget is met; once with checkpoints (the
  default beside a SQLite file), once with ``checkpoints = "off"``. Epochs trained is every
  epoch any trial reported (the failed ones' included): the work the machine did.

    python benchmarks/checkpoints.py [--repeats 5] [--kill-every 20]

Last line: ``overhead_ratio=X epochs_resume=A epochs_restart=B``.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import torch
from optuna.artifacts import FileSystemArtifactStore

from depthsearch.learn.data import prepare
from depthsearch.learn.model import ModelConfig, build_model
from depthsearch.learn.train import FitOptions, fit
from depthsearch.search.trials import Preemption
from depthsearch.spec import load_spec
from depthsearch.worker.checkpoints import Checkpoints

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "studies" / "quickstart.toml"
SHAPES = [(1, 16), (2, 32), (3, 64), (4, 64)]


def overhead(repeats: int) -> float:
    torch.set_num_threads(1)
    spec = load_spec(QUICKSTART)
    data = prepare(spec.data, "cpu", seed=spec.seed)
    print("| layers x width | no checkpoints s/epoch | every epoch s/epoch | ratio |")
    print("|---|---|---|---|")
    ratios = []
    with tempfile.TemporaryDirectory() as folder:
        store = Checkpoints(FileSystemArtifactStore(folder), "bench", folder)
        for layers, width in SHAPES:
            config = ModelConfig(
                input_size=data.input_size,
                hidden_sizes=(width,) * layers,
                output_size=data.output_size,
                dropout=0.2 if layers > 1 else 0.0,
            )
            options = FitOptions(lr=3e-3, batch_size=64, max_epochs=spec.train.max_epochs)
            times: dict[bool, list[float]] = {False: [], True: []}
            for r in range(repeats):
                for on in (False, True) if r % 2 == 0 else (True, False):
                    torch.manual_seed(r)
                    model = build_model(config)
                    writer = store.for_trial(r, {"shape": f"{layers}x{width}"}, r) if on else None
                    history = fit(model, data, options, checkpoint=writer.save if writer else None)
                    if writer is not None:
                        writer.close()
                    times[on].append(history.seconds_per_epoch)
            off, on_s = statistics.median(times[False]), statistics.median(times[True])
            ratios.append(on_s / off)
            print(f"| {layers} x {width} | {off:.4f} | {on_s:.4f} | {on_s / off:.3f} |")
    return statistics.median(ratios)


def _study_file(folder: Path, checkpoints: str, epochs: int) -> Path:
    text = QUICKSTART.read_text().replace("max_epochs = 12", f"max_epochs = {epochs}")
    text = text.replace(
        'path = "data/sunspots.csv"', f'path = "{REPO / "studies/data/sunspots.csv"}"'
    )
    text += (
        "\n[workers]\nheartbeat_interval = 1\ngrace_period = 3\nmax_retry = 10\n"
        f"checkpoints = {checkpoints!r}\n".replace("'", '"')
    )
    path = folder / "study.toml"
    path.write_text(text)
    return path


def preemption(kill_every: float, checkpoints: str, epochs: int) -> tuple[int, int, float, str]:
    """(epochs trained, kills, wall seconds, the study's preemption line) under kills."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        url = f"sqlite:///{folder / 'study.db'}"
        study_file = _study_file(folder, checkpoints, epochs)
        env = {**os.environ, "DEPTHSEARCH_STORAGE": url, "OMP_NUM_THREADS": "1"}
        exe = [sys.executable, "-m", "depthsearch"]
        subprocess.run([*exe, "create", str(study_file)], env=env, check=True, capture_output=True)

        def start() -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                [*exe, "worker", "--study", "quickstart", "--threads", "1"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )

        started = time.monotonic()
        workers = [start(), start()]
        kills = 0
        next_kill = started + kill_every
        while any(w.poll() is None for w in workers):
            if time.monotonic() >= next_kill and workers[0].poll() is None:
                workers[0].send_signal(signal.SIGKILL)
                workers[0].wait()
                kills += 1
                workers[0] = start()
                next_kill = time.monotonic() + kill_every
            time.sleep(0.1)
        wall = time.monotonic() - started
        trials = optuna.load_study(study_name="quickstart", storage=url).get_trials()
        done = sum(t.state.is_finished() and t.state.name != "FAIL" for t in trials)
        assert done == 16, [t.state for t in trials]
        line = Preemption(t.user_attrs for t in trials).line() or "no retry"
        return sum(len(t.intermediate_values) for t in trials), kills, wall, line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--kill-every", type=float, default=20.0)
    parser.add_argument("--no-overhead", action="store_true", help="Only the kill runs.")
    parser.add_argument(
        "--epochs", type=int, default=12, help="max_epochs of the killed study (default: 12)"
    )
    args = parser.parse_args()
    ratio = float("nan") if args.no_overhead else overhead(args.repeats)
    print(f"\nmedian overhead of a checkpoint every epoch: {(ratio - 1) * 100:+.1f}%\n")
    print("| checkpoints | epochs trained | kills of worker 0 | wall s | what the study says |")
    print("|---|---|---|---|---|")
    result = {}
    for label, setting in (("resume (auto)", "auto"), ("restart (off)", "off")):
        epochs, kills, wall, resumed = preemption(args.kill_every, setting, args.epochs)
        result[setting] = epochs
        print(f"| {label} | {epochs} | {kills} | {wall:.0f} | {resumed} |")
    print(
        f"overhead_ratio={ratio:.3f} epochs_resume={result['auto']} epochs_restart={result['off']}"
    )


if __name__ == "__main__":
    main()
