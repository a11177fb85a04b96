"""Commands that start workers elsewhere: ``launch`` (processes here), ``slurm`` (a job)."""

from __future__ import annotations

import sys
from typing import Any

import click

from depthsearch.cli._base import (
    _TERMINAL,
    _user_errors,
    data_option,
    main,
    storage_option,
)
from depthsearch.errors import InputError
from depthsearch.launch.local import PER_GPU

#: ``launch`` and ``slurm`` take the same option.
_per_gpu = click.option(
    "--per-gpu",
    type=click.IntRange(min=1),
    default=PER_GPU,
    show_default=True,
    help="Workers per GPU.",
)


@main.command()
@click.option("--study", "study_name", required=True, help="Name of the study to work on.")
@storage_option
@click.option("--gpus", default="all", show_default=True, help="'all' or a list like 0,2.")
@_per_gpu
@click.option(
    "--cpu-workers",
    type=click.IntRange(min=0),
    default=None,
    help="CPU workers (default: one per core when there is no GPU, else 0).",
)
@data_option
@_user_errors
def launch(
    study_name: str,
    storage: str | None,
    gpus: str,
    per_gpu: int,
    cpu_workers: int | None,
    data_path: str | None,
) -> None:
    """Start workers on this machine: K per GPU, or N on the CPU, and wait for them.

    Ctrl-C and SIGTERM are forwarded to every worker; each marks its running trial FAIL,
    queues it to be resumed by the next run of the study (Ctrl-C twice: not) and exits. The
    exit code is non-zero when a worker failed.
    """
    import os

    from depthsearch.launch.local import available_cores, parse_gpus, plan_workers, visible_gpus
    from depthsearch.launch.local import launch as run_launch
    from depthsearch.storage import resolve_storage
    from depthsearch.studies import read_spec

    url = resolve_storage(storage)
    read_spec(study_name, url, data_path=data_path)  # fail here, once, not in every worker
    available = visible_gpus()
    chosen = parse_gpus(gpus, available) if available or gpus != "all" else []
    cores = available_cores()
    if cpu_workers is None:
        cpu_workers = 0 if chosen else cores
        if not chosen:
            click.echo(
                f"no CUDA device visible: starting {cores} CPU worker{'s' if cores > 1 else ''} "
                f"instead of {per_gpu} per GPU (set the count with --cpu-workers)"
            )
    if not chosen and cpu_workers == 0:
        raise InputError("nothing to launch: no GPU chosen and --cpu-workers 0")
    plan = plan_workers(
        gpus=chosen,
        per_gpu=per_gpu,
        cpu_workers=cpu_workers,
        cores=cores,
        visible=os.environ.get("CUDA_VISIBLE_DEVICES"),
    )
    args = ["--study", study_name]
    if data_path:
        args += ["--data", data_path]
    # The URL goes by environment, not argv, where `ps` would show its password.
    opened: list[Any] = []  # one study (one connection) for every progress line

    def study() -> Any:
        from depthsearch.studies import open_study

        if not opened:
            opened.append(open_study(study_name, url, read_trials=False))
        return opened[0]

    try:
        code = run_launch(
            plan,
            args,
            env={"DEPTHSEARCH_STORAGE": url},
            out=_TERMINAL,
            progress=(lambda: _budget_line(study(), live=True)) if _TERMINAL.live_wanted else None,
        )
    finally:
        _TERMINAL.close()
    if code == 0:
        click.echo(final_line(study))
    sys.exit(code)


def final_line(study: Any) -> str:
    """The budget line after every worker exited 0; when the database cannot be read at that
    moment (a restart, a connection limit), the workers' own account: each stops only once
    the study holds its budget, so the launch succeeded (exit 0 stands)."""
    from depthsearch.storage.urls import describe

    try:
        return _budget_line(study())
    except Exception as e:  # what reading failed on is told; the workers' result stands
        return (
            "every worker exited 0, each once the study held its budget; the final summary "
            f"could not be read ({describe(e)}): see `depthsearch status`"
        )


