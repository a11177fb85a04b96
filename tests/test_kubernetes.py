"""deploy/kubernetes, rendered with ``kubectl kustomize`` and checked object by object.

No cluster runs here: what is checked is what the API server would be handed (kinds, fields,
references between objects, the image, the GPU limit, where the password goes), not how a
cluster runs it.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from depthsearch.cli import main
from depthsearch.spec import WorkersSpec

from .conftest import REPO

DEPLOY = REPO / "deploy" / "kubernetes"
PASSWORD = "k8s" + uuid.uuid4().hex
ROOT_URL = f"postgresql+psycopg://depthsearch:{PASSWORD}@depthsearch-postgres:5432/depthsearch"
EXTERNAL_URL = f"postgresql+psycopg://lab:{PASSWORD}@pgbouncer.example.com:6432/studies"

Doc = dict[str, Any]


def _kubectl() -> str:
    exe = shutil.which("kubectl")
    if exe is None:
        message = "kubectl is not installed (it renders deploy/kubernetes)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return exe


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of deploy/kubernetes with the storage.env files a user writes."""
    copy = tmp_path_factory.mktemp("k8s") / "kubernetes"
    shutil.copytree(DEPLOY, copy, ignore=shutil.ignore_patterns("storage.env"))
    (copy / "storage.env").write_text(f"postgres-password={PASSWORD}\nurl={ROOT_URL}\n")
    (copy / "overlays" / "external-db" / "storage.env").write_text(f"url={EXTERNAL_URL}\n")
    return copy


def _render(folder: Path) -> tuple[str, list[Doc]]:
    proc = subprocess.run(
        [_kubectl(), "kustomize", str(folder)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout, [d for d in yaml.safe_load_all(proc.stdout) if d]


@pytest.fixture(scope="module")
def root(tree: Path) -> tuple[str, list[Doc]]:
    return _render(tree)


@pytest.fixture(scope="module")
def external(tree: Path) -> tuple[str, list[Doc]]:
    return _render(tree / "overlays" / "external-db")


def _one(docs: list[Doc], kind: str, name: str) -> Doc:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].startswith(name)]
    assert len(found) == 1, (kind, name, [d["metadata"]["name"] for d in docs])
    return found[0]


def _pod_specs(docs: list[Doc]) -> Iterator[tuple[Doc, Doc]]:
    for d in docs:
        if d["kind"] in ("Job", "Deployment", "StatefulSet"):
            yield d, d["spec"]["template"]["spec"]


def _containers(pod: Doc) -> list[Doc]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def _secret_keys(doc: Doc) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in doc.get("data", {}).items()}


def test_the_root_renders_every_part_in_one_namespace(root: tuple[str, list[Doc]]) -> None:
    _, docs = root
    kinds = sorted((d["kind"], re.sub(r"-[a-z0-9]{10}$", "", d["metadata"]["name"])) for d in docs)
    assert kinds == [
        ("ConfigMap", "depthsearch-study"),
        ("Deployment", "depthsearch-dashboard"),
        ("Job", "depthsearch-create"),
        ("Job", "depthsearch-workers"),
        ("Namespace", "depthsearch"),
        ("Secret", "depthsearch-storage"),
        ("Service", "depthsearch-dashboard"),
        ("Service", "depthsearch-postgres"),
        ("StatefulSet", "depthsearch-postgres"),
    ]
    for d in docs:
        if d["kind"] != "Namespace":
            assert d["metadata"]["namespace"] == "depthsearch", d["metadata"]


