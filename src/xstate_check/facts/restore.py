"""Facts of a snapshot restore: the guest's saved state against the destination's KVM.

A subject with a ``destination`` (``Subject.destination``) is a guest snapshotted where its
table came from and restored on another host. The facts here read both sides: the guest's
(``linux_xss``) and the destination's, prefixed ``dest.``. On a subject without a
destination every ``dest.`` fact is missing, so the ``restore`` rules are not applicable.

What the destination does with the snapshot (Firecracker's ``KvmVcpu::restore_state``, in
this order): KVM_SET_CPUID2 with the saved guest table, KVM_SET_XSAVE with the saved uABI
buffer, KVM_SET_XCRS with the saved XCR0, KVM_SET_MSRS with the saved MSRs.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from xstate_check.cpuid import FEATURES, CpuidSet, Registers
from xstate_check.errors import Location
from xstate_check.facts.host import kvm_supported_xcr0
from xstate_check.facts.linux import linux_supervisor
from xstate_check.facts.registry import EntryItem, Facts, Missing, fact
from xstate_check.layout import XsaveLayout
from xstate_check.xfeatures import bits

if TYPE_CHECKING:
    from xstate_check.subject import Destination

__all__ = ["VIEW_FEATURES", "VIEW_LEAVES", "dest_layout", "linux_xss", "permitted_table",
           "view_differences"]

#: The feature bits of leaves 1 and 7 that enable or need an xfeature (the runtime bits
#: OSXSAVE and OSPKE left out: KVM rewrites them from the guest's CR4).
VIEW_FEATURES = (
    "XSAVE", "AVX", "FMA", "F16C", "AVX2", "MPX", "INTEL_PT", "AVX512F", "AVX512DQ",
    "AVX512IFMA", "AVX512PF", "AVX512ER", "AVX512CD", "AVX512BW", "AVX512VL", "AVX512VBMI",
    "PKU", "AVX512_VBMI2", "SHSTK", "VAES", "VPCLMULQDQ", "AVX512_VNNI", "AVX512_BITALG",
    "AVX512_VPOPCNTDQ", "ENQCMD", "AVX512_4VNNIW", "AVX512_4FMAPS", "AVX512_VP2INTERSECT",
    "ARCH_LBR", "IBT", "AMX_BF16", "AVX512_FP16", "AMX_TILE", "AMX_INT8", "AVX_VNNI",
    "AVX512_BF16", "AMX_FP16", "AMX_COMPLEX", "AVX10", "APX",
)

#: Leaves compared whole: 0x14 (Intel PT, xfeature 8), 0x1D and 0x1E (the AMX tile palette
#: and TMUL information). Leaf 0xD is compared by part, see ``_regions``.
VIEW_LEAVES = (0x14, 0x1D, 0x1E)

_REGISTERS = ("eax", "ebx", "ecx", "edx")
_ALL = 0xFFFF_FFFF


def _view_masks() -> dict[tuple[int, int, str], int]:
    masks: dict[tuple[int, int, str], int] = {}
    for name in VIEW_FEATURES:
        where = FEATURES[name]
        key = (where.leaf, where.subleaf, where.register)
        masks[key] = masks.get(key, 0) | 1 << where.bit
    return masks


_FEATURE_MASKS = _view_masks()


def _destination(facts: Facts) -> Destination:
    destination = facts.subject.destination
    if destination is None:
        raise Missing("no destination: the subject is not a snapshot to restore")
    return destination


def linux_xss(cpuid: CpuidSet, features: Facts) -> int:
    """Return the IA32_XSS a Linux guest of ``cpuid`` writes: gated supervisor xfeatures."""
    if not features["XSAVES"]:
        return 0
    return linux_supervisor(features, cpuid.xss_supported)


def _mask(facts: Facts, name: str) -> int:
    value = facts[name]
    assert isinstance(value, int)
    return value


# --- the guest ---------------------------------------------------------------------------


@fact("linux_xss", "mask", "the IA32_XSS a Linux guest writes: the enumerated supervisor "
      "xfeatures it supports whose CPUID gate is set (PASID: ENQCMD, CET_U: SHSTK), none "
      "without XSAVES", ((0xD, 1, "ecx", _ALL), (0xD, 1, "eax", 1 << 3)),
      reads=("subleaves",))
def _linux_xss(facts: Facts) -> object:
    return linux_xss(facts.cpuid, facts)


# --- the destination ---------------------------------------------------------------------


@fact("dest.name", "str", "the destination the snapshot is restored on",
      reads=("destination",))
def _dest_name(facts: Facts) -> object:
    return _destination(facts).name


def permitted_table(destination: Destination) -> CpuidSet:
    """Return the table the destination's VMM reads from KVM after its permission request."""
    host = destination.host
    if host is not None and host.kvm_cpuid_permitted is not None:
        return host.kvm_cpuid_permitted
    return destination.cpuid


