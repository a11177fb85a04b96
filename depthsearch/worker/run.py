"""Running trials in this process: :func:`run_worker` (what every worker runs), and
:func:`run_study`, what ``depthsearch run`` does, for a notebook or a script."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import optuna
import torch

from depthsearch.errors import InputError
from depthsearch.learn.baselines import baselines
from depthsearch.learn.data import Windows, prepare
from depthsearch.learn.train import EpochResult, resolve_device
from depthsearch.search.confirm import BASELINES
from depthsearch.search.objective import Objective
from depthsearch.spec import DATA_KEYS, StudySpec, load_spec, read_study_file, spec_from_dict
from depthsearch.storage import (
    Backoff,
    dispose_lock_engines,
    load_all_trials,
    mask_url,
    resolve_storage,
    retry_for,
)
from depthsearch.studies import create_study
from depthsearch.tracking import target_of
from depthsearch.worker.checkpoints import open_checkpoints
from depthsearch.worker.confirm import confirm_at_end
from depthsearch.worker.loop import BudgetMet, Finished, TrialLoop, Wait, WorkerResult
from depthsearch.worker.process import training_settings
from depthsearch.worker.reporting import ReportingProcess
from depthsearch.worker.signals import Signals

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


#: What ``run_study(..., data=...)`` takes: a long-format frame, or arrays ``X``, ``y`` and
#: optionally ``lengths`` (a mapping with those keys, or a tuple in that order).
InlineData = Any


def _write_data(data: InlineData, folder: Path, name: str) -> tuple[str, Path]:
    """Writes the caller's data once as ``NAME.data.parquet`` / ``.npz`` in ``folder``."""
    import numpy as np
    import pandas as pd

    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:80]
    if isinstance(data, pd.DataFrame):
        path = folder / f"{safe}.data.parquet"
        try:
            data.to_parquet(path, index=False)
        except (OSError, ValueError, TypeError) as e:
            raise InputError(f"cannot write the data to {path}: {e}") from e
        return "parquet", path
    if isinstance(data, Mapping):
        arrays = {k: np.asarray(v) for k, v in data.items()}
    elif isinstance(data, (tuple, list)) and len(data) in (2, 3):
        arrays = dict(zip(("X", "y", "lengths"), map(np.asarray, data), strict=False))
    else:
        raise InputError(
            "data must be a pandas DataFrame (long format) or arrays X, y[, lengths] (a dict "
            f"or a tuple), but got {type(data).__name__}"
        )
    path = folder / f"{safe}.data.npz"
    try:
        np.savez(path, **arrays)  # type: ignore[arg-type]  # numpy types its one keyword
    except (OSError, ValueError, TypeError) as e:
        raise InputError(f"cannot write the data to {path}: {e}") from e
    return "npz", path


