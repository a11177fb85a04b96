"""Timing every storage call of a study, for the benchmark scripts."""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

#: record(method name, wall seconds, CPU seconds of the calling thread); runs in that thread.
Record = Callable[[str, float, float], None]


@contextlib.contextmanager
def timed_methods(
    obj: Any, record: Record, *, skip: Callable[[str], bool] = lambda name: name.startswith("__")
) -> Iterator[None]:
    """Wraps ``obj``'s methods (those ``skip`` keeps) so that each thread's outermost call is
    recorded (Optuna's cached storage calls itself: nested calls are not counted twice)."""
    local = threading.local()
    for name in dir(type(obj)):
        method = getattr(obj, name)
        if skip(name) or not callable(method):
            continue

        def timed(*args: Any, __m: Any = method, __name: str = name, **kwargs: Any) -> Any:
            depth = getattr(local, "depth", 0)
            local.depth = depth + 1
            wall, cpu = time.perf_counter(), time.thread_time()
            try:
                return __m(*args, **kwargs)
            finally:
                local.depth = depth
                if depth == 0:
                    record(__name, time.perf_counter() - wall, time.thread_time() - cpu)

        setattr(obj, name, functools.wraps(method)(timed))
    try:
        yield
    finally:
        for name in list(vars(obj)):
            if callable(getattr(type(obj), name, None)):
                delattr(obj, name)
