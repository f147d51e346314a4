"""One layout engine: XsaveLayout, the rules and ``decode`` agree on generated leaf 0xD tables.

The reference here is a line-by-line transliteration of KVM's xstate_required_size()
(arch/x86/kvm/cpuid.c), independent of the code under test. Tables are generated, so they
hold what real CPUs never enumerate: components of size 0 with ECX[1] set, offsets inside
the legacy area, supervisor bits in XCR0.
"""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from xstate_check.cpuid import CpuidSet
from xstate_check.engine import evaluate, load_catalogue
from xstate_check.engine.compiler import compile_expression
from xstate_check.engine.loader import language_names
from xstate_check.engine.parser import parse_expression
from xstate_check.facts import Facts
from xstate_check.formats.decode import decode_json
from xstate_check.layout import XsaveLayout
from xstate_check.subject import Subject

NAMES = language_names()
CATALOGUE = load_catalogue()


def kvm_required_size(table: CpuidSet, xstate_bv: int, compacted: bool) -> int:
    """KVM's xstate_required_size(), reading the subleaves of ``table``."""
    ret = 512 + 64  # XSAVE_HDR_SIZE + XSAVE_HDR_OFFSET
    xstate_bv &= ~0x3  # XFEATURE_MASK_EXTEND
    feature_bit = 0
    while xstate_bv:
        if xstate_bv & 1:
            eax, ebx, ecx, _ = table.get(0xD, feature_bit)
            # ECX[1]: 64B alignment in compacted form
            aligned = (ret + 63) // 64 * 64 if ecx & 0x2 else ret
            offset = aligned if compacted else ebx
            ret = max(ret, offset + eax)
        xstate_bv >>= 1
        feature_bit += 1
    return ret


def rule_value(source: str, subject: Subject) -> object:
    """Evaluate an expression of the rule language on ``subject``."""
    node = parse_expression(source, NAMES.__getitem__, NAMES)
    return compile_expression(node)(Facts(subject))


@st.composite
def leaf_0xd(draw: st.DrawFn) -> CpuidSet:
    """A cpu table whose leaf 0xD enumerates a random set of components, sized or not."""
    numbers = draw(st.sets(st.integers(2, 19), max_size=8))
    xss_numbers = draw(st.sets(st.integers(8, 16), max_size=3))
    rows = [(0, 0, 0xD, 0, 0, 0), (1, 0, 0, 0, 1 << 26, 0), (7, 0, 0, 0, 0, 0)]
    xcr0 = 0x3 | sum(1 << n for n in numbers)
    xss = sum(1 << n for n in xss_numbers)
    for number in sorted(numbers | xss_numbers):
        size = draw(st.sampled_from((0, 0, 8, 16, 24, 64, 128, 256, 512, 1024, 8192)))
        offset = draw(st.integers(0, 0x3000)) if draw(st.booleans()) else 0
        flags = draw(st.integers(0, 7))
        rows.append((0xD, number, size, offset, flags, 0))
    rows.append((0xD, 0, xcr0, 0, 0, 0))
    rows.append((0xD, 1, 0xB, 0, xss, 0))  # XSAVEOPT, XSAVEC, XSAVES
    return CpuidSet.from_rows(rows)


@settings(max_examples=200, deadline=None)
@given(leaf_0xd(), st.integers(0, (1 << 20) - 1))
def test_layout_and_rules_compute_kvm_sizes(table: CpuidSet, mask: int) -> None:
    """XsaveLayout, std_size() and compacted_size() in rules all give KVM's sizes."""
    layout = XsaveLayout.from_cpuid(table)
    subject = Subject("generated", table, role="cpu")
    # The standard format holds user state only: XCR0 never holds a bit whose subleaf says
    # supervisor (ECX[0]), so KVM never sizes one.
    user = sum(1 << n for n in range(2, 20) if not table.get(0xD, n).ecx & 1) | 0x3
    for bits_ in (mask, layout.xcr0_supported, layout.xcr0_supported | layout.xss_supported):
        standard = kvm_required_size(table, bits_ & user, compacted=False)
        compacted = kvm_required_size(table, bits_, compacted=True)
        assert layout.standard_size(bits_) == standard
        assert layout.compacted_size(bits_) == compacted
        assert rule_value(f"std_size({bits_:#x})", subject) == standard
        assert rule_value(f"compacted_size({bits_:#x})", subject) == compacted
    # Every EBX some XCR0 of enumerated xfeatures gives is in standard_sizes, and only those.
    xcr0 = layout.xcr0_supported & user
    subsets: set[int] = set()
    submask = xcr0
    while True:  # every submask of xcr0
        subsets.add(kvm_required_size(table, submask, compacted=False))
        if not submask:
            break
        submask = (submask - 1) & xcr0
    standard_sizes = rule_value("standard_sizes", subject)
    assert isinstance(standard_sizes, tuple) and set(standard_sizes) == subsets


