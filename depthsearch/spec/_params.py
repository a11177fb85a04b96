"""Search-space parameters (a fixed value, choices, an int or float range) and value rules.

Each spec field carries its :class:`Rule` in its dataclass metadata; ``__post_init__`` checks
every field against it, so a spec is validated however it was built (a study file, a stored
spec, or Python code) and the TOML reader never restates a bound or a default.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

from depthsearch.errors import SpecError, did_you_mean

__all__ = ["Choices", "Fixed", "FloatRange", "IntRange", "ParamSpec", "Rule"]


class Bad(ValueError):
    """A value breaks its rule; the message says how (the caller adds table and key)."""


@dataclasses.dataclass(frozen=True)
class Fixed:
    """A value that is not searched."""

    value: Any

    def to_toml(self) -> Any:
        return self.value

    def describe(self) -> str:
        return str(self.value)

    def upper(self) -> Any:
        return self.value


@dataclasses.dataclass(frozen=True)
class Choices:
    """A categorical parameter: one of ``values``."""

    values: tuple[Any, ...]

    def to_toml(self) -> Any:
        return list(self.values)

    def describe(self) -> str:
        return "{" + ", ".join(map(str, self.values)) + "}"

    def upper(self) -> Any:
        return max(self.values)


@dataclasses.dataclass(frozen=True)
class IntRange:
    """An integer in ``[low, high]`` (both included)."""

    low: int
    high: int
    step: int = 1
    log: bool = False

    def to_toml(self) -> Any:
        return {"low": self.low, "high": self.high, "step": self.step, "log": self.log}

    def describe(self) -> str:
        return f"{self.low}..{self.high}" + (" (log)" if self.log else "")

    def upper(self) -> Any:
        return self.high


@dataclasses.dataclass(frozen=True)
class FloatRange:
    """A float in ``[low, high]``."""

    low: float
    high: float
    log: bool = False

    def to_toml(self) -> Any:
        return {"low": self.low, "high": self.high, "log": self.log}

    def describe(self) -> str:
        return f"{self.low:g}..{self.high:g}" + (" (log)" if self.log else "")

    def upper(self) -> Any:
        return self.high


ParamSpec = Fixed | Choices | IntRange | FloatRange


@dataclasses.dataclass(frozen=True)
class Rule:
    """What a value may be: its kind, bounds (open or closed) and, for strings, the choices."""

    kind: Literal["int", "float", "bool", "str"]
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    allowed: tuple[str, ...] | None = None

    def check(self, value: Any) -> Any:
        """``value`` as stored (an int where a float is wanted becomes a float).

        Raises:
            Bad: the value breaks the rule.
        """
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise Bad(f"must be true or false, but got {value!r}")
            return value
        if self.kind == "str":
            if not isinstance(value, str) or not value:
                raise Bad(f"must be a non-empty string, but got {value!r}")
            if self.allowed is not None and value not in self.allowed:
                hint = did_you_mean(value, self.allowed)
                raise Bad(f"must be one of {list(self.allowed)}, but got {value!r}{hint}")
            return value
        if self.kind == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                raise Bad(f"must be an integer, but got {value!r}")
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            raise Bad(f"must be a number, but got {value!r}")
        elif math.isinf(value):
            raise Bad(f"must be finite, but got {value!r}")
        low, high = self.low, self.high
        if low is not None and (value < low or (self.low_open and value == low)):
            raise Bad(f"must be {'>' if self.low_open else '>='} {low}, but got {value}")
        if high is not None and (value > high or (self.high_open and value == high)):
            raise Bad(f"must be {'<' if self.high_open else '<='} {high}, but got {value}")
        return value if self.kind == "int" else float(value)

    def check_param(self, param: Any) -> ParamSpec:
        """A parameter whose every value (fixed, choice, range end) keeps this rule.

        Raises:
            Bad: the parameter, or one of its values, breaks the rule.
        """
        if isinstance(param, Fixed):
            return Fixed(self._labelled(param.value, "value"))
        if isinstance(param, Choices):
            if not param.values:
                raise Bad("a list of choices must not be empty")
            values = tuple(self._labelled(v, f"choice {v!r}") for v in param.values)
            if len(set(values)) != len(values):
                raise Bad(f"choices must be distinct, but got {list(param.values)!r}")
            return Choices(values)
        if self.kind in ("bool", "str"):
            raise Bad(f"this parameter takes a value or a list, not a range: {param!r}")
        wanted = IntRange if self.kind == "int" else FloatRange
        if not isinstance(param, wanted):
            raise Bad(f"must be a fixed value, Choices or {wanted.__name__}, but got {param!r}")
        low = self._labelled(param.low, "low")
        high = self._labelled(param.high, "high")
        if low > high:
            raise Bad(f"low <= high must hold, but got (low={low}, high={high})")
        if not isinstance(param.log, bool):
            raise Bad(f"log must be true or false, but got {param.log!r}")
        if param.log and low <= 0:
            raise Bad(f"a log range needs low > 0, but got low={low}")
        if isinstance(param, FloatRange):
            return FloatRange(low, high, param.log)
        step = Rule("int", 1)._labelled(param.step, "step")
        if param.log and step != 1:
            raise Bad(f"a log range needs step = 1, but got step={step}")
        return IntRange(low, high, step, param.log)

    def _labelled(self, value: Any, label: str) -> Any:
        try:
            return self.check(value)
        except Bad as e:
            raise Bad(f"{label} {e}") from None


def rule(
    default: Any,
    kind: Literal["int", "float", "bool", "str"],
    *args: Any,
    doc: str = "",
    **kw: Any,
) -> Any:
    """A dataclass field holding one value that keeps ``Rule(kind, *args, **kw)``; ``doc``:
    what it means, in a sentence (the study-file reference is made from it)."""
    return dataclasses.field(
        default=default, metadata={"rule": Rule(kind, *args, **kw), "doc": doc}
    )


def param(
    default: ParamSpec,
    kind: Literal["int", "float", "bool", "str"],
    *args: Any,
    doc: str = "",
    **kw: Any,
) -> Any:
    """A dataclass field holding a search-space parameter whose values keep the rule."""
    return dataclasses.field(
        default=default, metadata={"param": Rule(kind, *args, **kw), "doc": doc}
    )


def documented(default: Any, doc: str) -> Any:
    """A dataclass field without a value rule (checked by its class), with its sentence."""
    return dataclasses.field(default=default, metadata={"doc": doc})


def table_error(table: str, key: str | None, message: str) -> SpecError:
    """``[table] key: message``: the reader puts the file in front."""
    return SpecError(f"[{table}] {key}: {message}" if key else f"[{table}] {message}")


def validate_fields(obj: Any, table: str) -> None:
    """Checks (and coerces, e.g. int -> float) every field of ``obj`` that carries a rule.

    Raises:
        SpecError: ``[table] key: what is wrong``.
    """
    for f in dataclasses.fields(obj):
        value_rule: Rule | None = f.metadata.get("rule")
        param_rule: Rule | None = f.metadata.get("param")
        if value_rule is None and param_rule is None:
            continue
        value = getattr(obj, f.name)
        if value is None:
            raise table_error(table, f.name, "is required")
        try:
            checked = (
                value_rule.check(value)
                if value_rule is not None
                else param_rule.check_param(value)  # type: ignore[union-attr]
            )
        except Bad as e:
            raise table_error(table, f.name, str(e)) from None
        object.__setattr__(obj, f.name, checked)
