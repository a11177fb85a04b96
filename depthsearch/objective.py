"""Glues space, model and training to one Optuna trial: sample, build, train, report, prune."""

from __future__ import annotations

import functools
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import optuna
import torch

from depthsearch._optuna import quiet_experimental
from depthsearch.config import StudySpec
from depthsearch.data import Windows
from depthsearch.errors import NonFiniteLossError
from depthsearch.model import build_model
from depthsearch.space import suggest
from depthsearch.train import EpochResult, FitOptions, History, fit

__all__ = ["Objective", "trial_seed"]

_log = logging.getLogger(__name__)
T = TypeVar("T")

#: Wraps a storage call (retries while the database is away); identity by default.
Guard = Callable[[Callable[[], Any], str], Any]


def _no_guard(fn: Callable[[], Any], what: str) -> Any:
    return fn()


def trial_seed(study_seed: int, trial: optuna.Trial | optuna.trial.FrozenTrial) -> int:
    """Study seed + trial number; a retry keeps the seed of the trial it retries."""
    frozen = trial if isinstance(trial, optuna.trial.FrozenTrial) else _frozen(trial)
    with quiet_experimental():
        original = optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(frozen)
    number = original if original is not None else trial.number
    return (study_seed + number) % (2**31)


def _frozen(trial: optuna.Trial) -> optuna.trial.FrozenTrial:
    # The trial as ask() read it (system attributes included): Optuna keeps it on the trial,
    # so no storage round trip is needed.
    cached = getattr(trial, "_cached_frozen_trial", None)
    if isinstance(cached, optuna.trial.FrozenTrial):
        return cached
    return trial.study._storage.get_trial(trial._trial_id)


def _save_attrs(trial: optuna.Trial, attrs: dict[str, Any], guard: Guard) -> None:
    for key, value in attrs.items():
        guard(functools.partial(trial.set_user_attr, key, value), "saving attributes")


class _Reporter:
    """Reports each epoch to Optuna and asks the pruner, in a thread beside training.

    Training never waits for the database: the epoch's loss is queued and the next epoch
    starts at once. When the pruner says stop, or a storage call fails for good, the training
    loop learns it at its next batch (``check`` runs before every batch) and stops there.
    """

    def __init__(self, trial: optuna.Trial, guard: Guard, *, prunes: bool) -> None:
        self.trial = trial
        self.guard = guard
        self.prunes = prunes
        self.pruned: str | None = None
        self.error: BaseException | None = None
        self._queue: queue.SimpleQueue[EpochResult | dict[str, Any] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="depthsearch-report", daemon=True)
        self._thread.start()

    def submit(self, item: EpochResult | dict[str, Any]) -> None:
        """Queues an epoch's result, or user attributes to set."""
        self._queue.put(item)

    def check(self) -> None:
        """Raises the pruner's decision or the storage error, if any came."""
        if self.error is not None:
            raise self.error
        if self.pruned is not None:
            raise optuna.TrialPruned(self.pruned)

    def close(self) -> None:
        """Waits until every queued epoch is reported (or reporting failed)."""
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        trial = self.trial
        while (result := self._queue.get()) is not None:
            if self.error is not None:
                continue  # training stops at its next batch; nothing more to say
            try:
                if isinstance(result, dict):
                    _save_attrs(trial, result, self.guard)
                    continue
                self.guard(
                    functools.partial(trial.report, result.val_loss, result.epoch),
                    "reporting an epoch",
                )
                # Epochs that finish before training hears "stop" are still reported.
                if (
                    self.prunes
                    and self.pruned is None
                    and self.guard(trial.should_prune, "asking the pruner")
                ):
                    self.pruned = (
                        f"pruned at epoch {result.epoch} (val_loss={result.val_loss:.6g})"
                    )
            except BaseException as e:  # handed to the training thread by check()
                self.error = e


