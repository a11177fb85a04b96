"""The training loop (torch only; knows nothing of Optuna).

Data lives on the training device and is batched by indexing: no DataLoader, no per-batch copy
from the host, and one host synchronisation per epoch (reading the epoch's losses).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import math
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from depthsearch.errors import InputError, NonFiniteLossError
from depthsearch.learn.data import Windows
from depthsearch.learn.evaluate import (
    Evaluation,
    assess,
    assess_val,
    autocast_for,
    evaluate,
    run_batch,
)

__all__ = [
    "CorruptCheckpoint",
    "EpochResult",
    "Evaluation",
    "FitOptions",
    "History",
    "TrainState",
    "assess",
    "evaluate",
    "fit",
    "resolve_device",
    "seed_torch",
]


@dataclasses.dataclass(frozen=True)
class FitOptions:
    """Hyperparameters of one training run."""

    lr: float
    batch_size: int
    max_epochs: int
    grad_clip: float = 1.0
    weight_decay: float = 0.0
    patience: int = 0
    #: bf16 autocast on CUDA; off, as ``[train] amp`` is (measured no faster on an H100).
    amp: bool = False
    seed: int = 0
    #: An epoch trains at least this many batches: a small data set passes over its
    #: samples several times an epoch (in a new order each time).
    min_batches: int = 1


@dataclasses.dataclass
class EpochResult:
    epoch: int
    train_loss: float
    val_loss: float
    seconds: float = 0.0
    #: A classification's ``val_accuracy`` and ``val_f1`` (macro-F1) at this epoch.
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    #: A classification's confusion matrix at this epoch: ``[true class][predicted class]``.
    confusion: list[list[int]] | None = None
    #: The validation loss's standard error over the samples (its noise on this split).
    val_loss_se: float = 0.0


@dataclasses.dataclass
class History:
    """What a run did, filled in epoch by epoch (readable even when a callback stopped it)."""

    epochs: list[EpochResult] = dataclasses.field(default_factory=list)
    stopped_early: bool = False

    @property
    def best(self) -> EpochResult | None:
        return min(self.epochs, key=lambda e: e.val_loss) if self.epochs else None

    @property
    def seconds_per_epoch(self) -> float:
        return sum(e.seconds for e in self.epochs) / len(self.epochs) if self.epochs else 0.0


class CorruptCheckpoint(ValueError):
    """Bytes that are not a whole, intact training state."""


#: The first bytes of a saved training state, then the SHA-256 of the rest, then the rest.
_MAGIC = b"depthsearch-train-state-1\n"


def _cpu_copy(value: Any) -> Any:
    """``value`` with every tensor copied to the CPU (dicts and lists walked)."""
    if isinstance(value, Tensor):
        detached = value.detach()
        return detached.clone() if detached.device.type == "cpu" else detached.to("cpu")
    if isinstance(value, dict):
        return {k: _cpu_copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_cpu_copy(v) for v in value)
    return value


@dataclasses.dataclass
class TrainState:
    """Everything :func:`fit` needs to go on after ``epoch`` as if it had never stopped: the
    model, the optimiser, the random states (batch order, dropout), the early-stopping state and
    the epochs so far. On the CPU a run resumed from it trains bit for bit as one that never
    stopped."""

    epoch: int
    model: dict[str, Tensor]
    optimizer: dict[str, Any]
    batch_rng: Tensor
    torch_rng: Tensor
    cuda_rng: Tensor | None
    best: float
    since_best: int
    epochs: list[EpochResult]
    #: What the caller stores beside the state (which trial it is, say), checked on load.
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: Whether the model has left the level of one that learned nothing (patience counts).
    learned: bool = True

    def to_bytes(self) -> bytes:
        payload = io.BytesIO()
        torch.save(
            {
                "epoch": self.epoch,
                "model": self.model,
                "optimizer": self.optimizer,
                "batch_rng": self.batch_rng,
                "torch_rng": self.torch_rng,
                "cuda_rng": self.cuda_rng,
                "best": self.best,
                "since_best": self.since_best,
                "epochs": [dataclasses.astuple(e) for e in self.epochs],
                "meta": self.meta,
                "learned": self.learned,
            },
            payload,
        )
        body = payload.getvalue()
        return _MAGIC + hashlib.sha256(body).digest() + body

    @classmethod
    def from_bytes(cls, data: bytes) -> TrainState:
        """Raises :class:`CorruptCheckpoint` for anything but an intact saved state."""
        head = len(_MAGIC)
        if not data.startswith(_MAGIC) or len(data) < head + 32:
            raise CorruptCheckpoint("not a depthsearch training state (or cut short)")
        digest, body = data[head : head + 32], data[head + 32 :]
        if hashlib.sha256(body).digest() != digest:
            raise CorruptCheckpoint("its checksum does not match (a partial or damaged write)")
        try:
            raw = torch.load(io.BytesIO(body), map_location="cpu", weights_only=True)
            return cls(
                epoch=int(raw["epoch"]),
                model=raw["model"],
                optimizer=raw["optimizer"],
                batch_rng=raw["batch_rng"],
                torch_rng=raw["torch_rng"],
                cuda_rng=raw["cuda_rng"],
                best=float(raw["best"]),
                since_best=int(raw["since_best"]),
                epochs=[EpochResult(*e) for e in raw["epochs"]],
                meta=dict(raw["meta"]),
                learned=bool(raw.get("learned", True)),
            )
        except Exception as e:  # intact bytes, but not what we write
            raise CorruptCheckpoint(f"unreadable ({type(e).__name__}: {e})") from e


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda``/``cuda:N`` must exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not re.fullmatch(r"cpu|cuda(:\d+)?", name):
        raise InputError(f"device {name!r}: must be 'auto', 'cpu', 'cuda' or 'cuda:N'")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(
                f"device {name!r} was asked for, but this torch ({torch.__version__}) sees no "
                "CUDA device; use device = 'auto' or 'cpu'"
            )
        index = device.index or 0
        if index >= torch.cuda.device_count():
            raise InputError(
                f"device {name!r} was asked for, but only {torch.cuda.device_count()} CUDA "
                "device(s) are visible"
            )
    return device


def seed_torch(seed: int, device: torch.device) -> None:
    """Seeds what builds and trains a model on ``device`` (its weights, its dropout).

    ``torch.manual_seed`` also queues a seed for every lazily started accelerator; where none
    has started, each such call keeps a formatted stack of its caller (a millisecond in a
    worker, and a list that grows by one every trial). On the CPU the CPU's generator is all
    that draws, and it is seeded exactly as ``torch.manual_seed`` seeds it."""
    if device.type == "cpu":
        torch.default_generator.manual_seed(seed)
    else:
        torch.manual_seed(seed)


def _batches(
    n: int, batch_size: int, generator: torch.Generator, device: torch.device, least: int = 1
) -> Iterator[tuple[Tensor, Tensor]]:
    """Each batch's sample indices on the device and on the CPU (where lengths live): passes
    over the samples, each in a new order, until at least ``least`` batches were given."""
    given = 0
    while given < least:
        cpu_order = torch.randperm(n, generator=generator)
        order = cpu_order.to(device, non_blocking=True)
        for start in range(0, n, batch_size):
            yield order[start : start + batch_size], cpu_order[start : start + batch_size]
            given += 1


class _Patience:
    """Early stopping: ``patience`` epochs without a better validation loss, counted only
    once the model has learned something, that is left the level a model that learned
    nothing sits at (a classification: no better than the majority class, within two
    binomial standard errors of the validation part; otherwise no better than the training
    mean, within two standard errors of the loss). A long plateau at chance before a stack
    starts to learn is not the end of its learning."""

    def __init__(self, patience: int, data: Windows) -> None:
        self.patience = patience
        self.best = math.inf
        self.since_best = 0
        self.learned = False
        self._chance = _chance_level(data)

    def update(self, result: EpochResult) -> bool:
        """Takes an epoch's result; True when training should stop."""
        if not self.learned:
            self.learned = self._chance(result)
        if result.val_loss < self.best:
            self.best, self.since_best = result.val_loss, 0
        elif self.learned:
            self.since_best += 1
        return bool(self.patience) and self.since_best >= self.patience


