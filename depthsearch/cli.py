"""The ``depthsearch`` command: parse, call one library function, print, exit.

Exit codes: 0 success; 2 bad input (study file, value, column, URL, study name) or an
unreachable database (:class:`~depthsearch.errors.InputError`); 1 a failure while running
(:class:`~depthsearch.errors.RuntimeFailure`, or anything unexpected); 128 + signal number
when interrupted.
"""

from __future__ import annotations

import functools
import logging
import shutil
import sys
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import click

from depthsearch.errors import DepthsearchError, InputError, Interrupted

F = TypeVar("F", bound=Callable[..., Any])

_log = logging.getLogger("depthsearch")


def _setup_logging(verbose: bool) -> None:
    import optuna

    from depthsearch.search.compat import ignore_optuna_warnings

    handler = _LogHandler()
    handler.setFormatter(logging.Formatter("[depthsearch] %(message)s"))
    root = logging.getLogger("depthsearch")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    # Optuna announces every trial itself; our lines carry the same and more.
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    ignore_optuna_warnings()


def _user_errors(fn: F) -> F:
    """One line on stderr and a non-zero exit for every error a user can act on."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except DepthsearchError as e:
            click.echo(f"depthsearch: error: {e}", err=True)
            sys.exit(e.exit_code)
        except Interrupted as e:
            click.echo(f"depthsearch: stopped: {e}", err=True)
            sys.exit(128 + e.signum)
        except KeyboardInterrupt:
            click.echo("depthsearch: stopped: interrupted", err=True)
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


data_option = click.option(
    "--data",
    "data_path",
    default=None,
    type=click.Path(dir_okay=False),
    help="This machine's copy of the study's CSV (checked against its SHA-256).",
)

study_option = click.option("--study", "study_name", required=True, help="Study name.")

timeout_option = click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="S",
    help="Start no trial after S seconds.",
)

storage_option = click.option(
    "--storage",
    default=None,
    metavar="URL",
    help="Study database (default: $DEPTHSEARCH_STORAGE, else sqlite:///depthsearch.db).",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log every epoch and more.")
@click.version_option(package_name="depthsearch")
def main(verbose: bool) -> None:
    """Search the depth and width of stacked-LSTM models with Optuna."""
    _setup_logging(verbose)


class _Terminal:
    """Lines, and under them one live line redrawn in place (tqdm) when stderr is a terminal.

    Log records go through it too (:class:`_LogHandler`), so a line never lands inside the
    live one. Thread-safe: launch's relay threads write through it.
    """

    def __init__(self) -> None:
        from tqdm import tqdm

        self._tqdm = tqdm
        self._bar: Any = None
        self._lock = threading.Lock()

    @property
    def live_wanted(self) -> bool:
        return sys.stderr.isatty()

    def line(self, text: str, *, worker: bool = False) -> None:
        """One line above the live one: a worker's (stderr) or ours (stdout)."""
        with self._lock:
            self._tqdm.write(text, file=sys.stderr if worker else sys.stdout)

    def live(self, text: str) -> None:
        if not self.live_wanted:
            return
        with self._lock:
            if self._bar is None:
                # The terminal's size, or 80 x 24 where it says none (a pty nobody sized):
                # tqdm draws nothing on a terminal of no rows.
                size = shutil.get_terminal_size((80, 24))
                self._bar = self._tqdm(
                    file=sys.stderr,
                    bar_format="{desc}",
                    leave=False,
                    ncols=size.columns,
                    nrows=max(size.lines, 2),
                )
            self._bar.set_description_str(text)

    def close(self) -> None:
        with self._lock:
            if self._bar is not None:
                self._bar.close()
                self._bar = None


_TERMINAL = _Terminal()


