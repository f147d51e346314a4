"""The shipped catalogue: every rule's own examples, stable ids, the names DESIGN.md requires."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from xstate_check.engine import FAMILIES, evaluate, load_catalogue
from xstate_check.engine.catalogue import Rule
from xstate_check.engine.examples import BASES, Example, build_subject
from xstate_check.engine.runner import evaluate_rules
from xstate_check.subject import Subject

CATALOGUE = load_catalogue()
RULES_DIR = Path(__file__).resolve().parents[1] / "rules"
RULES = list(CATALOGUE)

#: id -> name of every rule ever shipped. Ids are never reused and names never change: a
#: rule that goes away stays here (marked retired) so that its id is not given to another.
PINNED = {
    "XS0101": "x87-required",
    "XS0102": "avx-requires-sse",
    "XS0103": "mpx-pair",
    "XS0104": "avx512-triple",
    "XS0105": "xcr0-supervisor-bits",
    "XS0106": "xcr0-unknown-bits",
    "XS0107": "apx-excludes-mpx",
    "XS0108": "amx-tile-pair",
    "XS0201": "xsave-size-consistent",
    "XS0202": "xsave-max-size-covers",
    "XS0203": "xsave-max-size-stale",
    "XS0204": "compacted-size-nonzero",
    "XS0205": "compacted-size-consistent",
    "XS0206": "layout-no-overlap",
    "XS0207": "layout-offsets-ordered",
    "XS0208": "component-subleaf-missing",
    "XS0209": "component-kind-matches",
    "XS0210": "xss-user-bits",
    "XS0211": "component-reserved-flags",
    "XS0212": "xfd-flag-without-xfd",
    "XS0213": "stale-component-subleaf",
    "XS0214": "component-size-architectural",
    "XS0301": "feature-xstate-match",
    "XS0302": "xstate-without-feature",
    "XS0303": "xss-requires-xsaves",
    "XS0304": "xsave-extensions-require-xsave",
    "XS0305": "xstate-features-require-xsave",
    "XS0306": "avx-dependents-require-avx",
    "XS0307": "avx512-subfeatures-require-f",
    "XS0308": "xfd-requires-xsaves",
    "XS0309": "amx-tile-info-consistent",
    "XS0310": "amx-subfeatures-require-tile",
    "XS0311": "shstk-requires-xsaves",
    "XS0312": "enqcmd-requires-xsaves",
    "XS0401": "template-leaf-missing",
    "XS0402": "guest-within-kvm-supported",
    "XS0403": "dynamic-needs-guest-permission",
    "XS0404": "kvm-half-enabled-amx",
    "XS0405": "kvm-mpx-on-amd",
    "XS0406": "kvm-apx-unsupported",
    "XS0407": "guest-layout-matches-host",
    "XS0408": "xss-within-kvm-supported",
    "XS0409": "template-sets-unsupported-bits",
    "XS0410": "indexed-subleaf-flags",
    "XS0411": "indexed-leaf-flags-cleared",
    "XS0501": "amx-requires-xfd",
    "XS0502": "linux-gated-xcr0-valid",
    "XS0503": "linux-fp-sse-required",
    "XS0504": "linux-xsave-needs-leaf-0xd",
    "XS0505": "linux-init-fpstate-fits",
    "XS0506": "linux-avx-state-missing",
    "XS0601": "host-supported-within-cpuid",
    "XS0602": "host-permitted-within-supported",
    "XS0603": "host-guest-permitted-within-supported",
    "XS0604": "host-kvm-within-supported",
    "XS0605": "host-xcr0-within-cpuid",
    "XS0606": "host-dynamic-not-permitted",
    "XS0701": "restore-xcr0-supported",
    "XS0702": "restore-xss-supported",
    "XS0703": "restore-layout-equal",
    "XS0704": "restore-xsave-size-equal",
    "XS0705": "restore-amx-permission",
    "XS0706": "restore-needs-xsave2",
    "XS0707": "restore-xss-in-saved-msrs",
    "XS0708": "restore-xfd-msrs",
    "XS0709": "group-view-equal",
}

#: The names DESIGN.md ("Rules") requires, with the severity their meaning calls for.
REQUIRED = {
    "amx-tile-pair": "error",
    "x87-required": "error",
    "avx-requires-sse": "error",
    "mpx-pair": "error",
    "avx512-triple": "error",
    "apx-excludes-mpx": "error",
    "amx-requires-xfd": "error",
    "xss-requires-xsaves": "info",
    "xsave-size-consistent": "error",
    "layout-no-overlap": "error",
    "dynamic-needs-guest-permission": "error",
    "guest-within-kvm-supported": "error",
    "feature-xstate-match": "warning",
    "template-leaf-missing": "error",
}


def _examples(kind: str) -> list[tuple[Rule, int, Example]]:
    return [
        (rule, index, example)
        for rule in RULES
        for index, example in enumerate(rule.fails if kind == "fail" else rule.passes)
    ]


def _id(case: tuple[Rule, int, Example]) -> str:
    rule, index, _ = case
    return f"{rule.id}-{rule.name}-{index}"


@pytest.mark.parametrize("case", _examples("fail"), ids=_id)
def test_fail_example_fails(case: tuple[Rule, int, Example]) -> None:
    """Each rule's fail example gives a finding of that rule, with the rule's severity."""
    rule, _, example = case
    findings = evaluate_rules(build_subject(example), [rule])
    assert findings, f"{rule.name}: fail example at {example.location} gave no finding"
    assert {finding.rule for finding in findings} == {rule.id}
    assert all(finding.severity == rule.severity for finding in findings)
    assert all(finding.message and "{" not in finding.message for finding in findings)


@pytest.mark.parametrize("case", _examples("pass"), ids=_id)
def test_pass_example_passes(case: tuple[Rule, int, Example]) -> None:
    """Each rule's pass example gives no finding of that rule."""
    rule, _, example = case
    assert evaluate_rules(build_subject(example), [rule]) == []


