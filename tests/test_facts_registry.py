"""The fact registry: one declaration per name, the needs it declares hold, and the
vocabulary the command lists is the one rules/README.md shows."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from xstate_check.cpuid import CpuidSet
from xstate_check.engine.examples import base_table
from xstate_check.facts import FACTS, FUNCTIONS, NEEDS, Facts, Missing, available_of, needs_of
from xstate_check.facts.registry import PRESET
from xstate_check.subject import Subject

REPO = Path(__file__).resolve().parents[1]


def test_readme_table_is_generated_from_the_registry() -> None:
    """tools/fact_table.py --check: the README's table is the registry's, word for word."""
    result = subprocess.run([sys.executable, str(REPO / "tools" / "fact_table.py"), "--check"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    readme = (REPO / "rules" / "README.md").read_text(encoding="utf-8")
    for name, spec in FACTS.items():
        if spec.doc.startswith("CPUID.("):
            assert f"`{name}`" in readme  # feature bits share one row
        else:
            assert f"| `{name}` | {spec.kind} |" in readme


def test_facts_command_lists_every_name_with_its_needs() -> None:
    """``xstate-check facts -f json`` lists every fact and function once, as registered."""
    result = subprocess.run([sys.executable, "-m", "xstate_check", "facts", "-f", "json"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    names = json.loads(result.stdout)["names"]
    facts = {entry["name"]: entry for entry in names if entry["what"] == "fact"}
    assert list(facts) == list(FACTS)
    assert facts["host.guest_permitted"]["reads"] == ["host"]
    assert facts["described"]["reads"] == ["subleaves"]
    assert facts["dest.std_size"]["reads"] == ["destination"]
    functions = [entry["name"] for entry in names if entry["what"] == "function"]
    assert sorted(functions) == sorted(f"{f.name}({', '.join(f.args)})"
                                       for f in FUNCTIONS.values())


def test_declared_needs_are_true() -> None:
    """A fact declaring a need raises Missing on a subject that lacks it, so skipping a rule
    for that need gives the same verdict as computing it."""
    bare = base_table("spr-guest").replace(leaf_0xd_complete=False)
    subject = Subject("bare", bare)
    assert available_of(subject) == 0
    for name, spec in FACTS.items():
        if not spec.reads:
            continue
        with pytest.raises(Missing):
            Facts(subject)[name]


def test_a_subject_with_every_part_satisfies_every_need() -> None:
    """available_of names each part a subject holds."""
    table: CpuidSet = base_table("spr-guest")
    subject = Subject("t", table, template="t.json", base=table)
    assert available_of(subject) == needs_of(["base.xcr0", "xss"]) | NEEDS["reference"]


XSETBV_RULES = ("x87-required", "avx-requires-sse", "mpx-pair", "avx512-triple",
                "xcr0-supervisor-bits", "apx-excludes-mpx", "amx-tile-pair")


def test_valid_xcr0_is_defined_by_the_xsetbv_rules() -> None:
    """valid_xcr0 is the checks of the rules that say defines = "valid_xcr0": the XSETBV
    rules of rules/xcr0.toml and no other (not xcr0-unknown-bits, which is KVM's filter of
    a guest table, not XSETBV's), each reading xcr0 alone. Whether it is right is
    tests/test_oracle.py's: XSETBV in a KVM guest on every subset of this host's XCR0."""
    from xstate_check.engine import load_catalogue
    from xstate_check.engine.compiler import names_read
    from xstate_check.facts import valid_xcr0

    catalogue = load_catalogue()
    defining = [rule for rule in catalogue if rule.defines == "valid_xcr0"]
    assert sorted(rule.name for rule in defining) == sorted(XSETBV_RULES)
    for rule in defining:  # the check alone, not the rule's applies
        assert rule.compiled.definition is not None
        assert names_read(rule.compiled.definition) == ({"xcr0"}, set(), set()), rule.name
    # A mask each check refuses alone, so that every one of them counts.
    refused_by = {"x87-required": 0x2, "avx-requires-sse": 0x5, "mpx-pair": 0xB,
                  "avx512-triple": 0x27, "xcr0-supervisor-bits": 0x3 | 1 << 11,
                  "apx-excludes-mpx": 0x8001B, "amx-tile-pair": 0x20003}
    assert valid_xcr0(0x3) and valid_xcr0(0x602E7) and valid_xcr0(0x80207)
    for name, mask in refused_by.items():
        assert not valid_xcr0(mask), name
        facts = Facts(Subject("t", CpuidSet.from_rows([(0xD, 0, mask & 0xFFFF_FFFF, 0, 0,
                                                         mask >> 32)])))
        failing = [rule.name for rule in defining if not rule.compiled.test(facts)]
        assert failing == [name], (name, failing)


def test_entry_locations_are_ordered_as_locations_are() -> None:
    """The template facts pick an entry's first line by the fields Location's order
    compares, in its order: the same earliest location."""
    import attrs

    from xstate_check.errors import Location
    from xstate_check.facts.template import _location_order

    assert [field.name for field in attrs.fields(Location)] == ["path", "line", "column"]
    places = [Location("b.json", 3, 1), Location("a.json", 9, 9), Location("a.json", 9, 2),
              Location("a.json", 10, 1), Location("a.json")]
    assert sorted(places) == sorted(places, key=_location_order)


def test_facts_set_when_made_are_what_their_declarations_compute() -> None:
    """The facts a Facts sets when made (XCR0, XSS, registers of leaves 0 and 0xD, the
    base's XCR0 and XSS …) are each fact's own computation, on every bundled profile, on
    a table a template made from it, and on a source without leaf 0xD's subleaves, where
    those that need them are left to be Missing."""
    from xstate_check.sources.profiles import load_profile, profile_index
    from xstate_check.template import apply_template, parse_template

    template = parse_template(json.dumps({"cpuid_modifiers": [
        {"leaf": "0xd", "subleaf": "0x0", "flags": 1, "modifiers": [
            {"register": "eax", "bitmap": "0b" + "x" * 24 + "000" + "x" * 5}]}]}), "t.json")
    subjects = []
    for info in profile_index():
        table = load_profile(info.name)
        subjects.append(Subject.of(table.source, table))
        subjects.append(Subject.of(table.source, table.replace(leaf_0xd_complete=False)))
        applied = apply_template(template, table)
        subjects.append(Subject.of(table.source, table, template="t.json", guest=applied.cpuid,
                                   missing=applied.missing))
    preset_seen: set[str] = set()
    for subject in subjects:
        facts = Facts(subject)
        preset = [name for name in facts if name in FACTS]
        preset_seen.update(preset)
        for name in preset:
            assert facts[name] == FACTS[name].compute(facts), (subject.name, name)
        for name in ("xss", "compacted_size_current", "base.xcr0", "base.xss"):
            if name not in facts:
                with pytest.raises(Missing):
                    FACTS[name].compute(facts)
    assert {"xcr0", "xss", "size_max", "base.xcr0", "role"} <= preset_seen
    # PRESET (what Catalogue.reads_registers weighs) names exactly what Facts sets; without
    # ``registers``, XCR0 alone is set.
    assert preset_seen == PRESET
    assert all([name for name in Facts(subject, (), False) if name in FACTS] == ["xcr0"]
               for subject in subjects)
