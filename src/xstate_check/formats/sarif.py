"""The SARIF 2.1.0 format: for GitHub code scanning and other SARIF viewers.

One run; the tool's rules are the whole catalogue, each with its help text. Each problem
(one rule at one template line, however many profiles show it) is one result pointing at
that file and line, relative to the repository root (``%SRCROOT%``), naming the profiles in
its message and properties, with a fingerprint of rule, file and the line's content that
survives line moves, and, in a regression gate, a ``baselineState`` of ``new`` or
``unchanged``. Infos are left out unless ``min_severity="info"``.

A result whose finding has a suggested fix has ``fixes``: the safe fix (what ``--fix``
applies) or, where only an unsafe one removes it, that (what ``--fix --unsafe-fixes``
applies), described by its applicability and bitmaps, whose replacements delete exactly
the bitmap characters they change (line and column, exclusive end column, and character offset and
length, all in code points as the run's ``columnKind`` says; each region in the unmodified
file, in order).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import IO, TYPE_CHECKING
from urllib.parse import quote

from xstate_check import __version__
from xstate_check.engine import Rule, load_catalogue
from xstate_check.errors import Location, printable_json
from xstate_check.formats._findings import Problem, ProblemCollector, repo_path, repo_root
from xstate_check.formats.stream import Tally
from xstate_check.report import (
    Finding,
    Severity,
    SkippedPair,
    SubjectReport,
    SuggestedFix,
)

if TYPE_CHECKING:
    from xstate_check.fixes import Edit

__all__ = ["SARIF_SCHEMA", "SARIF_VERSION", "SarifWriter", "help_uri"]

SARIF_VERSION = "2.1.0"
SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
_FINGERPRINT_KEY = "xstateCheckProblem/v1"
_SRCROOT = "%SRCROOT%"
_LEVELS: dict[Severity, str] = {"error": "error", "warning": "warning", "info": "note"}
_URL = re.compile(r"https://[^\s)\]]+")


def help_uri(rule: Rule) -> str | None:
    """Return the URL of the rule's first reference that has one (its SARIF ``helpUri``)."""
    for reference in rule.references:
        found = _URL.search(reference)
        if found is not None:
            return found.group().rstrip(".,;")
    return None


def _rule_descriptor(rule: Rule) -> dict[str, object]:
    summary = rule.summary.strip()
    explanation = rule.explanation.strip() or summary
    consequence = rule.consequence.strip()
    fix = rule.fix.strip()
    references = list(rule.references)
    help_text = f"{explanation}\n\nConsequence: {consequence}\n\nFix: {fix}"
    help_markdown = f"{explanation}\n\n**Consequence:** {consequence}\n\n**Fix:** {fix}"
    if references:
        help_text += "\n\nReferences:\n" + "\n".join(f"- {ref}" for ref in references)
        linked = (_URL.sub(lambda url: f"<{url.group()}>", ref) for ref in references)
        help_markdown += "\n\n**References:**\n\n" + "\n".join(f"- {ref}" for ref in linked)
    help_text += f"\n\nMore: xstate-check explain {rule.id}"
    help_markdown += f"\n\nMore: `xstate-check explain {rule.id}`"
    descriptor: dict[str, object] = {
        "id": rule.id,
        "name": rule.name,
        "shortDescription": {"text": summary},
        "fullDescription": {"text": explanation},
        "help": {"text": help_text, "markdown": help_markdown},
        "defaultConfiguration": {"level": _LEVELS[rule.severity]},
        "properties": {"tags": ["xsave", rule.family], "precision": "very-high"},
    }
    uri = help_uri(rule)
    if uri is not None:
        descriptor["helpUri"] = uri
    return descriptor


def _finding_descriptor(finding: Finding) -> dict[str, object]:
    """Describe a rule the catalogue lacks from one of its findings."""
    return {
        "id": finding.rule,
        "name": finding.name,
        "shortDescription": {"text": finding.name},
        "help": {"text": f"Consequence: {finding.consequence}\n\nFix: {finding.fix}"},
        "defaultConfiguration": {"level": _LEVELS[finding.severity]},
    }


def _artifact(path: str, root: Path | None) -> dict[str, str]:
    """Return the artifactLocation of ``path``: relative to ``root`` where it lies under it."""
    try:
        os.fsencode(path)
    except UnicodeEncodeError:
        # A name read from input (a dump's source) with a lone surrogate: no file has it.
        path = path.encode("utf-8", "replace").decode("utf-8")
    shown = repo_path(path, root)
    if shown.startswith("/"):
        return {"uri": Path(shown).as_uri()}
    return {"uri": quote(shown), "uriBaseId": _SRCROOT}


def _physical(location: Location, root: Path | None) -> dict[str, object]:
    physical: dict[str, object] = {"artifactLocation": _artifact(location.path, root)}
    if location.line > 0:
        region: dict[str, int] = {"startLine": location.line}
        if location.column > 0:
            region["startColumn"] = location.column
        physical["region"] = region
    return physical


def _line_text(path: str, line: int, cache: dict[str, list[str]]) -> str:
    """Return the text of ``line`` of ``path`` without surrounding blanks ("" if unreadable)."""
    if path not in cache:
        from xstate_check.textfile import read_text

        if len(cache) >= 8:  # problems come file by file: keep the last few files only
            cache.clear()

        try:
            cache[path] = read_text(path).splitlines()
        except Exception:  # an unreadable file has no line content to fingerprint
            cache[path] = []
    lines = cache[path]
    return lines[line - 1].strip() if 0 < line <= len(lines) else ""


