"""What the gate reuses between subjects, and that reuse never changes an answer.

A guest table made by a template shares with its profile the parts the template left (its
entry keys, its KVM flags, its leaf 0xD component subleaves): what is derived from those
parts is taken from the profile, and its feature bits are the profile's but those the
template sets or clears. Findings are reused only for equal guest tables, placed at each
template's own lines.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import X86_TEMPLATES
from xstate_check.cpuid import CpuidSet
from xstate_check.engine.runner import evaluate_rules
from xstate_check.engine.shipped import load_catalogue
from xstate_check.facts import Facts
from xstate_check.facts.enumeration import feature_values
from xstate_check.gate import GateRun
from xstate_check.layout import XsaveLayout
from xstate_check.sources.profiles import load_profile, profile_index
from xstate_check.subject import Subject
from xstate_check.template import apply_template, fold_template, load_template, parse_template

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = sorted(str(path) for path in (REPO / "examples").rglob("*.json"))


def _template_text(*modifiers: tuple[str, str, str, str, int]) -> str:
    """Return a template of (leaf, subleaf, register, bitmap, flags) modifiers."""
    return json.dumps({"cpuid_modifiers": [
        {"leaf": leaf, "subleaf": subleaf, "flags": flags,
         "modifiers": [{"register": register, "bitmap": bitmap}]}
        for leaf, subleaf, register, bitmap, flags in modifiers]}, indent=2)


#: A template that resizes component 2 (YMM, 0xD.2 EAX = 0x200) and clears the flag of 0xD.2.
RESIZES_YMM = _template_text(("0xd", "0x2", "eax", "0b" + "0" * 22 + "1" * 10, 0))
#: A template that sets AVX512F (leaf 7 EBX bit 16) and then clears it and sets AVX2 (bit 5).
SETS_THEN_CLEARS = _template_text(("0x7", "0x0", "ebx", "0b" + "x" * 15 + "1" + "x" * 16, 1),
                                  ("0x7", "0x0", "ebx", "0b" + "x" * 15 + "0" + "x" * 10
                                   + "1" + "x" * 5, 1))
#: A template that drops AVX-512 state from 0xD.0 EAX only.
DROPS_AVX512 = _template_text(("0xd", "0x0", "eax", "0b" + "x" * 24 + "000" + "x" * 5, 1))


def _fresh(table: CpuidSet) -> CpuidSet:
    """Return an equal table built from scratch: it shares nothing with another."""
    return CpuidSet(dict(table.entries), table.source, flags=dict(table.flags),
                    provenance=table.provenance, meta=dict(table.meta), role=table.role,
                    source_kind=table.source_kind, leaf_0xd_complete=table.leaf_0xd_complete)


def _guest_profiles() -> list[CpuidSet]:
    return [load_profile(info.name) for info in profile_index()
            if load_profile(info.name).role == "guest"]


def _templates(data_dir: Path | None) -> list[tuple[str, str]]:
    found = [(path, Path(path).read_text(encoding="utf-8")) for path in EXAMPLES]
    found += [("resizes-ymm.json", RESIZES_YMM), ("drops-avx512.json", DROPS_AVX512),
              ("sets-then-clears.json", SETS_THEN_CLEARS)]
    if data_dir is not None and (data_dir / "firecracker").is_dir():
        for name in X86_TEMPLATES:
            path = data_dir / "firecracker" / f"{name}.json"
            found.append((str(path), path.read_text(encoding="utf-8")))
    return found


@pytest.fixture
def shared_data() -> Path | None:
    """Return ../shared/data where it is there (the tests run on the bundled data without)."""
    folder = REPO.parent / "shared" / "data"
    return folder if folder.is_dir() else None


def test_parts_shared_with_the_profile_give_what_a_fresh_table_gives(
        shared_data: Path | None) -> None:
    """Every template on every guest profile: the layout, the subleaves by leaf and every
    finding are those of the same guest table built from scratch, sharing nothing."""
    catalogue = load_catalogue()
    checked = 0
    for path, text in _templates(shared_data):
        template = parse_template(text, path)
        folded = fold_template(template)
        for base in _guest_profiles():
            applied = apply_template(template, base, folded)
            guest, fresh = applied.cpuid, _fresh(applied.cpuid)
            assert guest.shared("keys") is base
            assert XsaveLayout.from_cpuid(guest) == XsaveLayout.from_cpuid(fresh)
            assert XsaveLayout.of_subleaves(guest).components == \
                XsaveLayout.from_cpuid(fresh).components
            assert guest.leaf_subleaves() == fresh.leaf_subleaves()
            assert fresh.applied_masks() is None
            if not applied.missing:
                assert guest.applied_masks() is folded.masks
            assert feature_values(guest) == feature_values(fresh)
            made = [Subject.of(base.source, base, template=path, guest=table,
                               missing=applied.missing) for table in (guest, fresh)]
            shared_findings, fresh_findings = (evaluate_rules(subject, catalogue)
                                               for subject in made)
            assert shared_findings == fresh_findings, (path, base.source)
            checked += 1
    assert checked >= 2 * len(_guest_profiles())


def test_a_template_that_changes_a_component_subleaf_shares_no_layout() -> None:
    """A modifier of 0xD.2 gives the guest its own components; one of 0xD.0 alone shares the
    profile's and still reads its own XCR0."""
    base = load_profile("fc-sapphire-rapids-6.1")
    before = XsaveLayout.from_cpuid(base)
    resized = apply_template(parse_template(RESIZES_YMM, "r.json"), base).cpuid
    assert resized.shared("xsave_components") is None
    assert XsaveLayout.from_cpuid(resized).components[2].size == 0x3FF
    assert XsaveLayout.from_cpuid(base) is before and before.components[2].size == 0x100
    assert resized.flags[(0xD, 2)] == 0 and base.flags[(0xD, 2)] == 1
    dropped = apply_template(parse_template(DROPS_AVX512, "d.json"), base).cpuid
    assert dropped.shared("xsave_components") is base
    layout = XsaveLayout.from_cpuid(dropped)
    assert layout.components is before.components
    assert layout.xcr0_supported == before.xcr0_supported & ~0xE0 != before.xcr0_supported
    # What reads the subleaves alone takes one layout of them, the profile's.
    subleaves = XsaveLayout.of_subleaves(dropped)
    assert subleaves is XsaveLayout.of_subleaves(base)
    assert subleaves.components is before.components
    assert subleaves.components_memo is before.components_memo
    assert XsaveLayout.of_subleaves(resized).components == \
        XsaveLayout.from_cpuid(resized).components


