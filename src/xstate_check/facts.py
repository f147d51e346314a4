"""Facts: the named values the rules read, computed lazily from one subject.

A rule names facts (``xcr0``, ``host.guest_permitted``), xfeature constants (``tilecfg``,
``avx512``), CPUID feature bits (``AMX_TILE``) and a few functions (``std_size(mask)``).
This module is the single table of those names: their kind (how a message shows them),
what they mean, how they are computed, and which CPUID bits they come from (so a finding
can point at the template line that set or cleared those bits).

A fact the subject lacks (no HostState, a dump without leaf 0xD subleaves) raises
``Missing``: the rule that reads it is *not applicable*, never a false finding.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any, Literal, NamedTuple

from xstate_check.cpuid import FEATURES, REGISTERS, CpuidSet, Registers
from xstate_check.errors import Location
from xstate_check.layout import XsaveLayout
from xstate_check.subject import Subject
from xstate_check.xfeatures import (
    AVX512_MASK,
    EXTRA_FEATURE_NEEDS,
    FEATURE_XSTATE,
    LINUX_GATES,
    LINUX_SUPERVISOR_MASK,
    MPX_MASK,
    SUPERVISOR_MASK,
    USER_DYNAMIC_MASK,
    XFEATURES,
    XTILE_MASK,
    bits,
    format_mask,
)

__all__ = [
    "CONSTANTS",
    "FACTS",
    "FUNCTIONS",
    "ITEM_FIELDS",
    "BitRef",
    "EntryItem",
    "FactSpec",
    "Facts",
    "FunctionSpec",
    "Kind",
    "Missing",
    "available_of",
    "format_value",
    "needs_of",
    "valid_xcr0",
]

#: How a value is typed in the rule language and shown in a message.
#: ``mask``: an xfeature mask (``0x602e7 (x87|sse|…)``); ``size``: bytes (``2696 (0xa88)``);
#: ``int``: a number shown in hex; ``items``: a list of entries a rule can walk with ``each``.
Kind = Literal["mask", "size", "int", "bool", "str", "version", "sizes", "items"]

#: (leaf, subleaf, register, bits): CPUID register bits a fact is computed from.
BitRef = tuple[int, int, str, int]

_ALL = 0xFFFF_FFFF
FP_SSE_MASK = 0x3
BIT63 = 1 << 63
KNOWN_MASK = sum(x.mask for x in XFEATURES.values())
USER_MASK = KNOWN_MASK & ~SUPERVISOR_MASK


class Missing(Exception):  # noqa: N818 - a signal that a fact is absent, not an error
    """Raised when a subject lacks a fact a rule reads: that rule is not applicable."""


class EntryItem(NamedTuple):
    """One CPUID entry a rule walks with ``each`` (``item.leaf``, ``item.subleaf``, …).

    ``detail`` is free text a list fact may give; ``hidden`` names the subleaves a KVM
    lookup no longer reaches because of this entry, and ``effect`` says what the guest reads
    instead (each empty where it does not apply).
    """

    leaf: int
    subleaf: int
    location: Location | None
    detail: str = ""
    hidden: str = ""
    effect: str = ""


#: The attributes an ``each`` rule can read from its ``item``, with their kinds.
ITEM_FIELDS: dict[str, Kind] = {"leaf": "int", "subleaf": "int", "detail": "str",
                                "hidden": "str", "effect": "str"}

SourceSpec = tuple[BitRef, ...] | Callable[["Facts", object], Iterable[BitRef]]


class FactSpec(NamedTuple):
    """One named fact: kind, meaning, how it is computed, which CPUID bits it reads."""

    name: str
    kind: Kind
    doc: str
    compute: Callable[[Facts], object]
    sources: SourceSpec = ()

    def bit_refs(self, facts: Facts, value: object) -> Iterable[BitRef]:
        """Return the CPUID bits this fact's value came from, on one subject."""
        if callable(self.sources):
            return self.sources(facts, value)
        return self.sources


class FunctionSpec(NamedTuple):
    """A function a rule can call: argument kinds, result kind, implementation."""

    name: str
    args: tuple[Kind, ...]
    kind: Kind
    doc: str
    call: Callable[..., object]
    sources: Callable[[Facts], Iterable[BitRef]] | None = None


class Facts(dict[str, Any]):
    """The facts of one subject: a dict that computes a missing name on first read."""

    __slots__ = ("_layout", "cpuid", "subject")

    def __init__(self, subject: Subject) -> None:
        self.subject = subject
        cpuid = self.cpuid = subject.cpuid
        self._layout: XsaveLayout | None = None
        # Every rule family reads XCR0; reading it here is cheaper than on first use.
        self["xcr0"] = cpuid.xcr0_supported

    def __missing__(self, name: str) -> object:
        value = FACTS[name].compute(self)
        self[name] = value
        return value

    def require_subleaves(self) -> None:
        """Raise Missing where the source holds leaf 0xD subleaf 0 only (libcpuid native)."""
        if not self.cpuid.leaf_0xd_complete:
            raise Missing("the source holds no leaf 0xD subleaves")

    @property
    def layout(self) -> XsaveLayout:
        """Return the table's leaf 0xD decoded; Missing where the source has no subleaves."""
        if self._layout is None:
            self.require_subleaves()
            self._layout = XsaveLayout.from_cpuid(self.cpuid)
        return self._layout


