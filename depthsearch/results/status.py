"""``depthsearch status``: where a study stands, from the database alone (any machine)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import optuna
from optuna.trial import TrialState

from depthsearch._text import counted
from depthsearch.results.answer import baseline_lines
from depthsearch.results.verdict import verdict_of
from depthsearch.search import trials as keys
from depthsearch.search.confirm import BASELINES, ended, ended_text
from depthsearch.storage import (
    best_complete,
    confirmation_trials,
    mask_url,
    recent_spans,
    retry_attrs,
    running_trials,
    trial_counts,
    trial_of,
    trial_user_attrs,
)
from depthsearch.studies import open_study
from depthsearch.tracking import PARENT_ATTR

__all__ = ["Budget", "Status", "budget_of", "running_time", "study_status"]


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def running_time(spans: Iterable[tuple[datetime, datetime]]) -> float:
    """Seconds during which at least one of the ``(start, end)`` spans ran: their union.

    A pace over it leaves out the time nothing ran (a study stopped overnight and resumed),
    and counts parallel workers' trials once per moment, not once per worker.
    """
    total = 0.0
    reach: datetime | None = None  # the end of the union so far, spans taken by start
    for start, end in sorted(spans):
        if reach is None or start > reach:
            total += (end - start).total_seconds()
            reach = end
        elif end > reach:
            total += (end - reach).total_seconds()
            reach = end
    return total


@dataclasses.dataclass(frozen=True)
class Budget:
    """Where a study stands against its budget: the search's trials against ``[study]
    n_trials``, and the confirmations (on top of it), from the database."""

    n_trials: int
    counts: dict[TrialState, int]
    #: The confirmation trials (``depthsearch confirm``, ``[confirm]``) by state.
    confirm: dict[TrialState, int] = dataclasses.field(default_factory=dict)
    #: Confirmations that ended without a result (:func:`~depthsearch.search.confirm.ended`).
    ended: tuple[tuple[int, int], ...] = ()

    def _n(self, state: TrialState, confirm: bool = False) -> int:
        return (self.confirm if confirm else self.counts).get(state, 0)

    @property
    def finished(self) -> int:
        """The search's trials finished (complete or pruned)."""
        done = (TrialState.COMPLETE, TrialState.PRUNED)
        return sum(self._n(s) - self._n(s, True) for s in done)

    @property
    def confirming(self) -> int:
        """Confirmations waiting or running."""
        return self._n(TrialState.WAITING, True) + self._n(TrialState.RUNNING, True)

    @property
    def met(self) -> bool:
        return self.finished >= self.n_trials and not self.confirming

    def line(self) -> str:
        """``32 of 32 search trials finished; confirmations: 9 complete, 1 running``."""
        text = f"{self.finished} of {counted(self.n_trials, 'search trial')} finished"
        if not sum(self.confirm.values()):
            return text
        parts = [f"{self._n(TrialState.COMPLETE, True)} complete"]
        parts += [
            f"{self._n(s, True)} {s.name.lower()}"
            for s in (TrialState.RUNNING, TrialState.WAITING)
            if self._n(s, True)
        ]
        if self.ended:
            parts.append(f"{len(self.ended)} ended without a result")
        return f"{text}; confirmations: {', '.join(parts)}"


def budget_of(study: optuna.Study, attrs: Mapping[str, Any] | None = None) -> Budget:
    """The study's budget (``[study] n_trials`` of its stored spec, as stored: no data file
    needed) and its trials per state; ``attrs``: the study's user attributes, when read."""
    attrs = study.user_attrs if attrs is None else attrs
    stored = attrs.get(keys.SPEC) or {}
    confirmations = confirmation_trials(study)
    return Budget(
        int(stored.get("study", {}).get("n_trials", 0)),
        trial_counts(study),
        {s: sum(t.state == s for t in confirmations) for s in TrialState},
        tuple(ended(confirmations)),
    )


@dataclasses.dataclass(frozen=True)
class Status:
    """What ``status`` shows (``text``) and whether the study holds its budget."""

    text: str
    budget_met: bool


