"""Commands that read never write: on a database that holds no study they say so in one line
and create nothing (no SQLite file, no lock file, no tables)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import sqlalchemy

from .conftest import depthsearch_cmd, throwaway_database, unique, write_study

READERS = {
    "trials": ["trials", "--study", "s"],
    "report": ["report", "--study", "s", "-o", "r"],
    "export": ["export", "--study", "s", "-o", "b.json"],
    "worker": ["worker", "--study", "s"],
    "dashboard": ["dashboard", "--port", "0"],
}


@pytest.mark.parametrize("command", list(READERS))
def test_a_read_command_on_a_missing_sqlite_file_creates_nothing(
    tmp_path: Path, command: str
) -> None:
    db = tmp_path / "absent.db"
    proc = depthsearch_cmd(*READERS[command], "--storage", f"sqlite:///{db}", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert f"no study database at {db} (the file does not exist)" in lines[0]
    assert "depthsearch create STUDY.toml" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no .db, no .db.lock, no output


def test_a_read_command_on_an_empty_postgres_database_creates_no_tables(
    pg_database: str, tmp_path: Path
) -> None:
    with throwaway_database(f"{pg_database.rsplit('/', 1)[1]}_{uuid.uuid4().hex[:6]}") as url:
        for command in ("trials", "worker", "dashboard"):
            proc = depthsearch_cmd(*READERS[command], "--storage", url, cwd=tmp_path)
            assert proc.returncode == 2, proc.stderr
            assert "holds no study yet" in proc.stderr and proc.stderr.count("\n") == 1
        assert _tables(url) == []


def _tables(url: str) -> list[str]:
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as conn:
            return sqlalchemy.inspect(conn).get_table_names()
    finally:
        engine.dispose()


def test_a_worker_for_an_absent_study_says_how_to_create_it(
    tmp_path: Path, storage_url: str
) -> None:
    present = unique("present")
    study_file = write_study(tmp_path, name=present, n_trials=1, max_epochs=1)
    assert depthsearch_cmd("create", str(study_file), "--storage", storage_url).returncode == 0
    proc = depthsearch_cmd("worker", "--study", "absent", "--storage", storage_url)
    assert proc.returncode == 2, proc.stderr
    line = proc.stderr.strip()
    assert "no study named 'absent'" in line and f"'{present}'" in line
    assert "create it with `depthsearch create STUDY.toml`" in line


def test_a_read_command_on_an_empty_sqlite_file_adds_no_tables(tmp_path: Path) -> None:
    db = tmp_path / "empty.db"
    db.touch()  # a file, but no study in it
    proc = depthsearch_cmd("trials", "--study", "s", "--storage", f"sqlite:///{db}")
    assert proc.returncode == 2, proc.stderr
    assert "holds no study yet" in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert db.stat().st_size == 0
