"""What a worker's step can end as: a trial reserved, run and finished, or the budget met or
held by others; and how a trial's run ended (:class:`Outcome`)."""

from __future__ import annotations

import dataclasses

import optuna
from optuna.trial import TrialState

__all__ = [
    "BudgetMet",
    "Finished",
    "Outcome",
    "Reservation",
    "Reserved",
    "Step",
    "Wait",
    "WorkerResult",
]


@dataclasses.dataclass
class WorkerResult:
    """What one worker did."""

    complete: int = 0
    pruned: int = 0
    failed: int = 0

    @property
    def ran(self) -> int:
        return self.complete + self.pruned + self.failed

    def count(self, state: TrialState) -> None:
        if state == TrialState.COMPLETE:
            self.complete += 1
        elif state == TrialState.PRUNED:
            self.pruned += 1
        else:
            self.failed += 1


@dataclasses.dataclass(frozen=True)
class Reserved:
    """A trial this worker is now running."""

    trial: optuna.Trial


@dataclasses.dataclass(frozen=True)
class BudgetMet:
    """The study holds its budget of finished trials: nothing more to do."""


@dataclasses.dataclass(frozen=True)
class Wait:
    """The budget is held by running trials: one of them may still fail and be retried."""


Reservation = Reserved | BudgetMet | Wait


@dataclasses.dataclass(frozen=True)
class Outcome:
    """How a trial's run ended, before anything is written: what `TrialLoop.finish` tells.

    ``retry``: a failure the system caused (SIGTERM, a lost reporting process): the next
    worker retries the trial from its checkpoint. ``error``: what to raise once the trial is
    finished (this worker stops); ``None``: the worker goes on.
    """

    state: TrialState
    value: float | tuple[float, ...] | None = None
    reason: str = ""
    retry: bool = False
    free_memory: bool = False
    error: BaseException | None = None
    #: Another worker finished the trial meanwhile (its stale check, after an outage that cut
    #: this one off): nothing is written, its checkpoints are the retry's, the worker goes on.
    taken_over: bool = False
    #: The database stayed away past ``[workers] db_wait``: see `TrialLoop.abandon`.
    lost: bool = False


@dataclasses.dataclass(frozen=True)
class Finished:
    """A trial this worker ran and finished (in ``state``; a failure may be queued again)."""

    number: int
    state: TrialState


Step = Finished | BudgetMet | Wait
