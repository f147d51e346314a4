"""The rule language's operators on values: integer masks stay within 64 bits."""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

__all__ = ["COMPARE_OPS", "INT_OPS", "MASK64", "negate", "subtract"]

#: Masks are 64-bit.
MASK64 = (1 << 64) - 1

def _shift_left(value: int, count: int) -> int:
    """Shift within 64 bits: masks are 64-bit, and a huge count must not build a huge int."""
    return (value << count) & MASK64 if 0 <= count < 64 else 0


def _shift_right(value: int, count: int) -> int:
    return value >> count if 0 <= count < 64 else 0


def _multiply(left: int, right: int) -> int:
    return (left * right) & MASK64


def subtract(left: int, right: int) -> int:
    """Subtract within 64 bits: a result below zero wraps, as in the 64-bit masks it is
    read as (a negative number has no bits to list: ``-xcr0`` is ``~xcr0 + 1``)."""
    value = left - right
    return value & MASK64 if value < 0 else value


def negate(value: int) -> int:
    """Return ``-value`` within 64 bits (``0`` stays ``0``)."""
    return -value & MASK64


INT_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "|": operator.or_,
    "^": operator.xor,
    "&": operator.and_,
    "<<": _shift_left,
    ">>": _shift_right,
    "+": operator.add,
    "-": subtract,
    "*": _multiply,
}
COMPARE_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