def _spec_with_data(
    study: str | Path | Mapping[str, Any] | StudySpec, data: InlineData, url: str
) -> StudySpec:
    """The study with ``data`` written once beside it (the study file's folder, else the
    SQLite database's, else the working directory) as its ``[data]`` source: workers on other
    machines read the same bytes, checked by the SHA-256 the spec records."""
    if isinstance(study, StudySpec):
        doc: dict[str, Any] = study.to_dict(secrets=True)
        folder, where = Path.cwd(), study.source
    elif isinstance(study, (str, Path)):
        path = Path(study)
        doc = read_study_file(path)
        folder, where = path.resolve().parent, str(path)
    else:
        doc = {k: dict(v) if isinstance(v, Mapping) else v for k, v in study.items()}
        folder, where = Path.cwd(), "<dict>"
    if not isinstance(study, (str, Path)) and url.startswith("sqlite:///"):
        folder = Path(url.removeprefix("sqlite:///")).resolve().parent
    name = str(doc.get("study", {}).get("name", "study"))
    source, path = _write_data(data, folder, name)
    table = dict(doc.get("data", {}))
    table.pop("sha256", None)  # the new file's is recorded
    kind = str(doc.get("task", {}).get("kind", "forecast"))
    before = str(table.get("source", "synthetic"))
    # What applied to the table's own source but not to the data's (a synthetic length, a
    # csv's id for arrays) goes; a key that applied to neither stays, to be refused.
    doc["data"] = {
        k: v
        for k, v in {**table, "source": source, "path": str(path)}.items()
        if k not in DATA_KEYS
        or DATA_KEYS[k].applies(source, kind)
        or not DATA_KEYS[k].applies(before, kind)
    }
    return spec_from_dict(doc, where=where, base=folder)


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
    spec = _spec(study) if data is None else _spec_with_data(study, data, url)
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
    """Runs trials of ``study`` until the budget is met, ``n_trials`` ran or time is up.

    The process is left as it was found: torch's threads, cuDNN's flag and the signal
    handlers are put back at the end. ``tune_process``: also tune glibc's allocator for
    training, for good (:func:`~depthsearch.worker.process.training_settings`): for processes
    that exist to train, as the CLI's.

    Args:
        budget: stop once the study holds this many finished (complete or pruned) trials,
            counting every worker's; never start a trial that could exceed it.
        n_trials: run this many trials in this call (as ``study.optimize`` counts them).
        timeout: start no new trial after this many seconds.
        device: overrides the spec's ``[train] device``.
        threads: torch CPU threads while it runs (default: the spec's, else torch's).
        data: the spec's windows when the caller already loaded them (moved to the device).
        only_waiting: run only queued trials (confirmations, retries), never a new one, and
            stop when none is left (``confirm --wait``).

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
        # Started first: it imports Optuna while this process loads the data. A
        # multi-objective study reports nothing while it trains (Optuna prunes none), but
        # its trials are tracked from there too.
        tracking = target_of(spec, storage=mask_url(storage_url))
        reporting = (
            None
            if spec.multi_objective and tracking is None
            else ReportingProcess(spec, storage_url, study.study_name, tracking=tracking)
        )
        if reporting is not None:
            held.enter_context(reporting)
        data = data or prepare(spec.data, "cpu", seed=spec.seed, kind=spec.task.kind)
        retry = retry_for(storage_url, spec.workers.db_wait)
        scores = baselines(data)
        if scores and study.user_attrs.get(BASELINES) != scores:
            # What the models must beat, for status, report and answer (every worker's data
            # is the same: the first one writes it).
            retry(lambda: study.set_user_attr(BASELINES, scores), "saving the baselines")
        data = data.to(torch_device)
        # What the sampler reads at the first suggest, read once before the first reservation
        # (in seconds at 100,000 trials, where Optuna's own first read takes minutes); the
        # reads after it are incremental.
        retry(lambda: load_all_trials(study), "reading the study's trials")
        if reporting is not None:
            # Its start-up CPU is spent before training, not on a core training uses. A
            # process that fails to start says why at the first trial.
            reporting.wait_ready(timeout=spec.workers.db_wait + 60.0)
        signals = Signals()
        checkpoints = open_checkpoints(spec, storage_url, study.study_name)
        objective = Objective(
            spec,
            data,
            torch_device,
            retry=retry,
            on_epoch=on_epoch,
            interrupt=signals.check,
            reporting=reporting,
            checkpoints=checkpoints,
        )
        loop = TrialLoop(
            study,
            spec,
            storage_url,
            objective,
            device=torch_device,
            checkpoints=checkpoints,
            for_good=signals.for_good,
            only_waiting=only_waiting,
            told=reporting.ended if reporting is not None else None,
        )
        result = WorkerResult()
        started = time.monotonic()
        # Waiting (the budget is held by running trials): look again soon, since the wait usually
        # ends when another worker's last trial does, then back off to every `poll` seconds.
        wait = Backoff(_FIRST_WAIT_S, max(_FIRST_WAIT_S, min(2.0, loop.heartbeat_interval or 2.0)))
        _log.info(
            "worker on %s (%d torch threads), study %r in %s",
            torch_device,
            torch.get_num_threads(),
            study.study_name,
            mask_url(storage_url),
        )
        signals.install()
        asked_confirm = False
        try:
            while True:
                if stop is not None and stop.is_set():
                    break
                if n_trials is not None and result.ran >= n_trials:
                    break
                if timeout is not None and time.monotonic() - started >= timeout:
                    break
                signals.check()
                match loop.run_one(budget):
                    case BudgetMet():
                        if only_waiting or asked_confirm or not spec.confirm.seeds:
                            if reporting is not None:
                                reporting.study_done()  # its MLflow run ends FINISHED
                            break
                        # [confirm]: queued once, by whichever worker gets here first; every
                        # worker then looks again, and runs them.
                        asked_confirm = True
                        retry(
                            lambda: confirm_at_end(study, spec, storage_url),
                            "queueing the confirmations",
                        )
                    case Wait():
                        signals.sleep(wait.next())
                    case Finished(state=state):
                        result.count(state)
                        wait.reset()
        finally:
            if signals.for_good():  # the second Ctrl-C came after the first's trial ended
                loop.drop_resumed()
            signals.restore()
        return result
