"""The database server itself stops, restarts and dies mid-trial.

Each test owns a PostgreSQL server of its own (``initdb`` + ``pg_ctl`` on a throwaway data
directory and port), so it can ``pg_ctl stop -m fast``, start it again and ``kill -9`` the
postmaster while a worker is held mid-trial at the gate. Workers are processes of the
installed command; nothing is mocked.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from .conftest import Gate
from .test_worker import (
    EVENT_S,
    LONG,
    MID,
    assert_settled,
    count,
    create,
    held_mid_trial,
    spawn,
    trials,
)

pytestmark = pytest.mark.slow


def _bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


class Postmaster:
    """A PostgreSQL server of the test's own: trust auth on 127.0.0.1:``port``."""

    def __init__(self, bindir: Path, root: Path, port: int) -> None:
        self.bindir, self.root, self.port = bindir, root, port
        self.data = root / "data"
        self.log = root / "server.log"
        self.as_postgres = os.geteuid() == 0  # initdb refuses root: run as the postgres user

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self.as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=120)

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync")

    def start(self) -> None:
        """Starts it, again and again for up to 60 s: after a kill -9 the old backends hold
        the shared memory until they notice their postmaster is gone."""
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c max_connections=50"
        )
        deadline = time.monotonic() + 60
        while True:
            done = self._run(
                "pg_ctl",
                "-D",
                str(self.data),
                "-o",
                options,
                "-l",
                str(self.log),
                "-w",
                "start",
                check=False,
            )
            if done.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"the server did not start: {done.stderr}")
            time.sleep(0.5)

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def kill9(self) -> None:
        """SIGKILL to the postmaster alone (its backends then exit on their own)."""
        pid = int((self.data / "postmaster.pid").read_text().splitlines()[0])
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 0)
                time.sleep(0.1)
                continue
            break

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def postmaster() -> Iterator[Postmaster]:
    """A server of this test's own, stopped and its data directory removed at the end."""
    bindir = _bindir()
    if bindir is None or (os.geteuid() == 0 and shutil.which("runuser") is None):
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL's server binaries (initdb, pg_ctl) are missing")
        pytest.skip("PostgreSQL's server binaries (initdb, pg_ctl) are not installed")
    root = Path(tempfile.mkdtemp(prefix="ds-pg-"))
    root.chmod(0o755)
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    server = Postmaster(bindir, root, _free_port())
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


WORKERS = """
[workers]
heartbeat_interval = 1
grace_period = 4
max_retry = 2
db_wait = {db_wait}
checkpoints = "{checkpoints}"
"""


def _epochs_twice(url: str, name: str) -> int:
    """Epochs trained twice: what every retry's failed trial trained past its checkpoint."""
    return sum(int(t.user_attrs.get("epochs_lost", 0)) for t in trials(url, name))


@pytest.mark.parametrize("how", ["restart", "kill -9"])
def test_an_outage_shorter_than_db_wait_loses_no_worker_and_no_trial(
    tmp_path: Path, postmaster: Postmaster, gate: Gate, how: str
) -> None:
    """Both workers live on through the outage; the budget is exact; the trial in training is
    finished by its worker or, taken over meanwhile, resumed from its checkpoint (at most one
    epoch trained twice)."""
    url = postmaster.url()
    extra = WORKERS.format(db_wait=60, checkpoints=tmp_path / "ckpt")
    # A trial taken over (its heartbeat stale during the outage) is, to the taker, a killed
    # one: it loses what was trained since its last state written. A state every epoch
    # bounds that by one epoch (the default, one per 10 s of training, by those seconds).
    extra += "checkpoint_seconds = 0\n"
    create(tmp_path, url, "short", n_trials=3, max_epochs=LONG, extra=extra)
    gate.hold_at(MID)
    workers = [spawn("worker", "--study", "short", url=url) for _ in range(2)]
    try:
        held_mid_trial(gate, url, "short")
        if how == "restart":
            postmaster.stop("fast")
        else:
            postmaster.kill9()
        gate.open()  # the held worker trains on into the outage
        time.sleep(8)  # past the heartbeat's grace period, well inside db_wait
        postmaster.start()
        outs = [w.communicate(timeout=EVENT_S) for w in workers]
    finally:
        for w in workers:
            w.kill()
    for w, (_, err) in zip(workers, outs, strict=True):
        assert w.returncode == 0, err
        assert "Traceback" not in err and "UpdateFinishedTrialError" not in err, err
    assert_settled(url, "short", finished=3)
    twice = _epochs_twice(url, "short")
    print(f"outage ({how}) of 8s: {twice} epoch(s) trained twice")
    assert twice <= 1


