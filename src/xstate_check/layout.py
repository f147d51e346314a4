"""XsaveLayout: CPUID leaf 0xD decoded; the one place sizes, offsets, overlaps and order live.

The rules read it (through ``Facts.subleaves`` and ``Facts.layout``), and so do ``decode``
and the restore facts, so every size a finding or a view reports comes from the formulas
here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TypeVar

import attrs

from xstate_check.cpuid import CpuidSet, Registers, memoized
from xstate_check.records import NamedTuple
from xstate_check.xfeatures import bits

__all__ = ["LEGACY_AND_HEADER", "Component", "XsaveLayout"]

#: 512-byte legacy region plus the 64-byte XSAVE header.
LEGACY_AND_HEADER = 576

XSAVE_LEAF = 0xD
#: The xfeatures a leaf 0xD subleaf describes: 2 .. 63 (x87 and SSE live in the legacy area).
_EXTENDED = ((1 << 64) - 1) & ~0x3
_ZERO = Registers(0, 0, 0, 0)


class Component(NamedTuple):
    """One component subleaf 0xD.n (n >= 2) as enumerated: EAX size, EBX offset, ECX, EDX."""

    number: int
    size: int
    offset: int
    ecx: int
    edx: int

    @property
    def supervisor(self) -> bool:
        """Return ECX[0]: the component is supervisor state (IA32_XSS), not user (XCR0)."""
        return bool(self.ecx & 1)

    @property
    def aligned(self) -> bool:
        """Return ECX[1]: the component starts on a 64-byte boundary in the compacted format."""
        return bool(self.ecx & 2)

    @property
    def xfd(self) -> bool:
        """Return ECX[2]: XFD supports the component (it can be dynamic)."""
        return bool(self.ecx & 4)

    @property
    def end(self) -> int:
        """Return the first byte after the component in the standard format."""
        return self.offset + self.size


_new_component = tuple.__new__


def _freeze_components(components: Mapping[int, Component]) -> Mapping[int, Component]:
    if isinstance(components, MappingProxyType):
        return components  # from_cpuid's own, built sorted
    return MappingProxyType(dict(sorted(components.items())))


_T = TypeVar("_T")


@attrs.frozen
class XsaveLayout:
    """Leaf 0xD of one CpuidSet, decoded (Intel SDM Vol. 1 §13.2, §13.4.3 compacted format).

    ``xcr0_supported`` is 0xD.0 EDX:EAX, ``xss_supported`` 0xD.1 EDX:ECX; ``size_current``
    and ``size_max`` are 0xD.0 EBX and ECX; ``xsave_features`` is 0xD.1 EAX and
    ``compacted_size_current`` 0xD.1 EBX. ``components`` holds every subleaf 2 <= n < 64
    that is not all zero or is named by either mask (a component with size 0 is kept: its
    ECX[1] still aligns the compacted format).
    """

    xcr0_supported: int
    xss_supported: int
    size_current: int
    size_max: int
    xsave_features: int
    compacted_size_current: int
    components: Mapping[int, Component] = attrs.field(converter=_freeze_components)
    #: What ``derived`` has computed from the layout.
    _memo: dict[object, object] = attrs.field(factory=dict, init=False, eq=False, repr=False)
    #: What ``of_components`` has computed from ``components``: shared by the layouts of
    #: tables that share their subleaves (a template that left them).
    _components_memo: dict[object, object] = attrs.field(factory=dict, eq=False, repr=False,
                                                         kw_only=True)
    #: ``standard_size``'s table: (end, bit) of each user component ending beyond the legacy
    #: area and header, the last end first; made on its first call.
    _standard_ends: tuple[tuple[int, int], ...] | None = attrs.field(
        default=None, init=False, eq=False, repr=False)

    @classmethod
    def from_cpuid(cls, cpuid: CpuidSet) -> XsaveLayout:
        """Decode leaf 0xD of ``cpuid`` (once per table: the table is immutable)."""
        return cpuid.derived("xsave_layout", _decode)

    @classmethod
    def of_subleaves(cls, cpuid: CpuidSet) -> XsaveLayout:
        """Return a layout with the components ``from_cpuid(cpuid)`` has, for what reads
        them alone (sizes, offsets, their relations): where every xfeature 0xD.0 and 0xD.1
        enumerate has its subleaf, one layout of the subleaves, shared by every table that
        shares them (a template that left them), its own 0xD.0 and 0xD.1 fields zero;
        otherwise ``from_cpuid(cpuid)``."""
        layout, found = cpuid.derived("xsave_subleaf_layout", _subleaf_layout, "xsave_components")
        entries = cpuid.entries
        sub0 = entries.get((XSAVE_LEAF, 0), _ZERO)
        sub1 = entries.get((XSAVE_LEAF, 1), _ZERO)
        if (sub0.edx << 32 | sub0.eax | sub1.edx << 32 | sub1.ecx) & _EXTENDED & ~found:
            return cls.from_cpuid(cpuid)  # some enumerated xfeature has no subleaf
        return layout

    def standard_size(self, mask: int) -> int:
        """Return the standard-format size for the XCR0 bits of ``mask``.

        max(576, max over user components i >= 2 in mask of offset_i + size_i): KVM's
        xstate_required_size(xstate_bv, false) in arch/x86/kvm/cpuid.c.
        """
        ends = self._standard_ends
        if ends is None:
            ends = _standard_ends(self)
            object.__setattr__(self, "_standard_ends", ends)
        for end, bit in ends:  # the first of mask's components, from the last end down
            if mask & bit:
                return end
        return LEGACY_AND_HEADER

    def standard_sizes(self, mask: int) -> tuple[int, ...]:
        """Return every standard_size(m) for m a subset of ``mask``'s user components, ascending.

        standard_size(m) is max(576, the end of m's last component), so the values are 576
        and the end of each user component of ``mask`` that lies beyond it.
        """
        sizes = {LEGACY_AND_HEADER}
        sizes.update(self.standard_size(1 << number) for number in bits(mask & _EXTENDED))
        return tuple(sorted(sizes))

    def compacted_size(self, mask: int) -> int:
        """Return the compacted-format size for ``mask`` (XCR0 | XSS bits, ascending order)."""
        return self._compact(mask)[1]

    def compacted_offsets(self, mask: int) -> dict[int, int]:
        """Return each component's offset in the compacted format for ``mask``."""
        return self._compact(mask)[0]

    def _compact(self, mask: int) -> tuple[dict[int, int], int]:
        """Lay ``mask``'s components out compacted: offsets and the end.

        After the legacy region and header, each component i >= 2 of the mask, in ascending
        order, starts at the next 64-byte boundary if its ECX bit 1 is set, whatever its size
        (a component of size 0 still aligns what follows): KVM's xstate_required_size(xstate_bv,
        true) in arch/x86/kvm/cpuid.c and Linux's xfeature_get_offset() in
        arch/x86/kernel/fpu/xstate.c.
        """
        offsets: dict[int, int] = {}
        offset = LEGACY_AND_HEADER
        for number, length, _, ecx, _ in self.components.values():
            if mask >> number & 1:
                if ecx & 2:
                    offset = (offset + 63) & ~63
                offsets[number] = offset
                offset += length
        return offsets, offset

    def overlaps(self, number: int) -> int:
        """Return the sized user components whose standard-format region shares a byte with
        component ``number``'s (0 for a component that is unsized or flagged supervisor).

        A user component (ECX[0] = 0) of size EAX at offset EBX occupies
        [EBX, EBX + EAX) of the standard format (Intel SDM Vol. 1 §13.4.2).
        """
        return self._relation(number)[0]

    def placed_above(self, number: int) -> int:
        """Return the sized user components whose standard-format offset is above component
        ``number``'s (0 for a component that is unsized or flagged supervisor)."""
        return self._relation(number)[1]

    def _relation(self, number: int) -> tuple[int, int]:
        return self.relations().get(number, (0, 0))

    def relations(self) -> Mapping[int, tuple[int, int]]:
        """Return (overlaps, placed_above) of each sized user component, by number."""
        return self.of_components("relations", _relations)

    def derived(self, key: object, compute: Callable[[XsaveLayout], _T]) -> _T:
        """Return ``compute(self)``, computed on first use: a value that depends on the
        layout alone (``key`` names it alone), kept with the layout, which is immutable and
        shared by every subject of its table."""
        return memoized(self._memo, key, compute, self)

    @property
    def components_memo(self) -> dict[object, object]:
        """Return what ``of_components`` keeps (by key): for a caller that keeps the dict
        at hand, to look a value up without a call."""
        return self._components_memo

    def of_components(self, key: object, compute: Callable[[XsaveLayout], _T]) -> _T:
        """Return ``compute(self)``, computed on first use, for a value that reads
        ``components`` alone: shared by every layout whose table shares these subleaves."""
        memo = self._components_memo  # memoized(), inline: asked on every subject
        try:
            return memo[key]  # type: ignore[return-value]
        except KeyError:
            value = memo[key] = compute(self)
            return value


def _subleaf_components(cpuid: CpuidSet) -> tuple[Mapping[int, Component], int]:
    """Return the components the subleaves 0xD.n (2 <= n < 64, not all zero) give, and
    their mask; a table sharing them with another (a template left them) takes its."""
    return cpuid.derived("xsave_components", _scan_components, "xsave_components")


def _scan_components(cpuid: CpuidSet) -> tuple[Mapping[int, Component], int]:
    components: dict[int, Component] = {}
    found = 0
    entries = cpuid.entries
    if cpuid.shared("keys") is not None:
        # A template's table, whose keys are its base's: their subleaves by leaf are listed
        # once, there (ascending), so only leaf 0xD's are read.
        for number in cpuid.leaf_subleaves().get(XSAVE_LEAF, ()):
            regs = entries[(XSAVE_LEAF, number)]
            if 2 <= number < 64 and regs != _ZERO:
                components[number] = _new_component(Component, (number, *regs))
                found |= 1 << number
        return MappingProxyType(components), found
    # Entries are sorted by (leaf, subleaf), so the subleaves come in ascending order.
    for (leaf, number), regs in entries.items():
        if leaf == XSAVE_LEAF and 2 <= number < 64 and regs != _ZERO:
            components[number] = _new_component(Component, (number, *regs))
            found |= 1 << number
    return MappingProxyType(components), found


def _decode(cpuid: CpuidSet) -> XsaveLayout:
    entries = cpuid.entries
    sub0 = entries.get((XSAVE_LEAF, 0), _ZERO)
    sub1 = entries.get((XSAVE_LEAF, 1), _ZERO)
    xcr0 = sub0.edx << 32 | sub0.eax
    xss = sub1.edx << 32 | sub1.ecx
    components, found = _subleaf_components(cpuid)
    absent = (xcr0 | xss) & _EXTENDED & ~found
    if absent:  # enumerated without a subleaf: size 0, offset 0, no flags
        every = dict(components)
        every.update((n, Component(n, 0, 0, 0, 0)) for n in bits(absent))
        components = MappingProxyType(dict(sorted(every.items())))
        shared: dict[object, object] = {}  # these components are the layout's own
    else:  # the subleaves' own: one memo for every table sharing them
        shared = cpuid.derived("xsave_components_memo", _new_memo, "xsave_components")
    return XsaveLayout(xcr0, xss, sub0.ebx, sub0.ecx, sub1.eax, sub1.ebx, components,
                       components_memo=shared)


def _subleaf_layout(cpuid: CpuidSet) -> tuple[XsaveLayout, int]:
    """Return the layout of the subleaves 0xD.n (2 <= n < 64) alone, and their mask."""
    components, found = _subleaf_components(cpuid)
    memo = cpuid.derived("xsave_components_memo", _new_memo, "xsave_components")
    return XsaveLayout(0, 0, 0, 0, 0, 0, components, components_memo=memo), found


def _standard_ends(layout: XsaveLayout) -> tuple[tuple[int, int], ...]:
    """Return (end, bit) of each user component ending beyond the legacy area and header,
    the last end first."""
    ends = [(offset + length, 1 << number)
            for number, length, offset, ecx, _ in layout.components.values()
            if not ecx & 1 and offset + length > LEGACY_AND_HEADER]
    ends.sort(key=lambda pair: -pair[0])
    return tuple(ends)


def _new_memo(cpuid: CpuidSet) -> dict[object, object]:
    return {}


def _relations(layout: XsaveLayout) -> dict[int, tuple[int, int]]:
    """Return (overlaps, placed_above) of each sized user component of ``layout``.

    Sorted by offset, a region overlaps those after it that start before it ends, and lies
    below every region that starts further on.
    """
    regions = sorted([(c.offset, c.offset + c.size, c.number)
                      for c in layout.components.values() if c.size and not c.ecx & 1])
    overlapping = dict.fromkeys([number for _, _, number in regions], 0)
    count = len(regions)
    for index in range(count):
        _, end, one = regions[index]
        later = index + 1
        while later < count and regions[later][0] < end:
            other = regions[later][2]
            overlapping[one] |= 1 << other
            overlapping[other] |= 1 << one
            later += 1
    relations: dict[int, tuple[int, int]] = {}
    above = pending = 0
    last = -1
    for start, _, one in reversed(regions):
        if start != last:
            above, pending, last = above | pending, 0, start
        relations[one] = (overlapping[one], above)
        pending |= 1 << one
    return relations
