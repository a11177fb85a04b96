"""A worker is one process: its trial's reports go to the database from a thread of its own
(in order, before the trial ends), the pruner is asked in the training thread, and nothing
else is started; Ctrl-C to the whole group still writes every trained epoch.

Every test runs over SQLite and the real PostgreSQL server where the storage matters.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from depthsearch._optuna import study_storage
from depthsearch.learn.data import prepare
from depthsearch.search.pruners import RecentTrials
from depthsearch.spec import load_spec
from depthsearch.storage import retry_for
from depthsearch.storage.trials import TrialWrites, trial_ref
from depthsearch.studies import create_study, load_study
from depthsearch.worker.run import run_worker
from depthsearch.worker.writer import Writer

from .conftest import Gate, wait_for, write_study
from .test_worker import FAST_HEARTBEAT, LONG, MID, create, held_mid_trial, spawn, trials

pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage")


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (children, their children...)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        after = stat.rsplit(")", 1)[1].split()
        if after[0] != "Z":
            parents[int(entry.name)] = int(after[1])
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        kids = [p for p, pp in parents.items() if pp == parent]
        found += kids
        frontier += kids
    return found


def test_a_running_worker_starts_no_process(tmp_path: Path, sqlite_url: str, gate: Gate) -> None:
    url = sqlite_url
    create(tmp_path, url, "one", n_trials=1, max_epochs=LONG, extra=FAST_HEARTBEAT)
    gate.hold_at(MID)
    worker = spawn("worker", "--study", "one", url=url)
    try:
        held_mid_trial(gate, url, "one")  # its MID epochs written by its writer thread
        assert descendants(worker.pid) == []
        threads = {p.name for p in Path(f"/proc/{worker.pid}/task").iterdir()}
        assert len(threads) >= 3  # training, the writer, the heartbeat (torch's may add)
        gate.open()
        _, err = worker.communicate(timeout=240)
    finally:
        worker.kill()
    assert worker.returncode == 0, err
    (done,) = trials(url, "one")
    assert done.state == TrialState.COMPLETE and len(done.intermediate_values) == LONG


#: Run in a fresh interpreter: a worker's first trial, with every full collection of the
#: garbage collector it sees (the objects it walks) while a trial trains.
_FIRST_TRIAL_GC = """
import gc, json, sys
import depthsearch.search.objective as objective
from depthsearch.worker.run import run_study_here

walked, training = [], []
plan = objective.Objective.plan
def planned(self, trial):
    training.append(trial.number)
    return plan(self, trial)
objective.Objective.plan = planned
def seen(phase, info):
    if phase == "start" and info["generation"] == 2 and training:
        walked.append(len(gc.get_objects(generation=2)))
