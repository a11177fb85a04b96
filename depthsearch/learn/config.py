"""What rebuilds a model, without torch: :class:`ModelConfig` and the config document
(``best.json`` / a saved model's ``config.json``) that carries it.

A command that reads or writes configs but never builds a network (``export`` without
``--retrain``, ``report``) imports this, not torch: a second of CPU at every start.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from depthsearch._text import json_text
from depthsearch.errors import InputError
from depthsearch.spec import READOUTS

__all__ = [
    "CONFIG_FILE",
    "FORMAT",
    "MODEL_FILE",
    "ModelConfig",
    "load_config",
    "read_document",
    "write_document",
]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a candidate model.

    Args:
        input_size: features per timestep.
        hidden_sizes: width of each LSTM layer, bottom to top; the layer count is its length.
        output_size: values predicted per sequence (the forecast horizon).
        dropout: dropout probability between layers; never applied after the last layer.
        bidirectional: run every layer in both directions.
        residual: add a skip connection around every layer but the first, with a linear
            projection where the widths differ.
        layer_norm: apply LayerNorm to the output of every layer but the last.
        batch_first: inputs are ``(batch, seq, features)`` when true, else
            ``(seq, batch, features)``.
        readout: what the head reads (:data:`READOUTS`).
    """

    input_size: int
    hidden_sizes: tuple[int, ...]
    output_size: int
    dropout: float = 0.0
    bidirectional: bool = False
    residual: bool = False
    layer_norm: bool = False
    batch_first: bool = True
    readout: str = "last"

    def __post_init__(self) -> None:
        sizes = self.hidden_sizes
        if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Sequence):
            raise ValueError(
                f"hidden_sizes must be a sequence of positive ints, but got {sizes!r}"
            )
        object.__setattr__(self, "hidden_sizes", tuple(sizes))
        if len(self.hidden_sizes) == 0:
            raise ValueError("hidden_sizes must name at least one layer, but got ()")
        for i, width in enumerate(self.hidden_sizes):
            if not _is_int(width) or width < 1:
                raise ValueError(
                    f"hidden_sizes[{i}] must be an int >= 1, but got {width!r} "
                    f"in hidden_sizes={self.hidden_sizes!r}"
                )
        for name in ("input_size", "output_size"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, but got {value!r}")
        dropout = self.dropout
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)):
            raise ValueError(f"dropout must be a float in [0, 1), but got {dropout!r}")
        if not (0.0 <= float(dropout) < 1.0) or math.isnan(dropout):
            raise ValueError(f"dropout must be in [0, 1), but got {dropout!r}")
        object.__setattr__(self, "dropout", float(dropout))
        for name in ("bidirectional", "residual", "layer_norm", "batch_first"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, but got {getattr(self, name)!r}")
        if self.readout not in READOUTS:
            raise ValueError(f"readout must be one of {list(READOUTS)}, but got {self.readout!r}")

    @property
    def num_layers(self) -> int:
        """The number of stacked LSTM layers."""
        return len(self.hidden_sizes)

    @property
    def num_directions(self) -> int:
        """2 when bidirectional, else 1."""
        return 2 if self.bidirectional else 1

    @property
    def uniform(self) -> bool:
        """Whether every layer has the same width."""
        return len(set(self.hidden_sizes)) == 1

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict that :meth:`from_dict` turns back into an equal config (the
        readout only where it is not the last step's: configs saved before it rebuild)."""
        out = dataclasses.asdict(self)
        out["hidden_sizes"] = list(self.hidden_sizes)
        if self.readout == "last":
            del out["readout"]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelConfig:
        """Rebuild a config from :meth:`to_dict` output; unknown keys are refused."""
        if not isinstance(data, Mapping):
            raise ValueError(f"a model config must be a mapping, but got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"unknown model config key(s) {unknown}; allowed keys are {sorted(known)}"
            )
        missing = sorted(
            f.name
            for f in dataclasses.fields(cls)
            if f.name not in data and f.default is dataclasses.MISSING
        )
        if missing:
            raise ValueError(f"model config is missing required key(s) {missing}")
        return cls(**dict(data))


FORMAT = "depthsearch.config/1"
MODEL_FILE = "model.pt"
CONFIG_FILE = "config.json"


def write_document(path: Path, doc: dict[str, Any]) -> None:
    """Writes a config document as JSON, atomically (a reader never sees half a file)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json_text(doc) + "\n", encoding="utf-8")
        tmp.replace(path)
    except OSError as e:
        raise InputError(f"cannot write {path}: {e.strerror or e}") from e


def read_document(path: str | Path) -> dict[str, Any]:
    """Reads a config document (as ``depthsearch export`` writes it)."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{p}: no such file") from None
    except (OSError, ValueError) as e:
        raise InputError(f"{p}: not a depthsearch export ({e})") from e
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or "model" not in doc:
        raise InputError(f"{p}: not a depthsearch export (expected format {FORMAT!r})")
    return doc


def load_config(path: str | Path) -> ModelConfig:
    """The :class:`ModelConfig` of an exported config file (``best.json``)."""
    doc = read_document(path)
    try:
        return ModelConfig.from_dict(doc["model"])
    except ValueError as e:
        raise InputError(f"{path}: bad model config: {e}") from e
