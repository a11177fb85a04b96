"""What the objective asks of a checkpoint store (the worker's, :mod:`depthsearch.worker
.checkpoints`, or none): the state a retry goes on from, and a writer for the trial's own."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Protocol

from depthsearch.learn.train import TrainState

__all__ = ["CheckpointStore", "Resumed", "StateWriter"]


@dataclasses.dataclass(frozen=True)
class Resumed:
    """What a retry found: the state to go on from (or None), whose it was, and why not."""

    state: TrainState | None
    source: int | None
    note: str | None


class StateWriter(Protocol):
    """Takes a trial's training states as it trains; ``close`` waits for what it writes (the
    newest state held back too, with ``keep_last``: the trial is to run again from it)."""

    def save(self, state: TrainState) -> None: ...

    def close(self, *, keep_last: bool = False) -> None: ...


class CheckpointStore(Protocol):
    """A study's checkpoints: read for a retry, written for a trial."""

    def resume(self, retried: Sequence[int], params: dict[str, Any], seed: int) -> Resumed: ...

    def for_trial(self, number: int, params: dict[str, Any], seed: int) -> StateWriter: ...