def findings(table: CpuidSet, rule: str, *, template: bool = False) -> list[str]:
    """Return the messages of one catalogue rule on a cpu (or templated guest) subject."""
    subject = Subject("generated", table, role="guest" if template else "cpu",
                      template="t.json" if template else None, base=table if template else None)
    report = evaluate(subject, CATALOGUE.select([rule]))
    return [f.message for f in report.findings if f.rule == rule]


@settings(max_examples=100, deadline=None)
@given(leaf_0xd())
def test_decode_and_check_report_the_same_sizes(table: CpuidSet) -> None:
    """The sizes decode shows are the sizes check's findings name, on generated tables."""
    layout = XsaveLayout.from_cpuid(table)
    sizes = json.loads(decode_json(table, layout, title="generated"))["sizes"]
    standard, compacted = sizes["computed_standard"], sizes["computed_compacted"]
    # xsave-max-size-covers names std_size(xcr0) when ECX is below it.
    short = table.with_registers(0xD, 0, ecx=standard - 1)
    assert any(message.endswith(f"needs {standard} ({standard:#x})")
               for message in findings(short, "XS0202"))
    assert not findings(table.with_registers(0xD, 0, ecx=standard), "XS0202")
    # compacted-size-consistent bounds 0xD.1 EBX by compacted_size(xcr0 | xss).
    assert not findings(table.with_registers(0xD, 1, ebx=compacted), "XS0205")
    over = findings(table.with_registers(0xD, 1, ebx=compacted + 1), "XS0205")
    assert any(f".. {compacted} ({compacted:#x})" in message for message in over)


def test_unsized_aligned_component_aligns_the_compacted_format() -> None:
    """TILECFG with size 0 and ECX[1] set still aligns: 896 bytes, as KVM computes, everywhere.

    XCR0 0x20207: 576 + YMM 256 + PKRU 8 = 840, then TILECFG starts at the next 64-byte
    boundary (xstate_required_size(): ``offset = (ecx & 0x2) ? ALIGN(ret, 64) : ret``).
    """
    rows = [(0, 0, 0xD, 0, 0, 0), (1, 0, 0, 0, 1 << 26, 0),
            (0xD, 0, 0x20207, 0x340, 0x340, 0), (0xD, 1, 0xB, 896, 0, 0),
            (0xD, 2, 256, 576, 0, 0), (0xD, 9, 8, 832, 0, 0), (0xD, 17, 0, 0, 2, 0)]
    table = CpuidSet.from_rows(rows)
    layout = XsaveLayout.from_cpuid(table)
    assert layout.compacted_size(0x20207) == kvm_required_size(table, 0x20207, True) == 896
    assert rule_value("compacted_size(xcr0 | xss)", Subject("t", table, role="cpu")) == 896
    sizes = json.loads(decode_json(table, layout, title="t"))["sizes"]
    assert sizes["computed_compacted"] == 896
    assert not findings(table, "XS0205")  # 0xD.1 EBX = 896 is within 576 .. 896
    # The component is enumerated without a size: the guest-table rule names it.
    report = evaluate(Subject("t", table, role="guest"), CATALOGUE.select(["XS0208"]))
    assert [f.message for f in report.findings] == [
        "the guest's table enumerates 0x20000 (tilecfg) but its 0xD subleaves give no size"]
