"""The ``depthsearch`` command: parse, call one library function, print, exit.

Exit codes: 0 success; 2 bad input (study file, value, column, URL, study name) or an
unreachable database (:class:`~depthsearch.errors.InputError`); 1 a failure while running
(:class:`~depthsearch.errors.RuntimeFailure`, or anything unexpected); 128 + signal number
when interrupted. One module per group of commands, each registered on :data:`main`.
"""

from depthsearch.cli import _answer, _launch, _results, _train  # noqa: F401  (registers them)
from depthsearch.cli._base import _user_errors, main

__all__ = ["_user_errors", "main"]