FACTS: dict[str, FactSpec] = {}


def _fact(name: str, kind: Kind, doc: str, sources: SourceSpec = ()) -> Callable[
    [Callable[[Facts], object]], Callable[[Facts], object]
]:
    def register(compute: Callable[[Facts], object]) -> Callable[[Facts], object]:
        FACTS[name] = FactSpec(name, kind, doc, compute, sources)
        return compute

    return register


def _reg(leaf: int, subleaf: int, register: str, mask: int = _ALL) -> BitRef:
    return (leaf, subleaf, register, mask)


_XCR0_REFS = (_reg(0xD, 0, "eax"), _reg(0xD, 0, "edx"))
_XSS_REFS = (_reg(0xD, 1, "ecx"), _reg(0xD, 1, "edx"))


@functools.lru_cache(maxsize=1024)
def _mask_refs(mask: int) -> tuple[BitRef, ...]:
    """Return the 0xD.0 / 0xD.1 enumeration bits and the subleaves of the xfeatures of mask."""
    refs: list[BitRef] = []
    for number in bits(mask):
        if SUPERVISOR_MASK >> number & 1:
            refs.append(_reg(0xD, 1, "ecx" if number < 32 else "edx", 1 << (number % 32)))
        else:
            refs.append(_reg(0xD, 0, "eax" if number < 32 else "edx", 1 << (number % 32)))
        if number >= 2:
            refs.extend(_reg(0xD, number, register) for register in ("eax", "ebx", "ecx"))
    return tuple(refs)


def _component_sources(facts: Facts, value: object) -> Iterable[BitRef]:
    return _mask_refs(value if isinstance(value, int) else 0)


# --- the subject -----------------------------------------------------------------------


@_fact("role", "str", "``guest`` (a table handed to KVM_SET_CPUID2) or ``cpu`` (a CPU's own view)")
def _role(facts: Facts) -> object:
    return facts.subject.role


@_fact("vendor", "str", "the vendor string of leaf 0 (``GenuineIntel``, ``AuthenticAMD``)",
       (_reg(0, 0, "ebx"), _reg(0, 0, "ecx"), _reg(0, 0, "edx")))
def _vendor(facts: Facts) -> object:
    return facts.cpuid.vendor


@_fact("has_template", "bool", "whether a template was applied to make this subject")
def _has_template(facts: Facts) -> object:
    return facts.subject.template is not None


@_fact("has_host", "bool", "whether host facts (a HostState) come with this subject")
def _has_host(facts: Facts) -> object:
    return facts.subject.host is not None


@_fact("max_basic_leaf", "int", "CPUID.0:EAX, the highest basic leaf", (_reg(0, 0, "eax"),))
def _max_basic_leaf(facts: Facts) -> object:
    return facts.cpuid.max_basic_leaf


# --- leaf 0xD as enumerated ------------------------------------------------------------


@_fact("xcr0", "mask", "0xD.0 EDX:EAX: the XCR0 bits enumerated, which a guest that enables "
       "every enumerated xfeature writes with XSETBV", _XCR0_REFS)
def _xcr0(facts: Facts) -> object:
    return facts.cpuid.xcr0_supported


@_fact("xss", "mask", "0xD.1 EDX:ECX: the IA32_XSS (supervisor) bits enumerated", _XSS_REFS)
def _xss(facts: Facts) -> object:
    facts.require_subleaves()
    return facts.cpuid.xss_supported


@_fact("size_current", "size", "0xD.0 EBX: standard-format size for the XCR0 now enabled",
       (_reg(0xD, 0, "ebx"),))
def _size_current(facts: Facts) -> object:
    return facts.cpuid.get(0xD, 0).ebx


@_fact("size_max", "size", "0xD.0 ECX: standard-format size for every enumerated XCR0 bit",
       (_reg(0xD, 0, "ecx"),))
def _size_max(facts: Facts) -> object:
    return facts.cpuid.get(0xD, 0).ecx


@_fact("compacted_size_current", "size", "0xD.1 EBX: compacted size of the XCR0 | IA32_XSS "
       "now enabled", (_reg(0xD, 1, "ebx"),))
def _compacted_size_current(facts: Facts) -> object:
    facts.require_subleaves()
    return facts.cpuid.get(0xD, 1).ebx


