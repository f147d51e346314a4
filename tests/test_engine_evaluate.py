"""Evaluation: findings, their messages and locations, reports, explain pages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import get_args

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xstate_check.api import check
from xstate_check.engine import check_subjects, evaluate, load_catalogue
from xstate_check.engine.examples import EXAMPLE_TEMPLATE, Example, base_table, build_subject
from xstate_check.engine.runner import evaluate_rules
from xstate_check.errors import InputError, Location
from xstate_check.explain import render_catalogue, render_rule
from xstate_check.facts import format_value
from xstate_check.facts.registry import Kind
from xstate_check.facts.rendering import formatter
from xstate_check.report import Finding, Severity, SubjectReport, make_finding
from xstate_check.sources.ownjson import to_json_text
from xstate_check.subject import MissingEntry, Subject

CATALOGUE = load_catalogue()


def test_message_shows_masks_with_names() -> None:
    """Mask placeholders render as hex with xfeature names; sizes in bytes and hex."""
    subject = build_subject(Example(cpuid=(("0xd.0.eax", "0x202e7"),)))
    (finding,) = evaluate_rules(subject, [CATALOGUE.get("amx-tile-pair")])
    assert finding.message == (
        "CPUID.(0xD,0) enumerates 0x20000 (tilecfg) without its AMX partner: XCR0 0x202e7 "
        "(x87|sse|ymm|opmask|zmm_hi256|hi16_zmm|pkru|tilecfg)")
    (size,) = evaluate_rules(build_subject(Example(cpuid=(("0xd.0.ecx", "0xa88"),))),
                             [CATALOGUE.get("xsave-max-size-covers")])
    assert "ECX = 2696 (0xa88)" in size.message and "needs 11008 (0x2b00)" in size.message


def test_format_value_kinds() -> None:
    """Each kind has its own rendering."""
    assert format_value(0x3, "mask") == "0x3 (x87|sse)"
    assert format_value(576, "size") == "576 (0x240)"
    assert format_value((6, 1), "version") == "6.1"
    assert format_value(True, "bool") == "yes"
    assert format_value((576, 832), "sizes") == "576 (0x240), 832 (0x340)"
    assert format_value(0x1D, "int") == "0x1d"


def test_formatter_shows_what_format_value_shows() -> None:
    """A message's formatter per kind (ints first) gives format_value's text for any value."""
    class Flag(int):
        pass

    values: list[object] = [0, 0x3, 0x602E7, 1 << 63, 1 << 70, 576, True, False, Flag(0x7),
                            (6, 1), (576, 832), "abc", None]
    for kind in get_args(Kind):
        show = formatter(kind)
        for value in values:
            assert show(value) == format_value(value, kind), (kind, value)
        if kind != "mask":  # (a mask is never negative)
            assert show(-2688) == format_value(-2688, kind), kind
    assert formatter("mask")(0x7) == "0x7 (x87|sse|ymm)"
    assert formatter("size")(2688) == "2688 (0xa80)"


def test_each_rule_gives_one_finding_per_item_at_its_location() -> None:
    """template-leaf-missing is one finding naming every missing entry, at the first line."""
    table = base_table("spr-guest")
    missing = (MissingEntry(0xD, 0x13, Location("t.json", 40, 7)),
               MissingEntry(0x7, 2, Location("t.json", 12, 7)))
    subject = Subject("s", table, template="t.json", base=table, missing_entries=missing)
    findings = evaluate(subject).findings
    assert [(f.name, f.location) for f in findings] == [
        ("template-leaf-missing", Location("t.json", 12, 7)),
    ]
    assert "0x7.0x2" in findings[0].message and "0xd.0x13" in findings[0].message


def test_location_prefers_bits_the_template_changed() -> None:
    """Of the rule's bits, those a template really changed give the location."""
    example = Example(template=(("0xd.0.eax", "+bit17"), ("0xd.0.eax", "-bit18")))
    (finding,) = evaluate_rules(build_subject(example), [CATALOGUE.get("amx-tile-pair")])
    # Line 1 pins bit 17 to its old value; line 2 clears bit 18, which is what breaks the pair.
    assert finding.location == Location(EXAMPLE_TEMPLATE, 2)


def test_location_falls_back_to_the_source_file() -> None:
    """Without a template line, a finding points at the table's file; pseudo sources at nothing."""
    table = base_table("spr-guest").with_registers(0xD, 0, eax=0x202E7)
    from_file = Subject("s", table.replace(source="/data/spr.json", source_kind="file"))
    (finding,) = evaluate_rules(from_file, [CATALOGUE.get("amx-tile-pair")])
    assert finding.location == Location("/data/spr.json")
    (finding,) = evaluate_rules(Subject("s", table.replace(source="kvm", source_kind="kvm")),
                                [CATALOGUE.get("amx-tile-pair")])
    assert finding.location is None


