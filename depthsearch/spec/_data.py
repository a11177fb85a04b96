"""The ``[data]`` and ``[task]`` tables: where the data comes from, its shape, and the
shape of the problem.

Which ``[data]`` key belongs to which source and task kind is stated once, in
:data:`DATA_KEYS`: the TOML reader, the stored spec, ``run_study(data=...)`` and the
reference documentation all read it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

from depthsearch.spec._params import rule, table_error, validate_fields

__all__ = [
    "DATA_KEYS",
    "SOURCES",
    "TASKS",
    "DataKey",
    "DataSpec",
    "TaskSpec",
    "applicable",
    "data_keys",
    "misplaced",
    "samples_of",
]

#: The shapes of problem: the next values of series, a label per sequence, a value per sequence.
TASKS = ("forecast", "classify", "regress")
#: Where the data comes from.
SOURCES = ("csv", "parquet", "npz", "ts", "synthetic")
_TABLES = ("csv", "parquet")
_FILES = ("csv", "parquet", "npz", "ts")
_NAMED = ("csv", "parquet", "synthetic")
#: What a study trains on: ``windows`` cut from series (a forecast of a table or of the
#: synthetic series), or whole ``sequences``, one sample each (a classification, a
#: regression, and any task on NPZ arrays).
SAMPLES = ("windows", "sequences")


def samples_of(source: str, kind: str) -> str:
    """``windows`` or ``sequences``: what a study of ``kind`` on ``source`` trains on."""
    return "windows" if kind == "forecast" and source not in ("npz", "ts") else "sequences"


@dataclasses.dataclass(frozen=True)
class DataKey:
    """A ``[data]`` key: the sources and the samples it applies to, and what it means."""

    sources: tuple[str, ...]
    samples: tuple[str, ...]
    doc: str

    def applies(self, source: str, kind: str) -> bool:
        return source in self.sources and samples_of(source, kind) in self.samples


_BOTH = SAMPLES
_WINDOWS = ("windows",)
#: Every ``[data]`` key, in the order of the reference.
DATA_KEYS: dict[str, DataKey] = {
    "source": DataKey(
        SOURCES,
        _BOTH,
        "Where the data comes from: a long-format table (`csv`, `parquet`), arrays "
        "(`npz`), a UCR/UEA time-series file (`ts`), or a `synthetic` series.",
    ),
    "path": DataKey(_FILES, _BOTH, "The data file, relative to the study file."),
    "target": DataKey(
        _NAMED,
        _BOTH,
        "The column predicted: the series forecast, the label "
        "classified, or the value regressed (a list of columns for several).",
    ),
    "features": DataKey(
        _NAMED,
        _BOTH,
        "The columns the model reads (default: the target "
        "alone for a forecast, every other column otherwise).",
    ),
    "id": DataKey(
        _TABLES,
        _BOTH,
        "The column naming the series or sequence a row belongs "
        "to, read as text exactly as the file writes it (`01` and `1` are two).",
    ),
    "time": DataKey(
        _TABLES,
        _BOTH,
        "The column ordering the rows within an id (numbers or dates; default: the file's order).",
    ),
    "window": DataKey(_NAMED, _WINDOWS, "The steps of history a forecast reads."),
    "horizon": DataKey(_NAMED, _WINDOWS, "The steps a forecast predicts (the model's outputs)."),
    "val_fraction": DataKey(
        SOURCES,
        _BOTH,
        "The share that validates: the last part of each "
        "series in time, or a stratified, seeded share of the sequences.",
    ),
    "test_fraction": DataKey(
        SOURCES,
        _BOTH,
        "The share held out before anything else, never "
        "trained on, pruned on or picked by: scored by confirmations and "
        "exports.",
    ),
    "length": DataKey(("synthetic",), _BOTH, "The synthetic series' length in steps."),
    "noise": DataKey(("synthetic",), _BOTH, "The synthetic series' noise (standard deviation)."),
    "sha256": DataKey(
        _FILES,
        _BOTH,
        "The data file's SHA-256: every worker checks that it "
        "trains on the bytes the study was created with (filled in when absent).",
    ),
    "scale": DataKey(
        _TABLES,
        _WINDOWS,
        "A panel's scaling: each series on its own training "
        "rows (`per-series`) or all series on one scale (`global`).",
    ),
    "missing": DataKey(
        _FILES,
        _BOTH,
        "What a missing value does: refused (`error`), carried "
        "forward (`ffill`), filled linearly (`interpolate`) or its row dropped "
        "(`drop`), within its series or sequence.",
    ),
    "max_length": DataKey(_FILES, ("sequences",), "Keep each sequence's last N steps (0: all)."),
    "normalize": DataKey(
        _FILES,
        ("sequences",),
        "`per-sequence`: each sequence z-normalised on its own, channel by channel (the "
        "field's standard for UCR/UEA data), before the scaling; `none`: as read.",
    ),
    "season": DataKey(
        _NAMED, _WINDOWS, "The season in steps (12 for monthly data): the seasonal naive baseline."
    ),
    "difference": DataKey(
        _NAMED,
        _WINDOWS,
        "Learn the series' changes; forecasts are added "
        "back to the last value, in the target's units.",
    ),
}


def data_keys(source: str, kind: str) -> list[str]:
    """The ``[data]`` keys a study of ``kind`` on ``source`` may set."""
    return [k for k, rule_ in DATA_KEYS.items() if rule_.applies(source, kind)]


def applicable(table: Mapping[str, Any], kind: str) -> dict[str, Any]:
    """A ``[data]`` table less the keys that do not apply to its source and ``kind`` (a
    stored spec of an older release kept some at their defaults)."""
    source = str(table.get("source", "synthetic"))
    keep = set(data_keys(source, kind)) if source in SOURCES else set(table)
    return {k: v for k, v in table.items() if k in keep}


def misplaced(key: str, source: str, kind: str) -> str | None:
    """Why ``key`` does not apply to ``kind`` on ``source`` when the source has it, else
    None (a key the source never has is an unknown key: the reader says so)."""
    found = DATA_KEYS.get(key)
    if found is None or source not in found.sources or found.applies(source, kind):
        return None
    if "windows" in found.samples:
        hint = "; max_length keeps each sequence's last N steps" if key == "window" else ""
        return (
            f"applies to [task] kind = 'forecast' only, but the kind is {kind!r} (each "
            f"sequence is taken whole){hint}"
        )
    return "applies to [task] kind = 'classify' or 'regress' (a forecast reads `window` steps)"


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """The shape of the problem: ``forecast`` (the next ``horizon`` values of one series or of
    each series of a panel), ``classify`` (a label per sequence) or ``regress`` (a value per
    sequence)."""

    TABLE: ClassVar[str] = "task"

    kind: str = rule(
        "forecast",
        "str",
        allowed=TASKS,
        doc=(
            "The shape of the problem: forecast (the next values of a series or of "
            "each series of a panel), classify (a label per sequence) or regress (a"
            " value per sequence)."
        ),
    )

    def __post_init__(self) -> None:
        validate_fields(self, self.TABLE)


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """Where the data comes from and how it is cut into sequences.

    ``csv`` and ``parquet`` tables are long-format: one row per time step, ``id`` (optional)
    naming the series or sequence a row belongs to and ``time`` (optional) ordering the rows
    within it. ``npz`` holds the sequences as arrays: ``X`` (N, T, F), ``y`` (N,) or (N, k)
    and optionally ``lengths`` (N,).
    """

    TABLE: ClassVar[str] = "data"

    source: str = rule("synthetic", "str", allowed=SOURCES)
    path: str | None = None
    target: str = rule("y", "str")
    features: tuple[str, ...] = ()
    window: int = rule(24, "int", 1, 100_000)
    horizon: int = rule(1, "int", 1, 10_000)
    val_fraction: float = rule(0.2, "float", 0.0, 1.0, low_open=True, high_open=True)
    length: int = rule(2000, "int", 10, 10_000_000)
    noise: float = rule(0.1, "float", 0.0)
    sha256: str | None = None
    #: The column naming a row's series (forecast) or sequence (classify, regress).
    id: str | None = None
    #: The column ordering the rows within an id (default: the file's order).
    time: str | None = None
    #: A panel's scaling: each series on its own (``per-series``) or all on one (``global``).
    scale: str = rule("per-series", "str", allowed=("per-series", "global"))
    #: What a missing value does: refused (``error``), or filled or dropped within its id.
    missing: str = rule("error", "str", allowed=("error", "ffill", "interpolate", "drop"))
    #: Keep each sequence's last N steps (0: all of them).
    max_length: int = rule(0, "int", 0, 10_000_000)
    #: Each sequence z-normalised on its own, channel by channel (``per-sequence``).
    normalize: str = rule("none", "str", allowed=("none", "per-sequence"))
    #: A regression of several columns (``target = ["a", "b"]`` in a study file): all of them,
    #: ``target`` being the first.
    targets: tuple[str, ...] = ()
    #: The held-out test part, cut before anything else (the last part of each series in
    #: time; a stratified part of the sequences): never trained on, pruned on or picked by.
    test_fraction: float = rule(0.1, "float", 0.0, 1.0, high_open=True)
    #: A forecast's season in steps (12 for monthly data): the seasonal naive baseline.
    season: int = rule(0, "int", 0, 100_000)
    #: A forecast learns the series' changes (inputs: the target's first differences;
    #: outputs: the change from the window's last value), integrated back to its units.
    difference: bool = rule(False, "bool")

    def __post_init__(self) -> None:
        validate_fields(self, self.TABLE)
        self._check_columns()
        self._check_forecast()
        if self.source == "synthetic":
            if self.target != "y":
                raise table_error(
                    self.TABLE, "target", f"must be one of ['y'], but got {self.target!r}"
                )
            if self.features not in ((), ("y",)):
                raise table_error(
                    self.TABLE,
                    "features",
                    f"a synthetic source has the one column 'y', but got {list(self.features)!r}",
                )
            object.__setattr__(self, "features", ())
            return
        if not isinstance(self.path, str) or not self.path:
            raise table_error(self.TABLE, "path", "is required")
        sha = self.sha256
        if sha is not None and (not isinstance(sha, str) or len(sha) != 64):
            raise table_error(
                self.TABLE, "sha256", f"must be a 64-character hex digest, but got {sha!r}"
            )

    def _check_columns(self) -> None:
        """Features, targets, id and time: names, each column in one role."""
        features = self.features
        if not isinstance(features, (list, tuple)) or not all(
            isinstance(f, str) and f for f in features
        ):
            raise table_error(
                self.TABLE, "features", f"must be a list of column names, but got {features!r}"
            )
        if len(set(features)) != len(features):
            raise table_error(self.TABLE, "features", f"names a column twice: {list(features)!r}")
        object.__setattr__(self, "features", tuple(features))
        targets = tuple(self.targets)
        if targets and (
            not all(isinstance(t, str) and t for t in targets)
            or len(set(targets)) != len(targets)
            or targets[0] != self.target
        ):
            raise table_error(
                self.TABLE, "target", f"must be distinct column names, but got {list(targets)!r}"
            )
        object.__setattr__(self, "targets", targets)
        for key in ("id", "time"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise table_error(self.TABLE, key, f"must be a column name, but got {value!r}")
        for column in [c for c in (self.id, self.time) if c is not None]:
            if column in (self.target, *self.targets) or column in self.features:
                key = "id" if column == self.id else "time"
                raise table_error(
                    self.TABLE,
                    key,
                    f"{column!r} is also the target or a feature; name a column of its own",
                )

    def _check_forecast(self) -> None:
        """Differencing, the season, and id against time."""
        if self.difference and self.features and self.target not in self.features:
            raise table_error(
                self.TABLE,
                "difference",
                f"a forecast of changes adds them to the target's last value, so the target "
                f"{self.target!r} must be among the features {list(self.features)!r}",
            )
        if self.season > self.window:
            raise table_error(
                self.TABLE,
                "season",
                f"must be <= window ({self.window}): the seasonal naive forecast repeats the "
                f"window's last season, but got {self.season}",
            )
        if self.id is not None and self.id == self.time:
            raise table_error(self.TABLE, "time", f"{self.time!r} is also the id column")

    @property
    def input_columns(self) -> tuple[str, ...]:
        """The columns fed to the model: the features, or the target alone."""
        return self.features or (self.target,)

    @property
    def tabular(self) -> bool:
        """A long-format table (CSV or Parquet)."""
        return self.source in ("csv", "parquet")
