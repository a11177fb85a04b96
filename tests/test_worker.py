"""Many workers, one study: exact budget, orphaned trials, launch, unreachable databases.

Each test runs on a fresh SQLite file or a fresh database on the real PostgreSQL server (the
storage its comment names). Workers are real processes of the installed command; nothing is
mocked.
"""

from __future__ import annotations

import os
import re
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
from optuna.trial import TrialState

from depthsearch import run_study
from depthsearch.launch.local import available_cores
from depthsearch.storage import RetryHeartbeatStaleTrialCallback

from .conftest import Gate, create_here, depthsearch_cmd, wait_for, write_study

pytestmark = pytest.mark.slow

FAST_HEARTBEAT = """
[workers]
heartbeat_interval = 1
grace_period = 3
max_retry = 1
"""


def spawn(*args: str, url: str, **popen: Any) -> subprocess.Popen[str]:
    """``python -m depthsearch ARGS`` on ``url``; ``popen`` goes to ``subprocess.Popen``."""
    return subprocess.Popen(
        [sys.executable, "-m", "depthsearch", *args],
        env={**os.environ, "DEPTHSEARCH_STORAGE": url, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def trials(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)


def count(url: str, name: str, *states: TrialState) -> int:
    return sum(t.state in states for t in trials(url, name))


#: How long a test waits for an event (a trial in training, a log line): generous, since a
#: loaded machine may take long; a test that passes never waits for it to run out.
EVENT_S = 300

#: Trials of a few epochs for the tests that act mid-training: they hold the worker at a gate
#: after epoch MID (conftest.Gate), act while it waits there, and open it; never sized to
#: outlast the test's reaction, on a fast machine or a loaded one.
LONG = 8
MID = 3


def training(url: str, name: str, n: int) -> bool:
    """True when at least ``n`` trials are RUNNING with an epoch reported."""
    running = [
        t
        for t in trials(url, name)
        if t.state == TrialState.RUNNING and len(t.intermediate_values) > 0
    ]
    return len(running) >= n


def held_mid_trial(gate: Gate, url: str, name: str, n: int = 1) -> None:
    """Waits until ``n`` workers are held at the gate (set with ``gate.hold_at(MID)`` before
    they started) and their MID epochs are in the study: every one of them is mid-trial."""
    gate.wait_held(n, EVENT_S)
    wait_for(
        lambda: (
            sum(
                t.state == TrialState.RUNNING and len(t.intermediate_values) >= MID
                for t in trials(url, name)
            )
            >= n
        ),
        EVENT_S,
        f"{n} trial(s) with {MID} epochs reported",
    )


def assert_running_rows(out: str, pids: set[int], epoch: str) -> None:
    """``depthsearch status`` printed ``N running`` and a row for each worker's trial: its
    host, device, ``epoch`` ("reached/max") and a heartbeat under a minute old."""
    assert f"{len(pids)} running" in out, out
    for pid in pids:
        (row,) = [line for line in out.splitlines() if re.search(rf"\s{pid}\s", line)]
        assert socket.gethostname() in row and " cpu " in row, row
        assert re.search(rf"\s{epoch}\s", row), row
        age = re.search(r"(\d+) s ago", row)
        assert age is not None and int(age.group(1)) < 60, row  # beating


def assert_settled(url: str, name: str, *, finished: int) -> None:
    """The study holds exactly ``finished`` finished trials and none running or waiting, and
    its trials are numbered 0, 1, 2, ... (whoever created them: workers, Optuna's retries)."""
    assert count(url, name, TrialState.COMPLETE, TrialState.PRUNED) == finished
    assert count(url, name, TrialState.RUNNING, TrialState.WAITING) == 0
    numbers = sorted(t.number for t in trials(url, name))
    assert numbers == list(range(len(numbers))), numbers


def retries_of(
    got: Iterable[optuna.trial.FrozenTrial], number: int
) -> list[optuna.trial.FrozenTrial]:
    """The trials that Optuna's retry callback made of trial ``number``."""
    return [t for t in got if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == number]


def create(tmp_path: Path, url: str, name: str, **kw: object) -> None:
    create_here(write_study(tmp_path, name=name, **kw), url)  # type: ignore[arg-type]


@pytest.mark.parametrize("fresh_storage_url", ["sqlite"], indirect=True)
def test_three_workers_end_with_exactly_the_budget(tmp_path: Path, fresh_storage_url: str) -> None:
    # Three `run`s at the same moment on an empty database: schema and study creation race.
    # (On PostgreSQL: test_pgbouncer's, through the pooler, on the same code path.)
    study_file = write_study(tmp_path, name="budget", n_trials=5, max_epochs=3)
    procs = [spawn("run", str(study_file), url=fresh_storage_url) for _ in range(3)]
    outs = [p.communicate(timeout=240) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
    got = trials(fresh_storage_url, "budget")
    numbers = [t.number for t in got]
    assert len(numbers) == len(set(numbers))
    assert sum(t.state.is_finished() for t in got) == 5
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in got) == 5
    assert not [t for t in got if t.state == TrialState.RUNNING]
    # Each worker did part of the work.
    assert len({t.user_attrs.get("worker_pid") for t in got}) >= 2


def test_trial_orphaned_before_its_first_heartbeat_is_failed_and_retried(
    tmp_path: Path, fresh_storage_url: str
) -> None:
    # A worker killed between ask() and its first heartbeat leaves exactly this: a RUNNING
    # trial with no heartbeat row, which Optuna's own stale check never fails.
    url = fresh_storage_url
    create(tmp_path, url, "orphan", n_trials=2, max_epochs=2, extra=FAST_HEARTBEAT)
    orphan = optuna.load_study(study_name="orphan", storage=url).ask()
    proc = spawn("worker", "--study", "orphan", url=url)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    final = {t.number: t for t in trials(url, "orphan")}
    assert final[orphan.number].state == TrialState.FAIL
    assert "before the first heartbeat" in final[orphan.number].user_attrs["fail_reason"]
    retries = retries_of(final.values(), orphan.number)
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert_settled(url, "orphan", finished=2)


def test_a_candidate_too_big_for_memory_fails_alone(tmp_path: Path, sqlite_url: str) -> None:
    # A real allocation failure: the worker runs under a 4 GiB address-space limit and the
    # first trial asks for 8 layers of width 4096 (about 4.3 GB of weights).
    url = sqlite_url
    study_file = write_study(tmp_path, name="oom", n_trials=2, max_epochs=2)
    study_file.write_text(
        study_file.read_text()
        .replace("num_layers = { low = 1, high = 3 }", "num_layers = { low = 1, high = 8 }")
        .replace("hidden_size = [4, 8]", "hidden_size = [4, 4096]")
    )
    create_here(study_file, url)
    study = optuna.load_study(study_name="oom", storage=url)
    study.enqueue_trial({"num_layers": 8, "hidden_size": 4096})
    for _ in range(2):
        study.enqueue_trial({"num_layers": 2, "hidden_size": 4})
    limit = 4 << 30

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    proc = spawn("worker", "--study", "oom", url=url, preexec_fn=cap)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    got = sorted(trials(url, "oom"), key=lambda t: t.number)
    assert got[0].state == TrialState.FAIL and got[0].params["hidden_size"] == 4096
    assert got[0].user_attrs["fail_reason"].startswith("out of memory on cpu: RuntimeError")
    assert "worker carries on" in err
    assert [t.state for t in got[1:]] == [TrialState.COMPLETE] * 2


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A loopback port that accepts TCP connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for s in held:
        s.close()
    server.close()


@pytest.mark.parametrize("target", ["refused", "silent"])
def test_unreachable_database_is_one_line_and_quick(silent_server: int, target: str) -> None:
    if target == "refused":
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]  # closed again: nothing listens there
    else:
        port = silent_server
    url = f"postgresql+psycopg://postgres:hunter2@127.0.0.1:{port}/nowhere"
    started = time.monotonic()
    proc = depthsearch_cmd("worker", "--study", "x", "--storage", url, timeout=60)
    assert time.monotonic() - started < 30
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("depthsearch: error: cannot connect"), (
        proc.stderr
    )
    assert "hunter2" not in proc.stderr and "***" in lines[0]


# PostgreSQL: the default launch below (one CPU worker per core) meets its budget on SQLite.
@pytest.mark.parametrize("fresh_storage_url", ["postgresql"], indirect=True)
def test_launched_cpu_workers_split_threads_meet_the_budget_and_draw_reproducible_trials(
    tmp_path: Path, fresh_storage_url: str
) -> None:
    # Trial k samples from a state seeded by the study's seed and k, whichever worker takes
    # it: the start-up trials (the first 5, TPE's default) of two launched workers are those
    # of one worker in this process, trial for trial.
    url = fresh_storage_url
    path = write_study(tmp_path, name="again", n_trials=5, max_epochs=2)
    path.write_text(path.read_text().replace('kind = "random"', 'kind = "tpe"'))
    create_here(path, url)
    proc = depthsearch_cmd(
        "launch", "--study", "again", "--storage", url, "--cpu-workers", "2", timeout=240
    )
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if "pid" in line and "on CPU" in line]
    # The cores this process may use (launch counts them the same way), shared by the two.
    per = max(1, available_cores() // 2)
    threads = f"on CPU, {per} thread{'s' if per > 1 else ''}"
    assert len(lines) == 2 and all(threads in line for line in lines), proc.stdout
    assert {t.user_attrs["torch_threads"] for t in trials(url, "again")} == {per}
    # Each worker's own lines come through the launcher behind its id and device.
    for i in (0, 1):
        assert re.search(rf"^\[{i} cpu\] .*worker on cpu", proc.stderr, re.M), proc.stderr
    assert not [line for line in proc.stderr.splitlines() if not line.startswith("[")], proc.stderr
    assert "one a core" not in proc.stderr  # launch gave each its share: no hint to share
    assert proc.stdout.strip().splitlines()[-1] == "budget met: 5 of 5 search trials finished"
    assert_settled(url, "again", finished=5)
    alone = f"sqlite:///{tmp_path / 'alone'}.db"
    run_study(path, storage=alone)
    assert_settled(alone, "again", finished=5)
    drawn = [
        {t.number: t.params for t in trials(where, "again") if t.number < 5}
        for where in (url, alone)
    ]
    assert len(drawn[0]) == 5 and drawn[0] == drawn[1]
    # Every depth of the range among the start-up trials, at the cheap widths.
    assert {p["num_layers"] for p in drawn[0].values()} == {1, 2, 3}
    assert {p["hidden_size"] for p in drawn[0].values()} == {4}


def test_launch_forwards_sigterm_to_every_worker(
    tmp_path: Path, sqlite_url: str, gate: Gate
) -> None:
    url = sqlite_url
    create(tmp_path, url, "stopme", n_trials=20, max_epochs=LONG, extra=FAST_HEARTBEAT)
    gate.hold_at(MID)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "depthsearch",
            "launch",
            "--study",
            "stopme",
            "--storage",
            url,
            "--cpu-workers",
            "2",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    held_mid_trial(gate, url, "stopme", n=2)
    # Each worker in a process group of its own (no terminal signal reaches it twice), in
    # the launcher's session (Linux's autogroup: one CPU share for the whole launch).
    workers = gate.held_pids()
    assert len(workers) == 2
    for pid in workers:
        assert os.getpgid(pid) == pid
        assert os.getsid(pid) == os.getsid(proc.pid)
    # What a user looks at meanwhile (on PostgreSQL: test_status): each worker's trial.
    status = depthsearch_cmd("status", "--study", "stopme", "--storage", url)
    assert status.returncode == 0, status.stderr
    assert_running_rows(status.stdout, workers, f"{MID}/{LONG}")
    proc.send_signal(signal.SIGTERM)
    gate.open()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert out.count("exited with code 143") == 2, out
    assert count(url, "stopme", TrialState.RUNNING) == 0
    assert count(url, "stopme", TrialState.FAIL) == 2


def test_launch_on_a_terminal_without_a_gpu_starts_a_worker_a_core_under_a_live_line(
    tmp_path: Path, gate: Gate
) -> None:
    """No ``--cpu-workers`` and no CUDA device: a worker per core, one torch thread each, and
    under their relayed lines one line redrawn in place: the study's progress, drawn while a
    worker is held mid-trial at the gate (so a fast machine cannot finish before it)."""
    import pty
    import shutil

    url = f"sqlite:///{tmp_path / 'tty.db'}"
    create(tmp_path, url, "tty", n_trials=4, max_epochs=2)
    gate.hold_at(1)
    exe = shutil.which("depthsearch") or str(Path(sys.executable).parent / "depthsearch")
    parent, child = pty.openpty()
    proc = subprocess.Popen(
        [exe, "launch", "--study", "tty", "--storage", url],
        stdin=subprocess.DEVNULL,
        stdout=child,
        stderr=child,
    )
    os.close(child)
    chunks: list[bytes] = []
    reader = threading.Thread(target=_read_terminal, args=(parent, chunks), daemon=True)
    reader.start()
    live = re.compile(r"\r\[launch\] \d+ of 4 search trials finished, [1-9]\d* running")
    try:
        gate.wait_held(1, EVENT_S)
        wait_for(lambda: bool(live.search(_text(chunks))), EVENT_S, "the live progress line")
    finally:
        gate.open()
    assert proc.wait(timeout=EVENT_S) == 0
    reader.join(timeout=60)
    out = _text(chunks)
    assert "budget met: 4 of 4 search trials finished" in out, out
    if torch.cuda.is_available():  # pragma: no cover - a GPU machine
        assert "no CUDA device visible" not in out
        return
    cores = available_cores()
    assert f"no CUDA device visible: starting {cores} CPU worker" in out, out
    lines = [line for line in out.splitlines() if "pid" in line and "on CPU" in line]
    assert len(lines) == cores and all("on CPU, 1 thread" in x for x in lines), out
    assert {t.user_attrs["torch_threads"] for t in trials(url, "tty")} == {1}
    assert "one a core" not in out


def _read_terminal(fd: int, chunks: list[bytes]) -> None:
    """Everything written to the pty whose reading end is ``fd``, until every writer closed it."""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # the terminal closed: every writer exited
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(fd)


def _text(chunks: list[bytes]) -> str:
    return b"".join(list(chunks)).decode("utf-8", "replace")
