"""The package's layers hold: import-linter's contracts (and that they can fail), Optuna's
private names in one shim, print and exit in the CLI alone."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO

PACKAGE = REPO / "depthsearch"
SHIM = PACKAGE / "_optuna"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

#: Optuna's private names as depthsearch used them before the shim: attributes of studies,
#: trials and storages, private modules, and making an ``optuna.Trial`` by hand; and Optuna's
#: tables: its table models (``rdb_models``, ``TrialModel``, ...), their ``__table__``, and
#: statements that write rows (``insert``/``update``/``delete``) or name its tables in SQL.
PRIVATE = re.compile(
    r"\.(_storage|_study_id|_trial_id|_cached_frozen_trial|_backend)\b"
    r"|\.(_studies|_thread_local|_version_manager|_get_prepared_new_trial|_add_trials_to_cache)\b"
    r"|\boptuna(\.\w+)*\._\w+"
    r"|\boptuna\.Trial\("
    r"|from optuna(\.\w+)*\s+import\s+_"
    r"|\b(rdb_models|_models|models)\.\w+Model\b|\b\w+Model\.__table__|\bTrial\w*Model\b"
    r"|\bsqlalchemy\.(insert|update|delete)\("
    r"|\b(INSERT INTO|UPDATE|FROM|ON|JOIN)\s+(trials|studies|trial_\w+|study_\w+)\b"
)


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", str(root / "pyproject.toml")],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_import_contracts_are_kept() -> None:
    proc = _lint(REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("learn/model.py", "import optuna", "learn is torch, numpy and pandas only"),
        ("search/space.py", "import depthsearch.worker.trial", "Layers"),
        ("search/space.py", "import subprocess", "search runs no processes"),
        ("worker/trial.py", "import multiprocessing", "A worker is one process"),
        ("spec/_spec.py", "import torch", "spec is plain Python"),
        ("results/report.py", "import click", "Only the CLI speaks click"),
        ("learn/split.py", "import depthsearch.learn.data", "No import cycle"),
        ("learn/read.py", "import depthsearch.learn.predictor", "No import cycle"),
        ("worker/trial.py", "import depthsearch._optuna", "Only storage and search import"),
    ],
)
def test_a_broken_layer_is_caught(tmp_path: Path, module: str, line: str, contract: str) -> None:
    copy = tmp_path / "repo"
    copy.mkdir()
    shutil.copy(REPO / "pyproject.toml", copy / "pyproject.toml")
    shutil.copytree(PACKAGE, copy / "depthsearch", ignore=shutil.ignore_patterns("__pycache__"))
    target = copy / "depthsearch" / module
    target.write_text(target.read_text() + f"\n{line}  # noqa\n")
    proc = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "pyproject.toml"],
        cwd=copy,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": str(copy), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode != 0, proc.stdout
    assert re.search(r"Contracts: \d+ kept, [1-9]\d* broken\.", proc.stdout), proc.stdout
    report = proc.stdout.split("Broken contracts", 1)[1]
    assert contract in report and line.split()[-1].rsplit(".", 1)[-1] in report, proc.stdout


def test_optunas_private_names_and_tables_appear_in_the_shim_alone() -> None:
    found = {
        f"{path.relative_to(REPO)}:{n}: {text.strip()}"
        for path in _modules()
        if SHIM not in path.parents
        for n, text in enumerate(path.read_text().splitlines(), 1)
        if PRIVATE.search(text)
    }
    assert not found, sorted(found)


@pytest.mark.parametrize(
    "line",
    [
        "storage = study._storage",
        "from optuna.storages._rdb import models as rdb_models",
        "trial = rdb_models.TrialModel",
        "table = TrialValueModel.__table__",
        "conn.execute(sqlalchemy.insert(trial).values(number=3))",
        "conn.execute(sqlalchemy.update(trial).where(trial.c.trial_id == 1))",
        'conn.execute(sqlalchemy.text("UPDATE trials SET state = 1"))',
        '"CREATE INDEX IF NOT EXISTS ix ON trials (study_id, state)"',
        "trial = optuna.Trial(study, 7)",
        '"SELECT 1 FROM studies WHERE study_id = :s FOR UPDATE"',
    ],
)
def test_the_private_name_pattern_finds_each_kind(line: str) -> None:
    assert PRIVATE.search(line), line


def test_the_shim_holds_what_the_pattern_finds() -> None:
    # Each file of the shim is where the pattern's hits are (or it would guard nothing).
    for name in ("__init__.py", "tables.py"):
        assert PRIVATE.search((SHIM / name).read_text()), name


def _calls(tree: ast.AST) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Name) and f.id in ("print", "exit", "quit"):
                out.append((node.lineno, f.id))
            elif isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
                name = f"{f.value.id}.{f.attr}"
                if name in ("sys.exit", "os._exit"):
                    out.append((node.lineno, name))
    return out


def test_only_the_cli_prints_or_exits() -> None:
    found = [
        (where, line, name)
        for path in _modules()
        if not (where := str(path.relative_to(REPO))).startswith("depthsearch/cli/")
        for line, name in _calls(ast.parse(path.read_text()))
    ]
    assert not found, found
    # And the scan sees a print when there is one.
    assert _calls(ast.parse("print('x')\nsys.exit(1)")) == [(1, "print"), (2, "sys.exit")]


def _functions(tree: ast.AST) -> list[tuple[str, int]]:
    return [
        (node.name, (node.end_lineno or node.lineno) - node.lineno + 1)
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
    ]


def test_no_function_outside_the_cli_is_over_60_lines() -> None:
    # Modules are split by meaning, not by their length; functions stay short (a screen),
    # docstrings included. The CLI's commands are click's long option lists.
    long = {
        f"{where}:{name}": n
        for path in _modules()
        if not (where := str(path.relative_to(REPO))).startswith("depthsearch/cli/")
        for name, n in _functions(ast.parse(path.read_text()))
        if n > 60
    }
    assert not long, long
    assert _functions(ast.parse("def f():\n    pass\n")) == [("f", 2)]
