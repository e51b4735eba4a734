"""The Scenario and Param types: what a scenario declares and how its parameters are checked."""

from __future__ import annotations

import importlib
import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from multiprocessing.context import ForkContext, ForkServerContext, SpawnContext
from typing import Any, Literal

ParamValue = int | float | bool | str
# Values are checked against their Param at run time; Any lets programs use them directly.
Params = dict[str, Any]
ParamKind = Literal["int", "float", "bool", "choice"]


def shown(value: object, most: int = 80) -> str:
    """`repr(value)` for an error message, cut to `most` characters: a request may carry
    megabytes, and the message only needs to say which value it was."""
    text = repr(value)
    return text if len(text) <= most else text[: most - 1] + "…"


class ParamError(ValueError):
    """A parameter was refused; `field` names it and `message` says what was expected."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Param:
    """One typed, bounded parameter of a scenario."""

    name: str
    kind: ParamKind
    default: ParamValue
    help: Mapping[str, str]
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()

    def describe(self) -> dict[str, object]:
        """The parameter as JSON for forms and the API."""
        info: dict[str, object] = {
            "name": self.name,
            "type": self.kind,
            "default": self.default,
            "help": dict(self.help),
        }
        if self.minimum is not None:
            info["min"] = self.minimum
        if self.maximum is not None:
            info["max"] = self.maximum
        if self.choices:
            info["choices"] = list(self.choices)
        return info

    def _expected(self) -> str:
        if self.kind == "bool":
            return "true or false"
        if self.kind == "choice":
            return "one of " + ", ".join(self.choices)
        noun = "an integer" if self.kind == "int" else "a number"
        return f"{noun} between {_number(self.minimum)} and {_number(self.maximum)}"

    def _refuse(self, value: object) -> ParamError:
        return ParamError(self.name, f"{self.name} must be {self._expected()}, got {shown(value)}")

    def check(self, value: object) -> ParamValue:
        """Return the value if it has this parameter's type and bounds, else raise ParamError."""
        if self.kind == "bool":
            if isinstance(value, bool):
                return value
            raise self._refuse(value)
        if self.kind == "choice":
            if isinstance(value, str) and value in self.choices:
                return value
            raise self._refuse(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self._refuse(value)
        if self.kind == "int" and not isinstance(value, int):
            raise self._refuse(value)
        if isinstance(value, float) and not math.isfinite(value):
            raise self._refuse(value)
        if self.minimum is not None and value < self.minimum:
            raise self._refuse(value)
        if self.maximum is not None and value > self.maximum:
            raise self._refuse(value)
        return float(value) if self.kind == "float" else value

    def parse(self, text: str) -> ParamValue:
        """Convert command-line text to this parameter's type, then check it."""
        converted: object = text
        if self.kind == "bool":
            lowered = text.strip().lower()
            if lowered in ("true", "yes", "on", "1"):
                converted = True
            elif lowered in ("false", "no", "off", "0"):
                converted = False
        elif self.kind in ("int", "float"):
            try:
                converted = int(text) if self.kind == "int" else float(text)
            except ValueError:
                raise self._refuse(text) from None
        return self.check(converted)


def _number(value: float | None) -> str:
    if value is None:
        return "any"
    return str(int(value)) if float(value).is_integer() else str(value)


# What multiprocessing.get_context() returns for the start methods a run accepts.
RunContext = ForkContext | ForkServerContext | SpawnContext
ScenarioMain = Callable[[Params, RunContext], None]


@dataclass(frozen=True)
class Scenario:
    """A program a run executes: titles, teaching text, parameters and its main()."""

    id: str
    title: Mapping[str, str]
    teaching: Mapping[str, str]
    params: list[Param]
    main: ScenarioMain
    module: str
    # Worker processes the run starts for these parameters (the main process not counted).
    processes: Callable[[Params], int] = field(default=lambda params: 2)
    # Cross-field checks after each parameter passed its own; raise ParamError.
    check: Callable[[Params], None] | None = None

    def validate(self, raw: Mapping[str, object]) -> Params:
        """Return complete, typed parameters from `raw`, or raise ParamError naming the field."""
        if not isinstance(raw, Mapping):
            raise ParamError("params", f"params must be an object, got {type(raw).__name__}")
        known = {param.name: param for param in self.params}
        for name in raw:
            if name not in known:
                expected = ", ".join(known) if known else "no parameters"
                raise ParamError(
                    str(name)[:80],
                    f"unknown parameter {shown(name)} for {self.id}; expected {expected}",
                )
        values: Params = {}
        for param in self.params:
            values[param.name] = (
                param.check(raw[param.name]) if param.name in raw else param.default
            )
        if self.check is not None:
            self.check(values)
        return values

    def defaults(self) -> Params:
        """The default parameters."""
        return {param.name: param.default for param in self.params}

    def source(self) -> str:
        """The scenario module's own source text, as shown beside the animation."""
        return inspect.getsource(importlib.import_module(self.module))

    def source_file(self) -> str:
        """The path of the scenario's module, as it appears in the `site` of its events."""
        return inspect.getfile(importlib.import_module(self.module))

    def describe(self) -> dict[str, object]:
        """The scenario as JSON for the gallery and the API."""
        return {
            "id": self.id,
            "title": dict(self.title),
            "teaching": dict(self.teaching),
            "params": [param.describe() for param in self.params],
        }
