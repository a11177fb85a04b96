"""No password in any output (#26 item 3): every URL form SQLAlchemy reads, every command a
user runs on it, everything it prints and writes. The test server trusts every local
connection, so any password works and each command does its whole job."""

from __future__ import annotations

from pathlib import Path

import pytest

from depthsearch.errors import StorageError
from depthsearch.storage import mask_url
from depthsearch.storage.urls import parse

from .conftest import depthsearch_cmd, write_study

SECRET = "Sup3rSecret"


def _forms(base: str) -> dict[str, str]:
    """``base`` (postgresql+psycopg://postgres@host:port/db) with the password in each form."""
    scheme, rest = base.split("://", 1)
    user, where = rest.split("@", 1)
    return {
        "userinfo": f"{scheme}://{user}:{SECRET}@{where}",
        "percent-encoded": f"{scheme}://{user}:{SECRET}%2F%40x@{where}",
        "query": f"{scheme}://{user}@{where}?password={SECRET}",
        "sslpassword": f"{scheme}://{user}:{SECRET}@{where}?sslpassword={SECRET}&sslmode=prefer",
    }


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql+psycopg://u:s3cr%40t@h:5432/d", "postgresql+psycopg://u:***@h:5432/d"),
        ("postgresql+psycopg://u@h/d?password=s3cret", "postgresql+psycopg://u@h/d?password=***"),
        (
            "postgresql+psycopg://u:a@h/d?sslmode=require&sslpassword=b",
            "postgresql+psycopg://u:***@h/d?sslmode=require&sslpassword=***",
        ),
        ("postgresql://u:pa@ss@h/d", "postgresql://u:***@h/d"),
        ("sqlite:///study.db", "sqlite:///study.db"),
    ],
)
def test_mask_url_hides_the_password_in_every_form(url: str, shown: str) -> None:
    assert mask_url(url) == shown


def test_a_raw_at_sign_in_the_password_is_refused_with_the_fix() -> None:
    with pytest.raises(StorageError, match="percent-encode it as %40") as caught:
        parse("postgresql+psycopg://user:pa@ss@host/db")
    assert "pa@ss" not in str(caught.value) and "ss@host" not in str(caught.value)


@pytest.mark.postgres
def test_no_command_shows_or_writes_the_password(tmp_path: Path, pg_database: str) -> None:
    from click.testing import CliRunner

    from depthsearch.cli import main

    forms = _forms(pg_database)
    study = write_study(tmp_path, name="secret", n_trials=1, max_epochs=1)
    # A real run and status as processes (Optuna's own log lines included), in the form that
    # used to leak; every command in every form in this process (no start-up each).
    for args in [("run", str(study)), ("status", "--study", "secret")]:
        proc = depthsearch_cmd("-v", *args, "--storage", forms["query"], cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert SECRET not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    for form, url in forms.items():
        out = tmp_path / form
        out.mkdir()
        runs = [
            ("status", "--study", "secret"),
            ("trials", "--study", "secret"),
            ("export", "--study", "secret", "-o", str(out / "best.json")),
            ("report", "--study", "secret", "-o", str(out / "report")),
            ("worker", "--study", "no-such-study"),  # an error naming the database
        ]
        for args in runs:
            got = CliRunner().invoke(main, [*args, "--storage", url])
            text = got.output + (got.stderr if got.stderr_bytes is not None else "")
            assert SECRET not in text, (form, args[0], text)
            assert got.exit_code == (2 if args[0] == "worker" else 0), (form, args[0], text)
            if args[0] in ("status", "worker"):
                assert "***" in text, (form, args[0], text)
        written = [p for p in out.rglob("*") if p.is_file()]
        assert len(written) > 2, form
        for path in written:
            assert SECRET.encode() not in path.read_bytes(), (form, path)
    # A raw "@" is refused before any connection: one line, exit 2, no part of the password.
    scheme, rest = pg_database.split("://", 1)
    user, where = rest.split("@", 1)
    proc = depthsearch_cmd(
        "status", "--study", "secret", "--storage", f"{scheme}://{user}:a@b@{where}"
    )
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert "percent-encode it as %40" in line and "a@b" not in line, line


def test_the_suggested_delete_command_is_safe_to_paste(tmp_path: Path) -> None:
    import shlex

    from depthsearch.errors import StudyMismatchError
    from depthsearch.spec import load_spec
    from depthsearch.studies import create_study

    name = "col'; touch PWNED; echo 'x $(id) `id`"
    url = f"sqlite:///{tmp_path / 'q.db'}"
    create_study(load_spec(write_study(tmp_path, name=name, max_epochs=2)), url)
    changed = load_spec(write_study(tmp_path, name=name, max_epochs=3))
    with pytest.raises(StudyMismatchError) as caught:
        create_study(changed, url)
    command = str(caught.value).split("delete the old study with `", 1)[1].rsplit("`", 1)[0]
    # What a shell would run: the name and the URL as one word each, nothing else.
    argv = ["optuna", "delete-study", "--study-name", name, "--storage", url]
    assert shlex.split(command) == argv
