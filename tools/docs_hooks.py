"""MkDocs hooks (mkdocs.yml ``hooks:``): pages made from the code when the site is built.

``study-file.md`` is replaced by :func:`depthsearch.spec.reference_markdown`, made from the
loader's own rules, so the reference cannot drift from what the loader accepts;
``changelog.md`` is the repository's ``CHANGELOG.md``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    if page.file.src_uri == "study-file.md":
        from depthsearch.spec import reference_markdown

        return reference_markdown()
    if page.file.src_uri == "changelog.md":
        return (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    return markdown
