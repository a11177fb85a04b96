"""Study files: TOML in, validated frozen specs out.

A study file is checked whole, once, before anything touches a database: unknown keys and bad
values are refused with the file, the table and the key. Inner code trusts the spec it gets.
The dict form (:meth:`StudySpec.to_dict`) has the same shape as the file, so a spec stored in a
study rebuilds through the very same checks (:func:`spec_from_dict`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from depthsearch.errors import SpecError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = [
    "OBJECTIVES",
    "Choices",
    "DataSpec",
    "Fixed",
    "FloatRange",
    "IntRange",
    "ParamSpec",
    "PrunerSpec",
    "SamplerSpec",
    "SpaceSpec",
    "StudySpec",
    "TrainSpec",
    "WorkersSpec",
    "file_sha256",
    "load_spec",
    "spec_from_dict",
]

MAX_LAYERS = 64
#: What a study may minimise. ``val_loss`` comes first: it is what the learning curves show.
OBJECTIVES = ("val_loss", "param_count", "seconds_per_epoch")


@dataclasses.dataclass(frozen=True)
class Fixed:
    """A value that is not searched."""

    value: Any

    def to_toml(self) -> Any:
        return self.value


@dataclasses.dataclass(frozen=True)
class Choices:
    """A categorical parameter: one of ``values``."""

    values: tuple[Any, ...]

    def to_toml(self) -> Any:
        return list(self.values)


@dataclasses.dataclass(frozen=True)
class IntRange:
    """An integer in ``[low, high]`` (both included)."""

    low: int
    high: int
    step: int = 1
    log: bool = False

    def to_toml(self) -> Any:
        return {"low": self.low, "high": self.high, "step": self.step, "log": self.log}


@dataclasses.dataclass(frozen=True)
class FloatRange:
    """A float in ``[low, high]``."""

    low: float
    high: float
    log: bool = False

    def to_toml(self) -> Any:
        return {"low": self.low, "high": self.high, "log": self.log}


ParamSpec = Fixed | Choices | IntRange | FloatRange


@dataclasses.dataclass(frozen=True)
class SpaceSpec:
    """What a trial samples. Parameter names are those shown in the dashboard."""

    num_layers: ParamSpec = IntRange(1, 4)
    hidden_size: ParamSpec = Choices((16, 32, 64))
    per_layer_hidden: bool = False
    dropout: ParamSpec = FloatRange(0.0, 0.5)
    lr: ParamSpec = FloatRange(1e-4, 1e-2, log=True)
    batch_size: ParamSpec = Choices((32, 64, 128))
    bidirectional: ParamSpec = Fixed(False)
    residual: ParamSpec = Fixed(False)
    layer_norm: ParamSpec = Fixed(False)

    def max_layers(self) -> int:
        return int(_param_max(self.num_layers))


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """Where the series comes from and how it is cut into windows."""

    source: str = "synthetic"
    path: str | None = None
    target: str = "y"
    features: tuple[str, ...] = ()
    window: int = 24
    horizon: int = 1
    val_fraction: float = 0.2
    length: int = 2000
    noise: float = 0.1
    sha256: str | None = None

    @property
    def input_columns(self) -> tuple[str, ...]:
        """The columns fed to the model: the features, or the target alone."""
        return self.features or (self.target,)


@dataclasses.dataclass(frozen=True)
class TrainSpec:
    """How every candidate is trained."""

    max_epochs: int = 20
    device: str = "auto"
    grad_clip: float = 1.0
    weight_decay: float = 0.0
    patience: int = 0
    threads: int = 0
    amp: bool = True


@dataclasses.dataclass(frozen=True)
class SamplerSpec:
    kind: str = "tpe"
    n_startup_trials: int = 5


@dataclasses.dataclass(frozen=True)
class PrunerSpec:
    kind: str = "median"
    n_startup_trials: int = 3
    n_warmup_steps: int = 2
    interval_steps: int = 1
    min_resource: int = 1
    reduction_factor: int = 3
    min_early_stopping_rate: int = 0
    #: kind = "percentile": keep trials whose best value so far is in the best ``percentile``%.
    percentile: float = 25.0


@dataclasses.dataclass(frozen=True)
class WorkersSpec:
    """Fault handling for workers sharing a study."""

    heartbeat_interval: int = 10
    grace_period: int = 30
    max_retry: int = 2
    db_wait: float = 120.0


@dataclasses.dataclass(frozen=True)
class StudySpec:
    """A whole study file, validated."""

    name: str
    n_trials: int
    seed: int = 0
    data: DataSpec = DataSpec()
    space: SpaceSpec = SpaceSpec()
    train: TrainSpec = TrainSpec()
    sampler: SamplerSpec = SamplerSpec()
    pruner: PrunerSpec = PrunerSpec()
    workers: WorkersSpec = WorkersSpec()
    source: str = dataclasses.field(default="<dict>", compare=False)
    objectives: tuple[str, ...] = ("val_loss",)

    @property
    def multi_objective(self) -> bool:
        """True when the study minimises more than the validation loss (a Pareto front)."""
        return len(self.objectives) > 1

    def to_dict(self) -> dict[str, Any]:
        """The study file as a dict (TOML-shaped), with every default filled in."""
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
        unused = ("path", "sha256") if self.data.source == "synthetic" else ("length", "noise")
        for key in unused:
            data.pop(key, None)
        return {
            "study": {
                "name": self.name,
                "n_trials": self.n_trials,
                "seed": self.seed,
                "objectives": list(self.objectives),
            },
            "data": data,
            "space": space,
            "train": dataclasses.asdict(self.train),
            "sampler": dataclasses.asdict(self.sampler),
            "pruner": {
                "kind": self.pruner.kind,
                **{k: getattr(self.pruner, k) for k in _PRUNER_KEYS[self.pruner.kind]},
            },
            "workers": dataclasses.asdict(self.workers),
        }


# --------------------------------------------------------------------------------------------
# Parsing


class _Table:
    """One TOML table being read; remembers which keys were consumed."""

    def __init__(self, raw: object, where: str, table: str) -> None:
        if not isinstance(raw, Mapping):
            raise SpecError(f"{where}: [{table}] must be a table, but got {raw!r}")
        self.raw = dict(raw)
        self.where = where
        self.table = table
        self.seen: set[str] = set()

    def err(self, key: str, message: str) -> SpecError:
        return SpecError(f"{self.where}: [{self.table}] {key}: {message}")

    def has(self, key: str) -> bool:
        return key in self.raw

    def get(self, key: str, default: Any) -> Any:
        self.seen.add(key)
        return self.raw.get(key, default)

    def int(
        self, key: str, default: int | None, low: int | None = None, high: int | None = None
    ) -> int:
        value = self.get(key, default)
        if value is None:
            raise self.err(key, "is required")
        return _check_int(value, low, high, lambda m: self.err(key, m))

    def float(
        self,
        key: str,
        default: float,
        low: float | None = None,
        high: float | None = None,
        *,
        low_open: bool = False,
        high_open: bool = False,
    ) -> float:
        value = self.get(key, default)
        return _check_float(value, low, high, low_open, high_open, lambda m: self.err(key, m))

    def bool(self, key: str, default: bool) -> bool:
        value = self.get(key, default)
        if not isinstance(value, bool):
            raise self.err(key, f"must be true or false, but got {value!r}")
        return value

    def str(self, key: str, default: str | None, allowed: Sequence[str] | None = None) -> str:
        value = self.get(key, default)
        if value is None:
            raise self.err(key, "is required")
        if not isinstance(value, str) or not value:
            raise self.err(key, f"must be a non-empty string, but got {value!r}")
        if allowed is not None and value not in allowed:
            raise self.err(key, f"must be one of {list(allowed)}, but got {value!r}")
        return value

    def finish(self) -> None:
        unknown = sorted(set(self.raw) - self.seen)
        if unknown:
            raise SpecError(
                f"{self.where}: [{self.table}] unknown key(s) {unknown}; "
                f"allowed keys are {sorted(self.seen)}"
            )


def _check_int(value: Any, low: int | None, high: int | None, err: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise err(f"must be an integer, but got {value!r}")
    if low is not None and value < low:
        raise err(f"must be >= {low}, but got {value}")
    if high is not None and value > high:
        raise err(f"must be <= {high}, but got {value}")
    return value


def _check_float(
    value: Any,
    low: float | None,
    high: float | None,
    low_open: bool,
    high_open: bool,
    err: Any,
) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise err(f"must be a number, but got {value!r}")
    v = float(value)
    if math.isinf(v):
        raise err(f"must be finite, but got {value!r}")
    if low is not None and (v < low or (low_open and v == low)):
        raise err(f"must be {'>' if low_open else '>='} {low}, but got {value}")
    if high is not None and (v > high or (high_open and v == high)):
        raise err(f"must be {'<' if high_open else '<='} {high}, but got {value}")
    return v


def _param_max(param: ParamSpec) -> Any:
    if isinstance(param, Fixed):
        return param.value
    if isinstance(param, Choices):
        return max(param.values)
    return param.high


def _parse_param(
    table: _Table,
    key: str,
    default: ParamSpec,
    kind: str,
    low: float | None = None,
    high: float | None = None,
    high_open: bool = False,
    low_open: bool = False,
) -> ParamSpec:
    """Reads a scalar (fixed), a list (choices) or a ``{low, high, ...}`` table (range)."""
    raw = table.get(key, None)
    if raw is None:
        return default

    def err(message: str) -> SpecError:
        return table.err(key, message)

    def one(value: Any, label: str) -> Any:
        def e(m: str) -> SpecError:
            return err(f"{label} {m}")

        if kind == "bool":
            if not isinstance(value, bool):
                raise e(f"must be true or false, but got {value!r}")
            return value
        if kind == "int":
            return _check_int(
                value, None if low is None else int(low), None if high is None else int(high), e
            )
        return _check_float(value, low, high, low_open, high_open, e)

    if isinstance(raw, Mapping):
        if kind == "bool":
            raise err(
                f"a true/false parameter takes a value or a list, not a range: {dict(raw)!r}"
            )
        allowed = {"low", "high", "log"} | ({"step"} if kind == "int" else set())
        unknown = sorted(set(raw) - allowed)
        if unknown:
            raise err(f"unknown range key(s) {unknown}; allowed are {sorted(allowed)}")
        if "low" not in raw or "high" not in raw:
            raise err(f"a range needs both low and high, but got {dict(raw)!r}")
        lo, hi = one(raw["low"], "low"), one(raw["high"], "high")
        if lo > hi:
            raise err(f"low <= high must hold, but got (low={lo}, high={hi})")
        log = raw.get("log", False)
        if not isinstance(log, bool):
            raise err(f"log must be true or false, but got {log!r}")
        if log and lo <= 0:
            raise err(f"a log range needs low > 0, but got low={lo}")
        if kind == "int":
            step = _check_int(raw.get("step", 1), 1, None, lambda m: err(f"step {m}"))
            if log and step != 1:
                raise err(f"a log range needs step = 1, but got step={step}")
            return IntRange(lo, hi, step, log)
        return FloatRange(lo, hi, log)
    if isinstance(raw, list):
        if not raw:
            raise err("a list of choices must not be empty")
        values = tuple(one(v, f"choice {v!r}") for v in raw)
        if len(set(values)) != len(values):
            raise err(f"choices must be distinct, but got {raw!r}")
        return Choices(values)
    return Fixed(one(raw, "value"))


def file_sha256(path: Path) -> str:
    """The hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _parse_data(raw: object, where: str, base: Path | None) -> DataSpec:
    t = _Table(raw, where, "data")
    source = t.str("source", "synthetic", ("csv", "synthetic"))
    window = t.int("window", 24, 1, 100_000)
    horizon = t.int("horizon", 1, 1, 10_000)
    val_fraction = t.float("val_fraction", 0.2, 0.0, 1.0, low_open=True, high_open=True)
    if source == "synthetic":
        length = t.int("length", 2000, 10, 10_000_000)
        noise = t.float("noise", 0.1, 0.0, None)
        target = t.str("target", "y", ("y",))
        features_raw = t.get("features", [])
        if features_raw not in ([], ["y"]):
            raise t.err(
                "features", f"a synthetic source has the one column 'y', but got {features_raw!r}"
            )
        t.finish()
        return DataSpec(source, None, target, (), window, horizon, val_fraction, length, noise)
    path_raw = t.str("path", None)
    target = t.str("target", None)
    features_raw = t.get("features", [])
    if not isinstance(features_raw, list) or not all(
        isinstance(f, str) and f for f in features_raw
    ):
        raise t.err("features", f"must be a list of column names, but got {features_raw!r}")
    if len(set(features_raw)) != len(features_raw):
        raise t.err("features", f"names a column twice: {features_raw!r}")
    sha = t.get("sha256", None)
    if sha is not None and (not isinstance(sha, str) or len(sha) != 64):
        raise t.err("sha256", f"must be a 64-character hex digest, but got {sha!r}")
    t.finish()
    path = Path(path_raw).expanduser()
    if not path.is_absolute() and base is not None:
        path = base / path
    path = path.resolve()
    if not path.is_file():
        raise t.err("path", f"no such file: {path}")
    actual = file_sha256(path)
    if sha is not None and sha != actual:
        raise t.err(
            "sha256",
            f"the file {path} has SHA-256 {actual}, but the spec expects {sha}: "
            "the data differs from the data the study was created with",
        )
    return DataSpec(
        "csv", str(path), target, tuple(features_raw), window, horizon, val_fraction, sha256=actual
    )


