"""``depthsearch slurm``: the batch script, and jobs on a real two-node Slurm (slurm_cluster)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from optuna.trial import TrialState

from depthsearch.cli import main
from depthsearch.errors import InputError
from depthsearch.launch.local import available_cores, plan_workers
from depthsearch.launch.slurm import SlurmJob, batch_script, time_limit_s

from . import slurm_cluster
from .conftest import (
    PG_ADMIN_URL,
    Gate,
    create_here,
    depthsearch_cmd,
    throwaway_database,
    unique,
    write_study,
)
from .test_worker import (
    EVENT_S,
    LONG,
    MID,
    assert_settled,
    count,
    held_mid_trial,
    trials,
    wait_for,
)

# One cluster per test session: every test of this file runs in one pytest-xdist worker.
pytestmark = pytest.mark.xdist_group("slurm")

#: Trials that last until Slurm's own signal stops them (the time-limit test: nothing the test
#: does decides when they stop, so they must outlast the limit on any machine).
ENDLESS = 100_000

PASSWORD = "pw-" + uuid.uuid4().hex


def test_the_script_runs_one_launch_per_node_with_the_slurm_conventions() -> None:
    job = SlurmJob(
        study="lstm depth",
        nodes=3,
        gpus_per_node=4,
        per_gpu=2,
        cpus_per_node=16,
        partition="gpu",
        time="1-00:00:00",
        account="lab",
        requeue=True,
        workdir="/scratch/my runs",
        setup=("module load cuda/12.4",),
        sbatch_args=("--mem=64G",),
        srun_args=("--container-image=depthsearch:latest",),
        python="python",
    )
    script = batch_script(job)
    directives = re.findall(r"^#SBATCH (.*)$", script, flags=re.M)
    assert directives == [
        "--job-name=depthsearch-lstm_depth",
        "--nodes=3",
        "--ntasks-per-node=1",
        "--cpus-per-task=16",
        "--gpus-per-node=4",
        "--partition=gpu",
        "--time=1-00:00:00",
        "--account=lab",
        "--signal=TERM@120",
        "--requeue",
        "--open-mode=append",
        '--chdir="/scratch/my runs"',
        '--output="/scratch/my runs/slurm-logs/%x-%j.out"',
        "--mem=64G",
    ]
    step = script[script.index("\nsrun ") + 1 :].replace("\\\n", "")
    assert step.split() == [
        "srun",
        "--ntasks-per-node=1",
        "--kill-on-bad-exit=0",
        "'--output=/scratch/my",
        "runs/slurm-logs/%x-%j-task%t-%N.out'",
        "--container-image=depthsearch:latest",
        "python",
        "-m",
        "depthsearch",
        "launch",
        "--study",
        "'lstm",
        "depth'",
        "--per-gpu",
        "2",
    ]
    assert script.index("module load cuda/12.4") < script.index("\nsrun ")
    assert "DEPTHSEARCH_STORAGE is not set" in script


def test_a_cpu_job_starts_workers_on_the_allocated_cores_and_leaves_out_what_was_not_asked() -> (
    None
):
    script = batch_script(SlurmJob(study="s", workdir="/w"))
    assert "--gpus-per-node" not in script and "--per-gpu" not in script
    assert "--cpus-per-task" not in script and "--requeue" not in script
    assert "--partition" not in script and "--time" not in script
    assert script.rstrip().endswith("-m depthsearch launch --study s")


def test_dry_run_prints_the_script_and_never_the_storage_url(tmp_path: Path) -> None:
    url = f"postgresql+psycopg://alice:{PASSWORD}@db.example:5432/studies"
    result = CliRunner().invoke(
        main,
        ["slurm", "--study", "s", "--storage", url, "--nodes", "2", "--dry-run"],
        env={"DEPTHSEARCH_STORAGE": url},
    )
    assert result.exit_code == 0, result.output
    assert result.output.startswith("#!/bin/bash\n")
    assert "#SBATCH --nodes=2" in result.output
    assert PASSWORD not in result.output and "db.example" not in result.output
    assert not (tmp_path / "slurm-logs").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--time", "soon"], "--time 'soon' is not a Slurm time"),
        (["--time", "1"], "must be longer than --signal-before (120 s)"),
        (["--sbatch-arg", "mem=4G"], "must be an option like --mem=16G"),
        (["--partition", "a\nb"], "must be one non-empty line"),
        # Each would add options of its own to the #SBATCH line.
        (["--partition", 'gpu" --uid=0 --wrap="id'], "holds no blank or double quote"),
        (["--partition", "gpu --uid=0"], "holds no blank or double quote"),
        (["--account", 'lab"x'], "holds no blank or double quote"),
        (["--time", "1:00 --uid=0"], "holds no blank or double quote"),
    ],
)
def test_a_bad_option_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, ["slurm", "--study", "s", *args, "--dry-run"])
    assert result.exit_code == 2
    assert message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1


def test_slurm_times() -> None:
    assert time_limit_s("90") == 5400
    assert time_limit_s("30:15") == 1815
    assert time_limit_s("4:00:00") == 14400
    assert time_limit_s("2-12") == 2 * 86400 + 12 * 3600
    assert time_limit_s("1-2:03") == 86400 + 7200 + 180
    assert time_limit_s("1-2:03:04") == 86400 + 7200 + 184
    assert time_limit_s("UNLIMITED") is None
    with pytest.raises(InputError):
        time_limit_s("4h")


def test_without_sbatch_it_says_where_to_run(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    study = write_study(tmp_path, name="nosb", n_trials=2, max_epochs=1)
    create_here(study, url)
    proc = depthsearch_cmd(
        "slurm", "--study", "nosb", "--storage", url, env={"PATH": "/nonexistent"}, cwd=tmp_path
    )
    assert proc.returncode == 2
    assert "'sbatch' not found on PATH" in proc.stderr and "--dry-run" in proc.stderr


def test_workers_are_pinned_to_the_gpus_slurm_gave_not_to_physical_indices() -> None:
    plan = plan_workers(gpus=[0, 1], per_gpu=2, cpu_workers=0, cores=8, visible="2,3")
    assert [w.visible_devices for w in plan] == ["2", "2", "3", "3"]
    assert {w.threads for w in plan} == {2}
    uuids = "GPU-aaaa,GPU-bbbb"
    plan = plan_workers(gpus=[1], per_gpu=1, cpu_workers=0, cores=8, visible=uuids)
    assert [w.visible_devices for w in plan] == ["GPU-bbbb"]
    plan = plan_workers(gpus=[0, 1], per_gpu=1, cpu_workers=0, cores=8, visible=None)
    assert [w.visible_devices for w in plan] == ["0", "1"]


def test_launch_uses_no_more_cores_than_slurm_allocated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLURM_CPUS_ON_NODE", raising=False)
    everything = available_cores()
    monkeypatch.setenv("SLURM_CPUS_ON_NODE", "1")
    assert available_cores() == 1
    monkeypatch.setenv("SLURM_CPUS_ON_NODE", str(everything + 8))
    assert available_cores() == everything


# --- on a real Slurm -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def slurm() -> Iterator[slurm_cluster.Cluster]:
    """Two slurmd nodes and a controller on this machine (in CI a missing part fails)."""
    problem = slurm_cluster.missing()
    if problem is not None:
        if os.environ.get("CI"):
            pytest.fail(f"the Slurm tests are required in CI: {problem}")
        pytest.skip(problem)
    with slurm_cluster.cluster() as c:
        yield c


def _socket_dir() -> str:
    import sqlalchemy

    engine = sqlalchemy.create_engine(PG_ADMIN_URL)
    with engine.connect() as conn:
        dirs = str(conn.execute(sqlalchemy.text("SHOW unix_socket_directories")).scalar())
    engine.dispose()
    return dirs.split(",")[0].strip()


@pytest.fixture
def node_url(pg_database: str) -> Iterator[str]:
    """A fresh database, by a URL the nodes can use: the server's socket (a node's network
    namespace has its own 127.0.0.1), with a password in it as a real URL would have (the
    server's trust rule ignores it)."""
    name = f"{pg_database.rsplit('/', 1)[1]}_{uuid.uuid4().hex[:6]}"
    with throwaway_database(name):
        yield f"postgresql+psycopg://postgres:{PASSWORD}@/{name}?host={_socket_dir()}"


def _submit(
    slurm: slurm_cluster.Cluster, cwd: Path, url: str, *args: str
) -> subprocess.CompletedProcess[str]:
    return depthsearch_cmd(
        "slurm",
        *args,
        cwd=cwd,
        env={**slurm.env, "DEPTHSEARCH_STORAGE": url},
        timeout=120,
    )


def _job_id(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, proc.stderr
    m = re.search(r"submitted job (\d+)", proc.stdout)
    assert m is not None, proc.stdout
    return m[1]


def test_a_two_node_job_ends_with_exactly_the_budget(
    slurm: slurm_cluster.Cluster, node_url: str, tmp_path: Path
) -> None:
    name = unique("slurm")
    runs = tmp_path / "my runs"  # a blank in the path: the script must quote it
    runs.mkdir()
    study = write_study(runs, name=name, n_trials=6, max_epochs=3)
    create_here(study, node_url)

    proc = _submit(slurm, runs, node_url, "--study", name, "--nodes", "2", "--cpus-per-node", "1")
    job_id = _job_id(proc)
    final = slurm.wait(job_id, timeout=EVENT_S)
    logs = sorted((runs / "slurm-logs").glob(f"depthsearch-{name}-{job_id}-task*.out"))
    shown = "\n".join(p.read_text() for p in logs)
    assert final == "COMPLETED", f"{slurm.job(job_id)}\n{shown}\n{slurm.logs()}"
    assert slurm.job(job_id)["ExitCode"] == "0:0"

    assert_settled(node_url, name, finished=6)
    assert count(node_url, name, TrialState.FAIL) == 0
    # One task per node, each a launch with one CPU worker (the one core it was given).
    record = slurm.job(job_id)
    assert record["NodeList"] == "dsn[1-2]" and record["NumNodes"] == "2", record
    assert [re.sub(r".*-(task\d)-.*", r"\1", p.name) for p in logs] == ["task0", "task1"]
    for log in logs:
        text = log.read_text()
        assert "worker 0: pid" in text and "on CPU, 1 thread" in text, text
        assert "worker 1:" not in text, text
    done = re.findall(r"done: (\d+) complete, (\d+) pruned", shown)
    assert sum(int(c) + int(p) for c, p in done) == 6, shown
    print(f"job {job_id}: {final}; trials", [t.state.name for t in trials(node_url, name)])

    # The password is in the job's environment only: not the script, the job's record, the
    # output of `depthsearch slurm`, or the logs.
    script = slurm.run("scontrol", "write", "batch_script", job_id, "-").stdout
    assert script.startswith("#!/bin/bash") and f"--study {name}" in script
    shown_job = slurm.run("scontrol", "show", "job", "-d", job_id).stdout
    assert f"JobName=depthsearch-{name}" in shown_job
    for text in (script, shown_job, proc.stdout, proc.stderr, shown):
        assert PASSWORD not in text


def test_scancel_mid_trial_leaves_none_running_and_the_next_job_finishes(
    slurm: slurm_cluster.Cluster, node_url: str, tmp_path: Path, gate: Gate
) -> None:
    name = unique("cancel")
    study = write_study(tmp_path, name=name, n_trials=4, max_epochs=LONG)
    create_here(study, node_url)
    args = ("--study", name, "--nodes", "2", "--cpus-per-node", "1")

    gate.hold_at(MID)  # the workers on both nodes wait there, mid-trial
    first = _job_id(_submit(slurm, tmp_path, node_url, *args))
    held_mid_trial(gate, node_url, name, n=2)
    cancel = slurm.run("scancel", first)
    assert cancel.returncode == 0, cancel.stderr
    gate.open()
    assert slurm.wait(first, timeout=EVENT_S) == "CANCELLED"
    # Every worker got SIGTERM, marked its trial FAIL and exited before Slurm's SIGKILL.
    wait_for(lambda: count(node_url, name, TrialState.RUNNING) == 0, 120, "no trial left RUNNING")
    failed = [t for t in trials(node_url, name) if t.state == TrialState.FAIL]
    assert failed, [t.state for t in trials(node_url, name)]
    assert {t.user_attrs.get("fail_reason") for t in failed} == {
        f"interrupted by {signal.SIGTERM.name}"
    }
    logs = "\n".join(p.read_text() for p in (tmp_path / "slurm-logs").glob(f"*-{first}-task*"))
    assert "exited with code 143" in logs, logs
    assert "SIGKILL" not in logs

    second = _job_id(_submit(slurm, tmp_path, node_url, *args))
    assert slurm.wait(second, timeout=EVENT_S) == "COMPLETED"
    assert_settled(node_url, name, finished=4)
    print(
        f"job {first} CANCELLED, job {second} COMPLETED; trials",
        [(t.number, t.state.name) for t in trials(node_url, name)],
    )


def test_a_job_slurm_refuses_is_one_line_and_nothing_queued(
    slurm: slurm_cluster.Cluster, node_url: str, tmp_path: Path
) -> None:
    name = unique("refused")
    study = write_study(tmp_path, name=name, n_trials=2, max_epochs=1)
    create_here(study, node_url)
    proc = _submit(slurm, tmp_path, node_url, "--study", name, "--partition", "nosuch")
    assert proc.returncode == 1
    assert proc.stderr.startswith("depthsearch: error: sbatch refused the job (exit 1):")
    assert "nosuch" in proc.stderr or "partition" in proc.stderr.lower(), proc.stderr
    assert slurm.run("squeue", "-h").stdout.strip() == ""
    # And a study that is not in the database never reaches Slurm.
    proc = _submit(slurm, tmp_path, node_url, "--study", "no-such-study")
    assert proc.returncode == 2 and "no-such-study" in proc.stderr


def test_workers_stop_before_the_time_limit_with_their_trials_failed_not_running(
    slurm: slurm_cluster.Cluster, node_url: str, tmp_path: Path, gate: Gate
) -> None:
    """``--signal``: Slurm sends SIGTERM ``--signal-before`` seconds ahead of ``--time``
    (its check runs every half minute or so, so it may come that much earlier: here 30 to 60
    s after the start, once the workers train); the job ends well before its limit. The
    workers train an epoch a second meanwhile (the gate's pace), not flat out beside the
    other tests."""
    import time

    gate.pace(1.0)
    name = unique("limit")
    study = write_study(tmp_path, name=name, n_trials=4, max_epochs=ENDLESS)
    create_here(study, node_url)
    started = time.monotonic()
    job_id = _job_id(
        _submit(
            slurm,
            tmp_path,
            node_url,
            *("--study", name, "--nodes", "2", "--cpus-per-node", "1"),
            *("--time", "2", "--signal-before", "60"),
        )
    )
    final = slurm.wait(job_id, timeout=EVENT_S)
    took = time.monotonic() - started
    logs = "\n".join(p.read_text() for p in (tmp_path / "slurm-logs").glob(f"*-{job_id}-task*"))
    assert final != "TIMEOUT", f"{took:.0f} s\n{logs}"
    assert logs.count("exited with code 143") == 2, logs
    assert count(node_url, name, TrialState.RUNNING) == 0
    failed = [t for t in trials(node_url, name) if t.state == TrialState.FAIL]
    assert failed and all(
        t.user_attrs.get("fail_reason") == "interrupted by SIGTERM" for t in failed
    ), [(t.state, t.user_attrs) for t in trials(node_url, name)]
    print(f"job {job_id} {final} after {took:.0f} s of a 120 s limit; failed {len(failed)}")


def test_a_requeued_job_stops_its_workers_and_finishes_the_budget_when_it_runs_again(
    slurm: slurm_cluster.Cluster, node_url: str, tmp_path: Path, gate: Gate
) -> None:
    """``--requeue``: what a preemptible partition does to a job, done with ``scontrol
    requeue``: the running trials end FAIL, the same job id runs again and meets the budget."""
    name = unique("requeue")
    study = write_study(tmp_path, name=name, n_trials=4, max_epochs=LONG)
    create_here(study, node_url)
    args = ("--study", name, "--nodes", "2", "--cpus-per-node", "1", "--requeue")
    gate.hold_at(MID)
    job_id = _job_id(_submit(slurm, tmp_path, node_url, *args))
    assert slurm.job(job_id)["Requeue"] == "1"
    held_mid_trial(gate, node_url, name, n=2)
    requeue = slurm.run("scontrol", "requeue", job_id)
    assert requeue.returncode == 0, requeue.stderr
    gate.open()
    # Slurm holds a requeued job back for two minutes; a test need not wait them out.
    slurm.wait(job_id, timeout=EVENT_S, states={"PENDING"})
    update = slurm.run("scontrol", "update", f"JobId={job_id}", "StartTime=now")
    assert update.returncode == 0, update.stderr
    final = slurm.wait(job_id, timeout=EVENT_S, states={"COMPLETED", "FAILED", "CANCELLED"})
    record = slurm.job(job_id)
    assert final == "COMPLETED" and record["Restarts"] == "1", record
    assert_settled(node_url, name, finished=4)
    failed = [t for t in trials(node_url, name) if t.state == TrialState.FAIL]
    assert failed and {t.user_attrs.get("fail_reason") for t in failed} == {
        "interrupted by SIGTERM"
    }
    # One log per task, the second run appended to the first.
    for log in (tmp_path / "slurm-logs").glob(f"*-{job_id}-task*"):
        assert log.read_text().count("exited with code 143") == 1, log.read_text()
    print(f"job {job_id} requeued once, then COMPLETED; failed {len(failed)}")
