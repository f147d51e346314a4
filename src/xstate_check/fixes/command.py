"""``--fix``, ``--diff`` and ``--unsafe-fixes`` of ``gate`` and ``check``, as ruff has them.

``--diff`` prints each change as a unified diff and writes nothing; it exits 1 when there is
something to change, 0 otherwise. ``--fix`` rewrites each template in place (a temporary
file in the same folder, given the file's mode, renamed over it) and then reports what is
left, exiting as a check does: 0 when nothing left fails. A summary line says how many
findings the fixes removed and how many remain, with a hint where unsafe fixes would do more.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Callable, Sequence

from xstate_check.errors import InputError, Location, printable
from xstate_check.fixes.model import Fix

__all__ = ["FixSummary", "run_fixes", "summarize", "write_fixes"]


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


class FixSummary:
    """The counts of one ``--fix`` or ``--diff`` run over its templates."""

    def __init__(self, fixes: Sequence[Fix], hidden: int, *, strict: bool) -> None:
        self.fixes = list(fixes)
        self.found = sum(fix.found for fix in fixes)
        self.remaining = sum(fix.remaining for fix in fixes)
        self.fixed = self.found - self.remaining
        self.hidden = hidden
        self.word = "error and warning" if strict else "error"

    def changed(self) -> bool:
        """Return whether some template changes."""
        return any(fix.changed() for fix in self.fixes)

    def _noun(self, count: int) -> str:
        noun = _plural(count, self.word)
        return noun.replace("error and warnings", "errors and warnings")

    def fixed_line(self) -> str:
        """Return ruff's ``Found N errors (M fixed, K remaining).`` line and its hint."""
        if not self.found:
            return ""
        line = (f"Found {self._noun(self.found)} ({self.fixed} fixed, {self.remaining} "
                "remaining).")
        if self.hidden:
            fixes = _plural(self.hidden, "hidden fix").replace("fixs", "fixes")
            line += (f"\nNo fixes available ({fixes} can be enabled with the `--unsafe-fixes` "
                     "option).")
        return line + self.unfixed_lines()

    def unfixed_lines(self) -> str:
        """Return one line per template and rule left unfixed, saying why (or '')."""
        return "".join(f"\n  {printable(fix.path)}: {item.message}"
                       for fix in self.fixes for item in fix.unfixed)

    def diff_line(self) -> str:
        """Return ruff's ``Would fix N errors.`` line, with its hint."""
        fixes = "fix" if self.hidden == 1 else "fixes"
        if not self.fixed:
            hint = (f" ({self.hidden} {fixes} available with `--unsafe-fixes`)"
                    if self.hidden else "")
            return f"No errors would be fixed{hint}." + self.unfixed_lines()
        hint = (f" ({self.hidden} additional {fixes} available with `--unsafe-fixes`)"
                if self.hidden else "")
        return f"Would fix {self._noun(self.fixed)}{hint}." + self.unfixed_lines()


def summarize(fixes: Sequence[Fix], rerun: Callable[[Fix], Fix] | None, *,
              strict: bool) -> FixSummary:
    """Return the summary of fixes; ``rerun`` computes a fix again with unsafe fixes
    allowed, to count what they would add (None when they already were)."""
    hidden = 0
    if rerun is not None:
        for fix in fixes:
            if fix.needs_unsafe():
                with_unsafe = rerun(fix)
                hidden += max(0, fix.remaining - with_unsafe.remaining)
    return FixSummary(fixes, hidden, strict=strict)


def write_fixes(fixes: Sequence[Fix]) -> None:
    """Write each changed template over its file, atomically; InputError where that is
    unsafe, before anything is written.

    A link is followed to its file, which is replaced (the link keeps pointing at it); a
    file that is not regular, has other hard links (replacing it would split them), changed
    since it was read, or is given twice (under two names) is refused.
    """
    chosen: dict[str, Fix] = {}
    modes: dict[str, int] = {}
    for fix in fixes:
        if not fix.changed():
            continue
        target, mode = _writable(fix)
        if target in chosen:
            raise InputError(Location(fix.path), f"expected each template once; this is the "
                             f"file {printable(chosen[target].path)} names too")
        chosen[target] = fix
        modes[target] = mode
    for target, fix in chosen.items():
        _replace(fix, target, modes[target])


def _writable(fix: Fix) -> tuple[str, int]:
    """Return the file a fix replaces and its mode; InputError where it must not."""
    target = os.path.realpath(fix.path)
    try:
        info = os.stat(target)
    except OSError as error:
        raise InputError(Location(fix.path), f"expected the template to fix to exist; "
                         f"{error.strerror or error}") from None
    if not stat.S_ISREG(info.st_mode):
        raise InputError(Location(fix.path), "expected a regular file to rewrite with the fix")
    if info.st_nlink > 1:
        raise InputError(
            Location(fix.path), f"expected a file with one link, to rewrite it with the fix; "
            f"it has {info.st_nlink} hard links, which replacing it would split (--diff shows "
            "the change)")
    try:
        with open(target, "rb") as reader:
            current = reader.read()
    except OSError as error:
        raise InputError(Location(fix.path), f"expected a readable template; "
                         f"{error.strerror or error}") from None
    if current != fix.original.encode("utf-8"):
        raise InputError(Location(fix.path), "expected the template unchanged while it was "
                         "being fixed; it changed: run again")
    return target, stat.S_IMODE(info.st_mode)


def _replace(fix: Fix, target: str, mode: int) -> None:
    """Write the fixed text to a temporary file beside ``target`` and rename it over it."""
    folder = os.path.dirname(target)
    try:
        handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed or removed below
            "wb", dir=folder, prefix=".xstate-check-fix-", delete=False)
    except OSError as error:
        raise InputError(Location(fix.path), f"expected a writable folder for the fixed "
                         f"template; {error.strerror or error}") from None
    try:
        with handle:
            handle.write(fix.text.encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(handle.name, mode)
        os.replace(handle.name, target)
    except OSError as error:
        with contextlib.suppress(OSError):
            os.unlink(handle.name)
        raise InputError(Location(fix.path), f"expected to write the fixed template; "
                         f"{error.strerror or error}") from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(handle.name)
        raise


def run_fixes(paths: Sequence[str], make: Callable[[str, bool], Fix], *, diff: bool,
              unsafe: bool, strict: bool, out: Callable[[str], None]) -> FixSummary:
    """Fix each template (``make(path, unsafe)``): print the diffs with ``out`` (``diff``)
    or write the files; return the summary."""
    fixes = [make(path, unsafe) for path in paths]
    summary = summarize(fixes, None if unsafe else (lambda fix: make(fix.path, True)),
                        strict=strict)
    if diff:
        for fix in fixes:
            if fix.changed():
                out(fix.diff())
    else:
        write_fixes(fixes)
    return summary
