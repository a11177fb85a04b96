"""The package's public names, and what importing it costs."""

from __future__ import annotations

import subprocess
import sys

import pytest

import depthsearch


@pytest.mark.parametrize("name", depthsearch.__all__)
def test_every_public_name_resolves(name: str) -> None:
    value = getattr(depthsearch, name)
    assert value.__name__ == name
    assert name in dir(depthsearch)


def test_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_thing"):
        depthsearch.no_such_thing  # noqa: B018


def test_study_modules_load_without_torch() -> None:
    # What `status`, `trials` and the dashboard import: torch would add seconds to each.
    code = (
        "import sys, depthsearch, depthsearch.studies, depthsearch.storage\n"
        "import depthsearch.search.pruners, depthsearch.results.status\n"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "False"


def test_counts_read_as_english() -> None:
    from depthsearch._text import counted

    assert [counted(n, "trial") for n in (0, 1, 2)] == ["0 trials", "1 trial", "2 trials"]
    assert counted(1, "layer") == "1 layer" and counted(3, "index", "indices") == "3 indices"
