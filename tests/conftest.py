"""Shared fixtures: tiny study files and a storage over SQLite and the real PostgreSQL."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: tests/gate/sitecustomize.py, loaded by every Python process the tests start (see Gate).
GATE_DIR = Path(__file__).resolve().parent / "gate"
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(GATE_DIR), *filter(None, [os.environ.get("PYTHONPATH")])]
)
# The processes the tests start (pytest-xdist's workers, spawned after this, included) write
# the byte code of what they import and `make test` did not compile first
# (tools/warm_bytecode.py): compiled once, not at every start.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
# One torch thread in every test process (pytest-xdist's workers and what they start, before
# torch is imported): the suite runs several trainings at once on a few cores, and torch's
# default (a thread a core, each spinning while it waits) made them fight. Three copies of the
# classify tutorial at once on 2 cores: 76 s of wall and 146 s of CPU, against 25 s and 45 s
# with one thread each. A test that needs more threads asks for them (launch sets its own).
os.environ.setdefault("OMP_NUM_THREADS", "1")
# MLflow's usage telemetry off in the tests (as MLflow itself turns it off where CI is set): its
# first use starts a thread that fetches a config from the internet and, offline, pops
# _MLFLOW_TELEMETRY_SESSION_ID from os.environ while the test's own requests may be iterating
# it (requests' proxy lookup): a fresh clone's `make test` failed on that KeyError in
# `export --register` (2026-12-06). The test machines are offline anyway.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
SEED_ARTICLE = REPO.parent / "shared" / "seed-article.md"
PG_ADMIN_URL = os.environ.get(
    "DEPTHSEARCH_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Grouped tests first (the Slurm tests share one pytest-xdist worker and one cluster): the
    longest group starts at once and the other worker takes the rest, instead of the group
    running alone at the end."""
    items.sort(key=lambda item: item.get_closest_marker("xdist_group") is None)


def pytest_configure(config: pytest.Config) -> None:
    """``--dist loadgroup`` keeps a group on one worker by renaming the test's id, which
    pytest 9.2 no longer reads (pytest-xdist 3.8): the groups would split silently and each
    worker start its own Slurm cluster and MLflow server. Refused here, with the fix."""
    from importlib.metadata import version

    if config.getoption("dist", "no") != "loadgroup":
        return
    pytest_version = tuple(int(p) for p in version("pytest").split(".")[:2])
    xdist_version = tuple(int(p) for p in version("pytest-xdist").split(".")[:2])
    if pytest_version >= (9, 2) and xdist_version <= (3, 8):
        raise pytest.UsageError(
            f"pytest {version('pytest')} with pytest-xdist {version('pytest-xdist')} splits "
            "--dist loadgroup's groups across workers; install the lock's versions: "
            "pip install -c constraints.txt -e '.[dev]'"
        )


TINY_STUDY = """
[study]
name = "{name}"
n_trials = {n_trials}
seed = 3

[data]
source = "synthetic"
length = 400
window = 8
horizon = 2

[space]
num_layers = {{ low = 1, high = 3 }}
hidden_size = [4, 8]
dropout = {{ low = 0.0, high = 0.3 }}
lr = {{ low = 1e-3, high = 3e-2, log = true }}
batch_size = [32, 64]

[train]
max_epochs = {max_epochs}
device = "cpu"
threads = 1
patience = 0
# One pass over the 400-step series an epoch (the default, 16 batches, passes three times):
# these trials test workers, storage and faults, not how well a model learns.
min_batches = 1

[sampler]
kind = "random"

[pruner]
kind = "median"
n_startup_trials = 2
n_warmup_steps = 1
{extra}
"""


_TINY_PRUNER = 'kind = "median"\nn_startup_trials = 2\nn_warmup_steps = 1\n'


def write_study(
    folder: Path,
    *,
    name: str = "tiny",
    n_trials: int = 8,
    max_epochs: int = 5,
    extra: str = "",
    pruner: str = _TINY_PRUNER,
) -> Path:
    """The tiny study as ``folder/NAME.toml``; ``pruner``: the ``[pruner]`` table's body."""
    path = folder / f"{name}.toml"
    text = TINY_STUDY.format(name=name, n_trials=n_trials, max_epochs=max_epochs, extra=extra)
    assert _TINY_PRUNER in text
    path.write_text(text.replace(_TINY_PRUNER, pruner), encoding="utf-8")
    return path


