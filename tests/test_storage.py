"""Storage edge cases users meet: a database left by an older Optuna."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import optuna
import pytest
import sqlalchemy

from depthsearch.errors import StorageError
from depthsearch.storage import open_storage

from .conftest import depthsearch_cmd


def test_an_older_optuna_schema_names_the_upgrade_command(fresh_storage_url: str) -> None:
    optuna.create_study(storage=fresh_storage_url, study_name="old")
    # Roll the recorded schema back to Optuna 3.0's, as a database made by it would hold.
    engine = sqlalchemy.create_engine(fresh_storage_url)
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text("UPDATE alembic_version SET version_num = 'v3.0.0.d'"))
    engine.dispose()
    proc = depthsearch_cmd("trials", "--study", "old", "--storage", fresh_storage_url)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "older Optuna schema" in lines[0]
    assert f"optuna storage upgrade --storage {fresh_storage_url}" in lines[0]
    with pytest.raises(StorageError, match="optuna storage upgrade"):
        open_storage(fresh_storage_url)


@pytest.mark.parametrize("url", ["sqlite:///:memory:", "sqlite://"])
def test_an_in_memory_sqlite_database_is_refused_in_one_line(url: str) -> None:
    # Each pooled connection would get its own empty database: a traceback, before.
    proc = depthsearch_cmd("trials", "--study", "x", "--storage", url)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "in-memory SQLite" in lines[0] and url in lines[0], proc.stderr
    with pytest.raises(StorageError, match="use a file"):
        open_storage(url)


def _varied_study(url: str) -> optuna.Study:
    """Trials of every kind a study holds: complete, pruned, failed, running, waiting (with
    fixed params), several objectives' values, infinite and NaN values, nested attributes."""
    study = optuna.create_study(
        storage=open_storage(url), study_name="varied", directions=["minimize", "minimize"]
    )
    for k in range(6):
        trial = study.ask()
        trial.suggest_int("num_layers", 2, 2)
        trial.suggest_categorical("hidden_size", [8, 16, None, "wide"])
        trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        for step in range(1, k + 2):  # trial.report is for one objective: the storage's call
            value = [1.0 / step, float("inf"), float("nan")][step % 3]
            trial.storage.set_trial_intermediate_value(trial._trial_id, step, value)
        trial.set_user_attr("model_config", {"hidden_sizes": [8] * k, "dropout": 0.1})
        trial.set_user_attr("seconds", 0.25 * k)
        trial.storage.set_trial_system_attr(trial._trial_id, "note", [k, {"x": None}])
        if k in (0, 1):
            study.tell(trial, [0.5 * k, float("inf") if k else 3.0])
        elif k == 2:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        elif k == 3:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        # 4, 5: left RUNNING
    study.enqueue_trial({"num_layers": 2, "lr": 0.01})
    return study


def test_the_fast_first_read_builds_the_trials_optuna_builds(storage_url: str) -> None:
    from depthsearch.storage import load_all_trials

    _varied_study(storage_url)
    theirs = optuna.load_study(study_name="varied", storage=storage_url).get_trials()
    study = optuna.load_study(study_name="varied", storage=open_storage(storage_url))
    assert load_all_trials(study) == len(theirs) == 7
    ours = study.get_trials()
    for a, b in zip(theirs, ours, strict=True):
        # FrozenTrial's == compares every field but NaN (NaN != NaN): compare their text too.
        assert repr(a) == repr(b)
        assert a._trial_id == b._trial_id and a.distributions == b.distributions
    assert [t.state.name for t in ours].count("WAITING") == 1
    # The cache goes on incrementally: a trial written afterwards is read, once.
    optuna.load_study(study_name="varied", storage=storage_url).enqueue_trial({"lr": 0.02})
    assert len(study.get_trials()) == 8
    assert load_all_trials(study) == 0  # read already: nothing done twice