@fact("dest.xcr0", "mask", "the XCR0 bits the destination's KVM supports for a guest: "
      "KVM_X86_XCOMP_GUEST_SUPP where it was read, else 0xD.0 EDX:EAX of the destination's "
      "table (KVM_GET_SUPPORTED_CPUID after the VMM's guest-permission request)",
      reads=("destination",))
def _dest_xcr0(facts: Facts) -> object:
    destination = _destination(facts)
    return kvm_supported_xcr0(destination.host, lambda: permitted_table(destination))


@fact("dest.permitted_xcr0", "mask", "0xD.0 EDX:EAX of the destination's KVM_GET_SUPPORTED_"
      "CPUID as its VMM reads it after requesting the guest permission: what KVM_SET_CPUID2 "
      "lets the vCPU enable",
      reads=("destination",))
def _dest_permitted_xcr0(facts: Facts) -> object:
    return permitted_table(_destination(facts)).xcr0_supported


@fact("dest.xss", "mask", "0xD.1 EDX:ECX of the destination's table: the IA32_XSS bits its "
      "KVM supports",
      reads=("destination",))
def _dest_xss(facts: Facts) -> object:
    destination = _destination(facts)
    if not destination.cpuid.leaf_0xd_complete:
        raise Missing("the destination's source holds no leaf 0xD subleaves")
    return permitted_table(destination).xss_supported


_DEST_LAYOUT = " dest layout"  # where dest_layout keeps it in the Facts (no fact's name)


def dest_layout(facts: Facts) -> XsaveLayout:
    """Return the leaf 0xD layout of the destination's table as its VMM reads it from KVM."""
    layout = facts.get(_DEST_LAYOUT)
    if layout is None:
        destination = _destination(facts)
        if not destination.cpuid.leaf_0xd_complete:
            raise Missing("the destination's source holds no leaf 0xD subleaves")
        layout = facts[_DEST_LAYOUT] = XsaveLayout.from_cpuid(permitted_table(destination))
    assert isinstance(layout, XsaveLayout)
    return layout


def _state_mask(facts: Facts) -> int:
    return _mask(facts, "linux_xcr0") | _mask(facts, "linux_xss")


@fact("dest.std_size", "size", "the standard-format size of the guest's XCR0 (as a Linux "
      "guest sets it) by the destination's leaf 0xD subleaves: what the destination's KVM "
      "reads as the uABI XSAVE buffer",
      reads=("destination",))
def _dest_std_size(facts: Facts) -> object:
    return dest_layout(facts).standard_size(_mask(facts, "linux_xcr0"))


# --- the guest views of a migration group ----------------------------------------------------


def _regions(cpuid: CpuidSet, components: int) -> Iterable[tuple[int, int, str, int]]:
    """Yield (leaf, subleaf, register, mask) of the XSAVE-relevant view present in cpuid.

    Leaf 0xD: the enumerated masks (0xD.0 EAX and EDX, 0xD.1 ECX and EDX), the XSAVE
    features of 0xD.1 EAX, and the subleaves of the xfeatures in ``components``. Left out:
    the EBX sizes of subleaves 0 and 1, which KVM recomputes from the XCR0 and IA32_XSS in
    use, and 0xD.0 ECX, the size for every supported xfeature, which a guest does not size
    its buffers from and Firecracker's templates leave at the host's value.
    """
    entries = cpuid.entries
    for (leaf, subleaf, register), mask in _FEATURE_MASKS.items():
        if (leaf, subleaf) in entries:
            yield leaf, subleaf, register, mask
    if (0xD, 0) in entries:
        yield 0xD, 0, "eax", _ALL
        yield 0xD, 0, "edx", _ALL
    if (0xD, 1) in entries:
        for register in ("eax", "ecx", "edx"):
            yield 0xD, 1, register, _ALL
    for number in bits(components):
        if number >= 2 and (0xD, number) in entries:
            for register in _REGISTERS:
                yield 0xD, number, register, _ALL
    for leaf, subleaf in entries:
        if leaf in VIEW_LEAVES:
            for register in _REGISTERS:
                yield leaf, subleaf, register, _ALL


