"""Output formats: each a small function of the same report."""

from __future__ import annotations

import io

from xstate_check.formats.stream import StatisticsWriter, make_writer, write_report
from xstate_check.report import Report

__all__ = ["FORMATS", "render", "render_statistics"]

FORMATS = ("text", "json", "sarif", "junit", "github", "markdown")


def render(report: Report, fmt: str, *, color: bool = False, quiet: bool = False,
           min_severity: str | None = None, strict: bool = False,
           fix_hint: bool = True) -> str:
    """Return ``report`` rendered in format ``fmt`` (one of FORMATS).

    ``min_severity``: the least severity shown (None: info in text, JSON, JUnit and
    Markdown; warning in SARIF and GitHub, where infos would flood code scanning).
    ``strict``: warnings fail too (JUnit's failures follow the exit code).
    ``fix_hint``: the text format ends with the number of findings ``--fix`` removes (not
    after ``--fix``, whose own summary says what it did).
    """
    if fmt == "junit":
        from xstate_check.formats.junit import render_junit

        return render_junit(report, strict=strict)
    out = io.StringIO()
    write_report(report, make_writer(fmt, out, kind=report.kind, color=color, quiet=quiet,
                                     min_severity=min_severity, strict=strict,
                                     fix_hint=fix_hint))
    return out.getvalue()


def render_statistics(report: Report) -> str:
    """Return the number of findings per rule, most first (``--statistics``)."""
    out = io.StringIO()
    write_report(report, StatisticsWriter(out))
    return out.getvalue()