@pytest.mark.parametrize("name", ["hosts-spr.json", "kvm-table.json", "profile:x.json",
                                  "example:spr.json", "<spr>.json"])
def test_a_file_whatever_its_name_gets_finding_locations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """Whether a table is a file is what it was read from, not how its name begins
    (``check hosts-spr.json`` in the file's folder)."""
    table = base_table("spr-guest").with_registers(0xD, 0, eax=0x202E7)
    text = to_json_text(table)
    source_line = next(line for line in text.splitlines(True) if '"source"' in line)
    (tmp_path / name).write_text(text.replace(source_line, ""), encoding="utf-8")
    monkeypatch.chdir(tmp_path)  # the source is the path as given: the bare name
    (report,) = check(Path(name)).subjects
    assert report.findings
    assert {finding.location for finding in report.findings} == {Location(name)}


@pytest.mark.parametrize("source", ["host", "kvm", "profile:fc-skylake-6.1", "<stdin>"])
def test_a_recorded_keyword_source_is_not_a_file(tmp_path: Path, source: str) -> None:
    """A table file recording a keyword source (``convert host``) points at no file."""
    table = base_table("spr-guest").with_registers(0xD, 0, eax=0x202E7)
    path = tmp_path / "converted.json"
    path.write_text(to_json_text(table.replace(source=source)), encoding="utf-8")
    (report,) = check(path).subjects
    assert report.findings
    assert {finding.location for finding in report.findings} == {None}


def test_host_rules_are_not_applicable_without_host() -> None:
    """A dump without HostState gets no host or KVM finding, whatever its masks."""
    subject = build_subject(Example(cpuid=(("0xd.0.eax", "+bit19"),)))
    names = {f.name for f in evaluate(subject).findings}
    assert "kvm-apx-unsupported" in names
    assert not names & {r.name for r in CATALOGUE if r.family == "host"}
    assert "guest-within-kvm-supported" not in names


def test_layout_rules_are_not_applicable_without_subleaves() -> None:
    """A source with only 0xD.0 (libcpuid native) skips the layout rules, no false finding."""
    table = base_table("spr-cpu")
    rows = [row for row in table.rows() if row[0] != 0xD or row[1] == 0]
    bare = table.replace(entries={(r[0], r[1]): table.get(r[0], r[1]) for r in rows},
                         leaf_0xd_complete=False)
    assert evaluate(Subject("native", bare, role="cpu")).findings == ()


def test_check_subjects_keeps_subject_order() -> None:
    """check_subjects reports each subject, in the order given."""
    good = build_subject(Example(), name="good")
    bad = build_subject(Example(cpuid=(("0xd.0.eax", "0x202e7"),)), name="bad")
    report = check_subjects([good, bad])
    assert [s.name for s in report.subjects] == ["good", "bad"]
    assert [f.name for f in report.errors] == ["amx-tile-pair"]
    assert report.exit_code() == 1


def test_findings_are_sorted_for_byte_identical_output() -> None:
    """Findings come out sorted, so JSON output does not depend on rule order."""
    subject = build_subject(Example(cpuid=(("0xd.0.eax", "0x202e3"),)))
    report = evaluate(subject)
    keys = [f.sort_key() for f in report.findings]
    assert keys == sorted(keys) and len(keys) >= 2
    assert json.dumps(report.to_json()) == json.dumps(evaluate(subject).to_json())


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([None, ("a.json", 0, 0), ("a.json", 3, 0),
                                            ("a.json", 3, 7), ("b.json", 1, 1), ("", 0, 0)]),
                          st.sampled_from(["error", "warning", "info"]),
                          st.sampled_from(["XS0101", "XS0213"]),
                          st.sampled_from(["", "m", "n"])), max_size=6))
def test_a_subject_sorts_its_findings_by_their_sort_key(rows: list[tuple[
        tuple[str, int, int] | None, Severity, str, str]]) -> None:
    """A subject's findings are in Finding.sort_key order, equal keys in the order given."""
    findings = [Finding(rule, "name", severity, message, "c", "f",
                        Location(*where) if where is not None else None)
                for where, severity, rule, message in rows]
    got = SubjectReport("s", "src", None, tuple(findings)).findings
    assert [id(f) for f in got] == [id(f) for f in sorted(findings, key=Finding.sort_key)]