@_fact("xsave_features", "int", "0xD.1 EAX: XSAVEOPT, XSAVEC, XGETBV1, XSAVES, XFD (bits 0-4)",
       (_reg(0xD, 1, "eax"),))
def _xsave_features(facts: Facts) -> object:
    facts.require_subleaves()
    return facts.cpuid.get(0xD, 1).eax


@_fact("tiledata_size", "size", "0xD.0x12 EAX: the size of the TILEDATA component",
       (_reg(0xD, 18, "eax"),))
def _tiledata_size(facts: Facts) -> object:
    facts.require_subleaves()
    return facts.cpuid.get(0xD, 18).eax


@_fact("amx.palettes", "int", "0x1D.0 EAX: the highest AMX tile palette", (_reg(0x1D, 0, "eax"),))
def _amx_palettes(facts: Facts) -> object:
    return facts.cpuid.get(0x1D, 0).eax


@_fact("amx.bytes_per_tile", "size", "0x1D.1 EAX[31:16]: bytes per tile of palette 1",
       (_reg(0x1D, 1, "eax", 0xFFFF_0000),))
def _amx_bytes_per_tile(facts: Facts) -> object:
    return facts.cpuid.get(0x1D, 1).eax >> 16


@_fact("amx.max_names", "int", "0x1D.1 EBX[31:16]: tile registers (names) of palette 1",
       (_reg(0x1D, 1, "ebx", 0xFFFF_0000),))
def _amx_max_names(facts: Facts) -> object:
    return facts.cpuid.get(0x1D, 1).ebx >> 16


# --- the layout (needs the component subleaves) ---------------------------------------


def _enumerated(facts: Facts) -> tuple[XsaveLayout, int, int]:
    xcr0, xss = facts["xcr0"], facts["xss"]
    assert isinstance(xcr0, int) and isinstance(xss, int)
    return facts.layout, xcr0, xss


@_fact("standard_sizes", "sizes", "every 0xD.0 EBX an OS could see: the standard-format size "
       "of some XCR0 made of enumerated xfeatures", (_reg(0xD, 0, "eax"), _reg(0xD, 0, "ebx")))
def _standard_sizes(facts: Facts) -> object:
    layout, xcr0, _ = _enumerated(facts)
    return layout.standard_sizes(xcr0)


@_fact("overlapping", "mask", "enumerated user xfeatures whose standard-format regions overlap "
       "each other or the 576-byte legacy area and header (APX over MPX excepted)",
       _component_sources)
def _overlapping(facts: Facts) -> object:
    layout, xcr0, _ = _enumerated(facts)
    return layout.overlapping(xcr0)


@_fact("misordered", "mask", "enumerated user xfeatures whose standard offset is below that of "
       "a lower-numbered one (APX, which Linux before 6.16 does not know, left out)",
       _component_sources)
def _misordered(facts: Facts) -> object:
    layout, xcr0, _ = _enumerated(facts)
    return layout.misordered(xcr0 & ~XFEATURES[19].mask)


@_fact("unsized", "mask", "enumerated xfeatures (XCR0 or IA32_XSS) whose subleaf gives no size",
       _component_sources)
def _unsized(facts: Facts) -> object:
    layout, xcr0, xss = _enumerated(facts)
    mask = (xcr0 | xss) & ~FP_SSE_MASK & ~BIT63
    return mask & ~sum(1 << c.number for c in layout.sized(mask))


@_fact("kind_mismatch", "mask", "xfeatures enumerated in XCR0 whose subleaf says supervisor "
       "(ECX[0]=1), or enumerated in IA32_XSS whose subleaf says user", _component_sources)
def _kind_mismatch(facts: Facts) -> object:
    layout, xcr0, xss = _enumerated(facts)
    return sum(1 << c.number for c in layout.sized(xcr0) if c.supervisor) | sum(
        1 << c.number for c in layout.sized(xss) if not c.supervisor
    )


@_fact("reserved_flags", "mask", "enumerated xfeatures whose subleaf sets reserved bits "
       "(ECX[31:3] or EDX)", _component_sources)
def _reserved_flags(facts: Facts) -> object:
    layout, xcr0, xss = _enumerated(facts)
    return sum(1 << c.number for c in layout.sized(xcr0 | xss) if c.ecx & ~0x7 or c.edx)


@_fact("xfd_flagged", "mask", "xfeatures whose subleaf sets ECX[2] (XFD supported)",
       _component_sources)
def _xfd_flagged(facts: Facts) -> object:
    return sum(1 << c.number for c in facts.layout.components.values() if c.size and c.xfd)


@_fact("stale_components", "mask", "subleaves n >= 2 that enumerate a size although bit n is "
       "in neither 0xD.0 EDX:EAX nor 0xD.1 EDX:ECX", _component_sources)
