"""Small helpers for the text depthsearch shows (no imports: any layer may use them)."""

from __future__ import annotations

__all__ = ["counted"]


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``1 trial``, ``2 trials``, ``0 trials`` (``plural`` where adding an s is wrong)."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"
