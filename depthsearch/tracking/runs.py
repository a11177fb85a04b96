"""A study's trials in MLflow: one parent run per study, one nested run per trial.

A worker's reporting process (which writes each epoch to the study) hands the same epochs to a
:class:`Tracker`: a thread of its own that logs them to the tracking server, so neither
training nor the pruner's answers wait for MLflow. When a trial starts, its run is created
with the trial's parameters (read back from the study, so they are the study's own); each
epoch adds ``val_loss`` (and ``train_loss``, and a classification's ``val_accuracy`` and
``val_f1``) at ``step`` = the epoch; when the worker has told the trial's end, its user
attributes become tags, its best-epoch metrics metrics (``best_val_loss``, ``best_val_rmse``,
``test_*``, ``param_count`` ...), ``depthsearch.state`` its state (``pruned_reason`` is a user
attribute), and the run ends FINISHED (complete), KILLED (pruned) or FAILED. A trial that
retries a failed one links its predecessor's run (``depthsearch.retry_of_run``; the
predecessor, left RUNNING by a worker that died, is ended FAILED).

Workers on many machines share the parent run: the first to need it creates it under the
study's lock in the study database, which keeps its id (study attribute
:data:`PARENT_ATTR`).

MLflow being away never costs a trial: the first error turns tracking off for the rest of this
worker's life with one warning (the study database still holds everything).
"""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from depthsearch.errors import RuntimeFailure
from depthsearch.tracking.records import Target, TrialRecord, final_metrics

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

__all__ = ["CLIENT_ENV", "Tracker"]

_log = logging.getLogger(__name__)

#: MLflow client settings in a worker (each kept when already set): a lost server costs a
#: few seconds of one thread, not the client's default minutes of retries; no run links
#: printed on stdout.
CLIENT_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}
#: A run's end by the trial's state.
_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}
#: The longest tag value written (MLflow's limit is 8000 characters; longer JSON is cut).
_TAG_LIMIT = 5000
#: log_batch's limits: metrics, and params or tags, per request.
_METRICS_PER_BATCH, _KEYS_PER_BATCH = 1000, 100


#: Reads a trial (by its id) from the study database.
ReadTrial = Callable[[int], TrialRecord]
#: Returns the study's parent run as stored, or, when the stored one does not fit (first
#: argument: the test), the one the second argument creates, stored under the study's lock.
ClaimParent = Callable[[Callable[[Any], bool], Callable[[], dict[str, str]]], dict[str, str]]


def _text(value: Any, limit: int) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe(error: BaseException) -> str:
    first = (str(error).strip().splitlines() or [""])[0]
    if any(s in first for s in ("Max retries exceeded", "Connection refused", "timed out")):
        return "no answer: connection refused or timed out"
    if len(first) > 200:
        first = first[:197] + "..."
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


