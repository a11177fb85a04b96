"""Commands that run trials here: ``create``, ``run``, ``worker``."""

from __future__ import annotations

import logging
from typing import Any

import click

from depthsearch._text import counted
from depthsearch.cli._base import (
    _Progress,
    _user_errors,
    data_option,
    main,
    storage_option,
    timeout_option,
)

_log = logging.getLogger(__name__)


def _work(
    study: Any, spec: Any, url: str, n_trials: int | None, timeout: float | None, **options: Any
) -> Any:
    """Runs trials here with a progress display: ``n_trials`` more, or up to the study's
    budget when not given."""
    from depthsearch.worker.run import work

    progress = _Progress(spec.train.max_epochs)
    result = work(
        study,
        spec,
        url,
        n_trials=n_trials,
        timeout=timeout,
        on_epoch=progress.epoch,
        tune_process=True,
        **options,
    )
    progress.clear()
    return result


def _print_summary(study: Any, result: Any, storage_url: str) -> None:
    from optuna.trial import TrialState

    from depthsearch.results.verdict import verdict_of
    from depthsearch.search.confirm import BASELINES
    from depthsearch.search.trials import (
        PARAM_COUNT,
        Preemption,
        best_trial,
        describe_front,
        metric_names,
    )
    from depthsearch.storage import mask_url

    trials = study.get_trials(deepcopy=False)
    count = {s: sum(t.state == s for t in trials) for s in TrialState}
    click.echo(
        f"study {study.study_name!r} in {mask_url(storage_url)}: {counted(len(trials), 'trial')} "
        f"({count[TrialState.COMPLETE]} complete, {count[TrialState.PRUNED]} pruned, "
        f"{count[TrialState.FAIL]} failed, {count[TrialState.RUNNING]} running); this run: "
        f"{result.complete} complete, {result.pruned} pruned, {result.failed} failed"
    )
    best = best_trial(trials)
    if len(study.directions) > 1 and best is not None:
        click.echo(f"Pareto front ({', '.join(metric_names(study))}): {describe_front(study)}")
    if best is not None:
        params = ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in best.params.items()
        )
        click.echo(
            f"best: trial {best.number} val_loss={best.values[0]:.6g} "
            f"({best.user_attrs.get(PARAM_COUNT, '?')} parameters) {params}"
        )
    if len(study.directions) == 1:
        said = verdict_of(best, study.user_attrs.get(BASELINES) or {})
        if said is not None:
            click.echo(said.text)
    preempted = Preemption(t.user_attrs for t in trials).line()
    if preempted is not None:
        click.echo(preempted)


@main.command()
@click.argument("study_file", type=click.Path(dir_okay=False))
@storage_option
@click.option(
    "--n-trials", type=click.IntRange(min=1), default=None, help="Run N more trials in this call."
)
@timeout_option
@_user_errors
def run(study_file: str, storage: str | None, n_trials: int | None, timeout: float | None) -> None:
    """Create (or resume) the study of STUDY_FILE and run its trials here.

    Without --n-trials, trials run until the study holds its [study] n_trials finished
    (complete or pruned) trials. Ctrl-C stops at the next batch; the next run resumes that
    trial from its checkpoint first (Ctrl-C twice drops it).
    """
    from depthsearch.spec import load_spec
    from depthsearch.storage import check_url, resolve_storage

    # The file and the URL are checked before torch loads (seconds on a busy machine).
    spec = load_spec(study_file)
    url = check_url(resolve_storage(storage))
    from depthsearch.worker.run import run_study_here

    progress = _Progress(spec.train.max_epochs)
    study, result = run_study_here(
        spec,
        storage=url,
        n_trials=n_trials,
        timeout=timeout,
        on_epoch=progress.epoch,
        tune_process=True,
    )
    progress.clear()
    _print_summary(study, result, url)


@main.command()
@click.argument("study_file", type=click.Path(dir_okay=False))
@storage_option
@_user_errors
def create(study_file: str, storage: str | None) -> None:
    """Create the study of STUDY_FILE (its spec stored in it) without training.

    Workers then join it by name: `depthsearch worker --study NAME`.
    """
    from depthsearch.spec import load_spec
    from depthsearch.storage import check_url, mask_url, resolve_storage

    spec = load_spec(study_file)
    url = check_url(resolve_storage(storage))
    from depthsearch.learn.data import prepare
    from depthsearch.studies import create_study

    prepare(spec.data, "cpu", seed=spec.seed, kind=spec.task.kind)
    create_study(spec, url)
    budget = counted(spec.n_trials, "trial")
    click.echo(f"study {spec.name!r} ready in {mask_url(url)} (budget {budget})")


@main.command()
@click.option("--study", "study_name", required=True, help="Name of the study to join.")
@storage_option
@click.option("--device", default=None, help="cpu, cuda or cuda:N (default: the study's).")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="torch CPU threads.")
@data_option
@click.option("--n-trials", type=click.IntRange(min=1), default=None, help="Stop after N trials.")
@timeout_option
@_user_errors
def worker(
    study_name: str,
    storage: str | None,
    device: str | None,
    threads: int | None,
    data_path: str | None,
    n_trials: int | None,
    timeout: float | None,
) -> None:
    """Join study NAME and run its trials until its budget is met.

    The spec (data, space, training) is read from the study; start as many workers as you like,
    on as many machines, all pointed at one database.
    """
    import os

    from depthsearch.storage import resolve_storage
    from depthsearch.studies import load_study

    url = resolve_storage(storage)
    # Each worker draws its own samples; a shared seed would make them all propose the same.
    study, spec = load_study(study_name, url, sampler_seed=None, data_path=data_path)
    _share_the_cores_hint(spec, device, threads)
    result = _work(study, spec, url, n_trials, timeout, device=device, threads=threads)
    click.echo(
        f"worker {os.getpid()} done: {result.complete} complete, {result.pruned} pruned, "
        f"{result.failed} failed"
    )


def _share_the_cores_hint(spec: Any, device: str | None, threads: int | None) -> None:
    """One line for a worker started by hand on the CPU with torch's default threads (one a
    core): several such workers on one machine fight over the cores (three runs of the
    classify tutorial at once on 2 cores: 76 s, against 25 s with one thread each). Launch's
    workers are given their share (``OMP_NUM_THREADS``) and see no line."""
    import os

    import torch

    from depthsearch.learn.train import resolve_device

    default = torch.get_num_threads()
    if threads or spec.train.threads or "OMP_NUM_THREADS" in os.environ or default < 2:
        return
    if resolve_device(device or spec.train.device).type != "cpu":
        return
    _log.info(
        "torch trains on %d threads here, one a core: workers sharing this machine should "
        "share its cores (--threads, [train] threads or OMP_NUM_THREADS), or be started "
        "with `depthsearch launch --cpu-workers N`, which does",
        default,
    )
