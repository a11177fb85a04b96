"""Workers through a real PgBouncer in transaction pooling mode: the budget holds and a worker
holds at most 2 connections to the server. (A worker killed behind the pooler, its trial failed
and resumed from its checkpoint: test_checkpoints's SIGKILL test.)"""

from __future__ import annotations

import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import sqlalchemy
from optuna.trial import TrialState

from .conftest import write_study
from .test_worker import (
    EVENT_S,
    FAST_HEARTBEAT,
    assert_settled,
    create,
    spawn,
    training,
    trials,
    wait_for,
)

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def test_three_runs_through_pgbouncer_on_an_empty_database_end_with_exactly_the_budget(
    tmp_path: Path, pgbouncer: tuple[str, str]
) -> None:
    """Three ``run``s at the same moment on an empty database behind the pooler: the schema
    and the study are created in a race, then the budget is shared (on SQLite:
    test_worker's three-workers test; PostgreSQL without a pooler takes the same path)."""
    via, direct = pgbouncer
    study_file = write_study(tmp_path, name="bounced", n_trials=7, max_epochs=3)
    procs = [spawn("run", str(study_file), url=via) for _ in range(3)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    got = trials(direct, "bounced")
    assert len({t.number for t in got}) == len(got)
    assert_settled(direct, "bounced", finished=7)
    assert len({t.user_attrs.get("worker_pid") for t in got}) >= 2


def _backends(direct: str) -> int:
    """Server connections that depthsearch processes hold to the study's database."""
    database = direct.rsplit("/", 1)[1]
    engine = sqlalchemy.create_engine(direct.rsplit("/", 1)[0] + "/postgres")
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sqlalchemy.text(
                    "SELECT pid FROM pg_stat_activity WHERE datname = :d"
                    " AND application_name LIKE 'depthsearch[%'"
                ),
                {"d": database},
            ).all()
        return len(rows)
    finally:
        engine.dispose()


def _sample_backends(url: str, running: subprocess.Popen[str], every_s: float) -> list[int]:
    """Server connections of depthsearch processes, counted every ``every_s`` seconds until
    ``running`` exits (a worker's whole life: start, reservations, training, tells)."""
    seen = []
    while running.poll() is None:
        seen.append(_backends(url))
        time.sleep(every_s)
    return seen


def test_a_training_worker_holds_one_server_connection(
    tmp_path: Path, pgbouncer: tuple[str, str]
) -> None:
    _, url = pgbouncer  # its fresh database, directly: nothing else of ours connects to it
    # Trials far longer than the sampling (a tiny trial trains ~100 epochs a second here).
    create(tmp_path, url, "conns", n_trials=2, max_epochs=100_000, extra=FAST_HEARTBEAT)
    worker = spawn("worker", "--study", "conns", url=url)
    try:
        wait_for(lambda: training(url, "conns", 1), EVENT_S, "a trial in training")
        # Over several heartbeats (1 s apart) while the worker trains and reports.
        seen = []
        for _ in range(60):
            seen.append(_backends(url))
            time.sleep(0.05)
        still = [t.state for t in trials(url, "conns")]
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.communicate(timeout=60)
    assert still == [TrialState.RUNNING], still  # every sample fell within one trial
    # One process: its training thread, its writer and its heartbeat share one connection.
    assert set(seen) == {1}, seen


def test_a_worker_never_holds_more_than_two_server_connections(
    tmp_path: Path, pgbouncer: tuple[str, str]
) -> None:
    """From its start to its exit, across reservations, tells and the end of the budget: the
    worker connects as a role the server lets hold two connections at once (``CONNECTION
    LIMIT 2``), so a third would be refused, and say so, however briefly it lived."""
    _, url = pgbouncer
    create(tmp_path, url, "peaks", n_trials=8, max_epochs=3, extra=FAST_HEARTBEAT)
    role = f"ds_two_{uuid.uuid4().hex[:8]}"
    admin = sqlalchemy.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f"CREATE ROLE {role} LOGIN CONNECTION LIMIT 2"))
            conn.execute(sqlalchemy.text(f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}"))
            conn.execute(sqlalchemy.text(f"GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {role}"))
        limited = url.replace("://postgres@", f"://{role}@", 1)
        assert limited != url, url
        worker = spawn("worker", "--study", "peaks", url=limited)
        try:
            seen = _sample_backends(url, worker, every_s=0.01)
        finally:
            worker.kill()
            _, err = worker.communicate(timeout=60)
        assert worker.returncode == 0, err
        assert "too many connections" not in err and "unreachable" not in err, err
        assert_settled(url, "peaks", finished=8)
        assert max(seen) <= 2, seen
    finally:
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f"REASSIGN OWNED BY {role} TO postgres"))
            conn.execute(sqlalchemy.text(f"DROP OWNED BY {role}"))
            conn.execute(sqlalchemy.text(f"DROP ROLE {role}"))
        admin.dispose()