@main.command()
@click.option("--study", "study_name", required=True, help="Name of the study to work on.")
@storage_option
@click.option("--nodes", type=click.IntRange(min=1), default=1, show_default=True)
@click.option(
    "--gpus-per-node",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="GPUs per node (0: a CPU job, one worker per allocated core).",
)
@_per_gpu
@click.option("--cpus-per-node", type=click.IntRange(min=1), default=None, help="CPUs per node.")
@click.option("--partition", default=None)
@click.option("--time", "time_limit", default=None, metavar="T", help="Slurm time limit.")
@click.option("--account", default=None)
@click.option(
    "--signal-before",
    type=click.IntRange(0, 65535),
    default=120,
    show_default=True,
    metavar="S",
    help="SIGTERM the workers S seconds before the time limit (0: only at it).",
)
@click.option(
    "--requeue", is_flag=True, help="Let Slurm requeue the job (preemptible partitions)."
)
@click.option(
    "--log-dir", default="slurm-logs", show_default=True, help="Per-task logs and the script."
)
@click.option("--python", default=None, help="Python on the nodes (default: this one).")
@click.option("--setup", multiple=True, help="A shell line run first (module load ...).")
@click.option("--sbatch-arg", multiple=True, help="An extra #SBATCH option, e.g. --mem=16G.")
@click.option("--srun-arg", multiple=True, help="An extra srun option.")
@data_option
@click.option("--dry-run", is_flag=True, help="Print the batch script; submit nothing.")
@_user_errors
def slurm(
    study_name: str,
    storage: str | None,
    nodes: int,
    gpus_per_node: int,
    per_gpu: int,
    cpus_per_node: int | None,
    partition: str | None,
    time_limit: str | None,
    account: str | None,
    signal_before: int,
    requeue: bool,
    log_dir: str,
    python: str | None,
    setup: tuple[str, ...],
    sbatch_arg: tuple[str, ...],
    srun_arg: tuple[str, ...],
    data_path: str | None,
    dry_run: bool,
) -> None:
    """Submit the study's workers as one Slurm job: a task per node runs `launch` there.

    The storage URL reaches the job through its environment only. Stop it with `scancel`:
    every worker marks its running trial FAIL and exits; the next job finishes the budget.
    """
    import sys

    from depthsearch.launch.slurm import SlurmJob, batch_script, submit
    from depthsearch.storage import resolve_storage
    from depthsearch.studies import read_spec

    job = SlurmJob(
        study=study_name,
        nodes=nodes,
        gpus_per_node=gpus_per_node,
        per_gpu=per_gpu,
        cpus_per_node=cpus_per_node,
        partition=partition,
        time=time_limit,
        account=account,
        signal_before_s=signal_before,
        requeue=requeue,
        log_dir=log_dir,
        python=python or sys.executable,
        data_path=data_path,
        setup=setup,
        sbatch_args=sbatch_arg,
        srun_args=srun_arg,
    )
    if dry_run:
        click.echo(batch_script(job), nl=False)
        return
    url = resolve_storage(storage)
    read_spec(study_name, url, data_path=data_path)  # a wrong name or URL fails here, not queued
    job_id, script = submit(job, storage_url=url)
    logs = job.logs()
    click.echo(f"submitted job {job_id} ({job.name}): {nodes} node{'s' if nodes > 1 else ''}")
    click.echo(f"script {script}; logs {logs}/{job.name}-{job_id}-task*.out")
    click.echo(
        f"watch: depthsearch status --study {study_name} --watch 10; stop: scancel {job_id}"
    )


def _budget_line(study: Any, *, live: bool = False) -> str:
    """``budget met: 30 of 30`` (or how far the study got), from the database; ``live``:
    the line shown under a running launch (running trials and the best so far too)."""
    from optuna.trial import TrialState

    from depthsearch.results.status import budget_of
    from depthsearch.storage import best_complete

    budget = budget_of(study)
    if live:
        best = best_complete(study) if len(study.directions) == 1 else None
        shown = "" if best is None else f", best trial {best[1]} val_loss={best[0]:.5g}"
        running = budget.counts.get(TrialState.RUNNING, 0)
        return f"[launch] {budget.line()}, {running} running{shown}"
    return f"budget met: {budget.line()}" if budget.met else budget.line()
