"""Byte-compile, once and in one process, what the service's and the suite's processes import.

`make install-dev` installs without byte-compiling (pip would compile ~17,000 files, most never
imported). Left to the suite, the first processes it starts all compile the same few thousand
modules at once (three pytest-xdist workers, each starting workers that import torch): about
120 s of CPU in the suite's first run on a fresh machine, 2026-12-06; importing them here
first costs ~25 s.
Run by `make test` (a stamp in the venv keeps it to once per install); a module that is not
installed is skipped.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys
import time
import warnings

#: Beyond depthsearch's own modules: what a training process, the servers the tests start
#: (MLflow, optuna-dashboard, the docs build) and the test tools import.
THIRD_PARTY = (
    "torch._dynamo",  # torch.optim's first step imports it
    "optuna_dashboard",
    "mlflow",
    "mlflow.cli",  # `mlflow server`, which the tests start
    "mlflow.server",
    "mlflow.server.fastapi_app",
    "uvicorn",
    "mlflow.pytorch",  # `export --register`
    "git",  # what MLflow reads of the source in a tracked worker
    "docker",
    "onnx",
    "onnxruntime",
    "matplotlib.pyplot",
    "psycopg",
    "mkdocs.commands.build",
    "material.plugins.search.plugin",
    "mkdocs_click",
    "hypothesis",
    "xdist",
    "execnet",
)


def _own_modules() -> list[str]:
    import depthsearch

    names = ["depthsearch"]
    for info in pkgutil.walk_packages(depthsearch.__path__, "depthsearch."):
        if not info.name.rsplit(".", 1)[-1].startswith("__"):
            names.append(info.name)
    return names


def main() -> int:
    if sys.flags.dont_write_bytecode or os.environ.get("PYTHONDONTWRITEBYTECODE"):
        print("warm_bytecode: writing byte code is off here (PYTHONDONTWRITEBYTECODE)")
        return 1
    started = time.monotonic()
    before = len(sys.modules)
    skipped = []
    warnings.simplefilter("ignore")  # deprecation notes of what is imported, not ours to act on
    for name in (*_own_modules(), *THIRD_PARTY):
        try:
            importlib.import_module(name)
        except Exception as e:  # not installed, or needs what this machine lacks (a GPU)
            skipped.append(f"{name} ({type(e).__name__})")
    took = time.monotonic() - started
    print(f"warm_bytecode: {len(sys.modules) - before} modules imported in {took:.0f} s", end="")
    print(f"; skipped: {', '.join(skipped)}" if skipped else "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
