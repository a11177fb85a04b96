"""Slurm: one batch job whose tasks, one per node, each run ``depthsearch launch`` there.

Slurm does the scheduling, the node allocation, the signals and the requeueing; depthsearch
only writes the batch script and hands it to ``sbatch``. Each task's ``launch`` starts K
workers per GPU Slurm gave the node (or one CPU worker per allocated core) and forwards the
SIGTERM Slurm sends (``--signal`` before the time limit, ``scancel``, preemption) to them:
each worker marks its running trial FAIL with the reason and exits, so no trial is left
RUNNING. The storage URL reaches the tasks through the job's environment
(``DEPTHSEARCH_STORAGE``), never through the script or a command line, where ``scontrol`` and
``ps`` would show its password.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from depthsearch.errors import InputError, RuntimeFailure
from depthsearch.launch.local import PER_GPU

__all__ = ["SlurmJob", "batch_script", "job_name", "submit"]

_log = logging.getLogger(__name__)

#: Slurm's time formats: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S (and UNLIMITED / infinite).
_TIME = re.compile(r"^(?:(?P<d>\d+)-)?(?P<a>\d+)(?::(?P<b>\d+))?(?::(?P<c>\d+))?$")
#: Slurm keeps ``--signal`` times up to 65535 s.
MAX_SIGNAL_S = 65535


def time_limit_s(value: str) -> int | None:
    """Seconds in a Slurm ``--time`` value (None for unlimited); InputError when malformed."""
    text = value.strip()
    if text.lower() in ("unlimited", "infinite"):
        return None
    m = _TIME.match(text)
    if m is None:
        raise InputError(
            f"--time {value!r} is not a Slurm time; use minutes, MM:SS, HH:MM:SS, D-HH, "
            "D-HH:MM or D-HH:MM:SS (e.g. 90, 4:00:00 or 1-12:00:00)"
        )
    d, a, b, c = (int(m[k]) if m[k] is not None else None for k in ("d", "a", "b", "c"))
    if d is None:
        if b is None:  # minutes
            return (a or 0) * 60
        if c is None:  # minutes:seconds
            return (a or 0) * 60 + b
        return (a or 0) * 3600 + b * 60 + c  # hours:minutes:seconds
    return d * 86400 + (a or 0) * 3600 + (b or 0) * 60 + (c or 0)  # days-hours[:m[:s]]


def job_name(study: str) -> str:
    """``depthsearch-STUDY``, with what a file name or a shell cannot take replaced by ``_``."""
    return "depthsearch-" + re.sub(r"[^A-Za-z0-9._-]", "_", study)


def _one_line(flag: str, value: str | None) -> None:
    if value is not None and (not value.strip() or any(ch in value for ch in "\n\r\0")):
        raise InputError(f"{flag} {value!r} must be one non-empty line")


@dataclasses.dataclass(frozen=True)
class SlurmJob:
    """What ``depthsearch slurm`` asks Slurm for: nodes, devices, limits and where logs go.

    ``gpus_per_node = 0`` makes a CPU job: each node's ``launch`` starts one worker per core
    Slurm allocated there (``cpus_per_node``, else Slurm's default of one).
    """

    study: str
    nodes: int = 1
    gpus_per_node: int = 0
    per_gpu: int = PER_GPU
    cpus_per_node: int | None = None
    partition: str | None = None
    time: str | None = None
    account: str | None = None
    signal_before_s: int = 120
    requeue: bool = False
    log_dir: str = "slurm-logs"
    workdir: str = dataclasses.field(default_factory=os.getcwd)
    python: str = sys.executable
    data_path: str | None = None
    setup: tuple[str, ...] = ()
    sbatch_args: tuple[str, ...] = ()
    srun_args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self._check_numbers()
        self._check_lines()
        if self.time is not None:
            limit = time_limit_s(self.time)
            if limit is not None and limit <= self.signal_before_s:
                raise InputError(
                    f"--time {self.time!r} ({limit} s) leaves no time to train: it must be "
                    f"longer than --signal-before ({self.signal_before_s} s)"
                )

    def _check_numbers(self) -> None:
        for name, low in (("nodes", 1), ("gpus_per_node", 0), ("per_gpu", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or value < low:
                raise InputError(
                    f"--{name.replace('_', '-')} must be an integer >= {low}, got {value!r}"
                )
        if self.cpus_per_node is not None and self.cpus_per_node < 1:
            raise InputError(f"--cpus-per-node must be >= 1, got {self.cpus_per_node!r}")
        if not 0 <= self.signal_before_s <= MAX_SIGNAL_S:
            raise InputError(
                f"--signal-before must be 0 to {MAX_SIGNAL_S} seconds, got {self.signal_before_s}"
            )

    def _check_lines(self) -> None:
        """Every value the script holds is one line; none breaks out of its place in it."""
        names = [("--partition", self.partition), ("--account", self.account)]
        names.append(("--time", self.time))
        for flag, value in (*names, ("--study", self.study), ("--python", self.python)):
            _one_line(flag, value)
        _one_line("--data", self.data_path)
        # One #SBATCH word each: sbatch splits a directive line on blanks outside double
        # quotes, so a blank or a quote would add options of the user's typing to the job.
        for flag, value in names:
            if value is not None and (re.search(r"\s", value.strip()) or '"' in value):
                raise InputError(
                    f"{flag} {value!r}: a Slurm name holds no blank or double quote "
                    "(more sbatch options go in --sbatch-arg, one each)"
                )
        lines = [("--setup", v) for v in self.setup]
        options = [("--sbatch-arg", v) for v in self.sbatch_args]
        options += [("--srun-arg", v) for v in self.srun_args]
        paths = [("--log-dir", self.log_dir), ("--chdir", self.workdir)]
        for flag, value in (*lines, *options, *paths):
            _one_line(flag, value)
            if '"' in value:
                raise InputError(
                    f"{flag} {value!r}: a double quote cannot go in a batch script line"
                )
        for flag, value in options:
            if not value.startswith("-"):
                raise InputError(
                    f"{flag} {value!r} must be an option like --mem=16G or --constraint=a100"
                )

    @property
    def name(self) -> str:
        return job_name(self.study)

    def logs(self) -> Path:
        """The log folder, absolute (Slurm resolves relative paths against --chdir)."""
        return Path(self.workdir, self.log_dir)


def _directive(option: str) -> str:
    """``--flag=value`` for an ``#SBATCH`` line: sbatch splits those lines on blanks outside
    double quotes, so a value with a blank is double-quoted (a ``"`` was refused earlier)."""
    if not re.search(r"\s", option):
        return option
    flag, sep, value = option.partition("=")
    return f'{flag}{sep}"{value}"' if sep else f'"{option}"'


def _directives(job: SlurmJob) -> list[str]:
    """The job's ``#SBATCH`` options, in order."""
    directives = [f"--job-name={job.name}", f"--nodes={job.nodes}", "--ntasks-per-node=1"]
    if job.cpus_per_node is not None:
        directives.append(f"--cpus-per-task={job.cpus_per_node}")
    if job.gpus_per_node:
        directives.append(f"--gpus-per-node={job.gpus_per_node}")
    for flag, value in (("partition", job.partition), ("time", job.time)):
        if value is not None:
            directives.append(f"--{flag}={value.strip()}")
    if job.account is not None:
        directives.append(f"--account={job.account.strip()}")
    if job.signal_before_s:
        # To the job's steps (our srun's tasks), not the batch shell: every worker gets SIGTERM
        # this long before the time limit, and marks its running trial FAIL with the reason.
        directives.append(f"--signal=TERM@{job.signal_before_s}")
    if job.requeue:
        directives.append("--requeue")
    return [
        *directives,
        "--open-mode=append",  # a requeued job adds to its logs
        f"--chdir={job.workdir}",
        f"--output={job.logs()}/%x-%j.out",
        *job.sbatch_args,
    ]


def batch_script(job: SlurmJob) -> str:
    """The ``sbatch`` script: directives, then one ``srun`` step of one task per node."""
    logs = job.logs()
    launch = [job.python, "-m", "depthsearch", "launch", "--study", job.study]
    if job.gpus_per_node:
        launch += ["--per-gpu", str(job.per_gpu)]
    if job.data_path is not None:
        launch += ["--data", job.data_path]
    srun = ["srun", "--ntasks-per-node=1", "--kill-on-bad-exit=0"]
    srun += [f"--output={logs}/%x-%j-task%t-%N.out", *job.srun_args]
    lines = [
        "#!/bin/bash",
        f"# depthsearch: the workers of study {job.study!r}, written by `depthsearch slurm`.",
        "# The study database comes from $DEPTHSEARCH_STORAGE in the job's environment;",
        "# it is never written here. Resubmit with: DEPTHSEARCH_STORAGE=... sbatch THIS_FILE",
        *(f"#SBATCH {_directive(d)}" for d in _directives(job)),
        "",
        'if [ -z "${DEPTHSEARCH_STORAGE:-}" ]; then',
        "  echo 'depthsearch: error: DEPTHSEARCH_STORAGE is not set in the job environment "
        "(submit with `depthsearch slurm`, or export it before sbatch)' >&2",
        "  exit 2",
        "fi",
        *job.setup,
        'echo "depthsearch: job $SLURM_JOB_ID on $SLURM_JOB_NODELIST, one launch per node;" '
        + shlex.quote(f"logs in {logs}"),
        " ".join(shlex.quote(a) for a in srun) + " \\",
        "  " + " ".join(shlex.quote(a) for a in launch),
        "",
    ]
    return "\n".join(lines)


def submit(
    job: SlurmJob,
    *,
    storage_url: str,
    sbatch: str = "sbatch",
    env: Mapping[str, str] | None = None,
) -> tuple[str, Path]:
    """Writes the script beside the logs and submits it; returns (job id, script path).

    The URL goes to ``sbatch`` in its environment, which Slurm copies into the job's
    (``--export=ALL``, given on sbatch's command line so a site's ``SBATCH_EXPORT`` cannot drop
    it) and nowhere else.
    """
    exe = shutil.which(sbatch, path=(env or os.environ).get("PATH"))
    if exe is None:
        raise InputError(
            f"{sbatch!r} not found on PATH: run `depthsearch slurm` where Slurm's commands are "
            "(a login node), or add --dry-run to print the batch script"
        )
    if storage_url.startswith("sqlite") and job.nodes > 1:
        _log.warning(
            "%d nodes on one SQLite file: that works only where every node sees the file on a "
            "filesystem with working locks; a PostgreSQL study is the one to share",
            job.nodes,
        )
    logs = job.logs()
    try:
        logs.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create the log folder {str(logs)!r}: {e.strerror}") from e
    script = logs / f"{job.name}.sbatch"
    script.write_text(batch_script(job), encoding="utf-8")
    child_env = {**(env or os.environ), "DEPTHSEARCH_STORAGE": storage_url}
    proc = subprocess.run(
        [exe, "--parsable", "--export=ALL", str(script)],
        capture_output=True,
        text=True,
        env=child_env,
        timeout=120,
        check=False,
    )
    if proc.returncode != 0:
        said = (proc.stderr or proc.stdout).strip().splitlines()
        raise RuntimeFailure(
            f"sbatch refused the job (exit {proc.returncode}): {said[-1] if said else 'no output'}"
        )
    job_id = proc.stdout.strip().split(";", 1)[0]
    if not job_id.isdigit():
        raise RuntimeFailure(f"sbatch answered {proc.stdout.strip()!r}, not a job id")
    return job_id, script
