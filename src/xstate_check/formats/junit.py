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

import io
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import IO

from xstate_check.errors import printable
from xstate_check.formats._findings import finding_location, findings_with_state
from xstate_check.formats.stream import Tally, copy_spool, spool
from xstate_check.report import Finding, Report, SkippedPair, SubjectReport

__all__ = ["JunitWriter", "render_junit"]

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


def _indented(element: ET.Element, level: int) -> str:
    """Return ``element`` serialised as ``ET.indent`` lays it out at depth ``level``."""
    ET.indent(element, level=level)
    element.tail = "\n" + "  " * (level - 1)
    return "  " * level + ET.tostring(element, encoding="unicode")


class JunitWriter:
    """Writes JUnit XML one suite (template) at a time, through a spool for the totals.

    A suite is written when the next subject belongs to another suite, so a suite's
    subjects must come together (a gate's do: one template after the other).
    """

    def __init__(self, out: IO[str], *, strict: bool = False) -> None:
        self.out = out
        self.strict = strict
        self._spool = spool()
        self._key: str | None = None
        self._cases: list[tuple[ET.Element, bool]] = []
        self._time = 0.0
        self._skipped = 0
        self.total = self.failed = self.skipped_total = 0
        self.seconds = 0.0

    def _switch(self, key: str) -> None:
        if key != self._key:
            self._flush()
            self._key = key

    def _flush(self) -> None:
        if self._key is None:
            return
        cases = self._cases
        failures = sum(1 for _, fails in cases if fails)
        suite = ET.Element("testsuite", {
            "name": _clean(self._key),
            "tests": str(len(cases)),
            "failures": str(failures),
            "errors": "0",
            "skipped": str(self._skipped),
            "time": f"{self._time:.6f}",
        })
        suite.extend(case for case, _ in cases)
        self._spool.write(_indented(suite, 1))
        self.total += len(cases)
        self.failed += failures
        self.seconds += self._time
        self._key, self._cases, self._time, self._skipped = None, [], 0.0, 0

    def subject(self, subject: SubjectReport) -> None:
        """Add one testcase to its template's suite."""
        self._switch(_suite_key(subject))
        self._cases.append(_testcase(subject, self.strict))
        self._time += subject.seconds

    def skipped(self, pair: SkippedPair) -> None:
        """Add one skipped testcase: a pair the gate did not check (not for that host)."""
        self._switch(pair.template)
        case = ET.Element("testcase", {"classname": _clean(_classname(pair.template)),
                                       "name": _clean(pair.profile), "time": "0"})
        ET.SubElement(case, "skipped", {"message": _clean(pair.reason)})
        self._cases.append((case, False))
        self._skipped += 1
        self.skipped_total += 1

    def finish(self, tally: Tally) -> None:
        """Write the XML declaration, the totals and the suites."""
        self._flush()
        root = ET.Element("testsuites", {"name": "xstate-check"})
        root.set("tests", str(self.total))
        root.set("failures", str(self.failed))
        root.set("errors", "0")
        root.set("skipped", str(self.skipped_total))
        root.set("time", f"{self.seconds:.6f}")
        self.out.write('<?xml version="1.0" encoding="UTF-8"?>\n')
        if not self.total:
            self._spool.close()
            self.out.write(ET.tostring(root, encoding="unicode") + "\n")
            return
        opening = ET.tostring(root, encoding="unicode").removesuffix(" />") + ">\n"
        self.out.write(opening)
        copy_spool(self._spool, self.out)
        self.out.write("</testsuites>\n")


def render_junit(report: Report, *, strict: bool = False) -> str:
    """Return the report as JUnit XML (one testcase per subject, suites by template)."""
    groups: dict[str, list[SubjectReport]] = {}
    for subject in report.subjects:
        groups.setdefault(_suite_key(subject), []).append(subject)
    pairs: dict[str, list[SkippedPair]] = {}
    for pair in report.skipped:
        pairs.setdefault(pair.template, []).append(pair)
    out = io.StringIO()
    writer = JunitWriter(out, strict=strict)
    tally = Tally(report.kind)
    for key in dict.fromkeys([*groups, *pairs]):
        for subject in groups.get(key, ()):
            tally.add(subject)
            writer.subject(subject)
        for pair in pairs.get(key, ()):
            tally.skip(pair)
            writer.skipped(pair)
    writer.finish(tally)
    return out.getvalue()