def test_subleaves_of_a_table_enumerating_an_xfeature_without_one_are_its_own() -> None:
    """A table whose 0xD.0 enumerates an xfeature it has no subleaf of gets its own layout's
    components (that xfeature as size 0), not a layout shared with its subleaves."""
    base = load_profile("fc-sapphire-rapids-6.1")
    numbers = [n for n in range(2, 32) if (0xD, n) not in base.entries]
    assert numbers
    number = numbers[0]
    sub0 = base.entries[(0xD, 0)]
    entries = dict(base.entries)
    entries[(0xD, 0)] = sub0._replace(eax=sub0.eax | 1 << number)
    table = base.replace(entries=entries)
    subleaves = XsaveLayout.of_subleaves(table)
    assert subleaves.components == XsaveLayout.from_cpuid(table).components
    assert subleaves.components[number].size == 0
    assert number not in XsaveLayout.of_subleaves(base).components


def test_a_template_that_changes_an_entry_flag_shares_no_flags() -> None:
    """A template writing the flags its base records shares the base's (and what is derived
    from them); one clearing SIGNIFICANT_INDEX has its own, which the flag facts read."""
    base = load_profile("fc-sapphire-rapids-6.1")
    kept = apply_template(parse_template(DROPS_AVX512, "d.json"), base).cpuid
    assert kept.shared("flags") is base
    cleared = apply_template(parse_template(RESIZES_YMM, "r.json"), base).cpuid
    assert cleared.shared("flags") is None
    for table, expected in ((kept, []), (cleared, [(0xD, 2)]), (_fresh(cleared), [(0xD, 2)])):
        facts = Facts(Subject.of(base.source, base, template="t.json", guest=table))
        items = (*facts["flags_shadowing"], *facts["flags_cleared"])
        assert [(item.leaf, item.subleaf) for item in items] == expected