def _stale_components(facts: Facts) -> object:
    layout, xcr0, xss = _enumerated(facts)
    enumerated = xcr0 | xss
    return sum(1 << c.number for c in layout.components.values()
               if c.size and not enumerated >> c.number & 1)


@_fact("size_mismatch", "mask", "enumerated xfeatures whose size differs from the architectural "
       "size (Linux's struct for it, checked by check_xstate_against_struct())",
       _component_sources)
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


@_fact("host_layout_mismatch", "mask", "enumerated xfeatures whose size, offset or alignment "
       "differ from the host's (KVM's table, the host CPUID, or the table before the template)",
       _component_sources)
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


# --- what a Linux guest does with it (arch/x86/kernel/fpu/xstate.c) ---------------------

def _gate_refs(facts: Facts, value: object) -> list[BitRef]:
    refs = list(_XCR0_REFS)
    for name in sorted(set(LINUX_GATES.values()) | {"XFD"}):
        where = FEATURES[name]
        refs.append((where.leaf, where.subleaf, where.register, 1 << where.bit))
    return refs


@_fact("linux_xcr0", "mask", "the XCR0 a Linux guest writes: the enumerated user xfeatures whose "
       "CPUID gate is set (xsave_cpuid_features[]), without TILEDATA when XFD is absent",
       _gate_refs)
def _linux_xcr0(facts: Facts) -> object:
    xcr0 = facts["xcr0"]
    assert isinstance(xcr0, int)
    result = 0
    for number, gate in LINUX_GATES.items():
        if xcr0 >> number & 1 and facts[gate]:
            result |= 1 << number
    if not facts["XFD"]:
        result &= ~USER_DYNAMIC_MASK
    return result


@_fact("linux_dropped", "mask", "enumerated XCR0 bits a Linux guest leaves out (xcr0 & "
       "~linux_xcr0)", _gate_refs)
def _linux_dropped(facts: Facts) -> object:
    xcr0, linux = facts["xcr0"], facts["linux_xcr0"]
    assert isinstance(xcr0, int) and isinstance(linux, int)
    return xcr0 & ~linux


def _default_size_refs(facts: Facts, value: object) -> list[BitRef]:
    refs = list(_component_sources(facts, facts.get("linux_xcr0", 0) | facts.get("xss", 0)))
    for name in ("XSAVEC", "XSAVES", "ENQCMD", "SHSTK"):
        where = FEATURES[name]
        refs.append((where.leaf, where.subleaf, where.register, 1 << where.bit))
    return refs


@_fact("linux_default_size", "size", "the size of a Linux guest's default (non-dynamic) XSAVE "
       "buffer, as init_xstate_size() computes it: compacted when XSAVEC or XSAVES is set "
       "(X86_FEATURE_XCOMPACTED), with the supervisor state the kernel keeps itself (PASID, "
       "CET user state) only with XSAVES; standard format otherwise", _default_size_refs)
def _linux_default_size(facts: Facts) -> object:
    layout = facts.layout
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


# --- CPUID feature bits against the xfeatures they need ----------------------------------

#: Feature -> the xfeatures it needs in 0xD.0: the xfeature table's ``feature`` column and
#: the features that need another's state (AVX10).
_FEATURE_XSTATE: dict[str, int] = {**FEATURE_XSTATE, **EXTRA_FEATURE_NEEDS}


def _feature_refs(facts: Facts, value: object) -> list[BitRef]:
    refs = list(_XCR0_REFS)
    for name in _FEATURE_XSTATE:
        where = FEATURES[name]
        refs.append((where.leaf, where.subleaf, where.register, 1 << where.bit))
    return refs


def _features_lacking_xstate(facts: Facts) -> list[tuple[str, int]]:
    xcr0 = facts["xcr0"]
    assert isinstance(xcr0, int)
    return [(name, need & ~xcr0) for name, need in _FEATURE_XSTATE.items()
            if facts[name] and need & ~xcr0]


@_fact("feature_without_xstate", "mask", "xfeatures a set CPUID feature needs (AVX: ymm, MPX, "
       "AVX512F, PKU: pkru, AMX_TILE: TILECFG|TILEDATA, APX, AVX10: ymm and AVX-512) that 0xD.0 "
       "lacks", _feature_refs)
def _feature_without_xstate(facts: Facts) -> object:
    return sum(missing for _, missing in _features_lacking_xstate(facts))


@_fact("feature_without_xstate_names", "str", "the CPUID features of feature_without_xstate, "
       "each with the xfeatures it lacks", _feature_refs)
def _feature_without_xstate_names(facts: Facts) -> object:
    return ", ".join(f"{name} (lacks {format_mask(missing)})"
                     for name, missing in _features_lacking_xstate(facts)) or "none"


