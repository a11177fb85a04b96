"""The PostgreSQL server goes away in the middle of a study, and comes back (or does not).

Workers reach the real server through a loopback TCP proxy that the test can cut: every open
connection is dropped and new ones are closed at once, as when the network fails. The server
itself stopped, restarted and killed is in ``test_postmaster.py`` (which replaced this file's
outage-within and outage-past ``db_wait`` tests). Nothing is mocked: the workers are processes
of the installed command.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from optuna.trial import TrialState

from depthsearch.spec import load_spec
from depthsearch.studies import create_study

from .conftest import Gate, write_study
from .test_worker import (
    EVENT_S,
    LONG,
    MID,
    assert_settled,
    create,
    held_mid_trial,
    retries_of,
    spawn,
    trials,
    wait_for,
)

pytestmark = pytest.mark.slow


class Proxy:
    """Forwards 127.0.0.1:<port> to the PostgreSQL server until cut."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = int(self.listener.getsockname()[1])
        self.up = True
        self.open: list[socket.socket] = []
        self.lock = threading.Lock()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.up:
                client.close()
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self.lock:
                self.open += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        """Drops every connection and refuses (closes) new ones until :meth:`restore`."""
        self.up = False
        with self.lock:
            for s in self.open:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
            self.open.clear()

    def restore(self) -> None:
        self.up = True

    def close(self) -> None:
        self.closed = True
        self.cut()
        self.listener.close()


@pytest.fixture
def proxied(pg_database: str, tmp_path: Path) -> Iterator[tuple[str, str, Proxy]]:
    """(direct URL, URL through the proxy, proxy) for a fresh database on the real server."""
    from .conftest import throwaway_database

    with throwaway_database(f"{pg_database.rsplit('/', 1)[1]}_out{time.time_ns() % 10**6}") as url:
        proxy = Proxy(("127.0.0.1", 5432))
        host = url.split("@", 1)[1].split("/", 1)[0]
        try:
            yield url, url.replace(host, f"127.0.0.1:{proxy.port}"), proxy
        finally:
            proxy.close()


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_the_writer_rides_out_an_outage_and_says_so_in_the_workers_log(
    tmp_path: Path, proxied: tuple[str, str, Proxy], caplog: pytest.LogCaptureFixture
) -> None:
    import optuna

    from depthsearch.storage import retry_for
    from depthsearch.storage.trials import TrialWrites, trial_ref
    from depthsearch.studies import load_study
    from depthsearch.worker.writer import Writer

    direct, via, proxy = proxied
    spec = load_spec(write_study(tmp_path, name="rp", n_trials=5, max_epochs=3))
    create_study(spec, direct)
    study, _ = load_study("rp", via)
    caplog.set_level(logging.INFO, logger="depthsearch")

    def warned() -> bool:
        return any("while writing a trial's reports" in r.getMessage() for r in caplog.records)

    writer = Writer(TrialWrites(study), retry_for(via, 120.0))
    try:
        trial = study.ask()
        writer.start(trial_ref(trial))
        writer.epoch(1, 0.5, {"note": "kept"})
        writer.flush()
        proxy.cut()
        writer.epoch(2, 0.4)
        wait_for(warned, 60, "the writer's retry warning in this process's log")
        proxy.restore()
        writer.flush()
        study.tell(trial, 0.4)
    finally:
        writer.close()
    got = optuna.load_study(study_name="rp", storage=direct).trials[0]
    assert got.intermediate_values == {1: 0.5, 2: 0.4} and got.user_attrs == {"note": "kept"}
    record = next(r for r in caplog.records if "while writing a trial's reports" in r.getMessage())
    assert record.name == "depthsearch.storage.retry" and record.levelno == logging.WARNING


@pytest.mark.parametrize("when", ["mid-trial", "before its tell"])
def test_a_trial_taken_over_meanwhile_is_left_to_its_retry_and_the_worker_carries_on(
    tmp_path: Path, sqlite_url: str, gate: Gate, when: str
) -> None:
    """Taken over mid-trial, or once trained (its closing attributes written, its state not
    yet told: the race a worker back from an outage can lose): its checkpoints are left to
    its retry, which loses at most an epoch."""
    import optuna
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    url, name = sqlite_url, "taken"
    create(tmp_path, url, name, n_trials=2, max_epochs=LONG)
    if when == "mid-trial":
        gate.hold_at(MID)
    else:
        gate.hold_before_tell()
    worker = spawn("worker", "--study", name, url=url)
    try:
        if when == "mid-trial":
            held_mid_trial(gate, url, name)
        else:
            gate.wait_file("held-tell-*")
        # What another worker's stale check does to a trial whose worker it could not hear
        # (this one was cut off from the database): FAIL it and queue its retry.
        study = optuna.load_study(study_name=name, storage=url)
        (running,) = study.get_trials(states=(TrialState.RUNNING,))
        study.tell(running.number, state=TrialState.FAIL)
        RetryHeartbeatStaleTrialCallback()(study, study.get_trials()[running.number])
    finally:
        gate.open()
        _, err = worker.communicate(timeout=EVENT_S)
    assert worker.returncode == 0, err
    assert f"trial {running.number} was taken over by another worker" in err, err
    assert "Traceback" not in err and "UpdateFinishedTrialError" not in err, err
    assert_settled(url, name, finished=2)
    (retry,) = retries_of(trials(url, name), running.number)
    # Its checkpoints were left for the retry, which went on from them.
    assert retry.state == TrialState.COMPLETE and retry.user_attrs["resumed_from_epoch"] > 0
    assert retry.user_attrs["epochs_lost"] <= 1, retry.user_attrs


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_the_short_try_after_an_outage_queues_no_second_run_of_a_trial_taken_over(
    tmp_path: Path, sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The outage rule's short try (``Trials.abandon``, a worker back after ``db_wait``) finds
    its trial failed and queued again by another worker's stale check meanwhile: it queues no
    second run again, and says the trial was taken over."""
    import optuna
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    from depthsearch.storage import retry_for
    from depthsearch.storage.trials import TrialWrites
    from depthsearch.studies import load_study
    from depthsearch.worker.trial import Outcome, Trials
    from depthsearch.worker.writer import Writer

    url = sqlite_url
    create(tmp_path, url, "late", n_trials=2, max_epochs=2)
    study, spec = load_study("late", url)
    writer = Writer(TrialWrites(study), retry_for(url, 10.0))
    mine = Trials(study, spec, url, objective=None, writer=writer)  # type: ignore[arg-type]
    trial = study.ask()
    other = optuna.load_study(study_name="late", storage=url)
    other.tell(trial.number, state=TrialState.FAIL)
    RetryHeartbeatStaleTrialCallback()(other, other.get_trials()[trial.number])
    caplog.set_level(logging.WARNING, logger="depthsearch")
    try:
        lost = Outcome(TrialState.FAIL, reason="the database was away", lost=True)
        mine.abandon(trial, lost)
    finally:
        writer.close()
    assert len(retries_of(trials(url, "late"), trial.number)) == 1
    assert f"trial {trial.number} was taken over by another worker" in caplog.text