gc.callbacks.append(seen)
run_study_here(sys.argv[1], storage=sys.argv[2], n_trials=2, tune_process=True)
gc.callbacks.remove(seen)
print(json.dumps({"walked": walked, "frozen": gc.get_freeze_count()}))
"""


def test_a_fresh_workers_trials_walk_no_start_up_objects_in_a_full_collection(
    tmp_path: Path, sqlite_url: str
) -> None:
    # Start-up's garbage (imports, the study's read) tipped the collector into full passes
    # over ~300,000 objects during the first trial (about 150 ms each, in a 0.6 s trial).
    path = write_study(tmp_path, name="heap", n_trials=2, max_epochs=3)
    out = subprocess.run(
        [sys.executable, "-c", _FIRST_TRIAL_GC, str(path), sqlite_url],
        capture_output=True,
        text=True,
        timeout=240,
        check=True,
    )
    got = json.loads(out.stdout.splitlines()[-1])
    assert got["frozen"] > 100_000  # torch, Optuna and SQLAlchemy, frozen at start-up
    assert all(n < got["frozen"] // 2 for n in got["walked"]), got


def test_ctrl_c_to_the_group_writes_every_trained_epoch(
    tmp_path: Path, sqlite_url: str, gate: Gate
) -> None:
    url = sqlite_url
    create(tmp_path, url, "ctrlc", n_trials=2, max_epochs=LONG, extra=FAST_HEARTBEAT)
    gate.hold_at(MID)
    worker = spawn("worker", "--study", "ctrlc", url=url, start_new_session=True)
    try:
        held_mid_trial(gate, url, "ctrlc")
        os.killpg(worker.pid, signal.SIGINT)  # a terminal's Ctrl-C: the whole group
        gate.open()
        _, err = worker.communicate(timeout=120)
    finally:
        worker.kill()
    assert worker.returncode == 128 + signal.SIGINT, err
    assert "stopped: interrupted by SIGINT" in err
    got = trials(url, "ctrlc")
    assert not [t for t in got if t.state == TrialState.RUNNING]
    (failed,) = [t for t in got if t.state == TrialState.FAIL]
    assert failed.user_attrs["fail_reason"] == "interrupted by SIGINT"
    assert len(failed.intermediate_values) == failed.user_attrs["epochs_trained"] >= MID


def test_the_writer_writes_in_order_and_stops_for_a_trial_ended_elsewhere(
    tmp_path: Path, fresh_storage_url: str
) -> None:
    url = fresh_storage_url
    create_study(load_spec(write_study(tmp_path, name="w", n_trials=3, max_epochs=3)), url)
    study, spec = load_study("w", url)
    writer = Writer(TrialWrites(study), retry_for(url, spec.workers.db_wait))
    try:
        trial = study.ask()
        writer.start(trial_ref(trial))
        writer.attrs({"note": "kept", "sizes": [1, 2]})
        for epoch, value in ((1, 0.5), (2, 0.4), (3, 0.45)):
            writer.epoch(epoch, value, {"last_epoch": {"epoch": epoch}})
        writer.flush()
        got = study.get_trials(deepcopy=False)[0]
        assert got.intermediate_values == {1: 0.5, 2: 0.4, 3: 0.45}
        assert got.user_attrs == {"note": "kept", "sizes": [1, 2], "last_epoch": {"epoch": 3}}
        # Another worker ends it (its stale check): the next write stops, and says why.
        study.tell(trial.number, state=TrialState.FAIL)
        writer.epoch(4, 0.3)
        with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
            writer.flush()
        assert 4 not in study.get_trials(deepcopy=False)[0].intermediate_values
        # The next trial writes again.
        second = study.ask()
        writer.start(trial_ref(second))
        writer.epoch(1, 0.9)
        writer.flush()
        assert study.get_trials(deepcopy=False)[1].intermediate_values == {1: 0.9}
    finally:
        writer.close()


def _voluntary_switches(thread_id: int) -> int:
    status = Path(f"/proc/self/task/{thread_id}/status").read_text()
    return int(status.split("voluntary_ctxt_switches:", 1)[1].split()[0])


def _settled(thread_id: int) -> int:
    """The thread's count once it stopped moving (two reads 0.1 s apart agree): asleep."""
    last = -1
    while (now := _voluntary_switches(thread_id)) != last:
        last = now
        time.sleep(0.1)
    return now


def test_the_writer_sleeps_until_its_batch_is_due_whatever_the_epochs_handed_over(
    tmp_path: Path, sqlite_url: str
) -> None:
    """Reports handed over while a batch waits for its time wake the writer's thread no more
    (it was woken, to sleep again, at every epoch: a core taken from training each time)."""
    create_study(load_spec(write_study(tmp_path, name="q", n_trials=1, max_epochs=3)), sqlite_url)
    study, spec = load_study("q", sqlite_url)
    writer = Writer(TrialWrites(study), retry_for(sqlite_url, spec.workers.db_wait), 3600.0)
    try:
        trial = study.ask()
        writer.start(trial_ref(trial))
        writer.epoch(1, 1.0)
        writer.flush()  # written: the next batch is due in an hour
        native = writer._thread.native_id
        assert native is not None
        before = _settled(native)  # back in its wait after the flush
        for epoch in range(2, 42):
            writer.epoch(epoch, 1.0 / epoch)
            time.sleep(0.01)  # as training between epochs: the thread could run meanwhile
        assert _voluntary_switches(native) - before <= 3  # about 40 (one an epoch) before
        writer.flush()
        assert len(study.get_trials(deepcopy=False)[0].intermediate_values) == 41
    finally:
        writer.close()


def test_a_trial_shorter_than_the_writers_interval_is_written_once_with_its_end(
    tmp_path: Path, sqlite_url: str
) -> None:
    """A trial's first batch waits its interval from the trial's start, as every later one
    does: a short trial is written once, by its finish, when nothing trains (a write while
    a 2-thread loop trains takes a core from it), its reports and its end in one transaction.
    A longer one is written as it trains."""
    create_study(
        load_spec(write_study(tmp_path, name="once", n_trials=3, max_epochs=3)), sqlite_url
    )
    study, spec = load_study("once", sqlite_url)
    target = TrialWrites(study)
    written: list[tuple[tuple[int, ...], object]] = []
    write = target.write

    def counted(
        tid: int, values: dict[int, float], attrs: dict[str, object], end: object = None
    ) -> None:
        written.append((tuple(values), end))
        write(tid, values, attrs, end)  # type: ignore[arg-type]

    target.write = counted  # type: ignore[method-assign]
    writer = Writer(target, retry_for(sqlite_url, spec.workers.db_wait), 3600.0)
    try:
        short = study.ask()
        writer.start(trial_ref(short))
        for epoch in (1, 2, 3):
            writer.epoch(epoch, 1.0 / epoch)
        time.sleep(0.3)  # the thread could write meanwhile: it waits for the batch's time
        assert written == []
        writer.end(TrialState.COMPLETE, [0.25])
        assert written == [((1, 2, 3), (TrialState.COMPLETE, [0.25]))]
        told = study.trials[short.number]
        assert (told.state, told.value) == (TrialState.COMPLETE, 0.25)
        assert told.intermediate_values == {1: 1.0, 2: 0.5, 3: 1.0 / 3}
        # A trial another worker ended meanwhile: refused, and nothing of it written.
        other = study.ask()
        writer.start(trial_ref(other))
        writer.epoch(1, 0.5)
        study.tell(other, state=TrialState.FAIL)
        with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
            writer.end(TrialState.COMPLETE, [0.5])
        ended = study.trials[other.number]
        assert (ended.state, ended.intermediate_values) == (TrialState.FAIL, {})
    finally:
        writer.close()
    written.clear()
    writer = Writer(target, retry_for(sqlite_url, spec.workers.db_wait), 0.05)
    try:
        writer.start(trial_ref(study.ask()))
        writer.epoch(1, 0.5)
        wait_for(lambda: written == [((1,), None)], 60, "the first batch, its interval passed")
    finally:
        writer.close()


