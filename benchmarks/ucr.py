"""A user's flow on UCR/UEA classification data: ``run`` on the official TRAIN file, ``export
--retrain``, ``predict`` on the official TEST file; beside it the majority class and 1-NN
(Euclidean), computed here on the raw sequences.

    python benchmarks/ucr.py [NAME | PATH_TRAIN.ts ...] [--trials 16] [--threads 1] [--seed 7]
                             [--data DIR] [--shuffle] [--refit] [--normalize] [--keep DIR]

NAME is looked up in ``--data`` (default: the data folder of an installed sktime, or of an
unpacked sktime wheel: ``pip download --no-deps sktime`` then unzip it), as
``NAME/NAME_TRAIN.ts`` and ``NAME/NAME_TEST.ts``; a path names a TRAIN file, its TEST file
beside it. ``--shuffle`` shuffles the TRAIN labels (seeded): nothing can be learned, and the
flow must say so. ``--refit``: ``export --retrain --refit all``. Prints one row per data set:
TEST accuracy of depthsearch's answer, of the majority class and of 1-NN, the wall and CPU
seconds of the whole flow (its processes'), and what ``run`` said of the baseline.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEPTHSEARCH = str(Path(sys.executable).with_name("depthsearch"))

STUDY = """\
[study]
name = "{name}"
n_trials = {trials}
seed = {seed}

[task]
kind = "classify"

[data]
source = "ts"
path = "{train}"
test_fraction = 0           # the official TEST file is the test
{normalize}
[space]
num_layers = {{ low = 1, high = 3 }}
hidden_size = [16, 32, 64]

[train]
device = "cpu"
threads = {threads}
"""


def _data_folder() -> Path | None:
    spec = importlib.util.find_spec("sktime")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "datasets" / "data"


def _files(name: str, folder: Path | None) -> tuple[str, Path, Path]:
    path = Path(name)
    if path.suffix == ".ts":
        test = path.with_name(path.name.replace("_TRAIN", "_TEST"))
        return path.stem.replace("_TRAIN", ""), path, test
    if folder is None:
        raise SystemExit(f"{name}: no --data folder and no sktime installed to find it in")
    return name, folder / name / f"{name}_TRAIN.ts", folder / name / f"{name}_TEST.ts"


def _read(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Padded sequences (N, T, F) and labels, through depthsearch's own .ts reader."""
    from depthsearch.learn.read import read
    from depthsearch.spec import DataSpec

    seqs = read(DataSpec(source="ts", path=str(path)), "classify")
    longest = int(seqs.lengths.max())
    x = np.zeros((len(seqs), longest, len(seqs.columns)))
    for i in range(len(seqs)):
        x[i, : seqs.lengths[i]] = seqs.rows(i)
    return x, np.asarray(seqs.labels)


def _references(train: Path, test: Path) -> tuple[float, float]:
    """TEST accuracy of the majority class and of 1-NN (Euclidean, zero-padded)."""
    x_train, y_train = _read(train)
    x_test, y_test = _read(test)
    values, counts = np.unique(y_train, return_counts=True)
    majority = float(np.mean(y_test == values[np.argmax(counts)]))
    steps = max(x_train.shape[1], x_test.shape[1])
    a = np.zeros((len(x_train), steps, x_train.shape[2]))
    b = np.zeros((len(x_test), steps, x_test.shape[2]))
    a[:, : x_train.shape[1]], b[:, : x_test.shape[1]] = x_train, x_test
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    distances = (b**2).sum(1)[:, None] - 2 * b @ a.T + (a**2).sum(1)[None, :]
    nearest = float(np.mean(y_train[distances.argmin(1)] == y_test))
    return majority, nearest


def _shuffled(train: Path, folder: Path) -> Path:
    """The TRAIN file with its labels shuffled (seed 0)."""
    lines = train.read_text(encoding="utf-8").splitlines()
    at = next(i for i, line in enumerate(lines) if line.strip().lower() == "@data")
    cases = [line for line in lines[at + 1 :] if line.strip()]
    labels = [c.rsplit(":", 1)[1] for c in cases]
    order = np.random.default_rng(0).permutation(len(labels))
    body = [c.rsplit(":", 1)[0] + ":" + labels[j] for c, j in zip(cases, order, strict=True)]
    out = folder / train.name.replace("_TRAIN", "_SHUFFLED_TRAIN")
    out.write_text("\n".join([*lines[: at + 1], *body]) + "\n", encoding="utf-8")
    return out


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([DEPTHSEARCH, *args], cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"depthsearch {args[0]} failed ({done.returncode}): {done.stderr}")
    return done


def flow(name: str, train: Path, test: Path, args: argparse.Namespace, work: Path) -> dict:
    """The user's flow on one data set, timed: run, export --retrain, predict on TEST."""
    work.mkdir(parents=True, exist_ok=True)
    if args.shuffle:
        train = _shuffled(train, work)
    study = work / "study.toml"
    study.write_text(
        STUDY.format(
            name=name,
            trials=args.trials,
            seed=args.seed,
            train=train,
            threads=args.threads,
            normalize='normalize = "per-sequence"\n' if args.normalize else "",
        ),
        encoding="utf-8",
    )
    storage = f"sqlite:///{work / 'study.db'}"
    before, started = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    ran = _run("run", str(study), "--storage", storage, cwd=work)
    export = ["export", "--study", name, "--storage", storage, "--retrain", "-o", "best"]
    _run(*export, *(["--refit", "all"] if args.refit else []), cwd=work)
    _run("predict", "best", "--data", str(test), "-o", "pred.csv", cwd=work)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    answer = _run("answer", "--study", name, "--storage", storage, cwd=work).stdout
    import pandas as pd

    predicted = pd.read_csv(work / "pred.csv", dtype={"label": str})["label"].to_numpy()
    _, truth = _read(test)
    said = "no candidate beat the baseline" in ran.stderr + ran.stdout
    return {
        "accuracy": float(np.mean(predicted == truth)),
        "wall": wall,
        "cpu": cpu,
        "baseline_said": said,
        "answer_said": "no candidate beat the baseline" in answer,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", default=["GunPoint", "ItalyPowerDemand"])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=7, help="the study's [study] seed")
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--shuffle", action="store_true")
    parser.add_argument("--refit", action="store_true")
    parser.add_argument(
        "--normalize", action="store_true", help='[data] normalize = "per-sequence"'
    )
    parser.add_argument("--keep", type=Path, default=None, help="keep the studies here")
    args = parser.parse_args()
    folder = args.data or _data_folder()
    root = args.keep or Path(tempfile.mkdtemp(prefix="depthsearch-ucr-"))
    print(
        f"# {args.trials} trials, seed {args.seed}, {args.threads} thread(s), "
        f"{os.cpu_count()} CPUs{', export --refit all' if args.refit else ''}"
    )
    print("| data | depthsearch (TEST) | majority | 1-NN Euclidean | wall s | CPU s | said |")
    print("|---|---|---|---|---|---|---|")
    try:
        for given in args.names:
            name, train, test = _files(given, folder)
            majority, nearest = _references(train, test)
            got = flow(name, train, test, args, root / name)
            said = "no candidate beat the baseline" if got["baseline_said"] else "-"
            if args.shuffle and not (got["baseline_said"] and got["answer_said"]):
                said = "MISSING: run or answer did not say nothing was learned"
            print(
                f"| {name}{' (labels shuffled)' if args.shuffle else ''} | "
                f"{got['accuracy']:.3f} | {majority:.3f} | {nearest:.3f} | {got['wall']:.0f} | "
                f"{got['cpu']:.0f} | {said} |",
                flush=True,
            )
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
