"""Checkpoints: a stopped or killed trial's retry goes on from its last epoch, not from zero."""

from __future__ import annotations

import contextlib
import re
import signal
from pathlib import Path

import pytest
import torch
from optuna.trial import TrialState

from depthsearch.learn.data import prepare
from depthsearch.learn.model import ModelConfig, build_model
from depthsearch.learn.train import CorruptCheckpoint, FitOptions, History, TrainState, fit
from depthsearch.spec import DataSpec, WorkersSpec
from depthsearch.storage import RetryHeartbeatStaleTrialCallback

from .conftest import Gate, create_here, depthsearch_cmd, write_study
from .test_worker import EVENT_S, assert_settled, count, spawn, trials, wait_for

#: Trials a few epochs long: the tests act mid-trial by holding the worker at a gate.
EPOCHS = 8


class _Stop(Exception):
    pass


def _train(
    epochs_before_stop: int | None, resume: TrainState | None = None
) -> tuple[ModelConfig, History, list[TrainState], torch.nn.Module]:
    data = prepare(DataSpec(source="synthetic", length=400, window=8, horizon=2), seed=1)
    config = ModelConfig(input_size=1, hidden_sizes=(8, 6, 4), output_size=2, dropout=0.3)
    torch.manual_seed(11)
    model = build_model(config)
    saved: list[TrainState] = []

    def keep(state: TrainState) -> None:
        saved.append(state)
        if epochs_before_stop is not None and state.epoch == epochs_before_stop:
            raise _Stop

    history = History()
    options = FitOptions(lr=1e-2, batch_size=32, max_epochs=EPOCHS, seed=5, patience=20)
    with contextlib.suppress(_Stop):
        fit(model, data, options, history=history, resume=resume, checkpoint=keep)
    return config, history, saved, model


def test_a_resumed_run_trains_bit_for_bit_as_one_that_never_stopped() -> None:
    torch.set_num_threads(1)
    _, whole, states, model_whole = _train(None)
    assert [s.epoch for s in states] == list(range(1, EPOCHS))  # none after the last
    _, _, stopped, _ = _train(5)
    state = TrainState.from_bytes(stopped[-1].to_bytes())  # through the stored form
    _, resumed, _, model_resumed = _train(None, resume=state)
    assert [e.epoch for e in resumed.epochs] == list(range(1, EPOCHS + 1))
    assert [e.val_loss for e in resumed.epochs] == [e.val_loss for e in whole.epochs]
    for a, b in zip(
        model_whole.state_dict().values(), model_resumed.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)


def test_damaged_bytes_are_refused_as_corrupt() -> None:
    _, _, states, _ = _train(2)
    good = states[-1].to_bytes()
    assert TrainState.from_bytes(good).epoch == 2
    for bad in (good[: len(good) // 2], good[:-1] + bytes([good[-1] ^ 1]), b"junk"):
        with pytest.raises(CorruptCheckpoint):
            TrainState.from_bytes(bad)


def test_the_preemption_line_counts_retries_resumes_and_epochs_trained_twice() -> None:
    from depthsearch.search.trials import Preemption

    assert Preemption([{}, {"seed": 1}]).line() is None
    got = Preemption(
        [
            {"resumed_from_epoch": 4, "epochs_lost": 1},
            {"resumed_from_epoch": 0, "epochs_lost": 6, "resume_note": "no checkpoint"},
            {},
        ]
    )
    assert (got.retries, got.resumed, got.epochs_lost) == (2, 1, 7)
    assert got.line() == (
        "2 retries of stopped or killed trials: 1 resumed from a checkpoint, "
        "7 epochs trained twice"
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "must be a non-empty string"),
        ("gs://b/p", "only s3:// stores"),
        ("s3://", "must be 'auto', 'off', a folder or s3://bucket/prefix"),
    ],
)
def test_a_bad_checkpoints_value_is_refused(value: str, message: str) -> None:
    from depthsearch.errors import SpecError

    with pytest.raises(SpecError, match=re.escape(message)):
        WorkersSpec(checkpoints=value)