def test_a_waiting_trial_taken_under_the_lock_starts_now_in_any_time_zone(
    storage_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Optuna stores naive UTC; the reservation's own update must too (five hours off in New
    York otherwise)."""
    import time
    from datetime import datetime

    from depthsearch.storage import locked_study

    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        study = optuna.create_study(storage=open_storage(storage_url), study_name="tz")
        study.enqueue_trial({"lr": 0.01})
        with locked_study(study, storage_url) as locked:
            assert locked.counts().waiting == 1
            taken = locked.take_waiting()
            assert locked.take_waiting() is None  # only one was waiting
        (trial,) = optuna.load_study(study_name="tz", storage=storage_url).get_trials()
        assert trial._trial_id == taken and trial.state == optuna.trial.TrialState.RUNNING
        assert trial.datetime_start is not None
        assert abs((datetime.now() - trial.datetime_start).total_seconds()) < 600
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def _reserved(study: optuna.Study, url: str, *, waiting: bool) -> int:
    """A trial reserved as a worker reserves it: created, or taken from the waiting ones."""
    from depthsearch.storage import locked_study

    if waiting:
        study.enqueue_trial({"lr": 0.01}, user_attrs={"note": "queued"})
        study.get_trials()  # the cache sees it WAITING before it is taken
    with locked_study(study, url) as locked:
        locked.counts()
        taken = locked.take_waiting()
        return taken if taken is not None else locked.create()


@pytest.mark.parametrize("waiting", [False, True], ids=["created", "taken"])
def test_a_reserved_trial_opens_as_the_trial_optuna_reads(storage_url: str, waiting: bool) -> None:
    """The reserved trial's ``optuna.Trial`` is built from the cache's copy where it holds
    the trial RUNNING (no read of it), and is what Optuna's own constructor builds."""
    from depthsearch.storage.trials import opened_trial

    name = f"open-{uuid.uuid4().hex[:6]}"
    study = optuna.create_study(storage=open_storage(storage_url), study_name=name)
    tid = _reserved(study, storage_url, waiting=waiting)
    storage = study._storage
    reads: list[int] = []
    get_trial = storage.get_trial

    def counted(trial_id: int) -> optuna.trial.FrozenTrial:
        reads.append(trial_id)
        return get_trial(trial_id)

    storage.get_trial = counted  # type: ignore[method-assign]
    ours = opened_trial(study, tid)
    assert storage.get_trial is counted  # put back as it was
    del storage.get_trial
    theirs = optuna.Trial(optuna.load_study(study_name=name, storage=storage_url), tid)
    assert reads == ([tid] if waiting else [])  # a copy the cache saw WAITING is read again
    assert vars(ours).keys() == vars(theirs).keys()
    a, b = ours._cached_frozen_trial, theirs._cached_frozen_trial
    assert repr(a) == repr(b) and a._trial_id == b._trial_id == tid
    assert a.state == optuna.trial.TrialState.RUNNING
    assert ours.suggest_float("lr", 1e-4, 1e-1, log=True) == (
        0.01 if waiting else ours.params["lr"]
    )


@pytest.mark.parametrize(
    "state", [None, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL]
)
def test_a_tell_without_a_read_writes_what_optunas_tell_writes(
    storage_url: str, state: optuna.trial.TrialState | None
) -> None:
    """Told as the worker knows it (no read), a trial ends as ``study.tell`` ends it (a
    pruned one with its last report as its value); one another worker ended first is left
    as that worker ended it, and its state returned."""
    from depthsearch.storage.trials import opened_trial, read_trial, tell_trial

    name = f"tell-{uuid.uuid4().hex[:6]}"
    study = optuna.create_study(storage=open_storage(storage_url), study_name=name)
    ended = []
    for known in (False, True):
        trial = opened_trial(study, _reserved(study, storage_url, waiting=False))
        trial.suggest_int("num_layers", 2, 2)
        trial.report(0.7, 1)
        trial.report(0.4, 2)
        frozen = read_trial(trial) if known else None
        value = 0.4 if state is None else None
        assert tell_trial(study, trial, state, value, frozen) == (
            state or optuna.trial.TrialState.COMPLETE
        )
        ended.append(study._storage.get_trial(trial._trial_id))
    theirs, ours = ended
    for field in ("state", "values", "params", "intermediate_values", "user_attrs"):
        assert getattr(ours, field) == getattr(theirs, field), field
    assert ours.datetime_complete is not None and theirs.datetime_complete is not None
    assert abs((ours.datetime_complete - theirs.datetime_complete).total_seconds()) < 60
    # Ended elsewhere first (a stale check): left FAIL, and FAIL is returned.
    trial = opened_trial(study, _reserved(study, storage_url, waiting=False))
    trial.report(0.5, 1)
    optuna.load_study(study_name=name, storage=storage_url).tell(
        trial.number, state=optuna.trial.TrialState.FAIL
    )
    assert tell_trial(study, trial, state, 0.5 if state is None else None, read_trial(trial)) == (
        optuna.trial.TrialState.FAIL
    )
    assert study._storage.get_trial(trial._trial_id).state == optuna.trial.TrialState.FAIL


def test_a_sqlite_reservation_holds_the_write_lock_from_its_count_to_its_commit(
    tmp_path: Path,
) -> None:
    """SQLite has no row locks: the reservation's transaction takes the database's write lock
    at its start, so nothing (another program's ``create_new_trial``, a requeue) numbers a
    trial between its count and its insert. Once committed, Optuna's cache holds the trial as
    one it created: ``ask`` opens it without a read."""
    import sqlite3

    from depthsearch._optuna import asked_trial
    from depthsearch.storage import locked_study

    url = f"sqlite:///{tmp_path / 'lock.db'}"
    study = optuna.create_study(storage=open_storage(url), study_name="wl")
    study.enqueue_trial({"lr": 0.01})
    other = sqlite3.connect(tmp_path / "lock.db", timeout=0.05)
    with locked_study(study, url) as locked:
        counted = locked.counts()
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")
        assert locked.take_waiting() is not None  # the enqueued trial 0
        created = locked.create()
    other.execute("BEGIN IMMEDIATE")  # free again once committed
    other.rollback()
    other.close()
    assert counted.waiting == 1 and counted.running == 0
    storage = study._storage
    reads: list[object] = []
    get_all_trials = storage.get_all_trials

    def reading(*args: Any, **kwargs: Any) -> Any:
        reads.append(args)
        return get_all_trials(*args, **kwargs)

    storage.get_all_trials = reading  # type: ignore[method-assign]
    trial = asked_trial(study, created)
    del storage.get_all_trials
    assert trial.number == 1 and reads == []
    numbers = sorted(t.number for t in optuna.load_study(study_name="wl", storage=url).trials)
    assert numbers == [0, 1]
