"""Trials whose worker died: failed, and queued again, by whichever worker looks next."""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from depthsearch.search import trials as keys
from depthsearch.search.compat import quiet_experimental, study_storage
from depthsearch.storage import running_without_heartbeat

__all__ = ["StaleTrials", "retry_callback"]

_log = logging.getLogger(__name__)


def retry_callback(storage: object) -> Callable[[optuna.Study, FrozenTrial], None] | None:
    """The storage's stale-trial callback (Optuna's retry of a failed trial with the same
    parameters), or ``None`` where the storage keeps no heartbeats."""
    get_callback = getattr(storage, "get_heartbeat_stale_trial_callback", None)
    return get_callback() if get_callback is not None else None


class StaleTrials:
    """Optuna's stale-heartbeat check, and the trials that never beat, at most once per
    heartbeat ``interval`` (``None``: the storage keeps no heartbeats, nothing to check)."""

    def __init__(self, study: optuna.Study, interval: float | None, grace_period: int) -> None:
        self.study = study
        self.interval = interval
        self.grace_period = grace_period
        self._checked = -float("inf")
        #: RUNNING trials with no heartbeat yet: trial id -> when this worker first saw them.
        self._unbeaten: dict[int, float] = {}

    def check(self) -> None:
        """Fails, and retries, trials whose worker died: stale heartbeats, and trials that
        never beat. At most once per heartbeat interval (a heartbeat goes stale over
        ``grace_period`` seconds: looking more often finds nothing new)."""
        now = time.monotonic()
        if self.interval is None or now - self._checked < self.interval:
            return
        with quiet_experimental():
            optuna.storages.fail_stale_trials(self.study)
        self.fail_unbeaten(now)
        self._checked = now

    def fail_unbeaten(self, now: float) -> None:
        """Fails, and retries, RUNNING trials whose worker died before their first heartbeat.

        Optuna's stale check skips trials that never beat. A live worker beats milliseconds
        after ``ask()``, so a trial this worker sees without a heartbeat at two checks
        ``grace_period`` apart has lost its worker. Timed on this worker's clock only: no
        clock is compared across machines.
        """
        ids = running_without_heartbeat(self.study)
        if ids is None:
            return
        self._unbeaten = {i: self._unbeaten.get(i, now) for i in ids}
        storage = study_storage(self.study)
        for unbeaten_id, first_seen in self._unbeaten.items():
            if now - first_seen < self.grace_period:
                continue
            try:
                storage.set_trial_user_attr(
                    unbeaten_id, keys.FAIL_REASON, "its worker stopped before the first heartbeat"
                )
                if not storage.set_trial_state_values(unbeaten_id, state=TrialState.FAIL):
                    continue
            except optuna.exceptions.UpdateFinishedTrialError:
                continue  # its worker, or another one, ended it meanwhile
            failed = copy.deepcopy(storage.get_trial(unbeaten_id))
            _log.warning(
                "trial %d marked FAIL: RUNNING for over %ds without a heartbeat",
                failed.number,
                self.grace_period,
            )
            callback = retry_callback(storage)
            if callback is not None:
                callback(self.study, failed)
