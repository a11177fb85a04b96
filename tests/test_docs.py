"""The docs site: built strict, every internal link and anchor resolving, rendered in a real
Chromium (home, reference, search), and every command and Python block of the getting-started
page and the tutorials run as written, so an example that stops working fails the build."""

from __future__ import annotations

import functools
import html.parser
import http.server
import json
import os
import re
import subprocess
import sys
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from depthsearch.spec import reference

from .conftest import REPO
from .test_dashboard import browser_flags, chromium

DOCS = REPO / "docs"
#: The pages whose code blocks run in CI, top to bottom, each in a fresh folder.
RUN_PAGES = ["getting-started.md", *sorted(p.name for p in (DOCS / "tutorials").glob("*.md"))]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


class _Links(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name == "id" and value:
                self.ids.add(value)
            if name in ("href", "src") and value and tag in ("a", "img", "link", "script"):
                self.hrefs.append(value)


@functools.cache
def _parsed(path: Path) -> _Links:
    links = _Links()
    links.feed(path.read_text(encoding="utf-8"))
    return links


def _target(site: Path, page: Path, href: str) -> tuple[Path, str] | None:
    """The file and fragment an internal link points to (None for an external one)."""
    parts = urllib.parse.urlsplit(href)
    if parts.scheme or parts.netloc or href.startswith(("mailto:", "javascript:")):
        return None
    path = urllib.parse.unquote(parts.path)
    if path.startswith("/"):  # 404.html's links, from the site's root
        target = site / path.lstrip("/")
    else:
        target = page if not path else (page.parent / path).resolve()
    if target.is_dir() or path.endswith("/"):
        target = target / "index.html"
    return target, parts.fragment


def test_every_internal_link_and_anchor_of_the_site_resolves(site: Path) -> None:
    pages = sorted(site.rglob("*.html"))
    assert len(pages) > 10
    broken = []
    for page in pages:
        for href in _parsed(page).hrefs:
            found = _target(site, page, href)
            if found is None:
                continue
            target, fragment = found
            if not target.exists():
                broken.append(f"{page.relative_to(site)}: {href} (no file)")
            elif fragment and target.suffix == ".html" and fragment not in _parsed(target).ids:
                broken.append(f"{page.relative_to(site)}: {href} (no anchor)")
    assert not broken, "\n".join(broken)


def test_the_reference_pages_hold_every_key_and_every_command(site: Path) -> None:
    text = (site / "study-file" / "index.html").read_text(encoding="utf-8")
    missing = [
        f"[{k.table}] {k.name}" for k in reference() if f"<code>{k.name}</code>" not in text
    ]
    assert not missing, missing
    from depthsearch.cli import main

    cli = (site / "cli" / "index.html").read_text(encoding="utf-8")
    assert all(f"depthsearch {name}" in cli for name in main.commands), sorted(main.commands)


@pytest.fixture(scope="module")
def served(site: Path) -> Iterator[str]:
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _dom(url: str, tmp_path: Path) -> str:
    proc = subprocess.run(
        [chromium(), *browser_flags(tmp_path), "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.mark.slow
def test_chromium_renders_the_home_page_the_reference_and_search(
    served: str, site: Path, tmp_path: Path
) -> None:
    home = _dom(f"{served}/", tmp_path)
    assert "How many layers, how wide?" in home and 'class="md-search__input"' in home
    ref = _dom(f"{served}/study-file/", tmp_path)
    assert "Study-file reference" in ref and "<code>n_trials</code>" in ref
    # The search box: rendered on every page, over an index of every page (the reference's
    # keys and the operations guide included) that the site's search worker loads.
    assert 'class="md-search__input"' in ref and 'placeholder="Search"' in ref
    index = json.loads((site / "search" / "search_index.json").read_text(encoding="utf-8"))
    where = {d["location"].split("#")[0] for d in index["docs"] if "PgBouncer" in d["text"]}
    assert "operations/" in where
    keys = [d["text"] for d in index["docs"] if d["location"].startswith("study-file/")]
    assert any("n_trials" in text for text in keys)


_FENCE = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```$", re.M | re.S)


def _blocks(page: Path) -> list[tuple[str, str, str]]:
    """(language, info after it, body) of each fenced block, in the page's order."""
    return [(m[1], m[2].strip(), m[3]) for m in _FENCE.finditer(page.read_text("utf-8"))]


@pytest.mark.slow
@pytest.mark.parametrize("name", RUN_PAGES)
def test_the_pages_commands_and_python_run_as_written(name: str, tmp_path: Path) -> None:
    page = DOCS / name if (DOCS / name).exists() else DOCS / "tutorials" / name
    (tmp_path / "studies").symlink_to(REPO / "studies")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEPTHSEARCH_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    ran = 0
    for lang, info, body in _blocks(page):
        if lang == "toml" and (title := re.search(r'title="([^"]+)"', info)):
            (tmp_path / title[1]).write_text(body, encoding="utf-8")
            continue
        if lang == "sh":
            cmd = ["bash", "-euo", "pipefail", "-c", body]
        elif lang == "python":
            cmd = [sys.executable, "-c", body]
        else:
            continue
        proc = subprocess.run(
            cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
        )
        assert proc.returncode == 0, f"{name}:\n{body}\n{proc.stdout[-2000:]}{proc.stderr[-3000:]}"
        ran += 1
    assert ran >= 2, f"{name} has no runnable block"


def test_the_readme_is_short_and_its_links_resolve() -> None:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 150
    assert text.startswith("# depthsearch\n\n```sh\nmake quickstart") and "make test" in text
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text)
    local = [link for link in links if not link.startswith(("http://", "https://"))]
    assert local and all((REPO / link).exists() for link in local), local


def test_one_version_number_named_by_the_command_and_the_changelog() -> None:
    from importlib.metadata import version

    import depthsearch

    out = subprocess.run(
        [str(Path(sys.executable).parent / "depthsearch"), "--version"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.stdout.strip() == f"depthsearch, version {depthsearch.__version__}"
    assert version("depthsearch") == depthsearch.__version__
    changelog = (REPO / "CHANGELOG.md").read_text(encoding="utf-8")
    assert f"## [{depthsearch.__version__}] - " in changelog
