"""Small helpers for the text depthsearch shows and writes (no imports: any layer may use
them)."""

from __future__ import annotations

import json
import math
import re
import urllib.parse
from typing import Any

__all__ = [
    "counted",
    "finite",
    "json_text",
    "mask_uri",
    "public_uri",
    "spreadsheet_cells",
    "spreadsheet_safe",
]

#: Query parameters whose values are secrets (a token, a password, a signature).
_SECRET = re.compile("pass|secret|token|key|signature|auth", re.IGNORECASE)

#: What a spreadsheet runs when a text cell starts with it (OWASP's CSV injection list).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``1 trial``, ``2 trials``, ``0 trials`` (``plural`` where adding an s is wrong)."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def finite(value: Any) -> Any:
    """``value`` with every NaN or infinite float (in dicts, lists and tuples) as None: what
    JSON can say of a number that is none."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def json_text(doc: Any, *, indent: int | None = 2) -> str:
    """``doc`` as strict JSON (RFC 8259: no NaN or Infinity; those become null)."""
    return json.dumps(finite(doc), indent=indent, allow_nan=False)


def spreadsheet_safe(text: str) -> str:
    """A text cell that a spreadsheet would run as a formula, quoted with a leading ``'``."""
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def spreadsheet_cells(frame: Any) -> Any:
    """A copy of a pandas frame whose text cells are :func:`spreadsheet_safe`:
    what depthsearch writes as CSV. Numbers are left as they are."""
    out = frame.copy()
    for column in out.columns:
        if out[column].map(lambda v: isinstance(v, str)).any():
            out[column] = out[column].map(
                lambda v: spreadsheet_safe(v) if isinstance(v, str) else v
            )
    return out


def _uri_parts(uri: str, replace: str | None) -> str:
    """``uri`` with its password and secret query values replaced by ``replace`` (None:
    removed, with the user name)."""
    try:
        parts = urllib.parse.urlsplit(uri)
    except ValueError:
        return "<an unreadable URI>"
    netloc = parts.netloc
    if "@" in netloc:
        user, host = netloc.rsplit("@", 1)
        if replace is None:
            netloc = host
        elif ":" in user:
            netloc = f"{user.split(':', 1)[0]}:{replace}@{host}"
    query = [
        (k, v if not _SECRET.search(k) else replace or "")
        for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        if replace is not None or not _SECRET.search(k)
    ]
    return urllib.parse.urlunsplit(
        parts._replace(netloc=netloc, query=urllib.parse.urlencode(query, safe="*"))
    )


def mask_uri(uri: str) -> str:
    """A server's URI as logs show it: ``http://user:***@host:5000`` (secret query values
    as ``***`` too)."""
    return _uri_parts(uri, "***")


def public_uri(uri: str) -> str:
    """A server's URI as a study stores it: without credentials or secret query values
    (workers give theirs in the environment, as MLflow's ``MLFLOW_TRACKING_USERNAME`` and
    ``MLFLOW_TRACKING_PASSWORD``)."""
    return _uri_parts(uri, None)