def test_a_worker_reads_no_trial_of_its_own_and_its_pruner_holds_its_trials_as_stored(
    tmp_path: Path, fresh_storage_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A trial costs no read of itself: Optuna's ``Trial`` gets the cache's copy (put there
    by the reservation once committed, as Optuna's own ``create_new_trial`` puts it), ``tell``
    writes without a read before or after. The pruner's list holds each trial this worker told as
    the database holds it, built from what the worker read and wrote."""
    url = fresh_storage_url
    never = 'kind = "median"\nn_startup_trials = 50\nn_warmup_steps = 0\n'
    create_study(load_spec(write_study(tmp_path, name="r", max_epochs=3, pruner=never)), url)
    study, spec = load_study("r", url)
    assert isinstance(study.pruner, RecentTrials)
    study.pruner.max_age_s = 3600.0  # read once, at the first verdict: then the told ones
    storage, reads, running_reads = study_storage(study), [], []
    get_trial, get_all_trials = storage.get_trial, storage.get_all_trials

    def counted_get_trial(trial_id: int) -> optuna.trial.FrozenTrial:
        reads.append(trial_id)
        return get_trial(trial_id)

    def counted_get_all_trials(*args: object, **kw: object) -> list[optuna.trial.FrozenTrial]:
        if kw.get("states") == (TrialState.RUNNING,):
            running_reads.append(args)
        return get_all_trials(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(storage, "get_trial", counted_get_trial)
    monkeypatch.setattr(storage, "get_all_trials", counted_get_all_trials)
    data = prepare(spec.data, "cpu", seed=spec.seed, kind=spec.task.kind)
    done = run_worker(study, spec, url, n_trials=3, data=data)
    monkeypatch.undo()
    assert done.complete == 3
    stored = {t.number: t for t in study.get_trials(states=(TrialState.COMPLETE,))}
    assert reads == []
    assert running_reads == []
    held = {t.number: t for t in study.pruner.complete}
    assert held.keys() == stored.keys()
    for number, told in held.items():
        as_stored = stored[number]
        assert told.values == as_stored.values
        assert told.intermediate_values == as_stored.intermediate_values
        assert told.params == as_stored.params
        assert told.distributions == as_stored.distributions
        assert told.user_attrs == as_stored.user_attrs
        assert told.system_attrs == as_stored.system_attrs


def test_a_reserved_trial_beats_from_its_reservation_and_the_heartbeat_thread_stops(
    tmp_path: Path, fresh_storage_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each trial has its first heartbeat from its reservation (written with it, not by a
    thread started for it), the worker's one heartbeat thread beats only once an interval
    has passed, and it is gone when the worker returns."""
    import sqlalchemy

    url = fresh_storage_url
    slow_beat = "[workers]\nheartbeat_interval = 60\ngrace_period = 120\n"
    create_study(load_spec(write_study(tmp_path, name="b", max_epochs=2, extra=slow_beat)), url)
    study, spec = load_study("b", url)
    beats: list[int] = []
    monkeypatch.setattr(study_storage(study), "record_heartbeat", beats.append)
    data = prepare(spec.data, "cpu", seed=spec.seed, kind=spec.task.kind)
    done = run_worker(study, spec, url, n_trials=2, data=data)
    assert done.complete == 2
    assert beats == []  # two short trials: no interval passed in either
    assert not [t for t in threading.enumerate() if t.name == "depthsearch-heartbeat"]
    ids = {t._trial_id for t in study.get_trials()}
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sqlalchemy.text("SELECT trial_id FROM trial_heartbeats"))
            beaten = [int(r[0]) for r in rows]
    finally:
        engine.dispose()
    assert sorted(beaten) == sorted(ids) and len(ids) == 2
