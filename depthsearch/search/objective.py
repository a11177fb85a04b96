"""A trial's candidate: sampled from the space, built, trained; and what its training says.

The worker's trial owner (``depthsearch.worker.trial``) runs a trial around these: it reserves
it, hands :meth:`Objective.train` the callback that reports each epoch and asks the pruner,
writes the attributes and ends it. Nothing here writes to the database.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import time
from collections.abc import Callable
from typing import Any

import optuna
import torch

from depthsearch._optuna import frozen_trial, quiet_experimental
from depthsearch.learn.data import Windows
from depthsearch.learn.evaluate import assess_test
from depthsearch.learn.model import StackedLSTM, build_model
from depthsearch.learn.train import (
    EpochResult,
    FitOptions,
    History,
    TrainState,
    fit,
    seed_torch,
)
from depthsearch.search import trials as keys
from depthsearch.search.resume import StateWriter
from depthsearch.search.space import Candidate, suggest
from depthsearch.spec import StudySpec, TrainSpec

__all__ = [
    "Objective",
    "Planned",
    "closing_attrs",
    "fit_options",
    "objective_values",
    "trial_seed",
]


def trial_seed(study_seed: int, trial: optuna.Trial | optuna.trial.FrozenTrial) -> int:
    """Study seed + trial number; a retry keeps the seed of the trial it retries."""
    frozen = trial if isinstance(trial, optuna.trial.FrozenTrial) else frozen_trial(trial)
    with quiet_experimental():
        original = optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(frozen)
    number = original if original is not None else trial.number
    return (study_seed + number) % (2**31)


def fit_options(
    train: TrainSpec, *, lr: float, batch_size: int, seed: int, epochs: int | None = None
) -> FitOptions:
    """How a trial trains: the spec's ``[train]`` with the trial's learning rate, batch size
    and seed. ``epochs`` (a retrain for the trial's best epoch count) trains exactly that
    many epochs, with no early stopping."""
    return FitOptions(
        lr=lr,
        batch_size=batch_size,
        max_epochs=epochs or train.max_epochs,
        grad_clip=train.grad_clip,
        weight_decay=train.weight_decay,
        patience=0 if epochs else train.patience,
        amp=train.amp,
        seed=seed,
        min_batches=train.min_batches,
    )


@dataclasses.dataclass
class Planned:
    """A trial's candidate, built: its model, its seed, and what is known before training."""

    candidate: Candidate
    model: StackedLSTM
    seed: int
    confirm: bool
    attrs: dict[str, Any]


class Objective:
    """Samples, builds and trains one candidate per trial.

    User attributes known before training (:attr:`Planned.attrs`): ``model_config``,
    ``param_count``, ``device``, ``torch_threads``, ``train_windows``, ``seed``, a
    classification's ``classes``, ``worker_pid`` and ``worker_host``; at its end,
    :func:`closing_attrs`.
    """

    def __init__(
        self,
        spec: StudySpec,
        data: Windows,
        device: torch.device,
        *,
        interrupt: Callable[[], None] | None = None,
    ) -> None:
        self.spec = spec
        self.data = data
        self.device = device
        self.interrupt = interrupt

    def plan(self, trial: optuna.Trial) -> Planned:
        """The trial's candidate sampled (its first suggest: the sampler runs here) and built
        with the trial's seed (a confirmation's own, a retry's original one)."""
        candidate = suggest(
            trial,
            self.spec.space,
            input_size=self.data.input_size,
            output_size=self.data.output_size,
        )
        frozen = frozen_trial(trial)  # one read: the seed and the retry history are in it
        confirm = keys.is_confirm(frozen)
        seed = (
            int(frozen.user_attrs[keys.CONFIRM_SEED])
            if confirm
            else trial_seed(self.spec.seed, frozen)
        )
        seed_torch(seed, self.device)
        model = build_model(candidate.model).to(self.device)
        attrs: dict[str, Any] = {
            keys.MODEL_CONFIG: candidate.model.to_dict(),
            keys.PARAM_COUNT: sum(p.numel() for p in model.parameters()),
            keys.DEVICE: str(self.device),
            keys.TORCH_THREADS: torch.get_num_threads(),
            keys.TRAIN_WINDOWS: int(self.data.x_train.shape[0]),
            keys.SEED: seed,
            **({keys.CLASSES: list(self.data.classes)} if self.data.classes else {}),
            keys.WORKER_PID: os.getpid(),
            keys.WORKER_HOST: socket.gethostname(),
        }
        return Planned(candidate, model, seed, confirm, attrs)

    def train(
        self,
        planned: Planned,
        history: History,
        *,
        on_epoch_end: Callable[[EpochResult, History], None],
        resume: TrainState | None = None,
        checkpoint: StateWriter | None = None,
    ) -> dict[str, float]:
        """Trains the candidate, filling ``history`` (kept when a callback stops it: a
        pruner's verdict); a confirmation's test-part metrics at its best epoch, else {}."""
        c, spec = planned.candidate, self.spec
        options = fit_options(spec.train, lr=c.lr, batch_size=c.batch_size, seed=planned.seed)
        keep_best = planned.confirm and self.data.has_test
        best: dict[str, torch.Tensor] | None = None

        def epoch_end(result: EpochResult, run: History) -> None:
            nonlocal best
            if keep_best and run.best is result:  # its test part is scored at its best
                best = {k: v.detach().clone() for k, v in planned.model.state_dict().items()}
            on_epoch_end(result, run)

        fit(
            planned.model,
            self.data,
            options,
            on_epoch_end=epoch_end,
            history=history,
            interrupt=self.interrupt,
            resume=resume,
            checkpoint=checkpoint.save if checkpoint is not None else None,
            checkpoint_every=spec.workers.checkpoint_every,
        )
        if best is None:
            return {}
        planned.model.load_state_dict(best)
        return assess_test(planned.model, self.data, amp=spec.train.amp).metrics


def closing_attrs(
    history: History, spec: StudySpec, *, resumed_from: int, started: float
) -> dict[str, Any]:
    """What a trial records when it ends, from its epochs: ``epochs_trained`` (those it
    trained itself), ``seconds_per_epoch``, ``best_epoch``, ``best_val_loss`` and its
    ``val_loss_se``, ``stopped_early`` or ``still_improving``, a multi-objective study's
    ``val_loss_curve``; the task's metrics at the best epoch (``val_rmse``, ``val_mae`` in the
    target's units; a classification's ``val_accuracy``, ``val_f1``, their curves and
    ``val_confusion``) and the curve of the loss's noise."""
    best = history.best
    own = history.epochs[resumed_from:]
    attrs: dict[str, Any] = {
        keys.EPOCHS_TRAINED: len(own),
        keys.SECONDS_PER_EPOCH: (
            sum(e.seconds for e in own) / len(own) if own else time.perf_counter() - started
        ),
        keys.BEST_EPOCH: best.epoch if best is not None else 0,
    }
    if best is not None:
        attrs[keys.BEST_VAL_LOSS] = best.val_loss
        attrs[keys.VAL_LOSS_SE] = best.val_loss_se
        attrs.update(best.metrics)
    if history.stopped_early:
        attrs[keys.STOPPED_EARLY] = True
    elif (
        best is not None
        and best is history.epochs[-1]
        and len(history.epochs) >= max(2, spec.train.max_epochs)
    ):
        attrs[keys.STILL_IMPROVING] = True  # trained to the last epoch, still getting better
    if spec.multi_objective:
        attrs[keys.VAL_LOSS_CURVE] = [e.val_loss for e in history.epochs]
    if len(history.epochs) > 1:  # what the pruner took for each epoch's noise
        attrs[f"{keys.VAL_LOSS_SE}_curve"] = [e.val_loss_se for e in history.epochs]
    if best is not None and best.confusion is not None:
        for name in best.metrics:
            attrs[f"{name}_curve"] = [e.metrics.get(name) for e in history.epochs]
        attrs[keys.VAL_CONFUSION] = best.confusion
    return attrs


def objective_values(
    spec: StudySpec, history: History, attrs: dict[str, Any]
) -> float | tuple[float, ...]:
    """The value Optuna is told: the best validation loss, or one per ``[study]
    objectives`` (``param_count``, ``seconds_per_epoch``, a classification's metrics)."""
    best = history.best
    assert best is not None  # fit ran at least one epoch or raised
    if not spec.multi_objective:
        return best.val_loss
    measured = {
        "val_loss": best.val_loss,
        keys.PARAM_COUNT: float(attrs[keys.PARAM_COUNT]),
        "seconds_per_epoch": float(attrs[keys.SECONDS_PER_EPOCH]),
        **best.metrics,
    }
    return tuple(measured[name] for name in spec.objectives)
