"""The reporting protocol: how an objective hands over a trial's epochs and attributes.

An objective reports through a :class:`Reporter`: ``submit`` an epoch ``(epoch, val_loss)`` or
user attributes and go on training, ``settle`` and ``check`` between batches for the pruner's
decision (or a reporting error), ``drain`` before the trial ends. The pruner's verdict on epoch
k may come while epoch k + 1 trains, never later: ``settle`` holds the training side at the
start of epoch k + 2 until it came, so a trial pruned at epoch k trains at most k + 1 epochs
on a quiet machine and a busy one alike. Whoever runs the objective decides where the
reports are written: in the training thread (:class:`InlineReporter`, the default), or in a
process of the worker's (``depthsearch.worker.reporting``), which implements
:class:`ReporterFactory`. Either way the writes are the same Optuna calls in the same order
(:class:`TrialReports`): the search does not know, nor import, who runs it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import optuna

from depthsearch.search.trials import LAST_EPOCH, VAL_LOSS_SE

__all__ = [
    "Epoch",
    "InlineReporter",
    "Item",
    "PrunedAt",
    "Reporter",
    "ReporterFactory",
    "Retry",
    "TrialReports",
    "Verdict",
    "no_retry",
    "raise_for",
    "save_attrs",
]

#: Wraps a storage call (retries while the database is away); identity by default.
Retry = Callable[[Callable[[], Any], str], Any]


class Epoch(NamedTuple):
    """An epoch's report: its validation loss (what the pruner reads), and the epoch's other
    numbers (``train_loss``, a classification's ``val_accuracy``...) for a tracker."""

    epoch: int
    val_loss: float
    metrics: tuple[tuple[str, float], ...] = ()


#: What a trial reports: user attributes to set, or an epoch (``(epoch, val_loss)`` or
#: :class:`Epoch`).
Item = dict[str, Any] | tuple[int, float] | Epoch


class Verdict(NamedTuple):
    """The pruner's "stop", and the epoch (and its loss) it was given at."""

    epoch: int
    val_loss: float

    @property
    def reason(self) -> str:
        return f"pruned at epoch {self.epoch} (val_loss={self.val_loss:.6g})"


class PrunedAt(optuna.TrialPruned):
    """``optuna.TrialPruned`` with the epoch of the verdict (``pruned_reason`` names it)."""

    def __init__(self, verdict: Verdict) -> None:
        super().__init__(verdict.reason)
        self.epoch = verdict.epoch


def no_retry(fn: Callable[[], Any], what: str) -> Any:
    return fn()


def save_attrs(trial: optuna.Trial, attrs: dict[str, Any], retry: Retry) -> None:
    for key, value in attrs.items():
        retry(functools.partial(trial.set_user_attr, key, value), "saving attributes")


class TrialReports:
    """Reports one trial's items in order: the same calls wherever they run.

    After an error (the database stayed away, the trial was ended elsewhere) the rest is
    skipped: the training side stops at its next batch.
    """

    def __init__(self, trial: optuna.Trial, retry: Retry, *, prunes: bool) -> None:
        self.trial = trial
        self.retry = retry
        self.prunes = prunes
        self.pruned: Verdict | None = None
        self.error: BaseException | None = None

    def handle(self, item: Item) -> None:
        if self.error is not None:
            return
        trial = self.trial
        try:
            if isinstance(item, dict):
                save_attrs(trial, item, self.retry)
                return
            epoch, val_loss = item[0], item[1]
            if isinstance(item, Epoch) and self.prunes:  # the pruner reads it with the epoch
                numbers = dict(item.metrics)
                read = {k: numbers[k] for k in (VAL_LOSS_SE, "val_accuracy") if k in numbers}
                save_attrs(trial, {LAST_EPOCH: {"epoch": int(epoch), **read}}, self.retry)
            self.retry(functools.partial(trial.report, val_loss, epoch), "reporting an epoch")
            # Epochs that finish before training hears "stop" are still reported.
            if (
                self.prunes
                and self.pruned is None
                and self.retry(trial.should_prune, "asking the pruner")
            ):
                self.pruned = Verdict(int(epoch), float(val_loss))
        except BaseException as e:  # handed to the training side
            self.error = e


class Reporter(Protocol):
    """The training side of one trial's reports."""

    def submit(self, item: Item) -> None:
        """Queues an epoch ``(epoch, val_loss)`` or user attributes; returns at once."""

    def check(self) -> None:
        """Raises the pruner's decision or the reporting error, if one came (cheap)."""

    def settle(self, timeout: float) -> bool:
        """Whether every epoch submitted before the last one was answered (reported and, where
        the pruner runs, asked), waiting up to ``timeout`` seconds for it. Cheap when it was:
        the training side calls it before every batch."""

    def drain(self) -> None:
        """Waits until everything submitted so far is written (or failed)."""

    def close(self) -> None:
        """Drains and releases the trial."""

    @property
    def error(self) -> BaseException | None: ...


class ReporterFactory(Protocol):
    """Starts a :class:`Reporter` for each trial (a worker's reporting process does)."""

    def reporter(self, trial: optuna.Trial, *, prunes: bool) -> Reporter: ...


def raise_for(pruned: Verdict | None, error: BaseException | None) -> None:
    """Raises the reporting error, else the pruner's decision, if there is one."""
    if error is not None:
        raise error
    if pruned is not None:
        raise PrunedAt(pruned)


class InlineReporter:
    """Reports in the calling thread, item by item (an objective used without a worker)."""

    def __init__(self, trial: optuna.Trial, retry: Retry, *, prunes: bool) -> None:
        self._reports = TrialReports(trial, retry, prunes=prunes)

    @property
    def error(self) -> BaseException | None:
        return self._reports.error

    def submit(self, item: Item) -> None:
        self._reports.handle(item)

    def check(self) -> None:
        raise_for(self._reports.pruned, self._reports.error)

    def settle(self, timeout: float) -> bool:
        return True  # every item was answered when it was submitted

    def drain(self) -> None:
        pass

    def close(self) -> None:
        pass
