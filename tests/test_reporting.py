"""The worker's reporting process: it writes what the trial reports, asks the pruner, survives
Ctrl-C long enough to write the last epochs, dies with its worker, and a killed one costs one
trial, not the worker.

Every test runs over a fresh SQLite file and a fresh database on the real PostgreSQL server.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
from optuna.trial import TrialState

from depthsearch.errors import DepthsearchError
from depthsearch.learn.data import prepare
from depthsearch.search.objective import Objective
from depthsearch.spec import load_spec
from depthsearch.storage import RetryHeartbeatStaleTrialCallback
from depthsearch.studies import create_study
from depthsearch.worker.reporting import CHILD_MODULE, ReportingProcess

from .conftest import Gate, write_study
from .test_worker import (
    FAST_HEARTBEAT,
    LONG,
    MID,
    assert_settled,
    create,
    held_mid_trial,
    spawn,
    trials,
    wait_for,
)

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:Heartbeat of storage")]


def alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting for its parent to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def reporting_children(pid: int) -> list[int]:
    """Live processes whose parent is ``pid`` and that run the reporting process."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except (FileNotFoundError, ProcessLookupError):
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid and CHILD_MODULE.encode() in cmdline and alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def running_trial(url: str, name: str) -> optuna.trial.FrozenTrial:
    return next(t for t in trials(url, name) if t.state == TrialState.RUNNING)


def worker_in_training(
    tmp_path: Path, gate: Gate, url: str, name: str, *, n_trials: int, **popen: Any
) -> tuple[subprocess.Popen[str], int]:
    """A worker on a new study of LONG trials, held at the gate mid-trial (its MID epochs
    written by its reporting process), and that reporting process."""
    create(tmp_path, url, name, n_trials=n_trials, max_epochs=LONG, extra=FAST_HEARTBEAT)
    gate.hold_at(MID)
    worker = spawn("worker", "--study", name, url=url, **popen)
    try:
        held_mid_trial(gate, url, name)
        children = reporting_children(worker.pid)
        assert len(children) == 1, children
    except BaseException:
        worker.kill()
        worker.communicate()
        raise
    return worker, children[0]


def test_reports_come_from_a_child_that_dies_with_its_worker(
    tmp_path: Path, sqlite_url: str, gate: Gate
) -> None:
    url = sqlite_url
    worker, child = worker_in_training(tmp_path, gate, url, "child", n_trials=2)
    try:
        assert len(running_trial(url, "child").intermediate_values) == MID
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
        wait_for(lambda: not alive(child), 60, "the reporting process to die too")
    finally:
        worker.kill()
        worker.communicate()


def test_a_killed_reporting_process_costs_one_trial_not_the_worker(
    tmp_path: Path, fresh_storage_url: str, gate: Gate
) -> None:
    url = fresh_storage_url
    worker, child = worker_in_training(tmp_path, gate, url, "lost", n_trials=1)
    try:
        victim = running_trial(url, "lost").number
        os.kill(child, signal.SIGKILL)
        wait_for(lambda: not alive(child), 60, "the reporting process to die")
        gate.open()  # its next epoch finds the reporting process gone
        _, err = worker.communicate(timeout=240)
    finally:
        worker.kill()
    assert worker.returncode == 0, err
    assert "starting a new one" in err, err
    final = {t.number: t for t in trials(url, "lost")}
    failed = final[victim]
    assert failed.state == TrialState.FAIL
    assert failed.user_attrs["fail_reason"] == (
        f"the reporting process (pid {child}) was killed by SIGKILL"
    )
    # Its closing attributes were written from the worker itself.
    assert failed.user_attrs["epochs_trained"] >= len(failed.intermediate_values) > 0
    # The next trial was reported by a new process and completed the budget.
    assert_settled(url, "lost", finished=1)
    done = [t for t in final.values() if t.state == TrialState.COMPLETE]
    assert len(done) == 1
    # It retried the failed trial: from its checkpoint where the store is on (beside a SQLite
    # file), from epoch 1 where it is off (PostgreSQL, no folder named).
    resumed = done[0].user_attrs["resumed_from_epoch"]
    assert RetryHeartbeatStaleTrialCallback.retried_trial_number(done[0]) == victim
    assert sorted(done[0].intermediate_values) == list(range(resumed + 1, LONG + 1))
    assert (resumed > 0) == url.startswith("sqlite")


