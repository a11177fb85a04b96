"""The study file's reference, made from the spec's own rules: every table and key, its type,
default and allowed values, the sources and task kinds it applies to, and its sentence
(:func:`reference`; the docs site's reference page is :func:`reference_markdown`)."""

from __future__ import annotations

import dataclasses
from typing import Any

from depthsearch.spec._data import DATA_KEYS, SOURCES, TASKS, DataSpec, TaskSpec
from depthsearch.spec._params import Choices, Fixed, FloatRange, IntRange, Rule
from depthsearch.spec._spec import (
    PRUNER_KEYS,
    ConfirmSpec,
    PrunerSpec,
    SamplerSpec,
    SpaceSpec,
    StudySpec,
    TrackingSpec,
    TrainSpec,
    WorkersSpec,
)

__all__ = ["Key", "reference", "reference_markdown"]

#: The tables of a study file, in the order of the reference.
TABLES: tuple[tuple[str, type], ...] = (
    ("study", StudySpec),
    ("task", TaskSpec),
    ("data", DataSpec),
    ("space", SpaceSpec),
    ("train", TrainSpec),
    ("sampler", SamplerSpec),
    ("pruner", PrunerSpec),
    ("workers", WorkersSpec),
    ("confirm", ConfirmSpec),
    ("tracking", TrackingSpec),
)
#: StudySpec's fields that are tables of their own or not keys of a file.
_NOT_KEYS = {"data", "task", "space", "train", "sampler", "pruner", "workers", "confirm"}
_NOT_KEYS |= {"tracking", "source", "targets"}


@dataclasses.dataclass(frozen=True)
class Key:
    """One key of a study file, as the reference shows it."""

    table: str
    name: str
    type: str
    default: str
    allowed: str
    applies: str
    doc: str


def _shown(value: Any) -> str:
    if isinstance(value, Fixed):
        return _shown(value.value)
    if isinstance(value, Choices):
        return "[" + ", ".join(_shown(v) for v in value.values) + "]"
    if isinstance(value, (IntRange, FloatRange)):
        log = ", log = true" if value.log else ""
        return f"{{ low = {value.low:g}, high = {value.high:g}{log} }}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if value is None or value == ():
        return "-"
    if isinstance(value, tuple):
        return "[" + ", ".join(_shown(v) for v in value) + "]"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e16 else f"{x:g}"


def _bounds(rule: Rule) -> str:
    if rule.allowed is not None:
        return ", ".join(f"`{a}`" for a in rule.allowed)
    parts = []
    if rule.low is not None:
        parts.append(f"{'>' if rule.low_open else '>='} {_num(rule.low)}")
    if rule.high is not None:
        parts.append(f"{'<' if rule.high_open else '<='} {_num(rule.high)}")
    return ", ".join(parts) or "-"


def _type(f: dataclasses.Field[Any], rule: Rule | None, searched: bool) -> str:
    kind: str = rule.kind if rule is not None else "str" if "str" in str(f.type) else "list"
    if f.name in ("features", "objectives"):
        kind = "list of str"
    return f"{kind}, a value, a list or a range" if searched else kind


def _applies(table: str, name: str) -> str:
    if table == "data":
        rule_ = DATA_KEYS[name]
        sources = "all sources" if rule_.sources == SOURCES else ", ".join(rule_.sources)
        samples = (
            "every task"
            if len(rule_.samples) == 2
            else "forecast (windows)"
            if rule_.samples == ("windows",)
            else "classify, regress, and NPZ/.ts forecasts"
        )
        return f"{sources}; {samples}"
    if table == "pruner" and name != "kind":
        kinds = [k for k, keys in PRUNER_KEYS.items() if name in keys]
        return "kind = " + ", ".join(kinds)
    return "every study"


def reference() -> list[Key]:
    """Every key of a study file, table by table."""
    keys = []
    for table, cls in TABLES:
        for f in dataclasses.fields(cls):
            if (cls is StudySpec and f.name in _NOT_KEYS) or (
                cls is DataSpec and f.name == "targets"
            ):
                continue
            rule = f.metadata.get("rule") or f.metadata.get("param")
            doc = DATA_KEYS[f.name].doc if table == "data" else f.metadata.get("doc", "")
            default = f.default if f.default is not dataclasses.MISSING else None
            keys.append(
                Key(
                    table,
                    f.name,
                    _type(f, rule, "param" in f.metadata),
                    "required"
                    if default is None and f.name in ("name", "n_trials")
                    else _shown(default),
                    _bounds(rule) if rule is not None else "-",
                    _applies(table, f.name),
                    doc,
                )
            )
    return keys


def reference_markdown() -> str:
    """The reference as the docs site shows it: a table per study-file table."""
    lines = [
        "# Study-file reference",
        "",
        "Made from the spec's own rules when the site is built: every table and key of a "
        "study file, its type, default and allowed values, where it applies, and what it "
        f"means. Task kinds: {', '.join(f'`{t}`' for t in TASKS)}.",
    ]
    for table, _ in TABLES:
        lines += [
            "",
            f"## [{table}]",
            "",
            "| key | type | default | allowed | applies to | meaning |",
        ]
        lines.append("|---|---|---|---|---|---|")
        for k in reference():
            if k.table == table:
                cells = (f"`{k.name}`", k.type, f"`{k.default}`", k.allowed, k.applies, k.doc)
                lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"
