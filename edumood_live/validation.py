"""The one way configs validate a field: an error names the field, the value and what is allowed.

Every config (`edumood_live.config`, `aggregator.AggregatorConfig`, `cluster.config`) checks its fields
with these helpers, so ``workers=1.5`` and ``min_face_px="32"`` fail alike: a `ConfigError` (a
`ValueError`) that says ``workers=1.5 is not allowed; use an integer in 1..32``.
"""

from __future__ import annotations

import math
from enum import Enum
from typing import TypeVar

from edumood_live.errors import ConfigError

E = TypeVar("E", bound=Enum)


def _range(low: float | None, high: float | None, low_open: bool, high_open: bool, integer: bool) -> str:
    if integer:
        if high is None:
            return f">= {low}"
        return f"in {low}..{high}"
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low:g}"
    return f"{'<' if high_open else '<='} {high:g}"


def require_number(
    name: str,
    value: object,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    integer: bool = False,
    none_ok: bool = False,
    extra: str = "",
) -> None:
    """ConfigError unless `value` is a finite number (an int with ``integer``) within the bounds.

    Booleans and strings are never numbers; ``none_ok`` also allows None.
    """
    if none_ok and value is None:
        return
    kinds: tuple[type, ...] = (int,) if integer else (int, float)
    ok = isinstance(value, kinds) and not isinstance(value, bool) and math.isfinite(value)  # type: ignore[arg-type]
    if ok:
        number = float(value)  # type: ignore[arg-type]
        ok = (low is None or (number > low if low_open else number >= low)) and (
            high is None or (number < high if high_open else number <= high)
        )
    if not ok:
        what = "an integer" if integer else "a finite number" if high is None else "a number"
        bounds = _range(low, high, low_open, high_open, integer)
        allowed = f"{what} {bounds}{' or None' if none_ok else ''}{extra}"
        raise ConfigError(f"{name}={value!r} is not allowed; use {allowed}")


def require_bool(name: str, value: object) -> None:
    """ConfigError unless `value` is True or False."""
    if not isinstance(value, bool):
        raise ConfigError(f"{name}={value!r} is not allowed; use True or False")


def require_choice(name: str, value: object, enum: type[E]) -> E:
    """The member of `enum` that `value` names (a member or its value); else ConfigError listing them."""
    try:
        return enum(value)
    except ValueError:
        allowed = ", ".join(repr(m.value) for m in enum)
        raise ConfigError(f"{name}={value!r} is not allowed; use one of {allowed}") from None
