"""Linux-guest facts: what a Linux guest kernel does with the table
(arch/x86/kernel/fpu/xstate.c): the XCR0 it writes, what it drops, its buffer size."""

from __future__ import annotations

from xstate_check.cpuid import FEATURES
from xstate_check.facts.registry import XCR0_REFS, BitRef, Facts, component_sources, fact
from xstate_check.xfeatures import (
    LINUX_GATES,
    LINUX_SUPERVISOR_MASK,
    USER_DYNAMIC_MASK,
    XFEATURES,
    bits,
)

__all__ = ["linux_supervisor"]


def _gate_refs(facts: Facts, value: object) -> list[BitRef]:
    refs = list(XCR0_REFS)
    for name in sorted(set(LINUX_GATES.values()) | {"XFD"}):
        where = FEATURES[name]
        refs.append((where.leaf, where.subleaf, where.register, 1 << where.bit))
    return refs


#: Each CPUID gate of LINUX_GATES with the xfeatures it gates, as a mask.
_GATED = tuple((gate, sum(1 << number for number, each in LINUX_GATES.items() if each == gate))
               for gate in dict.fromkeys(LINUX_GATES.values()))


@fact("linux_xcr0", "mask", "the XCR0 a Linux guest writes: the enumerated user xfeatures whose "
      "CPUID gate is set (xsave_cpuid_features[]), without TILEDATA when XFD is absent",
      _gate_refs,
      reads=("subleaves",))
def _linux_xcr0(facts: Facts) -> object:
    xcr0 = facts["xcr0"]
    assert isinstance(xcr0, int)
    result = 0
    for gate, gated in _GATED:
        if xcr0 & gated and facts[gate]:
            result |= xcr0 & gated
    if not facts["XFD"]:
        result &= ~USER_DYNAMIC_MASK
    return result


@fact("linux_dropped", "mask", "enumerated XCR0 bits a Linux guest leaves out (xcr0 & "
      "~linux_xcr0)", _gate_refs,
      reads=("subleaves",))
def _linux_dropped(facts: Facts) -> object:
    xcr0, linux = facts["xcr0"], facts["linux_xcr0"]
    assert isinstance(xcr0, int) and isinstance(linux, int)
    return xcr0 & ~linux


def _default_size_refs(facts: Facts, value: object) -> list[BitRef]:
    refs = list(component_sources(facts, facts.get("linux_xcr0", 0) | facts.get("xss", 0)))
    for name in ("XSAVEC", "XSAVES", "ENQCMD", "SHSTK"):
        where = FEATURES[name]
        refs.append((where.leaf, where.subleaf, where.register, 1 << where.bit))
    return refs


@fact("linux_default_size", "size", "the size of a Linux guest's default (non-dynamic) XSAVE "
      "buffer, as init_xstate_size() computes it: compacted when XSAVEC or XSAVES is set "
      "(X86_FEATURE_XCOMPACTED), with the supervisor state the kernel keeps itself (PASID, "
      "CET user state) only with XSAVES; standard format otherwise", _default_size_refs,
      reads=("subleaves",))
def _linux_default_size(facts: Facts) -> object:
    layout = facts.subleaves
    linux = facts["linux_xcr0"]
    assert isinstance(linux, int)
    default = linux & ~USER_DYNAMIC_MASK
    if facts["XSAVES"]:
        xss = facts["xss"]
        assert isinstance(xss, int)
        default |= linux_supervisor(facts, xss)
    if facts["XSAVEC"] or facts["XSAVES"]:
        return layout.compacted_size(default)
    return layout.standard_size(default)


def linux_supervisor(facts: Facts, xss: int) -> int:
    """Return the supervisor xfeatures of ``xss`` a Linux guest keeps itself, their gates set."""
    return sum(1 << number for number in bits(xss & LINUX_SUPERVISOR_MASK)
               if facts[XFEATURES[number].gate or ""])