@_fact("xstate_without_feature", "mask", "xfeatures enumerated in 0xD.0 whose CPUID feature "
       "(AVX, MPX, AVX512F, PKU, AMX_TILE, APX) is clear", _feature_refs)
def _xstate_without_feature(facts: Facts) -> object:
    xcr0 = facts["xcr0"]
    assert isinstance(xcr0, int)
    result = 0
    for name, need in _FEATURE_XSTATE.items():
        if name in FEATURE_XSTATE and not facts[name]:  # AVX-512 state is gated on AVX512F
            result |= need & xcr0
    return result


def _feature_fact(name: str) -> None:
    where = FEATURES[name]
    key = (where.leaf, where.subleaf)
    index = ("eax", "ebx", "ecx", "edx").index(where.register)
    shift = where.bit

    def compute(facts: Facts) -> object:
        if where.leaf == 0xD:
            facts.require_subleaves()
        regs = facts.cpuid.entries.get(key)
        return regs is not None and bool(regs[index] >> shift & 1)

    FACTS[name] = FactSpec(
        name, "bool",
        f"CPUID.({where.leaf:#x},{where.subleaf}):{where.register.upper()}[{where.bit}] {name}",
        compute, ((where.leaf, where.subleaf, where.register, 1 << where.bit),),
    )


for _name in FEATURES:
    _feature_fact(_name)


# --- the template and the table before it ----------------------------------------------


def _entry_location(cpuid: CpuidSet, leaf: int, subleaf: int) -> Location | None:
    found = [where for register in (*REGISTERS, "flags")
             for _, where in cpuid.provenance.pins(leaf, subleaf, register)]
    return min(found) if found else None


@_fact("missing_entries", "items", "the CPUID entries a template modifies that the base table "
       "lacks (Firecracker refuses to boot)")
def _missing_entries(facts: Facts) -> object:
    return tuple(EntryItem(entry.leaf, entry.subleaf, entry.location)
                 for entry in facts.subject.missing_entries)


@_fact("missing_entries_first", "items", "the first CPUID entry (by template line) that a "
       "template modifies and the base table lacks, as one item: the pair's one finding")
def _missing_entries_first(facts: Facts) -> object:
    entries: tuple[EntryItem, ...] = facts["missing_entries"]
    located = [(entry.location.line, entry.location.column, index)
               for index, entry in enumerate(entries) if entry.location is not None]
    return (entries[min(located)[2]],) if located else entries[:1]


@_fact("missing_entry_list", "str", "every CPUID entry a template modifies that the base table "
       "lacks, as ``leaf 0x.. subleaf 0x..`` text")
def _missing_entry_list(facts: Facts) -> object:
    entries = facts["missing_entries"]
    return ", ".join(f"{entry.leaf:#x}.{entry.subleaf:#x}" for entry in entries) or "none"


def _normalized_flags(facts: Facts, leaf: int, subleaf: int) -> bool:
    """Whether Firecracker's CPUID normalization, run after the template, sets this entry's
    flags again: every 0xB subleaf, the 0x1F subleaves copied from 0xB (Intel) and the
    0x8000001D cache subleaves re-read from the host (AMD) get SIGNIFICANT_INDEX."""
    if facts.subject.template is None:
        return False
    cpuid = facts.cpuid
    if leaf == 0xB:
        return True
    if leaf == 0x1F:
        return cpuid.vendor == "GenuineIntel" and (0xB, subleaf) in cpuid.entries
    if leaf == 0x8000001D:
        return cpuid.vendor == "AuthenticAMD" and bool(cpuid.get(leaf, subleaf).eax & 0x1F)
    return False


def _subleaf_list(subleaves: Iterable[int]) -> str:
    return ", ".join(f"{subleaf:#x}" for subleaf in subleaves)


def _feature_changes(cpuid: CpuidSet, leaf: int, subleaf: int, hidden: tuple[int, ...]) -> str:
    """Name the feature bits of the hidden subleaves that read differently (leaf 7)."""
    shadow = cpuid.get(leaf, subleaf)
    gained: list[str] = []
    lost: list[str] = []
    for name, where in FEATURES.items():
        if where.leaf != leaf or where.subleaf not in hidden:
            continue
        index = REGISTERS.index(where.register)
        was = cpuid.get(leaf, where.subleaf)[index] >> where.bit & 1
        now = shadow[index] >> where.bit & 1
        if now and not was:
            gained.append(name)
        elif was and not now:
            lost.append(name)
    parts = []
    if gained:
        parts.append(f"it sees {', '.join(gained)}, which the table does not give it")
    if lost:
        parts.append(f"it loses {', '.join(lost)}")
    return "; ".join(parts)


