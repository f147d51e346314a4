"""XsaveLayout: CPUID leaf 0xD decoded, with the standard and compacted size formulas."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import attrs

from xstate_check.cpuid import CpuidSet
from xstate_check.xfeatures import bits

__all__ = ["LEGACY_AND_HEADER", "Component", "XsaveLayout", "align64"]

#: 512-byte legacy region plus the 64-byte XSAVE header.
LEGACY_AND_HEADER = 576

XSAVE_LEAF = 0xD


def align64(value: int) -> int:
    """Round ``value`` up to a multiple of 64."""
    return (value + 63) & ~63


@attrs.frozen
class Component:
    """One component subleaf 0xD.n (n >= 2) as enumerated."""

    number: int
    size: int
    offset: int
    supervisor: bool
    aligned: bool
    xfd: bool
    ecx: int
    edx: int

    @property
    def end(self) -> int:
        """Return the first byte after the component in the standard format."""
        return self.offset + self.size


def _freeze_components(components: Mapping[int, Component]) -> Mapping[int, Component]:
    return MappingProxyType(dict(sorted(components.items())))


@attrs.frozen
class XsaveLayout:
    """Leaf 0xD of one CpuidSet, decoded (Intel SDM Vol. 1 §13.2, §13.4.3 compacted format).

    ``xcr0_supported`` is 0xD.0 EDX:EAX, ``xss_supported`` 0xD.1 EDX:ECX; ``size_current``
    and ``size_max`` are 0xD.0 EBX and ECX; ``xsave_features`` is 0xD.1 EAX and
    ``compacted_size_current`` 0xD.1 EBX. ``components`` holds every subleaf n >= 2 that
    enumerates a non-zero size or is named by either mask.
    """

    xcr0_supported: int
    xss_supported: int
    size_current: int
    size_max: int
    xsave_features: int
    compacted_size_current: int
    components: Mapping[int, Component] = attrs.field(converter=_freeze_components)

    @classmethod
    def from_cpuid(cls, cpuid: CpuidSet) -> XsaveLayout:
        """Decode leaf 0xD of ``cpuid``."""
        sub0 = cpuid.get(XSAVE_LEAF, 0)
        sub1 = cpuid.get(XSAVE_LEAF, 1)
        xcr0, xss = cpuid.xcr0_supported, cpuid.xss_supported
        wanted = set(bits((xcr0 | xss) & ~0x3))
        wanted.update(sub for sub in cpuid.subleaves(XSAVE_LEAF) if 2 <= sub < 64)
        components: dict[int, Component] = {}
        for number in sorted(wanted):
            regs = cpuid.get(XSAVE_LEAF, number)
            if not any(regs) and not (xcr0 | xss) >> number & 1:
                continue
            components[number] = Component(
                number=number,
                size=regs.eax,
                offset=regs.ebx,
                supervisor=bool(regs.ecx & 1),
                aligned=bool(regs.ecx & 2),
                xfd=bool(regs.ecx & 4),
                ecx=regs.ecx,
                edx=regs.edx,
            )
        return cls(
            xcr0_supported=xcr0,
            xss_supported=xss,
            size_current=sub0.ebx,
            size_max=sub0.ecx,
            xsave_features=sub1.eax,
            compacted_size_current=sub1.ebx,
            components=components,
        )

    def standard_size(self, mask: int) -> int:
        """Return the standard-format size for the XCR0 bits of ``mask`` (SDM, KVM's formula).

        max(576, max over user components i >= 2 in mask of offset_i + size_i).
        """
        size = LEGACY_AND_HEADER
        for number in bits(mask & ~0x3):
            component = self.components.get(number)
            if component is not None and not component.supervisor:
                size = max(size, component.end)
        return size

    def compacted_size(self, mask: int) -> int:
        """Return the compacted-format size for ``mask`` (XCR0 | XSS bits, ascending order)."""
        return self._compact(mask)[1]

    def compacted_offsets(self, mask: int) -> dict[int, int]:
        """Return each component's offset in the compacted format for ``mask``."""
        return self._compact(mask)[0]

    def _compact(self, mask: int) -> tuple[dict[int, int], int]:
        """Lay ``mask``'s components out compacted (SDM, KVM, Linux): offsets and the end.

        After the legacy region and header, each enumerated component i >= 2 of the mask, in
        ascending order, starts at the next 64-byte boundary if its ECX bit 1 is set.
        """
        offsets: dict[int, int] = {}
        offset = LEGACY_AND_HEADER
        for number in bits(mask & ~0x3):
            component = self.components.get(number)
            if component is None:
                continue
            if component.aligned:
                offset = align64(offset)
            offsets[number] = offset
            offset += component.size
        return offsets, offset

    @property
    def user_dynamic(self) -> int:
        """Return the XCR0 components whose subleaf says XFD is supported (dynamic)."""
        return sum(1 << c.number for c in self.components.values() if c.xfd and not c.supervisor)
