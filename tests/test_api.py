"""The Python API (``depthsearch.run_study``) and what every run samples: the same candidates
from the same study file and seed, and never one twice in a resumed study."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import optuna

import depthsearch

from .conftest import Gate, unique, write_study
from .test_worker import LONG, MID, held_mid_trial, spawn, trials

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def _params(url: str, name: str) -> list[tuple[tuple[str, object], ...]]:
    got = sorted(trials(url, name), key=lambda t: t.number)
    return [tuple(sorted(t.params.items())) for t in got]


def test_run_study_takes_a_dict_and_returns_the_study(tmp_path: Path) -> None:
    doc = tomllib.loads(write_study(tmp_path, name="api", n_trials=3, max_epochs=2).read_text())
    seen: list[int] = []
    study = depthsearch.run_study(
        doc, storage=f"sqlite:///{tmp_path / 'api.db'}", on_epoch=lambda n, r: seen.append(n)
    )
    assert isinstance(study, optuna.Study) and study.study_name == "api"
    assert sum(t.state.is_finished() for t in study.get_trials()) == 3
    assert sorted(set(seen)) == [0, 1, 2]  # every trial reported its epochs


def test_run_study_says_nothing_through_optunas_own_logger(tmp_path: Path) -> None:
    import logging

    heard: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            heard.append(record.getMessage())

    keep = Keep(level=logging.DEBUG)
    optuna_logger = logging.getLogger("optuna")
    optuna_logger.addHandler(keep)
    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.INFO)
    try:
        study_file = write_study(tmp_path, name="hush", n_trials=1, max_epochs=1)
        depthsearch.run_study(study_file, storage=f"sqlite:///{tmp_path / 'hush.db'}")
    finally:
        optuna.logging.set_verbosity(before)
        optuna_logger.removeHandler(keep)
    assert not [m for m in heard if "A new study created" in m], heard
    assert optuna.logging.get_verbosity() == before


def test_run_study_leaves_the_process_as_it_found_it(tmp_path: Path) -> None:
    import torch

    from depthsearch.storage import engine

    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    threads, cudnn = torch.get_num_threads(), torch.backends.cudnn.benchmark
    torch.set_num_threads(3)  # not the study's 1, on any machine
    torch.backends.cudnn.benchmark = not cudnn
    during: list[int] = []
    try:
        depthsearch.run_study(
            write_study(tmp_path, name="guest", n_trials=2, max_epochs=2),
            storage=f"sqlite:///{tmp_path / 'guest.db'}",
            on_epoch=lambda n, r: during.append(torch.get_num_threads()),
        )
        assert during and set(during) == {1}  # the study's [train] threads while it ran
        assert torch.get_num_threads() == 3
        assert torch.backends.cudnn.benchmark is (not cudnn)
        assert {s: signal.getsignal(s) for s in handlers} == handlers
        assert not engine._LOCK_ENGINES  # the lock engines it made are gone
    finally:
        torch.set_num_threads(threads)
        torch.backends.cudnn.benchmark = cudnn


def test_the_same_study_file_samples_the_same_candidates(tmp_path: Path) -> None:
    study_file = write_study(tmp_path, name="again", n_trials=4, max_epochs=2)
    urls = [f"sqlite:///{tmp_path / f'{k}.db'}" for k in ("first", "second")]
    for url in urls:
        depthsearch.run_study(study_file, storage=url)
    first, second = (_params(url, "again") for url in urls)
    assert len(first) == 4 and first == second
    assert len(set(first)) == 4


def test_a_study_resumed_after_ctrl_c_resumes_the_trial_and_repeats_no_other_candidate(
    tmp_path: Path, sqlite_url: str, gate: Gate
) -> None:
    name = unique("resumed")
    study_file = write_study(tmp_path, name=name, n_trials=4, max_epochs=LONG)
    gate.hold_at(MID)
    first = spawn("run", str(study_file), url=sqlite_url)
    try:
        held_mid_trial(gate, sqlite_url, name)
    finally:
        first.send_signal(signal.SIGINT)
        gate.open()
        _, err = first.communicate(timeout=120)
    assert first.returncode == 130, err
    depthsearch.run_study(study_file, storage=sqlite_url)
    got = _params(sqlite_url, name)
    assert len(got) == 5  # the interrupted trial, and the four finished after it
    # The first of them goes on with the interrupted one, from its checkpoint; after it,
    # nothing is drawn twice.
    assert got[1] == got[0]
    resumed = sorted(trials(sqlite_url, name), key=lambda t: t.number)[1]
    assert resumed.user_attrs["resumed_from_epoch"] == MID
    assert len(set(got[1:])) == len(got) - 1, got