def _parse_space(raw: object, where: str) -> SpaceSpec:
    t = _Table(raw, where, "space")
    d = SpaceSpec()
    space = SpaceSpec(
        num_layers=_parse_param(t, "num_layers", d.num_layers, "int", 1, MAX_LAYERS),
        hidden_size=_parse_param(t, "hidden_size", d.hidden_size, "int", 1, 65_536),
        per_layer_hidden=t.bool("per_layer_hidden", False),
        dropout=_parse_param(t, "dropout", d.dropout, "float", 0.0, 1.0, high_open=True),
        lr=_parse_param(t, "lr", d.lr, "float", 0.0, 10.0, low_open=True),
        batch_size=_parse_param(t, "batch_size", d.batch_size, "int", 1, 1 << 20),
        bidirectional=_parse_param(t, "bidirectional", d.bidirectional, "bool"),
        residual=_parse_param(t, "residual", d.residual, "bool"),
        layer_norm=_parse_param(t, "layer_norm", d.layer_norm, "bool"),
    )
    t.finish()
    return space


def _parse_train(raw: object, where: str) -> TrainSpec:
    t = _Table(raw, where, "train")
    device = t.str("device", "auto")
    if device not in ("auto", "cpu", "cuda") and not (
        device.startswith("cuda:") and device[5:].isdigit()
    ):
        raise t.err("device", f"must be 'auto', 'cpu', 'cuda' or 'cuda:N', but got {device!r}")
    spec = TrainSpec(
        max_epochs=t.int("max_epochs", 20, 1, 100_000),
        device=device,
        grad_clip=t.float("grad_clip", 1.0, 0.0, None, low_open=True),
        weight_decay=t.float("weight_decay", 0.0, 0.0, None),
        patience=t.int("patience", 0, 0, None),
        threads=t.int("threads", 0, 0, 1024),
        amp=t.bool("amp", True),
    )
    t.finish()
    return spec