def _shadow_effect(cpuid: CpuidSet, leaf: int, subleaf: int, hidden: tuple[int, ...]) -> str:
    """Say what a guest reads for the subleaves an entry without SIGNIFICANT_INDEX hides."""
    reads = (f"the guest reads leaf {leaf:#x} subleaves {_subleaf_list(hidden)} (and any "
             f"higher one) as subleaf {subleaf:#x}")
    if leaf == 0xD:
        shadow = cpuid.get(leaf, subleaf)
        amx = cpuid.feature("AMX_TILE") and cpuid.xcr0_supported & XTILE_MASK == XTILE_MASK
        if subleaf == 0 and amx and not shadow.eax >> 4 & 1:
            return (f"{reads}: XFD (0xD.1 EAX[4]) reads as 0, so a Linux guest drops TILEDATA, "
                    "keeps TILECFG and its XSETBV takes #GP at boot; the component sizes and "
                    "offsets it reads are those of another subleaf too")
        what = ("XSAVE features, IA32_XSS bits, component sizes and offsets"
                if subleaf == 0 else "component sizes and offsets")
        return (f"{reads}: its {what} are those of another subleaf, so a Linux guest finds "
                "sizes that disagree with its own and disables XSAVE, losing AVX and every "
                "later extension")
    if leaf in (0x4, 0x8000001D):
        if cpuid.get(leaf, subleaf).eax & 0x1F:
            return (f"{reads}: every later cache subleaf reads as a cache, never as type 0, "
                    "so Linux's find_num_cache_leaves() never ends its walk and the guest "
                    "hangs at boot")
        return f"{reads}: the caches those subleaves describe disappear from the guest"
    if leaf == 0x7:
        changes = _feature_changes(cpuid, leaf, subleaf, hidden)
        return f"{reads}: {changes}" if changes else reads
    if leaf == 0x1D:
        return (f"{reads}: the AMX tile palette Linux checks against TILEDATA's size "
                "(check_xtile_data_against_struct()) and programs size their tiles from is "
                "the wrong one")
    return reads


@_fact("flags_shadowing", "items", "entries without SIGNIFICANT_INDEX that KVM returns for later "
       "subleaves of their leaf (cpuid_entry2_find() takes the first entry of the function "
       "lacking the flag), where those subleaves hold other values")
def _flags_shadowing(facts: Facts) -> object:
    cpuid = facts.cpuid
    items = []
    seen: set[int] = set()
    # The table's subleaves by leaf, gathered once: a leaf of one entry hides nothing.
    by_leaf: dict[int, list[tuple[int, Registers]]] = {}
    for (each_leaf, each_subleaf), each_regs in cpuid.entries.items():
        by_leaf.setdefault(each_leaf, []).append((each_subleaf, each_regs))
    for (leaf, subleaf), flags in sorted(cpuid.flags.items()):
        if flags & 1 or leaf in seen or len(by_leaf.get(leaf, ())) < 2 \
                or (leaf, subleaf) not in cpuid.entries:
            continue
        if _normalized_flags(facts, leaf, subleaf):
            continue
        # Entries reach KVM sorted by (leaf, subleaf): only the first entry of a leaf that
        # lacks the flag is ever returned for a subleaf that is not its own.
        seen.add(leaf)
        regs = cpuid.entries[(leaf, subleaf)]
        hidden = tuple(other for other, other_regs in by_leaf[leaf]
                       if other > subleaf and other_regs != regs)
        if hidden:
            items.append(EntryItem(leaf, subleaf, _entry_location(cpuid, leaf, subleaf),
                                   hidden=_subleaf_list(hidden),
                                   effect=_shadow_effect(cpuid, leaf, subleaf, hidden)))
    return tuple(items)


@_fact("flags_cleared", "items", "entries whose KVM flags a template changed from "
       "SIGNIFICANT_INDEX to not, where that hides no other subleaf (no later subleaf with "
       "other values, or Firecracker's normalization sets the flag again)")
def _flags_cleared(facts: Facts) -> object:
    base = facts.subject.base
    if base is None:
        return ()
    cpuid = facts.cpuid
    shadowing = facts["flags_shadowing"]
    assert isinstance(shadowing, tuple)
    reported = {item.leaf for item in shadowing}
    items = []
    for (leaf, subleaf), flags in sorted(cpuid.flags.items()):
        if (not flags & 1 and base.flags.get((leaf, subleaf), 0) & 1
                and leaf not in reported):
            effect = ("Firecracker's CPUID normalization sets the flag again"
                      if _normalized_flags(facts, leaf, subleaf) else
                      "the leaf has no later subleaf with other values")
            items.append(EntryItem(leaf, subleaf, _entry_location(cpuid, leaf, subleaf),
                                   effect=effect))
    return tuple(items)


def _base(facts: Facts) -> CpuidSet:
    if facts.subject.base is None:
        raise Missing("no template, so no table before it")
    return facts.subject.base


