"""The exceptions depthsearch raises on purpose.

Every error a user can act on derives from :class:`DepthsearchError`; the CLI turns those into one
line on stderr and a non-zero exit code instead of a traceback.
"""

from __future__ import annotations

__all__ = [
    "DataError",
    "DepthsearchError",
    "NonFiniteLossError",
    "SpecError",
    "StorageError",
    "StudyMismatchError",
]


class DepthsearchError(Exception):
    """Root of every error that depthsearch raises on purpose."""


class SpecError(DepthsearchError, ValueError):
    """A study file, a key in it, or a value is not acceptable."""


class DataError(DepthsearchError, ValueError):
    """The data source cannot give what the study asks for (file, column, length)."""


class StorageError(DepthsearchError):
    """The study database cannot be reached or used."""


class StudyMismatchError(DepthsearchError):
    """A study with that name exists but was created from a different spec."""


class NonFiniteLossError(DepthsearchError):
    """Training produced a NaN or infinite loss."""

    def __init__(self, epoch: int, loss: float) -> None:
        super().__init__(f"loss became {loss} at epoch {epoch}")
        self.epoch = epoch
        self.loss = loss
