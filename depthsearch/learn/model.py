"""The stacked LSTM that every candidate is built from.

This module knows nothing of Optuna or of training: a :class:`ModelConfig` alone rebuilds the
model, so an exported config is all a user needs to use a found architecture elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, overload

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from depthsearch.learn.config import ModelConfig
from depthsearch.spec import READOUTS

__all__ = ["READOUTS", "ModelConfig", "StackedLSTM", "State", "build_model"]


#: The recurrent state: ``(h, c)`` of shape ``(layers * directions, batch, hidden)`` when
#: every layer has the same width, else one ``(h, c)`` per layer, each
#: ``(directions, batch, hidden_i)``.
State = tuple[Tensor, Tensor] | list[tuple[Tensor, Tensor]]


class StackedLSTM(nn.Module):
    """A stack of LSTM layers read out (``config.readout``) by a linear head.

    Equal widths without residual or layer-norm use PyTorch's fused multi-layer ``nn.LSTM``
    (one cuDNN call on GPU); anything else is a stack of single-layer LSTMs in which layer
    ``i + 1`` takes layer ``i``'s output width (doubled when bidirectional).
    """

    def __init__(self, config: ModelConfig, *, fused: bool | None = None) -> None:
        super().__init__()
        self.config = config
        directions = config.num_directions
        can_fuse = config.uniform and not config.residual and not config.layer_norm
        self.fused = can_fuse if fused is None else (fused and can_fuse)
        self.lstm: nn.LSTM | None = None
        self.layers = nn.ModuleList()
        self.norms = nn.ModuleList()
        self.projections = nn.ModuleList()
        if self.fused:
            self.lstm = nn.LSTM(
                config.input_size,
                config.hidden_sizes[0],
                num_layers=config.num_layers,
                batch_first=config.batch_first,
                # nn.LSTM warns for dropout on a single layer; there is no "between" then.
                dropout=config.dropout if config.num_layers > 1 else 0.0,
                bidirectional=config.bidirectional,
            )
        else:
            in_width = config.input_size
            for i, width in enumerate(config.hidden_sizes):
                self.layers.append(
                    nn.LSTM(
                        in_width,
                        width,
                        batch_first=config.batch_first,
                        bidirectional=config.bidirectional,
                    )
                )
                out_width = width * directions
                if i > 0 and config.residual:
                    self.projections.append(
                        nn.Identity()
                        if in_width == out_width
                        else nn.Linear(in_width, out_width, bias=False)
                    )
                if i < config.num_layers - 1 and config.layer_norm:
                    self.norms.append(nn.LayerNorm(out_width))
                in_width = out_width
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden_sizes[-1] * directions, config.output_size)
        self._init_forget_bias()

    def _init_forget_bias(self) -> None:
        # A forget-gate bias of 1 keeps the cell state flowing early in training, which deep
        # stacks need (Jozefowicz et al., 2015). PyTorch orders the gates i, f, g, o.
        for name, param in self.named_parameters():
            if "bias_ih" in name or "bias_hh" in name:
                width = param.shape[0] // 4
                with torch.no_grad():
                    param[width : 2 * width].fill_(1.0 if "bias_ih" in name else 0.0)

    def _check_input(self, x: Tensor) -> None:
        cfg = self.config
        layout = "(batch, seq, features)" if cfg.batch_first else "(seq, batch, features)"
        if x.dim() != 3:
            raise ValueError(
                f"input must be 3-D {layout}, but got shape {tuple(x.shape)} ({x.dim()}-D)"
            )
        if x.shape[-1] != cfg.input_size:
            raise ValueError(
                f"input has {x.shape[-1]} features per step, but the model was built with "
                f"input_size={cfg.input_size} (input shape {tuple(x.shape)})"
            )

    def _check_pair(
        self, pair: object, shape: tuple[int, ...], what: str
    ) -> tuple[Tensor, Tensor]:
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ValueError(
                f"{what} must be a pair (h, c) of tensors, but got {type(pair).__name__}"
            )
        h, c = pair
        for label, t in (("h", h), ("c", c)):
            if not isinstance(t, Tensor) or tuple(t.shape) != shape:
                got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
                raise ValueError(
                    f"{what} {label} must have shape {shape} "
                    "(layers * directions, batch, hidden), but got "
                    f"{got}"
                )
        return h, c

    def _split_state(self, state: State | None, batch: int) -> list[tuple[Tensor, Tensor] | None]:
        """Turns the public state layout into one ``(h, c)`` (or None) per layer."""
        cfg = self.config
        d = cfg.num_directions
        if state is None:
            return [None] * cfg.num_layers
        if cfg.uniform:
            shape = (cfg.num_layers * d, batch, cfg.hidden_sizes[0])
            h, c = self._check_pair(state, shape, "initial state")
            return [
                (h[i * d : (i + 1) * d], c[i * d : (i + 1) * d]) for i in range(cfg.num_layers)
            ]
        if not isinstance(state, list) or len(state) != cfg.num_layers:
            raise ValueError(
                f"with mixed widths {cfg.hidden_sizes} the initial state must be a list of "
                f"{cfg.num_layers} (h, c) pairs, one per layer, but got {type(state).__name__}"
                + (f" of length {len(state)}" if isinstance(state, (list, tuple)) else "")
            )
        return [
            self._check_pair(pair, (d, batch, width), f"initial state of layer {i}")
            for i, (pair, width) in enumerate(zip(state, cfg.hidden_sizes, strict=True))
        ]

    def _check_lengths(self, lengths: Tensor, batch: int, steps: int) -> Tensor:
        if not isinstance(lengths, Tensor) or tuple(lengths.shape) != (batch,):
            got = tuple(lengths.shape) if isinstance(lengths, Tensor) else type(lengths).__name__
            raise ValueError(f"lengths must be a tensor of shape ({batch},), but got {got}")
        lengths = lengths.to("cpu", torch.int64)
        if batch and (int(lengths.min()) < 1 or int(lengths.max()) > steps):
            raise ValueError(
                f"lengths must be in [1, {steps}] (the input's steps), but range over "
                f"[{int(lengths.min())}, {int(lengths.max())}]"
            )
        return lengths

    @overload
    def forward(
        self,
        x: Tensor,
        state: State | None = None,
        *,
        lengths: Tensor | None = None,
        return_state: Literal[False] = False,
    ) -> Tensor: ...

    @overload
    def forward(
        self,
        x: Tensor,
        state: State | None = None,
        *,
        lengths: Tensor | None = None,
        return_state: Literal[True],
    ) -> tuple[Tensor, State]: ...

    def forward(
        self,
        x: Tensor,
        state: State | None = None,
        *,
        lengths: Tensor | None = None,
        return_state: bool = False,
    ) -> Tensor | tuple[Tensor, State]:
        """Runs the stack and reads the prediction from its top layer (``config.readout``).

        Args:
            x: ``(batch, seq, input_size)``, or ``(seq, batch, input_size)`` when the config
                says ``batch_first=False``.
            state: initial ``(h0, c0)``, each ``(layers * directions, batch, hidden)`` when all
                widths are equal, else a list of one ``(h, c)`` per layer, each
                ``(directions, batch, hidden_i)``. Zeros when omitted.
            lengths: ``(batch,)``, each sequence's steps when a batch holds sequences of
                different lengths, padded after their end: they run packed
                (:func:`torch.nn.utils.rnn.pack_padded_sequence`), no padding step reaches
                the output, and each is read out at its own steps (the final state is each
                sequence's own, too). None: every sequence has all the steps.
            return_state: also return the final state, in the same layout, so that a caller can
                carry it across chunks of a long sequence.

        Returns:
            ``(batch, output_size)``, and the final state when ``return_state`` is true.
        """
        cfg = self.config
        self._check_input(x)
        batch, steps = (x.shape[0], x.shape[1]) if cfg.batch_first else (x.shape[1], x.shape[0])
        seq: Tensor | PackedSequence = x
        if lengths is not None:
            lengths = self._check_lengths(lengths, batch, steps)
            seq = pack_padded_sequence(
                x, lengths, batch_first=cfg.batch_first, enforce_sorted=False
            )
        out, final = self._stack(seq, state, batch)
        if isinstance(out, PackedSequence):
            out, _ = pad_packed_sequence(out, batch_first=cfg.batch_first)
        y: Tensor = self.head(self._read(out if cfg.batch_first else out.transpose(0, 1), lengths))
        return (y, final) if return_state else y

    def _stack(
        self, seq: Tensor | PackedSequence, state: State | None, batch: int
    ) -> tuple[Tensor | PackedSequence, State]:
        """The layers on whole or packed sequences (dropout, layer norm and residual act on
        the sequences' own steps)."""
        cfg = self.config
        if self.lstm is not None:
            out, (h_n, c_n) = self.lstm(seq, self._fused_state(state, batch))
            return out, (h_n, c_n)
        per_layer = self._split_state(state, batch)
        finals: list[tuple[Tensor, Tensor]] = []
        for i, lstm in enumerate(self.layers):
            layer_in = seq if i == 0 else _on_steps(self._between(i), seq)
            seq, (h_i, c_i) = lstm(layer_in, per_layer[i])
            if i > 0 and cfg.residual:
                skip = self.projections[i - 1](_steps(layer_in))
                seq = _on_steps(skip.add, seq)
            finals.append((h_i, c_i))
        return seq, self._joined(finals)

    def _between(self, i: int) -> Callable[[Tensor], Tensor]:
        """What the steps go through on their way into layer ``i``: layer norm, dropout."""
        norm = self.norms[i - 1] if self.config.layer_norm else nn.Identity()
        return lambda t: self.dropout(norm(t))

    def _read(self, out: Tensor, lengths: Tensor | None) -> Tensor:
        """The top layer's outputs ``out: (batch, steps, width)`` as the head reads them."""
        how, batch = self.config.readout, out.shape[0]
        if how == "last" and lengths is None:  # every batch of a forecast: nothing to index
            return out[:, -1]
        if lengths is None:
            ends = torch.full((batch,), out.shape[1] - 1, device=out.device)
        else:
            ends = lengths.to(out.device) - 1
        last = out[:, -1] if lengths is None else out[torch.arange(batch, device=out.device), ends]
        if how == "last":
            return last
        if how == "final":  # the backward direction's final step is the sequence's first
            width = self.config.hidden_sizes[-1]
            return torch.cat([last[:, :width], out[:, 0, width:]], dim=-1)
        valid = (torch.arange(out.shape[1], device=out.device)[None, :] <= ends[:, None])[
            ..., None
        ]
        if how == "mean":
            return (out * valid).sum(dim=1) / (ends + 1)[:, None]
        return out.masked_fill(~valid, -torch.inf).amax(dim=1)

    def _fused_state(self, state: State | None, batch: int) -> tuple[Tensor, Tensor] | None:
        """The fused ``nn.LSTM``'s initial state, checked: a pair of
        ``(layers * directions, batch, hidden)``."""
        if state is None:
            return None
        cfg = self.config  # fused: every layer has the same width
        shape = (cfg.num_layers * cfg.num_directions, batch, cfg.hidden_sizes[0])
        return self._check_pair(state, shape, "initial state")

    def _joined(self, finals: list[tuple[Tensor, Tensor]]) -> State:
        """The per-layer final states in the public layout (see :data:`State`)."""
        if self.config.uniform:
            return (
                torch.cat([h for h, _ in finals], dim=0),
                torch.cat([c for _, c in finals], dim=0),
            )
        return finals


def _steps(seq: Tensor | PackedSequence) -> Tensor:
    """The steps of whole sequences (the tensor itself) or of packed ones (their data)."""
    return seq.data if isinstance(seq, PackedSequence) else seq


def _on_steps(fn: Callable[[Tensor], Tensor], seq: Tensor | PackedSequence) -> Any:
    """``fn`` applied to the steps of whole or packed sequences, in the same form."""
    if isinstance(seq, PackedSequence):
        return seq._replace(data=fn(seq.data))
    return fn(seq)


def build_model(config: ModelConfig) -> StackedLSTM:
    """Builds the stacked LSTM described by ``config`` (weights freshly initialised)."""
    if not isinstance(config, ModelConfig):
        raise ValueError(f"build_model needs a ModelConfig, but got {type(config).__name__}")
    return StackedLSTM(config)
