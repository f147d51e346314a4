"""The SARIF 2.1.0 format: for GitHub code scanning and other SARIF viewers.

One run; the tool's rules are the whole catalogue, each with its help text; each finding is
a result pointing at the template file and line that caused it, with a fingerprint that
stays the same across runs and line moves (rule, file, subject, message), and, in a
regression gate, a ``baselineState`` of ``new`` or ``unchanged``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from urllib.parse import quote

from xstate_check import __version__
from xstate_check.engine import Rule, load_catalogue
from xstate_check.errors import Location
from xstate_check.formats._findings import finding_location, findings_with_state
from xstate_check.report import Finding, Report, Severity

__all__ = ["SARIF_SCHEMA", "SARIF_VERSION", "render_sarif"]

SARIF_VERSION = "2.1.0"
SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
_FINGERPRINT_KEY = "xstateCheckFinding/v1"
_SRCROOT = "%SRCROOT%"
_LEVELS: dict[Severity, str] = {"error": "error", "warning": "warning", "info": "note"}


def _rule_descriptor(rule: Rule) -> dict[str, object]:
    summary = rule.summary.strip()
    explanation = rule.explanation.strip() or summary
    consequence = rule.consequence.strip()
    fix = rule.fix.strip()
    references = list(rule.references)
    help_text = f"{explanation}\n\nConsequence: {consequence}\n\nFix: {fix}"
    help_markdown = f"{explanation}\n\n**Consequence:** {consequence}\n\n**Fix:** {fix}"
    if references:
        listed = "\n".join(f"- {reference}" for reference in references)
        help_text += "\n\nReferences:\n" + listed
        help_markdown += "\n\n**References:**\n\n" + listed
    help_text += f"\n\nMore: xstate-check explain {rule.id}"
    help_markdown += f"\n\nMore: `xstate-check explain {rule.id}`"
    return {
        "id": rule.id,
        "name": rule.name,
        "shortDescription": {"text": summary},
        "fullDescription": {"text": explanation},
        "help": {"text": help_text, "markdown": help_markdown},
        "defaultConfiguration": {"level": _LEVELS[rule.severity]},
        "properties": {"tags": ["xsave", rule.family], "precision": "very-high"},
    }


def _finding_descriptor(finding: Finding) -> dict[str, object]:
    """Describe a rule the catalogue lacks from one of its findings."""
    return {
        "id": finding.rule,
        "name": finding.name,
        "shortDescription": {"text": finding.name},
        "help": {"text": f"Consequence: {finding.consequence}\n\nFix: {finding.fix}"},
        "defaultConfiguration": {"level": _LEVELS[finding.severity]},
    }


def _artifact(path: str, root: Path) -> dict[str, str]:
    """Return the artifactLocation of ``path``: relative to ``root`` where it lies under it."""
    absolute = Path(os.path.abspath(path))
    try:
        relative = absolute.relative_to(root)
    except ValueError:
        return {"uri": absolute.as_uri()}
    return {"uri": quote(relative.as_posix()), "uriBaseId": _SRCROOT}


def _physical(location: Location, root: Path) -> dict[str, object]:
    physical: dict[str, object] = {"artifactLocation": _artifact(location.path, root)}
    if location.line > 0:
        region: dict[str, int] = {"startLine": location.line}
        if location.column > 0:
            region["startColumn"] = location.column
        physical["region"] = region
    return physical


def _fingerprint(finding: Finding, subject_name: str, uri: str) -> str:
    """Return a digest that names the finding without its line, so it survives edits above it."""
    key = "\x00".join((finding.rule, uri, subject_name, finding.message))
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


def render_sarif(report: Report, *, root: str | Path | None = None) -> str:
    """Return the report as SARIF 2.1.0 JSON; paths under ``root`` (default: cwd) are relative."""
    base = Path(os.path.abspath(root if root is not None else os.getcwd()))
    descriptors: list[dict[str, object]] = []
    index: dict[str, int] = {}
    for rule in load_catalogue().rules:
        index[str(rule.id)] = len(descriptors)
        descriptors.append(_rule_descriptor(rule))

    results: list[dict[str, object]] = []
    for subject in report.subjects:
        for finding, state in findings_with_state(subject):
            if finding.rule not in index:
                index[finding.rule] = len(descriptors)
                descriptors.append(_finding_descriptor(finding))
            text = f"[{subject.name}] {finding.message}"
            result: dict[str, object] = {
                "ruleId": finding.rule,
                "ruleIndex": index[finding.rule],
                "level": _LEVELS[finding.severity],
                "message": {"text": text},
            }
            where = finding_location(finding, subject)
            uri = ""
            if where is not None:
                physical = _physical(where, base)
                result["locations"] = [{"physicalLocation": physical}]
                uri = str(physical["artifactLocation"]["uri"])  # type: ignore[index]
            result["partialFingerprints"] = {
                _FINGERPRINT_KEY: _fingerprint(finding, subject.name, uri)
            }
            if state is not None:
                result["baselineState"] = state
            result["properties"] = {
                "subject": subject.name,
                "source": subject.source,
                "ruleName": finding.name,
                "consequence": finding.consequence,
                "fix": finding.fix,
            }
            results.append(result)

    run: dict[str, object] = {
        "tool": {
            "driver": {
                "name": "xstate-check",
                "version": __version__,
                "rules": descriptors,
            }
        },
        "originalUriBaseIds": {_SRCROOT: {"uri": base.as_uri().rstrip("/") + "/"}},
        "invocations": [{"executionSuccessful": True}],
        "columnKind": "unicodeCodePoints",
        "results": results,
    }
    document = {"$schema": SARIF_SCHEMA, "version": SARIF_VERSION, "runs": [run]}
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