class Objective:
    """Trains one candidate per call and returns its best validation loss (scaled MSE).

    A multi-objective study gets one value per ``[study] objectives`` (``val_loss`` first,
    then ``param_count`` / ``seconds_per_epoch``). Optuna keeps no intermediate values there
    (``trial.report`` is single-objective only), so the curve is stored as the user attribute
    ``val_loss_curve`` and nothing is pruned.

    User attributes set on every trial: ``model_config``, ``param_count``, ``device``,
    ``torch_threads``, ``train_windows``, ``seed``, and when it ends ``epochs_trained``,
    ``seconds_per_epoch``, ``best_epoch`` (and ``pruned_reason`` when a NaN or inf loss
    ended it).
    """

    def __init__(
        self,
        spec: StudySpec,
        data: Windows,
        device: torch.device,
        *,
        guard: Guard = _no_guard,
        on_epoch: Callable[[int, EpochResult], None] | None = None,
        interrupt: Callable[[], None] | None = None,
    ) -> None:
        self.spec = spec
        self.data = data
        self.device = device
        self.guard = guard
        self.on_epoch = on_epoch
        self.interrupt = interrupt

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, ...]:
        spec = self.spec
        candidate = suggest(
            trial, spec.space, input_size=self.data.input_size, output_size=self.data.output_size
        )
        seed = trial_seed(spec.seed, trial)
        torch.manual_seed(seed)
        model = build_model(candidate.model).to(self.device)
        param_count = sum(p.numel() for p in model.parameters())
        attrs: dict[str, Any] = {
            "model_config": candidate.model.to_dict(),
            "param_count": param_count,
            "device": str(self.device),
            "torch_threads": torch.get_num_threads(),
            "train_windows": int(self.data.x_train.shape[0]),
            "seed": seed,
            "worker_pid": os.getpid(),
        }
        options = FitOptions(
            lr=candidate.lr,
            batch_size=candidate.batch_size,
            max_epochs=spec.train.max_epochs,
            grad_clip=spec.train.grad_clip,
            weight_decay=spec.train.weight_decay,
            patience=spec.train.patience,
            amp=spec.train.amp,
            seed=seed,
        )
        history = History()
        multi = spec.multi_objective
        # Optuna keeps no intermediate values on a multi-objective study; NopPruner never
        # prunes, so asking it would only cost a storage round trip per epoch.
        reporter = (
            None
            if multi
            else _Reporter(
                trial,
                self.guard,
                prunes=not isinstance(trial.study.pruner, optuna.pruners.NopPruner),
            )
        )

        if reporter is not None:
            # Known before training: written beside it (and shown for the running trial).
            reporter.submit(dict(attrs))
            attrs.clear()

        def epoch_end(result: EpochResult, _: History) -> None:
            if reporter is not None:
                reporter.submit(result)
            if self.on_epoch is not None:
                self.on_epoch(trial.number, result)

        def interrupt() -> None:
            if self.interrupt is not None:
                self.interrupt()
            if reporter is not None:
                reporter.check()

        started = time.perf_counter()
        try:
            try:
                fit(
                    model,
                    self.data,
                    options,
                    on_epoch_end=epoch_end,
                    history=history,
                    interrupt=interrupt,
                )
            finally:
                if reporter is not None:
                    # Every epoch is in the database before the attributes and the tell.
                    reporter.close()
            if reporter is not None:
                reporter.check()  # the pruner may have spoken on the last epoch
        except NonFiniteLossError as e:
            attrs["pruned_reason"] = f"non-finite loss: {e}"
            raise optuna.TrialPruned(attrs["pruned_reason"]) from e
        except optuna.TrialPruned as e:
            attrs["pruned_reason"] = str(e)
            raise
        finally:
            best = history.best
            attrs["epochs_trained"] = len(history.epochs)
            attrs["seconds_per_epoch"] = (
                history.seconds_per_epoch if history.epochs else time.perf_counter() - started
            )
            attrs["best_epoch"] = best.epoch if best is not None else 0
            if history.stopped_early:
                attrs["stopped_early"] = True
            if multi:
                attrs["val_loss_curve"] = [e.val_loss for e in history.epochs]
            _save_attrs(trial, attrs, self.guard)
        best = history.best
        assert best is not None  # fit ran at least one epoch or raised
        if not multi:
            return best.val_loss
        measured = {
            "val_loss": best.val_loss,
            "param_count": float(param_count),
            "seconds_per_epoch": float(attrs["seconds_per_epoch"]),
        }
        return tuple(measured[name] for name in spec.objectives)
