"""Storage URLs: which one (flag > environment > default), parsing, masking, dialects."""

from __future__ import annotations

import os
import re
from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from depthsearch.errors import StorageError

__all__ = [
    "DEFAULT_STORAGE",
    "ENV_VAR",
    "check_supported",
    "check_url",
    "describe",
    "dialect",
    "dialect_of",
    "mask_url",
    "parse",
    "resolve_storage",
    "sqlite_file",
]

DEFAULT_STORAGE = "sqlite:///depthsearch.db"
ENV_VAR = "DEPTHSEARCH_STORAGE"


def resolve_storage(cli_value: str | None) -> str:
    """``--storage`` > ``$DEPTHSEARCH_STORAGE`` > ``sqlite:///depthsearch.db``."""
    if cli_value:
        return cli_value
    return os.environ.get(ENV_VAR) or DEFAULT_STORAGE


def parse(url: str) -> URL:
    """The parsed URL.

    Raises:
        StorageError: ``url`` is not a URL SQLAlchemy can read, or its user or password holds
            a raw ``@`` (SQLAlchemy would take what follows for the host).
    """
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as e:
        raise StorageError(
            f"cannot parse storage URL {_mask_text(url)!r}: expected e.g. "
            "'sqlite:///depthsearch.db' or 'postgresql+psycopg://user:password@host:5432/db'"
        ) from e
    if _raw_at(parsed):
        raise StorageError(
            f"storage URL {_mask_text(url)!r}: its user or password holds a raw '@'; "
            "percent-encode it as %40 (Python: urllib.parse.quote(password, safe=''))"
        )
    return parsed


#: Query parameters whose values are masked (libpq's password, sslpassword, ...).
_SECRET_WORDS = "pass|secret|token"
_SECRET = re.compile(_SECRET_WORDS, re.IGNORECASE)
_MASK = "***"


def _raw_at(parsed: URL) -> bool:
    """Whether a raw ``@`` in the user info made SQLAlchemy read part of it as the host."""
    return parsed.host is not None and "@" in parsed.host


def _mask_text(url: str) -> str:
    # For strings SQLAlchemy cannot read as meant: hide everything between "://user:" and the
    # last "@" (a raw "@" in a password included), and every secret query value.
    if "://" in url and "@" in url:
        scheme, rest = url.split("://", 1)
        path_at = rest.find("/")
        userinfo_end = rest.rfind("@", 0, path_at if path_at >= 0 else len(rest))
        if userinfo_end >= 0:
            creds, host = rest[:userinfo_end], rest[userinfo_end + 1 :]
            if ":" in creds:
                creds = creds.split(":", 1)[0] + ":" + _MASK
            url = f"{scheme}://{creds}@{host}"
    return re.sub(
        rf"([?&][^=&#]*(?:{_SECRET_WORDS})[^=&#]*=)[^&#]*", rf"\g<1>{_MASK}", url, flags=re.I
    )


def mask_url(url: str) -> str:
    """The URL with its password replaced by ``***`` (``postgresql://user:***@host/db``), in
    every form SQLAlchemy reads: in the user info (percent-encoded or not), and as a query
    parameter (``?password=...``, ``sslpassword``, ...)."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return _mask_text(url)
    if _raw_at(parsed):  # not what the user meant: mask as text
        return _mask_text(url)
    placeholder = "DEPTHSEARCHMASKED"
    query = {k: (placeholder if _SECRET.search(k) else v) for k, v in parsed.query.items()}
    rendered = parsed.set(query=query).render_as_string(hide_password=True)
    return rendered.replace(placeholder, _MASK)


def dialect(url: URL) -> str:
    """``sqlite``, ``postgresql``, ``mysql``, ... of a parsed URL."""
    return url.get_backend_name()


def dialect_of(url: str) -> str:
    """``sqlite``, ``postgresql``, ``mysql``, ... of a storage URL."""
    return dialect(parse(url))


def sqlite_file(url: str) -> Path | None:
    """The database file of a SQLite URL (absolute); None for other URLs and ``:memory:``."""
    parsed = parse(url)
    if dialect(parsed) != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database).expanduser().resolve()


def check_supported(url: URL, raw: str) -> None:
    """Raises :class:`StorageError` for a database depthsearch cannot share between workers."""
    kind = dialect(url)
    if kind not in ("sqlite", "postgresql", "mysql"):
        raise StorageError(
            f"unsupported storage {mask_url(raw)!r}: use sqlite:///FILE or "
            "postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB"
        )
    if kind == "sqlite" and url.database in (None, "", ":memory:"):
        raise StorageError(
            f"cannot use {raw!r}: an in-memory SQLite database lives and dies with "
            "one connection, so workers could not share it; use a file, e.g. "
            "sqlite:///depthsearch.db"
        )
    if kind == "sqlite" and url.database:
        parent = Path(url.database).expanduser().resolve().parent
        if not parent.is_dir():
            raise StorageError(
                f"cannot open storage {mask_url(raw)!r}: the folder {parent} does not exist"
            )


def check_url(url: str) -> str:
    """``url``, once it parses and names a database depthsearch can share (else StorageError):
    the check a command makes before anything slow."""
    check_supported(parse(url), url)
    return url


def describe(e: BaseException) -> str:
    """The first line of a database error: the driver's own message where there is one,
    found through the exceptions a wrapper raised it from (Optuna's "invalid data in the
    commit" wraps a lost connection)."""
    inner: BaseException = e
    while getattr(inner, "orig", None) is None and inner.__cause__ is not None:
        inner = inner.__cause__
    text = str(getattr(inner, "orig", None) or inner).strip().splitlines()
    return text[0] if text else type(e).__name__
