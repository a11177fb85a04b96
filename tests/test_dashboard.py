"""The real optuna-dashboard over a depthsearch study: its HTTP API, and the page in Chromium."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner

from depthsearch.cli import main

from .conftest import REPO, depthsearch_cmd, pareto_study, write_study

SCREENSHOT_DIR = Path(
    os.environ.get("DEPTHSEARCH_SCREENSHOTS", REPO / ".pytest_cache" / "screenshots")
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str, headers: dict[str, str] | None = None, method: str = "GET") -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    folder = tmp_path_factory.mktemp("dash")
    url = f"sqlite:///{folder / 'study.db'}"
    study_file = write_study(folder, name="dash-study", n_trials=5, max_epochs=3)
    assert CliRunner().invoke(main, ["run", str(study_file), "--storage", url]).exit_code == 0
    pareto_file = pareto_study(folder, "dash-pareto", n_trials=6)
    assert CliRunner().invoke(main, ["run", str(pareto_file), "--storage", url]).exit_code == 0
    proc, base = start_dashboard(url)
    yield base, url
    proc.terminate()
    proc.wait(timeout=10)


def start_dashboard(url: str, *options: str) -> tuple[subprocess.Popen[str], str]:
    """``depthsearch dashboard`` on a free port, once it answers; (process, base URL)."""
    port = free_port()
    command = [sys.executable, "-m", "depthsearch", "dashboard", "--storage", url]
    proc = subprocess.Popen(
        [*command, "--port", str(port), *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if get(base + "/api/studies")[0] == 200:
                return proc, base
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"dashboard did not answer: {proc.communicate()}")


def test_api_lists_the_study_and_its_learning_curves(served: tuple[str, str]) -> None:
    base, _ = served
    status, body = get(base + "/api/studies")
    assert status == 200
    studies = json.loads(body)["study_summaries"]
    study = next(s for s in studies if s["study_name"] == "dash-study")
    attrs = {a["key"]: a["value"] for a in study["user_attrs"]}
    assert "stacked LSTM" in attrs["summary"]
    status, body = get(f"{base}/api/studies/{study['study_id']}")
    assert status == 200
    detail = json.loads(body)
    trials = detail["trials"]
    assert len(trials) == 5
    assert all(t["intermediate_values"] for t in trials)
    assert {a["key"] for a in trials[0]["user_attrs"]} >= {
        "param_count",
        "seconds_per_epoch",
        "device",
    }


def study_id(base: str, name: str) -> int:
    studies = json.loads(get(base + "/api/studies")[1])["study_summaries"]
    return int(next(s["study_id"] for s in studies if s["study_name"] == name))


def test_api_serves_the_pareto_front_of_a_two_objective_study(served: tuple[str, str]) -> None:
    base, url = served
    status, body = get(f"{base}/api/studies/{study_id(base, 'dash-pareto')}")
    assert status == 200
    detail = json.loads(body)
    assert detail["directions"] == ["minimize", "minimize"]
    assert detail["objective_names"] == ["val_loss", "param_count"]
    study = optuna.load_study(study_name="dash-pareto", storage=url)
    assert sorted(t["number"] for t in detail["best_trials"]) == sorted(
        t.number for t in study.best_trials
    )


def test_the_dashboard_refuses_writes_unless_allowed(
    served: tuple[str, str], tmp_path: Path
) -> None:
    base, url = served
    target = f"{base}/api/studies/{study_id(base, 'dash-study')}"
    for method in ("DELETE", "POST", "PUT", "PATCH"):
        status, body = get(target, method=method)
        assert status == 405 and b"--allow-writes" in body, (method, status, body)
    assert "dash-study" in optuna.get_all_study_names(url)
    assert get(target)[0] == 200
    # With --allow-writes the very request reaches optuna-dashboard, which deletes the study.
    mine = f"sqlite:///{tmp_path / 'mine.db'}"
    study_file = write_study(tmp_path, name="deletable", n_trials=1, max_epochs=1)
    assert CliRunner().invoke(main, ["run", str(study_file), "--storage", mine]).exit_code == 0
    proc, writable = start_dashboard(mine, "--allow-writes")
    try:
        status, body = get(
            f"{writable}/api/studies/{study_id(writable, 'deletable')}", method="DELETE"
        )
        assert status in (200, 204), (status, body)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert "deletable" not in optuna.get_all_study_names(mine)


def test_bundle_is_served_to_a_browser(served: tuple[str, str]) -> None:
    base, _ = served
    status, body = get(base + "/static/bundle.js", {"Accept-Encoding": "gzip"})
    assert status == 200 and len(body) > 1000


def test_taken_port_and_bad_database_are_one_line_errors(
    served: tuple[str, str], tmp_path: Path
) -> None:
    base, url = served
    port = base.rsplit(":", 1)[1]
    proc = depthsearch_cmd("dashboard", "--storage", url, "--port", port, timeout=60)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
    assert "Address already in use" in proc.stderr or "cannot serve the dashboard" in proc.stderr
    proc = depthsearch_cmd(
        "dashboard", "--storage", "postgresql+psycopg://x:pw@127.0.0.1:1/none", timeout=60
    )
    assert proc.returncode == 2 and "cannot connect" in proc.stderr and "pw@" not in proc.stderr


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("Debian's chromium must be installed in CI (.ci/run installs it)")
        pytest.skip("no chromium here: apt-get install chromium (make test does, as root)")
    return exe


def browser_flags(tmp_path: Path) -> list[str]:
    return [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=15000",
        "--window-size=1400,1000",
    ]


def render(page: str, tmp_path: Path, screenshot: str) -> str:
    """The page's DOM after its scripts ran, and a screenshot of it under SCREENSHOT_DIR."""
    exe = chromium()
    flags = browser_flags(tmp_path)
    dom = subprocess.run(
        [exe, *flags, "--dump-dom", page], capture_output=True, text=True, timeout=120
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    shot = SCREENSHOT_DIR / screenshot
    proc = subprocess.run(
        [exe, *flags, f"--screenshot={shot}", page], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and shot.read_bytes()[:4] == b"\x89PNG"
    return dom.stdout


def test_chromium_renders_the_study_page_with_its_trials(
    served: tuple[str, str], tmp_path: Path
) -> None:
    base, _ = served
    page = f"{base}/dashboard/studies/{study_id(base, 'dash-study')}/trials"
    dom = render(page, tmp_path, "dashboard-trials.png")
    assert "dash-study" in dom
    # The trial list shows each trial by number.
    assert all(f"Trial {n}" in dom for n in range(5)), dom[-3000:]


def test_chromium_renders_the_pareto_front(served: tuple[str, str], tmp_path: Path) -> None:
    base, _ = served
    dom = render(
        f"{base}/dashboard/studies/{study_id(base, 'dash-pareto')}", tmp_path, "pareto.png"
    )
    assert "dash-pareto" in dom and "Pareto Front" in dom, dom[-3000:]
    assert "val_loss" in dom and "param_count" in dom
