"""``depthsearch status``: a study's budget, best and running trials, from the database."""

from __future__ import annotations

import re
import signal
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from .conftest import Gate, depthsearch_cmd, unique, write_study
from .test_worker import (
    FAST_HEARTBEAT,
    LONG,
    MID,
    assert_running_rows,
    create,
    held_mid_trial,
    spawn,
)

EPOCHS = LONG


@pytest.mark.parametrize("storage_url", ["postgresql"], indirect=True)
def test_status_shows_each_running_trial_with_its_worker_and_heartbeat(
    tmp_path: Path, storage_url: str, gate: Gate
) -> None:
    """(On SQLite: test_worker's launch test looks at its workers' trials the same way.)"""
    name = unique("watched")
    # Both workers held mid-trial at the gate while status looks.
    create(tmp_path, storage_url, name, n_trials=4, max_epochs=EPOCHS, extra=FAST_HEARTBEAT)
    gate.hold_at(MID)
    workers = [spawn("worker", "--study", name, url=storage_url) for _ in range(2)]
    try:
        held_mid_trial(gate, storage_url, name, n=2)
        proc = depthsearch_cmd("status", "--study", name, "--storage", storage_url)
    finally:
        for w in workers:
            w.send_signal(signal.SIGTERM)
        gate.open()
        for w in workers:
            w.communicate(timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert f"study '{name}'" in proc.stdout and "0 of 4 search trials finished" in proc.stdout
    assert_running_rows(proc.stdout, {w.pid for w in workers}, f"{MID}/{EPOCHS}")


def test_status_of_a_finished_study_says_the_budget_is_met_from_the_database_alone(
    tmp_path: Path,
) -> None:
    """``--watch`` on a finished study prints once and exits; the study's data file is not
    needed (as on another machine than the one that ran it)."""
    url = f"sqlite:///{tmp_path / 'csv.db'}"
    csv = tmp_path / "series.csv"
    csv.write_text("y\n" + "\n".join(f"{(i % 17) / 17:.3f}" for i in range(300)) + "\n")
    study_file = write_study(tmp_path, name="csvstudy", n_trials=3, max_epochs=2)
    text = study_file.read_text().replace(
        'source = "synthetic"\nlength = 400', f'source = "csv"\npath = "{csv}"\ntarget = "y"'
    )
    study_file.write_text(text)
    assert depthsearch_cmd("run", str(study_file), "--storage", url).returncode == 0
    csv.unlink()  # as on another machine
    proc = depthsearch_cmd("status", "--study", "csvstudy", "--storage", url, "--watch", "1")
    assert proc.returncode == 0, proc.stderr
    assert (
        "3 of 3 search trials finished" in proc.stdout
        and "budget met: 3 of 3 search trials finished" in proc.stdout
    ), proc.stdout
    assert re.search(r"best so far: trial \d+ val_loss=", proc.stdout), proc.stdout
    assert "running:" not in proc.stdout


def test_the_pace_counts_the_time_trials_ran_not_the_time_nothing_did(
    tmp_path: Path, storage_url: str
) -> None:
    import optuna
    from optuna.trial import TrialState, create_trial

    name = unique("paced")
    create(tmp_path, storage_url, name, n_trials=50)
    study = optuna.load_study(study_name=name, storage=storage_url)
    # Two workers, one-minute trials: 10 minutes of them, five hours of nothing (stopped
    # overnight), 5 minutes more. The last 20 finished ran 5.5 + 5.5 minutes.
    begin = datetime(2026, 3, 1, 8, 0, 0)
    for block, minutes in ((begin, 10), (begin + timedelta(hours=5, minutes=10), 5)):
        for i in range(minutes):
            for worker in range(2):
                start = block + timedelta(minutes=i, seconds=worker * 30)
                trial = create_trial(
                    state=TrialState.PRUNED if worker else TrialState.COMPLETE,
                    value=None if worker else 0.5,
                    params={},
                    distributions={},
                    intermediate_values={1: 0.5},
                )
                trial.datetime_start, trial.datetime_complete = start, start + timedelta(minutes=1)
                study.add_trial(trial)
    proc = depthsearch_cmd("status", "--study", name, "--storage", storage_url)
    assert proc.returncode == 0, proc.stderr
    assert "30 of 50 search trials finished" in proc.stdout, proc.stdout
    # 20 trials in 11 minutes: 109 an hour; the 20 left, 11 minutes (not 5 hours of it).
    line = "pace: 109 trials/h over the last 20 finished (11 min while trials ran); "
    assert line + "about 11 min to the budget" in proc.stdout, proc.stdout


def test_running_time_is_the_union_of_the_spans() -> None:
    from depthsearch.results.status import running_time

    t = datetime(2026, 1, 1)
    m = timedelta(minutes=1)
    assert running_time([]) == 0
    # Overlapping, nested, touching and apart: [0, 3] + [5, 6] minutes.
    spans = [(t, t + 2 * m), (t + m, t + 3 * m), (t + m, t + 2 * m), (t + 5 * m, t + 6 * m)]
    assert running_time(spans) == 4 * 60
    assert running_time([(t, t + m), (t + m, t + 2 * m)]) == 2 * 60
