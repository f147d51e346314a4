"""Layout facts: leaf 0xD's sizes, offsets and flags, all read from ``XsaveLayout``."""

from __future__ import annotations

from xstate_check.cpuid import CpuidSet
from xstate_check.facts.registry import (
    BitRef,
    Facts,
    Missing,
    component_sources,
    fact,
    function,
    mask_refs,
    reg,
)
from xstate_check.layout import XsaveLayout
from xstate_check.xfeatures import XFEATURES, by_name

__all__: list[str] = []

FP_SSE_MASK = 0x3
BIT63 = 1 << 63
_APX = by_name("apx").mask


def _enumerated(facts: Facts) -> tuple[XsaveLayout, int, int]:
    xcr0, xss = facts["xcr0"], facts["xss"]
    assert isinstance(xcr0, int) and isinstance(xss, int)
    return facts.layout, xcr0, xss


@fact("standard_sizes", "sizes", "every 0xD.0 EBX an OS could see: the standard-format size "
      "of some XCR0 made of enumerated xfeatures", (reg(0xD, 0, "eax"), reg(0xD, 0, "ebx")),
      reads=("subleaves",))
def _standard_sizes(facts: Facts) -> object:
    layout, xcr0, _ = _enumerated(facts)
    return layout.standard_sizes(xcr0)


@fact("overlapping", "mask", "enumerated user xfeatures whose standard-format regions overlap "
      "each other or the 576-byte legacy area and header (APX over MPX excepted)",
      component_sources,
      reads=("subleaves",))
def _overlapping(facts: Facts) -> object:
    layout, xcr0, _ = _enumerated(facts)
    return layout.overlapping(xcr0)


@fact("misordered", "mask", "enumerated user xfeatures whose standard offset is below that of "
      "a lower-numbered one (APX, which Linux before 6.16 does not know, left out)",
      component_sources,
      reads=("subleaves",))
def _misordered(facts: Facts) -> object:
    layout, xcr0, _ = _enumerated(facts)
    return layout.misordered(xcr0 & ~_APX)


@fact("unsized", "mask", "enumerated xfeatures (XCR0 or IA32_XSS) whose subleaf gives no size",
      component_sources,
      reads=("subleaves",))
def _unsized(facts: Facts) -> object:
    layout, xcr0, xss = _enumerated(facts)
    mask = (xcr0 | xss) & ~FP_SSE_MASK & ~BIT63
    return mask & ~sum(1 << c.number for c in layout.sized(mask))


@fact("kind_mismatch", "mask", "xfeatures enumerated in XCR0 whose subleaf says supervisor "
      "(ECX[0]=1), or enumerated in IA32_XSS whose subleaf says user", component_sources,
      reads=("subleaves",))
def _kind_mismatch(facts: Facts) -> object:
    layout, xcr0, xss = _enumerated(facts)
    return sum(1 << c.number for c in layout.sized(xcr0) if c.supervisor) | sum(
        1 << c.number for c in layout.sized(xss) if not c.supervisor
    )


@fact("reserved_flags", "mask", "enumerated xfeatures whose subleaf sets reserved bits "
      "(ECX[31:3] or EDX)", component_sources,
      reads=("subleaves",))
def _reserved_flags(facts: Facts) -> object:
    layout, xcr0, xss = _enumerated(facts)
    return sum(1 << c.number for c in layout.sized(xcr0 | xss) if c.ecx & ~0x7 or c.edx)


@fact("xfd_flagged", "mask", "xfeatures whose subleaf sets ECX[2] (XFD supported)",
      component_sources,
      reads=("subleaves",))
def _xfd_flagged(facts: Facts) -> object:
    return sum(1 << c.number for c in facts.layout.components.values() if c.size and c.xfd)


@fact("stale_components", "mask", "subleaves n >= 2 that enumerate a size although bit n is "
      "in neither 0xD.0 EDX:EAX nor 0xD.1 EDX:ECX", component_sources,
      reads=("subleaves",))
def _stale_components(facts: Facts) -> object:
    layout, xcr0, xss = _enumerated(facts)
    enumerated = xcr0 | xss
    return sum(1 << c.number for c in layout.components.values()
               if c.size and not enumerated >> c.number & 1)


@fact("size_mismatch", "mask", "enumerated xfeatures whose size differs from the architectural "
      "size (Linux's struct for it, checked by check_xstate_against_struct())",
      component_sources,
      reads=("subleaves",))
def _size_mismatch(facts: Facts) -> object:
    layout, xcr0, xss = _enumerated(facts)
    result = 0
    for component in layout.sized(xcr0 | xss):
        feature = XFEATURES.get(component.number)
        expected = feature.size if feature is not None else None
        if expected is not None and component.size != expected:
            result |= 1 << component.number
    return result


def _host_reference(facts: Facts) -> CpuidSet:
    """Return the table whose layout the guest's must equal: KVM's, the host's or the base."""
    host = facts.subject.host
    if host is not None:
        for table in (host.kvm_cpuid_permitted, host.kvm_cpuid, host.host_cpuid):
            if table is not None:
                return table
    if facts.subject.base is not None:
        return facts.subject.base
    raise Missing("neither host facts nor a base table to compare the layout with")


@fact("host_layout_mismatch", "mask", "enumerated xfeatures whose size, offset or alignment "
      "differ from the host's (KVM's table, the host CPUID, or the table before the template)",
      component_sources,
      reads=("subleaves",))
def _host_layout_mismatch(facts: Facts) -> object:
    layout, xcr0, xss = _enumerated(facts)
    reference = XsaveLayout.from_cpuid(_host_reference(facts)).components
    result = 0
    for ours in layout.sized(xcr0 | xss):
        theirs = reference.get(ours.number)
        if theirs is None or not theirs.size:
            continue  # the host lacks it: guest-within-kvm-supported speaks of that
        if not ours.same_place(theirs):
            result |= 1 << ours.number
    return result


def _layout_sources(facts: Facts) -> list[BitRef]:
    xcr0, xss = facts["xcr0"], facts["xss"]
    assert isinstance(xcr0, int) and isinstance(xss, int)
    return list(mask_refs(xcr0 | xss))


@function("std_size", ("mask",), "size", "standard-format size of an xfeature mask from this "
          "table's subleaves (KVM's xstate_required_size)", sources=_layout_sources,
          reads=("subleaves",))
def _std_size(facts: Facts, mask: int) -> int:
    return facts.layout.standard_size(mask)


@function("compacted_size", ("mask",), "size", "compacted-format size of an xfeature mask from "
          "this table's subleaves", sources=_layout_sources, reads=("subleaves",))
def _compacted_size(facts: Facts, mask: int) -> int:
    return facts.layout.compacted_size(mask)
