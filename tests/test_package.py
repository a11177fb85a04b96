"""The package's public names, and what importing it costs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
    # What `status`, `trials` and the dashboard import, and what rebuilds a model (its config):
    # torch would add seconds to each.
    code = (
        "import sys, depthsearch, depthsearch.studies, depthsearch.storage\n"
        "import depthsearch.search.pruners, depthsearch.results.status\n"
        "from depthsearch.learn import ModelConfig, load_config\n"
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


def test_launch_counts_the_gpus_as_torch_does_importing_torch_only_beside_a_gpu_driver() -> None:
    # The launcher only supervises: on a machine without a GPU driver it learns that torch
    # would see no device without loading torch (a second of CPU in every launch).
    import torch

    from depthsearch.launch.local import _GPU_DRIVER_PATHS

    code = (
        "import sys\nfrom depthsearch.launch.local import visible_gpus\n"
        "print(visible_gpus(), 'torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    gpus, imported = out.stdout.rsplit(" ", 1)
    expected = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    assert gpus == str(expected)
    driver = any(Path(p).exists() for p in _GPU_DRIVER_PATHS)
    assert imported.strip() == str(driver), (driver, out.stdout)
