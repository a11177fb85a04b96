"""Study files: TOML in, a validated :class:`StudySpec` out.

The reader checks the shape of the file (tables, keys, ranges written as tables) and hands the
values to the spec's dataclasses, which check the values themselves; defaults come from the
dataclass fields. A file is checked whole, once, before anything touches a database; every
error names the file, the table and the key.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from depthsearch.errors import MissingDataFile, SpecError, did_you_mean
from depthsearch.spec._data import DATA_KEYS, SOURCES, misplaced
from depthsearch.spec._params import (
    Choices,
    Fixed,
    FloatRange,
    IntRange,
    ParamSpec,
    Rule,
    table_error,
)
from depthsearch.spec._spec import (
    PRUNER_KEYS,
    ConfirmSpec,
    DataSpec,
    PrunerSpec,
    SamplerSpec,
    SpaceSpec,
    StudySpec,
    TaskSpec,
    TrackingSpec,
    TrainSpec,
    WorkersSpec,
    check_objectives,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["file_sha256", "load_spec", "read_study_file", "spec_from_dict"]

_TABLES = (
    "study",
    "data",
    "task",
    "space",
    "train",
    "sampler",
    "pruner",
    "workers",
    "confirm",
    "tracking",
)


def file_sha256(path: Path) -> str:
    """The hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fields(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _table(
    doc: Mapping[str, Any],
    name: str,
    allowed: tuple[str, ...] | list[str],
    *,
    required: tuple[str, ...] = (),
    context: str = "",
) -> dict[str, Any]:
    """Table ``name`` of the file as a dict, its keys checked: unknown keys first, then the
    required ones."""
    raw = doc.get(name, {})
    if not isinstance(raw, Mapping):
        raise SpecError(f"[{name}] must be a table, but got {raw!r}")
    unknown = sorted(set(raw) - set(allowed))
    if unknown:
        guesses = [
            f"{key!r} for {match[0]!r}"
            for key in unknown
            if (match := difflib.get_close_matches(key, list(allowed), n=1, cutoff=0.6))
        ]
        hint = ""
        if len(guesses) == 1 and len(unknown) == 1:
            hint = f"; did you mean {guesses[0].split(' for ', 1)[1]}?"
        elif guesses:
            hint = f"; did you mean {', '.join(guesses)}?"
        raise SpecError(
            f"[{name}] unknown key(s) {unknown}{context}{hint} "
            f"(allowed keys are {sorted(allowed)})"
        )
    for key in required:
        if key not in raw:
            raise table_error(name, key, "is required")
    return dict(raw)


def _read_param(table: str, key: str, raw: Any, rule: Rule) -> ParamSpec:
    """A scalar (fixed), a list (choices) or a ``{low, high, ...}`` table (range)."""
    if isinstance(raw, Mapping):
        if rule.kind == "bool":
            raise table_error(
                table,
                key,
                f"a true/false parameter takes a value or a list, not a range: {dict(raw)!r}",
            )
        allowed = {"low", "high", "log"} | ({"step"} if rule.kind == "int" else set())
        unknown = sorted(set(raw) - allowed)
        if unknown:
            raise table_error(
                table, key, f"unknown range key(s) {unknown}; allowed are {sorted(allowed)}"
            )
        if "low" not in raw or "high" not in raw:
            raise table_error(
                table, key, f"a range needs both low and high, but got {dict(raw)!r}"
            )
        if rule.kind == "int":
            return IntRange(raw["low"], raw["high"], raw.get("step", 1), raw.get("log", False))
        return FloatRange(raw["low"], raw["high"], raw.get("log", False))
    if isinstance(raw, list):
        return Choices(tuple(raw))
    return Fixed(raw)


def _space(doc: Mapping[str, Any]) -> SpaceSpec:
    raw = _table(doc, "space", _fields(SpaceSpec))
    values: dict[str, Any] = {}
    for f in dataclasses.fields(SpaceSpec):
        if f.name in raw:
            rule = f.metadata.get("param")
            values[f.name] = (
                _read_param("space", f.name, raw[f.name], rule) if rule else raw[f.name]
            )
    return SpaceSpec(**values)


def _data(doc: Mapping[str, Any], base: Path | None, kind: str) -> DataSpec:
    raw = doc.get("data", {})
    if not isinstance(raw, Mapping):
        _table(doc, "data", ())  # says it is not a table
    source = raw.get("source", DataSpec.source)
    if source not in SOURCES:
        DataSpec(source=source)  # says what is wrong with it
    required = {
        "csv": ("path", "target"),
        "parquet": ("path", "target"),
        "npz": ("path",),
        "ts": ("path",),
    }
    values = _table(
        doc,
        "data",
        [key for key, rule_ in DATA_KEYS.items() if source in rule_.sources],
        required=required.get(source, ()),
        context=f" for source = {source!r}",
    )
    for key in values:
        why = misplaced(key, source, kind)
        if why is not None:
            raise table_error("data", key, why)
    if isinstance(values.get("target"), list):
        names = values["target"]
        if kind != "regress" or not names:
            raise table_error(
                "data",
                "target",
                f"a list of columns is for [task] kind = 'regress' (one value each), but got "
                f"{names!r} with kind = {kind!r}",
            )
        values["targets"] = tuple(names)
        values["target"] = names[0]
    if source == "synthetic":
        return DataSpec(**values)
    checked = DataSpec(**values)  # every value checked before the file is read
    path = Path(checked.path or "").expanduser()
    if not path.is_absolute() and base is not None:
        path = base / path
    path = path.resolve()
    if not path.is_file():
        raise MissingDataFile(str(table_error("data", "path", f"no such file: {path}")))
    actual = file_sha256(path)
    if checked.sha256 is not None and checked.sha256 != actual:
        raise table_error(
            "data",
            "sha256",
            f"the file {path} has SHA-256 {actual}, but the spec expects {checked.sha256}: "
            "the data differs from the data the study was created with",
        )
    return dataclasses.replace(checked, path=str(path), sha256=actual)


def _pruner(doc: Mapping[str, Any], multi: bool) -> PrunerSpec:
    raw = doc.get("pruner", {})
    if not isinstance(raw, Mapping):
        _table(doc, "pruner", ())  # says it is not a table
    # The spec's own default (cost-aware) where one objective is minimised; none for a
    # Pareto front, which Optuna cannot prune.
    kind = raw.get("kind", "none" if multi else PrunerSpec.kind)
    if kind not in PRUNER_KEYS:
        PrunerSpec(kind=kind)  # says what is wrong with it
    values = _table(doc, "pruner", ("kind", *PRUNER_KEYS[kind]), context=f" for kind = {kind!r}")
    values["kind"] = kind
    return PrunerSpec(**values)


def _parse(doc: Mapping[str, Any], base: Path | None) -> StudySpec:
    if not isinstance(doc, Mapping):
        raise SpecError(f"a study spec must be a table, but got {type(doc).__name__}")
    unknown = sorted(set(doc) - set(_TABLES))
    if unknown:
        hint = did_you_mean(unknown[0], _TABLES) if len(unknown) == 1 else ""
        raise SpecError(f"unknown table(s) {unknown}{hint} (allowed tables are {list(_TABLES)})")
    if "study" not in doc:
        raise SpecError("the [study] table is required (name, n_trials, seed)")
    study = _table(
        doc, "study", ("name", "n_trials", "seed", "objectives"), required=("name", "n_trials")
    )
    # The study table's own values first, as the file reads.
    for f in dataclasses.fields(StudySpec):
        value_rule = f.metadata.get("rule")
        if value_rule is not None and f.name in study:
            try:
                value_rule.check(study[f.name])
            except ValueError as e:
                raise table_error("study", f.name, str(e)) from None
    objectives = check_objectives(study.get("objectives", list(StudySpec.objectives)))
    study["objectives"] = objectives
    task = TaskSpec(**_table(doc, "task", _fields(TaskSpec)))
    return StudySpec(
        **study,
        data=_data(doc, base, task.kind),
        task=task,
        space=_space(doc),
        train=TrainSpec(**_table(doc, "train", _fields(TrainSpec))),
        sampler=SamplerSpec(**_table(doc, "sampler", _fields(SamplerSpec))),
        pruner=_pruner(doc, len(objectives) > 1),
        workers=_workers(doc, base),
        confirm=ConfirmSpec(**_table(doc, "confirm", _fields(ConfirmSpec))),
        tracking=TrackingSpec(**_table(doc, "tracking", _fields(TrackingSpec))),
    )


def _workers(doc: Mapping[str, Any], base: Path | None) -> WorkersSpec:
    """``[workers]``, with a relative ``checkpoints`` folder made absolute against the study
    file's folder (as ``[data] path`` is), so every worker reads one place."""
    spec = WorkersSpec(**_table(doc, "workers", _fields(WorkersSpec)))
    where = spec.checkpoints
    if where in ("auto", "off") or where.startswith("s3://"):
        return spec
    path = Path(where).expanduser()
    if not path.is_absolute() and base is not None:
        path = base / path
    return dataclasses.replace(spec, checkpoints=str(path.resolve()))


def spec_from_dict(
    doc: Mapping[str, Any], *, where: str = "<dict>", base: Path | None = None
) -> StudySpec:
    """Validates a TOML-shaped document (a parsed file, or :meth:`StudySpec.to_dict`).

    Args:
        where: named in front of every error (the file, or the stored spec).
        base: folder that a relative ``[data] path`` is relative to.

    Raises:
        SpecError: ``WHERE: [table] key: what is wrong``.
    """
    try:
        spec = _parse(doc, base)
    except SpecError as e:
        raise type(e)(f"{where}: {e}") from None  # the kind kept: callers act on it
    return dataclasses.replace(spec, source=where)


def load_spec(path: str | Path) -> StudySpec:
    """Reads and validates a study file.

    Raises:
        SpecError: the file is missing, is not TOML, or has an unknown key or a bad value; the
            message names the file, the table and the key.
    """
    p = Path(path)
    return spec_from_dict(read_study_file(p), where=str(p), base=p.resolve().parent)


def read_study_file(path: str | Path) -> dict[str, Any]:
    """A study file's tables as a dict, unvalidated (:func:`load_spec` validates them).

    Raises:
        SpecError: the file is missing, unreadable or not TOML.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"{p}: no such study file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(f"{p}: cannot read the study file ({e})") from e
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SpecError(f"{p}: not valid TOML ({e})") from e
