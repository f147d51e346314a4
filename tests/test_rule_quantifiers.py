"""Quantifiers over components: syntax, types, errors with carets, evaluation, and the layout
and feature rules written with them, checked on generated tables against a reference.

The reference functions below restate, from the SDM and the kernel code each rule cites,
which components a table gets wrong, one plain loop each, independent of the rule text and
of the mask evaluation in ``engine.quantify``. Tables are generated, so they hold what real
CPUs never enumerate: unsized components with ECX[1] set, offsets inside the legacy area,
supervisor flags on XCR0 bits, reserved bits, stale subleaves, overlaps, misorder.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xstate_check.cpuid import FEATURES, CpuidSet
from xstate_check.engine import evaluate, load_catalogue
from xstate_check.engine.compiler import compile_expression, offending_quantifiers
from xstate_check.engine.examples import build_subject
from xstate_check.engine.loader import language_names
from xstate_check.engine.nodes import Quantifier, walk
from xstate_check.engine.parser import parse_expression
from xstate_check.engine.quantify import bound_key
from xstate_check.engine.tokenizer import RuleSyntaxError
from xstate_check.errors import InputError
from xstate_check.facts import Facts, Missing
from xstate_check.facts.components import bare
from xstate_check.layout import Component, XsaveLayout
from xstate_check.subject import Destination, Subject
from xstate_check.xfeatures import XFEATURES, format_mask

NAMES = language_names()
CATALOGUE = load_catalogue()
APX, MPX = 1 << 19, 0x18


def parse(source: str) -> object:
    """Parse with the names every rule file can use."""
    return parse_expression(source, NAMES.__getitem__, NAMES)


def value_of(source: str, subject: Subject) -> object:
    """Evaluate an expression on a subject."""
    return compile_expression(parse(source))(Facts(subject))  # type: ignore[arg-type]


def error_of(source: str) -> str:
    """Return the rendered syntax error of an expression."""
    with pytest.raises(RuleSyntaxError) as caught:
        parse(source)
    return str(caught.value)


# --- syntax, types, errors -----------------------------------------------------------------


@pytest.mark.parametrize(("source", "message", "under"), [
    ("all xcr0 in components(xcr0): true", "a new variable name, not 'xcr0', which is taken",
     "xcr0 in components"),
    ("all host in components(xcr0): true", "a new variable name, not 'host', which is taken",
     "host"),
    ("all c in components(xcr0): all c in components(xss): true",
     "a new variable name, not 'c', which is taken", "c in components(xss)"),
    ("all c in components(xcr0) c.size == 0", "expected ':' and the condition each component",
     "c.size"),
    ("all c in xcr0: c.size == 0", "expected components(MASK)", "xcr0"),
    ("all c in components(xcr0): c.sise == 0", "unknown name 'c.sise' (did you mean 'c.size'?)",
     "c.sise"),
    ("all c in components(xcr0): c == 0", "an attribute of the component c", "c =="[:1]),
    ("(all c in components(xcr0): c.size == 0) and c.size == 0", "unknown name 'c.size'",
     "c.size == 0"[:6]),
    ("all c in components(XSAVE): true",
     "components() needs a number or mask, found a condition", "XSAVE"),
    ("all c in components(xcr0): c.size", "'all' needs a condition, found a number or mask",
     "c.size"),
    ("any c in components(xcr0): c.name == 1", "'==' compares a string with a number or mask",
     "c.name == 1"),
    ("all c in components(xcr0): c.mask & xcr0 == 0", "parentheses around this '&'",
     "c.mask & xcr0"),
    ("all c in components(~0): all d in components(~0): any e in components(~0): true",
     "at most 2 quantifiers one inside another", "any e in"),
])
def test_quantifier_errors_are_drawn_under_their_span(source: str, message: str,
                                                       under: str) -> None:
    """Every mistake in a quantifier is one message with a caret under the bad part: the
    first token of ``under`` where ``under`` stands last in the source."""
    first, shown, marker = error_of(source).splitlines()
    assert first.startswith(message), first
    assert shown == f"    {source}"
    start = source.rindex(under)
    token = under if under.startswith("c.mask") or under.startswith("c.name") \
        else under.split(" ", maxsplit=1)[0].split("(", maxsplit=1)[0]
    assert marker == "    " + " " * start + "~" * (len(token) - 1) + "^"


def test_the_body_reaches_right_and_parentheses_end_it() -> None:
    """``all c …: A or B`` quantifies ``A or B``; ``(all c …: A) or B`` does not."""
    node = parse("all c in components(xcr0): c.size == 0 or XSAVE")
    assert isinstance(node, Quantifier) and node.body.type == "bool"
    grouped = parse("(all c in components(xcr0): c.size == 0) or XSAVE")
    assert not isinstance(grouped, Quantifier)


def table(xcr0: int, subleaves: dict[int, tuple[int, int, int, int]], xss: int = 0,
          **leaf7: int) -> CpuidSet:
    """A table enumerating ``xcr0``/``xss`` with the given 0xD.n (EAX, EBX, ECX, EDX)."""
    rows = [(0, 0, 0xD, 0, 0, 0), (1, 0, 0, 0, 1 << 26 | 1 << 28, 0),
            (7, 0, 0, leaf7.get("ebx", 0), leaf7.get("ecx", 0), leaf7.get("edx", 0)),
            (0xD, 0, xcr0 & 0xFFFF_FFFF, 0, 0, xcr0 >> 32), (0xD, 1, 0xF, 0, xss, 0)]
    rows += [(0xD, n, *regs) for n, regs in subleaves.items()]
    return CpuidSet.from_rows(rows)


SPR_LIKE = table(0x602E7, {2: (256, 576, 0, 0), 5: (64, 1088, 0, 0), 6: (512, 1152, 0, 0),
                           7: (1024, 1664, 0, 0), 9: (8, 2688, 0, 0), 17: (64, 2752, 2, 0),
                           18: (8192, 2816, 6, 0)})


@pytest.mark.parametrize(("source", "expected"), [
    ("all c in components(xcr0): c.size != 0", True),
    ("all c in components(xcr0): c.size >= 64", False),      # PKRU is 8 bytes
    ("any c in components(xcr0): c.size == 8", True),
    ("any c in components(xcr0): c.xfd", True),              # TILEDATA
    ("all c in components(0): false", True),                 # nothing to hold for
    ("any c in components(0): true", False),
    ("all c in components(0x3): false", True),               # x87 and SSE are no components
    ("all c in components(1 << 63): false", True),
    ("all c in components(xcr0): c.mask in xcr0", True),
    ("any c in components(known & ~xcr0): c.size != 0", False),
    ("all c in components(xcr0): c.end == c.offset + c.size", True),
    ("all c in components(xcr0): c.name != 'pkru' or c.bit == 9", True),
    ("all c in components(xcr0): c.arch_size == 0 or c.size == c.arch_size", True),
    ("all c in components(xcr0): all d in components(xcr0 & ~c.mask): "
     "d.end <= c.offset or c.end <= d.offset", True),
    ("not (all c in components(xcr0): c.offset < 2816)", True),
    ("(all c in components(xcr0): c.size > 0) and (any c in components(xcr0): c.aligned)", True),
])
def test_quantifiers_evaluate(source: str, expected: bool) -> None:
    """all/any hold as their words say, over the xfeatures 2 to 62 of the mask."""
    assert value_of(source, Subject("t", SPR_LIKE)) is expected


def test_a_subleaf_read_without_subleaves_is_missing() -> None:
    """A dump with no leaf 0xD subleaves answers no subleaf attribute: not applicable."""
    bare = SPR_LIKE.replace(leaf_0xd_complete=False)
    with pytest.raises(Missing):
        value_of("all c in components(xcr0): c.size != 0", Subject("t", bare))
    # The xfeature table's attributes need no subleaf.
    assert value_of("all c in components(xcr0): c.feature != 'APX'", Subject("t", bare)) is True


RULE_FILE = '''\
family = "layout"

[[rule]]
id = "XS0290"
name = "test-rule"
severity = "warning"
summary = "a test rule"
check = "CHECK"
message = "MESSAGE"
consequence = "c"
fix = "f"
references = ["Intel SDM Vol. 1 §13.4: https://www.intel.com/sdm"]

[[rule.pass]]

[[rule.fail]]
template = { "0xd.9.ebx" = "0xac0" }
'''


def write_rule(tmp_path: Path, check: str, message: str) -> Path:
    """Write a one-rule layout file."""
    path = tmp_path / "layout.toml"
    path.write_text(RULE_FILE.replace("CHECK", check).replace("MESSAGE", message),
                    encoding="utf-8")
    return path


def test_the_message_names_the_offending_components(tmp_path: Path) -> None:
    """{c} is the components a failing 'all' holds false, {c.name} and {c.bit:dec} their
    attributes; the finding is placed at the template line that moved the component."""
    check = "all c in components(xcr0 & ~xtile): c.size == 0 or c.end <= 2752"
    path = write_rule(tmp_path, check,
                      "{c} ({c.name}, bit {c.bit:dec}) ends past TILECFG's offset")
    catalogue = load_catalogue([path])
    rule = catalogue.get("XS0290")
    assert not evaluate(build_subject(rule.passes[0]), catalogue).findings
    (finding,) = evaluate(build_subject(rule.fails[0]), catalogue).findings
    assert finding.message == "0x200 (pkru) (pkru, bit 9) ends past TILECFG's offset"
    assert finding.location is not None and finding.location.path == "example-template.json"


@pytest.mark.parametrize(("check", "message", "error"), [
    ("all c in components(xcr0): c.size != 0", "{d}", "not 'd'"),
    ("any c in components(xcr0): c.size == 0", "{c}", "not 'c'"),          # an any has none
    ("not (all c in components(xcr0): c.size != 0)", "{c}", "not 'c'"),   # nor a negated all
    ("all c in components(xcr0): c.size != 0", "{c.sise}", "not 'c.sise'"),
])
def test_a_message_names_only_a_failing_alls_variable(tmp_path: Path, check: str,
                                                     message: str, error: str) -> None:
    """A placeholder must be a variable whose 'all' fails the check, with a caret if not."""
    with pytest.raises(InputError) as caught:
        load_catalogue([write_rule(tmp_path, check, message)])
    text = str(caught.value)
    assert "a fact, let, item field or variable of the check's 'all' to show" in text
    assert error in text


# --- the rules on generated tables --------------------------------------------------------


@st.composite
def tables(draw: st.DrawFn) -> CpuidSet:
    """A table with random leaf 0xD subleaves, enumeration and xstate feature bits."""
    numbers = draw(st.sets(st.integers(2, 21), max_size=9))
    xss_numbers = draw(st.sets(st.sampled_from((8, 10, 11, 12, 15, 16, 20)), max_size=3))
    described = draw(st.sets(st.integers(2, 21), max_size=4))  # stale ones, maybe
    xcr0 = 0x3 | sum(1 << n for n in numbers)
    xss = sum(1 << n for n in xss_numbers)
    subleaves: dict[int, tuple[int, int, int, int]] = {}
    for number in sorted(numbers | xss_numbers | described):
        if draw(st.integers(0, 9)) == 0:
            continue  # enumerated without a subleaf
        known = XFEATURES.get(number)
        size = draw(st.sampled_from((0, 8, 64, 256, 512, known.size if known and known.size
                                     else 128)))
        offset = (known.intel_offset if known and known.intel_offset and draw(st.booleans())
                  else draw(st.integers(0, 0x3000)))
        flags = draw(st.integers(0, 7)) | (draw(st.sampled_from((0, 0, 0, 8))))
        subleaves[number] = (size, offset, flags, draw(st.sampled_from((0, 0, 0, 1))))
    bits = {name: draw(st.booleans()) for name in ("AVX", "MPX", "AVX512F", "PKU",
                                                    "AMX_TILE", "APX", "AVX10")}
    rows = [(0, 0, 0xD, 0, 0, 0), (1, 0, 0, 0, 1 << 26 | 1 << 27, 0),
            (0xD, 0, xcr0, 0, 0, 0), (0xD, 1, 0xF, 0, xss, 0)]
    rows += [(0xD, n, *regs) for n, regs in subleaves.items()]
    registers: dict[tuple[int, int], list[int]] = {(7, 0): [0, 0, 0, 0], (7, 1): [0, 0, 0, 0]}
    for name, on in bits.items():
        where = FEATURES[name]
        if on and name != "AVX":  # AVX is leaf 1's, below
            registers[(where.leaf, where.subleaf)][("eax", "ebx", "ecx", "edx").index(
                where.register)] |= 1 << where.bit
    if bits["AVX"]:
        rows[1] = (1, 0, 0, 0, 1 << 26 | 1 << 27 | 1 << 28, 0)
    for (leaf, sub), (eax, ebx, ecx, edx) in registers.items():
        rows.append((leaf, sub, eax, ebx, ecx, edx))
    return CpuidSet.from_rows(rows)


def _sized(layout: XsaveLayout, mask: int) -> list[Component]:
    return [c for c in layout.components.values()
            if 2 <= c.number < 63 and mask >> c.number & 1 and c.size]


def reference(rule: str, cpuid: CpuidSet, facts: Facts,
              reference_table: CpuidSet | None = None) -> int:
    """The components ``rule`` must name on ``cpuid`` (0: it passes), computed plainly;
    ``reference_table`` is the host's (or the restore destination's) table."""
    layout = XsaveLayout.from_cpuid(cpuid)
    xcr0, xss = cpuid.xcr0_supported, cpuid.xss_supported
    found = 0
    if rule == "XS0206":  # SDM Vol. 1 §13.4.2: [offset, offset + size), after byte 575
        regions = [(n, off, off + size) for n, size, off, ecx, _ in _sized(layout, xcr0)
                   if not ecx & 1]
        for n, start, end in regions:
            for m, other_start, other_end in regions:
                pair = 1 << n | 1 << m
                if m != n and start < other_end and other_start < end and not (
                        pair & APX and pair & MPX):
                    found |= pair
            if start < 576:
                found |= 1 << n
    elif rule == "XS0207":  # Linux before 6.16: offsets ascend with the number (APX aside)
        highest = 0
        for n, _, off, ecx, _ in _sized(layout, xcr0 & ~APX):
            if not ecx & 1:
                if off < highest:
                    found |= 1 << n
                highest = max(highest, off)
    elif rule == "XS0208":  # every enumerated component has a size
        mask = (xcr0 | xss) & ((1 << 63) - 1) & ~0x3
        found = mask & ~sum(1 << c[0] for c in _sized(layout, mask))
    elif rule == "XS0209":  # ECX[0] agrees with the mask that enumerates
        found = sum(1 << c[0] for c in _sized(layout, xcr0) if c[3] & 1)
        found |= sum(1 << c[0] for c in _sized(layout, xss) if not c[3] & 1)
    elif rule == "XS0211":  # ECX[31:3] and EDX reserved
        found = sum(1 << c[0] for c in _sized(layout, xcr0 | xss) if c[3] & ~7 or c[4])
    elif rule == "XS0213":  # a subleaf of a component neither mask enumerates is zero
        found = sum(1 << c.number for c in layout.components.values()
                    if 2 <= c.number < 63 and c.size and not (xcr0 | xss) >> c.number & 1)
    elif rule == "XS0214":  # check_xstate_against_struct() on what Linux enables
        linux = facts["linux_xcr0"]
        for n, size, *_ in _sized(layout, linux):
            expected = XFEATURES[n].size if n in XFEATURES else None
            if expected is not None and size != expected:
                found |= 1 << n
    elif rule in ("XS0407", "XS0703"):  # KVM's layout (the host's) or the destination's
        assert reference_table is not None
        other = XsaveLayout.from_cpuid(reference_table)
        mask = xcr0 | xss
        if rule == "XS0703":
            linux_xss = facts["linux_xss"]
            assert isinstance(linux_xss, int)
            linux_xcr0 = facts["linux_xcr0"]
            assert isinstance(linux_xcr0, int)
            mask = linux_xcr0 | linux_xss
        for n, size, off, ecx, _ in _sized(layout, mask):
            theirs = other.components.get(n)
            if theirs is not None and theirs.size and (
                    size != theirs.size or (ecx ^ theirs.ecx) & 2
                    or (not ecx & 1 and off != theirs.offset)):
                found |= 1 << n
    elif rule == "XS0301":  # xsave_cpuid_features[]: a set feature needs its state
        for x in XFEATURES.values():
            if x.feature and cpuid.feature(x.feature) and not xcr0 & x.mask:
                found |= x.mask
        if cpuid.feature("AVX10"):
            found |= 0xE4 & ~xcr0
    elif rule == "XS0302":  # an enumerated component whose feature is clear
        for x in XFEATURES.values():
            if x.feature and not cpuid.feature(x.feature) and xcr0 & x.mask:
                found |= x.mask
    return found


QUANTIFIED = ("XS0206", "XS0207", "XS0208", "XS0209", "XS0211", "XS0213", "XS0214", "XS0301",
              "XS0302", "XS0407", "XS0703")


@settings(max_examples=300, deadline=None)
@given(tables(), tables())
def test_quantified_rules_match_the_reference(cpuid: CpuidSet, host: CpuidSet) -> None:
    """Each rule fails exactly when the reference finds a component, and its message names
    exactly those components; ``host`` is the table before the template and the restore
    destination's."""
    subject = Subject("generated", cpuid, role="guest", template="t.json", base=host,
                      destination=Destination("there", host))
    report = evaluate(subject, CATALOGUE.select(QUANTIFIED))
    messages = {finding.rule: finding.message for finding in report.findings}
    facts = Facts(subject)
    for rule in QUANTIFIED:
        expected = reference(rule, cpuid, facts, host)
        assert (rule in messages) == bool(expected), (rule, hex(expected), messages.get(rule))
        if expected:
            assert format_mask(expected) in messages[rule], (rule, messages[rule])