class _LogHandler(logging.Handler):
    """Log records to stderr, above the live line."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:
            self.handleError(record)
            return
        _TERMINAL.line(text, worker=True)


class _Progress:
    """Trial, epoch and validation loss: the live line on a terminal, a debug line elsewhere."""

    def __init__(self, max_epochs: int) -> None:
        self.max_epochs = max_epochs

    def epoch(self, trial: int, result: Any) -> None:
        if _TERMINAL.live_wanted:
            _TERMINAL.live(
                f"  trial {trial} epoch {result.epoch}/{self.max_epochs} "
                f"val_loss={result.val_loss:.5g}"
            )
        else:
            _log.debug("trial %d epoch %d val_loss=%.6g", trial, result.epoch, result.val_loss)

    def clear(self) -> None:
        _TERMINAL.close()


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
        f"study {study.study_name!r} in {mask_url(storage_url)}: {len(trials)} trials "
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
    (complete or pruned) trials.
    """
    from depthsearch.spec import load_spec
    from depthsearch.storage import resolve_storage
    from depthsearch.worker.run import run_study_here

    spec = load_spec(study_file)
    url = resolve_storage(storage)
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
@study_option
@storage_option
@click.option(
    "-o",
    "--output",
    default=None,
    help="File (default best.json), or folder with --retrain (default best/).",
)
@click.option(
    "--pick",
    default="best",
    show_default=True,
    help="'best' or 'smallest-within=P%': the smallest model within P% of the best loss.",
)
@click.option(
    "--retrain",
    is_flag=True,
    help="Train the picked config again and save model.pt and config.json.",
)
@data_option
@_user_errors
def export(
    study_name: str,
    storage: str | None,
    output: str | None,
    pick: str,
    retrain: bool,
    data_path: str | None,
) -> None:
    """Write the picked trial's model config, training config, metrics and origin.

    With --retrain, also train that config again on the study's data (its training windows,
    the trial's seed, for the trial's best epoch count) and save the model.
    """
    from depthsearch.results.export import export_best, parse_pick, retrain_best
    from depthsearch.storage import resolve_storage

    if pick != "best":
        parse_pick(pick)
    url = resolve_storage(storage)
    if retrain:
        folder = output or "best"
        doc = retrain_best(study_name, url, folder, pick=pick, data_path=data_path)
        r = doc["retrain"]
        click.echo(
            f"wrote {folder}/model.pt and {folder}/config.json: trial {doc['origin']['trial']} "
            f"retrained on {r['data']} ({r['train_windows']} training windows, {r['epochs']} "
            f"epochs on {r['device']}): val_loss={r['val_loss']:.6g} "
            f"(the trial reached {doc['metrics']['val_loss']:.6g})"
        )
        return
    path = output or "best.json"
    doc = export_best(study_name, url, path, pick=pick)
    m = doc["metrics"]
    click.echo(
        f"wrote {path}: trial {doc['origin']['trial']} of {study_name!r} (pick {pick}), "
        f"val_loss={m['val_loss']:.6g}, layers={len(doc['model']['hidden_sizes'])}, "
        f"hidden_sizes={doc['model']['hidden_sizes']}, {m['param_count']} parameters"
    )


@main.command()
@click.argument("model_dir", type=click.Path(file_okay=False))
@click.option(
    "--csv",
    "csv_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="CSV with the study's columns.",
)
@click.option(
    "-o",
    "--output",
    default=None,
    type=click.Path(dir_okay=False),
    help="Output CSV (default: stdout).",
)
@_user_errors
def predict(model_dir: str, csv_path: str, output: str | None) -> None:
    """Predict with a model saved by `export --retrain`, for every window of a CSV."""
    from depthsearch.learn.saved import predict_csv

    frame = predict_csv(model_dir, csv_path)
    if output is None:
        click.echo(frame.to_csv(index=False), nl=False)
        return
    try:
        frame.to_csv(output, index=False)
    except OSError as e:
        raise InputError(f"cannot write {output}: {e.strerror or e}") from e
    click.echo(f"wrote {output}: {len(frame)} predictions")


@main.command()
@click.argument("study_file", type=click.Path(dir_okay=False))
@storage_option
@_user_errors
def create(study_file: str, storage: str | None) -> None:
    """Create the study of STUDY_FILE (its spec stored in it) without training.

    Workers then join it by name: `depthsearch worker --study NAME`.
    """
    from depthsearch.learn.data import prepare
    from depthsearch.spec import load_spec
    from depthsearch.storage import mask_url, resolve_storage
    from depthsearch.studies import create_study

    spec = load_spec(study_file)
    url = resolve_storage(storage)
    prepare(spec.data, "cpu", seed=spec.seed)
    create_study(spec, url)
    click.echo(f"study {spec.name!r} ready in {mask_url(url)} (budget {spec.n_trials} trials)")


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
    result = _work(study, spec, url, n_trials, timeout, device=device, threads=threads)
    click.echo(
        f"worker {os.getpid()} done: {result.complete} complete, {result.pruned} pruned, "
        f"{result.failed} failed"
    )