def _fingerprint(problem: Problem, uri: str, cache: dict[str, list[str]]) -> str:
    """Return a digest of rule, file and the line's content: it survives edits above it."""
    where = problem.location
    content = _line_text(where.path, where.line, cache) if where is not None else ""
    key = "\x00".join((problem.first.rule, uri, content or problem.first.message))
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32]


class SarifWriter:
    """Writes SARIF: one result per problem, once every subject is in."""

    def __init__(self, out: IO[str], *, root: str | Path | None = None,
                 min_severity: str | None = "warning") -> None:
        self.out = out
        self.root = root
        self._problems = ProblemCollector(min_severity)

    def subject(self, subject: SubjectReport) -> None:
        """Group one subject's findings into problems."""
        self._problems.add(subject)

    def skipped(self, pair: SkippedPair) -> None:
        """Pairs not checked have no result."""

    def finish(self, tally: Tally) -> None:
        """Write the SARIF document."""
        _write_document(self._problems.problems(), self.root, self.out)


#: Stands for the results while the rest of the document is laid out (results are written
#: one at a time, so that a large gate's SARIF is never one string in memory).
_RESULTS = "@@xstate-check results@@"
_RESULT_INDENT = " " * 8  # results sit at depth 4: document, runs, run, results


def _write_document(found: list[Problem], root: str | Path | None, out: IO[str]) -> None:
    base = Path(os.path.abspath(root)) if root is not None else repo_root()
    descriptors: list[dict[str, object]] = []
    index: dict[str, int] = {}
    for rule in load_catalogue().rules:
        index[str(rule.id)] = len(descriptors)
        descriptors.append(_rule_descriptor(rule))
    for problem in found:
        finding = problem.first
        if finding.rule not in index:
            index[finding.rule] = len(descriptors)
            descriptors.append(_finding_descriptor(finding))

    run: dict[str, object] = {
        "tool": {
            "driver": {
                "name": "xstate-check",
                "version": __version__,
                "rules": descriptors,
            }
        },
        "invocations": [{"executionSuccessful": True}],
        "columnKind": "unicodeCodePoints",
        "results": [_RESULTS] if found else [],
    }
    if base is not None:
        run["originalUriBaseIds"] = {_SRCROOT: {"uri": base.as_uri().rstrip("/") + "/"}}
    document = {"$schema": SARIF_SCHEMA, "version": SARIF_VERSION, "runs": [run]}
    layout = printable_json(json.dumps(document, indent=2, ensure_ascii=False)) + "\n"
    if not found:
        out.write(layout)
        return
    before, after = layout.split(f'"{_RESULTS}"')
    out.write(before)
    cache: dict[str, list[str]] = {}
    for number, problem in enumerate(found):
        result = _result(problem, index, base, cache)
        text = printable_json(json.dumps(result, indent=2, ensure_ascii=False))
        if number:
            out.write(",\n" + _RESULT_INDENT)
        out.write(text.replace("\n", "\n" + _RESULT_INDENT))
    out.write(after)


def _result(problem: Problem, index: dict[str, int], base: Path | None,
            cache: dict[str, list[str]]) -> dict[str, object]:
    finding = problem.first
    text = f"{finding.message} (on {problem.where})"
    result: dict[str, object] = {
        "ruleId": finding.rule,
        "ruleIndex": index[finding.rule],
        "level": _LEVELS[problem.severity],
        "message": {"text": text},
    }
    uri = ""
    if problem.location is not None:
        physical = _physical(problem.location, base)
        result["locations"] = [{"physicalLocation": physical}]
        uri = str(physical["artifactLocation"]["uri"])  # type: ignore[index]
    result["partialFingerprints"] = {_FINGERPRINT_KEY: _fingerprint(problem, uri, cache)}
    if problem.state is not None:
        result["baselineState"] = problem.state
    if finding.fixes:
        result["fixes"] = [_fix(finding, fix, base) for fix in finding.fixes]
    result["properties"] = {
        "profiles": list(problem.subjects),
        "ruleName": finding.name,
        "consequence": finding.consequence,
        "fix": finding.fix,
    }
    return result


def _replacement(edit: Edit) -> dict[str, object]:
    """Return one edit as a replacement: the characters it deletes, in the unmodified file."""
    region = {
        "startLine": edit.line,
        "startColumn": edit.column,
        "endLine": edit.end_line,
        "endColumn": edit.end_column,
        "charOffset": edit.start,
        "charLength": edit.end - edit.start,
    }
    return {"deletedRegion": region, "insertedContent": {"text": edit.replacement}}


def _fix(finding: Finding, fix: SuggestedFix, base: Path | None) -> dict[str, object]:
    """Return one way to fix a finding as a SARIF fix: a description and the replacements."""
    how = "--fix" if fix.applicability == "safe" else "--fix --unsafe-fixes"
    changes = "; ".join(change.text() for change in fix.bitmaps)
    description = (f"{fix.applicability.capitalize()} fix of {finding.name} "
                   f"(xstate-check {how}): {changes}")
    by_path: dict[str, list[Edit]] = {}
    for edit in fix.edits:
        by_path.setdefault(edit.path, []).append(edit)
    artifact_changes = [
        {"artifactLocation": _artifact(path, base),
         "replacements": [_replacement(edit)
                          for edit in sorted(group, key=lambda edit: edit.start)]}
        for path, group in by_path.items()
    ]
    return {"description": {"text": description}, "artifactChanges": artifact_changes}
