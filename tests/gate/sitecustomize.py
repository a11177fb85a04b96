"""Test-only: holds a training process after a chosen epoch until the test opens a gate.

Python imports ``sitecustomize`` at start-up from ``sys.path``; ``tests/conftest.py`` puts this
folder on ``PYTHONPATH`` for every process the tests start, and names a folder per test in
``DEPTHSEARCH_TEST_GATE``. Nothing happens until a test writes ``hold-at`` there (an epoch
number, :meth:`tests.conftest.Gate.hold_at`): from then on a process that finishes that epoch of
a trial (after the epoch's own work: reported, checkpoint handed over) writes
``held-PID-N`` and waits until the test writes ``open``. So a test acts exactly mid-trial, on
any machine, with trials a few epochs long, instead of sizing trials to outlast its reaction.

``depthsearch.learn.train.fit`` is wrapped when that module is first imported (processes that
never train, as ``status``, never import it).

While ``pace`` exists (:meth:`tests.conftest.Gate.pace`), every epoch's end also sleeps that many
seconds: a test that waits on something outside (Slurm's signal before the time limit) keeps
its workers training, slowly, instead of burning the cores the other tests run on.

A second point holds a worker right after it finished a trial (its end told, its retry
queued), while ``hold-finish`` exists, until ``open-finish`` does (``held-finish-PID``). A third
holds it right before it tells a trial's state (its closing attributes written), while
``hold-tell`` exists, until ``open`` does (``held-tell-PID``).
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

_FOLDER = os.environ.get("DEPTHSEARCH_TEST_GATE")
#: A held process gives up waiting after this long (a test that never opens its gate must
#: not leave a process behind for ever).
_GIVE_UP_S = 900.0


def _pace(folder: Path) -> None:
    try:
        seconds = float((folder / "pace").read_text().strip())
    except (OSError, ValueError):
        return
    if not (folder / "open").exists():
        time.sleep(seconds)


def _hold(folder: Path, epoch: int) -> None:
    _pace(folder)
    try:
        wanted = int((folder / "hold-at").read_text().strip())
    except (OSError, ValueError):
        return
    if epoch != wanted or (folder / "open").exists():
        return
    held = 0
    while (folder / f"held-{os.getpid()}-{held}").exists():
        held += 1
    (folder / f"held-{os.getpid()}-{held}").write_text(str(epoch))
    _wait_open(folder)


def _wait_open(folder: Path) -> None:
    deadline = time.monotonic() + _GIVE_UP_S
    while not (folder / "open").exists() and time.monotonic() < deadline:
        time.sleep(0.01)


def _wrap(module: ModuleType, folder: Path) -> None:
    plain = module.fit

    def fit(*args: Any, on_epoch_end: Any = None, **kwargs: Any) -> Any:
        def epoch_end(result: Any, history: Any) -> None:
            if on_epoch_end is not None:
                on_epoch_end(result, history)
            _hold(folder, int(result.epoch))

        return plain(*args, on_epoch_end=epoch_end, **kwargs)

    module.fit = fit


def _wrap_finish(module: ModuleType, folder: Path) -> None:
    plain = module.Trials.finish

    def finish(self: Any, *args: Any, **kwargs: Any) -> Any:
        out = plain(self, *args, **kwargs)
        if (folder / "hold-finish").exists() and not (folder / "open-finish").exists():
            (folder / f"held-finish-{os.getpid()}").write_text("")
            deadline = time.monotonic() + _GIVE_UP_S
            while not (folder / "open-finish").exists() and time.monotonic() < deadline:
                time.sleep(0.01)
        return out

    module.Trials.finish = finish
    plain_tell = module.Trials.tell

    def tell(self: Any, *args: Any, **kwargs: Any) -> Any:
        if (folder / "hold-tell").exists() and not (folder / "open").exists():
            (folder / f"held-tell-{os.getpid()}").write_text("")
            _wait_open(folder)
        return plain_tell(self, *args, **kwargs)

    module.Trials.tell = tell


_WRAPPERS = {"depthsearch.learn.train": _wrap, "depthsearch.worker.trial": _wrap_finish}


class _WrapWhenImported(importlib.abc.MetaPathFinder):
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.left = dict(_WRAPPERS)

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        wrap = self.left.pop(name, None)
        if wrap is None:
            return None
        if not self.left:
            sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)  # by the finders after this one
        if spec is None or spec.loader is None:
            return spec
        loader: Any = spec.loader
        execute = loader.exec_module
        folder = self.folder

        def exec_module(module: ModuleType) -> None:
            execute(module)
            wrap(module, folder)

        loader.exec_module = exec_module
        return spec


if _FOLDER:
    sys.meta_path.insert(0, _WrapWhenImported(Path(_FOLDER)))