@main.command()
@click.option("--study", "study_name", required=True, help="Name of the study to work on.")
@storage_option
@click.option("--gpus", default="all", show_default=True, help="'all' or a list like 0,2.")
@click.option(
    "--per-gpu", type=click.IntRange(min=1), default=1, show_default=True, help="Workers per GPU."
)
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

    Ctrl-C and SIGTERM are forwarded to every worker; each marks its running trial FAIL and
    exits. The exit code is non-zero when a worker failed.
    """
    import os

    from depthsearch.storage import resolve_storage
    from depthsearch.studies import read_spec
    from depthsearch.worker.launch import available_cores, parse_gpus, plan_workers, visible_gpus
    from depthsearch.worker.launch import launch as run_launch

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
        from depthsearch.results.export import open_study

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
        click.echo(_budget_line(study()))
    sys.exit(code)


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
@click.option(
    "--per-gpu", type=click.IntRange(min=1), default=1, show_default=True, help="Workers per GPU."
)
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

    from depthsearch.storage import resolve_storage
    from depthsearch.studies import read_spec
    from depthsearch.worker.slurm import SlurmJob, batch_script, submit

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
    done = f"{budget.finished} of {budget.n_trials}"
    if live:
        best = best_complete(study) if len(study.directions) == 1 else None
        shown = "" if best is None else f", best trial {best[1]} val_loss={best[0]:.5g}"
        running = budget.counts.get(TrialState.RUNNING, 0)
        return f"[launch] {done} finished, {running} running{shown}"
    return f"budget met: {done}" if budget.met else f"{done} trials finished"


@main.command()
@storage_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True)
@_user_errors
def dashboard(storage: str | None, host: str, port: int) -> None:
    """Serve optuna-dashboard over the study database (localhost unless told otherwise)."""
    from depthsearch.results.dashboard import serve
    from depthsearch.storage import resolve_storage

    serve(
        resolve_storage(storage),
        host=host,
        port=port,
        on_ready=lambda url: click.echo(f"dashboard: {url}", err=False),
    )


@main.command()
@study_option
@storage_option
@click.option(
    "--watch",
    type=click.FloatRange(min=0.5),
    default=None,
    metavar="S",
    help="Show it again every S seconds until Ctrl-C or the budget is met.",
)
@_user_errors
def status(study_name: str, storage: str | None, watch: float | None) -> None:
    """Budget, pace, ETA, best so far, and each running trial with its worker and heartbeat."""
    import time

    from depthsearch.results.status import study_status
    from depthsearch.storage import resolve_storage

    url = resolve_storage(storage)
    while True:
        shown = study_status(study_name, url)
        if watch is not None and sys.stdout.isatty():
            click.clear()
        click.echo(shown.text)
        if watch is None or shown.budget_met:
            return
        try:
            time.sleep(watch)
        except KeyboardInterrupt:
            return
        click.echo()


@main.command()
@study_option
@storage_option
@click.option(
    "-o",
    "--output",
    default=None,
    help="trials.csv, trials.parquet or trials.json (default: a table on stdout).",
)
@_user_errors
def trials(study_name: str, storage: str | None, output: str | None) -> None:
    """One row per trial: number, state, value, params, user attributes, duration."""
    from depthsearch.results.report import trials_frame, write_trials
    from depthsearch.storage import resolve_storage

    url = resolve_storage(storage)
    if output is None:
        frame = trials_frame(study_name, url)
        cols = [c for c in frame.columns if not c.startswith("user_attrs_model_config")]
        click.echo(frame[cols].to_string(index=False))
        return
    frame = write_trials(study_name, url, output)
    click.echo(f"wrote {output}: {len(frame)} trials, {len(frame.columns)} columns")


@main.command()
@study_option
@storage_option
@click.option(
    "-o",
    "--output",
    default="report",
    show_default=True,
    type=click.Path(dir_okay=True, file_okay=False),
)
@_user_errors
def report(study_name: str, storage: str | None, output: str) -> None:
    """Write index.html and PNGs: history, loss by depth and width, importances, curves."""
    from depthsearch.results.report import write_report
    from depthsearch.storage import resolve_storage

    files = write_report(study_name, resolve_storage(storage), output)
    click.echo(f"wrote {files[0]} and {len(files) - 1} plots")
