"""The messages between a worker and its reporting process, and between that and its
tracking process, one type each.

They travel pickled over two pipes each way; each is a small NamedTuple (cheap to pickle,
typed, and matched by type on arrival instead of by a string in a bare tuple).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from depthsearch.search.reporting import Item, Verdict
from depthsearch.spec import StudySpec
from depthsearch.tracking import Target

__all__ = [
    "Answer",
    "Ask",
    "Begin",
    "Closed",
    "Ended",
    "Exit",
    "Failed",
    "Init",
    "Log",
    "Pruned",
    "Ready",
    "StudyDone",
    "Submit",
    "Sync",
    "Synced",
    "Track",
]

# Worker -> reporting process.


class Init(NamedTuple):
    """The first message: which study to open, and the worker's log settings."""

    spec: StudySpec
    url: str
    study_name: str
    log_level: int
    optuna_verbosity: int
    #: Where the trials are also logged (MLflow), if anywhere.
    tracking: Target | None = None


class Begin(NamedTuple):
    """Reports from now on belong to this trial."""

    trial_id: int
    prunes: bool


class Submit(NamedTuple):
    """An epoch ``(epoch, val_loss)`` or user attributes of the current trial."""

    trial_id: int
    item: Item


class Sync(NamedTuple):
    """Answer with :class:`Synced` once everything sent before is written."""

    trial_id: int
    upto: int


class Ended(NamedTuple):
    """The worker told this trial's end (its state is in the study)."""

    trial_id: int


class StudyDone(NamedTuple):
    """The worker found the study's budget met (its tracked study run ends)."""


class Exit(NamedTuple):
    """Exit once everything sent before is written."""


# Reporting process -> worker.


class Log(NamedTuple):
    """A log record of the reporting process (``vars`` of a ``logging.LogRecord``)."""

    record: dict[str, Any]


class Ready(NamedTuple):
    """The study is open: reports can be written."""


class Pruned(NamedTuple):
    """The pruner said stop, at this epoch."""

    trial_id: int
    verdict: Verdict


class Failed(NamedTuple):
    """A report could not be written (or the study not opened): training should stop."""

    trial_id: int
    error: BaseException


class Synced(NamedTuple):
    """Everything up to :class:`Sync` number ``upto`` is written."""

    trial_id: int
    upto: int


# Reporting process -> tracking process (which starts with the worker's Init, says Ready once
# MLflow is imported, forwards its log records as Log, and ends on Exit).


class Track(NamedTuple):
    """Events for the tracker, in order: ``("begin", trial_id)``, ``("epoch", trial_id,
    step, values, ms)``, ``("end", trial_id)``, ``("done",)``."""

    events: list[tuple[Any, ...]]


class Answer(NamedTuple):
    """What :class:`Ask` number ``number`` asked for, or why it could not be had."""

    number: int
    value: Any = None
    error: BaseException | None = None


# Tracking process -> reporting process.


class Ask(NamedTuple):
    """A read or write of the study, made by the reporting process (the tracking process
    holds no database connection): ``what`` is ``"trial"`` (``arg``: its id; a
    ``TrialRecord`` back), ``"parent"`` (the stored study run) or ``"set_parent"``."""

    number: int
    what: str
    arg: Any = None


class Closed(NamedTuple):
    """The tracking process sent all it had (``ok``), or gave up waiting for the server."""

    ok: bool
