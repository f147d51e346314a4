"""Reports written subject by subject: what a gate over thousands of pairs streams through.

A ``Writer`` takes subjects and pairs not checked one at a time and writes to a text stream;
``finish`` writes what needs the whole run (the summary, problems grouped across profiles).
What a writer keeps between subjects is bounded by the number of distinct problems (one
rule at one template line, however many profiles show it), the pairs not checked (kept in
a spool file that moves to disk past 1 MiB) and, for Markdown, one small cell per pair of
its matrix; never the subjects themselves. ``Tally`` counts what the summary and the exit
code need. ``render`` (a whole Report to a string) goes through the same writers, so the
streamed and the collected output are the same bytes.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from json.encoder import encode_basestring_ascii
from typing import IO, TYPE_CHECKING, Protocol

from xstate_check.errors import Location
from xstate_check.report import SCHEMA, Finding, Report, SubjectReport

if TYPE_CHECKING:
    from xstate_check.reportparts import SkippedPair

__all__ = ["SPOOL_BYTES", "JsonWriter", "StatisticsWriter", "Tally", "Writer", "finding_json",
           "make_writer", "subject_json", "write_report"]

#: A writer's spool (pairs not checked, JUnit suites) stays in memory up to this size.
SPOOL_BYTES = 1 << 20


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


class Tally:
    """The counts of a run as its subjects go by: the summary and the exit code."""

    def __init__(self, kind: str = "check") -> None:
        self.kind = kind
        self.subjects = self.errors = self.warnings = self.infos = self.not_for_host = 0
        #: Findings with a safe fix (``--fix`` removes them), and with only an unsafe one.
        self.fixable = self.unsafe_fixable = 0
        self._fails = self._fails_strict = False

    def add(self, subject: SubjectReport) -> None:
        """Count one subject and its findings."""
        self.subjects += 1
        # SubjectReport.counts, asked once per subject: only a finding REV already had, in
        # a gate failing on new findings, does not count.
        only_new = self.kind == "gate" and subject.details.get("fail_on") == "new"
        for finding in subject.findings:
            if finding.fixes:
                if any(fix.applicability == "safe" for fix in finding.fixes):
                    self.fixable += 1
                else:
                    self.unsafe_fixable += 1
            severity = finding.severity
            if severity == "error":
                self.errors += 1
            elif severity == "warning":
                self.warnings += 1
            else:
                self.infos += 1
                continue
            if not (only_new and finding.baseline_state == "unchanged"):
                if severity == "error":
                    self._fails = True
                self._fails_strict = True

    def skip(self, pair: SkippedPair) -> None:
        """Count one template x profile pair not checked."""
        self.not_for_host += 1

    def merge(self, other: Tally) -> None:
        """Add the counts of ``other`` (subjects counted elsewhere, e.g. in a worker)."""
        self.subjects += other.subjects
        self.errors += other.errors
        self.warnings += other.warnings
        self.infos += other.infos
        self.not_for_host += other.not_for_host
        self.fixable += other.fixable
        self.unsafe_fixable += other.unsafe_fixable
        self._fails = self._fails or other._fails
        self._fails_strict = self._fails_strict or other._fails_strict

    def summary(self) -> dict[str, int]:
        """Return the counts, as ``Report.summary`` (and ``GateResult.summary``) give them."""
        out = {"subjects": self.subjects, "errors": self.errors, "warnings": self.warnings,
               "infos": self.infos}
        if self.kind == "gate":
            out["not_for_host"] = self.not_for_host
        return out

    def summary_text(self) -> str:
        """Return the summary line, as ``Report.summary_text`` gives it."""
        text = (f"{_plural(self.subjects, 'subject')}: {_plural(self.errors, 'error')}, "
                f"{_plural(self.warnings, 'warning')}, {_plural(self.infos, 'info')}")
        if self.kind == "gate" and self.not_for_host:
            count = self.not_for_host
            text += f"; {count} template/profile pair{'' if count == 1 else 's'} not for " \
                    "their host"
        return text

    def fix_text(self) -> str:
        """Return ruff's line on the findings ``--fix`` would remove ("" for none)."""
        unsafe = self.unsafe_fixable
        hidden = (f"{unsafe} hidden fix{'' if unsafe == 1 else 'es'} can be enabled with the "
                  "`--unsafe-fixes` option")
        if not self.fixable:
            return f"No fixes available ({hidden})." if unsafe else ""
        more = f" ({hidden})" if unsafe else ""
        return f"[*] {self.fixable} fixable with the `--fix` option{more}."

    def exit_code(self, strict: bool = False) -> int:
        """Return 1 when a finding fails the run (errors; warnings too when ``strict``)."""
        return 1 if (self._fails_strict if strict else self._fails) else 0