def test_a_derived_value_is_computed_once_per_table() -> None:
    """``derived`` computes on first use; a table sharing a part asks the part's owner."""
    base = load_profile("fc-ice-lake-6.1")
    calls: list[CpuidSet] = []

    def count(table: CpuidSet) -> int:
        calls.append(table)
        return len(table.entries)

    guest = apply_template(parse_template(DROPS_AVX512, "d.json"), base).cpuid
    assert guest.derived("test-count", count, "keys") == len(base.entries)
    assert guest.derived("test-count", count, "keys") == len(base.entries)
    assert base.derived("test-count", count, "keys") == len(base.entries)
    assert calls == [base]
    assert guest.derived("test-own", count) == len(guest.entries) and calls == [base, guest]


def test_a_template_differing_in_one_bit_is_not_served_from_the_cache(tmp_path: Path) -> None:
    """One bit apart, two templates give other guest tables: no reuse, each its own
    findings; a copy with the same modifiers on other lines is served, at its own lines."""
    source = REPO / "examples" / "templates" / "no-avx512.json"
    text = source.read_text(encoding="utf-8")
    document = json.loads(text)
    ebx = document["cpuid_modifiers"][0]["modifiers"][0]
    assert ebx["register"] == "ebx" and ebx["bitmap"][-1] == "x"
    ebx["bitmap"] = ebx["bitmap"][:-1] + "0"  # FSGSBASE cleared: no rule reads it
    flipped = tmp_path / "flipped.json"
    flipped.write_text(json.dumps(document, indent=2), encoding="utf-8")
    moved = tmp_path / "moved.json"
    moved.write_text("\n\n\n" + text, encoding="utf-8")
    profiles = ["profile:fc-sapphire-rapids-6.1", "profile:fc-ice-lake-6.1"]

    run = GateRun([str(source), str(flipped)], profiles=profiles)
    result = run.result(jobs=1)
    assert run.cache.hits == 0 and len(result.subjects) == 4

    run = GateRun([str(source), str(moved)], profiles=profiles)
    result = run.result(jobs=1)
    assert run.cache.hits == 2
    catalogue = load_catalogue()
    for subject in result.subjects:
        assert subject.template is not None
        base = load_profile(str(subject.details["profile"]))
        applied = apply_template(load_template(subject.template), base)
        fresh = Subject.of(subject.name, base, template=subject.template,
                           guest=_fresh(applied.cpuid), missing=applied.missing)
        assert subject.findings == tuple(sorted(evaluate_rules(fresh, catalogue),
                                                key=lambda f: f.sort_key()))
    lines = {subject.template: {f.location.line for f in subject.findings if f.location}
             for subject in result.subjects}
    assert lines[str(moved)] == {line + 3 for line in lines[str(source)]} != set()


def test_profiles_with_equal_tables_share_findings_and_one_bit_apart_do_not(
        tmp_path: Path) -> None:
    """Two profile files holding one table (another name, another source) give a template
    equal guest tables: the second pair reuses the first's findings and keeps its own name
    and details. A third file with one flag changed is not served from the cache."""
    from xstate_check.sources.load import load_cpuid
    from xstate_check.sources.ownjson import to_json_text

    source = REPO / "src" / "xstate_check" / "profiles" / "fc-ice-lake-6.1.json"
    text = source.read_text(encoding="utf-8")
    folder = tmp_path / "profiles"
    folder.mkdir()
    (folder / "first.json").write_text(text, encoding="utf-8")
    (folder / "second.json").write_text(text, encoding="utf-8")
    table = load_cpuid(str(folder / "first.json"))
    key = next(key for key, flags in table.flags.items()
               if key[0] == 0xD and key[1] >= 2 and flags & 1)
    changed = table.replace(flags={**table.flags, key: 0})
    (folder / "third.json").write_text(to_json_text(changed), encoding="utf-8")
    template = str(REPO / "examples" / "templates" / "no-avx512.json")
    profiles = [str(folder / f"{name}.json") for name in ("first", "second", "third")]
    run = GateRun([template], profiles=profiles)
    result = run.result(jobs=1)
    assert [s.name for s in result.subjects] == ["first", "second", "third"]
    assert run.cache.hits == 1
    first, second, third = result.subjects
    assert second.findings == first.findings and second.details["profile"] == "second"
    assert third.findings != first.findings


