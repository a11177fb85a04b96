"""What a trial records, and the rules that read it back, each written once.

The objective and the worker write these user attributes; the pruners, the report, the export
and the CLI read them. The keys are what users see in the dashboard and in ``trials`` tables.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from depthsearch._optuna import quiet_experimental

__all__ = [
    "BEST_EPOCH",
    "CLASSES",
    "CONFIRM_INDEX",
    "CONFIRM_OF",
    "CONFIRM_SEED",
    "DEVICE",
    "EPOCHS_LOST",
    "EPOCHS_TRAINED",
    "FAIL_REASON",
    "LAST_EPOCH",
    "MODEL_CONFIG",
    "PARAM_COUNT",
    "PRUNED_REASON",
    "RESUMED_FROM_EPOCH",
    "RESUME_NOTE",
    "SECONDS_PER_EPOCH",
    "SEED",
    "SPEC",
    "STILL_IMPROVING",
    "STOPPED_EARLY",
    "SUMMARY",
    "TASK_METRICS",
    "TORCH_THREADS",
    "TRAIN_WINDOWS",
    "VAL_CONFUSION",
    "VAL_LOSS_CURVE",
    "VAL_LOSS_SE",
    "WORKER_HOST",
    "WORKER_PID",
    "Preemption",
    "best_trial",
    "describe_front",
    "is_confirm",
    "metric_names",
    "metrics_text",
    "retried_trials",
    "trial_cost",
    "trial_curve",
    "trial_layers",
]

# Trial user attributes.
MODEL_CONFIG = "model_config"
PARAM_COUNT = "param_count"
DEVICE = "device"
TORCH_THREADS = "torch_threads"
TRAIN_WINDOWS = "train_windows"
SEED = "seed"
WORKER_PID = "worker_pid"
WORKER_HOST = "worker_host"
EPOCHS_TRAINED = "epochs_trained"
SECONDS_PER_EPOCH = "seconds_per_epoch"
BEST_EPOCH = "best_epoch"
BEST_VAL_LOSS = "best_val_loss"
STOPPED_EARLY = "stopped_early"
#: The best epoch was the last of ``[train] max_epochs``: the trial was still improving.
STILL_IMPROVING = "still_improving"
#: A multi-objective study's learning curve (Optuna keeps no intermediate values there).
VAL_LOSS_CURVE = "val_loss_curve"
PRUNED_REASON = "pruned_reason"
#: The validation loss's standard error over the samples (its noise on this split).
VAL_LOSS_SE = "val_loss_se"
#: What the pruner reads of the epoch it is asked about: ``{"epoch", "val_loss_se"}`` and a
#: classification's ``val_accuracy`` (written with the epoch while a trial can be pruned).
LAST_EPOCH = "last_epoch"
#: A classification's confusion matrix at the best epoch (``[true][predicted]``); its
#: ``val_accuracy`` and ``val_f1`` are stored under those names.
VAL_CONFUSION = "val_confusion"
#: A classification's labels, by class index (the confusion matrix's order).
CLASSES = "classes"
#: The task metrics stored at the best epoch: a classification's accuracy and macro-F1; a
#: forecast's or a regression's RMSE and MAE in the target's own units.
TASK_METRICS = ("val_accuracy", "val_f1", "val_rmse", "val_mae")
PRUNED_AT_EPOCH = "pruned_at_epoch"
#: On a trial that retries a failed one: the epoch its checkpoint held (0: it started over),
#: the epochs the failed trial trained past that (trained twice), and why it started over.
RESUMED_FROM_EPOCH = "resumed_from_epoch"
EPOCHS_LOST = "epochs_lost"
RESUME_NOTE = "resume_note"
FAIL_REASON = "fail_reason"
#: A confirmation trial's: the candidate it trains again (its trial number), its seed, and
#: which of the candidate's confirmations it is.
CONFIRM_OF = "confirm_of"
CONFIRM_SEED = "confirm_seed"
CONFIRM_INDEX = "confirm_index"

# Study user attributes.
#: The validated spec (TOML-shaped dict): workers join a study knowing only its name.
SPEC = "spec"
#: One readable line of the spec, for the dashboard.
SUMMARY = "summary"


class Preemption:
    """What stopped and killed trials cost a study: from its retries' ``resumed_from_epoch``
    and ``epochs_lost`` (only a retry records them)."""

    def __init__(self, attrs: Iterable[dict[str, object]]) -> None:
        self.retries = self.resumed = self.epochs_lost = 0
        for a in attrs:
            if RESUMED_FROM_EPOCH not in a:
                continue
            self.retries += 1
            self.resumed += bool(a[RESUMED_FROM_EPOCH])
            lost = a.get(EPOCHS_LOST, 0)
            self.epochs_lost += int(lost) if isinstance(lost, (int, float)) else 0

    def line(self) -> str | None:
        """``2 retries of stopped or killed trials: 2 resumed from a checkpoint, 1 epoch
        trained twice``; None when nothing was retried."""
        if not self.retries:
            return None
        what = (
            "1 retry of a stopped or killed trial"
            if self.retries == 1
            else f"{self.retries} retries of stopped or killed trials"
        )
        epochs = f"{self.epochs_lost} epoch{'' if self.epochs_lost == 1 else 's'}"
        return f"{what}: {self.resumed} resumed from a checkpoint, {epochs} trained twice"


def trial_layers(trial: FrozenTrial) -> int | None:
    """A trial's layer count: its model's, else its sampled ``num_layers`` (None if neither)."""
    cfg = trial.user_attrs.get(MODEL_CONFIG)
    if isinstance(cfg, dict) and cfg.get("hidden_sizes"):
        return len(cfg["hidden_sizes"])
    value = trial.params.get("num_layers")
    return int(value) if value is not None else None


#: What one layer's per-batch, per-timestep work costs beyond its arithmetic, in parameters'
#: worth of arithmetic, at a batch of 64 (fitted on the CPU: a 1 x 16 epoch costs 0.11 s and
#: a 6 x 128 one 8.7 s on the sunspot windows; a narrow deep stack is not cheap).
LAYER_OVERHEAD = 10_000


def trial_cost(trial: FrozenTrial) -> float | None:
    """An epoch's cost, up to a constant: the parameter count, plus each layer's fixed
    per-batch work (more batches, more of it). None when the trial has no parameter count."""
    params = trial.user_attrs.get(PARAM_COUNT)
    if not isinstance(params, (int, float)) or isinstance(params, bool):
        return None
    batch = trial.params.get("batch_size")
    batches = 64.0 / float(batch) if isinstance(batch, (int, float)) and batch > 0 else 1.0
    return float(params) + (trial_layers(trial) or 1) * LAYER_OVERHEAD * batches


def metrics_text(values: Mapping[str, Any]) -> str:
    """``, val_accuracy=0.95, val_f1=0.9504``: the task metrics among ``values`` (a trial's
    user attributes, an epoch's metrics, an export's), for a line after its loss."""
    return "".join(
        f", {name}={values[name]:.4g}"
        for name in TASK_METRICS
        if isinstance(values.get(name), (int, float)) and not isinstance(values[name], bool)
    )


def trial_curve(trial: FrozenTrial) -> dict[int, float]:
    """Validation loss by epoch: Optuna's intermediate values, or on a multi-objective study
    the ``val_loss_curve`` user attribute."""
    if trial.intermediate_values:
        return dict(trial.intermediate_values)
    stored = trial.user_attrs.get(VAL_LOSS_CURVE)
    if isinstance(stored, list):
        return {i + 1: float(v) for i, v in enumerate(stored)}
    return {}


def is_confirm(trial: FrozenTrial) -> bool:
    """A confirmation trial (a candidate trained again with a new seed), not the search's."""
    return CONFIRM_OF in trial.user_attrs