def test_ctrl_c_reaches_the_process_group_and_every_trained_epoch_is_still_written(
    tmp_path: Path, sqlite_url: str, gate: Gate
) -> None:
    # A terminal's Ctrl-C signals the whole foreground group: the worker and its reporting
    # process. The reporting process ignores it and writes what the worker still sends.
    url = sqlite_url
    worker, child = worker_in_training(
        tmp_path, gate, url, "ctrlc", n_trials=2, start_new_session=True
    )
    try:
        os.killpg(worker.pid, signal.SIGINT)
        gate.open()
        _, err = worker.communicate(timeout=120)
    finally:
        worker.kill()
    assert worker.returncode == 128 + signal.SIGINT, err
    failed = [t for t in trials(url, "ctrlc") if t.state == TrialState.FAIL]
    assert len(failed) == 1 and failed[0].user_attrs["fail_reason"] == "interrupted by SIGINT"
    assert len(failed[0].intermediate_values) == failed[0].user_attrs["epochs_trained"] > 0
    wait_for(lambda: not alive(child), 60, "the reporting process to exit")


def _study(tmp_path: Path, url: str, name: str) -> tuple[optuna.Study, object]:
    spec = load_spec(write_study(tmp_path, name=name, n_trials=10, max_epochs=3))
    return create_study(spec, url), spec


def test_reporting_process_writes_and_prunes_as_optuna_would(
    tmp_path: Path, fresh_storage_url: str
) -> None:
    study, spec = _study(tmp_path, fresh_storage_url, "inproc")
    with ReportingProcess(spec, fresh_storage_url, "inproc") as reporting:
        # A worker waits for it before its first trial trains (generous: a loaded machine).
        assert reporting.wait_ready(timeout=300) is True
        # Two complete trials: the median pruner's start-up (n_startup_trials = 2).
        for _ in range(2):
            trial = study.ask()
            reporter = reporting.reporter(trial, prunes=True)
            reporter.submit({"note": "kept", "sizes": [1, 2]})
            reporter.submit((1, 0.5))
            reporter.submit((2, 0.4))
            reporter.drain()
            reporter.check()
            reporter.close()
            study.tell(trial, 0.4)
        trial = study.ask()
        reporter = reporting.reporter(trial, prunes=True)
        reporter.submit((1, 5.0))
        reporter.drain()
        with pytest.raises(optuna.TrialPruned, match=r"pruned at epoch 1 \(val_loss=5\)"):
            reporter.check()
        reporter.close()
        study.tell(trial, state=TrialState.PRUNED)
        pid = reporting.pid
        assert alive(pid)
    assert not alive(pid)
    got = study.get_trials(deepcopy=False)
    assert [t.intermediate_values for t in got] == [{1: 0.5, 2: 0.4}] * 2 + [{1: 5.0}]
    assert got[0].user_attrs == {"note": "kept", "sizes": [1, 2]}
    assert got[2].state == TrialState.PRUNED and got[2].value == 5.0


def test_a_reporting_process_that_dies_before_it_is_ready_stops_the_worker(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'dead.db'}"
    study, spec = _study(tmp_path, url, "dead")
    reporting = ReportingProcess(spec, url, "dead")
    try:
        os.kill(reporting.pid, signal.SIGKILL)  # long before it has imported Optuna
        assert reporting.wait_ready(timeout=300) is False  # ended, not ready: no long wait

        def report_one() -> None:
            # Heard when the trial starts, or at its first check: whichever comes later.
            reporter = reporting.reporter(study.ask(), prunes=True)
            reporter.submit((1, 0.5))
            reporter.drain()
            reporter.check()

        with pytest.raises(DepthsearchError, match="was killed by SIGKILL before it was ready"):
            report_one()
        # Not restarted: it would die the same way.
        with pytest.raises(DepthsearchError, match="before it was ready"):
            reporting.reporter(study.ask(), prunes=True)
    finally:
        reporting.close()


def test_an_objective_without_a_worker_reports_inline(tmp_path: Path) -> None:
    # In-process use (a notebook's study.optimize): the same calls, in the training thread.
    spec = load_spec(write_study(tmp_path, name="inline", n_trials=2, max_epochs=3))
    data = prepare(spec.data, "cpu", seed=spec.seed)
    study = optuna.create_study(pruner=optuna.pruners.MedianPruner())
    study.optimize(Objective(spec, data, torch.device("cpu")), n_trials=2)
    for trial in study.trials:
        assert trial.state == TrialState.COMPLETE
        assert sorted(trial.intermediate_values) == [1, 2, 3]
        assert trial.user_attrs["epochs_trained"] == 3