def test_an_outage_longer_than_db_wait_exits_in_time_and_the_next_worker_resumes(
    tmp_path: Path, postmaster: Postmaster, gate: Gate
) -> None:
    """Down past db_wait: each worker exits 1 within db_wait plus a few seconds of noticing,
    with one line that names the outage; its trial is left for a retry with its checkpoints
    kept; once the server is back, a worker finishes the budget from them."""
    url = postmaster.url()
    db_wait = 10
    extra = WORKERS.format(db_wait=db_wait, checkpoints=tmp_path / "ckpt")
    create(tmp_path, url, "long", n_trials=3, max_epochs=LONG, extra=extra)
    gate.hold_at(MID)
    workers = [spawn("worker", "--study", "long", url=url) for _ in range(2)]
    try:
        held_mid_trial(gate, url, "long", n=2)
        postmaster.stop("fast")
        stopped = time.monotonic()
        gate.open()
        outs = [w.communicate(timeout=EVENT_S) for w in workers]
        took = time.monotonic() - stopped
    finally:
        for w in workers:
            w.kill()
    for w, (_, err) in zip(workers, outs, strict=True):
        assert w.returncode == 1, err  # a runtime failure, for a scheduler to run again
        lines = [x for x in err.splitlines() if x.startswith("depthsearch: error:")]
        assert len(lines) == 1 and f"was unreachable for {db_wait}s while" in lines[0], err
        assert "left RUNNING" in err and "Traceback" not in err, err
    # Noticing takes an epoch at most (the next report); then db_wait, the short try (3 s)
    # and the exit (before, three writes waited db_wait in turn: 29.5 s here).
    print(f"outage past db_wait={db_wait}s: both workers exited {took:.1f}s after the stop")
    assert took < db_wait + 12, took
    kept = list((tmp_path / "ckpt").rglob("*"))
    assert any(p.is_file() for p in kept), "the checkpoints were removed"
    postmaster.start()
    later = spawn("worker", "--study", "long", url=url)
    _, err = later.communicate(timeout=EVENT_S)
    assert later.returncode == 0, err
    assert_settled(url, "long", finished=3)
    got = trials(url, "long")
    resumed = [t for t in got if t.user_attrs.get("resumed_from_epoch", 0) >= MID]
    assert len(resumed) == 2, [(t.number, t.state, t.user_attrs) for t in got]
    twice = _epochs_twice(url, "long")
    print(f"after it, a worker resumed both trials: {twice} epoch(s) trained twice")
    assert twice <= 2  # one epoch at most per trial in training
    assert count(url, "long", TrialState.FAIL) == 2
    study = optuna.load_study(study_name="long", storage=url)
    assert len(study.trials) == 5


def test_launch_keeps_its_workers_result_when_the_summary_cannot_be_read() -> None:
    """Item 8: every worker exited 0 (each stops only once the budget is met), then the
    summary query fails (a restart, a connection limit): one line says so, exit 0 stands."""
    from depthsearch.cli._launch import final_line
    from depthsearch.studies import open_study

    url = f"postgresql+psycopg://postgres:s3cret@127.0.0.1:{_free_port()}/gone"
    line = final_line(lambda: open_study("quickstart", url, read_trials=False))
    assert line.startswith("every worker exited 0, each once the study held its budget; ")
    assert "could not be read" in line and "Connection refused" in line
    assert "s3cret" not in line
