"""Backoff, and retrying a storage call while its database is away."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from optuna.exceptions import StorageInternalError
from sqlalchemy.exc import DBAPIError, OperationalError

from depthsearch.errors import DatabaseLost
from depthsearch.storage.urls import describe, mask_url

__all__ = ["Backoff", "is_transient", "retry_for", "retrying"]

_log = logging.getLogger(__name__)

T = TypeVar("T")


class Backoff:
    """Delays that double from ``first`` up to ``cap``, each scaled by a random factor in
    ``[1 - jitter, 1 + jitter]`` (jitter spreads the workers that all lost the database at the
    same moment). The one backoff of depthsearch: the reservation lock's tries, a lost
    database's retries, a worker waiting for the budget."""

    def __init__(self, first: float, cap: float, *, jitter: float = 0.0) -> None:
        if not 0 < first <= cap or not 0 <= jitter < 1:
            raise ValueError(
                f"0 < first <= cap and 0 <= jitter < 1 must hold, but got "
                f"(first={first}, cap={cap}, jitter={jitter})"
            )
        self.first, self.cap, self.jitter = first, cap, jitter
        self._next = first

    def peek(self) -> float:
        """The next delay before jitter."""
        return self._next

    def next(self, at_most: float | None = None) -> float:
        """The next delay (at most ``at_most`` before jitter); the one after doubles."""
        delay = self._next if at_most is None else min(self._next, at_most)
        self._next = min(self.cap, self._next * 2)
        return delay * (1 + self.jitter * (2 * random.random() - 1))

    def reset(self) -> None:
        """Back to ``first``: what went wrong came right."""
        self._next = self.first


def is_transient(e: BaseException) -> bool:
    """Whether ``e`` says the database is away (worth a retry), not that the call is wrong."""
    if isinstance(e, StorageInternalError | OperationalError):
        return True
    return isinstance(e, DBAPIError) and bool(e.connection_invalidated)


def retrying(fn: Callable[[], T], *, wait_s: float, what: str, url: str) -> T:
    """Calls ``fn``, retrying a lost database with backoff for up to ``wait_s`` seconds.

    Raises:
        DatabaseLost: the database stayed away for ``wait_s`` seconds (exit 1, not 2).
    """
    deadline = time.monotonic() + wait_s
    backoff = Backoff(0.5, 15.0, jitter=0.2)
    while True:
        try:
            return fn()
        except Exception as e:
            if not is_transient(e):
                raise
            left = deadline - time.monotonic()
            if left <= 0:
                raise DatabaseLost(
                    f"the database {mask_url(url)} was unreachable for {wait_s:.0f}s while "
                    f"{what}: {describe(e)}"
                ) from e
            _log.warning(
                "database %s unreachable while %s (%s); retrying in %.1fs",
                mask_url(url),
                what,
                describe(e),
                min(backoff.peek(), left),
            )
            time.sleep(backoff.next(at_most=left))


def retry_for(url: str, wait_s: float) -> Callable[[Callable[[], T], str], T]:
    """:func:`retrying` bound to one database and one wait: what a worker, and its reporting
    process, wrap every storage call in."""

    def retry(fn: Callable[[], T], what: str) -> T:
        return retrying(fn, wait_s=wait_s, what=what, url=url)

    return retry
