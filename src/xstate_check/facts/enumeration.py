"""Enumeration facts: the subject, leaf 0xD as enumerated, CPUID feature bits against the
xfeatures they need (the xfeature table's ``feature`` column)."""

from __future__ import annotations

from xstate_check.cpuid import FEATURES, CpuidSet
from xstate_check.facts.registry import XCR0_REFS, XSS_REFS, BitRef, Facts, fact, function, reg
from xstate_check.xfeatures import (
    AVX512_MASK,
    EXTRA_FEATURE_NEEDS,
    FEATURE_XSTATE,
    MPX_MASK,
    SUPERVISOR_MASK,
    USER_DYNAMIC_MASK,
    XFEATURES,
    XTILE_MASK,
    format_mask,
)

__all__ = ["CONSTANTS", "feature_values", "valid_xcr0"]

FP_SSE_MASK = 0x3
BIT63 = 1 << 63
KNOWN_MASK = sum(x.mask for x in XFEATURES.values())

# --- the subject


@fact("role", "str", "``guest`` (a table handed to KVM_SET_CPUID2) or ``cpu`` (a CPU's own view)")
def _role(facts: Facts) -> object:
    return facts.subject.role


@fact("vendor", "str", "the vendor string of leaf 0 (``GenuineIntel``, ``AuthenticAMD``)",
      (reg(0, 0, "ebx"), reg(0, 0, "ecx"), reg(0, 0, "edx")))
def _vendor(facts: Facts) -> object:
    return facts.cpuid.vendor


@fact("has_template", "bool", "whether a template was applied to make this subject")
def _has_template(facts: Facts) -> object:
    return facts.subject.template is not None


@fact("has_host", "bool", "whether host facts (a HostState) come with this subject")
def _has_host(facts: Facts) -> object:
    return facts.subject.host is not None


@fact("max_basic_leaf", "int", "CPUID.0:EAX, the highest basic leaf", (reg(0, 0, "eax"),))
def _max_basic_leaf(facts: Facts) -> object:
    return facts.cpuid.max_basic_leaf


# --- leaf 0xD as enumerated ------------------------------------------------------------


@fact("xcr0", "mask", "0xD.0 EDX:EAX: the XCR0 bits enumerated, which a guest that enables "
      "every enumerated xfeature writes with XSETBV", XCR0_REFS)
def _xcr0(facts: Facts) -> object:
    return facts.cpuid.xcr0_supported


@fact("xss", "mask", "0xD.1 EDX:ECX: the IA32_XSS (supervisor) bits enumerated", XSS_REFS,
      reads=("subleaves",))
def _xss(facts: Facts) -> object:
    return facts.cpuid.xss_supported


@fact("size_current", "size", "0xD.0 EBX: standard-format size for the XCR0 now enabled",
      (reg(0xD, 0, "ebx"),))
def _size_current(facts: Facts) -> object:
    return facts.cpuid.get(0xD, 0).ebx


@fact("size_max", "size", "0xD.0 ECX: standard-format size for every enumerated XCR0 bit",
      (reg(0xD, 0, "ecx"),))
def _size_max(facts: Facts) -> object:
    return facts.cpuid.get(0xD, 0).ecx


@fact("compacted_size_current", "size", "0xD.1 EBX: compacted size of the XCR0 | IA32_XSS "
      "now enabled", (reg(0xD, 1, "ebx"),),
      reads=("subleaves",))
def _compacted_size_current(facts: Facts) -> object:
    return facts.cpuid.get(0xD, 1).ebx


@fact("xsave_features", "int", "0xD.1 EAX: XSAVEOPT, XSAVEC, XGETBV1, XSAVES, XFD (bits 0-4)",
      (reg(0xD, 1, "eax"),),
      reads=("subleaves",))
def _xsave_features(facts: Facts) -> object:
    return facts.cpuid.get(0xD, 1).eax


@fact("tiledata_size", "size", "0xD.0x12 EAX: the size of the TILEDATA component",
      (reg(0xD, 18, "eax"),),
      reads=("subleaves",))
def _tiledata_size(facts: Facts) -> object:
    return facts.cpuid.get(0xD, 18).eax


@fact("amx.palettes", "int", "0x1D.0 EAX: the highest AMX tile palette", (reg(0x1D, 0, "eax"),))
def _amx_palettes(facts: Facts) -> object:
    return facts.cpuid.get(0x1D, 0).eax


@fact("amx.bytes_per_tile", "size", "0x1D.1 EAX[31:16]: bytes per tile of palette 1",
      (reg(0x1D, 1, "eax", 0xFFFF_0000),))
def _amx_bytes_per_tile(facts: Facts) -> object:
    return facts.cpuid.get(0x1D, 1).eax >> 16


@fact("amx.max_names", "int", "0x1D.1 EBX[31:16]: tile registers (names) of palette 1",
      (reg(0x1D, 1, "ebx", 0xFFFF_0000),))
def _amx_max_names(facts: Facts) -> object:
    return facts.cpuid.get(0x1D, 1).ebx >> 16


