"""Template facts: what a template did to the table before it (``base.*``, KVM flags)."""

from __future__ import annotations

from collections.abc import Iterable

from xstate_check.cpuid import FEATURES, REGISTERS, ZERO, CpuidSet
from xstate_check.errors import Location
from xstate_check.facts.registry import XCR0_REFS, XSS_REFS, EntryItem, Facts, Missing, fact
from xstate_check.xfeatures import XTILE_MASK

__all__: list[str] = []



def _entry_location(cpuid: CpuidSet, leaf: int, subleaf: int) -> Location | None:
    found = [where for register in (*REGISTERS, "flags")
             for _, where in cpuid.provenance.pins(leaf, subleaf, register)]
    return min(found, key=_location_order) if found else None


def _location_order(where: Location) -> tuple[str, int, int]:
    """Return what Location's own order compares (its fields in turn), as one tuple."""
    return (where.path, where.line, where.column)


@fact("missing_entries", "items", "the CPUID entries a template modifies that the base table "
      "lacks (Firecracker refuses to boot)")
def _missing_entries(facts: Facts) -> object:
    return tuple(EntryItem(entry.leaf, entry.subleaf, entry.location)
                 for entry in facts.subject.missing_entries)


@fact("missing_entries_first", "items", "the first CPUID entry (by template line) that a "
      "template modifies and the base table lacks, as one item: the pair's one finding")
def _missing_entries_first(facts: Facts) -> object:
    if not facts.subject.missing_entries:
        return ()
    entries: tuple[EntryItem, ...] = facts["missing_entries"]
    located = [(entry.location.line, entry.location.column, index)
               for index, entry in enumerate(entries) if entry.location is not None]
    return (entries[min(located)[2]],) if located else entries[:1]


@fact("missing_entry_list", "str", "every CPUID entry a template modifies that the base table "
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


def _indexed_entries(cpuid: CpuidSet) -> tuple[tuple[int, int], ...]:
    """Return the entries of leaves the table holds two or more subleaves of, sorted."""
    subleaves = cpuid.leaf_subleaves()
    return tuple(key for key in cpuid.entries if len(subleaves[key[0]]) >= 2)


def _unflagged_indexed(cpuid: CpuidSet) -> tuple[tuple[int, int], ...]:
    """Return the entries of leaves of two or more subleaves whose recorded KVM flags lack
    SIGNIFICANT_INDEX (an entry without recorded flags is taken to have it), sorted."""
    flags = cpuid.flags
    return tuple(key for key in cpuid.derived("indexed_entries", _indexed_entries, "keys")
                 if not flags.get(key, 1) & 1)


def _significant_entries(cpuid: CpuidSet) -> tuple[tuple[int, int], ...]:
    """Return the keys whose recorded KVM flags have SIGNIFICANT_INDEX, sorted."""
    return tuple(sorted(key for key, flags in cpuid.flags.items() if flags & 1))


@fact("flags_shadowing", "items", "entries without SIGNIFICANT_INDEX that KVM returns for later "
      "subleaves of their leaf (cpuid_entry2_find() takes the first entry of the function "
      "lacking the flag), where those subleaves hold other values")
def _flags_shadowing(facts: Facts) -> object:
    cpuid = facts.cpuid
    # An entry with the flag hides nothing, and a leaf of one entry neither. These candidates
    # depend on the keys and flags alone: a template that keeps the flags its base records
    # takes the base's.
    candidates = cpuid.derived("unflagged_indexed", _unflagged_indexed, "flags")
    if not candidates:
        return ()
    entries = cpuid.entries
    items = []
    seen: set[int] = set()
    subleaves = cpuid.leaf_subleaves()  # gathered once per set of keys
    for leaf, subleaf in candidates:
        if leaf in seen:
            continue
        if _normalized_flags(facts, leaf, subleaf):
            continue
        # Entries reach KVM sorted by (leaf, subleaf): only the first entry of a leaf that
        # lacks the flag is ever returned for a subleaf that is not its own.
        seen.add(leaf)
        regs = entries[(leaf, subleaf)]
        hidden = tuple(other for other in subleaves[leaf]
                       if other > subleaf and entries[(leaf, other)] != regs)
        if hidden:
            items.append(EntryItem(leaf, subleaf, _entry_location(cpuid, leaf, subleaf),
                                   hidden=_subleaf_list(hidden),
                                   effect=_shadow_effect(cpuid, leaf, subleaf, hidden)))
    return tuple(items)


@fact("flags_cleared", "items", "entries whose KVM flags a template changed from "
      "SIGNIFICANT_INDEX to not, where that hides no other subleaf (no later subleaf with "
      "other values, or Firecracker's normalization sets the flag again)")
def _flags_cleared(facts: Facts) -> object:
    base = facts.subject.base
    if base is None:
        return ()
    cpuid = facts.cpuid
    if cpuid.shared("flags") is base:
        return ()  # the flags are the base's: none was cleared
    flags = cpuid.flags
    cleared = [key for key in base.derived("significant_entries", _significant_entries)
               if not flags.get(key, 1) & 1]
    if not cleared:
        return ()
    shadowing = facts["flags_shadowing"]
    assert isinstance(shadowing, tuple)
    reported = {item.leaf for item in shadowing}
    items = []
    for leaf, subleaf in cleared:
        if leaf not in reported:
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


@fact("base.xcr0", "mask", "0xD.0 EDX:EAX of the table before the template", XCR0_REFS,
      reads=("base",))
def _base_xcr0(facts: Facts) -> object:
    regs = _base(facts).entries.get((0xD, 0), ZERO)  # CpuidSet.xcr0_supported
    return regs[3] << 32 | regs[0]


@fact("base.xss", "mask", "0xD.1 EDX:ECX of the table before the template", XSS_REFS,
      reads=("base",))
def _base_xss(facts: Facts) -> object:
    regs = _base(facts).entries.get((0xD, 1), ZERO)  # CpuidSet.xss_supported
    return regs[3] << 32 | regs[2]