OBJECTIVES = 'objectives = ["val_loss", "param_count"]'


def pareto_study(folder: Path, name: str, n_trials: int = 10) -> Path:
    """The tiny study with two objectives (and, as a multi-objective study needs, no pruner)."""
    path = write_study(folder, name=name, n_trials=n_trials, max_epochs=3)
    text = path.read_text().replace("seed = 3\n", f"seed = 3\n{OBJECTIVES}\n")
    text = text.replace('kind = "median"\nn_startup_trials = 2\nn_warmup_steps = 1\n', "")
    text = text.replace("[pruner]\n", "")
    path.write_text(text)
    return path


@pytest.fixture
def tiny_study(tmp_path: Path) -> Path:
    return write_study(tmp_path)


def _pg_available() -> str | None:
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(PG_ADMIN_URL, connect_args={"connect_timeout": 5})
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT 1"))
        engine.dispose()
    except Exception as e:
        return str(e).splitlines()[0]
    return None


@contextlib.contextmanager
def throwaway_database(name: str) -> Iterator[str]:
    """Creates database ``name`` on the server, yields its URL, and drops it afterwards."""
    import sqlalchemy

    admin = sqlalchemy.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A throwaway PostgreSQL database for this test session, dropped afterwards.

    In CI (``CI`` set) a missing server is a failure, never a skip.
    """
    problem = _pg_available()
    if problem is not None:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL on 127.0.0.1:5432 is required in CI: {problem}")
        pytest.skip(f"PostgreSQL on 127.0.0.1:5432 is not reachable: {problem}")
    with throwaway_database(f"depthsearch_test_{uuid.uuid4().hex[:10]}") as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A study database for the scenarios that do not depend on the storage (signals, OOM,
    launch's forwarding, reporting process lifecycles): a fresh SQLite file. What does depend
    on it (locks, budgets, heartbeats, retries) runs on both, with ``storage_url``."""
    return f"sqlite:///{tmp_path / 'study.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A study database: a fresh SQLite file, or the session's PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'study.db'}"
    return str(request.getfixturevalue("pg_database"))


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty study database: a new SQLite file, or a new database on the real server."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    session_url = str(request.getfixturevalue("pg_database"))
    with throwaway_database(f"{session_url.rsplit('/', 1)[1]}_{uuid.uuid4().hex[:6]}") as url:
        yield url


def create_here(study_file: Path, url: str) -> None:
    """The study of ``study_file`` created in ``url`` by this process, as ``depthsearch create``
    does (tests/test_cli.py runs the command itself), without a process start per test; its
    connections are closed before the test's workers start."""
    from depthsearch.spec import load_spec
    from depthsearch.storage import dispose_lock_engines, rdb_backend
    from depthsearch.studies import create_study

    study = create_study(load_spec(study_file), url)
    backend = rdb_backend(study._storage)
    if backend is not None:
        backend.engine.dispose()
    dispose_lock_engines()