class Writer(Protocol):
    """Writes a report one subject at a time."""

    def subject(self, subject: SubjectReport) -> None:
        """Write (or take in) one subject."""

    def skipped(self, pair: SkippedPair) -> None:
        """Take in one template x profile pair not checked."""

    def finish(self, tally: Tally) -> None:
        """Write what needs the whole run: summary, grouped problems, closing brackets."""


def spool() -> IO[str]:
    """Return a text spool that moves to a temporary file past ``SPOOL_BYTES``."""
    import tempfile

    return tempfile.SpooledTemporaryFile(SPOOL_BYTES, mode="w+", encoding="utf-8")


def copy_spool(source: IO[str], out: IO[str]) -> None:
    """Copy a spool's content to ``out`` and close it."""
    import shutil

    source.seek(0)
    shutil.copyfileobj(source, out)
    source.close()


#: The C encoder (``json.dumps`` without ``indent``), one subject per line.
_ENCODE = json.JSONEncoder().encode
#: Its escaping of one string (what it writes for a ``str``).
_STRING = encode_basestring_ascii

#: Per (rule, name, severity, consequence, fix): a finding's JSON before its message and
#: between its message and its location, encoded once (a run has a few dozen of them).
_FINDING_PARTS: dict[tuple[str, str, str, str, str], tuple[str, str]] = {}
#: Each location's JSON (a template's few lines serve all its findings), and each details
#: mapping's (a gate's pairs on one profile share one), by identity: kept with the object,
#: which is read-only once in a report.
_LOCATIONS: dict[int, tuple[Location, str]] = {}
_DETAILS: dict[int, tuple[Mapping[str, object], str]] = {}
_KEPT = 4096


def _text(value: object) -> str:
    """Return the JSON of a string (``null`` for None) as the encoder writes it."""
    return _STRING(value) if type(value) is str else _ENCODE(value)


def finding_json(finding: Finding) -> str:
    """Return ``finding.to_json()`` encoded, the same bytes as the encoder writes.

    A rule's constant parts and each location are encoded once; a finding with a baseline
    state or fixes goes through the encoder.
    """
    if finding.baseline_state or finding.fixes or type(finding.message) is not str:
        return _ENCODE(finding.to_json())
    key = (finding.rule, finding.name, finding.severity, finding.consequence, finding.fix)
    parts = _FINDING_PARTS.get(key)
    if parts is None:
        if len(_FINDING_PARTS) >= _KEPT:
            _FINDING_PARTS.clear()
        parts = _FINDING_PARTS[key] = (
            f'{{"rule": {_ENCODE(finding.rule)}, "name": {_ENCODE(finding.name)}, '
            f'"severity": {_ENCODE(finding.severity)}, "message": ',
            f', "consequence": {_ENCODE(finding.consequence)}, "fix": {_ENCODE(finding.fix)}, '
            '"location": ')
    location = finding.location
    if location is None:
        where = "null"
    else:
        found = _LOCATIONS.get(id(location))
        if found is None or found[0] is not location:
            if len(_LOCATIONS) >= _KEPT:
                _LOCATIONS.clear()
            found = _LOCATIONS[id(location)] = (location, _ENCODE(location.to_json()))
        where = found[1]
    return f"{parts[0]}{_STRING(finding.message)}{parts[1]}{where}}}"


def _details_json(details: Mapping[str, object]) -> str:
    found = _DETAILS.get(id(details))
    if found is None or found[0] is not details:
        if len(_DETAILS) >= _KEPT:
            _DETAILS.clear()
        found = _DETAILS[id(details)] = (details, _ENCODE(dict(details)))
    return found[1]


def subject_json(subject: SubjectReport) -> str:
    """Return ``subject.to_json()`` encoded on one line, the same bytes as the encoder."""
    findings = ", ".join([finding_json(finding) for finding in subject.findings])
    details = f', "details": {_details_json(subject.details)}' if subject.details else ""
    return (f'{{"name": {_text(subject.name)}, "source": {_text(subject.source)}, '
            f'"template": {_text(subject.template)}, "findings": [{findings}]{details}}}')