@pytest.mark.parametrize("which", ["root", "external"])
def test_every_reference_resolves_to_a_rendered_object_and_key(
    which: str, request: pytest.FixtureRequest
) -> None:
    _, docs = request.getfixturevalue(which)
    secrets = {d["metadata"]["name"]: _secret_keys(d) for d in docs if d["kind"] == "Secret"}
    maps = {d["metadata"]["name"]: d["data"] for d in docs if d["kind"] == "ConfigMap"}
    checked = 0
    for owner, pod in _pod_specs(docs):
        for c in _containers(pod):
            defined: set[str] = set()
            for source in c.get("envFrom", []):
                name = source["configMapRef"]["name"]
                assert name in maps, (owner["metadata"]["name"], name)
                defined |= set(maps[name])
            for env in c.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref is not None:
                    assert ref["name"] in secrets, ref
                    assert ref["key"] in secrets[ref["name"]], ref
                    checked += 1
                defined.add(env["name"])
            # $(VAR) in args is expanded by the kubelet from the container's own variables.
            for arg in c.get("args", []):
                for var in re.findall(r"\$\((\w+)\)", arg):
                    assert var in defined, (c["name"], var)
            for arg in c.get("args", []):
                for var in re.findall(r"\$\{?(\w+)", arg):
                    assert var in defined, (c["name"], var)
    assert checked >= 4