@_fact("base.xcr0", "mask", "0xD.0 EDX:EAX of the table before the template", _XCR0_REFS)
def _base_xcr0(facts: Facts) -> object:
    return _base(facts).xcr0_supported


@_fact("base.xss", "mask", "0xD.1 EDX:ECX of the table before the template", _XSS_REFS)
def _base_xss(facts: Facts) -> object:
    return _base(facts).xss_supported


# --- the host (HostState) ---------------------------------------------------------------


def _host_field(facts: Facts, field: str) -> object:
    host = facts.subject.host
    if host is None:
        raise Missing("no host facts")
    value = getattr(host, field)
    if value is None:
        raise Missing(f"the host probe could not read {field}")
    return value


def _host_fact(name: str, field: str, doc: str) -> None:
    FACTS[name] = FactSpec(name, "mask", doc, lambda facts: _host_field(facts, field))


_host_fact("host.supported", "supported", "ARCH_GET_XCOMP_SUPP: what the host kernel can enable "
           "for a process")
_host_fact("host.permitted", "permitted", "ARCH_GET_XCOMP_PERM: this process's permission")
_host_fact("host.guest_permitted", "guest_permitted", "ARCH_GET_XCOMP_GUEST_PERM: the guest "
           "(vCPU) permission of the probing process")
_host_fact("host.xcr0", "xcr0", "XGETBV(0) in the probing process")
_host_fact("host.kvm_guest_supported", "kvm_guest_supported", "KVM_X86_XCOMP_GUEST_SUPP: KVM's "
           "supported XCR0 before the permission filter")


@_fact("host.cpuid_xcr0", "mask", "0xD.0 EDX:EAX of the host's own CPUID")
def _host_cpuid_xcr0(facts: Facts) -> object:
    table = _host_field(facts, "host_cpuid")
    assert isinstance(table, CpuidSet)
    return table.xcr0_supported


@_fact("host.kernel", "version", "the host kernel's (major, minor) version")
def _host_kernel(facts: Facts) -> object:
    host = facts.subject.host
    if host is None or host.kernel_version == (0, 0):
        raise Missing("no host kernel version")
    return host.kernel_version


@_fact("host.permission_requested", "bool", "whether the probe asked for guest permission "
       "(ARCH_REQ_XCOMP_GUEST_PERM) before reading KVM")
def _host_permission_requested(facts: Facts) -> object:
    return bool(_host_field(facts, "permission_requested"))


@_fact("kvm.cpuid_xcr0", "mask", "0xD.0 EDX:EAX of KVM_GET_SUPPORTED_CPUID as read with the "
       "guest permission the probing process had")
def _kvm_cpuid_xcr0(facts: Facts) -> object:
    table = _host_field(facts, "kvm_cpuid")
    assert isinstance(table, CpuidSet)
    return table.xcr0_supported


@_fact("kvm.xcr0", "mask", "the XCR0 bits KVM supports for a guest whose VMM holds the guest "
       "permission: KVM_X86_XCOMP_GUEST_SUPP, else 0xD.0 of KVM_GET_SUPPORTED_CPUID (after the "
       "permission request where it was made)")
def _kvm_xcr0(facts: Facts) -> object:
    host = facts.subject.host
    if host is None:
        raise Missing("no host facts")
    if host.kvm_guest_supported is not None:
        return host.kvm_guest_supported
    for table in (host.kvm_cpuid_permitted, host.kvm_cpuid):
        if table is not None:
            return table.xcr0_supported
    raise Missing("KVM's supported XCR0 was not read")


@_fact("kvm.xss", "mask", "0xD.1 EDX:ECX of KVM_GET_SUPPORTED_CPUID: the IA32_XSS bits KVM "
       "supports")
def _kvm_xss(facts: Facts) -> object:
    host = facts.subject.host
    if host is None:
        raise Missing("no host facts")
    for table in (host.kvm_cpuid_permitted, host.kvm_cpuid):
        if table is not None:
            return table.xss_supported
    raise Missing("KVM's supported CPUID was not read")


# --- functions ---------------------------------------------------------------------------


def valid_xcr0(mask: int) -> bool:
    """Return whether XSETBV accepts ``mask`` (SDM Vol. 1 §13.3, KVM's __kvm_set_xcr())."""
    if not mask & 1 or mask & (SUPERVISOR_MASK | BIT63):
        return False
    if mask & 0x4 and not mask & 0x2:
        return False
    if mask & MPX_MASK not in (0, MPX_MASK):
        return False
    if mask & AVX512_MASK and mask & (AVX512_MASK | 0x4) != AVX512_MASK | 0x4:
        return False
    if mask & XTILE_MASK not in (0, XTILE_MASK):
        return False
    return not (mask >> 19 & 1 and mask & MPX_MASK)


def _std_size(facts: Facts, mask: int) -> int:
    return facts.layout.standard_size(mask)


