"""The validated study spec: frozen dataclasses that check themselves when built.

Every bound and default is written once, on the field (see :mod:`._params`); the TOML reader
(:mod:`._toml`) takes both from here. The dict form (:meth:`StudySpec.to_dict`) has the shape of
a study file, so a spec stored in a study rebuilds through the very same checks.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Literal

from depthsearch._text import public_uri
from depthsearch.spec._data import TASKS, DataSpec, TaskSpec, applicable
from depthsearch.spec._params import (
    Choices,
    Fixed,
    FloatRange,
    IntRange,
    ParamSpec,
    documented,
    param,
    rule,
    table_error,
    validate_fields,
)

__all__ = [
    "MAX_LAYERS",
    "OBJECTIVES",
    "PRUNER_KEYS",
    "READOUTS",
    "TASKS",
    "ConfirmSpec",
    "DataSpec",
    "PrunerSpec",
    "SamplerSpec",
    "SpaceSpec",
    "StudySpec",
    "TaskSpec",
    "TrackingSpec",
    "TrainSpec",
    "WorkersSpec",
    "check_objectives",
]

MAX_LAYERS = 64
#: How the head reads the top layer's outputs: at each sequence's ``last`` step; each
#: direction's ``final`` step (a bidirectional stack's backward direction ends at step 0);
#: their ``mean`` or ``max`` over the sequence's steps.
READOUTS = ("last", "final", "mean", "max")
#: What ``[space] readout = "auto"`` (the default) becomes, by task: the last step everywhere
#: (on the UCR sets tried, pooled read-outs fit the few validation sequences as well and the
#: test sequences worse); the search can be given any of :data:`READOUTS`.
AUTO_READOUT: dict[str, Any] = {}
#: What a study may optimise. ``val_loss`` comes first: it is what the learning curves show;
#: the accuracy and macro-F1 of a classification are maximised, the rest minimised.
OBJECTIVES = ("val_loss", "param_count", "seconds_per_epoch", "val_accuracy", "val_f1")
#: The objectives that are maximised.
MAXIMISED = ("val_accuracy", "val_f1")

#: The keys each pruner kind takes (besides ``kind``).
PRUNER_KEYS: dict[str, tuple[str, ...]] = {
    "none": (),
    "median": ("n_startup_trials", "n_warmup_steps", "interval_steps"),
    "percentile": ("percentile", "n_startup_trials", "n_warmup_steps", "interval_steps"),
    "depth-aware": ("n_startup_trials", "n_warmup_steps", "interval_steps", "depth_warmup"),
    "cost-aware": ("n_startup_trials", "n_warmup_steps", "interval_steps", "depth_warmup"),
    "hyperband": ("min_resource", "reduction_factor"),
    "successive-halving": ("min_resource", "reduction_factor", "min_early_stopping_rate"),
}


@dataclasses.dataclass(frozen=True)
class SpaceSpec:
    """What a trial samples. Parameter names are those shown in the dashboard."""

    TABLE: ClassVar[str] = "space"

    num_layers: ParamSpec = param(
        IntRange(1, 4),
        "int",
        1,
        MAX_LAYERS,
        doc="The number of stacked LSTM layers: the depth searched.",
    )
    hidden_size: ParamSpec = param(
        Choices((16, 32, 64)),
        "int",
        1,
        65_536,
        doc=("Each layer's width (every layer's, or one per layer with per_layer_hidden)."),
    )
    per_layer_hidden: bool = rule(
        False,
        "bool",
        doc=(
            "Search a width per layer (hidden_size_0, hidden_size_1, ...) instead of one for all."
        ),
    )
    dropout: ParamSpec = param(
        FloatRange(0.0, 0.5),
        "float",
        0.0,
        1.0,
        high_open=True,
        doc=("Dropout between layers (never after the last; a one-layer candidate has none)."),
    )
    lr: ParamSpec = param(
        FloatRange(5e-4, 2e-2, log=True),
        "float",
        0.0,
        10.0,
        low_open=True,
        doc="Adam's learning rate.",
    )
    batch_size: ParamSpec = param(
        Choices((16, 32, 64)), "int", 1, 1 << 20, doc="Samples per training batch."
    )
    bidirectional: ParamSpec = param(
        Fixed(False), "bool", doc="Run every layer in both directions."
    )
    residual: ParamSpec = param(
        Fixed(False),
        "bool",
        doc=(
            "A skip connection around every layer but the first (projected where widths differ)."
        ),
    )
    layer_norm: ParamSpec = param(
        Fixed(False), "bool", doc="LayerNorm on the output of every layer but the last."
    )
    #: How the head reads the top layer: ``last``, ``final`` (each direction's final step),
    #: ``mean`` or ``max`` pooling over the steps, a list for the search to choose, or
    #: ``auto`` (:data:`AUTO_READOUT`).
    readout: ParamSpec = param(
        Fixed("auto"),
        "str",
        allowed=(*READOUTS, "auto"),
        doc=(
            "How the head reads the top layer: the last step, each direction's "
            "final step, mean or max pooling, or auto (the last step)."
        ),
    )

    def __post_init__(self) -> None:
        validate_fields(self, self.TABLE)

    def max_layers(self) -> int:
        return int(self.num_layers.upper())


def _device_ok(device: str) -> bool:
    return device in ("auto", "cpu", "cuda") or (
        device.startswith("cuda:") and device[5:].isdigit()
    )


@dataclasses.dataclass(frozen=True)
class TrainSpec:
    """How every candidate is trained."""

    TABLE: ClassVar[str] = "train"

    max_epochs: int = rule(100, "int", 1, 100_000, doc="The most epochs a candidate trains.")
    device: str = rule(
        "auto",
        "str",
        doc=("Where candidates train: auto (CUDA when there is one), cpu, cuda or cuda:N."),
    )
    grad_clip: float = rule(
        1.0, "float", 0.0, low_open=True, doc="Gradients are clipped to this norm."
    )
    weight_decay: float = rule(0.0, "float", 0.0, doc="Adam's weight decay.")
    #: Stop a trial after this many epochs without a better validation loss (0: never).
    patience: int = rule(
        15,
        "int",
        0,
        doc=(
            "Stop a candidate after this many epochs without a better validation "
            "loss, counted once it has learned something (0: never)."
        ),
    )
    threads: int = rule(
        0,
        "int",
        0,
        1024,
        doc=("Torch's CPU threads per worker (0: torch's default; launch splits the cores)."),
    )
    #: Off by default: on an H100 bf16 autocast ran the fused LSTM at 0.8x the speed of fp32
    #: (hidden 64-256, batch 256) and trials no faster (benchmarks/gpu.py, RESULTS.md).
    amp: bool = rule(
        False, "bool", doc="bf16 autocast on CUDA (no effect on the CPU); off by default."
    )
    #: An epoch trains at least this many batches (a small data set passes over its samples
    #: several times an epoch): epochs, patience and pruning mean as much training on 40
    #: sequences as on 40,000.
    min_batches: int = rule(
        16,
        "int",
        1,
        100_000,
        doc=(
            "An epoch trains at least this many batches: a small data set passes "
            "over its samples several times an epoch."
        ),
    )

    def __post_init__(self) -> None:
        validate_fields(self, self.TABLE)
        if not _device_ok(self.device):
            raise table_error(
                self.TABLE,
                "device",
                f"must be 'auto', 'cpu', 'cuda' or 'cuda:N', but got {self.device!r}",
            )


@dataclasses.dataclass(frozen=True)
class SamplerSpec:
    TABLE: ClassVar[str] = "sampler"

    kind: str = rule(
        "tpe", "str", allowed=("tpe", "random"), doc="The sampler: TPE, or random search."
    )
    n_startup_trials: int = rule(
        5, "int", 0, doc="Trials drawn before the sampler models their results."
    )
    #: How the start-up trials are drawn: "cheap-first" (every depth at a cheap width; see
    #: ``depthsearch.search.samplers``) or "random" (TPE's own start-up).
    startup: str = rule(
        "cheap-first",
        "str",
        allowed=("cheap-first", "random"),
        doc=(
            "How the start-up trials are drawn: cheap-first (every depth at a cheap"
            " width, shallow first) or random."
        ),
    )

    def __post_init__(self) -> None:
        validate_fields(self, self.TABLE)


@dataclasses.dataclass(frozen=True)
class PrunerSpec:
    TABLE: ClassVar[str] = "pruner"

    kind: str = rule(
        "cost-aware",
        "str",
        allowed=tuple(PRUNER_KEYS),
        doc=(
            "The pruner: cost-aware (the median rule, stricter for costly "
            "candidates), depth-aware, median, percentile, hyperband, successive-"
            "halving or none; none of them decides while the curves sit within "
            "their noise."
        ),
    )
    n_startup_trials: int = rule(3, "int", 0, doc="Complete trials before anything is pruned.")
    n_warmup_steps: int = rule(
        1, "int", 0, doc="Epochs every trial trains before it can be pruned."
    )
    interval_steps: int = rule(
        1, "int", 1, doc="Ask the pruner every this many epochs after the warm-up."
    )
    #: Warm-up epochs added per depth band (1 layer: none, 2: one, 3-4: two, 5-8: three...):
    #: deep stacks start slower.
    depth_warmup: int = rule(
        0,
        "int",
        0,
        1000,
        doc=("Warm-up epochs added per depth band (2 layers: one, 3-4: two, 5-8: three...)."),
    )
    min_resource: int = rule(
        1, "int", 1, doc=("Hyperband and successive halving: the epochs of the first rung.")
    )
    reduction_factor: int = rule(
        3, "int", 2, doc=("Hyperband and successive halving: how many trials a rung keeps one of.")
    )
    min_early_stopping_rate: int = rule(
        0, "int", 0, doc=("Successive halving: the first rung at which trials can stop.")
    )
    #: kind = "percentile": keep trials whose best value so far is in the best ``percentile``%.
    percentile: float = rule(
        25.0,
        "float",
        0.0,
        100.0,
        low_open=True,
        high_open=True,
        doc=(
            "percentile: keep the trials whose best value so far is in this best "
            "share, in percent."
        ),
    )

    def __post_init__(self) -> None:
        validate_fields(self, self.TABLE)


@dataclasses.dataclass(frozen=True)
class WorkersSpec:
    """Fault handling for workers sharing a study."""

    TABLE: ClassVar[str] = "workers"

    heartbeat_interval: int = rule(
        10, "int", 1, 3600, doc="Seconds between a running trial's heartbeats."
    )
    grace_period: int = rule(
        30,
        "int",
        1,
        86_400,
        doc=(
            "Seconds without a heartbeat after which a trial's worker is taken for "
            "dead: the trial is failed and runs again."
        ),
    )
    max_retry: int = rule(
        2,
        "int",
        0,
        100,
        doc=("How many times a failed trial runs again (a user's Ctrl-C does not count)."),
    )
    db_wait: float = rule(
        120.0,
        "float",
        0.0,
        86_400.0,
        doc=(
            "Seconds a worker waits out an unreachable database before it stops "
            "(its trial runs again from its checkpoint)."
        ),
    )
    #: Where trials keep their checkpoints: ``auto`` (a folder beside a SQLite study's file;
    #: none for a server database, whose workers may share no folder), ``off``, a folder every
    #: worker sees, or ``s3://bucket/prefix``.
    checkpoints: str = rule(
        "auto",
        "str",
        doc=(
            "Where trials keep their checkpoints: auto (beside a SQLite file), off,"
            " a folder every worker sees, or s3://bucket/prefix."
        ),
    )
    checkpoint_every: int = rule(1, "int", 1, 100_000, doc="A checkpoint every this many epochs.")
    checkpoint_seconds: float = rule(
        10.0,
        "float",
        0.0,
        86_400.0,
        doc=(
            "At most one checkpoint every this many seconds of training (a kill loses at most"
            " these and an epoch; a trial stopped to run again writes its last epoch's state)."
        ),
    )

    def __post_init__(self) -> None:
        validate_fields(self, self.TABLE)
        where = self.checkpoints.strip()
        if not where or (where.startswith("s3://") and not where[5:].strip("/")):
            raise table_error(
                self.TABLE,
                "checkpoints",
                f"must be 'auto', 'off', a folder or s3://bucket/prefix, but got {where!r}",
            )
        if "://" in where and not where.startswith("s3://"):
            raise table_error(
                self.TABLE,
                "checkpoints",
                f"{where!r}: only s3:// stores are known besides folders (and 'auto', 'off')",
            )
        if self.grace_period <= self.heartbeat_interval:
            raise table_error(
                self.TABLE,
                None,
                f"grace_period must be > heartbeat_interval, but got grace_period="
                f"{self.grace_period}, heartbeat_interval={self.heartbeat_interval}",
            )


@dataclasses.dataclass(frozen=True)
class ConfirmSpec:
    """Confirmation at the end of the search: the ``top`` best candidates (or the best of
    every depth, ``per_depth``) trained again with ``seeds`` new seeds each (0: none)."""

    TABLE: ClassVar[str] = "confirm"

    top: int = rule(3, "int", 1, 1000, doc="Confirm the search's this many best candidates.")
    seeds: int = rule(
        0,
        "int",
        0,
        1000,
        doc=(
            "New seeds per candidate at the end of the search (0: no confirmation; "
            "one seed gives no interval)."
        ),
    )
    per_depth: bool = rule(
        False, "bool", doc=("Confirm the best candidate of every depth instead of the top ones.")
    )

    def __post_init__(self) -> None:
        validate_fields(self, self.TABLE)
        if self.seeds == 1:
            raise table_error(
                self.TABLE,
                "seeds",
                "must be 0 (no confirmation) or at least 2: one seed has no interval, so "
                "it could tell no candidate from another; but got 1",
            )


@dataclasses.dataclass(frozen=True)
class TrackingSpec:
    """Where the trials are also logged: ``mlflow``, an MLflow tracking URI (``http://host:5000``,
    ``file:///path``, ...; the environment's ``DEPTHSEARCH_MLFLOW_URI`` wins over it), and the
    ``experiment`` (default: the study's name). Neither changes a trial: a study resumes with
    another tracking table."""

    TABLE: ClassVar[str] = "tracking"

    mlflow: str | None = documented(
        None,
        "An MLflow tracking URI the trials are logged to (stored without credentials; "
        "DEPTHSEARCH_MLFLOW_URI wins).",
    )
    experiment: str | None = documented(None, "The MLflow experiment (default: the study's name).")

    def __post_init__(self) -> None:
        for key in ("mlflow", "experiment"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise table_error(
                    self.TABLE, key, f"must be a non-empty string, but got {value!r}"
                )

    def to_dict(self, *, secrets: bool = False) -> dict[str, str]:
        """The keys that are set (TOML has no null); the server's URI without its
        credentials unless ``secrets`` (what a study stores never holds a password)."""
        out = {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
        if "mlflow" in out and not secrets:
            out["mlflow"] = public_uri(out["mlflow"])
        return out


def check_objectives(raw: Any) -> tuple[str, ...]:
    """``[study] objectives`` as stored: known names, each once, ``val_loss`` first.

    Raises:
        SpecError: ``[study] objectives: what is wrong``.
    """
    if not isinstance(raw, (list, tuple)) or not raw or not all(isinstance(o, str) for o in raw):
        raise table_error(
            "study", "objectives", f"must be a non-empty list of names, but got {raw!r}"
        )
    unknown = [o for o in raw if o not in OBJECTIVES]
    if unknown:
        raise table_error(
            "study",
            "objectives",
            f"unknown objective(s) {unknown}; allowed are {list(OBJECTIVES)}",
        )
    if len(set(raw)) != len(raw):
        raise table_error("study", "objectives", f"names an objective twice: {list(raw)!r}")
    if raw[0] != "val_loss":
        raise table_error(
            "study",
            "objectives",
            "must start with 'val_loss' (the loss the learning curves show), "
            f"but got {list(raw)!r}",
        )
    return tuple(raw)


@dataclasses.dataclass(frozen=True)
class StudySpec:
    """A whole study file, validated."""

    TABLE: ClassVar[str] = "study"

    name: str = rule(None, "str", doc="The study's name in the database: workers join it by name.")
    n_trials: int = rule(
        None,
        "int",
        1,
        1_000_000,
        doc=(
            "The search's budget: finished (complete or pruned) search trials, "
            "every worker's counted; confirmations come on top."
        ),
    )
    seed: int = rule(
        0,
        "int",
        0,
        2**31 - 1,
        doc=(
            "The study's seed: trial k samples and trains with seed + k, so that "
            "any trial can run again alone."
        ),
    )
    data: DataSpec = DataSpec()  # noqa: RUF009 (frozen: one shared default is safe)
    task: TaskSpec = TaskSpec()  # noqa: RUF009 (frozen, as above)
    space: SpaceSpec = SpaceSpec()
    train: TrainSpec = TrainSpec()
    sampler: SamplerSpec = SamplerSpec()
    pruner: PrunerSpec = PrunerSpec()
    workers: WorkersSpec = WorkersSpec()
    confirm: ConfirmSpec = ConfirmSpec()
    tracking: TrackingSpec = TrackingSpec()
    source: str = dataclasses.field(default="<dict>", compare=False)
    objectives: tuple[str, ...] = documented(
        ("val_loss",),
        "What the study optimises: val_loss, then optionally param_count, "
        "seconds_per_epoch or a classification's val_accuracy, val_f1 (a Pareto front).",
    )

    def __post_init__(self) -> None:
        validate_fields(self, self.TABLE)
        if len(self.name) > 500 or self.name.strip() != self.name:
            raise table_error(
                self.TABLE,
                "name",
                "must be at most 500 characters without surrounding spaces, "
                f"but got {self.name!r}",
            )
        object.__setattr__(self, "objectives", check_objectives(self.objectives))
        maximised = [o for o in self.objectives if o in MAXIMISED]
        if maximised and self.task.kind != "classify":
            raise table_error(
                self.TABLE,
                "objectives",
                f"{maximised} are measured for [task] kind = 'classify' only, but the kind is "
                f"{self.task.kind!r}",
            )
        self._check_task()
        if self.space.readout == Fixed("auto"):
            readout = AUTO_READOUT.get(self.task.kind, Fixed("last"))
            object.__setattr__(self, "space", dataclasses.replace(self.space, readout=readout))
        if self.multi_objective and self.pruner.kind != "none":
            raise table_error(
                "pruner",
                "kind",
                f"Optuna prunes single-objective studies only, but this study minimises "
                f"{list(self.objectives)}; use kind = 'none' (the default there) or one objective",
            )

    def _check_task(self) -> None:
        """What the task needs of the data."""
        kind, data = self.task.kind, self.data
        if kind == "forecast":
            return
        if data.source == "synthetic":
            raise table_error(
                "data",
                "source",
                f"a synthetic series can only be forecast, but [task] kind = {kind!r}; "
                "use a csv, parquet or npz source",
            )
        if data.tabular and data.id is None:
            raise table_error(
                "data",
                "id",
                f"is required for [task] kind = {kind!r}: the column naming the sequence "
                "each row belongs to (one label or value per id)",
            )

    @property
    def directions(self) -> list[Literal["minimize", "maximize"]]:
        """Optuna's direction of each objective."""
        return ["maximize" if o in MAXIMISED else "minimize" for o in self.objectives]

    @property
    def multi_objective(self) -> bool:
        """True when the study minimises more than the validation loss (a Pareto front)."""
        return len(self.objectives) > 1

    def to_dict(self, *, secrets: bool = False) -> dict[str, Any]:
        """The study file as a dict (TOML-shaped), with every default filled in; the
        tracking server's credentials left out unless ``secrets``."""
        space = {
            f.name: (
                getattr(self.space, f.name).to_toml()
                if f.name != "per_layer_hidden"
                else self.space.per_layer_hidden
            )
            for f in dataclasses.fields(SpaceSpec)
        }
        data = {k: v for k, v in dataclasses.asdict(self.data).items() if v is not None}
        data["features"] = list(self.data.features)
        del data["targets"]
        if len(self.data.targets) > 1:
            data["target"] = list(self.data.targets)
        data = applicable(data, self.task.kind)
        return {
            "study": {
                "name": self.name,
                "n_trials": self.n_trials,
                "seed": self.seed,
                "objectives": list(self.objectives),
            },
            "data": data,
            "task": {"kind": self.task.kind},
            "space": space,
            "train": dataclasses.asdict(self.train),
            "sampler": dataclasses.asdict(self.sampler),
            "pruner": {
                "kind": self.pruner.kind,
                **{k: getattr(self.pruner, k) for k in PRUNER_KEYS[self.pruner.kind]},
            },
            "workers": dataclasses.asdict(self.workers),
            "confirm": dataclasses.asdict(self.confirm),
            "tracking": self.tracking.to_dict(secrets=secrets),
        }
