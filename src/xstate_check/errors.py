"""The errors xstate-check raises, and the location every message names."""

from __future__ import annotations

import functools
import re
from bisect import bisect_right

import attrs

__all__ = [
    "QUOTE_WIDTH",
    "SNIPPET_WIDTH",
    "InputError",
    "LineIndex",
    "Location",
    "ProbeError",
    "XstateCheckError",
    "check_argument",
    "clip_quote",
    "clip_snippet",
    "error_at",
    "line_bounds",
    "line_column",
    "printable",
    "printable_json",
]

# Characters that must never reach a terminal or a log raw: C0 and C1 controls (ESC starts
# colour and cursor sequences, CR and LF forge lines), DEL, the Unicode line and paragraph
# separators, the bidirectional overrides and isolates that reorder what is shown, the
# byte-order mark, and lone surrogates (which no output encoding can write).
_UNPRINTABLE_CHARACTERS = (
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e"
    "\u2066-\u2069\ufeff\ud800-\udfff]"
)


@functools.cache
def _unprintable() -> re.Pattern[str]:
    """Return the pattern of what ``printable`` escapes, compiled when first needed: 0.7 ms
    that a pre-boot check, which prints nothing, does not spend."""
    return re.compile(_UNPRINTABLE_CHARACTERS)


_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    return _NAMED_ESCAPES.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def printable(text: str, keep: str = "") -> str:
    """Return ``text`` with every control character written as an escape (``\\x1b``, ``\\n``).

    Everything an output shows from input (file names, a dump's ``source``, excerpts) goes
    through here, so that input cannot move the cursor, recolour, hide or forge lines.
    Characters in ``keep`` stay, for a format that escapes them its own way (GitHub's %0A).
    """
    unprintable = _unprintable()
    if unprintable.search(text) is None:
        return text
    if keep:
        return unprintable.sub(
            lambda match: match.group() if match.group() in keep else _escape(match), text
        )
    return unprintable.sub(_escape, text)


def printable_json(text: str) -> str:
    """Return JSON text (from ``json.dumps(..., ensure_ascii=False)``) with the characters
    ``printable`` escapes written as ``\\uXXXX``: the same JSON, safe to show.

    ``json.dumps`` already escapes C0 controls inside strings, so the newlines and tabs left
    are the layout's own and stay.
    """
    return _unprintable().sub(
        lambda match: "".join(f"\\u{ord(char):04x}" for char in match.group())
        if match.group() not in "\n\t\r" else match.group(),
        text,
    )


def check_argument(
    function: str, name: str, value: object, types: type | tuple[type, ...], expected: str
) -> None:
    """Raise TypeError, at the public API's edge, when ``value`` is not one of ``types``.

    A bool is not taken for an int. The message names the function, the argument, what it
    accepts and what it was given.
    """
    accepted = isinstance(value, types) and not (
        isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,))
        and int in (types if isinstance(types, tuple) else (types,))
    )
    if not accepted:
        raise TypeError(
            f"{function}() expects {name} to be {expected}, not {type(value).__name__}"
        )


#: Snippets of longer lines are cut to this many characters around the error.
SNIPPET_WIDTH = 120


