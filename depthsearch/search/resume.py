"""What the objective and the worker share of checkpoints: the state a retry goes on from
(:class:`Resumed`, found by :mod:`depthsearch.worker.checkpoints`), and what takes a trial's
states as it trains (:class:`StateWriter`)."""

from __future__ import annotations

import dataclasses
from typing import Protocol

from depthsearch.learn.train import TrainState

__all__ = ["Resumed", "StateWriter"]


@dataclasses.dataclass(frozen=True)
class Resumed:
    """What a retry found: the state to go on from (or None), whose it was, and why not."""

    state: TrainState | None
    source: int | None
    note: str | None


class StateWriter(Protocol):
    """Takes a trial's training states as it trains (the worker decides what is written)."""

    def save(self, state: TrainState) -> None: ...
