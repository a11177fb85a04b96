"""The peer that benchmarks/peers.py runs against: a hand-written Optuna study of the same task.

Written as Optuna's own PyTorch example is (``optuna-examples/pytorch/pytorch_simple.py``):
the model is defined inside the objective from ``trial.suggest_*``, batches come from a
``DataLoader`` with a fixed ``BATCHSIZE``, every epoch reports the validation loss and asks
``trial.should_prune()``; TPE and ``MedianPruner`` with their defaults, and
``study.optimize(objective, n_trials=N)`` in each of several processes on one study.

Three things differ from the example. One torch thread per process, as anyone running several
processes on one machine should set. And, so that the numbers compare with depthsearch's: the
windows are the very tensors depthsearch trains on (an ``.npz`` that peers.py writes), and the
objective returns the best epoch's validation MSE (depthsearch's value), not the last one.
Each process seeds its sampler from the run's seed and its rank, as a careful user would (the
same seed in both would make them propose the same start-up candidates).

    python _plain_optuna.py --storage URL --study NAME --data windows.npz --n-trials 15 \
        --epochs 20 --seed 1 --rank 0
"""

from __future__ import annotations

import argparse

import numpy as np
import optuna
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

BATCHSIZE = 128  # the example's


class LSTMRegressor(nn.Module):
    def __init__(self, n_layers: int, hidden: int, dropout: float, horizon: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(1, hidden, n_layers, batch_first=True, dropout=dropout)
        self.head = nn.Linear(hidden, horizon)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        return self.head(out[:, -1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--storage", required=True)
    parser.add_argument("--study", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--n-trials", type=int, required=True)
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--max-layers", type=int, default=6)
    parser.add_argument("--width", type=int, nargs=2, default=(16, 128))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rank", type=int, default=0)
    args = parser.parse_args()

    # One torch thread per process: the processes share the cores (torch's default, a thread
    # per core in each, oversubscribes them; it ran this study several times slower here).
    torch.set_num_threads(1)
    arrays = np.load(args.data)
    x_train, y_train, x_val, y_val = (
        torch.from_numpy(arrays[k]) for k in ("x_train", "y_train", "x_val", "y_val")
    )
    train_loader = DataLoader(TensorDataset(x_train, y_train), batch_size=BATCHSIZE, shuffle=True)
    val_loader = DataLoader(TensorDataset(x_val, y_val), batch_size=1024)

    def objective(trial: optuna.Trial) -> float:
        n_layers = trial.suggest_int("num_layers", 1, args.max_layers)
        hidden = trial.suggest_int("hidden_size", args.width[0], args.width[1], log=True)
        dropout = trial.suggest_float("dropout", 0.0, 0.5) if n_layers > 1 else 0.0
        lr = trial.suggest_float("lr", 1e-4, 1e-2, log=True)
        model = LSTMRegressor(n_layers, hidden, dropout, y_train.shape[1])
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        loss_fn = nn.MSELoss()
        best = float("inf")
        for epoch in range(args.epochs):
            model.train()
            for xb, yb in train_loader:
                optimizer.zero_grad()
                loss = loss_fn(model(xb), yb)
                loss.backward()
                optimizer.step()
            model.eval()
            total, count = 0.0, 0
            with torch.no_grad():
                for xb, yb in val_loader:
                    total += float(((model(xb) - yb) ** 2).sum())
                    count += yb.numel()
            val = total / count
            best = min(best, val)
            trial.report(val, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return best

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(
        study_name=args.study,
        storage=args.storage,
        sampler=optuna.samplers.TPESampler(seed=args.seed * 1000 + args.rank),
        pruner=optuna.pruners.MedianPruner(),
    )
    study.optimize(objective, n_trials=args.n_trials)


if __name__ == "__main__":
    main()