def test_feature_values_are_what_each_feature_fact_computes() -> None:
    """The feature bits set at once are each fact's own value, on every bundled profile and
    on a source without leaf 0xD's subleaves (where leaf 0xD's bits are Missing, not set)."""
    from xstate_check.facts import FACTS, Facts, Missing
    from xstate_check.facts.enumeration import feature_values

    names = [name for name, spec in FACTS.items()
             if spec.kind == "bool" and name.isupper()]
    assert len(names) >= 30
    tables = [load_profile(info.name) for info in profile_index()]
    tables.append(tables[0].replace(leaf_0xd_complete=False))
    for table in tables:
        values = feature_values(table)
        facts = Facts(Subject.of(table.source, table))
        for name in names:
            try:
                expected = FACTS[name].compute(facts)
            except Missing:
                assert name not in values
                continue
            assert values[name] is expected, (table.source, name)
        assert set(values) <= set(names)


def _names(subject: Subject, catalogue: object) -> dict[str, str]:
    return {f.name: f.message for f in evaluate_rules(subject, catalogue)}  # type: ignore[arg-type]


def test_a_remembered_component_answer_is_not_reused_for_other_subleaves_or_xcr0() -> None:
    """Quantified answers are remembered per component subleaves, domain and reference: a
    guest with one subleaf changed, another XCR0, or another reference table gets its own
    verdict, whichever was asked first, and each equals a fresh table's."""
    catalogue = load_catalogue()
    base = load_profile("fc-sapphire-rapids-6.1")
    resized = apply_template(parse_template(RESIZES_YMM, "r.json"), base).cpuid
    dropped = apply_template(parse_template(DROPS_AVX512, "d.json"), base).cpuid
    assert dropped.shared("xsave_components") is base
    subjects = {
        "plain": Subject.of("p", base, template="p.json", guest=base),
        "resized": Subject.of("r", base, template="r.json", guest=resized),
        "dropped": Subject.of("d", base, template="d.json", guest=dropped),
        # The profile's own subleaves (remembered above) against a reference resized.
        "against resized": Subject.of("a", resized, template="a.json", guest=base),
    }
    for order in (list(subjects), list(reversed(subjects))):
        found = {name: _names(subjects[name], catalogue) for name in order}
        assert "guest-layout-matches-host" not in found["plain"]
        assert "stale-component-subleaf" not in found["plain"]
        assert "guest-layout-matches-host" in found["resized"]
        assert "(ymm)" in found["resized"]["guest-layout-matches-host"]
        assert "guest-layout-matches-host" not in found["dropped"]
        assert "stale-component-subleaf" in found["dropped"]
        assert "guest-layout-matches-host" in found["against resized"]
        for name, subject in subjects.items():
            assert subject.base is not None
            fresh = Subject.of(subject.name, _fresh(subject.base),
                               template=subject.template, guest=_fresh(subject.cpuid))
            assert found[name] == _names(fresh, catalogue), name


def test_a_remembered_answer_that_reads_xcr0_is_kept_per_xcr0() -> None:
    """A body reading XCR0 is answered anew for a table sharing the subleaves with another
    XCR0 (AVX-512 dropped from 0xD.0 EAX only), in either order."""
    from xstate_check.engine.compiler import compile_expression
    from xstate_check.engine.loader import language_names
    from xstate_check.engine.parser import parse_expression
    from xstate_check.facts import Facts

    names = language_names()
    test = compile_expression(parse_expression(
        "all c in components(0xe0): (c.mask & xcr0) != 0", names.__getitem__, names))
    base = load_profile("fc-sapphire-rapids-6.1")
    dropped = apply_template(parse_template(DROPS_AVX512, "d.json"), base).cpuid
    assert XsaveLayout.from_cpuid(dropped).components is XsaveLayout.from_cpuid(base).components
    subjects = [Subject.of("p", base, template="p.json", guest=base),
                Subject.of("d", base, template="d.json", guest=dropped)]
    for order in (subjects, subjects[::-1]):
        assert [test(Facts(subject)) for subject in order] == [
            subject.name == "p" for subject in order]