@pytest.mark.parametrize("which", ["root", "external"])
def test_the_url_and_password_reach_the_pods_only_through_the_secret(
    which: str, request: pytest.FixtureRequest
) -> None:
    text, docs = request.getfixturevalue(which)
    assert PASSWORD not in text  # the Secret holds it base64-encoded; nothing holds it plain
    secret = _one(docs, "Secret", "depthsearch-storage")
    assert _secret_keys(secret)["url"] == (ROOT_URL if which == "root" else EXTERNAL_URL)
    for _, pod in _pod_specs(docs):
        for c in _containers(pod):
            for env in c.get("env", []):
                if env["name"] in ("DEPTHSEARCH_STORAGE", "POSTGRES_PASSWORD"):
                    assert "value" not in env and "secretKeyRef" in env["valueFrom"], env
                assert "://" not in str(env.get("value", "")), env
            assert not any("://" in a for a in c.get("args", []) + c.get("command", []))
    # Nothing committed holds a password: the examples hold a placeholder, storage.env is
    # ignored by git.
    committed = subprocess.run(
        ["git", "ls-files", str(DEPLOY.relative_to(REPO))],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert not [f for f in committed if f.endswith("/storage.env")], committed
    for f in committed:
        for line in (REPO / f).read_text().splitlines():
            m = re.search(r"://[^:/@\s]+:([^@\s]+)@", line)
            assert m is None or m[1] == "CHANGE_ME", (f, line)


def test_without_storage_env_the_render_says_what_is_missing(tmp_path: Path) -> None:
    copy = tmp_path / "kubernetes"
    shutil.copytree(DEPLOY, copy, ignore=shutil.ignore_patterns("storage.env"))
    proc = subprocess.run(
        [_kubectl(), "kustomize", str(copy)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode != 0 and "storage.env" in proc.stderr


@pytest.mark.parametrize(
    ("which", "image", "pods"),
    [
        ("root", "depthsearch:latest", 4),
        ("external", "registry.example.com/ml/depthsearch:0.1", 16),
    ],
)
def test_workers_are_an_indexed_job_of_gpu_pods_that_stop_in_their_grace_period(
    which: str, image: str, pods: int, request: pytest.FixtureRequest
) -> None:
    _, docs = request.getfixturevalue(which)
    job = _one(docs, "Job", "depthsearch-workers")
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["parallelism"] == spec["completions"] == pods
    assert spec["backoffLimitPerIndex"] >= 1
    # Eviction and preemption restart a pod without spending its index's retries.
    rule = spec["podFailurePolicy"]["rules"][0]
    assert rule["action"] == "Ignore" and rule["onPodConditions"] == [{"type": "DisruptionTarget"}]
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"  # podFailurePolicy requires it
    # A stopping worker may ride out a database outage of up to [workers] db_wait first.
    assert pod["terminationGracePeriodSeconds"] > WorkersSpec().db_wait
    (worker,) = pod["containers"]
    assert worker["args"][:2] == ["launch", "--study"] and "--per-gpu" in worker["args"]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert worker["image"] == image
    (wait,) = pod["initContainers"]
    assert "depthsearch status --study" in wait["args"][0] and wait["image"] == image
    assert pod["securityContext"]["runAsNonRoot"] is True


@pytest.mark.parametrize("which", ["root", "external"])
def test_every_depthsearch_container_runs_the_one_image_and_a_real_command(
    which: str, request: pytest.FixtureRequest
) -> None:
    _, docs = request.getfixturevalue(which)
    images = set()
    for _, pod in _pod_specs(docs):
        for c in _containers(pod):
            if c["name"] == "postgres":
                assert c["image"] == "postgres:16"
                continue
            images.add(c["image"])
            if "command" not in c:  # the image's entrypoint is `depthsearch`
                assert c["args"][0] in main.commands, c["args"]
    assert len(images) == 1
    dockerfile = (REPO / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["depthsearch"]' in dockerfile and "USER 10001" in dockerfile
    for _, pod in _pod_specs(docs):
        if "securityContext" in pod:
            assert pod["securityContext"]["runAsUser"] == 10001


def test_the_create_job_makes_the_study_the_workers_join(root: tuple[str, list[Doc]]) -> None:
    _, docs = root
    study = _one(docs, "ConfigMap", "depthsearch-study")["data"]
    create = _one(docs, "Job", "depthsearch-create")["spec"]["template"]["spec"]
    assert create["containers"][0]["args"] == ["create", "$(STUDY_FILE)"]
    assert create["restartPolicy"] == "OnFailure"  # retried while the database starts
    # The image holds the repository's studies/ folder (Dockerfile: COPY studies).
    assert "COPY studies ./studies" in (REPO / "Dockerfile").read_text()
    from depthsearch.spec import load_spec

    assert load_spec(REPO / study["STUDY_FILE"]).name == study["STUDY_NAME"]


def test_the_dashboard_is_a_deployment_behind_a_cluster_ip_service(
    root: tuple[str, list[Doc]],
) -> None:
    _, docs = root
    deploy = _one(docs, "Deployment", "depthsearch-dashboard")
    service = _one(docs, "Service", "depthsearch-dashboard")
    labels = deploy["spec"]["template"]["metadata"]["labels"]
    assert deploy["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["selector"].items() <= labels.items()
    (c,) = deploy["spec"]["template"]["spec"]["containers"]
    assert c["args"][:3] == ["dashboard", "--host", "0.0.0.0"]
    port = int(c["args"][c["args"].index("--port") + 1])
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports[service["spec"]["ports"][0]["targetPort"]] == port
    assert c["readinessProbe"]["httpGet"]["port"] in ports


def test_postgres_is_a_statefulset_with_a_claim_and_the_url_points_at_it(
    root: tuple[str, list[Doc]],
) -> None:
    from sqlalchemy.engine import make_url

    _, docs = root
    sts = _one(docs, "StatefulSet", "depthsearch-postgres")
    service = _one(docs, "Service", "depthsearch-postgres")
    assert sts["spec"]["serviceName"] == service["metadata"]["name"]
    labels = sts["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"]
    (c,) = sts["spec"]["template"]["spec"]["containers"]
    assert [m["name"] for m in c["volumeMounts"]] == [claim["metadata"]["name"]]
    env = {e["name"]: e for e in c["env"]}
    assert env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == "postgres-password"
    url = make_url(_secret_keys(_one(docs, "Secret", "depthsearch-storage"))["url"])
    assert url.host == service["metadata"]["name"]
    assert url.port == service["spec"]["ports"][0]["port"]
    assert url.username == env["POSTGRES_USER"]["value"]
    assert url.database == env["POSTGRES_DB"]["value"]
    assert c["readinessProbe"]["exec"]["command"][0] == "pg_isready"


def test_the_external_db_overlay_has_no_database_of_its_own(
    external: tuple[str, list[Doc]],
) -> None:
    _, docs = external
    assert not [d for d in docs if d["kind"] == "StatefulSet"]
    assert not [d for d in docs if d["metadata"]["name"] == "depthsearch-postgres"]
    assert set(_secret_keys(_one(docs, "Secret", "depthsearch-storage"))) == {"url"}
    for d in docs:
        if d["kind"] != "Namespace":
            assert d["metadata"]["namespace"] == "depthsearch-studies"
