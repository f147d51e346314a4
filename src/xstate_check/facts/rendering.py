"""Rendering: a fact's value as a message shows it, by its kind."""

from __future__ import annotations

from collections.abc import Callable

from xstate_check.facts.registry import Kind
from xstate_check.xfeatures import format_mask

__all__ = ["format_value", "formatter"]


def format_value(value: object, kind: Kind) -> str:
    """Return a value as a message shows it: masks with names, sizes in bytes and hex."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if kind == "mask" and isinstance(value, int):
        return format_mask(value)
    if kind == "size" and isinstance(value, int):
        return f"{value} ({value:#x})"
    if kind == "sizes" and isinstance(value, tuple):
        return ", ".join(f"{size} ({size:#x})" for size in value)
    if kind == "version" and isinstance(value, tuple):
        return ".".join(str(part) for part in value)
    if kind == "int" and isinstance(value, int):
        return f"{value:#x}"
    if isinstance(value, int):
        return str(value)
    return str(value)


def formatter(kind: Kind) -> Callable[[object], str]:
    """Return the function that shows values of ``kind`` as ``format_value`` does, asking
    first whether the value is the plain int a mask or a size almost always is."""
    if kind == "mask":
        def show_mask(value: object) -> str:
            if value.__class__ is int:
                return format_mask(value)
            return format_value(value, kind)

        return show_mask
    if kind == "size":
        def show_size(value: object) -> str:
            if value.__class__ is int:
                return f"{value} ({hex(value)})"  # hex(): f"{value:#x}" with less work
            return format_value(value, kind)

        return show_size
    return lambda value: format_value(value, kind)
