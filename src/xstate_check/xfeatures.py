"""The xfeature table: every XSAVE state component by number, the one table of them.

Sources: Intel SDM Vol. 1 §13.1; Linux arch/x86/include/asm/fpu/types.h ``enum xfeature``
and arch/x86/kernel/fpu/xstate.c ``xsave_cpuid_features[]``. The group masks (MPX, AVX-512,
AMX, the supervisor set) and the CPUID feature each xfeature needs derive from the table.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import attrs

__all__ = [
    "AVX512_MASK",
    "EXCLUSIVE_PAIRS",
    "EXTRA_FEATURE_NEEDS",
    "LINUX_GATES",
    "LINUX_SUPERVISOR_MASK",
    "MPX_MASK",
    "SUPERVISOR_MASK",
    "USER_DYNAMIC_MASK",
    "XFEATURES",
    "XTILE_MASK",
    "Xfeature",
    "bits",
    "by_name",
    "format_mask",
    "name_of",
]


@attrs.frozen
class Xfeature:
    """One XSAVE state component.

    ``size`` is the architectural size in bytes (None where it varies or is unverified);
    ``intel_offset`` the Intel standard-format offset where it is fixed; ``gate`` the name of
    the CPUID feature bit a Linux guest requires before it enables the component
    (``xsave_cpuid_features[]``); ``feature`` the CPUID feature bit that announces the
    component's registers, so that a CPU setting it must enumerate the component (None for
    x87 and SSE, which predate XSAVE, and for the supervisor components, whose features work
    without XSAVES).
    """

    number: int
    name: str
    title: str
    supervisor: bool
    size: int | None
    intel_offset: int | None
    dynamic: bool
    gate: str | None
    feature: str | None = None

    @property
    def mask(self) -> int:
        """Return this xfeature's bit in an xfeature mask."""
        return 1 << self.number


#: PKRU's gate: Linux lists OSPKE, which setup_pku() (arch/x86/kernel/cpu/common.c)
#: force-sets itself when PKU is present, and a KVM guest's table has OSPKE clear (a runtime
#: bit KVM computes from CR4), so PKU is the gate that decides for a guest.
_TABLE = (
    Xfeature(0, "x87", "x87 FPU", False, 160, 0, False, "FPU"),
    Xfeature(1, "sse", "SSE (XMM, MXCSR)", False, 256, 160, False, "SSE"),
    Xfeature(2, "ymm", "AVX (upper YMM)", False, 256, 576, False, "AVX", "AVX"),
    Xfeature(3, "bndregs", "MPX bound registers", False, 64, 960, False, "MPX", "MPX"),
    Xfeature(4, "bndcsr", "MPX bound config and status", False, 64, 1024, False, "MPX", "MPX"),
    Xfeature(5, "opmask", "AVX-512 opmask", False, 64, 1088, False, "AVX512F", "AVX512F"),
    Xfeature(6, "zmm_hi256", "AVX-512 upper ZMM0-15", False, 512, 1152, False, "AVX512F",
             "AVX512F"),
    Xfeature(7, "hi16_zmm", "AVX-512 ZMM16-31", False, 1024, 1664, False, "AVX512F", "AVX512F"),
    Xfeature(8, "pt", "Processor Trace", True, None, None, False, "INTEL_PT"),
    Xfeature(9, "pkru", "Protection keys (PKRU)", False, 8, 2688, False, "PKU", "PKU"),
    Xfeature(10, "pasid", "PASID", True, 8, None, False, "ENQCMD"),
    Xfeature(11, "cet_u", "CET user", True, 16, None, False, "SHSTK"),
    Xfeature(12, "cet_s", "CET supervisor", True, 24, None, False, "SHSTK"),
    Xfeature(13, "hdc", "Hardware Duty Cycling", True, None, None, False, None),
    Xfeature(14, "uintr", "User interrupts", True, None, None, False, None),
    Xfeature(15, "lbr", "Architectural LBR", True, None, None, False, "ARCH_LBR"),
    Xfeature(16, "hwp", "Hardware P-states", True, None, None, False, None),
    Xfeature(17, "tilecfg", "AMX TILECFG", False, 64, 2752, False, "AMX_TILE", "AMX_TILE"),
    Xfeature(18, "tiledata", "AMX TILEDATA", False, None, 2816, True, "AMX_TILE", "AMX_TILE"),
    Xfeature(19, "apx", "APX extended GPRs", False, 128, 960, False, "APX", "APX"),
)

XFEATURES: dict[int, Xfeature] = {x.number: x for x in _TABLE}
_BY_NAME: dict[str, Xfeature] = {x.name: x for x in _TABLE}



def _gated(gate: str) -> int:
    return sum(x.mask for x in _TABLE if x.gate == gate)


MPX_MASK = _gated("MPX")
AVX512_MASK = _gated("AVX512F")
XTILE_MASK = _gated("AMX_TILE")
USER_DYNAMIC_MASK = sum(x.mask for x in _TABLE if x.dynamic)
SUPERVISOR_MASK = sum(x.mask for x in _TABLE if x.supervisor)

#: Each user xfeature's Linux gate (xsave_cpuid_features[]), by number.
LINUX_GATES: dict[int, str] = {x.number: x.gate for x in _TABLE
                               if x.gate is not None and not x.supervisor}
#: The supervisor xfeatures a Linux guest kernel saves for itself with XSAVES
#: (XFEATURE_MASK_SUPERVISOR_SUPPORTED): PASID and CET user state. CET supervisor state is
#: guest-only since 6.18: the kernel keeps it for the vCPUs it hosts, never in its own
#: buffers, so it is not counted here.
LINUX_SUPERVISOR_MASK = _BY_NAME["pasid"].mask | _BY_NAME["cet_u"].mask

#: Features without an xfeature of their own that need others': AVX10, whose vectors are the
#: AVX-512 registers, needs the AVX-512 state and YMM (QEMU's x86_ext_save_areas[]).
EXTRA_FEATURE_NEEDS: dict[str, int] = {"AVX10": AVX512_MASK | _BY_NAME["ymm"].mask}

#: Pairs of xfeature groups XCR0 never holds together, so their standard-format regions may
#: share bytes: APX reuses the MPX area (SDM Vol. 1 §13.1; XSETBV refuses both).
EXCLUSIVE_PAIRS: tuple[tuple[int, int], ...] = ((_BY_NAME["apx"].mask, MPX_MASK),)


def by_name(name: str) -> Xfeature:
    """Return the xfeature called ``name`` (case-insensitive); raise KeyError otherwise."""
    return _BY_NAME[name.lower()]


def bits(mask: int) -> Iterator[int]:
    """Yield the numbers of the bits set in ``mask``, lowest first (ValueError where it is
    negative: it has no last bit)."""
    if mask < 0:
        raise ValueError(f"expected a mask of bits, not the negative number {mask}")
    while mask:
        low = mask & -mask
        yield low.bit_length() - 1
        mask ^= low


def name_of(number: int) -> str:
    """Return the name of xfeature ``number``, or ``bitN`` where the table has none."""
    feature = XFEATURES.get(number)
    return feature.name if feature else f"bit{number}"


@functools.lru_cache(maxsize=1024)
def format_mask(mask: int) -> str:
    """Return ``0x602e7 (x87|sse|…)`` for an xfeature mask; ``0x0 (none)`` for zero."""
    names = "|".join(name_of(number) for number in bits(mask)) or "none"
    return f"{mask:#x} ({names})"