def study_status(study_name: str, storage_url: str) -> Status:
    """The budget, pace, ETA and best of a study, and one row per running trial: its
    worker's host, pid and device, epoch, last validation loss, and the age of its last
    heartbeat (a dead worker's grows past ``[workers] grace_period``)."""
    study = open_study(study_name, storage_url, read_trials=False)
    # The stored spec as stored: no data file needed, so status works from any machine.
    study_attrs = study.user_attrs  # one read
    stored = study_attrs.get(keys.SPEC) or {}
    max_epochs = stored.get("train", {}).get("max_epochs", "?")
    budget = budget_of(study, study_attrs)
    by_name = {state.name: n for state, n in budget.counts.items()}
    lines = [
        f"study {study_name!r} in {mask_url(storage_url)}: {budget.line()} "
        f"({by_name.get('COMPLETE', 0)} complete, {by_name.get('PRUNED', 0)} pruned, "
        f"{by_name.get('RUNNING', 0)} running, {by_name.get('WAITING', 0)} waiting, "
        f"{by_name.get('FAIL', 0)} failed, in all)"
    ]
    gone = ended_text(budget.ended, study_name)
    if gone is not None:
        lines.append(gone)
    lines += _pace(study, budget)
    lines += _best_and_baselines(study, study_attrs)
    preempted = keys.Preemption(retry_attrs(study)).line()
    if preempted is not None:
        lines.append(preempted)
    tracked = study_attrs.get(PARENT_ATTR)
    if isinstance(tracked, dict):
        lines.append(
            f"tracked in MLflow at {tracked.get('uri')}: experiment "
            f"{tracked.get('experiment')!r}, study run {tracked.get('run_id')}"
        )
    lines += _running_table(study, max_epochs)
    lines.append(f"as of {datetime.now():%Y-%m-%d %H:%M:%S}")
    return Status("\n".join(lines), budget.met)


def _pace(study: optuna.Study, budget: Budget) -> list[str]:
    """ "budget met", or the pace over the recent trials and the time left to the budget."""
    spans = recent_spans(study)
    busy = running_time(spans)
    if budget.met:
        return [f"budget met: {budget.line()}"]
    if len(spans) >= 2 and busy > 0 and budget.finished < budget.n_trials:
        per_hour = len(spans) / busy * 3600
        eta = (budget.n_trials - budget.finished) / per_hour * 3600
        return [
            f"pace: {per_hour:.0f} trials/h over the last {len(spans)} finished "
            f"({_duration(busy)} while trials ran); about {_duration(eta)} to the budget"
        ]
    return []


def _best_and_baselines(study: optuna.Study, study_attrs: dict[str, Any]) -> list[str]:
    """The search's best trial, the baselines' scores and the verdict on them."""
    lines = []
    best = None if len(study.directions) > 1 else best_complete(study)
    if best is not None:
        metrics = keys.metrics_text(trial_user_attrs(study, best[1]))
        lines.append(f"best so far: trial {best[1]} val_loss={best[0]:.6g}{metrics}")
    stored_baselines = study_attrs.get(BASELINES)
    if isinstance(stored_baselines, dict) and len(study.directions) == 1:
        lines += baseline_lines(stored_baselines)
        said = verdict_of(None if best is None else trial_of(study, best[1]), stored_baselines)
        if said is not None:
            lines.append(said.text)
    return lines


def _running_table(study: optuna.Study, max_epochs: object) -> list[str]:
    """ "running:" and one row per running trial (none: no lines)."""
    running = sorted(running_trials(study), key=lambda r: r.trial.number)
    if not running:
        return []
    rows = [("trial", "host", "pid", "device", "epoch", "val_loss", "heartbeat")]
    for r in running:
        attrs, curve = r.trial.user_attrs, r.trial.intermediate_values
        last = curve[max(curve)] if curve else math.nan
        beat = r.heartbeat_age_s
        age = "none yet" if beat is None else f"{max(0.0, beat):.0f} s ago"  # clock: +-1 s
        rows.append(
            (
                str(r.trial.number),
                str(attrs.get(keys.WORKER_HOST, "?")),
                str(attrs.get(keys.WORKER_PID, "?")),
                str(attrs.get(keys.DEVICE, "?")),
                f"{max(curve) if curve else 0}/{max_epochs}",
                f"{last:.5g}",
                age,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    table = [
        "  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows
    ]
    return ["running:", *table]
