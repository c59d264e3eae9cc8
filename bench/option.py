"""A declared option (of a learning rule, or of the recipe): its default, which fixes its type, its help,
and the values it accepts; parsing of typed or command-line values, with errors that name the key."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import yaml


@dataclass(frozen=True)
class Option:
    """A declared method option: its default (which also fixes its type), help, and accepted values."""

    default: Any
    help: str
    choices: tuple | None = None
    minimum: float | None = None
    maximum: float | None = None
    above: float | None = None  # exclusive lower bound, e.g. a learning rate must be > 0
    item: type = int  # a list option's element type: int (epochs) or float (finite numbers); bounds apply to each

    def accepted(self) -> str:
        if self.choices:
            return "one of " + ", ".join(map(str, self.choices))
        kind = type(self.default).__name__
        if isinstance(self.default, list):
            kind = "a list of integers" if self.item is int else "a list of finite numbers"
        bounds = [f">= {self.minimum}"] if self.minimum is not None else []
        bounds += [f"> {self.above}"] if self.above is not None else []
        bounds += [f"<= {self.maximum}"] if self.maximum is not None else []
        return " ".join([kind, *bounds] if not bounds else [kind, " and ".join(bounds)])

    def parse(self, key: str, value: Any) -> Any:
        """Coerce `value` (typed, or a string from the command line) and check it; ValueError names `key`."""
        if isinstance(value, str) and not isinstance(self.default, str):
            value = _parse_text(value)
        default = self.default
        ok = False
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif isinstance(
            default, float
        ):  # NaN and infinities are no setting: they would train "diverged" runs
            ok = (
                isinstance(value, (int, float))
                and not isinstance(value, bool)
                and math.isfinite(value)
            )
            value = float(value) if ok else value
        elif isinstance(default, str):
            ok = isinstance(value, str)
        elif isinstance(default, list):
            numbers = (int, float) if self.item is float else (int,)
            ok = isinstance(value, list) and all(
                isinstance(v, numbers) and not isinstance(v, bool) and math.isfinite(v)
                for v in value
            )
            value = [self.item(v) for v in value] if ok else value
        if ok and self.choices is not None:
            ok = value in self.choices
        if ok and isinstance(value, (int, float)) and not isinstance(value, bool):
            ok = (
                (self.minimum is None or value >= self.minimum)
                and (self.maximum is None or value <= self.maximum)
                and (self.above is None or value > self.above)
            )
        if ok and isinstance(value, list):
            ok = all(
                (self.minimum is None or v >= self.minimum)
                and (self.maximum is None or v <= self.maximum)
                and (self.above is None or v > self.above)
                for v in value
            )
        if not ok:
            finite = "a finite " if isinstance(value, float) and not math.isfinite(value) else ""
            raise ValueError(
                f"bad value {value!r} for {key!r}; accepted: {finite}{self.accepted()}"
            )
        return value


def _parse_text(text: str) -> Any:
    """A command-line value as YAML, except that '3e-3' (a string in YAML 1.1) is a number."""
    if not text.strip():
        return None
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def resolve_options(
    declared: dict[str, Option], given: dict[str, Any], owner: str
) -> dict[str, Any]:
    """Defaults overlaid with `given`, each parsed; an unknown key is a ValueError listing the known ones."""
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise ValueError(
            f"unknown option {unknown[0]!r} for {owner}; known: {', '.join(sorted(declared)) or 'none'}"
        )
    return {k: opt.parse(k, given[k]) if k in given else opt.default for k, opt in declared.items()}
