"""One row of the settings table: its variable, its option, and how a value is read and checked."""

import types
import typing
from dataclasses import dataclass
from typing import Any

ENV_PREFIX = "PIPESCOPE_"
BOOLEANS = {"true": True, "1": True, "yes": True, "on": True}
BOOLEANS.update({"false": False, "0": False, "no": False, "off": False})


class SettingsError(ValueError):
    """A setting's value is malformed or out of bounds."""


@dataclass(frozen=True)
class Setting:
    """One row of the settings table."""

    name: str
    type: Any
    default: Any
    help: str
    minimum: float | None
    maximum: float | None

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    @property
    def option(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def optional(self) -> bool:
        return isinstance(self.type, types.UnionType) and type(None) in typing.get_args(self.type)

    @property
    def base(self) -> Any:
        """The value's type without None: bool, int, float, str or tuple."""
        if self.optional:
            return next(t for t in typing.get_args(self.type) if t is not type(None))
        return typing.get_origin(self.type) or self.type

    def describe(self) -> str:
        """What a valid value looks like, for error messages."""
        if self.base is tuple:
            return "a comma-separated list"
        if self.base is bool:
            return "true or false"
        names = {int: "an integer", float: "a number", str: "a string"}
        text = names[self.base]
        if self.minimum is not None and self.maximum is not None:
            text += f" from {_number(self.minimum)} to {_number(self.maximum)}"
        elif self.minimum is not None:
            text += f" of at least {_number(self.minimum)}"
        return text

    def _where(self) -> str:
        return f"{self.env} ({self.option})"

    def parse(self, raw: str) -> Any:
        """Convert the text of an environment variable or option."""
        text = raw.strip()
        if self.optional and text == "":
            return None
        try:
            if self.base is tuple:
                return tuple(part.strip() for part in text.split(",") if part.strip())
            if self.base is bool:
                return BOOLEANS[text.lower()]
            if self.base is int:
                return int(text)
            if self.base is float:
                return float(text)
        except (ValueError, KeyError):
            raise SettingsError(
                f"{self._where()}: expected {self.describe()}, got {raw!r}"
            ) from None
        return text

    def check(self, value: Any) -> None:
        if value is None and self.optional:
            return
        expected: Any = (int, float) if self.base is float else self.base
        if not isinstance(value, expected) or (isinstance(value, bool) and self.base is not bool):
            raise SettingsError(f"{self._where()}: expected {self.describe()}, got {value!r}")
        if isinstance(value, tuple):
            if not all(isinstance(item, str) for item in value):
                raise SettingsError(f"{self._where()}: expected a list of strings, got {value!r}")
            return
        too_low = self.minimum is not None and value < self.minimum
        too_high = self.maximum is not None and value > self.maximum
        if too_low or too_high:
            raise SettingsError(f"{self._where()}: expected {self.describe()}, got {value!r}")

    def format(self, value: Any) -> str:
        if self.base is tuple:
            return ",".join(value)
        if self.base is bool:
            return "true" if value else "false"
        return str(value)

    def default_text(self) -> str:
        if self.default is None:
            return "(none)"
        return self.format(self.default) or "(none)"


def _number(value: float) -> str:
    # 10000000, not 1e+07
    return str(int(value)) if float(value).is_integer() else f"{value:g}"