def _compacted_size(facts: Facts, mask: int) -> int:
    return facts.layout.compacted_size(mask)


def _layout_sources(facts: Facts) -> Iterable[BitRef]:
    xcr0, xss = facts["xcr0"], facts["xss"]
    assert isinstance(xcr0, int) and isinstance(xss, int)
    return _mask_refs(xcr0 | xss)


FUNCTIONS: dict[str, FunctionSpec] = {
    spec.name: spec
    for spec in (
        FunctionSpec("std_size", ("mask",), "size", "standard-format size of an xfeature mask "
                     "from this table's subleaves (KVM's xstate_required_size)", _std_size,
                     _layout_sources),
        FunctionSpec("compacted_size", ("mask",), "size", "compacted-format size of an xfeature "
                     "mask from this table's subleaves", _compacted_size, _layout_sources),
        FunctionSpec("valid_xcr0", ("mask",), "bool", "whether XSETBV accepts the mask "
                     "(x87, YMM needs SSE, MPX pair, AVX-512 triple with YMM, AMX pair, no "
                     "supervisor bits, no APX with MPX)", lambda facts, mask: valid_xcr0(mask)),
        FunctionSpec("popcount", ("int",), "int", "the number of bits set",
                     lambda facts, value: bin(value).count("1")),
    )
}

#: Named xfeature masks: every xfeature by name, and the groups the rules speak of.
CONSTANTS: dict[str, int] = {
    **{x.name: x.mask for x in XFEATURES.values()},
    "fp_sse": FP_SSE_MASK,
    "mpx": MPX_MASK,
    "avx512": AVX512_MASK,
    "xtile": XTILE_MASK,
    "dynamic": USER_DYNAMIC_MASK,
    "supervisor": SUPERVISOR_MASK,
    "user": USER_MASK,
    "known": KNOWN_MASK,
}

# --- what a fact needs of the subject ------------------------------------------------------

#: Things a subject may lack, as bits: evaluation skips a rule whose facts need one of them
#: (the rule is not applicable) without computing anything.
NEEDS_HOST, NEEDS_BASE, NEEDS_SUBLEAVES = 1, 2, 4

_SUBLEAF_FACTS = frozenset({
    "xss", "compacted_size_current", "xsave_features", "tiledata_size", "standard_sizes",
    "overlapping", "misordered", "unsized", "kind_mismatch", "reserved_flags", "xfd_flagged",
    "stale_components", "size_mismatch", "host_layout_mismatch", "linux_xcr0",
    "linux_dropped", "linux_default_size",
    *(name for name, where in FEATURES.items() if where.leaf == 0xD),
})
_SUBLEAF_FUNCTIONS = frozenset({"std_size", "compacted_size"})


def needs_of(facts_read: Iterable[str], functions_read: Iterable[str] = ()) -> int:
    """Return the NEEDS_* bits of a set of facts and functions."""
    needs = 0
    for name in facts_read:
        if name.startswith(("host.", "kvm.")):
            needs |= NEEDS_HOST
        elif name.startswith("base."):
            needs |= NEEDS_BASE
        if name in _SUBLEAF_FACTS:
            needs |= NEEDS_SUBLEAVES
    if any(name in _SUBLEAF_FUNCTIONS for name in functions_read):
        needs |= NEEDS_SUBLEAVES
    return needs


def available_of(subject: Subject) -> int:
    """Return the NEEDS_* bits a subject can satisfy."""
    available = 0
    if subject.host is not None:
        available |= NEEDS_HOST
    if subject.base is not None:
        available |= NEEDS_BASE
    if subject.cpuid.leaf_0xd_complete:
        available |= NEEDS_SUBLEAVES
    return available


_CLASHES = (set(CONSTANTS) & set(FACTS)) | (set(CONSTANTS) & set(FUNCTIONS)) | (
    set(FACTS) & set(FUNCTIONS)
)
assert not _CLASHES, f"names used twice in the rule language: {sorted(_CLASHES)}"


# --- showing values in messages -----------------------------------------------------------


def format_value(value: object, kind: Kind) -> str:
    """Return a value as a message shows it: masks with names, sizes in bytes and hex."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if kind == "mask" and isinstance(value, int):
        return format_mask(value)
    if kind == "size" and isinstance(value, int):
        return f"{value} ({value:#x})"
    if kind == "sizes" and isinstance(value, tuple):
        return ", ".join(f"{size} ({size:#x})" for size in value)
    if kind == "version" and isinstance(value, tuple):
        return ".".join(str(part) for part in value)
    if kind == "int" and isinstance(value, int):
        return f"{value:#x}"
    if isinstance(value, int):
        return str(value)
    return str(value)


# --- snapshot restore: the dest.* facts live in their own module ------------------------------
from xstate_check import restore_facts as _restore_facts  # noqa: E402,F401  (registers them)
