"""The stacked LSTM: shapes, states, parameter counts and refusals, over depth and width."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from depthsearch import ModelConfig, build_model
from depthsearch.learn.model import StackedLSTM


def expected_params(cfg: ModelConfig) -> int:
    """The closed formula: per layer and direction 4H(in + H) weights and 8H biases."""
    d = cfg.num_directions
    total = 0
    width_in = cfg.input_size
    for i, h in enumerate(cfg.hidden_sizes):
        total += d * (4 * h * (width_in + h) + 8 * h)
        if i > 0 and cfg.residual and width_in != d * h:
            total += width_in * d * h
        if i < cfg.num_layers - 1 and cfg.layer_norm:
            total += 2 * d * h
        width_in = d * h
    return total + width_in * cfg.output_size + cfg.output_size


configs = st.builds(
    lambda layers, widths, shared, dropout, bidir, residual, norm, inp, out: ModelConfig(
        input_size=inp,
        hidden_sizes=(widths[0],) * layers if shared else tuple(widths[:layers]),
        output_size=out,
        dropout=dropout,
        bidirectional=bidir,
        residual=residual,
        layer_norm=norm,
    ),
    layers=st.integers(1, 8),
    widths=st.lists(st.integers(1, 12), min_size=8, max_size=8),
    shared=st.booleans(),
    dropout=st.floats(0.0, 0.9),
    bidir=st.booleans(),
    residual=st.booleans(),
    norm=st.booleans(),
    inp=st.integers(1, 5),
    out=st.integers(1, 4),
)


@settings(max_examples=60, deadline=None)
@given(cfg=configs, batch=st.integers(1, 4), seq=st.integers(1, 6))
def test_shapes_states_backward_and_param_count(cfg: ModelConfig, batch: int, seq: int) -> None:
    model = build_model(cfg)
    assert sum(p.numel() for p in model.parameters()) == expected_params(cfg)
    x = torch.randn(batch, seq, cfg.input_size, requires_grad=True)
    y, state = model(x, return_state=True)
    assert y.shape == (batch, cfg.output_size)
    d = cfg.num_directions
    if cfg.uniform:
        h, c = state
        assert h.shape == c.shape == (cfg.num_layers * d, batch, cfg.hidden_sizes[0])
    else:
        assert isinstance(state, list) and len(state) == cfg.num_layers
        for (h, c), width in zip(state, cfg.hidden_sizes, strict=True):
            assert h.shape == c.shape == (d, batch, width)
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("layers", [1, 2, 8, 32])
@pytest.mark.parametrize("widths", ["equal", "mixed"])
def test_deep_stacks_run_forward_and_backward(layers: int, widths: str) -> None:
    hidden = (8,) * layers if widths == "equal" else tuple(4 + (i % 3) * 2 for i in range(layers))
    model = build_model(ModelConfig(input_size=3, hidden_sizes=hidden, output_size=2, dropout=0.1))
    x = torch.randn(4, 7, 3)
    y = model(x)
    assert y.shape == (4, 2)
    y.square().mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_equal_widths_use_fused_lstm_and_mixed_widths_a_stack() -> None:
    fused = build_model(ModelConfig(input_size=2, hidden_sizes=(6, 6, 6), output_size=1))
    assert fused.fused and fused.lstm is not None and fused.lstm.num_layers == 3
    mixed = build_model(ModelConfig(input_size=2, hidden_sizes=(6, 4, 3), output_size=1))
    assert not mixed.fused and len(mixed.layers) == 3
    # Layer i + 1 takes layer i's width.
    assert [m.input_size for m in mixed.layers] == [2, 6, 4]
    bi = build_model(
        ModelConfig(input_size=2, hidden_sizes=(6, 4), output_size=1, bidirectional=True)
    )
    assert [m.input_size for m in bi.layers] == [2, 12]


def fused_and_stacked(cfg: ModelConfig) -> tuple[StackedLSTM, StackedLSTM]:
    """The fused model and the per-layer stack of the same config, with the same weights."""
    fused = StackedLSTM(cfg)
    stacked = StackedLSTM(cfg, fused=False)
    assert fused.fused and not stacked.fused and fused.lstm is not None
    suffixes = ["", "_reverse"] if cfg.bidirectional else [""]
    for i, layer in enumerate(stacked.layers):
        for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            for sfx in suffixes:
                getattr(layer, f"{kind}_l0{sfx}").data.copy_(
                    getattr(fused.lstm, f"{kind}_l{i}{sfx}")
                )
    stacked.head.load_state_dict(fused.head.state_dict())
    return fused, stacked


@pytest.mark.parametrize("bidirectional", [False, True])
def test_fused_and_stacked_paths_compute_the_same_function(bidirectional: bool) -> None:
    cfg = ModelConfig(
        input_size=3, hidden_sizes=(5, 5, 5), output_size=2, bidirectional=bidirectional
    )
    fused, stacked = fused_and_stacked(cfg)
    x = torch.randn(4, 9, 3)
    h0 = torch.randn(3 * cfg.num_directions, 4, 5)
    c0 = torch.randn(3 * cfg.num_directions, 4, 5)
    y1, (h1, c1) = fused(x, (h0, c0), return_state=True)
    y2, (h2, c2) = stacked(x, (h0, c0), return_state=True)
    torch.testing.assert_close(y1, y2)
    torch.testing.assert_close(h1, h2)
    torch.testing.assert_close(c1, c2)


def test_explicit_zero_state_equals_omitted_state() -> None:
    for hidden in [(20, 20, 20, 20), (20, 12, 8)]:
        cfg = ModelConfig(input_size=10, hidden_sizes=hidden, output_size=5)
        model = build_model(cfg).eval()
        x = torch.randn(32, 50, 10)
        if cfg.uniform:
            state = (torch.zeros(4, 32, 20), torch.zeros(4, 32, 20))
        else:
            state = [(torch.zeros(1, 32, h), torch.zeros(1, 32, h)) for h in hidden]
        torch.testing.assert_close(model(x, state), model(x))


@pytest.mark.parametrize("hidden", [(6, 6, 6), (6, 3, 5)])
def test_state_carried_across_chunks_equals_one_pass(hidden: tuple[int, ...]) -> None:
    model = build_model(ModelConfig(input_size=2, hidden_sizes=hidden, output_size=1)).eval()
    x = torch.randn(3, 20, 2)
    y_full, s_full = model(x, return_state=True)
    _, s1 = model(x[:, :8], return_state=True)
    y2, s2 = model(x[:, 8:], s1, return_state=True)
    torch.testing.assert_close(y2, y_full)
    flat = (lambda s: [t for pair in s for t in pair]) if isinstance(s_full, list) else list
    for a, b in zip(flat(s2), flat(s_full), strict=True):
        torch.testing.assert_close(a, b)


def test_batch_first_false_takes_seq_major_input() -> None:
    cfg = ModelConfig(input_size=3, hidden_sizes=(4, 4), output_size=2, batch_first=False)
    model = build_model(cfg).eval()
    x = torch.randn(11, 5, 3)  # (seq, batch, features)
    y, (h, _) = model(x, return_state=True)
    assert y.shape == (5, 2) and h.shape == (2, 5, 4)
    batch_major = build_model(ModelConfig(input_size=3, hidden_sizes=(4, 4), output_size=2)).eval()
    batch_major.load_state_dict(model.state_dict())
    torch.testing.assert_close(batch_major(x.transpose(0, 1)), y)


def test_dropout_between_layers_only() -> None:
    one = build_model(ModelConfig(input_size=2, hidden_sizes=(4,), output_size=1, dropout=0.5))
    assert one.lstm is not None and one.lstm.dropout == 0.0  # no "between" with one layer
    deep = build_model(ModelConfig(input_size=2, hidden_sizes=(4, 4), output_size=1, dropout=0.5))
    assert deep.lstm is not None and deep.lstm.dropout == 0.5
    # Eval mode: dropout off, so two forward passes agree; train mode: they differ.
    x = torch.randn(8, 5, 2)
    deep.eval()
    torch.testing.assert_close(deep(x), deep(x))
    deep.train()
    assert not torch.equal(deep(x), deep(x))


def test_single_layer_with_dropout_gives_no_warning(recwarn: pytest.WarningsRecorder) -> None:
    build_model(ModelConfig(input_size=2, hidden_sizes=(4,), output_size=1, dropout=0.3))
    assert not [w for w in recwarn if "dropout" in str(w.message)]


def test_forget_gate_bias_starts_at_one() -> None:
    model = build_model(ModelConfig(input_size=2, hidden_sizes=(4, 3), output_size=1))
    for layer in model.layers:
        total = layer.bias_ih_l0 + layer.bias_hh_l0
        h = layer.hidden_size
        torch.testing.assert_close(total[h : 2 * h], torch.ones(h))


def test_config_round_trips_through_json() -> None:
    cfg = ModelConfig(
        input_size=3,
        hidden_sizes=(8, 4),
        output_size=2,
        dropout=0.25,
        bidirectional=True,
        residual=True,
        layer_norm=True,
    )
    again = ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and isinstance(again.hidden_sizes, tuple)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"hidden_sizes": ()}, "at least one layer"),
        ({"hidden_sizes": (4, 0)}, "hidden_sizes[1] must be an int >= 1, but got 0"),
        ({"hidden_sizes": (4, 2.5)}, "hidden_sizes[1]"),
        ({"dropout": 1.0}, "dropout must be in [0, 1), but got 1.0"),
        ({"dropout": -0.1}, "dropout must be in [0, 1)"),
        ({"input_size": 0}, "input_size must be an int >= 1, but got 0"),
        ({"output_size": True}, "output_size"),
        ({"bidirectional": 1}, "bidirectional must be true or false"),
    ],
)
def test_bad_config_is_refused_naming_the_value(kwargs: dict[str, object], message: str) -> None:
    base: dict[str, object] = {"input_size": 2, "hidden_sizes": (4,), "output_size": 1}
    with pytest.raises(ValueError) as info:
        ModelConfig(**{**base, **kwargs})  # type: ignore[arg-type]
    assert message in str(info.value)


def test_from_dict_refuses_unknown_and_missing_keys() -> None:
    with pytest.raises(ValueError, match=r"unknown model config key\(s\) \['layers'\]"):
        ModelConfig.from_dict(
            {"input_size": 1, "hidden_sizes": [2], "output_size": 1, "layers": 3}
        )
    with pytest.raises(ValueError, match="missing required key"):
        ModelConfig.from_dict({"input_size": 1, "output_size": 1})


def test_bad_input_and_state_are_refused() -> None:
    model = build_model(ModelConfig(input_size=3, hidden_sizes=(4, 4), output_size=1))
    with pytest.raises(ValueError, match=r"3-D \(batch, seq, features\), but got shape \(5, 3\)"):
        model(torch.randn(5, 3))
    with pytest.raises(
        ValueError,
        match="input has 2 features per step, but the model was built with input_size=3",
    ):
        model(torch.randn(5, 4, 2))
    with pytest.raises(ValueError, match=r"must have shape \(2, 5, 4\)"):
        model(torch.randn(5, 4, 3), (torch.zeros(1, 5, 4), torch.zeros(1, 5, 4)))
    mixed = build_model(ModelConfig(input_size=3, hidden_sizes=(4, 2), output_size=1))
    with pytest.raises(ValueError, match="list of 2 \\(h, c\\) pairs"):
        mixed(torch.randn(5, 4, 3), (torch.zeros(2, 5, 4), torch.zeros(2, 5, 4)))
    with pytest.raises(ValueError, match=r"layer 1 h must have shape \(1, 5, 2\)"):
        mixed(torch.randn(5, 4, 3), [(torch.zeros(1, 5, 4),) * 2, (torch.zeros(1, 5, 4),) * 2])


def test_save_model_round_trips_a_model_built_by_hand(tmp_path: Path) -> None:
    import depthsearch
    from depthsearch.errors import InputError

    config = ModelConfig(
        input_size=3, hidden_sizes=(16, 8, 4), output_size=2, dropout=0.2, bidirectional=True
    )
    torch.manual_seed(0)
    model = build_model(config)
    x = torch.randn(5, 7, 3)
    expected = model.eval()(x)
    # Its ModelConfig, the same as a dict, or None (the model's own): each loads back.
    for passed, folder in ((config, "a"), (config.to_dict(), "b"), (None, "c")):
        depthsearch.save_model(model, passed, tmp_path / folder)
        loaded = depthsearch.load_model(tmp_path / folder)
        assert loaded.config == config
        assert torch.equal(loaded(x), expected)
    # A config that is not the model's is refused, naming both; nothing is written.
    other = ModelConfig(input_size=3, hidden_sizes=(16, 8), output_size=2)
    with pytest.raises(InputError, match=r"describes .*hidden_sizes=\(16, 8\).* but the model"):
        depthsearch.save_model(model, other, tmp_path / "d")
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not a weights file\n", "not a weights file written by `depthsearch export --retrain`"),
        (None, "holds a list, not a model's weights"),
    ],
)
def test_a_weights_file_that_is_not_one_is_a_one_line_error(
    tmp_path: Path, content: bytes | None, message: str
) -> None:
    import depthsearch
    from depthsearch.errors import InputError

    model = build_model(ModelConfig(input_size=1, hidden_sizes=(4,), output_size=1))
    depthsearch.save_model(model, None, tmp_path)
    if content is None:
        torch.save([1, 2], tmp_path / "model.pt")
    else:
        (tmp_path / "model.pt").write_bytes(content)
    with pytest.raises(InputError, match=re.escape(message)) as info:
        depthsearch.load_model(tmp_path)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", ["tpu", "gpu", "cuda:x", "CPU"])
def test_an_unknown_device_is_a_one_line_error(name: str) -> None:
    from depthsearch.errors import InputError
    from depthsearch.learn.train import resolve_device

    with pytest.raises(InputError, match="must be 'auto', 'cpu', 'cuda' or 'cuda:N'"):
        resolve_device(name)


def test_each_readout_reads_what_it_says() -> None:
    """``last``: the top layer's last step; ``final``: each direction's own final step;
    ``mean`` / ``max``: over the steps. Checked against the top layer's outputs."""
    torch.manual_seed(0)
    x = torch.randn(3, 7, 2)
    for readout in ("last", "final", "mean", "max"):
        cfg = ModelConfig(input_size=2, output_size=1, hidden_sizes=(4,), bidirectional=True)
        model = build_model(dataclasses.replace(cfg, readout=readout)).eval()
        assert model.lstm is not None
        out, _ = model.lstm(x)
        expected = {
            "last": out[:, -1],
            "final": torch.cat([out[:, -1, :4], out[:, 0, 4:]], dim=-1),
            "mean": out.mean(dim=1),
            "max": out.amax(dim=1),
        }[readout]
        torch.testing.assert_close(model(x), model.head(expected))
    # A config saved before the readout existed rebuilds with the last step's.
    assert ModelConfig.from_dict(cfg.to_dict()).readout == "last"
    assert "readout" not in cfg.to_dict()
    with pytest.raises(ValueError, match=r"readout must be one of \['last', 'final'"):
        ModelConfig(input_size=2, output_size=1, hidden_sizes=(4,), readout="first")
