"""The Markdown format, for ``$GITHUB_STEP_SUMMARY`` and review comments.

First the template x profile matrix with the worst severity per cell (``not for host`` for
the pairs the gate did not check), then the problems grouped by rule, each with its
template line, the profiles it was seen on, and the fix.
"""

from __future__ import annotations

from xstate_check.formats._findings import problems, repo_path, repo_root, shown
from xstate_check.report import Report

__all__ = ["render_markdown"]

_MARK = {"error": "**error**", "warning": "warning", "info": "info", None: "ok"}
_RANK = {"error": 0, "warning": 1, "info": 2}


def _cell(text: str) -> str:
    """Return text safe inside a Markdown table cell: one line, no bare pipes or markup."""
    flat = " ".join(text.split())
    for char in "\\|`*_<>[]":
        flat = flat.replace(char, f"\\{char}")
    return flat


def render_markdown(report: Report, *, min_severity: str | None = None,
                    strict: bool = False) -> str:
    """Return the report as Markdown: a matrix of worst severities, then problems by rule."""
    root = repo_root()
    rows: dict[str, dict[str, str | None]] = {}
    columns: dict[str, None] = {}
    for subject in report.subjects:
        row = repo_path(subject.template, root) if subject.template else subject.source
        column = str(subject.details.get("profile") or subject.name)
        columns.setdefault(column)
        worst = min((f.severity for f in subject.findings
                     if shown(f.severity, min_severity) and subject.counts(f)),
                    key=_RANK.__getitem__, default=None)
        rows.setdefault(row, {})[column] = worst
    for pair in report.skipped:
        columns.setdefault(pair.profile)
        rows.setdefault(repo_path(pair.template, root), {})[pair.profile] = "skip"
    lines = ["# xstate-check", "", report.summary_text(), ""]
    if rows:
        names = list(columns)
        lines.append("| template | " + " | ".join(_cell(n) for n in names) + " |")
        lines.append("| --- |" + " --- |" * len(names))
        for row, cells in rows.items():
            shown_cells = []
            for name in names:
                if name not in cells:
                    shown_cells.append("")
                elif cells[name] == "skip":
                    shown_cells.append("not for host")
                else:
                    shown_cells.append(_MARK[cells[name]])
            lines.append(f"| {_cell(row)} | " + " | ".join(shown_cells) + " |")
        lines.append("")
    by_rule: dict[str, list[str]] = {}
    for problem in problems(report, min_severity):
        finding = problem.first
        where = problem.location
        place = (f"`{repo_path(where.path, root)}:{where.line}`" if where is not None and
                 where.line else (f"`{repo_path(where.path, root)}`" if where else ""))
        state = f" ({problem.state})" if problem.state else ""
        failing = problem.counts and (problem.severity == "error" or
                                      (strict and problem.severity == "warning"))
        mark = _MARK[problem.severity] + (" (fails)" if failing else "")
        by_rule.setdefault(f"{finding.rule} {finding.name}", []).append(
            f"- {mark}{state} {place} on {_cell(problem.where)}: {_cell(finding.message)}\n"
            f"  - fix: {_cell(finding.fix)}"
        )
    if by_rule:
        lines.append("## Problems by rule")
        lines.append("")
        for rule, items in by_rule.items():
            lines.append(f"### {rule}")
            lines.append("")
            lines.extend(items)
            lines.append("")
    return "\n".join(lines) + "\n"
