"""On a CUDA device: the cuDNN fused path against the per-layer stack, bf16 training, K
workers on one GPU, and a model trained on the GPU used on the CPU.

Skipped, with the reason, where torch sees no CUDA device (CI never has one); run on a GPU
machine with ``pytest -m gpu``.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

from depthsearch.learn.model import ModelConfig, StackedLSTM
from depthsearch.learn.saved import load_model

from .conftest import create_here, depthsearch_cmd, write_study
from .test_model import fused_and_stacked

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no CUDA device"),
]

CUDA = torch.device("cuda")


def _twins(cfg: ModelConfig) -> tuple[StackedLSTM, StackedLSTM]:
    """The fused (cuDNN) model and the per-layer stack with the same weights, on the GPU."""
    fused, stacked = fused_and_stacked(cfg)
    return fused.to(CUDA).eval(), stacked.to(CUDA).eval()


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("batch_first", [True, False])
def test_cudnn_fused_and_per_layer_agree_with_states_and_lengths(
    bidirectional: bool, batch_first: bool
) -> None:
    torch.manual_seed(0)
    layers, hidden, batch, steps = 4, 32, 6, 11
    cfg = ModelConfig(
        input_size=3,
        hidden_sizes=(hidden,) * layers,
        output_size=2,
        bidirectional=bidirectional,
        batch_first=batch_first,
    )
    fused, stacked = _twins(cfg)
    dirs = cfg.num_directions
    shape = (batch, steps, 3) if batch_first else (steps, batch, 3)
    x = torch.randn(*shape, device=CUDA)
    h0 = torch.randn(layers * dirs, batch, hidden, device=CUDA)
    c0 = torch.randn(layers * dirs, batch, hidden, device=CUDA)
    lengths = torch.tensor([11, 3, 7, 1, 11, 5])
    with torch.no_grad():
        for kw in ({}, {"lengths": lengths}):
            y1, (h1, c1) = fused(x, (h0, c0), return_state=True, **kw)
            y2, (h2, c2) = stacked(x, (h0, c0), return_state=True, **kw)
            assert y1.shape == (batch, 2) and y1.device.type == "cuda"
            assert h1.shape == c1.shape == (layers * dirs, batch, hidden)
            torch.testing.assert_close(y1, y2, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(h1, h2, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(c1, c2, rtol=1e-4, atol=1e-5)


def test_mixed_widths_train_a_step_under_bf16_autocast() -> None:
    from depthsearch.learn.evaluate import autocast_for

    torch.manual_seed(0)
    cfg = ModelConfig(input_size=2, hidden_sizes=(64, 32, 16), output_size=1, dropout=0.2)
    model = StackedLSTM(cfg).to(CUDA)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = torch.randn(64, 20, 2, device=CUDA), torch.randn(64, 1, device=CUDA)
    losses = []
    for _ in range(30):
        with autocast_for(CUDA, True):
            out = model(x)
        assert out.dtype == torch.bfloat16  # the head ran under autocast
        loss = torch.nn.functional.mse_loss(out.float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.8 * losses[0], losses


def _gpu_study(tmp_path: Path, url: str, name: str, n_trials: int) -> None:
    path = write_study(tmp_path, name=name, n_trials=n_trials, max_epochs=4)
    path.write_text(path.read_text().replace('device = "cpu"', 'device = "cuda"'))
    create_here(path, url)


def test_two_workers_share_one_gpu_and_meet_the_budget(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'gpu.db'}"
    _gpu_study(tmp_path, url, "ongpu", n_trials=6)
    launch = ["launch", "--study", "ongpu", "--storage", url, "--gpus", "0", "--per-gpu", "2"]
    proc = depthsearch_cmd(*launch, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "budget met: 6 of 6 search trials finished" in proc.stdout, proc.stdout
    for i in (0, 1):
        assert re.search(rf"^\[{i} cuda:0\] ", proc.stderr, re.M), proc.stderr
    got = optuna.load_study(study_name="ongpu", storage=url).get_trials(deepcopy=False)
    done = [t for t in got if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(done) == 6
    assert all(t.user_attrs["device"].startswith("cuda") for t in done)
    assert len({t.user_attrs["worker_pid"] for t in done}) == 2
    values = [t.value for t in done if t.state is TrialState.COMPLETE]
    assert values and all(v is not None and math.isfinite(v) for v in values)

    # The best model, trained again on the GPU, loads and predicts on a machine without one.
    out = tmp_path / "best"
    proc = depthsearch_cmd(
        "export", "--study", "ongpu", "--storage", url, "--retrain", "-o", str(out)
    )
    assert proc.returncode == 0, proc.stderr
    model = load_model(out)
    assert all(p.device.type == "cpu" for p in model.parameters())
    with torch.no_grad():
        y = model(torch.randn(5, 8, model.config.input_size))
    assert y.shape == (5, model.config.output_size) and torch.isfinite(y).all()
