"""TOML files (rules, gate matrices) read so that anything tomllib refuses is an InputError."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Collection
from typing import Any

from xstate_check.errors import InputError, Location, clip_snippet, error_at
from xstate_check.limits import MAX_TOML_BYTES

__all__ = ["checked_table", "parse_toml"]

# A decimal integer longer than Python converts (sys.get_int_max_str_digits(), 4300 by
# default); TOML allows "_" between digits.
_LONG_DECIMAL = re.compile(r"(?<![\w.])[+-]?\d(?:_?\d){4300,}")
_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)")
_AT_END = " (at end of document)"


def _decode_error(path: str, text: str, error: tomllib.TOMLDecodeError) -> InputError:
    message = _POSITION.sub("", str(error))
    match = _POSITION.search(str(error))
    if match is None and str(error).endswith(_AT_END):
        # An unterminated string, array or table: point after the last character written.
        message = str(error)[: -len(_AT_END)]
        end = len(text.rstrip())
        return error_at(path, text, end, f"valid TOML ({message}, at the end of the file)")
    if match is None:
        return InputError(Location(path), f"valid TOML ({message})")
    line, column = int(match.group(1)), int(match.group(2))
    # tomllib counts lines by "\n" only; so must the snippet (not str.splitlines()).
    lines = text.split("\n")
    if not 0 < line <= len(lines):
        return InputError(Location(path, line, column), f"valid TOML ({message})")
    snippet, span = clip_snippet(lines[line - 1], column - 1, column)
    return InputError(
        Location(path, line, column), f"valid TOML ({message})", snippet=snippet, span=span
    )


def parse_toml(text: str, path: str) -> dict[str, Any]:
    """Return the TOML document of ``text``; anything tomllib cannot read is an InputError.

    Besides TOMLDecodeError, tomllib raises RecursionError on deeply nested arrays or inline
    tables (``x = [[[[…``) and ValueError on an integer of more than 4300 digits.
    """
    size = len(text) if len(text) * 4 <= MAX_TOML_BYTES else len(text.encode("utf-8", "replace"))
    if size > MAX_TOML_BYTES:
        raise InputError(
            Location(path),
            f"expected a TOML file of at most {MAX_TOML_BYTES} bytes ({MAX_TOML_BYTES >> 20} "
            f"MiB, xstate-check's limit for rule files and matrices); this one has {size}",
        )
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise _decode_error(path, text, error) from None
    except RecursionError:
        raise InputError(
            Location(path), "valid TOML (arrays and inline tables nested too deeply to read)"
        ) from None
    except ValueError as error:
        # Not a TOMLDecodeError (a ValueError too): int() refused a number too long to read.
        long_number = _LONG_DECIMAL.search(text)
        if long_number is None:
            raise InputError(Location(path), f"valid TOML ({error})") from None
        raise error_at(
            path, text, long_number.start(), "valid TOML (an integer of at most 4300 digits)",
            end=long_number.end(),
        ) from None


def checked_table(value: object, where: Location, keys: Collection[str], *, not_a_table: str,
                  unknown: str, key_at: Callable[[str], Location] | None = None
                  ) -> dict[str, Any]:
    """Return ``value`` as a TOML table holding none but ``keys``, else an InputError.

    ``not_a_table`` is the message where ``value`` is no table, at ``where``; ``unknown``
    the one for a key outside ``keys``, with ``{key}`` standing for the key's repr, at
    ``key_at(key)`` where given (the key's own line), else at ``where``.
    """
    if not isinstance(value, dict):
        raise InputError(where, not_a_table)
    for key in value:
        if key not in keys:
            raise InputError(key_at(key) if key_at else where, unknown.format(key=repr(key)))
    return value
