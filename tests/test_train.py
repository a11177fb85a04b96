"""The training loop alone: it learns, it is reproducible, it refuses NaN, it can be stopped."""

from __future__ import annotations

import pytest
import torch

from depthsearch import ModelConfig, build_model
from depthsearch.errors import NonFiniteLossError
from depthsearch.learn.data import prepare
from depthsearch.learn.train import EpochResult, FitOptions, History, fit, resolve_device
from depthsearch.spec import DataSpec


@pytest.fixture(scope="module")
def windows():  # type: ignore[no-untyped-def]
    return prepare(DataSpec(length=300, window=8, horizon=1), seed=0)


def make(windows, seed: int = 0):  # type: ignore[no-untyped-def]
    torch.manual_seed(seed)
    return build_model(ModelConfig(input_size=1, hidden_sizes=(8, 8), output_size=1))


def test_loss_goes_down_and_history_is_complete(windows) -> None:  # type: ignore[no-untyped-def]
    history = fit(make(windows), windows, FitOptions(lr=1e-2, batch_size=32, max_epochs=8))
    losses = [e.val_loss for e in history.epochs]
    assert len(losses) == 8 and losses[-1] < losses[0]
    assert history.best is not None and history.best.val_loss == min(losses)
    assert all(e.seconds > 0 for e in history.epochs)


def test_same_seed_same_history(windows) -> None:  # type: ignore[no-untyped-def]
    opts = FitOptions(lr=5e-3, batch_size=16, max_epochs=3, seed=5)
    a = fit(make(windows, 1), windows, opts)
    b = fit(make(windows, 1), windows, opts)
    assert [e.val_loss for e in a.epochs] == [e.val_loss for e in b.epochs]


def test_callback_can_stop_and_history_survives(windows) -> None:  # type: ignore[no-untyped-def]
    class Stop(Exception):
        pass

    def stop_at_two(result: EpochResult, _: History) -> None:
        if result.epoch == 2:
            raise Stop

    history = History()
    with pytest.raises(Stop):
        fit(
            make(windows),
            windows,
            FitOptions(1e-2, 32, 10),
            on_epoch_end=stop_at_two,
            history=history,
        )
    assert [e.epoch for e in history.epochs] == [1, 2] and history.epochs[-1].seconds > 0


def test_nan_loss_raises(windows) -> None:  # type: ignore[no-untyped-def]
    model = make(windows)
    with torch.no_grad():
        model.head.weight.fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match="loss became nan at epoch 1"):
        fit(model, windows, FitOptions(1e-2, 32, 3))


def test_patience_counts_once_the_model_learned(windows) -> None:  # type: ignore[no-untyped-def]
    # It learns at once (far below the training mean's loss), then stops gaining: it stops.
    history = fit(
        make(windows), windows, FitOptions(lr=1e-2, batch_size=32, max_epochs=60, patience=2)
    )
    assert history.stopped_early and len(history.epochs) < 60
    assert min(e.val_loss for e in history.epochs) < 0.5  # the training mean's is about 1
    # A step so large that it learns nothing (its loss stays at the mean's, or above): a
    # plateau before learning is not the end of it, patience does not count there.
    stuck = fit(
        make(windows), windows, FitOptions(lr=1.0, batch_size=32, max_epochs=12, patience=2)
    )
    assert not stuck.stopped_early and len(stuck.epochs) == 12
    assert min(e.val_loss for e in stuck.epochs) > 0.5


def test_small_data_trains_at_least_min_batches_an_epoch(windows) -> None:  # type: ignore[no-untyped-def]
    few = windows.x_train.shape[0]  # 230 windows: 8 batches of 32 a pass
    seen: list[int] = []
    model = make(windows)
    model.register_forward_hook(
        lambda m, args, out: seen.append(len(args[0])) if m.training else None
    )
    fit(model, windows, FitOptions(lr=1e-2, batch_size=32, max_epochs=1, min_batches=20))
    assert len(seen) >= 20 and sum(seen) >= 2 * few  # several passes, each in a new order


def test_cuda_asked_without_cuda_is_a_clear_error() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(Exception, match="sees no CUDA device"):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"
