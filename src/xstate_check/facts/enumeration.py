"""Enumeration facts: the subject, leaf 0xD as enumerated, the CPUID feature bits.

Which xfeatures a feature needs is a component attribute (``c.feature``, ``c.needed``,
from the xfeature table's ``feature`` column), read in a quantifier.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from xstate_check.cpuid import FEATURES, ZERO, CpuidSet, EntryMasks
from xstate_check.facts.registry import XCR0_REFS, XSS_REFS, Facts, fact, function, reg
from xstate_check.xfeatures import (
    AVX512_MASK,
    MPX_MASK,
    SUPERVISOR_MASK,
    USER_DYNAMIC_MASK,
    XFEATURES,
    XTILE_MASK,
)

__all__ = ["CONSTANTS", "DEFINED", "feature_layers", "feature_values", "valid_xcr0"]

FP_SSE_MASK = 0x3
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
    return facts.cpuid.entries.get((0, 0), ZERO)[0]  # CpuidSet.max_basic_leaf


# --- leaf 0xD as enumerated ------------------------------------------------------------


@fact("xcr0", "mask", "0xD.0 EDX:EAX: the XCR0 bits enumerated, which a guest that enables "
      "every enumerated xfeature writes with XSETBV", XCR0_REFS)
def _xcr0(facts: Facts) -> object:
    return facts.cpuid.xcr0_supported


@fact("xss", "mask", "0xD.1 EDX:ECX: the IA32_XSS (supervisor) bits enumerated", XSS_REFS,
      reads=("subleaves",))
def _xss(facts: Facts) -> object:
    regs = facts.cpuid.entries.get((0xD, 1), ZERO)  # CpuidSet.xss_supported
    return regs[3] << 32 | regs[2]


@fact("size_current", "size", "0xD.0 EBX: standard-format size for the XCR0 now enabled",
      (reg(0xD, 0, "ebx"),))
def _size_current(facts: Facts) -> object:
    return facts.cpuid.entries.get((0xD, 0), ZERO)[1]


@fact("size_max", "size", "0xD.0 ECX: standard-format size for every enumerated XCR0 bit",
      (reg(0xD, 0, "ecx"),))
def _size_max(facts: Facts) -> object:
    return facts.cpuid.entries.get((0xD, 0), ZERO)[2]


@fact("compacted_size_current", "size", "0xD.1 EBX: compacted size of the XCR0 | IA32_XSS "
      "now enabled", (reg(0xD, 1, "ebx"),),
      reads=("subleaves",))
def _compacted_size_current(facts: Facts) -> object:
    return facts.cpuid.entries.get((0xD, 1), ZERO)[1]


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


# --- CPUID feature bits ------------------------------------------------------------------


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
    subleaves (they are Missing there).

    A table a template made (``applied_masks``) takes its base's values, worked out once
    per base, with those of the bits the template sets or clears, once per template."""
    layers = feature_layers(cpuid)
    if len(layers) == 1:
        return layers[0]
    values = layers[0].copy()
    values.update(layers[1])
    return values


def feature_layers(cpuid: CpuidSet) -> tuple[dict[str, bool], ...]:
    """Return ``feature_values(cpuid)`` as the dicts it merges, in order, a later one's
    values over an earlier one's: the table's own, or its base's and the bits its template
    decides (both shared, not to be changed), for a caller to merge where it keeps them."""
    masks = cpuid.applied_masks()
    base = cpuid.shared("keys") if masks is not None and cpuid.leaf_0xd_complete else None
    if base is None or masks is None:
        return (_feature_values(cpuid),)
    return base.derived("feature_values", _feature_values), _pinned_features(masks)


def _feature_values(cpuid: CpuidSet) -> dict[str, bool]:
    entries = cpuid.entries
    complete = cpuid.leaf_0xd_complete
    values: dict[str, bool] = {}
    for key, index, named in _feature_registers():
        if not complete and key[0] == 0xD:
            continue
        regs = entries.get(key)
        value = regs[index] if regs is not None else 0
        for name, shift in named:
            values[name] = value >> shift & 1 == 1
    return values


