"""Option types whose errors say what is expected, and ``KEY=VALUE`` pairs for tags and data."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:  # click 8.5 made ParamType generic; older versions can't subscript it at run time
    _IntType = click.ParamType[int, Any]
    _FloatType = click.ParamType[float, Any]
else:
    _IntType = _FloatType = click.ParamType

_INTEGER = re.compile(r"[+-]?\d+")


class WholeNumber(_IntType):
    """An integer, with a message that says so (click's own speaks of an "integer range")."""

    name = "integer"

    def __init__(self, min: int | None = None, max: int | None = None) -> None:
        self.min, self.max = min, max

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif isinstance(value, str) and _INTEGER.fullmatch(value.strip().replace("_", "")):
            number = int(value.strip().replace("_", ""))
        else:
            self.fail(f"{value!r} is not a whole number{self._range()}", param, ctx)
        if (self.min is not None and number < self.min) or (self.max is not None and number > self.max):
            self.fail(f"{number} is out of range: expected a whole number{self._range()}", param, ctx)
        return number

    def _range(self) -> str:
        if self.min is not None and self.max is not None:
            return f" from {self.min} to {self.max}"
        if self.min is not None:
            return f" of at least {self.min}"
        if self.max is not None:
            return f" of at most {self.max}"
        return ""


class Seconds(_FloatType):
    """A finite, non-negative number of seconds (``positive`` refuses 0 too)."""

    name = "seconds"

    def __init__(self, positive: bool = False) -> None:
        self.positive = positive

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            seconds = math.nan
        if not math.isfinite(seconds) or seconds < 0 or (self.positive and seconds == 0):
            expected = "more than 0" if self.positive else "0 or more"
            self.fail(f"{value!r} is not a number of seconds ({expected})", param, ctx)
        return seconds


def tag_pairs(values: Iterable[str], option: str = "--tag") -> dict[str, str]:
    """``KEY=VALUE`` or ``KEY:VALUE`` (split at the first of either); both parts must be there."""
    tags: dict[str, str] = {}
    for item in values:
        cut = min((i for i in (item.find("="), item.find(":")) if i >= 0), default=-1)
        key, value = (item[:cut], item[cut + 1 :]) if cut >= 0 else (item, "")
        if cut < 0 or not key or not value:
            raise click.BadParameter(
                f"{item!r} is not KEY=VALUE (or KEY:VALUE) with both parts", param_hint=f"'{option}'"
            )
        tags[key] = value
    return tags


def data_pairs(values: Iterable[str], option: str = "--data") -> dict[str, Any]:
    """``KEY=TEXT`` (a string) or ``KEY:=JSON`` (a number, true, null, a list, an object...)."""
    data: dict[str, Any] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key or key == ":":
            raise click.BadParameter(f"{item!r} is not KEY=TEXT or KEY:=JSON", param_hint=f"'{option}'")
        if key.endswith(":"):
            key = key[:-1]
            try:
                data[key] = json.loads(value, parse_constant=_no_constant)
            except ValueError as exc:
                raise click.BadParameter(f"{item!r}: the value is not JSON ({exc})", param_hint=f"'{option}'") from None
        else:
            data[key] = value
    return data


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")