_PRUNER_KEYS = {
    "none": (),
    "median": ("n_startup_trials", "n_warmup_steps", "interval_steps"),
    "percentile": ("percentile", "n_startup_trials", "n_warmup_steps", "interval_steps"),
    "depth-aware": ("n_startup_trials", "n_warmup_steps", "interval_steps"),
    "hyperband": ("min_resource", "reduction_factor"),
    "successive-halving": ("min_resource", "reduction_factor", "min_early_stopping_rate"),
}


def _parse_pruner(raw: object, where: str, objectives: tuple[str, ...]) -> PrunerSpec:
    t = _Table(raw, where, "pruner")
    multi = len(objectives) > 1
    kind = t.str("kind", "none" if multi else "median", tuple(_PRUNER_KEYS))
    if multi and kind != "none":
        raise t.err(
            "kind",
            f"Optuna prunes single-objective studies only, but this study minimises "
            f"{list(objectives)}; use kind = 'none' (the default there) or one objective",
        )
    allowed = set(_PRUNER_KEYS[kind]) | {"kind"}
    extra = sorted(set(t.raw) - allowed)
    if extra:
        raise SpecError(
            f"{where}: [pruner] unknown key(s) {extra} for kind = {kind!r}; "
            f"allowed keys are {sorted(allowed)}"
        )
    d = PrunerSpec()
    spec = PrunerSpec(
        kind=kind,
        n_startup_trials=t.int("n_startup_trials", d.n_startup_trials, 0),
        n_warmup_steps=t.int("n_warmup_steps", d.n_warmup_steps, 0),
        interval_steps=t.int("interval_steps", d.interval_steps, 1),
        min_resource=t.int("min_resource", d.min_resource, 1),
        reduction_factor=t.int("reduction_factor", d.reduction_factor, 2),
        min_early_stopping_rate=t.int("min_early_stopping_rate", d.min_early_stopping_rate, 0),
        percentile=t.float("percentile", d.percentile, 0.0, 100.0, low_open=True, high_open=True),
    )
    t.finish()
    return spec


