"""Record every rule's verdict on the bundled profiles, the rule examples and the real inputs.

Two golden files under tests/data/ hold one line per finding (rule id, severity, location,
message) under one header line per subject:

* ``verdicts-bundled.txt``: the whole catalogue on every bundled profile (``profile:NAME``)
  and on every rule example (pass and fail);
* ``verdicts-real.txt``: Firecracker's x86 templates in ../shared/data/firecracker checked
  by the gate on the bundled profiles, and every CPUID dump in ../shared/data/cpuid-dumps
  read with ``check`` (a dump the readers refuse records its error).

tests/test_recorded_verdicts.py compares a fresh run with them byte for byte. A change that
alters a verdict re-records them and says why in its commit:

    python tools/record_verdicts.py [--data ../shared/data] [--check]

``--check`` writes nothing and exits 1 when a golden file differs from a fresh run.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "src") not in sys.path:
    sys.path.insert(0, str(REPO / "src"))

from xstate_check.api import check  # noqa: E402 (after the path is set)
from xstate_check.engine import evaluate, load_catalogue  # noqa: E402
from xstate_check.engine.examples import build_subject  # noqa: E402
from xstate_check.errors import XstateCheckError  # noqa: E402
from xstate_check.gate import run_gate  # noqa: E402
from xstate_check.report import Finding, SubjectReport  # noqa: E402
from xstate_check.sources.profiles import profile_index  # noqa: E402

GOLDEN = REPO / "tests" / "data"
BUNDLED = GOLDEN / "verdicts-bundled.txt"
REAL = GOLDEN / "verdicts-real.txt"
DEFAULT_DATA = REPO.parent / "shared" / "data"

#: Firecracker's x86 CPU templates (the others are for aarch64, or not templates).
FIRECRACKER_X86 = ("C3", "GNR_TO_T2_5.10", "GNR_TO_T2_6.1", "SPR_TO_T2_5.10",
                   "SPR_TO_T2_6.1", "T2", "T2A", "T2CL", "T2S")


def _clean(text: str, data: Path | None) -> str:
    if data is not None:
        text = text.replace(str(data), "$DATA")
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _finding_line(finding: Finding, data: Path | None) -> str:
    where = str(finding.location) if finding.location is not None else "-"
    return _clean(f"  {finding.rule} {finding.severity} {where} {finding.message}", data)


def _subject_lines(title: str, report: SubjectReport, data: Path | None) -> Iterator[str]:
    yield _clean(f"# {title}", data)
    for finding in report.findings:
        yield _finding_line(finding, data)


def bundled_lines() -> Iterator[str]:
    """Yield the record of the catalogue on every bundled profile and rule example."""
    catalogue = load_catalogue()
    for info in profile_index():
        (report,) = check(f"profile:{info.name}").subjects
        yield from _subject_lines(f"profile:{info.name}", report, None)
    for rule in catalogue:
        for kind, examples in (("pass", rule.passes), ("fail", rule.fails)):
            for index, example in enumerate(examples):
                report = evaluate(build_subject(example), catalogue)
                yield from _subject_lines(f"{rule.id} {kind} {index}", report, None)


def _dumps(data: Path) -> list[Path]:
    root = data / "cpuid-dumps"
    return sorted(path for path in root.rglob("*")
                  if path.is_file() and path.name != "SOURCES.md")


def real_lines(data: Path) -> Iterator[str]:
    """Yield the record of the gate on Firecracker's templates and of ``check`` on the dumps."""
    templates = [str(data / "firecracker" / f"{name}.json") for name in FIRECRACKER_X86]
    result = run_gate(templates, profiles=["builtin"])
    for report in result.subjects:
        yield from _subject_lines(f"gate {report.template} on {report.name}", report, data)
    for pair in result.skipped:
        yield _clean(f"# gate skipped {pair.text()}", data)
    for path in _dumps(data):
        title = f"check {path.relative_to(data)}"
        try:
            (report,) = check(path).subjects
        except XstateCheckError as error:
            yield _clean(f"# {title}", data)
            # The verdict is the refusal; its wording belongs to the readers' own tests.
            yield f"  refused ({type(error).__name__})"
            continue
        yield from _subject_lines(title, report, data)


def render(lines: Iterable[str]) -> str:
    """Return the golden text of ``lines``."""
    return "".join(f"{line}\n" for line in lines)


def main(argv: list[str] | None = None) -> int:
    """Record (or with --check compare) the golden verdict files."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    outputs = [(BUNDLED, render(bundled_lines()))]
    if args.data.is_dir():
        outputs.append((REAL, render(real_lines(args.data.resolve()))))
    else:
        print(f"{args.data} is absent: {REAL.name} not recorded", file=sys.stderr)
    status = 0
    for path, text in outputs:
        if args.check:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                print(f"{path.relative_to(REPO)} differs from a fresh run", file=sys.stderr)
                status = 1
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