def test_a_relative_checkpoints_folder_is_the_study_files(tmp_path: Path) -> None:
    from depthsearch.spec import load_spec

    path = write_study(tmp_path, extra='[workers]\ncheckpoints = "ckpt"\ncheckpoint_every = 2')
    spec = load_spec(path)
    assert spec.workers.checkpoints == str(tmp_path / "ckpt")
    assert spec.workers.checkpoint_every == 2


def test_checkpoint_names_never_collide_and_always_fit(tmp_path: Path) -> None:
    from optuna.artifacts import FileSystemArtifactStore

    from depthsearch.worker.checkpoints import Checkpoints

    store = FileSystemArtifactStore(str(tmp_path))
    _, _, states, _ = _train(2)
    params = {"num_layers": 3}
    # "col a" and "col_a" read alike once made safe for a file name; a 300-character name
    # (allowed) does not fit one as it is.
    names = ["col a", "col_a", "x" * 300]
    for name in names:
        writer = Checkpoints(store, name, str(tmp_path)).for_trial(0, params, 7)
        writer.save(states[-1])
        writer.close()
    assert len(list(tmp_path.iterdir())) == len(names)  # each its own file
    Checkpoints(store, "col a", str(tmp_path)).remove([0])  # one study's clean-up
    for name in names[1:]:
        found = Checkpoints(store, name, str(tmp_path)).resume([0], params, 7)
        assert found.state is not None and found.state.epoch == 2, (name, found.note)
    assert Checkpoints(store, "col a", str(tmp_path)).resume([0], params, 7).state is None


def test_a_trial_writes_one_state_per_checkpoint_seconds_and_a_stop_writes_its_last(
    tmp_path: Path,
) -> None:
    from optuna.artifacts import FileSystemArtifactStore

    from depthsearch.worker.checkpoints import Checkpoints

    store = FileSystemArtifactStore(str(tmp_path))
    _, _, states, _ = _train(None)  # epochs 1..7, handed over as fast as training goes
    params = {"num_layers": 3}

    def written(every_s: float, *, keep_last: bool) -> int | None:
        checkpoints = Checkpoints(store, f"every-{every_s}-{keep_last}", "here", every_s=every_s)
        writer = checkpoints.for_trial(0, params, 7)
        for state in states:
            writer.save(state)
        writer.close(keep_last=keep_last)
        found = checkpoints.resume([0], params, 7)
        return None if found.state is None else found.state.epoch

    # Every epoch's state when asked (the newest wins); none in a trial shorter than the
    # interval that ends for good; the newest held back when it stops to run again.
    assert written(0.0, keep_last=False) == states[-1].epoch
    assert written(3600.0, keep_last=False) is None
    assert written(3600.0, keep_last=True) == states[-1].epoch


# --- real workers ----------------------------------------------------------------------------


def _study(tmp_path: Path, url: str, name: str, *, n_trials: int = 1, extra: str = "") -> Path:
    folder = tmp_path / "ckpt"
    # PostgreSQL has no folder beside it: name one (on SQLite, "auto" is one beside the file).
    where = "" if url.startswith("sqlite") else f'checkpoints = "{folder}"\n'
    path = write_study(
        tmp_path,
        name=name,
        n_trials=n_trials,
        max_epochs=EPOCHS,
        extra=f"[workers]\nheartbeat_interval = 1\ngrace_period = 3\nmax_retry = 2\n"
        f"{where}{extra}",
    )
    create_here(path, url)
    return path


def _store(tmp_path: Path, url: str) -> Path:
    if url.startswith("sqlite"):
        return Path(url.removeprefix("sqlite:///") + ".checkpoints")
    return tmp_path / "ckpt"


def _trained_at_least(url: str, name: str, epochs: int) -> bool:
    return any(
        t.state == TrialState.RUNNING and len(t.intermediate_values) >= epochs
        for t in trials(url, name)
    )


def _stop_in_training(
    gate: Gate, url: str, name: str, epochs: int, sig: signal.Signals, read: str | None = None
) -> tuple[int, str]:
    """Starts a worker on ``url``, holds it after epoch ``epochs`` of its trial (reported, as
    read through ``read``, else ``url``), sends it ``sig`` there and opens the gate; returns its
    exit code and stderr once it has exited."""
    gate.hold_at(epochs)
    worker = spawn("worker", "--study", name, url=url)
    gate.wait_held()
    wait_for(
        lambda: _trained_at_least(read or url, name, epochs),
        EVENT_S,
        f"{epochs} epochs reported",
    )
    worker.send_signal(sig)
    gate.open()  # the next batch finds the signal
    _, err = worker.communicate(timeout=120)
    return worker.returncode, err


