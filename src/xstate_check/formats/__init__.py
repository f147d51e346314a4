"""Output formats: each a small function of the same report."""

from __future__ import annotations

from xstate_check.report import Report

__all__ = ["FORMATS", "render"]

FORMATS = ("text", "json", "sarif", "junit", "github")


def render(report: Report, fmt: str, *, color: bool = False) -> str:
    """Return ``report`` rendered in format ``fmt`` (one of FORMATS)."""
    if fmt == "json":
        return report.to_json_text()
    if fmt == "text":
        from xstate_check.formats.text import render_text

        return render_text(report, color=color)
    if fmt == "sarif":
        from xstate_check.formats.sarif import render_sarif

        return render_sarif(report)
    if fmt == "junit":
        from xstate_check.formats.junit import render_junit

        return render_junit(report)
    if fmt == "github":
        from xstate_check.formats.github import render_github

        return render_github(report)
    raise ValueError(f"unknown format {fmt!r}")