def _chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class Tracker:
    """Logs a worker's trials to MLflow from a thread: every call returns at once.

    Args:
        target: the server, experiment and study.
        read_trial: reads a trial from the study (its parameters, state, attributes).
        claim_parent: the study's parent run, created once for all workers.
        parent_params: the study's settings, logged as the parent run's parameters.
    """

    def __init__(
        self,
        target: Target,
        *,
        read_trial: ReadTrial,
        claim_parent: ClaimParent,
        parent_params: Mapping[str, Any] | None = None,
    ) -> None:
        self.target = target
        self._read = read_trial
        self._claim = claim_parent
        self._parent_params = dict(parent_params or {})
        self._events: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        #: Set by the first error: nothing more is sent.
        self.off: BaseException | None = None
        self._client: MlflowClient | None = None
        self._experiment_id = ""
        self._parent_id = ""
        self._runs: dict[int, str] = {}  # trial id -> its run
        self._stepped: set[int] = set()  # trials whose epochs came as they were trained
        self._events.put(("connect",))  # imports MLflow while the worker loads its data
        self._thread = threading.Thread(target=self._work, name="mlflow-tracking", daemon=True)
        self._thread.start()

    # The reporting process's side: queue and return.

    def begin(self, trial_id: int) -> None:
        """A trial started: its run is created."""
        self._events.put(("begin", trial_id))

    def epoch(self, trial_id: int, step: int, values: Mapping[str, float]) -> None:
        """An epoch of a started trial: its metrics at ``step``."""
        self._events.put(("epoch", trial_id, step, dict(values), int(time.time() * 1000)))

    def end(self, trial_id: int) -> None:
        """The worker told the trial's end: its attributes and state, and the run ends."""
        self._events.put(("end", trial_id))

    def close(self, timeout: float = 15.0) -> bool:
        """Sends what is queued (waiting up to ``timeout`` seconds); True when all went."""
        self._events.put(None)
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # The thread's side.

    def _work(self) -> None:
        while True:
            batch = [self._events.get()]
            while True:  # what queued meanwhile goes in as few requests as it can
                try:
                    batch.append(self._events.get_nowait())
                except queue.Empty:
                    break
            if self.off is None:
                try:
                    self._handle([e for e in batch if e is not None])
                except Exception as e:
                    self.off = e
                    _log.warning(
                        "MLflow tracking at %s is off for this worker (%s); the study "
                        "database still records every trial",
                        self.target.uri,
                        _describe(e),
                    )
            if None in batch:
                return

    def _handle(self, events: list[tuple[Any, ...]]) -> None:
        metrics: dict[str, list[Any]] = {}

        def flush() -> None:
            for run_id, items in metrics.items():
                for part in _chunks(items, _METRICS_PER_BATCH):
                    self.client.log_batch(run_id, metrics=part)
            metrics.clear()

        for event in events:
            if event[0] == "epoch":
                _, trial_id, step, values, ms = event
                run_id = self._runs.get(trial_id)
                if run_id is None:
                    continue
                self._stepped.add(trial_id)
                metrics.setdefault(run_id, []).extend(self._metrics(values, ms, step))
                continue
            flush()
            if event[0] == "connect":
                self._connect()
            elif event[0] == "begin":
                self._start(event[1], self._read(event[1]))
            elif event[0] == "end":
                self._end(event[1])
        flush()

    @property
    def client(self) -> MlflowClient:
        assert self._client is not None
        return self._client

    @staticmethod
    def _metrics(values: Mapping[str, float], ms: int, step: int) -> list[Any]:
        from mlflow.entities import Metric

        return [Metric(key, float(v), ms, step) for key, v in values.items() if math.isfinite(v)]

    def _connect(self) -> None:
        for key, value in CLIENT_ENV.items():
            os.environ.setdefault(key, value)
        try:
            from mlflow.entities import Param
            from mlflow.exceptions import MlflowException
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise RuntimeFailure(
                "MLflow is not installed where this worker runs: pip install 'depthsearch[mlflow]'"
            ) from None

        target = self.target
        client = MlflowClient(tracking_uri=target.uri)
        experiment = client.get_experiment_by_name(target.experiment)
        if experiment is None:
            try:
                experiment_id = client.create_experiment(target.experiment)
            except MlflowException:  # another worker created it meanwhile
                experiment = client.get_experiment_by_name(target.experiment)
                if experiment is None:
                    raise
        if experiment is not None:
            if experiment.lifecycle_stage != "active":
                raise RuntimeFailure(
                    f"MLflow experiment {target.experiment!r} is deleted; restore it or set "
                    "[tracking] experiment"
                )
            experiment_id = experiment.experiment_id

        def fits(known: Any) -> bool:
            return (
                isinstance(known, dict)
                and known.get("uri") == target.uri
                and known.get("experiment_id") == experiment_id
            )

        def create() -> dict[str, str]:
            run = client.create_run(
                experiment_id,
                run_name=f"study {target.study}",
                tags={
                    "depthsearch.role": "study",
                    "depthsearch.study": target.study,
                    "depthsearch.storage": target.storage,
                },
            )
            params = [Param(k, _text(v, 6000)) for k, v in self._parent_params.items()]
            for part in _chunks(params, _KEYS_PER_BATCH):
                client.log_batch(run.info.run_id, params=part)
            return {
                "uri": target.uri,
                "experiment": target.experiment,
                "experiment_id": experiment_id,
                "run_id": run.info.run_id,
            }

        parent = self._claim(fits, create)
        self._client, self._experiment_id, self._parent_id = (
            client,
            experiment_id,
            parent["run_id"],
        )
        _log.info(
            "logging trials to MLflow at %s, experiment %r (study run %s)",
            target.uri,
            target.experiment,
            self._parent_id,
        )

    def _start(self, trial_id: int, record: TrialRecord) -> str:
        from mlflow.entities import Param

        target, client = self.target, self.client
        run = client.create_run(
            self._experiment_id,
            run_name=f"trial {record.number}",
            tags={
                "mlflow.parentRunId": self._parent_id,
                "depthsearch.study": target.study,
                "depthsearch.trial": str(record.number),
                "depthsearch.storage": target.storage,
                "depthsearch.state": record.state,
            },
        )
        run_id: str = run.info.run_id
        params = [Param(k, _text(v, 6000)) for k, v in sorted(record.params.items())]
        for part in _chunks(params, _KEYS_PER_BATCH):
            client.log_batch(run_id, params=part)
        self._runs[trial_id] = run_id
        if record.retry_of is not None:
            self._link(run_id, record.retry_of)
        return run_id

    def _link(self, run_id: str, number: int) -> None:
        """Links a retry's run to its predecessor's (ended FAILED if its worker died)."""
        from mlflow.entities import RunTag

        client = self.client
        found = [
            r
            for r in client.search_runs(
                [self._experiment_id],
                filter_string=f"tags.`depthsearch.trial` = '{number}'",
                max_results=50,
            )
            if r.data.tags.get("depthsearch.study") == self.target.study
            and r.info.run_id != run_id
        ]
        tags = [RunTag("depthsearch.retry_of", str(number))]
        if found:
            before = found[0]
            tags.append(RunTag("depthsearch.retry_of_run", before.info.run_id))
            client.set_tag(before.info.run_id, "depthsearch.retried_by_run", run_id)
            if before.info.status == "RUNNING":
                client.set_tag(before.info.run_id, "depthsearch.state", "FAIL")
                client.set_terminated(before.info.run_id, "FAILED")
        client.log_batch(run_id, tags=tags)

    def _end(self, trial_id: int) -> None:
        from mlflow.entities import RunTag

        record = self._read(trial_id)
        run_id = self._runs.pop(trial_id, None)
        if run_id is None:  # a trial this process never saw start (multi-objective)
            run_id = self._start(trial_id, record)
            self._runs.pop(trial_id, None)
        client = self.client
        ms = int(time.time() * 1000)
        metrics = self._metrics(final_metrics(record.user_attrs), ms, 0)
        if trial_id not in self._stepped:  # no epoch came as it trained: the stored curve
            curve = record.intermediate or {
                i + 1: v
                for i, v in enumerate(record.user_attrs.get("val_loss_curve") or [])
                if isinstance(v, (int, float))
            }
            metrics += [
                m
                for step, loss in sorted(curve.items())
                for m in self._metrics({"val_loss": loss}, ms, step)
            ]
        self._stepped.discard(trial_id)
        for part in _chunks(metrics, _METRICS_PER_BATCH):
            client.log_batch(run_id, metrics=part)
        tags = [RunTag(k, _text(v, _TAG_LIMIT)) for k, v in sorted(record.user_attrs.items())]
        tags.append(RunTag("depthsearch.state", record.state))
        for part in _chunks(tags, _KEYS_PER_BATCH):
            client.log_batch(run_id, tags=part)
        status = _STATUS.get(record.state)
        if status is not None:
            client.set_terminated(run_id, status)
