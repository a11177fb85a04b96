"""A retrained model as TorchScript and ONNX: written, checked against PyTorch, served
without depthsearch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from depthsearch import load_model, run_study
from depthsearch.cli import main
from depthsearch.learn.model import ModelConfig, build_model
from depthsearch.learn.portable import OnnxModel
from depthsearch.results.portable import TOLERANCE, write_onnx, write_torchscript

from .conftest import write_study

SHAPES = [
    {"hidden_sizes": (8,)},
    {"hidden_sizes": (8, 8), "dropout": 0.3},  # one fused cuDNN-style stack
    {"hidden_sizes": (8, 16, 4), "dropout": 0.2},  # per-layer widths
    {"hidden_sizes": (8, 8, 8), "residual": True, "layer_norm": True},
    {"hidden_sizes": (6, 6), "bidirectional": True},
]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "-".join(f"{k}" for k in s))
def test_every_stack_shape_exports_and_matches_pytorch(tmp_path: Path, shape: dict) -> None:
    model = build_model(ModelConfig(input_size=3, output_size=2, **shape))
    assert write_torchscript(model, tmp_path / "m.ts", input_size=3, length=12) <= TOLERANCE
    assert write_onnx(model, tmp_path / "m.onnx", input_size=3, length=12) <= TOLERANCE
    loaded = torch.jit.load(str(tmp_path / "m.ts"))
    onnx = OnnxModel(tmp_path / "m.onnx")
    x = torch.randn(9, 31, 3)  # another batch size and length than the checks'
    model.eval()
    with torch.inference_mode():
        expected = model(x)
        assert torch.allclose(loaded(x), expected, atol=TOLERANCE)
        assert torch.allclose(onnx(x), expected, atol=TOLERANCE)
        # A padded batch of sequences of different lengths: each read at its own last step.
        lengths = torch.tensor([31, 5, 17, 5, 1, 31, 9, 2, 30])
        assert torch.allclose(onnx(x, lengths=lengths), model(x, lengths=lengths), atol=TOLERANCE)


@st.composite
def drawn_shapes(draw: st.DrawFn) -> ModelConfig:
    """What a study's space can draw (beside the fixed shapes above): 1-6 layers, one width
    or one per layer, dropout, and any of bidirectional, residual and layer norm."""
    layers = draw(st.integers(1, 6))
    if draw(st.booleans()):
        widths = tuple(draw(st.lists(st.integers(1, 12), min_size=layers, max_size=layers)))
    else:
        widths = (draw(st.integers(1, 12)),) * layers
    return ModelConfig(
        input_size=draw(st.integers(1, 4)),
        output_size=draw(st.integers(1, 3)),
        hidden_sizes=widths,
        dropout=draw(st.sampled_from([0.0, 0.3])),
        bidirectional=draw(st.booleans()),
        residual=draw(st.booleans()),
        layer_norm=draw(st.booleans()),
    )


@settings(
    max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(cfg=drawn_shapes(), length=st.integers(1, 16))
def test_any_shape_the_space_draws_exports_within_the_tolerance(
    tmp_path: Path, cfg: ModelConfig, length: int
) -> None:
    model = build_model(cfg)
    size = cfg.input_size
    assert write_onnx(model, tmp_path / "m.onnx", input_size=size, length=length) <= TOLERANCE
    assert write_torchscript(model, tmp_path / "m.ts", input_size=size, length=length) <= TOLERANCE


def test_export_retrain_format_torchscript_serves_without_depthsearch(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    run_study(write_study(tmp_path, name="ts", n_trials=1, max_epochs=2), storage=url)
    out = tmp_path / "best"
    result = CliRunner().invoke(
        main,
        [
            "export",
            "--study",
            "ts",
            "--storage",
            url,
            "--retrain",
            "--format",
            "torchscript",
            "--format",
            "onnx",
            "-o",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert f"wrote {out / 'model.ts'} (TorchScript" in result.output
    assert f"wrote {out / 'model.onnx'} (ONNX" in result.output
    x = torch.randn(4, 12, load_model(out).config.input_size)
    torch.save(x, tmp_path / "x.pt")
    with torch.inference_mode():
        expected = load_model(out)(x)
    # A fresh interpreter (-I: no PYTHONPATH, no user site, not this folder) that never
    # imports depthsearch: the archive carries the model's code.
    script = (
        "import sys, torch\n"
        "assert 'depthsearch' not in sys.modules\n"
        f"m = torch.jit.load({str(out / 'model.ts')!r})\n"
        f"x = torch.load({str(tmp_path / 'x.pt')!r})\n"
        f"torch.save(m(x), {str(tmp_path / 'y.pt')!r})\n"
        "import onnxruntime\n"
        f"s = onnxruntime.InferenceSession({str(out / 'model.onnx')!r})\n"
        "y = torch.from_numpy(s.run(None, {'x': x.numpy()})[0])\n"
        f"torch.save(y, {str(tmp_path / 'y_onnx.pt')!r})\n"
    )
    done = subprocess.run(
        [sys.executable, "-I", "-c", script], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert torch.allclose(torch.load(tmp_path / "y.pt"), expected, atol=TOLERANCE)
    assert torch.allclose(torch.load(tmp_path / "y_onnx.pt"), expected, atol=TOLERANCE)
    refused = CliRunner().invoke(
        main, ["export", "--study", "ts", "--storage", url, "--format", "torchscript"]
    )
    assert refused.exit_code == 2 and "add --retrain" in refused.output