def _worker_to_the_end(url: str, name: str) -> str:
    """A worker run until the budget is met; its stderr."""
    worker = spawn("worker", "--study", name, url=url)
    _, err = worker.communicate(timeout=EVENT_S)
    assert worker.returncode == 0, err
    return err


def _reference(tmp_path: Path, name: str) -> dict[int, float]:
    """The same trial (same study file, seed, parameters) trained once without a stop, in this
    process (one torch thread, as the study file says)."""
    from depthsearch import run_study

    ref_url = f"sqlite:///{tmp_path / 'reference.db'}"
    run_study(tmp_path / f"{name}.toml", storage=ref_url)
    (only,) = trials(ref_url, name)
    assert only.state == TrialState.COMPLETE
    return dict(only.intermediate_values)


@pytest.fixture(params=["sqlite", pytest.param("pgbouncer", marks=pytest.mark.postgres)])
def worker_and_reader_urls(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """(the URL the workers use, the URL this test reads the study from): a fresh SQLite file,
    or a fresh PostgreSQL database through a real PgBouncer in transaction pooling mode (the
    many-workers setup) and directly."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'fresh.db'}"
        return url, url
    via, direct = request.getfixturevalue("pgbouncer")
    return str(via), str(direct)


def test_sigkill_at_epoch_k_costs_at_most_one_epoch_and_ends_as_an_unstopped_run(
    tmp_path: Path, worker_and_reader_urls: tuple[str, str], gate: Gate
) -> None:
    url, read = worker_and_reader_urls
    name = "killed"
    # A state every epoch, whatever the time (the default writes one per 10 s of training).
    _study(tmp_path, url, name, extra="checkpoint_seconds = 0\n")
    code, _ = _stop_in_training(gate, url, name, 4, signal.SIGKILL, read=read)
    assert code == -signal.SIGKILL
    assert list(_store(tmp_path, url).glob(f"{name}-*.trial-0.*"))  # it left its state behind
    err = _worker_to_the_end(url, name)

    killed, retry = trials(read, name)
    assert killed.state == TrialState.FAIL and retry.state == TrialState.COMPLETE
    assert RetryHeartbeatStaleTrialCallback.retried_trial_number(retry) == killed.number
    assert retry.params == killed.params and retry.user_attrs["seed"] == killed.user_attrs["seed"]
    k = retry.user_attrs["resumed_from_epoch"]
    reported = max(killed.intermediate_values)
    assert k >= 3 and reported - k <= 1, (k, reported)  # at most checkpoint_every lost
    assert retry.user_attrs["epochs_lost"] == max(0, reported - k)
    # It trained epochs k+1..EPOCHS only, and says so.
    assert sorted(retry.intermediate_values) == list(range(k + 1, EPOCHS + 1))
    assert retry.user_attrs["epochs_trained"] == EPOCHS - k
    assert f"trial 1 resumes trial 0 from its epoch {k}" in err
    # Bit for bit as the same trial trained with no stop (CPU, one thread).
    reference = _reference(tmp_path, name)
    assert {s: reference[s] for s in retry.intermediate_values} == retry.intermediate_values
    assert retry.value == min(reference.values())
    # A finished trial leaves no state behind, nor do the trials it retried.
    assert not list(_store(tmp_path, url).glob(f"{name}-*.trial-*"))
    assert_settled(read, name, finished=1)


def test_sigterm_fails_the_trial_with_the_reason_and_the_next_worker_resumes_it(
    tmp_path: Path, sqlite_url: str, gate: Gate
) -> None:
    url, name = sqlite_url, "termed"
    _study(tmp_path, url, name)
    code, err = _stop_in_training(gate, url, name, 3, signal.SIGTERM)
    assert code == 128 + signal.SIGTERM, err
    assert "stopped: interrupted by SIGTERM" in err and "the next worker retries it" in err
    (stopped, waiting) = trials(url, name)
    assert stopped.state == TrialState.FAIL
    assert stopped.user_attrs["fail_reason"] == "interrupted by SIGTERM"
    assert waiting.state == TrialState.WAITING and "fail_reason" not in waiting.user_attrs
    _worker_to_the_end(url, name)
    retry = trials(url, name)[1]
    assert retry.state == TrialState.COMPLETE
    # Stopped between batches, after its last epoch's state was written: nothing lost.
    assert retry.user_attrs["resumed_from_epoch"] == max(stopped.intermediate_values)
    assert retry.user_attrs["epochs_lost"] == 0
    assert min(retry.intermediate_values) == retry.user_attrs["resumed_from_epoch"] + 1
    assert_settled(url, name, finished=1)
    # What the stop cost, in the study's summaries.
    line = "1 retry of a stopped or killed trial: 1 resumed from a checkpoint, 0 epochs trained"
    status = depthsearch_cmd("status", "--study", name, "--storage", url)
    assert line in status.stdout, status.stdout
    report = depthsearch_cmd(
        "report", "--study", name, "--storage", url, "-o", str(tmp_path / "r")
    )
    assert report.returncode == 0, report.stderr
    assert line in (tmp_path / "r" / "index.html").read_text()


def test_ctrl_c_pauses_the_trial_and_the_next_run_resumes_it_before_anything_new(
    tmp_path: Path, gate: Gate
) -> None:
    url, name = f"sqlite:///{tmp_path / 'c.db'}", "ctrlc"
    path = _study(tmp_path, url, name, n_trials=2)
    code, err = _stop_in_training(gate, url, name, 3, signal.SIGINT)
    assert code == 128 + signal.SIGINT, err
    assert "Ctrl-C: stopping at the next batch" in err
    assert "the next run or worker of the study resumes it" in err
    stopped, waiting = trials(url, name)
    assert stopped.state == TrialState.FAIL
    assert stopped.user_attrs["fail_reason"] == "interrupted by SIGINT"
    assert waiting.state == TrialState.WAITING and waiting.params == stopped.params
    assert list(_store(tmp_path, url).glob(f"{name}-*.trial-0.*"))  # its state is kept
    proc = depthsearch_cmd("run", str(path), "--storage", url, timeout=EVENT_S)
    assert proc.returncode == 0, proc.stderr
    _, resumed, new = trials(url, name)
    assert resumed.state == TrialState.COMPLETE
    assert resumed.user_attrs["seed"] == stopped.user_attrs["seed"]
    # From the last epoch it reported (stopped between batches: nothing lost), and first.
    assert resumed.user_attrs["resumed_from_epoch"] == max(stopped.intermediate_values) == 3
    assert sorted(resumed.intermediate_values) == list(range(4, EPOCHS + 1))
    assert new.datetime_start >= resumed.datetime_complete
    assert "trial 1 resumes trial 0 from its epoch 3" in proc.stderr
    assert not list(_store(tmp_path, url).glob(f"{name}-*.trial-*"))
    assert_settled(url, name, finished=2)


def test_ctrl_c_twice_drops_the_trial(tmp_path: Path, gate: Gate) -> None:
    url, name = f"sqlite:///{tmp_path / 'c.db'}", "twice"
    _study(tmp_path, url, name)
    gate.hold_at(2)
    worker = spawn("worker", "--study", name, url=url)
    gate.wait_held()
    wait_for(lambda: _trained_at_least(url, name, 2), EVENT_S, "2 epochs reported")
    assert worker.stderr is not None
    worker.send_signal(signal.SIGINT)
    # The second only once the first was heard (two pending SIGINTs would be one).
    heard = ""
    while "Ctrl-C: stopping" not in heard:
        line = worker.stderr.readline()
        assert line, heard
        heard += line
    worker.send_signal(signal.SIGINT)
    gate.open()
    _, err = worker.communicate(timeout=120)
    assert worker.returncode == 128 + signal.SIGINT, heard + err
    assert "Ctrl-C again: the running trial is dropped" in err
    assert "dropped (Ctrl-C twice)" in err
    assert [t.state for t in trials(url, name)] == [TrialState.FAIL]
    assert not list(_store(tmp_path, url).glob(f"{name}-*.trial-*"))  # nothing will resume it


def test_ctrl_c_twice_drops_the_trial_whatever_the_gap(tmp_path: Path, gate: Gate) -> None:
    """The second Ctrl-C after the first's trial ended (its resumption queued): said as a
    drop, and dropped, as when it comes within the same batch."""
    url, name = f"sqlite:///{tmp_path / 'c.db'}", "late"
    _study(tmp_path, url, name)
    gate.hold_at(2)
    worker = spawn("worker", "--study", name, url=url)
    gate.wait_held()
    assert worker.stderr is not None
    worker.send_signal(signal.SIGINT)
    heard = ""
    while "Ctrl-C: stopping" not in heard:
        line = worker.stderr.readline()
        assert line, heard
        heard += line
    gate.hold_after_finish()
    (gate.folder / "open").write_text("")  # the epoch's gate alone
    gate.wait_finished()
    waiting = [t for t in trials(url, name) if t.state == TrialState.WAITING]
    assert len(waiting) == 1  # the first Ctrl-C queued its resumption
    worker.send_signal(signal.SIGINT)
    while "Ctrl-C again: the running trial is dropped" not in heard:
        line = worker.stderr.readline()
        assert line, heard
        heard += line
    gate.open_finish()
    _, err = worker.communicate(timeout=120)
    assert worker.returncode == 128 + signal.SIGINT, heard + err
    assert "dropped (Ctrl-C twice)" in err, err
    states = [t.state for t in trials(url, name)]
    assert states == [TrialState.FAIL, TrialState.FAIL], states
    assert "Ctrl-C twice" in trials(url, name)[1].user_attrs["fail_reason"]
    assert not list(_store(tmp_path, url).glob(f"{name}-*.trial-*"))  # nothing will resume it


def test_a_corrupt_checkpoint_makes_the_retry_start_over_and_say_why(
    tmp_path: Path, gate: Gate
) -> None:
    url, name = f"sqlite:///{tmp_path / 'k.db'}", "corrupt"
    _study(tmp_path, url, name)
    code, err = _stop_in_training(gate, url, name, 3, signal.SIGTERM)
    assert code == 128 + signal.SIGTERM, err
    files = sorted(_store(tmp_path, url).glob(f"{name}-*.trial-0.*"))
    assert files
    for f in files:  # half written, as a write cut short by a lost node leaves it
        data = f.read_bytes()
        f.write_bytes(data[: len(data) // 2])
    err = _worker_to_the_end(url, name)
    retry = trials(url, name)[1]
    assert retry.state == TrialState.COMPLETE
    assert retry.user_attrs["resumed_from_epoch"] == 0
    assert "corrupt" in retry.user_attrs["resume_note"], retry.user_attrs
    assert sorted(retry.intermediate_values) == list(range(1, EPOCHS + 1))
    assert retry.user_attrs["epochs_lost"] == max(trials(url, name)[0].intermediate_values)
    assert "trial 1 starts over: trial 0's checkpoint" in err


def test_a_checkpoint_folder_that_cannot_be_made_is_one_warning_and_training_goes_on(
    tmp_path: Path,
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    url, name = f"sqlite:///{tmp_path / 'u.db'}", "unwritable"
    _study(tmp_path, url, name, n_trials=2, extra=f'checkpoints = "{blocker / "ckpt"}"\n')
    proc = depthsearch_cmd("worker", "--study", name, "--storage", url, timeout=EVENT_S)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("without checkpoints") == 1, proc.stderr
    assert_settled(url, name, finished=2)


def test_a_checkpoint_folder_that_vanishes_is_one_warning_and_training_goes_on(
    tmp_path: Path, gate: Gate
) -> None:
    import shutil

    url, name = f"sqlite:///{tmp_path / 'v.db'}", "vanish"
    folder = tmp_path / "gone"
    every_epoch = "checkpoint_seconds = 0\n"  # writes to fail, however short the epochs
    _study(tmp_path, url, name, n_trials=3, extra=f'checkpoints = "{folder}"\n{every_epoch}')
    gate.hold_at(2)
    worker = spawn("worker", "--study", name, url=url)
    gate.wait_held()
    shutil.rmtree(folder)
    gate.open()
    _, err = worker.communicate(timeout=EVENT_S)
    assert worker.returncode == 0, err
    assert err.count("training goes on without checkpoints") == 1, err
    assert_settled(url, name, finished=3)
    assert count(url, name, TrialState.FAIL) == 0
