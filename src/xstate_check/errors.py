"""The errors xstate-check raises, and the location every message names."""

from __future__ import annotations

import attrs

__all__ = [
    "QUOTE_WIDTH",
    "SNIPPET_WIDTH",
    "InputError",
    "Location",
    "ProbeError",
    "XstateCheckError",
    "clip_quote",
    "clip_snippet",
]

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
        """Return the one message for a person: location, what was expected, and a caret."""
        text = f"{self.location}: {self.expected}"
        if self.snippet is not None:
            start, end = self.span if self.span else (0, len(self.snippet))
            line = self.snippet.rstrip("\n")
            marker = " " * start + "~" * max(0, end - start - 1) + "^"
            text += f"\n    {line}\n    {marker}"
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
