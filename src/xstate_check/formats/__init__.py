"""Output formats: each a small function of the same report."""

from __future__ import annotations

from collections import Counter

from xstate_check.report import Report

__all__ = ["FORMATS", "render", "render_statistics"]

FORMATS = ("text", "json", "sarif", "junit", "github", "markdown")


def render(report: Report, fmt: str, *, color: bool = False, quiet: bool = False,
           min_severity: str | None = None, strict: bool = False) -> str:
    """Return ``report`` rendered in format ``fmt`` (one of FORMATS).

    ``min_severity``: the least severity shown (None: info in text, JSON, JUnit and
    Markdown; warning in SARIF and GitHub, where infos would flood code scanning).
    ``strict``: warnings fail too (JUnit's failures follow the exit code).
    """
    if fmt == "json":
        return report.to_json_text()
    if fmt == "text":
        from xstate_check.formats.text import render_text

        return render_text(report, color=color, quiet=quiet, min_severity=min_severity)
    if fmt == "sarif":
        from xstate_check.formats.sarif import render_sarif

        return render_sarif(report, min_severity=min_severity or "warning")
    if fmt == "junit":
        from xstate_check.formats.junit import render_junit

        return render_junit(report, strict=strict)
    if fmt == "github":
        from xstate_check.formats.github import render_github

        return render_github(report, min_severity=min_severity or "warning")
    if fmt == "markdown":
        from xstate_check.formats.markdown import render_markdown

        return render_markdown(report, min_severity=min_severity, strict=strict)
    raise ValueError(f"unknown format {fmt!r}")


def render_statistics(report: Report) -> str:
    """Return the number of findings per rule, most first (``--statistics``)."""
    counted = Counter((f.rule, f.name, f.severity) for f in report.findings())
    lines = [f"{count:>6}  {rule}  {name}  ({severity})"
             for (rule, name, severity), count in sorted(
                 counted.items(), key=lambda item: (-item[1], item[0]))]
    lines.append(report.summary_text())
    return "\n".join(lines) + "\n"