def _parse_workers(raw: object, where: str) -> WorkersSpec:
    t = _Table(raw, where, "workers")
    spec = WorkersSpec(
        heartbeat_interval=t.int("heartbeat_interval", 10, 1, 3600),
        grace_period=t.int("grace_period", 30, 1, 86_400),
        max_retry=t.int("max_retry", 2, 0, 100),
        db_wait=t.float("db_wait", 120.0, 0.0, 86_400.0),
    )
    t.finish()
    if spec.grace_period <= spec.heartbeat_interval:
        raise SpecError(
            f"{where}: [workers] grace_period must be > heartbeat_interval, but got "
            f"grace_period={spec.grace_period}, heartbeat_interval={spec.heartbeat_interval}"
        )
    return spec


_TABLES = ("study", "data", "space", "train", "sampler", "pruner", "workers")


def spec_from_dict(
    doc: Mapping[str, Any], *, where: str = "<dict>", base: Path | None = None
) -> StudySpec:
    """Validates a TOML-shaped document (a parsed file, or :meth:`StudySpec.to_dict`)."""
    if not isinstance(doc, Mapping):
        raise SpecError(f"{where}: a study spec must be a table, but got {type(doc).__name__}")
    unknown = sorted(set(doc) - set(_TABLES))
    if unknown:
        raise SpecError(f"{where}: unknown table(s) {unknown}; allowed tables are {list(_TABLES)}")
    if "study" not in doc:
        raise SpecError(f"{where}: the [study] table is required (name, n_trials, seed)")
    st = _Table(doc["study"], where, "study")
    name = st.str("name", None)
    if len(name) > 500 or name.strip() != name:
        raise st.err(
            "name", f"must be at most 500 characters without surrounding spaces, but got {name!r}"
        )
    n_trials = st.int("n_trials", None, 1, 1_000_000)
    seed = st.int("seed", 0, 0, 2**31 - 1)
    objectives = _parse_objectives(st)
    st.finish()
    data = _parse_data(doc.get("data", {}), where, base)
    space = _parse_space(doc.get("space", {}), where)
    train = _parse_train(doc.get("train", {}), where)
    sp = _Table(doc.get("sampler", {}), where, "sampler")
    sampler = SamplerSpec(
        kind=sp.str("kind", "tpe", ("tpe", "random")),
        n_startup_trials=sp.int("n_startup_trials", 5, 0),
    )
    sp.finish()
    pruner = _parse_pruner(doc.get("pruner", {}), where, objectives)
    workers = _parse_workers(doc.get("workers", {}), where)
    if data.window < 1:
        raise SpecError(f"{where}: [data] window must be >= 1")
    return StudySpec(
        name, n_trials, seed, data, space, train, sampler, pruner, workers, where, objectives
    )


def _parse_objectives(t: _Table) -> tuple[str, ...]:
    raw = t.get("objectives", ["val_loss"])
    if not isinstance(raw, list) or not raw or not all(isinstance(o, str) for o in raw):
        raise t.err("objectives", f"must be a non-empty list of names, but got {raw!r}")
    unknown = [o for o in raw if o not in OBJECTIVES]
    if unknown:
        raise t.err(
            "objectives", f"unknown objective(s) {unknown}; allowed are {list(OBJECTIVES)}"
        )
    if len(set(raw)) != len(raw):
        raise t.err("objectives", f"names an objective twice: {raw!r}")
    if raw[0] != "val_loss":
        raise t.err(
            "objectives",
            f"must start with 'val_loss' (the loss the learning curves show), but got {raw!r}",
        )
    return tuple(raw)


def load_spec(path: str | Path) -> StudySpec:
    """Reads and validates a study file.

    Raises:
        SpecError: the file is missing, is not TOML, or has an unknown key or a bad value; the
            message names the file, the table and the key.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"{p}: no such study file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(f"{p}: cannot read the study file ({e})") from e
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SpecError(f"{p}: not valid TOML ({e})") from e
    return spec_from_dict(doc, where=str(p), base=p.resolve().parent)