def naive(node: Quantifier, facts: Facts) -> tuple[bool, int]:
    """Evaluate a quantifier one component at a time: (result, components it fails on)."""
    domain = compile_expression(node.domain)(facts) & ((1 << 63) - 1) & ~0x3
    body = compile_expression(node.body)
    components = facts.layout.components
    holding = failing = 0
    for number in range(2, 63):
        if domain >> number & 1:
            facts[bound_key(node.var)] = components.get(number) or bare(number)
            if body(facts):
                holding |= 1 << number
            else:
                failing |= 1 << number
    return (not failing) if node.kind == "all" else holding != 0, failing


@settings(max_examples=200, deadline=None)
@given(tables(), tables())
def test_mask_evaluation_is_component_by_component_evaluation(cpuid: CpuidSet,
                                                              host: CpuidSet) -> None:
    """The mask form of every shipped quantifier, and a failing rule's offenders (asked on
    their own, and right after the rule's test failed, which keeps them), are what asking
    each component in turn gives."""
    subject = Subject("generated", cpuid, role="guest", template="t.json", base=host,
                      destination=Destination("there", host))
    checked = 0
    for rule in CATALOGUE:
        assert rule.compiled.source is not None
        node = rule.compiled.source[0]
        for quantifier in (n for n in walk(node) if isinstance(n, Quantifier)):
            try:
                expected, _ = naive(quantifier, Facts(subject))
            except Missing:
                continue
            assert compile_expression(quantifier)(Facts(subject)) is expected, rule.id
            checked += 1
        failing = 0
        try:
            for quantifier in offending_quantifiers(node):
                failing |= naive(quantifier, Facts(subject))[1]
            facts = Facts(subject)
            got = {c.number for offenders in rule.compiled.offenders.values()
                   for c in offenders(facts)}
        except Missing:
            continue
        expected_numbers = {n for n in range(64) if failing >> n & 1}
        assert got == expected_numbers, rule.id
        facts = Facts(subject)
        try:
            passed = rule.compiled.test(facts)
        except Missing:
            continue
        if not passed:
            for _ in range(2):  # the kept mask, then (taken) the mask asked again
                got = {c.number for offenders in rule.compiled.offenders.values()
                       for c in offenders(facts)}
                assert got == expected_numbers, rule.id
    assert checked >= len(QUANTIFIED)