def view_differences(ours: CpuidSet, theirs: CpuidSet) -> list[tuple[int, int, str, int]]:
    """Return (leaf, subleaf, register, differing bits) of the XSAVE-relevant guest views."""
    components = ours.xcr0_supported | ours.xss_supported
    components |= theirs.xcr0_supported | theirs.xss_supported
    masks: dict[tuple[int, int, str], int] = {}
    for table in (ours, theirs):
        for leaf, subleaf, register, mask in _regions(table, components):
            key = (leaf, subleaf, register)
            masks[key] = masks.get(key, 0) | mask
    found = []
    for (leaf, subleaf, register), mask in sorted(masks.items()):
        differing = (ours.register(leaf, subleaf, register)
                     ^ theirs.register(leaf, subleaf, register)) & mask
        if differing:
            found.append((leaf, subleaf, register, differing))
    return found


def _describe(key: tuple[int, int], ours: Registers | None, theirs: Registers | None,
              register: str, differing: int) -> str:
    mine = getattr(ours, register) if ours is not None else None
    other = getattr(theirs, register) if theirs is not None else None
    names = [name for name in VIEW_FEATURES
             if ((where := FEATURES[name]).leaf, where.subleaf) == key
             and where.register == register and differing >> where.bit & 1]
    shown = "absent" if mine is None else f"{mine:#010x}"
    peer = "absent" if other is None else f"{other:#010x}"
    what = f" ({', '.join(names)})" if names and len(names) <= 4 else ""
    return f"{register.upper()} bits {differing:#010x}{what}: {shown} here, {peer} there"


def _entry_pin(cpuid: CpuidSet, leaf: int, subleaf: int, register: str,
               differing: int) -> Location | None:
    """Return the template line that could remove a difference: the modifier that owns the
    differing bits, else one that modifies the register, else the entry's modifier."""
    def first(found: Iterable[Location]) -> Location | None:
        return min(found, key=lambda where: (where.path, where.line, where.column),
                   default=None)

    provenance = cpuid.provenance
    return (first(where for _, where in provenance.pinned(leaf, subleaf, register, differing))
            or first(where for mask, where in provenance.pins(leaf, subleaf, register) if mask)
            or first(where for reg in _REGISTERS
                     for _, where in provenance.pins(leaf, subleaf, reg)))


@fact("dest.view_differences", "items", "CPUID entries where the guest's XSAVE-relevant view "
      "(leaf 0xD, the xstate feature bits of leaves 1 and 7, leaves 0x14, 0x1D and 0x1E, "
      "IA32_XSS) differs from that of a guest booted at the destination (a migration group's "
      "other member)",
      reads=("destination",))
def _dest_view_differences(facts: Facts) -> object:
    peer = _destination(facts).peer
    if peer is None:
        raise Missing("no guest view of the destination to compare with")
    subject = facts.subject
    cpuid = subject.cpuid
    items: dict[tuple[int, int], list[str]] = {}
    places: dict[tuple[int, int], Location | None] = {}
    for leaf, subleaf, register, differing in view_differences(cpuid, peer):
        key = (leaf, subleaf)
        items.setdefault(key, []).append(_describe(
            key, cpuid.entries.get(key), peer.entries.get(key), register, differing))
        where = _entry_pin(cpuid, leaf, subleaf, register, differing)
        if places.get(key) is None:
            places[key] = where
    template = Location(subject.template) if subject.template else None
    return tuple(
        EntryItem(leaf, subleaf, places.get((leaf, subleaf)) or template, "; ".join(parts))
        for (leaf, subleaf), parts in sorted(items.items())
    )