def _chance_level(data: Windows) -> Callable[[EpochResult], bool]:
    """Whether an epoch's result is beyond what a model that learned nothing would do."""
    if data.kind == "classify":
        counts = torch.bincount(data.y_train.cpu(), minlength=len(data.classes))
        n = max(1, len(data.y_val))
        p = float((data.y_val.cpu() == int(counts.argmax())).double().mean())
        bar = p + 2.0 * math.sqrt(max(p * (1 - p), 1.0 / n) / n)
        return lambda r: r.metrics.get("val_accuracy", 1.0) > bar
    mean = data.y_train.double().mean(0)
    null = float(((data.y_val.double() - mean) ** 2).mean())
    return lambda r: r.val_loss < null - 2.0 * r.val_loss_se


def _train_epoch(
    model: nn.Module,
    data: Windows,
    options: FitOptions,
    run: _Run,
    interrupt: Callable[[], None] | None,
) -> float:
    """One pass over the training samples in a seeded order; the mean training loss."""
    model.train()
    device, lengths = data.x_train.device, data.len_train
    # Batch losses stay on the device, summed once per epoch (one dispatch per batch).
    losses: list[Tensor] = []
    sizes: list[int] = []
    n = data.x_train.shape[0]
    for idx, cpu_idx in _batches(
        n, options.batch_size, run.generator, device, options.min_batches
    ):
        if interrupt is not None:
            interrupt()
        xb, yb = data.x_train[idx], data.y_train[idx]
        with run.autocast:
            out = run_batch(model, xb, None if lengths is None else lengths[cpu_idx])
            loss = run.loss_fn(out.float(), yb)
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(run.params, options.grad_clip)
        run.optimizer.step()
        losses.append(loss.detach())
        sizes.append(idx.shape[0])
    weights = torch.tensor(sizes, dtype=torch.float32).to(device, non_blocking=True)
    return float(torch.dot(torch.stack(losses), weights).item()) / sum(sizes)