def clip_snippet(
    line: str, start: int, end: int, width: int = SNIPPET_WIDTH
) -> tuple[str, tuple[int, int]]:
    """Return ``line`` cut to about ``width`` characters around ``start:end``, and the span.

    The span is moved to match and kept inside the line (at least one character wide); cut
    ends are marked with "…". A 16 MiB line thus gives a short message.
    """
    start = max(0, min(start, len(line)))
    end = max(start + 1, min(end, len(line)))
    if len(line) <= width:
        return line, (start, end)
    low = max(0, min(start - width // 3, len(line) - width))
    high = min(len(line), low + width)
    shift = (1 if low else 0) - low
    snippet = ("…" if low else "") + line[low:high] + ("…" if high < len(line) else "")
    return snippet, (start + shift, max(min(end, high), start + 1) + shift)


def line_bounds(text: str, offset: int) -> tuple[int, int, int]:
    """Return the 1-based line of ``offset`` in ``text``, and that line's start and end."""
    start = text.rfind("\n", 0, offset) + 1
    end = text.find("\n", offset)
    return text.count("\n", 0, start) + 1, start, len(text) if end < 0 else end


class LineIndex:
    """Lines and columns of offsets of one text, counted only when asked for.

    Each answer is kept as a checkpoint; the next one is counted (in C) from the nearest
    checkpoint before it. Asked in document order, as readers do, the whole text is counted
    once, and no list of every newline is ever built (16 MiB of newlines would be 16 million
    Python ints).
    """

    __slots__ = ("_marks", "_text")

    def __init__(self, text: str) -> None:
        self._text = text
        # (offset, 1-based line, offset where that line starts), sorted by offset.
        self._marks: list[tuple[int, int, int]] = [(0, 1, 0)]

    def position(self, offset: int) -> tuple[int, int]:
        """Return the 1-based line and column (in characters) of ``offset``."""
        marks = self._marks
        index = bisect_right(marks, (offset, 1 << 62, 0)) - 1
        mark, line, start = marks[index]
        if mark != offset:
            text = self._text
            newlines = text.count("\n", mark, offset)
            if newlines:
                line += newlines
                start = text.rfind("\n", mark, offset) + 1
            marks.insert(index + 1, (offset, line, start))
        return line, offset - start + 1


def line_column(text: str, offset: int) -> tuple[int, int]:
    """Return the 1-based line and column (in characters) of ``offset`` in ``text``."""
    line, start, _ = line_bounds(text, offset)
    return line, offset - start + 1


def error_at(path: str, text: str, offset: int, expected: str, *,
             end: int | None = None) -> InputError:
    """Return the InputError at a character offset of ``text``: line, column and a caret.

    ``end`` (exclusive) widens the caret over a span on the same line. An offset at the end
    of the text points just after its last character that is not blank.
    """
    offset = max(0, min(offset, len(text)))
    if offset == len(text) and offset > 0:
        offset = len(text.rstrip(" \t\r\n")) or offset
    line, start, stop = line_bounds(text, offset)
    column = offset - start
    last = column + 1 if end is None else max(column + 1, min(end, stop) - start)
    snippet, span = clip_snippet(text[start:stop].rstrip("\r"), column, last)
    return InputError(Location(path, line, column + 1), expected, snippet=snippet, span=span)


#: Values quoted inside a message (a key, a name, an edit) are cut to this many characters.
QUOTE_WIDTH = 100


def clip_quote(value: str, width: int = QUOTE_WIDTH) -> str:
    """Return ``repr(value)`` for a message, the value cut to ``width`` characters plus "…"."""
    return repr(value if len(value) <= width else value[:width] + "…")


@attrs.frozen(order=True)
class Location:
    """A place in a file: path, 1-based line and column (0 where unknown)."""

    path: str
    line: int = 0
    column: int = 0

    def __str__(self) -> str:
        if self.line and self.column:
            return f"{self.path}:{self.line}:{self.column}"
        if self.line:
            return f"{self.path}:{self.line}"
        return self.path

    def to_json(self) -> dict[str, object]:
        """Return the location as the JSON object of schema xstate-check/1."""
        return {"path": self.path, "line": self.line or None, "column": self.column or None}


class XstateCheckError(Exception):
    """Base class of every error xstate-check raises on purpose."""

    exit_code = 2


class InputError(XstateCheckError, ValueError):
    """Raised when a file, template, rule or argument is not what was expected (exit code 2).

    ``location`` names the file, line and column; ``expected`` says what should have been
    there; ``snippet`` optionally holds the offending source line for a caret drawing.
    """

    exit_code = 2

    def __init__(
        self,
        location: Location | str,
        expected: str,
        *,
        snippet: str | None = None,
        span: tuple[int, int] | None = None,
    ) -> None:
        self.location = location if isinstance(location, Location) else Location(location)
        self.expected = expected
        self.snippet = snippet
        self.span = span
        super().__init__(self.render())

    def render(self) -> str:
        """Return the one message for a person: location, what was expected, and a caret.

        Control characters from the input (in the path, the message or the excerpt) are
        escaped, and the caret still stands under the span.
        """
        text = f"{printable(str(self.location))}: {printable(self.expected)}"
        if self.snippet is not None:
            line = self.snippet.rstrip("\n")
            start, end = self.span if self.span else (0, len(line))
            before = printable(line[:start])
            inside = printable(line[start:end])
            after = printable(line[end:])
            marker = " " * len(before) + "~" * max(0, len(inside) - 1) + "^"
            text += f"\n    {before}{inside}{after}\n    {marker}"
        return text


class ProbeError(XstateCheckError, OSError):
    """Raised when this machine cannot be probed: not x86-64, no usable /dev/kvm (exit 3).

    ``errno`` is set when a system call failed, so callers can tell EACCES from ENOENT.
    """

    exit_code = 3

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.errno = errno

    def __str__(self) -> str:
        return self.message
