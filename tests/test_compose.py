"""docker-compose.yml, checked by parsing (no Docker engine runs here)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import REPO


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc = yaml.safe_load((REPO / "docker-compose.yml").read_text(encoding="utf-8"))
    assert isinstance(doc, dict)
    return doc


def test_services_and_volume(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"postgres", "create", "worker", "dashboard"}
    assert "pgdata" in compose["volumes"]
    assert "pgdata:/var/lib/postgresql/data" in compose["services"]["postgres"]["volumes"]


def test_postgres_is_healthchecked_private_and_keeps_its_password_out(
    compose: dict[str, Any],
) -> None:
    pg = compose["services"]["postgres"]
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])
    assert pg["ports"] == ["127.0.0.1:5432:5432"]
    assert pg["env_file"] == ".env"
    assert "POSTGRES_PASSWORD" not in pg.get("environment", {})
    ignored = (REPO / ".gitignore").read_text().splitlines()
    assert ".env" in ignored and not (REPO / ".env").exists()
    assert "POSTGRES_PASSWORD" in (REPO / ".env.example").read_text()


def test_order_create_after_healthy_postgres_then_workers_and_dashboard(
    compose: dict[str, Any],
) -> None:
    s = compose["services"]
    assert s["create"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert s["create"]["command"][0] == "create" and s["create"]["restart"] == "no"
    for name in ("worker", "dashboard"):
        assert s[name]["depends_on"]["create"]["condition"] == "service_completed_successfully"
    for name in ("create", "worker", "dashboard"):
        url = s[name]["environment"]["DEPTHSEARCH_STORAGE"]
        assert url.startswith(
            "postgresql+psycopg://depthsearch:${POSTGRES_PASSWORD"
        ) and url.endswith("@postgres:5432/depthsearch")


def test_workers_reserve_a_gpu_and_scale(compose: dict[str, Any]) -> None:
    w = compose["services"]["worker"]
    assert w["command"][:2] == ["worker", "--study"]
    devices = w["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"] and devices[0]["count"] == 1
    # Scaling with --scale worker=N needs no fixed name or host port.
    assert "container_name" not in w and "ports" not in w


def test_dashboard_on_localhost_8080(compose: dict[str, Any]) -> None:
    d = compose["services"]["dashboard"]
    assert d["command"][0] == "dashboard" and d["ports"] == ["127.0.0.1:8080:8080"]


def test_every_service_command_is_a_real_subcommand(compose: dict[str, Any]) -> None:
    from depthsearch.cli import main

    for name, service in compose["services"].items():
        if "command" in service and name != "postgres":
            assert service["command"][0] in main.commands, name


def _compose_command() -> list[str] | None:
    """``docker compose`` (the v2 plugin) where it is installed, else Debian's
    ``docker-compose`` (1.29, which ``make test`` installs): both validate a file against
    the Compose schema without a Docker engine."""
    docker = shutil.which("docker")
    if docker is not None:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True)
        if probe.returncode == 0:
            return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy is not None else None


def test_docker_compose_config_accepts_the_file(tmp_path: Path) -> None:
    command = _compose_command()
    if command is None:
        message = "neither docker compose nor docker-compose is installed (make test installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    # Beside its own .env, as a user's copy is (the repository has none).
    copy = tmp_path / "docker-compose.yml"
    (tmp_path / ".env").write_text("POSTGRES_PASSWORD=test\n")

    def config() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*command, "-f", str(copy), "config", "--quiet"],
            capture_output=True,
            text=True,
            cwd=tmp_path,
        )

    shutil.copy(REPO / "docker-compose.yml", copy)
    proc = config()
    assert proc.returncode == 0, proc.stderr
    # And it refuses a file it should refuse: the check is real.
    copy.write_text("services:\n  w:\n    restart: sometimes\n")
    assert config().returncode != 0