def best_trial(trials: Iterable[FrozenTrial], *, maximise: bool = False) -> FrozenTrial | None:
    """The search's complete trial (no confirmation) with the best first objective (the
    lowest validation loss; the highest, ``maximise``); ties go to the lower trial number.
    None when none is complete."""
    complete = [
        t
        for t in trials
        if t.state == TrialState.COMPLETE
        and t.values
        and math.isfinite(t.values[0])
        and not is_confirm(t)
    ]
    sign = -1.0 if maximise else 1.0
    return min(complete, key=lambda t: (sign * t.values[0], t.number), default=None)


def describe_front(study: optuna.Study) -> str:
    """``trial 7 (0.0897, 3426), trial 1 (...)``: the Pareto front, best loss first."""
    return ", ".join(
        f"trial {t.number} ({', '.join(f'{v:.6g}' for v in t.values)})"
        for t in sorted(study.best_trials, key=lambda t: t.values)
    )


def metric_names(study: optuna.Study) -> list[str]:
    """The study's objective names (``val_loss`` alone where none were set)."""
    names = study.metric_names
    return list(names) if names else ["val_loss"]


def retried_trials(trial: FrozenTrial) -> list[int]:
    """The numbers of the trials this one retries, the first failed one first ([] if none)."""
    with quiet_experimental():
        history = optuna.storages.RetryHeartbeatStaleTrialCallback.retry_history(trial)
    return [int(n) for n in history]
