"""A study's trials in MLflow: one parent run per study, one nested run per trial.

A worker hands each epoch it reports to the study to its :class:`Tracker` too: a thread of the
worker that sends what came every :data:`FLUSH_S` seconds, one request per trial, so neither
training nor the pruner's answers wait for MLflow (and a small machine's training does not pay
for a request per epoch).
When a trial starts, its run is created with the trial's parameters (read back from the study,
so they are the study's own); each epoch adds ``val_loss`` (and ``train_loss``, and a
classification's ``val_accuracy`` and ``val_f1``) at ``step`` = the epoch; when the worker has
told the trial's end, its user attributes become tags, its best-epoch metrics metrics
(``best_val_loss``, ``best_val_rmse``, ``test_*``, ``param_count`` ...), ``depthsearch.state``
its state (``pruned_reason`` is a user attribute), and the run ends FINISHED (complete), KILLED
(pruned) or FAILED. A trial that retries a failed one links its predecessor's run
(``depthsearch.retry_of_run``; the predecessor, left RUNNING by a worker that died, is ended
FAILED).

Workers on many machines share the parent run: the first to need it creates it under the
study's lock in the study database, which keeps its id (study attribute
:data:`PARENT_ATTR`); it ends FINISHED when a worker finds the budget met.

MLflow being away never costs a trial: the first error turns tracking off for the rest of this
worker's life with one warning (the study database still holds everything).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from depthsearch._text import finite, mask_uri, public_uri
from depthsearch.errors import RuntimeFailure
from depthsearch.tracking.client import client_env, settle_probes
from depthsearch.tracking.records import Target, TrialRecord, describe_error, final_metrics

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

__all__ = ["Tracker"]

_log = logging.getLogger(__name__)

#: How long the tracker gathers what comes before it sends it (the runs lag that much).
FLUSH_S = 5.0
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
    text = (
        value
        if isinstance(value, str)
        else json.dumps(finite(value), default=str, allow_nan=False)
    )
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclasses.dataclass
class _Pending:
    """What came for one trial within one flush."""

    begin: bool = False
    epochs: list[tuple[Any, ...]] = dataclasses.field(default_factory=list)
    end: bool = False


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

    # The worker's side: queue and return.

    def begin(self, trial_id: int) -> None:
        """A trial started: its run is created."""
        self._events.put(("begin", trial_id))

    def epoch(
        self, trial_id: int, step: int, values: Mapping[str, float], *, ms: int | None = None
    ) -> None:
        """An epoch of a started trial: its metrics at ``step``, timed ``ms`` (Unix time in
        milliseconds; now when not given)."""
        when = int(time.time() * 1000) if ms is None else ms
        self._events.put(("epoch", trial_id, step, dict(values), when))

    def end(self, trial_id: int) -> None:
        """The worker told the trial's end: its attributes and state, and the run ends."""
        self._events.put(("end", trial_id))

    def study_done(self) -> None:
        """The study's budget is met: the study run ends FINISHED (a worker that joins it
        later sets it RUNNING again)."""
        self._events.put(("done",))

    def close(self, timeout: float = 15.0) -> bool:
        """Sends what is queued (waiting up to ``timeout`` seconds); True when all went."""
        self._events.put(None)
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # The thread's side.

    def _work(self) -> None:
        while True:
            batch = [self._events.get()]
            # What comes within FLUSH_S goes in one request per trial: each request costs the
            # server (and this process) CPU that a small machine's training would feel.
            deadline = time.monotonic() + (0.0 if batch[0] == ("connect",) else FLUSH_S)
            while None not in batch:
                try:
                    batch.append(self._events.get(timeout=max(0.0, deadline - time.monotonic())))
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
                        mask_uri(self.target.uri),
                        describe_error(e),
                    )
            if None in batch:
                return

    def _handle(self, events: list[tuple[Any, ...]]) -> None:
        work: dict[int, _Pending] = {}
        done = False
        for event in events:
            if event[0] == "connect":
                self._connect()
                continue
            if event[0] == "done":
                done = True
                continue
            pending = work.setdefault(event[1], _Pending())
            if event[0] == "begin":
                pending.begin = True
            elif event[0] == "epoch":
                pending.epochs.append(event[2:])
            elif event[0] == "end":
                pending.end = True
        for trial_id, pending in work.items():
            self._send(trial_id, pending)
        if done:
            self.client.set_terminated(self._parent_id, "FINISHED")

    @property
    def client(self) -> MlflowClient:
        assert self._client is not None
        return self._client

    @staticmethod
    def _metrics(values: Mapping[str, float], ms: int, step: int) -> list[Any]:
        from mlflow.entities import Metric

        return [Metric(key, float(v), ms, step) for key, v in values.items() if math.isfinite(v)]

    def _connect(self) -> None:
        client_env()
        settle_probes()
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise RuntimeFailure(
                "MLflow is not installed where this worker runs: pip install 'depthsearch[mlflow]'"
            ) from None

        target = self.target
        client = MlflowClient(tracking_uri=target.uri)
        experiment_id = _experiment_id(client, target.experiment)

        def fits(known: Any) -> bool:
            return (
                isinstance(known, dict)
                and known.get("uri") == public_uri(target.uri)
                and known.get("experiment_id") == experiment_id
            )

        parent = self._claim(fits, lambda: self._study_run(client, experiment_id))
        if client.get_run(parent["run_id"]).info.status != "RUNNING":
            # The study ran to its budget before; this worker adds to it again.
            client.update_run(parent["run_id"], status="RUNNING")
        self._client, self._experiment_id = client, experiment_id
        self._parent_id = parent["run_id"]
        _log.info(
            "logging trials to MLflow at %s, experiment %r (study run %s)",
            mask_uri(target.uri),
            target.experiment,
            self._parent_id,
        )

    def _study_run(self, client: Any, experiment_id: str) -> dict[str, str]:
        """Creates the study's parent run with its settings; what the study stores of it."""
        from mlflow.entities import Param

        target = self.target
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
            "uri": public_uri(target.uri),
            "experiment": target.experiment,
            "experiment_id": experiment_id,
            "run_id": run.info.run_id,
        }

    def _start(self, record: TrialRecord) -> str:
        """Creates the trial's run (its tags said at once); returns its id."""
        target = self.target
        run = self.client.create_run(
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
        if record.retry_of is not None:
            self._link(run_id, record.retry_of)
        return run_id

    def _send(self, trial_id: int, pending: _Pending) -> None:
        """What came for one trial since the last flush, in one ``log_batch`` (or as few as
        its limits allow): the run (created on its first flush) with the trial's params,
        the epochs' metrics, and at its end the attributes, final metrics and status."""
        from mlflow.entities import Param, RunTag

        record: TrialRecord | None = None
        run_id = self._runs.get(trial_id)
        params: list[Any] = []
        if run_id is None:
            if not (pending.begin or pending.end):
                return  # epochs of a trial whose start was not seen
            record = self._read(trial_id)
            run_id = self._runs[trial_id] = self._start(record)
            params = [Param(k, _text(v, 6000)) for k, v in sorted(record.params.items())]
        metrics = [
            m for step, values, ms in pending.epochs for m in self._metrics(values, ms, step)
        ]
        if pending.epochs:
            self._stepped.add(trial_id)
        tags: list[Any] = []
        status = None
        if pending.end:
            record = record or self._read(trial_id)
            ms = int(time.time() * 1000)
            metrics += self._metrics(final_metrics(record.user_attrs), ms, 0)
            if trial_id not in self._stepped:  # no epoch came as it trained: the stored curve
                curve = record.intermediate or {
                    i + 1: v
                    for i, v in enumerate(record.user_attrs.get("val_loss_curve") or [])
                    if isinstance(v, (int, float))
                }
                for step, loss in sorted(curve.items()):
                    metrics += self._metrics({"val_loss": loss}, ms, step)
            tags = [RunTag(k, _text(v, _TAG_LIMIT)) for k, v in sorted(record.user_attrs.items())]
            tags.append(RunTag("depthsearch.state", record.state))
            status = _STATUS.get(record.state)
            del self._runs[trial_id]
            self._stepped.discard(trial_id)
        while params or tags or metrics:
            part_p, params = params[:_KEYS_PER_BATCH], params[_KEYS_PER_BATCH:]
            part_t, tags = tags[:_KEYS_PER_BATCH], tags[_KEYS_PER_BATCH:]
            room = _METRICS_PER_BATCH - len(part_p) - len(part_t)
            part_m, metrics = metrics[:room], metrics[room:]
            self.client.log_batch(run_id, metrics=part_m, params=part_p, tags=part_t)
        if status is not None:
            self.client.set_terminated(run_id, status)

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


def _experiment_id(client: Any, name: str) -> str:
    """The active experiment ``name``'s id, created when absent (by this worker or another
    at the same moment)."""
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return str(client.create_experiment(name))
        except MlflowException:  # another worker created it meanwhile
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
    if experiment.lifecycle_stage != "active":
        raise RuntimeFailure(
            f"MLflow experiment {name!r} is deleted; restore it or set [tracking] experiment"
        )
    return str(experiment.experiment_id)