class _Run:
    """What one :func:`fit` call keeps from epoch to epoch."""

    def __init__(self, model: nn.Module, data: Windows, options: FitOptions) -> None:
        self.device = data.x_train.device
        self.generator = torch.Generator().manual_seed(options.seed)
        # Listed once: model.parameters() walks every submodule, and clipping asks every batch.
        self.params = list(model.parameters())
        self.optimizer = torch.optim.Adam(
            self.params, lr=options.lr, weight_decay=options.weight_decay
        )
        self.loss_fn: nn.Module = (
            nn.CrossEntropyLoss() if data.kind == "classify" else nn.MSELoss()
        )
        self.autocast = autocast_for(self.device, options.amp)  # re-entered every batch
        self.patience = _Patience(options.patience, data)

    def resume(self, model: nn.Module, state: TrainState, history: History) -> int:
        """Goes on from ``state``; the first epoch to train."""
        model.load_state_dict(state.model)
        self.optimizer.load_state_dict(state.optimizer)
        self.generator.set_state(state.batch_rng)
        torch.set_rng_state(state.torch_rng)
        if self.device.type == "cuda" and state.cuda_rng is not None:
            torch.cuda.set_rng_state(state.cuda_rng, self.device)
        self.patience.best, self.patience.since_best = state.best, state.since_best
        self.patience.learned = state.learned
        history.epochs[:0] = [dataclasses.replace(e) for e in state.epochs]
        return state.epoch + 1

    def _optimizer_copy(self) -> dict[str, Any]:
        """The optimiser's state dict with its tensors copied to the CPU: ``state_dict``
        packs its parameter groups afresh (numbers and tuples), but hands out the live
        per-parameter state."""
        packed = self.optimizer.state_dict()
        packed["state"] = _cpu_copy(packed["state"])
        return packed

    def state(self, model: nn.Module, epoch: int, history: History) -> TrainState:
        """A copy of everything, on the CPU, to go on after ``epoch``."""
        return TrainState(
            epoch=epoch,
            model=_cpu_copy(model.state_dict()),
            optimizer=self._optimizer_copy(),
            batch_rng=self.generator.get_state(),
            torch_rng=torch.get_rng_state(),
            cuda_rng=torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
            best=self.patience.best,
            since_best=self.patience.since_best,
            # An epoch's result is not changed once the next one started (its ``seconds``
            # are set right after this copy): only the last one is copied.
            epochs=[*history.epochs[:-1], *map(dataclasses.replace, history.epochs[-1:])],
            learned=self.patience.learned,
        )


