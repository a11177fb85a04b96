"""Storage edge cases users meet: a database left by an older Optuna."""

from __future__ import annotations

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
