"""Running trials in this process: :func:`run_worker` (what every worker runs), and
:func:`run_study`, what ``depthsearch run`` does, for a notebook or a script."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import optuna
import torch

from depthsearch._text import finite, mask_uri
from depthsearch.learn.baselines import baselines
from depthsearch.learn.data import Windows, prepare
from depthsearch.learn.train import EpochResult, resolve_device
from depthsearch.search.confirm import BASELINES
from depthsearch.search.objective import Objective
from depthsearch.search.trials import retried_trials
from depthsearch.spec import StudySpec, load_spec, spec_from_dict
from depthsearch.storage import (
    Backoff,
    dispose_lock_engines,
    load_all_trials,
    mask_url,
    resolve_storage,
    retry_for,
    storage_lock,
)
from depthsearch.storage.trials import TrialWrites, trial_of_id
from depthsearch.studies import InlineData, create_study, spec_with_data
from depthsearch.tracking import PARENT_ATTR, TrialRecord, target_of
from depthsearch.worker.checkpoints import open_checkpoints
from depthsearch.worker.confirm import confirm_at_end
from depthsearch.worker.process import settle_heap, training_settings
from depthsearch.worker.signals import Signals
from depthsearch.worker.trial import BudgetMet, Finished, Trials, Wait, WorkerResult
from depthsearch.worker.writer import Writer

__all__ = ["run_study", "run_study_here", "run_worker", "work"]

_log = logging.getLogger(__name__)

#: First pause of a worker that finds the budget held by running trials (doubling up to 2 s).
_FIRST_WAIT_S = 0.1


def _spec(study: str | Path | Mapping[str, Any] | StudySpec) -> StudySpec:
    if isinstance(study, StudySpec):
        return study
    if isinstance(study, (str, Path)):
        return load_spec(study)
    return spec_from_dict(study, where="<dict>", base=Path.cwd())


def run_study_here(
    study: str | Path | Mapping[str, Any] | StudySpec,
    *,
    storage: str | None = None,
    n_trials: int | None = None,
    timeout: float | None = None,
    on_epoch: Callable[[int, EpochResult], None] | None = None,
    tune_process: bool = False,
    data: InlineData = None,
) -> tuple[optuna.Study, WorkerResult]:
    """:func:`run_study`, and what this process did (the CLI prints both; it tunes the
    process for training, ``tune_process``)."""
    url = resolve_storage(storage)
    spec = _spec(study) if data is None else spec_with_data(study, data, url)
    # Everything that can be wrong with the input is found before the database is touched.
    resolve_device(spec.train.device)
    data = prepare(spec.data, "cpu", seed=spec.seed, kind=spec.task.kind)
    try:
        created = create_study(spec, url)
        result = work(
            created,
            spec,
            url,
            n_trials=n_trials,
            timeout=timeout,
            on_epoch=on_epoch,
            data=data,
            tune_process=tune_process,
        )
    finally:
        dispose_lock_engines()  # the study returned keeps its own engine
    return created, result


def work(
    study: optuna.Study,
    spec: StudySpec,
    url: str,
    *,
    n_trials: int | None,
    timeout: float | None,
    **options: Any,
) -> WorkerResult:
    """Trials in this process: ``n_trials`` more, or up to the study's budget when not given
    (``options`` go to :func:`run_worker`)."""
    return run_worker(
        study,
        spec,
        url,
        budget=None if n_trials else spec.n_trials,
        n_trials=n_trials,
        timeout=timeout,
        **options,
    )


def run_study(
    study: str | Path | Mapping[str, Any] | StudySpec,
    *,
    storage: str | None = None,
    n_trials: int | None = None,
    timeout: float | None = None,
    on_epoch: Callable[[int, EpochResult], None] | None = None,
    data: InlineData = None,
) -> optuna.Study:
    """Creates (or resumes) a study and runs its trials in this process; returns it.

    The process is left as it was found (torch's threads, cuDNN's flag, signal handlers,
    no lock engines kept); glibc's allocator is left alone (the CLI tunes it).

    Args:
        study: a study file's path, the same tables as a dict (a relative ``[data] path`` is
            relative to the working directory), or a :class:`~depthsearch.StudySpec`.
        storage: the study database (default: ``$DEPTHSEARCH_STORAGE``, else
            ``sqlite:///depthsearch.db``), as ``--storage``.
        n_trials: run this many more trials; without it, run until the study holds its
            ``[study] n_trials`` finished trials (other workers' included).
        timeout: start no trial after this many seconds.
        on_epoch: called with (trial number, epoch result) after every epoch.
        data: the data itself instead of a ``[data] path``: a long-format DataFrame (the
            ``[data]`` table names its id, time, target and features) or arrays ``X``
            (N, T, F), ``y`` and optionally ``lengths`` (a dict, or a tuple in that order).
            It is written once beside the study (the study file's folder, else the SQLite
            database's, else the working directory) as ``NAME.data.parquet`` / ``.npz``,
            and its SHA-256 recorded, so that workers on other machines train on the same
            bytes.

    Raises:
        DepthsearchError: a bad study, data file or database, in one line;
            ``Interrupted`` on Ctrl-C (the running trial is marked FAIL first).
    """
    created, _ = run_study_here(
        study, storage=storage, n_trials=n_trials, timeout=timeout, on_epoch=on_epoch, data=data
    )
    return created


def run_worker(
    study: optuna.Study,
    spec: StudySpec,
    storage_url: str,
    *,
    budget: int | None = None,
    n_trials: int | None = None,
    timeout: float | None = None,
    device: str | None = None,
    threads: int | None = None,
    on_epoch: Callable[[int, EpochResult], None] | None = None,
    stop: threading.Event | None = None,
    data: Windows | None = None,
    tune_process: bool = False,
    only_waiting: bool = False,
) -> WorkerResult:
    """Runs trials of ``study`` in this process (its training thread, and threads for the
    database writes, the heartbeat and a tracked study's MLflow) until the search's
    ``budget`` is met (every worker's trials count), ``n_trials`` ran, ``timeout`` seconds
    passed or ``stop`` is set. ``only_waiting``: queued trials only (``confirm --wait``).
    ``device``/``threads`` override the spec's; ``data``: samples already loaded.

    Torch's threads, cuDNN's flag and the signal handlers are put back at the end;
    ``tune_process`` also tunes glibc's allocator and freezes start-up's heap out of the
    garbage collector's passes, for good (a process that exists to train).

    Raises:
        Interrupted: SIGINT/SIGTERM; the running trial was marked FAIL first.
        DepthsearchError: bad data, device or database.
    """
    torch_device = resolve_device(device or spec.train.device)
    with contextlib.ExitStack() as held:  # what it sets and starts, undone at the end
        held.enter_context(
            training_settings(
                torch_device, threads or spec.train.threads, tune_allocator=tune_process
            )
        )
        signals = Signals()
        trials = _trials(held, study, spec, storage_url, torch_device, data, signals)
        trials.only_waiting, trials.on_epoch = only_waiting, on_epoch
        if tune_process:
            settle_heap()  # start-up's garbage collected now, not in the first trial
        _log.info(
            "worker on %s (%d torch threads), study %r in %s",
            torch_device,
            torch.get_num_threads(),
            study.study_name,
            mask_url(storage_url),
        )
        signals.install()
        try:
            limits = _Limits(n_trials, timeout, stop)
            return _loop(trials, spec, storage_url, budget, signals, limits)
        finally:
            if signals.for_good():  # the second Ctrl-C came after the first's trial ended
                trials.drop_resumed()
            signals.restore()


def _trials(
    held: contextlib.ExitStack,
    study: optuna.Study,
    spec: StudySpec,
    url: str,
    device: torch.device,
    data: Windows | None,
    signals: Signals,
) -> Trials:
    """The worker's parts, started (and stopped with ``held``): the MLflow tracker (it
    imports MLflow while the data loads), the samples, the writer, the checkpoints."""
    tracker = _tracker(spec, study, url)
    if tracker is not None:
        held.callback(_close_tracker, tracker)
    call_db = retry_for(url, spec.workers.db_wait)
    samples = _samples(study, spec, data, call_db).to(device)
    # What the sampler reads at the first suggest, read once (seconds at 100,000 trials).
    call_db(lambda: load_all_trials(study), "reading the study's trials")
    writer = Writer(TrialWrites(study), call_db)
    held.callback(writer.close)
    checkpoints = open_checkpoints(spec, url, study.study_name)
    objective = Objective(spec, samples, device, interrupt=signals.check)
    trials = Trials(
        study,
        spec,
        url,
        objective,
        writer=writer,
        checkpoints=checkpoints,
        tracker=tracker,
        for_good=signals.for_good,
    )
    held.callback(trials.close)
    return trials


@dataclasses.dataclass
class _Limits:
    """When a worker stops besides its budget: trials run, time, a caller's event."""

    n_trials: int | None
    timeout: float | None
    stop: threading.Event | None
    started: float = dataclasses.field(default_factory=time.monotonic)

    def reached(self, ran: int) -> bool:
        return (
            (self.stop is not None and self.stop.is_set())
            or (self.n_trials is not None and ran >= self.n_trials)
            or (self.timeout is not None and time.monotonic() - self.started >= self.timeout)
        )


def _loop(
    trials: Trials,
    spec: StudySpec,
    url: str,
    budget: int | None,
    signals: Signals,
    limits: _Limits,
) -> WorkerResult:
    """Trial after trial; the study file's ``[confirm]`` queued once the search is done."""
    result = WorkerResult()
    # Waiting (the budget is held by running trials): look again soon, since the wait
    # usually ends when another worker's last trial does, then back off.
    poll = max(_FIRST_WAIT_S, min(2.0, trials.heartbeat_interval or 2.0))
    wait = Backoff(_FIRST_WAIT_S, poll)
    asked_confirm = False
    while not limits.reached(result.ran):
        signals.check()
        match trials.run_trial(budget):
            case BudgetMet():
                if trials.only_waiting or asked_confirm or not spec.confirm.seeds:
                    if trials.tracker is not None:
                        trials.tracker.study_done()  # its MLflow run ends FINISHED
                    break
                # [confirm]: queued once, by whichever worker gets here first; every worker
                # then looks again, and runs them.
                asked_confirm = True
                trials.call_db(
                    lambda: confirm_at_end(trials.study, spec, url), "queueing the confirmations"
                )
            case Wait():
                signals.sleep(wait.next())
            case Finished(state=state):
                result.count(state)
                wait.reset()
    return result


def _samples(study: optuna.Study, spec: StudySpec, data: Windows | None, call_db: Any) -> Windows:
    """The study's samples (read here unless given), and its baselines written for status,
    report and answer (every worker's data is the same: the first one writes them)."""
    data = data or prepare(spec.data, "cpu", seed=spec.seed, kind=spec.task.kind)
    scores = finite(baselines(data))
    if scores and study.user_attrs.get(BASELINES) != scores:
        call_db(lambda: study.set_user_attr(BASELINES, scores), "saving the baselines")
    return data


def _tracker(spec: StudySpec, study: optuna.Study, url: str) -> Any:
    """The study's MLflow tracker (a thread of this worker), or None when it is not tracked."""
    target = target_of(spec, storage=mask_url(url))
    if target is None:
        return None
    from depthsearch.tracking import Tracker

    call_db = retry_for(url, spec.workers.db_wait)

    def read(tid: int) -> TrialRecord:
        frozen = call_db(lambda: trial_of_id(study, tid), "reading a trial")
        retries = retried_trials(frozen)
        return TrialRecord(
            number=frozen.number,
            state=frozen.state.name,
            params=dict(frozen.params),
            user_attrs=dict(frozen.user_attrs),
            intermediate=dict(frozen.intermediate_values),
            retry_of=retries[-1] if retries else None,
        )

    def claim(fits: Callable[[object], bool], create: Callable[[], dict[str, str]]) -> Any:
        # One study run for every worker of the study: created under the study's lock.
        with storage_lock(url, scope=f"mlflow:{study.study_name}"):
            known = call_db(lambda: study.user_attrs, "reading the study").get(PARENT_ATTR)
            if fits(known) and isinstance(known, Mapping):
                return dict(known)
            made = create()
            call_db(lambda: study.set_user_attr(PARENT_ATTR, made), "saving the MLflow run")
            return made

    settings = {
        "n_trials": spec.n_trials,
        "task": spec.task.kind,
        "objectives": ",".join(spec.objectives),
        "sampler": spec.sampler.kind,
        "pruner": spec.pruner.kind,
        "data": spec.data.path or spec.data.source,
        "max_epochs": spec.train.max_epochs,
    }
    return Tracker(target, read_trial=read, claim_parent=claim, parent_params=settings)


def _close_tracker(tracker: Any) -> None:
    if not tracker.close():
        _log.warning(
            "MLflow at %s did not take the last runs in time", mask_uri(tracker.target.uri)
        )
