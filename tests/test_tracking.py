"""Trials in a real MLflow tracking server (``mlflow server``, SQLite backend, its own artifact
folder, on a free local port): what two workers log, a server lost mid-study, a retry's link,
and the Model Registry."""

from __future__ import annotations

import contextlib
import importlib.abc
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import torch
from click.testing import CliRunner

from depthsearch import load_model
from depthsearch.cli import main
from depthsearch.tracking import Target, Tracker, TrialRecord

from .conftest import (
    Gate,
    _free_port,
    create_here,
    depthsearch_cmd,
    pareto_study,
    unique,
    write_study,
)
from .test_one_process import descendants

mlflow = pytest.importorskip("mlflow")
from mlflow.tracking import MlflowClient  # noqa: E402

# One server for the module (it takes seconds to start), on one xdist worker.
pytestmark = pytest.mark.xdist_group("mlflow")


class Server:
    """``mlflow server`` in a process group of its own; stop() and start() again keep its
    database and artifacts."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = _free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        exe = shutil.which("mlflow") or str(Path(sys.executable).parent / "mlflow")
        log = (self.folder / "server.log").open("ab")
        self.process = subprocess.Popen(
            [
                exe,
                "server",
                "--backend-store-uri",
                f"sqlite:///{self.folder / 'mlflow.db'}",
                "--artifacts-destination",
                str(self.folder / "artifacts"),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                "1",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # MLflow 3's job runner (eight consumer processes for GenAI jobs) takes ~25 s of
            # CPU to boot and polls after: the suite's other tests on this machine would pay.
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        )
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"mlflow server did not start: {(self.folder / 'server.log').read_text()}"
                )
            time.sleep(0.2)

    def ensure(self) -> Server:
        """Started again if a test stopped it."""
        if self.process is None:
            self.start()
        return self

    def stop(self) -> None:
        if self.process is None:
            return
        os.killpg(self.process.pid, signal.SIGKILL)  # uvicorn and its worker, as a crash
        self.process.wait()
        self.process = None


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # Session-wide: the group's tests may come between other modules' on their xdist worker.
    running = Server(tmp_path_factory.mktemp("mlflow"))
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def server(mlflow_server: Server) -> Server:
    return mlflow_server.ensure()


def _runs(client: MlflowClient, experiment: str) -> list:
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no experiment {experiment!r}"
    return client.search_runs([found.experiment_id], max_results=1000)


TRACKED = '\n[tracking]\nmlflow = "{uri}"\n'


def test_two_workers_log_a_run_per_trial_as_the_study_holds_it_and_the_model_registers(
    tmp_path: Path, server: Server, pg_database: str
) -> None:
    url, name = pg_database, unique("tracked")
    study_file = write_study(
        tmp_path, name=name, n_trials=5, max_epochs=3, extra=TRACKED.format(uri=server.uri)
    )
    create_here(study_file, url)
    proc = depthsearch_cmd("launch", "--study", name, "--storage", url, "--cpu-workers", "2")
    assert proc.returncode == 0, proc.stderr
    assert "is off for this worker" not in proc.stderr
    study = optuna.load_study(study_name=name, storage=url)
    trials = {t.number: t for t in study.trials}
    assert len(trials) == 5
    client = MlflowClient(server.uri)
    runs = _runs(client, name)
    parents = [r for r in runs if r.data.tags.get("depthsearch.role") == "study"]
    assert len(parents) == 1  # two workers, one study run
    parent = parents[0].info.run_id
    assert parents[0].info.status == "FINISHED"  # the workers saw the budget met
    assert study.user_attrs["mlflow_parent_run"]["run_id"] == parent
    by_trial = {
        int(r.data.tags["depthsearch.trial"]): r
        for r in runs
        if "depthsearch.trial" in r.data.tags
    }
    assert sorted(by_trial) == sorted(trials)  # one run per trial, none twice
    status = {"COMPLETE": "FINISHED", "PRUNED": "KILLED"}
    for number, trial in trials.items():
        run = by_trial[number]
        tags = run.data.tags
        assert tags["mlflow.parentRunId"] == parent
        assert run.data.params == {k: str(v) for k, v in trial.params.items()}
        history = client.get_metric_history(run.info.run_id, "val_loss")
        assert {m.step: m.value for m in history} == trial.intermediate_values
        assert len(client.get_metric_history(run.info.run_id, "train_loss")) == len(history)
        assert tags["depthsearch.state"] == trial.state.name
        assert run.info.status == status[trial.state.name]
        assert tags["seed"] == str(trial.user_attrs["seed"])
        assert int(tags["worker_pid"]) == trial.user_attrs["worker_pid"]
        if trial.state == optuna.trial.TrialState.PRUNED:
            assert tags["pruned_reason"] == trial.user_attrs["pruned_reason"]
        else:
            assert run.data.metrics["best_val_loss"] == pytest.approx(trial.value)
            assert run.data.metrics["best_val_rmse"] == pytest.approx(trial.user_attrs["val_rmse"])
    assert len({r.data.tags["worker_pid"] for r in by_trial.values()}) == 2
    # In this process (MLflow is imported already): status, then the registry.
    shown = CliRunner().invoke(main, ["status", "--study", name, "--storage", url])
    assert shown.exit_code == 0, shown.output
    want = f"tracked in MLflow at {server.uri}: experiment '{name}', study run {parent}"
    assert want in shown.output
    out = tmp_path / "best"
    args = ["export", "--study", name, "--storage", url, "--retrain", "--register", name]
    said = CliRunner().invoke(main, [*args, "-o", str(out)])
    assert said.exit_code == 0, said.output
    assert f"registered models:/{name}/1 in MLflow at {server.uri}" in said.output
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    mlflow.set_tracking_uri(server.uri)
    served = mlflow.pytorch.load_model(f"models:/{name}/1")
    ours = load_model(out)
    x = torch.randn(5, 8, ours.config.input_size)
    with torch.inference_mode():
        assert torch.allclose(served(x), ours(x), atol=1e-5)
    version = client.get_model_version(name, "1")
    assert client.get_run(version.run_id).data.tags["mlflow.parentRunId"] == parent


def test_a_multi_objective_study_is_tracked_at_each_trials_end(
    tmp_path: Path, server: Server
) -> None:
    """No epoch is reported while a multi-objective trial trains (Optuna prunes none): its run
    gets the stored curve when the trial ends."""
    from depthsearch import run_study

    name = unique("pareto")
    path = pareto_study(tmp_path, name, n_trials=2)
    path.write_text(path.read_text() + TRACKED.format(uri=server.uri))
    url = f"sqlite:///{tmp_path / 's.db'}"
    run_study(path, storage=url)
    study = optuna.load_study(study_name=name, storage=url)
    client = MlflowClient(server.uri)
    runs = {r.data.tags.get("depthsearch.trial"): r for r in _runs(client, name)}
    for trial in study.trials:
        run = runs[str(trial.number)]
        assert run.info.status == "FINISHED"
        assert run.data.params == {k: str(v) for k, v in trial.params.items()}
        history = client.get_metric_history(run.info.run_id, "val_loss")
        assert [m.value for m in sorted(history, key=lambda m: m.step)] == pytest.approx(
            trial.user_attrs["val_loss_curve"]
        )


def _record(number: int, retry_of: int | None = None, state: str = "RUNNING") -> TrialRecord:
    return TrialRecord(number, state, {"num_layers": 2}, {"seed": 7}, {}, retry_of)


def test_a_retry_links_its_predecessors_run_and_ends_it_failed(server: Server) -> None:
    records = {10: _record(0), 11: _record(1, retry_of=0)}
    stored: dict[str, dict[str, str]] = {}

    def claim(fits, create):  # type: ignore[no-untyped-def]
        if not fits(stored.get("parent")):
            stored["parent"] = create()
        return stored["parent"]

    target = Target(server.uri, unique("retry"), "retry-study", "sqlite:///x.db")
    first = Tracker(target, read_trial=records.__getitem__, claim_parent=claim)
    first.begin(10)
    first.epoch(10, 1, {"val_loss": 0.5})
    assert first.close()  # the worker died here: trial 0's run is left RUNNING
    second = Tracker(target, read_trial=records.__getitem__, claim_parent=claim)
    second.begin(11)
    records[11] = _record(1, retry_of=0, state="COMPLETE")
    second.end(11)
    assert second.close() and first.off is None and second.off is None
    client = MlflowClient(server.uri)
    runs = {r.data.tags.get("depthsearch.trial"): r for r in _runs(client, target.experiment)}
    dead, retry = runs["0"], runs["1"]
    assert retry.data.tags["depthsearch.retry_of"] == "0"
    assert retry.data.tags["depthsearch.retry_of_run"] == dead.info.run_id
    assert dead.data.tags["depthsearch.retried_by_run"] == retry.info.run_id
    assert (dead.info.status, dead.data.tags["depthsearch.state"]) == ("FAILED", "FAIL")
    assert retry.info.status == "FINISHED"


def test_a_clients_requests_search_for_no_module(server: Server) -> None:
    """MLflow's client imports Databricks' modules on every request; where they are absent,
    ``settle_probes`` (run by the tracker) makes each try fail at once instead of a search of
    ``sys.path`` (about 2 ms of CPU each)."""
    from mlflow.entities import Metric

    from depthsearch.tracking.client import _PROBED, settle_probes

    searched: list[str] = []

    class Spy(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):  # type: ignore[no-untyped-def]
            searched.append(name)

    kept = {name: sys.modules[name] for name in _PROBED if name in sys.modules}
    spy = Spy()
    try:
        settle_probes()
        client = MlflowClient(server.uri)
        experiment = client.create_experiment(unique("probes"))
        client.set_terminated(client.create_run(experiment).info.run_id)  # first-use imports
        sys.meta_path.insert(0, spy)
        run_id = client.create_run(experiment, tags={"a": "1"}).info.run_id
        client.log_batch(run_id, metrics=[Metric("val_loss", 0.5, 0, 1)])
        client.set_terminated(run_id, "KILLED")
    finally:
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(spy)
        for name in _PROBED:
            sys.modules.pop(name, None)
        sys.modules.update(kept)
    assert searched == [], searched
    assert client.get_run(run_id).info.status == "KILLED"


def test_an_unreachable_server_is_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    target = Target(f"http://127.0.0.1:{_free_port()}", "x", "x", "sqlite:///x.db")
    records = {1: _record(0, state="COMPLETE")}
    with caplog.at_level(logging.WARNING, logger="depthsearch"):
        tracker = Tracker(target, read_trial=records.__getitem__, claim_parent=lambda f, c: c())
        tracker.begin(1)
        tracker.epoch(1, 1, {"val_loss": 0.5})
        tracker.end(1)
        assert tracker.close()
    assert tracker.off is not None
    warned = [r.getMessage() for r in caplog.records if "MLflow" in r.getMessage()]
    assert len(warned) == 1 and "is off for this worker (no answer" in warned[0], warned


def _tracked_worker(
    tmp_path: Path, name: str, uri: str, *, n_trials: int = 3
) -> subprocess.Popen[str]:
    """``depthsearch run`` of a tracked study in ``tmp_path / 's.db'``."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    study_file = write_study(
        tmp_path, name=name, n_trials=n_trials, max_epochs=3, extra=TRACKED.format(uri=uri)
    )
    return subprocess.Popen(
        [
            str(Path(sys.executable).parent / "depthsearch"),
            "run",
            str(study_file),
            "--storage",
            url,
        ],
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_password_in_the_tracking_uri_is_never_shown_or_stored(
    tmp_path: Path, server: Server
) -> None:
    """`[tracking] mlflow = "http://user:pw@host:port"`: the runs are logged, and neither the
    worker's lines, the stored spec, the study's run attribute nor status shows `pw`."""
    secret = "Tr4ck3rS3cret"
    host = server.uri.removeprefix("http://")
    name = unique("masked")
    url = f"sqlite:///{tmp_path / 's.db'}"
    worker = _tracked_worker(tmp_path, name, f"http://alice:{secret}@{host}", n_trials=2)
    _, err = worker.communicate(timeout=300)
    assert worker.returncode == 0, err
    assert "logging trials to MLflow at http://alice:***@" in err, err
    study = optuna.load_study(study_name=name, storage=url)
    stored = str(study.user_attrs)
    assert secret not in stored and f"http://{host}" in stored, stored
    assert len(_runs(MlflowClient(server.uri), name)) == 3  # the study's run and two trials
    shown = depthsearch_cmd("status", "--study", name, "--storage", url)
    assert shown.returncode == 0 and secret not in shown.stdout + shown.stderr
    # A worker that cannot reach it says so, masked.
    lost = _tracked_worker(
        tmp_path, unique("lost"), f"http://alice:{secret}@127.0.0.1:{_free_port()}", n_trials=1
    )
    _, err = lost.communicate(timeout=300)
    assert lost.returncode == 0, err
    assert "is off for this worker" in err and secret not in err, err
    assert "http://alice:***@127.0.0.1" in err, err


# After every other test of the shared server: it leaves the server down (a restart costs
# about 10 s of CPU).
def test_a_server_killed_mid_study_costs_one_warning_and_no_trial(
    tmp_path: Path, server: Server, gate: Gate
) -> None:
    url, name = f"sqlite:///{tmp_path / 's.db'}", unique("lost")
    gate.hold_at(2)  # the first trial waits after its epoch 2: its run is live by then
    worker = _tracked_worker(tmp_path, name, server.uri, n_trials=4)
    try:
        gate.wait_held(1)
        client = MlflowClient(server.uri)
        # The run comes with the tracker's first flush (every FLUSH_S seconds), not at once.
        deadline = time.monotonic() + 120
        while not any(
            r.data.tags.get("depthsearch.trial") == "0"
            for r in client.search_runs(
                [
                    e.experiment_id
                    for e in client.search_experiments(filter_string=f"name = '{name}'")
                ]
                or ["0"],
            )
        ):
            assert time.monotonic() < deadline, "trial 0's run never came"
            time.sleep(0.2)
        # MLflow's client runs in a thread of the worker: the worker starts no process.
        assert descendants(worker.pid) == []
        server.stop()
        gate.open()
        _, err = worker.communicate(timeout=300)
    finally:
        worker.kill()  # the server stays down: the next test that needs it starts it
    assert worker.returncode == 0, err
    study = optuna.load_study(study_name=name, storage=url)
    states = [t.state.name for t in study.trials]
    assert len(states) == 4 and set(states) <= {"COMPLETE", "PRUNED"}, states
    assert err.count("is off for this worker") == 1, err


def test_a_hanging_server_costs_one_warning_and_no_trial(tmp_path: Path) -> None:
    """A server that takes connections and never answers: the tracker's thread waits for
    it, training does not; the worker ends its trials and says so once."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)  # accepted by the kernel, never read
    try:
        name = unique("hung")
        started = time.monotonic()
        worker = _tracked_worker(
            tmp_path, name, f"http://127.0.0.1:{listener.getsockname()[1]}", n_trials=3
        )
        _, err = worker.communicate(timeout=300)
    finally:
        listener.close()
    assert worker.returncode == 0, err
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / 's.db'}")
    states = [t.state.name for t in study.trials]
    assert len(states) == 3 and set(states) <= {"COMPLETE", "PRUNED"}, states
    said = err.count("is off for this worker") + err.count("did not take the last runs")
    assert said == 1, err
    # The client's timeouts (10 s a request, one retry) and the 15 s the tracker is given at
    # the end bound the wait, whatever the trials.
    assert time.monotonic() - started < 240


def test_a_study_resumes_with_another_tracking_table(tmp_path: Path) -> None:
    """[tracking] changes no trial: a study gains, changes or drops it on resume, and the
    stored spec (what workers that join by name read) follows."""
    from depthsearch.spec import load_spec
    from depthsearch.studies import create_study, read_spec

    url = f"sqlite:///{tmp_path / 's.db'}"
    path = write_study(tmp_path, name="retracked")
    create_study(load_spec(path), url)
    path.write_text(path.read_text() + TRACKED.format(uri="http://mlflow.example:5000"))
    create_study(load_spec(path), url)
    assert read_spec("retracked", url).tracking.mlflow == "http://mlflow.example:5000"
