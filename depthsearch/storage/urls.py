"""Storage URLs: which one (flag > environment > default), parsing, masking, dialects."""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from depthsearch.errors import StorageError

__all__ = [
    "DEFAULT_STORAGE",
    "ENV_VAR",
    "check_supported",
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
        StorageError: ``url`` is not a URL SQLAlchemy can read.
    """
    try:
        return make_url(url)
    except (ArgumentError, ValueError) as e:
        raise StorageError(
            f"cannot parse storage URL {_mask_text(url)!r}: expected e.g. "
            "'sqlite:///depthsearch.db' or 'postgresql+psycopg://user:password@host:5432/db'"
        ) from e


def _mask_text(url: str) -> str:
    # For strings that do not even parse: hide whatever sits between "://user:" and "@".
    if "://" in url and "@" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        if ":" in creds:
            creds = creds.split(":", 1)[0] + ":***"
        return f"{scheme}://{creds}@{host}"
    return url


def mask_url(url: str) -> str:
    """The URL with its password replaced by ``***`` (``postgresql://user:***@host/db``)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return _mask_text(url)


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


def describe(e: BaseException) -> str:
    """The first line of a database error (the driver's own message where there is one)."""
    text = str(getattr(e, "orig", None) or e).strip().splitlines()
    return text[0] if text else type(e).__name__