def test_make_finding_is_the_finding_attrs_makes() -> None:
    """The engine's quicker constructor sets every field as Finding(...) does."""
    where = Location("t.json", 3, 7)
    made = make_finding(("XS0213", "stale", "info", "harmless", "nothing"), "m", where)
    expected = Finding("XS0213", "stale", "info", "m", "harmless", "nothing", where)
    assert type(made) is Finding and made == expected and hash(made) == hash(expected)
    for field in attrs.fields(Finding):
        assert getattr(made, field.name) == getattr(expected, field.name), field.name
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        made.message = "changed"  # type: ignore[misc]


def test_a_rule_made_again_with_its_compiled_form_gives_its_own_findings() -> None:
    """A rule evolved from another (same compiled check) names its own id and severity."""
    rule = CATALOGUE.get("amx-tile-pair")
    other = attrs.evolve(rule, id="XS9999", severity="info")
    subject = build_subject(Example(cpuid=(("0xd.0.eax", "0x202e7"),)))
    for _ in range(2):  # each in turn, after the other's finding
        (first,) = evaluate_rules(subject, [rule])
        (second,) = evaluate_rules(subject, [other])
        assert (first.rule, first.severity) == ("XS0108", "error")
        assert (second.rule, second.severity) == ("XS9999", "info")
        assert first.message == second.message


def test_explain_page_shows_the_failing_example_finding() -> None:
    """The page of amx-tile-pair holds its check, the oops example's finding and references."""
    page = render_rule("amx-tile-pair")
    assert page.startswith("XS0108 amx-tile-pair (error, xcr0 family)\n")
    assert "Check\n    (xcr0 & xtile) in [0, xtile]\n" in page
    assert "0xD.0 EAX = 0x202e7" in page
    assert "error: CPUID.(0xD,0) enumerates 0x20000 (tilecfg) without its AMX partner" in page
    assert "Example that passes" in page
    assert "References\n    - Linux arch/x86/kvm/x86.c, __kvm_set_xcr():" in page
    assert "\n      https://github.com/torvalds/linux/blob/master/arch/x86/kvm/x86.c\n" in page
    assert render_rule("xs0108") == page


def test_explain_json_and_every_rule_page() -> None:
    """Every rule has a page; the JSON form lists examples with their findings."""
    for rule in CATALOGUE:
        assert render_rule(rule.id).startswith(f"{rule.id} {rule.name} ")
    data = json.loads(render_rule("template-leaf-missing", fmt="json"))
    assert data["id"] == "XS0401" and data["each"] == "missing_entries_first"
    assert all(entry["finding"] for entry in data["examples"]["fail"])


def test_explain_unknown_rule_is_an_input_error() -> None:
    """An unknown id is a usage error naming the closest rule."""
    with pytest.raises(InputError) as caught:
        render_rule("amx-tile-pairs")
    assert "did you mean amx-tile-pair?" in str(caught.value)
    with pytest.raises(InputError):
        render_rule("amx-tile-pair", fmt="sarif")


def test_rules_listing_groups_by_family() -> None:
    """`rules` lists every rule under its family; JSON gives one object per rule."""
    text = render_catalogue()
    assert text.index("\nlayout\n") < text.index("\nkvm\n")
    assert "  XS0108  error    amx-tile-pair" in text
    assert text.rstrip().endswith(f"{len(CATALOGUE)} rules; `xstate-check explain ID|NAME` "
                                  "shows one rule's page.")
    rows = json.loads(render_catalogue(fmt="json"))
    assert len(rows) == len(CATALOGUE) and rows[0]["id"] == "XS0101"


def test_a_family_alone_finds_what_it_finds_in_the_whole_catalogue(templates: list[str]) -> None:
    """A family's catalogue (which leaves the facts most rules read to their first read:
    it reads few of them) finds on each subject what its rules find in the whole catalogue
    (which sets them when the facts are made)."""
    from xstate_check.api import build_subject as subject_of
    from xstate_check.sources.profiles import profile_index

    catalogue = load_catalogue()
    assert catalogue.reads_registers and not catalogue.family("xcr0").reads_registers
    subjects = [subject_of(f"profile:{info.name}") for info in profile_index()]
    subjects += [subject_of(f"profile:{info.name}", template) for template in templates[:3]
                 for info in profile_index() if info.name.startswith("fc-ice-lake")]
    compared: dict[str, int] = {}
    for family in ("xcr0", "layout", "features", "kvm", "linux-guest"):
        rules = catalogue.family(family)
        ids = {rule.id for rule in rules}
        for subject in subjects:
            alone = sorted((f.rule, f.message) for f in evaluate_rules(subject, rules))
            whole = sorted((f.rule, f.message) for f in evaluate_rules(subject, catalogue)
                           if f.rule in ids)
            assert alone == whole, (family, subject.name)
            compared[family] = compared.get(family, 0) + len(alone)
    # Findings of several families were compared, not only passes.
    assert len([family for family, count in compared.items() if count]) >= 2, compared