def wait_for(condition: Callable[[], bool], timeout: float, what: str, every: float = 0.2) -> None:
    """Polls ``condition`` every ``every`` seconds until true; fails naming ``what`` after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Gate:
    """Holds the training processes a test starts after a chosen epoch, until it opens
    (``tests/gate/sitecustomize.py``): a test acts exactly mid-trial on any machine, loaded or
    not, with trials a few epochs long."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def hold_at(self, epoch: int) -> None:
        """From now on, a process that finishes ``epoch`` of a trial waits there."""
        (self.folder / "open").unlink(missing_ok=True)
        (self.folder / "hold-at").write_text(str(epoch))

    def pace(self, seconds: float) -> None:
        """From now on, every epoch's end sleeps ``seconds`` (until the gate opens)."""
        (self.folder / "pace").write_text(str(seconds))

    def held(self) -> int:
        """How many times a process stopped at the gate so far."""
        return len(list(self.folder.glob("held-*")))

    def held_pids(self) -> set[int]:
        return {int(p.name.split("-")[1]) for p in self.folder.glob("held-*")}

    def wait_held(self, n: int = 1, timeout: float = 300) -> None:
        wait_for(lambda: self.held() >= n, timeout, f"{n} held at the gate", every=0.05)

    def open(self) -> None:
        """Lets every held process go on, and holds none from now on."""
        (self.folder / "open").write_text("")
        (self.folder / "open-finish").write_text("")

    def hold_after_finish(self) -> None:
        """From now on, a worker that finished a trial (told, its retry queued) waits."""
        (self.folder / "hold-finish").write_text("")

    def wait_finished(self, timeout: float = 300) -> None:
        self.wait_file("held-finish-*", timeout)

    def hold_before_tell(self) -> None:
        """From now on, a worker about to tell a trial's state (its closing attributes
        written) waits, until :meth:`open`; :meth:`wait_file` ``("held-tell-*")`` waits for it."""
        (self.folder / "open").unlink(missing_ok=True)
        (self.folder / "hold-tell").write_text("")

    def wait_file(self, pattern: str, timeout: float = 300) -> None:
        wait_for(lambda: any(self.folder.glob(pattern)), timeout, pattern, every=0.05)

    def open_finish(self) -> None:
        (self.folder / "open-finish").write_text("")


@pytest.fixture(autouse=True)
def gate(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Gate]:
    """Every test's own gate folder (beside, not in, its ``tmp_path``: tests look at what
    their commands left there), named to the processes it starts; opened at the end, so no
    held process outlives its test."""
    folder = tmp_path_factory.mktemp("gate")
    monkeypatch.setenv("DEPTHSEARCH_TEST_GATE", str(folder))
    opened = Gate(folder)
    yield opened
    opened.open()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def depthsearch_cmd(
    *args: str,
    env: dict[str, str | None] | None = None,
    timeout: float = 300,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Runs the installed ``depthsearch`` console script as a user would; ``env`` is added to
    this process's environment (a None value removes that variable)."""
    import shutil
    import sys

    exe = shutil.which("depthsearch") or str(Path(sys.executable).parent / "depthsearch")
    merged = {**os.environ, **(env or {})}
    return subprocess.run(
        [exe, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={k: v for k, v in merged.items() if v is not None},
        cwd=cwd,
    )


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def pgbouncer(pg_database: str) -> Iterator[tuple[str, str]]:
    """A real PgBouncer (Debian's package) in transaction pooling mode in front of a fresh
    database on the real server, with a pool of 3 server connections; yields (URL through
    PgBouncer, direct URL). Stopped, and its folder removed, afterwards."""
    import shutil
    import socket
    import tempfile
    import time

    exe = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    if not Path(exe).exists():
        message = "pgbouncer is not installed: apt-get install pgbouncer (make test does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    root = os.geteuid() == 0
    # Its own folder under /tmp: as root, PgBouncer runs as postgres (it refuses root), which
    # cannot enter pytest's private tmp folders.
    folder = Path(tempfile.mkdtemp(prefix="depthsearch-pgbouncer-"))
    port = _free_port()
    name = f"{pg_database.rsplit('/', 1)[1]}_{uuid.uuid4().hex[:6]}"
    with throwaway_database(name) as direct:
        (folder / "pgbouncer.ini").write_text(
            f"""[databases]
{name} = host=127.0.0.1 port=5432 user=postgres dbname={name}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = any
pool_mode = transaction
default_pool_size = 3
max_client_conn = 200
logfile = {folder / "pgbouncer.log"}
pidfile = {folder / "pgbouncer.pid"}
""",
            encoding="utf-8",
        )
        cmd = [exe, str(folder / "pgbouncer.ini")]
        if root:
            folder.chmod(0o755)
            for path in (folder, *folder.iterdir()):
                shutil.chown(path, "postgres")
            cmd[1:1] = ["-u", "postgres"]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + 30
            while True:
                with socket.socket() as s:
                    if s.connect_ex(("127.0.0.1", port)) == 0:
                        break
                if proc.poll() is not None or time.monotonic() > deadline:
                    out = proc.stdout.read() if proc.stdout else ""
                    raise RuntimeError(f"pgbouncer did not start: {out}")
                time.sleep(0.1)
            yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/{name}", direct
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            shutil.rmtree(folder, ignore_errors=True)
