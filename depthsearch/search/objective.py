"""Glues space, model and training to one Optuna trial: sample, build, train, report, prune."""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

import optuna
import torch

from depthsearch._optuna import frozen_trial, quiet_experimental, study_id, study_storage
from depthsearch.errors import DatabaseLost, NonFiniteLossError
from depthsearch.learn.data import Windows
from depthsearch.learn.evaluate import assess_test
from depthsearch.learn.model import build_model
from depthsearch.learn.train import EpochResult, FitOptions, History, TrainState, fit
from depthsearch.search import trials as keys
from depthsearch.search.confirm import CONFIRM_SEED, is_confirm
from depthsearch.search.reporting import (
    Epoch,
    InlineReporter,
    PrunedAt,
    Reporter,
    ReporterFactory,
    Retry,
    no_retry,
    save_attrs,
)
from depthsearch.search.resume import CheckpointStore, StateWriter
from depthsearch.search.space import suggest
from depthsearch.search.trials import retried_trials
from depthsearch.spec import StudySpec, TrainSpec

__all__ = ["Objective", "fit_options", "trial_seed"]

_log = logging.getLogger(__name__)


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
    )


class Objective:
    """Trains one candidate per call and returns its best validation loss (scaled MSE, or
    cross-entropy for a classification).

    A multi-objective study gets one value per ``[study] objectives`` (``val_loss`` first,
    then ``param_count`` / ``seconds_per_epoch``). Optuna keeps no intermediate values there
    (``trial.report`` is single-objective only), so the curve is stored as the user attribute
    ``val_loss_curve`` and nothing is pruned.

    User attributes set on every trial: ``model_config``, ``param_count``, ``device``,
    ``torch_threads``, ``train_windows``, ``seed``, and when it ends ``epochs_trained`` (the
    epochs this trial trained itself), ``seconds_per_epoch``, ``best_epoch`` and
    ``best_val_loss`` (a pruned trial's value is its last epoch's, as Optuna keeps it), and for
    a pruned trial ``pruned_reason`` (the pruner's verdict, or a NaN or inf loss) and
    ``pruned_at_epoch`` (the verdict's epoch: the trial trained at most one epoch past it).
    A trial that retries a failed one also records ``resumed_from_epoch`` (the checkpoint's
    epoch it went on from, 0 when it started over), ``epochs_lost`` (what the failed trial
    trained past that) and, when it started over, ``resume_note`` (why). A forecast or a
    regression records ``val_rmse`` and ``val_mae`` at the best epoch, in the target's units
    (not for a panel scaled per series, whose series have units of their own); a
    classification records ``val_accuracy`` and ``val_f1`` (macro-F1) at the best epoch,
    their curves ``val_accuracy_curve`` and ``val_f1_curve``, and ``val_confusion`` (the
    best epoch's confusion matrix, ``[true][predicted]``).
    """

    def __init__(
        self,
        spec: StudySpec,
        data: Windows,
        device: torch.device,
        *,
        retry: Retry = no_retry,
        on_epoch: Callable[[int, EpochResult], None] | None = None,
        interrupt: Callable[[], None] | None = None,
        reporting: ReporterFactory | None = None,
        checkpoints: CheckpointStore | None = None,
    ) -> None:
        self.spec = spec
        self.checkpoints = checkpoints
        self.data = data
        self.device = device
        self.retry = retry
        self.reporting = reporting
        self.on_epoch = on_epoch
        self.interrupt = interrupt
        #: The last trial's task metrics at its best epoch (a classification's accuracy and
        #: macro-F1), for the worker's log line.
        self.last_metrics: dict[str, float] = {}

    def _reporter(self, trial: optuna.Trial, *, confirm: bool) -> Reporter:
        # NopPruner never prunes: asking it would only cost a storage round trip per epoch;
        # a confirmation is never pruned.
        prunes = not confirm and not isinstance(trial.study.pruner, optuna.pruners.NopPruner)
        if self.reporting is not None:
            return self.reporting.reporter(trial, prunes=prunes)
        return InlineReporter(trial, self.retry, prunes=prunes)

    def _save_closing(
        self, trial: optuna.Trial, attrs: dict[str, Any], reporter: Reporter | None
    ) -> None:
        """The attributes known when the trial ends, written before the tell."""
        if reporter is not None and reporter.error is None:
            reporter.submit(attrs)
            reporter.close()
            if reporter.error is not None:
                raise reporter.error
            return
        if reporter is not None:
            reporter.close()
            if isinstance(reporter.error, DatabaseLost):
                return  # away past db_wait already: the worker's outage rule takes over
        # No reporter, or it failed (the reporting process died): write them from here.
        save_attrs(trial, attrs, self.retry)

    def _resume(
        self, trial: optuna.Trial, retried: list[int], seed: int, attrs: dict[str, Any]
    ) -> TrainState | None:
        """For a retry: the failed trial's last state (or None), with what it cost in attrs."""
        storage = study_storage(trial.study)
        sid = study_id(trial.study)

        def reported(number: int) -> int:
            tid = storage.get_trial_id_from_study_id_trial_number(sid, number)
            return max(storage.get_trial(tid).intermediate_values, default=0)

        failed_epochs = self.retry(lambda: reported(retried[-1]), "reading the failed trial")
        state: TrainState | None = None
        source: int | None = None
        note: str | None = "checkpoints are off ([workers] checkpoints)"
        if self.checkpoints is not None:
            found = self.checkpoints.resume(retried, dict(trial.params), seed)
            state, source, note = found.state, found.source, found.note
        if state is not None:
            _log.info(
                "trial %d resumes trial %d from its epoch %d",
                trial.number,
                source,
                state.epoch,
            )
        else:
            attrs[keys.RESUME_NOTE] = note
            _log.warning("trial %d starts over: %s", trial.number, note)
        resumed_from = state.epoch if state is not None else 0
        attrs[keys.RESUMED_FROM_EPOCH] = resumed_from
        attrs[keys.EPOCHS_LOST] = max(0, int(failed_epochs) - resumed_from)
        return state

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, ...]:
        spec = self.spec
        candidate = suggest(
            trial,
            spec.space,
            input_size=self.data.input_size,
            output_size=self.data.output_size,
        )
        self.last_metrics = {}
        frozen = frozen_trial(trial)  # one read: the seed and the retry history are in it
        confirm = is_confirm(frozen)
        seed = int(frozen.user_attrs[CONFIRM_SEED]) if confirm else trial_seed(spec.seed, frozen)
        torch.manual_seed(seed)
        model = build_model(candidate.model).to(self.device)
        param_count = sum(p.numel() for p in model.parameters())
        attrs: dict[str, Any] = {
            keys.MODEL_CONFIG: candidate.model.to_dict(),
            keys.PARAM_COUNT: param_count,
            keys.DEVICE: str(self.device),
            keys.TORCH_THREADS: torch.get_num_threads(),
            keys.TRAIN_WINDOWS: int(self.data.x_train.shape[0]),
            keys.SEED: seed,
            **({keys.CLASSES: list(self.data.classes)} if self.data.classes else {}),
            keys.WORKER_PID: os.getpid(),
            keys.WORKER_HOST: socket.gethostname(),
        }
        options = fit_options(
            spec.train, lr=candidate.lr, batch_size=candidate.batch_size, seed=seed
        )
        retried = retried_trials(frozen)
        resume = self._resume(trial, retried, seed, attrs) if retried else None
        resumed_from = resume.epoch if resume is not None else 0
        writer: StateWriter | None = None
        if self.checkpoints is not None:
            writer = self.checkpoints.for_trial(trial.number, dict(trial.params), seed)
        history = History()
        multi = spec.multi_objective
        reporter = None if multi else self._reporter(trial, confirm=confirm)
        # A confirmation scores the test part with its best epoch's weights, kept here.
        best_state: dict[str, torch.Tensor] | None = None
        if reporter is not None:
            # Known before training: written beside it (and shown for the running trial).
            reporter.submit(dict(attrs))
            attrs.clear()

        def epoch_end(result: EpochResult, run: History) -> None:
            nonlocal best_state
            if confirm and self.data.has_test and run.best is result:
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            if reporter is not None:
                numbers = (
                    ("train_loss", result.train_loss),
                    (keys.VAL_LOSS_SE, result.val_loss_se),
                    *result.metrics.items(),
                )
                reporter.submit(Epoch(result.epoch, result.val_loss, numbers))
            if self.on_epoch is not None:
                self.on_epoch(trial.number, result)

        def interrupt() -> None:  # before every batch
            if self.interrupt is not None:
                self.interrupt()
            if reporter is not None:
                # Epoch k + 2 starts only once the verdict on epoch k came (at once, usually).
                while not reporter.settle(timeout=0.25):
                    if self.interrupt is not None:
                        self.interrupt()
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
                    resume=resume,
                    checkpoint=writer.save if writer is not None else None,
                    checkpoint_every=spec.workers.checkpoint_every,
                )
            finally:
                if writer is not None:
                    # The last state handed over reaches the store before a retry can look.
                    writer.close()
                if reporter is not None:
                    # Every epoch is in the database before the attributes and the tell.
                    reporter.drain()
            if reporter is not None:
                reporter.check()  # the pruner may have spoken on the last epoch
            if best_state is not None:
                # A finished confirmation only: not on the way out of a failure or a stop.
                model.load_state_dict(best_state)
                attrs.update(assess_test(model, self.data, amp=spec.train.amp).metrics)
        except NonFiniteLossError as e:
            attrs[keys.PRUNED_REASON] = f"non-finite loss: {e}"
            raise optuna.TrialPruned(attrs[keys.PRUNED_REASON]) from e
        except optuna.TrialPruned as e:
            attrs[keys.PRUNED_REASON] = str(e)
            if isinstance(e, PrunedAt):
                attrs[keys.PRUNED_AT_EPOCH] = e.epoch
            raise
        finally:
            best = history.best
            own = history.epochs[resumed_from:]  # those this trial trained itself
            attrs[keys.EPOCHS_TRAINED] = len(own)
            attrs[keys.SECONDS_PER_EPOCH] = (
                sum(e.seconds for e in own) / len(own) if own else time.perf_counter() - started
            )
            attrs[keys.BEST_EPOCH] = best.epoch if best is not None else 0
            if best is not None:
                attrs[keys.BEST_VAL_LOSS] = best.val_loss
                attrs[keys.VAL_LOSS_SE] = best.val_loss_se
            if history.stopped_early:
                attrs[keys.STOPPED_EARLY] = True
            elif (
                best is not None
                and best is history.epochs[-1]
                and len(history.epochs) >= max(2, spec.train.max_epochs)
            ):
                # Trained to the last epoch and still getting better: more epochs may help.
                attrs[keys.STILL_IMPROVING] = True
            if multi:
                attrs[keys.VAL_LOSS_CURVE] = [e.val_loss for e in history.epochs]
            if len(history.epochs) > 1:  # what the pruner took for each epoch's noise
                attrs[f"{keys.VAL_LOSS_SE}_curve"] = [e.val_loss_se for e in history.epochs]
            if best is not None and best.metrics:
                # The task's metrics at the best epoch (RMSE and MAE in the target's units;
                # a classification's accuracy and macro-F1, by epoch too, and its confusion).
                attrs.update(best.metrics)
                if best.confusion is not None:
                    for name in best.metrics:
                        attrs[f"{name}_curve"] = [e.metrics.get(name) for e in history.epochs]
                    attrs[keys.VAL_CONFUSION] = best.confusion
            self._save_closing(trial, attrs, reporter)
        best = history.best
        assert best is not None  # fit ran at least one epoch or raised
        self.last_metrics = dict(best.metrics)
        if not multi:
            return best.val_loss
        measured = {
            "val_loss": best.val_loss,
            keys.PARAM_COUNT: float(param_count),
            "seconds_per_epoch": float(attrs[keys.SECONDS_PER_EPOCH]),
            **best.metrics,
        }
        return tuple(measured[name] for name in spec.objectives)
