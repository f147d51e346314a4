"""Findings made and written cheaply: the JSON written piece by piece is the encoder's, and a
finding's location worked out register by register is the one its bits give bit by bit."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from xstate_check.engine import runner
from xstate_check.errors import Location
from xstate_check.facts.registry import mask_refs
from xstate_check.formats.stream import finding_json, subject_json
from xstate_check.gate import run_gate
from xstate_check.report import Finding, SubjectReport
from xstate_check.sources.profiles import load_profile, profile_index
from xstate_check.subject import Subject
from xstate_check.template import apply_template, fold_template, load_template

ENCODE = json.JSONEncoder().encode


def _finding(**changes: object) -> Finding:
    fields: dict[str, object] = {
        "rule": "XS0108", "name": "amx-tile-pair", "severity": "error",
        "message": "TILECFG 0x20000 (tilecfg)", "consequence": "XSETBV raises #GP",
        "fix": "Keep bits 17 and 18 together", "location": Location("t.json", 12, 21)}
    fields.update(changes)
    return Finding(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("finding", [
    _finding(),
    _finding(location=None),
    _finding(location=Location("t.json")),
    _finding(location=Location("dir/\u00e9t\u00e9 \"q\".json", 3, 0)),
    _finding(message="caf\u00e9 \x1b[31m \u2028 \ud800 tab\t \\ \"quoted\""),
    _finding(severity="warning", consequence="\u00fcber", fix=""),
    _finding(baseline_state="unchanged"),
    _finding(baseline_state="new", location=None),
])
def test_a_finding_is_written_as_the_encoder_writes_it(finding: Finding) -> None:
    """Each finding's JSON, pieced together, is the bytes json.dumps gives its to_json()."""
    assert finding_json(finding) == ENCODE(finding.to_json())


def test_a_rule_shown_at_two_severities_keeps_each() -> None:
    """A rule's constant parts are kept per severity (``--severity`` overrides it)."""
    first, second = _finding(severity="error"), _finding(severity="info")
    assert finding_json(first) == ENCODE(first.to_json())
    assert finding_json(second) == ENCODE(second.to_json())
    assert '"severity": "info"' in finding_json(second)


@pytest.mark.parametrize("subject", [
    SubjectReport(name="fc-skylake-5.10", source="profile:fc-skylake-5.10", template="T2.json",
                  findings=(_finding(), _finding(rule="XS0203", location=None)),
                  details={"profile": "fc-skylake-5.10", "vendor": "GenuineIntel",
                           "fail_on": "any"}),
    SubjectReport(name="dump", source="/tmp/d\u00e9.txt", template=None),
    SubjectReport(name="host", source="host", template=None, findings=(_finding(),),
                  details={"notes": ["no /dev/kvm", "\u00e9"], "count": 3, "flag": True,
                           "none": None}),
])
def test_a_subject_is_written_as_the_encoder_writes_it(subject: SubjectReport) -> None:
    """A subject's line, pieced together, is the bytes json.dumps gives its to_json()."""
    assert subject_json(subject) == ENCODE(subject.to_json())


def test_findings_with_fixes_are_written_as_the_encoder_writes_them() -> None:
    """Findings carrying suggested fixes go through the encoder: the same bytes."""
    template = Path(__file__).resolve().parents[1] / "examples" / "broken" / \
        "amx-half-masked.json"
    result = run_gate([template], fixes=True)
    fixed = [subject for subject in result.subjects if any(f.fixes for f in subject.findings)]
    assert fixed
    for subject in result.subjects:
        assert subject_json(subject) == ENCODE(subject.to_json())


# --------------------------------------------------------------------------- locations


def _by_bits(subject: Subject, refs: list[tuple[int, int, str, int]]) -> Location | None:
    """A finding's location worked out bit by bit: the earliest template line owning a bit
    the template changed, else one owning a bit it pinned, else the file."""
    cpuid, base = subject.cpuid, subject.base
    provenance = cpuid.provenance
    changed: list[Location] = []
    pinned: list[Location] = []
    index = {"eax": 0, "ebx": 1, "ecx": 2, "edx": 3}
    for leaf, subleaf, register, mask in refs:
        for bit in range(32):
            if not mask >> bit & 1:
                continue
            try:
                where = provenance[(leaf, subleaf, register, bit)]
            except KeyError:
                continue
            if register not in index:
                continue
            new = cpuid.get(leaf, subleaf)[index[register]]
            old = base.get(leaf, subleaf)[index[register]] if base is not None else new
            (changed if (old ^ new) >> bit & 1 else pinned).append(where)
    found = changed or pinned
    if found:
        return min(found, key=lambda where: (where.path, where.line, where.column))
    table = base or cpuid
    return Location(table.source) if table.is_file else None


def _random_template(chance: random.Random, path: Path) -> str:
    """Write a template pinning random bits of leaf 0xD's enumeration registers, of some
    component subleaves and of leaf 7, some registers by two modifiers (two lines)."""
    entries = []
    for leaf, subleaf, registers in ((0xD, 0, ("eax", "edx")), (0xD, 1, ("ecx", "edx", "eax")),
                                     (0xD, 2, ("eax", "ebx")), (0xD, 5, ("ecx",)),
                                     (0xD, 0x11, ("eax",)), (0x7, 0, ("ebx", "edx"))):
        modifiers = [{"register": register,
                      "bitmap": "0b" + "".join(chance.choice("01xxxx") for _ in range(32))}
                     for register in registers for _ in range(chance.randrange(1, 3))]
        entries.append({"leaf": hex(leaf), "subleaf": hex(subleaf), "flags": 0,
                        "modifiers": modifiers})
    path.write_text(json.dumps({"cpuid_modifiers": entries}, indent=2))
    return str(path)


def test_locations_from_masks_are_those_of_the_bits_listed(data_dir: Path,
                                                           tmp_path: Path) -> None:
    """On Firecracker's templates and random ones, on the bundled Intel guest profiles,
    random bits placed register by register, the xfeatures' bits kept as a mask, point where
    their bits one by one point."""
    chance = random.Random(14)
    paths = [_random_template(chance, tmp_path / f"random{n}.json") for n in range(6)]
    folder = data_dir / "firecracker"
    if folder.is_dir():
        paths += [str(folder / f"{name}.json") for name in ("T2", "C3", "GNR_TO_T2_6.1")]
    registers = [(leaf, subleaf, register) for leaf, subleaf in
                 ((0x1, 0), (0x7, 0), (0xD, 0), (0xD, 1), (0xD, 2), (0xD, 5), (0xD, 0x11))
                 for register in ("eax", "ebx", "ecx", "edx")]
    checked = 0
    for path in paths:
        template = load_template(path)
        folded = fold_template(template)
        for info in profile_index():
            if info.role != "guest" or info.vendor != "GenuineIntel":
                continue
            profile = load_profile(info.name)
            applied = apply_template(template, profile, folded)
            if applied.missing:
                continue
            subject = Subject.of(info.name, profile, template=str(template.path),
                                 guest=applied.cpuid)
            for _ in range(40):
                static = tuple((*chance.choice(registers), 1 << chance.randrange(32))
                               for _ in range(chance.choice((0, 0, 1, 2))))
                extra = tuple((*chance.choice(registers), chance.getrandbits(32))
                              for _ in range(chance.choice((0, 0, 0, 1))))
                mask = sum(1 << chance.randrange(64) for _ in range(chance.randrange(3)))
                expected = _by_bits(subject, [*static, *extra, *mask_refs(mask)])
                assert runner._placed(subject, None, (static, extra, mask)) == expected
                checked += 1
    assert checked > 1000
