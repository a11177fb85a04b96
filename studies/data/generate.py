"""Writes the generated example data sets of ``studies/`` (run from anywhere):

* ``cbf.csv``: Saito's Cylinder-Bell-Funnel classification task (N. Saito, *Local feature
  extraction and its applications using a library of bases*, PhD thesis, Yale, 1994), in long
  format: ``id, t, x, shape``; 240 sequences of 32-96 steps, one of three shapes each.
* ``meters.csv``: a panel of 12 electricity meters, hourly, 480 hours each, on scales from
  about 1 kW to 2,000 kW (daily and weekly cycles, a trend, noise): ``meter, hour, kw``.

    python studies/data/generate.py [--seed 0] [--out studies/data]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent


def cbf(n: int, rng: np.random.Generator) -> pd.DataFrame:
    rows = []
    shapes = ("cylinder", "bell", "funnel")
    for i in range(n):
        shape = shapes[i % 3]
        length = int(rng.integers(32, 97))
        t = np.arange(length)
        a = int(rng.integers(length // 8, length // 3))
        b = a + int(rng.integers(length // 3, length // 2))
        eta = rng.standard_normal()
        inside = ((t >= a) & (t <= b)).astype(float)
        if shape == "cylinder":
            core = inside
        elif shape == "bell":
            core = inside * (t - a) / (b - a)
        else:
            core = inside * (b - t) / (b - a)
        x = (6 + eta) * core + rng.standard_normal(length)
        rows.append(pd.DataFrame({"id": f"s{i:03d}", "t": t, "x": x.round(4), "shape": shape}))
    frame = pd.concat(rows, ignore_index=True)
    # Sequences listed in a shuffled order: the split must not depend on the file's order.
    order = rng.permutation(frame["id"].unique())
    return frame.set_index("id").loc[order].reset_index()


def meters(n: int, hours: int, rng: np.random.Generator) -> pd.DataFrame:
    rows = []
    t = np.arange(hours)
    for i in range(n):
        scale = float(10 ** rng.uniform(0, 3.3))
        daily = np.sin(2 * np.pi * (t + rng.integers(24)) / 24)
        weekly = 0.4 * np.sin(2 * np.pi * t / 168 + rng.uniform(0, 2 * np.pi))
        level = 3 + daily + weekly + 0.002 * t * rng.uniform(-1, 1)
        kw = scale * (level + 0.25 * rng.standard_normal(hours))
        rows.append(pd.DataFrame({"meter": f"m{i:02d}", "hour": t, "kw": kw.round(3)}))
    return pd.concat(rows, ignore_index=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", type=Path, default=HERE, help="folder (another seed gives new sequences)"
    )
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    cbf(240, rng).to_csv(args.out / "cbf.csv", index=False)
    meters(12, 480, rng).to_csv(args.out / "meters.csv", index=False)


if __name__ == "__main__":
    main()