def fit(
    model: nn.Module,
    data: Windows,
    options: FitOptions,
    *,
    on_epoch_end: Callable[[EpochResult, History], None] | None = None,
    history: History | None = None,
    interrupt: Callable[[], None] | None = None,
    resume: TrainState | None = None,
    checkpoint: Callable[[TrainState], None] | None = None,
    checkpoint_every: int = 1,
) -> History:
    """Trains ``model`` on ``data`` with Adam, MSE (cross-entropy for a classification) and
    gradient clipping by norm.

    Args:
        model: takes ``(batch, window, features)`` and returns ``(batch, horizon)``; already on
            the device of ``data``.
        data: windows on the training device.
        options: learning rate, batch size, epochs, clipping, seed, patience (see
            :class:`_Patience`).
        on_epoch_end: called after every epoch with its result; it may raise to stop training
            (a pruner does). The epoch's ``seconds`` include the call.
        history: filled in place when given, so that a caller still has the epochs trained
            when ``on_epoch_end`` raised.
        interrupt: called before every batch; it raises to stop training at once (a worker's
            SIGTERM check). A plain attribute read, so it costs nothing measurable.
        resume: go on from this state (its epochs are put in ``history`` first, so that
            ``history.best`` covers them; ``on_epoch_end`` sees only the new ones).
        checkpoint: called every ``checkpoint_every`` epochs (not after the last) with a copy
            of the state on the CPU, taken after ``on_epoch_end``; the caller stores it (in
            the background: the copy is its own).

    Raises:
        NonFiniteLossError: the training or validation loss became NaN or infinite.
    """
    history = history if history is not None else History()
    run = _Run(model, data, options)
    first = run.resume(model, resume, history) if resume is not None else 1
    for epoch in range(first, options.max_epochs + 1):
        started = time.perf_counter()
        result = _epoch(model, data, options, run, epoch, interrupt)
        try:
            history.epochs.append(result)
            stop = run.patience.update(result)
            if on_epoch_end is not None:
                on_epoch_end(result, history)
            due = epoch < options.max_epochs and epoch % checkpoint_every == 0
            if checkpoint is not None and not stop and due:
                checkpoint(run.state(model, epoch, history))
        finally:  # the callback's time counts: a pruner's, a report's
            result.seconds = time.perf_counter() - started
        if stop:
            history.stopped_early = True
            break
    return history


def _epoch(
    model: nn.Module,
    data: Windows,
    options: FitOptions,
    run: _Run,
    epoch: int,
    interrupt: Callable[[], None] | None,
) -> EpochResult:
    """One epoch trained and judged on the validation samples."""
    train_loss = _train_epoch(model, data, options, run, interrupt)
    if not math.isfinite(train_loss):
        raise NonFiniteLossError(epoch, train_loss)
    judged = assess_val(model, data, amp=options.amp)
    if not math.isfinite(judged.loss):
        raise NonFiniteLossError(epoch, judged.loss)
    return EpochResult(
        epoch,
        train_loss,
        judged.loss,
        metrics=judged.metrics,
        confusion=judged.confusion,
        val_loss_se=judged.se,
    )
