"""The JUnit XML format: one testcase per subject (template x profile in a gate).

Test suites group the subjects by template (by source where there is none). A testcase
fails exactly when its findings fail the run: error findings that count (in a regression
gate with ``--fail-on new``, only those the change introduced), and under ``strict``
warnings too, so ``failures`` is non-zero exactly when the exit code is 1. Every finding,
failing or not, is listed in the testcase's text with its location. A classname is the
template's path without its extension, dots made underscores (Jenkins splits a classname at
its last dot); ``time`` is the seconds the rules took.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

from xstate_check.errors import printable
from xstate_check.formats._findings import finding_location, findings_with_state
from xstate_check.report import Finding, Report, SubjectReport

__all__ = ["render_junit"]

# XML 1.0 cannot hold these characters at all, not even escaped.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _clean(text: str) -> str:
    # Control characters are escaped as text (ESC, CR, C1, bidi overrides); line breaks and
    # tabs are XML's own character data.
    return _NOT_XML.sub("\ufffd", printable(text, keep="\n\t"))


def _line(finding: Finding, subject: SubjectReport, note: str) -> str:
    where = finding_location(finding, subject)
    # A path is input, line breaks and all; a message is the rules' text.
    prefix = f"{printable(str(where))}: " if where is not None else ""
    return (
        f"{prefix}{finding.severity} {finding.rule} {finding.name}: {finding.message}{note}\n"
        f"    consequence: {finding.consequence}\n"
        f"    fix: {finding.fix}"
    )


def _suite_key(subject: SubjectReport) -> str:
    return subject.template or subject.source


def _classname(key: str) -> str:
    path = Path(key)
    if path.suffix.lower() in (".json", ".txt", ".test"):
        path = path.with_suffix("")
    return path.as_posix().replace(".", "_")


def _case_name(subject: SubjectReport) -> str:
    profile = subject.details.get("profile")
    return str(profile) if profile else subject.name


def _testcase(subject: SubjectReport, strict: bool) -> tuple[ET.Element, bool]:
    case = ET.Element("testcase", {
        "classname": _clean(_classname(_suite_key(subject))),
        "name": _clean(_case_name(subject)),
        "time": f"{subject.seconds:.6f}",
    })
    if subject.template:
        case.set("file", _clean(subject.template))
    baseline = subject.details.get("baseline")
    failing: list[str] = []
    other: list[str] = []
    errors: list[Finding] = []
    for finding, state in findings_with_state(subject):
        note = f" (present at {baseline})" if state == "unchanged" else ""
        text = _line(finding, subject, note)
        fails = finding.severity == "error" or (strict and finding.severity == "warning")
        if fails and subject.counts(finding):
            failing.append(text)
            errors.append(finding)
        else:
            other.append(text)
    # The failure's headline is the first error on a template line, else the first error.
    first = next((f for f in errors if f.location is not None and f.location.line), None)
    first = first or (errors[0] if errors else None)
    if first is not None:
        if first.location is not None and first.location.line:
            case.set("line", str(first.location.line))
        failure = ET.SubElement(case, "failure", {
            "message": _clean(f"{first.rule} {first.name}: {first.message}"),
            "type": _clean(first.rule),
        })
        failure.text = _clean("\n".join(failing) + "\n")
    if other:
        out = ET.SubElement(case, "system-out")
        out.text = _clean("\n".join(other) + "\n")
    return case, first is not None


def render_junit(report: Report, *, strict: bool = False) -> str:
    """Return the report as JUnit XML (one testcase per subject, suites by template)."""
    suites: dict[str, list[tuple[ET.Element, bool]]] = {}
    times: dict[str, float] = {}
    for subject in report.subjects:
        key = _suite_key(subject)
        suites.setdefault(key, []).append(_testcase(subject, strict))
        times[key] = times.get(key, 0.0) + subject.seconds
    skipped: dict[str, int] = {}
    for pair in report.skipped:
        # A pair the gate did not check (not for that host) is a skipped testcase.
        case = ET.Element("testcase", {"classname": _clean(_classname(pair.template)),
                                       "name": _clean(pair.profile), "time": "0"})
        ET.SubElement(case, "skipped", {"message": _clean(pair.reason)})
        suites.setdefault(pair.template, []).append((case, False))
        skipped[pair.template] = skipped.get(pair.template, 0) + 1
    root = ET.Element("testsuites", {"name": "xstate-check"})
    total = failed = 0
    for name, cases in suites.items():
        failures = sum(1 for _, fails in cases if fails)
        suite = ET.SubElement(root, "testsuite", {
            "name": _clean(name),
            "tests": str(len(cases)),
            "failures": str(failures),
            "errors": "0",
            "skipped": str(skipped.get(name, 0)),
            "time": f"{times.get(name, 0.0):.6f}",
        })
        suite.extend(case for case, _ in cases)
        total += len(cases)
        failed += failures
    root.set("tests", str(total))
    root.set("failures", str(failed))
    root.set("errors", "0")
    root.set("skipped", str(len(report.skipped)))
    root.set("time", f"{sum(times.values()):.6f}")
    ET.indent(root)
    body = ET.tostring(root, encoding="unicode")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + body + "\n"
