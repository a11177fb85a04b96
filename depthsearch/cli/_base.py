"""The command group, its shared options, error handling and the terminal's live line."""

from __future__ import annotations

import functools
import logging
import shutil
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import click

from depthsearch.errors import DepthsearchError, Interrupted

F = TypeVar("F", bound=Callable[..., Any])

_log = logging.getLogger("depthsearch")


def _setup_logging(verbose: bool) -> None:
    import optuna

    from depthsearch.storage import quiet_optuna as ignore_optuna_warnings

    handler = _LogHandler()
    handler.setFormatter(logging.Formatter("[depthsearch] %(message)s"))
    root = logging.getLogger("depthsearch")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    # Optuna announces every trial itself; our lines carry the same and more.
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    ignore_optuna_warnings()


def _user_errors(fn: F) -> F:
    """One line on stderr and a non-zero exit for every error a user can act on."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except DepthsearchError as e:
            click.echo(f"depthsearch: error: {e}", err=True)
            sys.exit(e.exit_code)
        except Interrupted as e:
            click.echo(f"depthsearch: stopped: {e}", err=True)
            sys.exit(128 + e.signum)
        except KeyboardInterrupt:
            click.echo("depthsearch: stopped: interrupted", err=True)
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


data_option = click.option(
    "--data",
    "data_path",
    default=None,
    type=click.Path(dir_okay=False),
    help="This machine's copy of the study's CSV (checked against its SHA-256).",
)

study_option = click.option("--study", "study_name", required=True, help="Study name.")

timeout_option = click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="S",
    help="Start no trial after S seconds.",
)

storage_option = click.option(
    "--storage",
    default=None,
    metavar="URL",
    help="Study database (default: $DEPTHSEARCH_STORAGE, else sqlite:///depthsearch.db).",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log every epoch and more.")
@click.version_option(package_name="depthsearch")
def main(verbose: bool) -> None:
    """Search the depth and width of stacked-LSTM models with Optuna."""
    _setup_logging(verbose)


class _Terminal:
    """Lines, and under them one live line redrawn in place (tqdm) when stderr is a terminal.

    Log records go through it too (:class:`_LogHandler`), so a line never lands inside the
    live one. Thread-safe: launch's relay threads write through it.
    """

    def __init__(self) -> None:
        from tqdm import tqdm

        self._tqdm = tqdm
        self._bar: Any = None
        self._lock = threading.Lock()

    @property
    def live_wanted(self) -> bool:
        return sys.stderr.isatty()

    def line(self, text: str, *, worker: bool = False) -> None:
        """One line above the live one: a worker's (stderr) or ours (stdout)."""
        with self._lock:
            self._tqdm.write(text, file=sys.stderr if worker else sys.stdout)

    def live(self, text: str) -> None:
        if not self.live_wanted:
            return
        with self._lock:
            if self._bar is None:
                # The terminal's size, or 80 x 24 where it says none (a pty nobody sized):
                # tqdm draws nothing on a terminal of no rows.
                size = shutil.get_terminal_size((80, 24))
                self._bar = self._tqdm(
                    file=sys.stderr,
                    bar_format="{desc}",
                    leave=False,
                    ncols=size.columns,
                    nrows=max(size.lines, 2),
                )
            self._bar.set_description_str(text)

    def close(self) -> None:
        with self._lock:
            if self._bar is not None:
                self._bar.close()
                self._bar = None


_TERMINAL = _Terminal()


class _LogHandler(logging.Handler):
    """Log records to stderr, above the live line."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:
            self.handleError(record)
            return
        _TERMINAL.line(text, worker=True)


class _Progress:
    """Inside a trial: its epoch, validation loss and time left (at the epochs' pace so far,
    to ``max_epochs``; early stopping may end it sooner). The live line on a terminal;
    elsewhere (a log file, a job's output) one line at most every :attr:`EVERY_S` seconds, so
    that a trial of minutes is never silent."""

    EVERY_S = 30.0

    def __init__(self, max_epochs: int) -> None:
        self.max_epochs = max_epochs
        self._trial: int | None = None
        self._seconds = 0.0
        self._said = time.monotonic()

    def epoch(self, trial: int, result: Any) -> None:
        from depthsearch.search.trials import metrics_text

        if trial != self._trial:
            self._trial, self._seconds = trial, 0.0
        self._seconds += result.seconds
        pace = self._seconds / max(1, result.epoch)
        left = max(0, self.max_epochs - result.epoch) * pace
        text = (
            f"trial {trial} epoch {result.epoch}/{self.max_epochs} "
            f"val_loss={result.val_loss:.5g}{metrics_text(result.metrics)}, "
            f"{pace:.2g} s/epoch, at most {_duration(left)} left"
        )
        if _TERMINAL.live_wanted:
            _TERMINAL.live("  " + text)
        elif time.monotonic() - self._said >= self.EVERY_S:
            self._said = time.monotonic()
            _log.info("%s", text)
        else:
            _log.debug("%s", text)

    def clear(self) -> None:
        _TERMINAL.close()


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
