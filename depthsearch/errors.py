"""The exceptions depthsearch raises on purpose, and the exit code each one means.

Every error a user can act on derives from :class:`DepthsearchError`; the CLI turns it into one
line on stderr and exits with the error's :attr:`~DepthsearchError.exit_code`: 2 for bad input
(:class:`InputError`: a study file, a value, a column, a URL, a study name, an unreachable
database at start), 1 for a failure while running (:class:`RuntimeFailure`, a database lost
mid-run included). :class:`Interrupted` is not
an error: SIGINT or SIGTERM asked the worker to stop (exit 128 + the signal's number).
"""

from __future__ import annotations

import difflib
import signal
from collections.abc import Iterable

__all__ = [
    "DataError",
    "DatabaseLost",
    "DepthsearchError",
    "InputError",
    "Interrupted",
    "MissingDataFile",
    "NonFiniteLossError",
    "RuntimeFailure",
    "SpecError",
    "StorageError",
    "StudyMismatchError",
    "did_you_mean",
]


class DepthsearchError(Exception):
    """Root of every error that depthsearch raises on purpose."""

    #: The CLI's exit status for this error.
    exit_code = 1


class InputError(DepthsearchError):
    """What the user gave cannot be used: fix the input and run again (exit 2)."""

    exit_code = 2


class RuntimeFailure(DepthsearchError):
    """Something failed while running, not because of the input (exit 1)."""

    exit_code = 1


class SpecError(InputError, ValueError):
    """A study file, a key in it, or a value is not acceptable."""


class MissingDataFile(SpecError):
    """The study's data file is not where its spec says (on this machine)."""


class DataError(InputError, ValueError):
    """The data source cannot give what the study asks for (file, column, length)."""


class StorageError(InputError):
    """The study database cannot be reached or used (a URL, a server, a schema)."""


class DatabaseLost(RuntimeFailure):
    """The study database went away mid-run and stayed away for ``[workers] db_wait``
    seconds (exit 1: a scheduler may run the worker again; nothing the user typed is wrong)."""


class StudyMismatchError(InputError):
    """A study with that name exists but was created from a different spec."""


class NonFiniteLossError(RuntimeFailure):
    """Training produced a NaN or infinite loss."""

    def __init__(self, epoch: int, loss: float) -> None:
        super().__init__(f"loss became {loss} at epoch {epoch}")
        self.epoch = epoch
        self.loss = loss


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived; the running trial has been marked FAIL.

    A ``BaseException``, like ``KeyboardInterrupt``: no ``except Exception`` swallows it.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the choice closest to ``word`` (the same name in other
    case first, then a near spelling), or ``""`` when none is close: for error messages."""
    options = [str(c) for c in choices]
    same = [c for c in options if c.lower() == word.lower()]
    close = same or difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""