def test_every_rule_has_both_kinds_of_example() -> None:
    """No rule ships without at least one pass and one fail example."""
    assert all(rule.passes and rule.fails for rule in RULES)


def test_ids_and_names_are_pinned() -> None:
    """Ids and names match the pinned table: none renamed, reused or added unrecorded."""
    assert {rule.id: rule.name for rule in RULES} == PINNED


def test_ids_sit_in_their_family_block() -> None:
    """XS01xx are xcr0 rules, XS02xx layout, … XS06xx host; ids are in catalogue order."""
    for rule in RULES:
        assert int(rule.id[2:4]) == FAMILIES[rule.family]
    assert [rule.id for rule in RULES] == sorted(rule.id for rule in RULES)


def test_required_names_exist_with_their_severity() -> None:
    """The names DESIGN.md requires exist; amx-tile-pair is XS0108."""
    for name, severity in REQUIRED.items():
        assert CATALOGUE.get(name).severity == severity, name
    assert CATALOGUE.get("amx-tile-pair").id == "XS0108"
    assert CATALOGUE.get("xs0108") is CATALOGUE.get("amx-tile-pair")


def test_every_family_has_a_file_and_rules() -> None:
    """All six families ship rules."""
    assert {rule.family for rule in RULES} == set(FAMILIES)


def test_every_rule_is_documented() -> None:
    """Each rule has a summary, consequence, fix, explanation and a reference with a URL."""
    for rule in RULES:
        assert rule.summary and rule.consequence and rule.fix and rule.explanation, rule.id
        assert rule.references, rule.id
        assert any(_URL.search(ref) for ref in rule.references), rule.id


#: Documents that live beside the project, not in it: no rule may send a user to them.
_PROJECT_DOCS = re.compile(r"\b(?:RULES-CATALOGUE|DESIGN|FIRECRACKER|FORMATS|STYLE)\b|shared/")
_MD_FILE = re.compile(r"[\w./-]*\.md\b")
_URL = re.compile(r"https://[^\s)\"']*[^\s)\"'.,;]")


