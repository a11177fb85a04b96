"""Run a study from Python: what ``depthsearch run`` does, for a notebook or a script."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import optuna

from depthsearch.learn.data import prepare
from depthsearch.learn.train import EpochResult, resolve_device
from depthsearch.spec import StudySpec, load_spec, spec_from_dict
from depthsearch.storage import dispose_lock_engines, resolve_storage
from depthsearch.studies import create_study
from depthsearch.worker.loop import WorkerResult, run_worker

__all__ = ["run_study", "run_study_here", "work"]


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
) -> tuple[optuna.Study, WorkerResult]:
    """:func:`run_study`, and what this process did (the CLI prints both; it tunes the
    process for training, ``tune_process``)."""
    spec = _spec(study)
    url = resolve_storage(storage)
    # Everything that can be wrong with the input is found before the database is touched.
    resolve_device(spec.train.device)
    data = prepare(spec.data, "cpu", seed=spec.seed)
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
    (``options`` go to :func:`~depthsearch.worker.loop.run_worker`)."""
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

    Raises:
        DepthsearchError: a bad study, data file or database, in one line;
            ``Interrupted`` on Ctrl-C (the running trial is marked FAIL first).
    """
    created, _ = run_study_here(
        study, storage=storage, n_trials=n_trials, timeout=timeout, on_epoch=on_epoch
    )
    return created