class JsonWriter:
    """JSON of schema xstate-check/1: the document indented, each subject on one line."""

    def __init__(self, out: IO[str], kind: str = "check") -> None:
        self.out = out
        self.kind = kind
        self._first = True
        self._pairs: IO[str] | None = None
        out.write(f'{{\n  "schema": {_ENCODE(SCHEMA)},\n  "subjects": [')

    @staticmethod
    def encode(subjects: Iterable[SubjectReport]) -> str:
        """Return subjects as ``encoded`` writes them (what gate workers send ready-made)."""
        return ",\n    ".join([subject_json(subject) for subject in subjects])

    def encoded(self, text: str) -> None:
        """Write subjects already encoded by ``encode`` ("" for none)."""
        if text:
            self.out.write(("\n    " if self._first else ",\n    ") + text)
            self._first = False

    def subject(self, subject: SubjectReport) -> None:
        """Write one subject on its own line."""
        self.out.write(("\n    " if self._first else ",\n    ") + subject_json(subject))
        self._first = False

    @staticmethod
    def encode_skipped(pairs: Iterable[SkippedPair]) -> str:
        """Return pairs not checked as ``encoded_skipped`` takes them."""
        return ",".join("\n    " + _ENCODE(pair.to_json()) for pair in pairs)

    def encoded_skipped(self, text: str) -> None:
        """Keep pairs not checked, already encoded by ``encode_skipped`` ("" for none)."""
        if not text:
            return
        if self._pairs is None:
            self._pairs = spool()
        else:
            self._pairs.write(",")
        self._pairs.write(text)

    def skipped(self, pair: SkippedPair) -> None:
        """Keep one pair not checked for the ``not_checked`` list."""
        self.encoded_skipped(self.encode_skipped((pair,)))

    def finish(self, tally: Tally) -> None:
        """Write the pairs not checked (a gate's) and the summary."""
        out = self.out
        out.write("\n  ],\n" if not self._first else "],\n")
        if self.kind == "gate":
            out.write('  "not_checked": [')
            if self._pairs is not None:
                copy_spool(self._pairs, out)
                out.write("\n  ],\n")
            else:
                out.write("],\n")
        out.write(f'  "summary": {_ENCODE(tally.summary())}\n}}\n')


class StatisticsWriter:
    """The number of findings per rule, most first (``--statistics``)."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.counted: Counter[tuple[str, str, str]] = Counter()

    def subject(self, subject: SubjectReport) -> None:
        """Count one subject's findings."""
        self.counted.update((f.rule, f.name, f.severity) for f in subject.findings)

    def skipped(self, pair: SkippedPair) -> None:
        """Pairs not checked have no findings to count."""

    def finish(self, tally: Tally) -> None:
        """Write one line per rule, then the summary."""
        lines = [f"{count:>6}  {rule}  {name}  ({severity})"
                 for (rule, name, severity), count in sorted(
                     self.counted.items(), key=lambda item: (-item[1], item[0]))]
        lines.append(tally.summary_text())
        self.out.write("\n".join(lines) + "\n")


def make_writer(fmt: str, out: IO[str], *, kind: str = "check", color: bool = False,
                quiet: bool = False, min_severity: str | None = None,
                strict: bool = False, fix_hint: bool = True) -> Writer:
    """Return the writer of format ``fmt`` writing to ``out`` (options as ``render``)."""
    if fmt == "json":
        return JsonWriter(out, kind)
    if fmt == "text":
        from xstate_check.formats.text import TextWriter

        return TextWriter(out, kind=kind, color=color, quiet=quiet, min_severity=min_severity,
                          fix_hint=fix_hint)
    if fmt == "sarif":
        from xstate_check.formats.sarif import SarifWriter

        return SarifWriter(out, min_severity=min_severity or "warning")
    if fmt == "junit":
        from xstate_check.formats.junit import JunitWriter

        return JunitWriter(out, strict=strict)
    if fmt == "github":
        from xstate_check.formats.github import GithubWriter

        return GithubWriter(out, min_severity=min_severity or "warning")
    if fmt == "markdown":
        from xstate_check.formats.markdown import MarkdownWriter

        return MarkdownWriter(out, min_severity=min_severity, strict=strict)
    raise ValueError(f"unknown format {fmt!r}")


def write_report(report: Report, writer: Writer) -> None:
    """Feed a whole report to ``writer`` and finish it."""
    tally = Tally(report.kind)
    for subject in report.subjects:
        tally.add(subject)
        writer.subject(subject)
    for pair in report.skipped:
        tally.skip(pair)
        writer.skipped(pair)
    writer.finish(tally)
