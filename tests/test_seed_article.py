"""Every example of ../shared/seed-article.md runs on our model and gives the shapes it promises.

The article builds three models by hand (two explicit layers; a configurable ModuleList stack;
the same with explicit zero initial states). Each is rebuilt here from a ModelConfig and fed the
article's inputs; the article's printed shapes are read from the article itself.
"""

from __future__ import annotations

import re

import pytest
import torch

from depthsearch import ModelConfig, build_model

from .conftest import SEED_ARTICLE

# The article's example settings.
INPUT_SIZE, HIDDEN_SIZE, OUTPUT_SIZE, BATCH, SEQ = 10, 20, 5, 32, 50


def article_examples() -> list[tuple[int, tuple[int, int]]]:
    """(num_layers, promised output shape) for each code block of the article."""
    text = SEED_ARTICLE.read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    out = []
    for block in blocks:
        layers = int(re.search(r"^num_layers = (\d+)", block, flags=re.M).group(1))  # type: ignore[union-attr]
        shape = re.search(r"Should output: torch\.Size\(\[(\d+), (\d+)\]\)", block)
        assert shape is not None
        # The first example hard-codes two LSTMs whatever num_layers says.
        if "self.lstm2" in block:
            layers = 2
        out.append((layers, (int(shape.group(1)), int(shape.group(2)))))
    return out


@pytest.mark.skipif(not SEED_ARTICLE.exists(), reason=f"{SEED_ARTICLE} is not here")
def test_article_has_the_three_examples() -> None:
    assert [layers for layers, _ in article_examples()] == [2, 4, 4]


@pytest.mark.skipif(not SEED_ARTICLE.exists(), reason=f"{SEED_ARTICLE} is not here")
@pytest.mark.parametrize("index", [0, 1, 2])
def test_article_example_runs_with_promised_shape(index: int) -> None:
    layers, promised = article_examples()[index]
    cfg = ModelConfig(
        input_size=INPUT_SIZE, hidden_sizes=(HIDDEN_SIZE,) * layers, output_size=OUTPUT_SIZE
    )
    model = build_model(cfg).eval()
    dummy_input = torch.randn(BATCH, SEQ, INPUT_SIZE)
    output = model(dummy_input)
    assert tuple(output.shape) == promised == (32, 5)
    # The third example initialises (num_layers, batch, hidden) zero states explicitly.
    h_0 = torch.zeros(layers, BATCH, HIDDEN_SIZE)
    c_0 = torch.zeros(layers, BATCH, HIDDEN_SIZE)
    with_state = model(dummy_input, (h_0, c_0))
    assert tuple(with_state.shape) == promised
    torch.testing.assert_close(with_state, output)


def test_article_shapes_hold_without_the_article() -> None:
    for layers in (2, 4):
        model = build_model(ModelConfig(input_size=10, hidden_sizes=(20,) * layers, output_size=5))
        assert model(torch.randn(32, 50, 10)).shape == (32, 5)
        zeros = torch.zeros(layers, 32, 20)
        assert model(torch.randn(32, 50, 10), (zeros, zeros)).shape == (32, 5)