_REGISTERS_READ: list[tuple[tuple[int, int], int, tuple[tuple[str, int], ...]]] = []
#: ``_pinned_features`` of the templates' masks seen last (each kept alive with its answer).
#: A gate checks a template on all its profiles before the next, so a few suffice; more
#: would grow a long gate's memory with its number of templates.
_PINNED: dict[int, tuple[EntryMasks, dict[str, bool]]] = {}
_PINNED_KEPT = 8


def _pinned_features(masks: EntryMasks) -> dict[str, bool]:
    """Return the feature bits a template's masks decide whatever the base holds: a bit it
    clears (not kept, not set) is false, a bit it sets is true."""
    found = _PINNED.get(id(masks))
    if found is None or found[0] is not masks:
        pinned: dict[str, bool] = {}
        for key, index, named in _feature_registers():
            entry = masks.get(key)
            if entry is None:
                continue
            keep, put = entry[0][index], entry[1][index]
            for name, shift in named:
                if put >> shift & 1:
                    pinned[name] = True
                elif not keep >> shift & 1:
                    pinned[name] = False
        if len(_PINNED) >= _PINNED_KEPT:
            _PINNED.clear()
        found = _PINNED[id(masks)] = (masks, pinned)
    return found[1]


def _feature_registers() -> list[tuple[tuple[int, int], int, tuple[tuple[str, int], ...]]]:
    """Return the feature-bit facts by the register they read: (entry, index, (name, bit))."""
    if not _REGISTERS_READ:
        grouped: dict[tuple[tuple[int, int], int], list[tuple[str, int]]] = {}
        for name, key, index, shift in _FEATURE_BITS:
            grouped.setdefault((key, index), []).append((name, shift))
        _REGISTERS_READ.extend((key, index, tuple(named))
                               for (key, index), named in grouped.items())
    return _REGISTERS_READ


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


#: Functions whose meaning the rules define: their argument stands for this fact in the check
#: of each rule whose ``defines`` names the function, and the function holds when all of
#: those checks do.
DEFINED: dict[str, str] = {"valid_xcr0": "xcr0"}


#: The checks that define valid_xcr0, and their quick conditions folded (see ``_xsetbv``).
_Xsetbv = tuple[tuple[Callable[[Any], object], ...], int, int, "frozenset[int] | None"]


@functools.cache
def _xsetbv() -> _Xsetbv:
    """Return the checks that define valid_xcr0, and (zero_mask, small_mask, all_pass):
    where ``mask & zero_mask == 0`` and ``mask & small_mask in all_pass`` every check
    holds (their quick conditions on ``xcr0`` folded as a plan's group folds them; all_pass
    None where one has none)."""
    # The shipped catalogue (compiled once, from its cache) holds the definition; the engine
    # sits above the facts, hence the late import.
    from xstate_check.engine.compiler import compile_expression
    from xstate_check.engine.plan import fold_conditions, quick_condition
    from xstate_check.engine.shipped import load_catalogue

    definitions = [rule.compiled.definition for rule in load_catalogue()
                   if rule.defines == "valid_xcr0" and rule.compiled.definition is not None]
    checks = tuple(compile_expression(definition) for definition in definitions)
    quicks = [quick_condition(definition) for definition in definitions]
    if not all(quick is not None and quick.name == "xcr0" for quick in quicks):
        return checks, 0, 0, None
    return checks, *fold_conditions((quick.mask, quick.values)
                                    for quick in quicks if quick is not None)


def valid_xcr0(mask: int) -> bool:
    """Return whether XSETBV accepts ``mask``: every check of rules/xcr0.toml that says
    ``defines = "valid_xcr0"`` holds with ``xcr0`` standing for ``mask``."""
    checks, zero_mask, small_mask, all_pass = _xsetbv()
    if all_pass is not None and not mask & zero_mask and mask & small_mask in all_pass:
        return True  # every check's quick condition holds
    view = {"xcr0": mask}
    for check in checks:  # noqa: SIM110 - a loop costs less than all() of a generator
        if not check(view):
            return False
    return True


function("valid_xcr0", ("mask",), "bool", "whether XSETBV accepts the mask: the checks of the "
         "rules that say defines = \"valid_xcr0\" (x87, YMM needs SSE, MPX pair, AVX-512 "
         "triple with YMM, AMX pair, no supervisor bits, no APX with MPX) hold for it")(
    lambda facts, mask: valid_xcr0(mask))
function("popcount", ("int",), "int", "the number of bits set")(
    lambda facts, value: bin(value).count("1"))