def _outside_citations(text: str) -> list[str]:
    """Return what ``text`` cites outside the project: the project's own notes, or a ``.md``
    file that no URL in the same text opens (a public repository's document has one)."""
    urls = _URL.findall(text)
    bare = _URL.sub("", text)
    found = [match.group() for match in _PROJECT_DOCS.finditer(bare)]
    found += [name for name in _MD_FILE.findall(bare)
              if not any(url.endswith(name.rsplit("/", 1)[-1]) for url in urls)]
    return found


def _rule_texts(rule: Rule) -> list[str]:
    return [*rule.references, rule.summary, rule.explanation, rule.consequence, rule.fix,
            *(example.note for example in (*rule.passes, *rule.fails))]


def test_no_rule_cites_a_file_outside_the_project() -> None:
    """No rule's references or texts cite a document users do not have (*.md, catalogues)."""
    cited = {rule.id: [found for text in _rule_texts(rule) for found in _outside_citations(text)]
             for rule in RULES}
    assert {rule_id: texts for rule_id, texts in cited.items() if texts} == {}


def test_rule_files_cite_no_file_outside_the_project() -> None:
    """The shipped rule files, comments included, cite no document outside the project."""
    for path in [*sorted(RULES_DIR.glob("*.toml")), RULES_DIR / "README.md"]:
        text = path.read_text(encoding="utf-8").replace("README.md", "")
        found = [line for line in text.splitlines() if _outside_citations(line)]
        assert found == [], path.name


def test_outside_citation_check_catches_each_form() -> None:
    """The citation check itself flags every form an outside citation takes, and no other."""
    for text in ("RULES-CATALOGUE.md XCR0-08", "FIRECRACKER.md §3.3", "see DESIGN.md",
                 "FORMATS.md §5 quirk 2", "notes.md", "../shared/data",
                 "Firecracker docs/snapshotting/snapshot-support.md"):
        assert _outside_citations(text), text
    for text in ("Linux arch/x86/kvm/x86.c, __kvm_set_xcr(): "
                 "https://github.com/torvalds/linux/blob/master/arch/x86/kvm/x86.c",
                 "Firecracker docs/snapshotting/snapshot-support.md: https://github.com/"
                 "firecracker-microvm/firecracker/blob/main/docs/snapshotting/snapshot-support.md"):
        assert _outside_citations(text) == [], text


def test_every_reference_url_is_well_formed() -> None:
    """Each URL in a reference is an https URL to a public host the page names."""
    hosts = ("github.com", "git.kernel.org", "lore.kernel.org", "docs.kernel.org",
             "www.intel.com", "gitlab.com")
    for rule in RULES:
        for ref in rule.references:
            for url in _URL.findall(ref):
                assert url.split("/")[2] in hosts, (rule.id, url)
                assert not url.endswith((".", ",")), (rule.id, url)


def test_error_consequences_say_what_breaks() -> None:
    """Every error rule's consequence names the failure: #GP, #UD, EPERM, refusal, lost XSAVE."""
    words = ("#GP", "#UD", "EPERM", "refuses", "disables XSAVE", "XSAVE is disabled",
             "does not start", "corrupt", "hangs")
    for rule in RULES:
        if rule.severity == "error":
            assert any(word in rule.consequence for word in words), rule.id


@pytest.mark.parametrize("base", sorted(BASES))
def test_builtin_tables_are_clean(base: str) -> None:
    """The built-in example tables (copies of real data) give no error or warning at all."""
    subject = build_subject(Example(base=base))
    report = evaluate(subject)
    assert [f.name for f in report.findings if f.severity != "info"] == []


def test_amx_pair_consequence_is_xsetbv_gp() -> None:
    """amx-tile-pair says the guest's XSETBV raises #GP at boot."""
    assert "XSETBV raises #GP at guest boot" in CATALOGUE.get("amx-tile-pair").consequence


def test_subject_with_host_runs_host_rules() -> None:
    """Host rules are not applicable without host facts and run with them."""
    example = CATALOGUE.get("dynamic-needs-guest-permission").fails[0]
    with_host = build_subject(example)
    without = Subject("no host", with_host.cpuid, role="guest")
    rule = CATALOGUE.get("dynamic-needs-guest-permission")
    assert evaluate_rules(with_host, [rule])
    assert evaluate_rules(without, [rule]) == []