# --- CPUID feature bits against the xfeatures they need ----------------------------------

#: Feature -> the xfeatures it needs in 0xD.0: the xfeature table's ``feature`` column and
#: the features that need another's state (AVX10).
_FEATURE_XSTATE: dict[str, int] = {**FEATURE_XSTATE, **EXTRA_FEATURE_NEEDS}


def _feature_refs(facts: Facts, value: object) -> list[BitRef]:
    refs = list(XCR0_REFS)
    for name in _FEATURE_XSTATE:
        where = FEATURES[name]
        refs.append((where.leaf, where.subleaf, where.register, 1 << where.bit))
    return refs


def _features_lacking_xstate(facts: Facts) -> list[tuple[str, int]]:
    xcr0 = facts["xcr0"]
    assert isinstance(xcr0, int)
    return [(name, need & ~xcr0) for name, need in _FEATURE_XSTATE.items()
            if facts[name] and need & ~xcr0]


@fact("feature_without_xstate", "mask", "xfeatures a set CPUID feature needs (AVX: ymm, MPX, "
      "AVX512F, PKU: pkru, AMX_TILE: TILECFG|TILEDATA, APX, AVX10: ymm and AVX-512) that 0xD.0 "
      "lacks", _feature_refs)
def _feature_without_xstate(facts: Facts) -> object:
    return sum(missing for _, missing in _features_lacking_xstate(facts))


@fact("feature_without_xstate_names", "str", "the CPUID features of feature_without_xstate, "
      "each with the xfeatures it lacks", _feature_refs)
def _feature_without_xstate_names(facts: Facts) -> object:
    return ", ".join(f"{name} (lacks {format_mask(missing)})"
                     for name, missing in _features_lacking_xstate(facts)) or "none"


@fact("xstate_without_feature", "mask", "xfeatures enumerated in 0xD.0 whose CPUID feature "
      "(AVX, MPX, AVX512F, PKU, AMX_TILE, APX) is clear", _feature_refs)
def _xstate_without_feature(facts: Facts) -> object:
    xcr0 = facts["xcr0"]
    assert isinstance(xcr0, int)
    result = 0
    for name, need in _FEATURE_XSTATE.items():
        if name in FEATURE_XSTATE and not facts[name]:  # AVX-512 state is gated on AVX512F
            result |= need & xcr0
    return result


#: (name, entry, register index, bit) of every feature-bit fact, for ``feature_values``.
_FEATURE_BITS: list[tuple[str, tuple[int, int], int, int]] = []


def _feature_fact(name: str) -> None:
    where = FEATURES[name]
    key = (where.leaf, where.subleaf)
    index = ("eax", "ebx", "ecx", "edx").index(where.register)
    shift = where.bit
    _FEATURE_BITS.append((name, key, index, shift))

    def compute(facts: Facts) -> object:
        regs = facts.cpuid.entries.get(key)
        return regs is not None and bool(regs[index] >> shift & 1)

    fact(name, "bool",
         f"CPUID.({where.leaf:#x},{where.subleaf}):{where.register.upper()}[{where.bit}] {name}",
         ((where.leaf, where.subleaf, where.register, 1 << where.bit),),
         reads=("subleaves",) if where.leaf == 0xD else ())(compute)


for _name in FEATURES:
    _feature_fact(_name)


def feature_values(cpuid: CpuidSet) -> dict[str, bool]:
    """Return every feature-bit fact of a table at once, as each computes alone: what a
    run that reads most of them sets first. Leaf 0xD's are left out of a source without its
    subleaves (they are Missing there)."""
    entries = cpuid.entries
    complete = cpuid.leaf_0xd_complete
    values: dict[str, bool] = {}
    for name, key, index, shift in _FEATURE_BITS:
        regs = entries.get(key)
        if regs is None:
            if complete or key[0] != 0xD:
                values[name] = False
        elif complete or key[0] != 0xD:
            values[name] = bool(regs[index] >> shift & 1)
    return values


# --- the language's constants and pure functions


#: Named xfeature masks: every xfeature by name, and the groups the rules speak of.
CONSTANTS: dict[str, int] = {
    **{x.name: x.mask for x in XFEATURES.values()},
    "fp_sse": FP_SSE_MASK,
    "mpx": MPX_MASK,
    "avx512": AVX512_MASK,
    "xtile": XTILE_MASK,
    "dynamic": USER_DYNAMIC_MASK,
    "supervisor": SUPERVISOR_MASK,
    "user": KNOWN_MASK & ~SUPERVISOR_MASK,
    "known": KNOWN_MASK,
}


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


function("valid_xcr0", ("mask",), "bool", "whether XSETBV accepts the mask (x87, YMM needs SSE, "
         "MPX pair, AVX-512 triple with YMM, AMX pair, no supervisor bits, no APX with MPX)")(
    lambda facts, mask: valid_xcr0(mask))
function("popcount", ("int",), "int", "the number of bits set")(
    lambda facts, value: bin(value).count("1"))
