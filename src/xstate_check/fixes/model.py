"""What a fix is: edits to a template's text and what they leave unfixed.

An ``Edit`` replaces one span of the template's original text (a bitmap string's characters,
or an inserted register modifier or cpuid modifier); a ``Fix`` is every edit for one template
with the resulting text, the rules whose findings the edits remove on every profile, and
the error findings they do not.
"""

from __future__ import annotations

from typing import Literal

import attrs

__all__ = ["Applicability", "Edit", "Fix", "Unfixed", "UnfixedReason"]

#: ``safe``: completes what the template started (clears the rest of a group one of whose
#: bits it already clears); ``unsafe``: removes a feature the template did not touch.
Applicability = Literal["safe", "unsafe"]

#: Why an error finding stays: ``no-fix`` (its rule declares none), ``unsafe-only`` (only an
#: unsafe fix, not asked for), ``new-finding`` (every fix would bring a new error or warning
#: on some profile, or modify an entry one of them lacks), ``not-template`` (no bit the
#: template sets or clears would change it: the table itself holds it).
UnfixedReason = Literal["no-fix", "unsafe-only", "new-finding", "not-template"]


@attrs.frozen
class Edit:
    """One replacement in a template's original text.

    ``start``/``end`` are character offsets into ``Fix.original`` (equal for an insertion);
    ``line``/``column`` and ``end_line``/``end_column`` are 1-based, counted in characters
    (Unicode code points), ``end_column`` exclusive, as SARIF regions are.
    """

    path: str
    start: int
    end: int
    line: int
    column: int
    end_line: int
    end_column: int
    original: str
    replacement: str
    leaf: int
    subleaf: int
    register: str
    rules: tuple[str, ...]
    applicability: Applicability


@attrs.frozen
class Unfixed:
    """A rule whose error findings the fix leaves, why, and on which profiles."""

    rule: str
    reason: UnfixedReason
    message: str
    profiles: tuple[str, ...] = ()


@attrs.frozen
class Fix:
    """Every edit for one template: the new text, what it fixes and what it leaves."""

    path: str
    original: str
    text: str
    edits: tuple[Edit, ...] = ()
    fixed: tuple[str, ...] = ()
    unfixed: tuple[Unfixed, ...] = ()
    profiles: tuple[str, ...] = ()
    #: Findings that fail the run (errors; warnings too when strict), counted per table,
    #: before the fix and after it.
    found: int = 0
    remaining: int = 0

    def changed(self) -> bool:
        """Return whether the fix changes the template's text."""
        return self.text != self.original

    def diff(self) -> str:
        """Return a unified diff of the change (``--- a/PATH``, ``+++ b/PATH``), or ''."""
        if not self.changed():
            return ""
        import difflib
        import os

        path = self.path
        if os.path.isabs(path):
            relative = os.path.relpath(path)
            path = path if relative.startswith("..") else relative
        path = path.replace("\\", "/").lstrip("/")
        lines = difflib.unified_diff(
            _lines(self.original), _lines(self.text),
            f"a/{path}", f"b/{path}",
        )
        out: list[str] = []
        for line in lines:
            out.append(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n")
        return "".join(out)

    def needs_unsafe(self) -> bool:
        """Return whether a rule is left that only an unsafe fix removes."""
        return any(item.reason == "unsafe-only" for item in self.unfixed)

    def edits_for(self, rule: str) -> tuple[Edit, ...]:
        """Return the edits that fix findings of ``rule`` (a rule name)."""
        return tuple(edit for edit in self.edits if rule in edit.rules)


def _lines(text: str) -> list[str]:
    """Split text after each newline only (JSON strings may hold other line separators)."""
    parts = text.split("\n")
    return [part + "\n" for part in parts[:-1]] + ([parts[-1]] if parts[-1] else [])
