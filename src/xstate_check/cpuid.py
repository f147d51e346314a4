"""CpuidSet: an immutable CPUID table, and the named CPUID feature bits."""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import Any, Literal, TypeVar

import attrs

from xstate_check.errors import Location
from xstate_check.records import NamedTuple

__all__ = [
    "FEATURES",
    "REGISTERS",
    "CpuidSet",
    "FeatureBit",
    "Provenance",
    "Registers",
    "Role",
    "SourceKind",
    "copy_mapping",
    "memoized",
    "recorded_source_kind",
]

REGISTERS = ("eax", "ebx", "ecx", "edx")

#: ``guest``: a table a VMM hands to KVM_SET_CPUID2 (0xD EBX sizes are the creation values
#: KVM recomputes); ``cpu``: a CPU's own view as an OS saw it (EBX follows that OS's XCR0).
Role = Literal["guest", "cpu"]

#: What a table was read from: a ``file`` (findings point at it), standard input, a bundled
#: ``profile``, this ``host``'s CPUID, this host's ``kvm``, a rule ``example``, or a table
#: built in ``memory``.
SourceKind = Literal["file", "stdin", "profile", "host", "kvm", "example", "memory"]

#: The source names that are not files: what ``load_cpuid`` reads as keywords, and the
#: names of tables read from standard input or built in memory.
STDIN_SOURCE = "<stdin>"
MEMORY_SOURCE = "<memory>"
PROFILE_PREFIX = "profile:"


def recorded_source_kind(source: str) -> SourceKind:
    """Return the kind of a source name recorded in a table file (its ``source`` key).

    Only the exact keywords are not files: ``host``, ``kvm``, ``profile:NAME``, ``<stdin>``
    and ``<memory>``; ``hosts-spr.json`` or ``kvm-table.json`` are files.
    """
    if source in ("host", "kvm"):
        return "host" if source == "host" else "kvm"
    if source.startswith(PROFILE_PREFIX):
        return "profile"
    if source == STDIN_SOURCE:
        return "stdin"
    if source == MEMORY_SOURCE:
        return "memory"
    return "file"

#: KVM_CPUID_FLAG_SIGNIFCANT_INDEX (sic): the entry's subleaf matters.
SIGNIFICANT_INDEX = 1

# Leaves whose subleaf (ECX input) selects different data.
INDEXED_LEAVES = frozenset(
    {0x4, 0x7, 0xB, 0xD, 0xF, 0x10, 0x12, 0x14, 0x17, 0x18, 0x1D, 0x1E, 0x1F, 0x20, 0x23,
     0x24, 0x8000001D, 0x80000020, 0x80000026}
)


class Registers(NamedTuple):
    """The four output registers of one CPUID (leaf, subleaf)."""

    eax: int = 0
    ebx: int = 0
    ecx: int = 0
    edx: int = 0


ZERO = Registers()


class FeatureBit(NamedTuple):
    """Where a named CPUID feature bit lives."""

    leaf: int
    subleaf: int
    register: str
    bit: int


def _bits(leaf: int, subleaf: int, register: str, **named: int) -> dict[str, FeatureBit]:
    return {name: FeatureBit(leaf, subleaf, register, bit) for name, bit in named.items()}


#: Named feature bits (Linux arch/x86/include/asm/cpufeatures.h), by the names Linux uses.
FEATURES: dict[str, FeatureBit] = {
    **_bits(1, 0, "edx", FPU=0, FXSR=24, SSE=25, SSE2=26),
    **_bits(1, 0, "ecx", SSE3=0, FMA=12, XSAVE=26, OSXSAVE=27, AVX=28, F16C=29, HYPERVISOR=31),
    **_bits(7, 0, "ebx", AVX2=5, MPX=14, AVX512F=16, AVX512DQ=17, AVX512IFMA=21,
            AVX512PF=26, AVX512ER=27, AVX512CD=28, INTEL_PT=25, AVX512BW=30, AVX512VL=31),
    **_bits(7, 0, "ecx", AVX512VBMI=1, PKU=3, OSPKE=4, AVX512_VBMI2=6, SHSTK=7, GFNI=8,
            VAES=9, VPCLMULQDQ=10, AVX512_VNNI=11, AVX512_BITALG=12, AVX512_VPOPCNTDQ=14,
            ENQCMD=29),
    **_bits(7, 0, "edx", AVX512_4VNNIW=2, AVX512_4FMAPS=3, AVX512_VP2INTERSECT=8, ARCH_LBR=19,
            IBT=20, AMX_BF16=22, AVX512_FP16=23, AMX_TILE=24, AMX_INT8=25),
    **_bits(7, 1, "eax", AVX_VNNI=4, AVX512_BF16=5, AMX_FP16=21),
    **_bits(7, 1, "edx", AMX_COMPLEX=8, AVX10=19, APX=21),
    **_bits(0xD, 1, "eax", XSAVEOPT=0, XSAVEC=1, XGETBV1=2, XSAVES=3, XFD=4),
    **_bits(0x80000001, 0, "edx", LM=29),
}


_T = TypeVar("_T")
_K = TypeVar("_K")
_O = TypeVar("_O")


def memoized(cache: dict[Any, Any], key: object, compute: Callable[[_O], _T], owner: _O) -> _T:
    """Return ``compute(owner)``, kept in ``cache`` under ``key`` from its first use."""
    try:
        return cache[key]  # type: ignore[no-any-return]
    except KeyError:
        value = cache[key] = compute(owner)
        return value
_V = TypeVar("_V")


def copy_mapping(mapping: Mapping[_K, _V]) -> dict[_K, _V]:
    """Return a dict copy of a mapping; a mapping proxy's dict is copied at once."""
    if isinstance(mapping, MappingProxyType):
        return mapping.copy()  # dict() would read a proxy key by key, ten times slower
    return dict(mapping)


def _freeze(entries: Mapping[tuple[int, int], Registers]) -> Mapping[tuple[int, int], Registers]:
    return MappingProxyType(dict(sorted(entries.items())))


def _freeze_flags(flags: Mapping[tuple[int, int], int]) -> Mapping[tuple[int, int], int]:
    return MappingProxyType(dict(flags))



BitKey = tuple[int, int, str, int]
RegisterKey = tuple[int, int, str]
Pin = tuple[int, Location]
#: (leaf, subleaf, register, mask): bits of one register (a fact's CPUID sources).
BitRef = tuple[int, int, str, int]


class Provenance(Mapping[BitKey, Location]):
    """Which template line set or cleared each CPUID bit: (leaf, subleaf, register, bit).

    Stored per register as (mask, location) pins in the order they were applied, the last
    pin of a bit owning it; applying a template adds one pin per register modifier instead
    of one entry per bit.
    """

    __slots__ = ("_any", "_pins")

    def __init__(self, pins: Mapping[RegisterKey, tuple[Pin, ...]] | None = None) -> None:
        self._pins: dict[RegisterKey, tuple[Pin, ...]] = dict(pins or {})
        self._any: bool | None = None  # whether a pin owns a bit: worked out when asked

    @classmethod
    def from_bits(cls, bits: Mapping[BitKey, Location]) -> Provenance:
        """Return the provenance of a plain per-bit mapping."""
        if isinstance(bits, Provenance):
            return bits
        pins: dict[RegisterKey, tuple[Pin, ...]] = {}
        for (leaf, subleaf, register, bit), where in bits.items():
            key = (leaf, subleaf, register)
            pins[key] = (*pins.get(key, ()), (1 << bit, where))
        return cls(pins)

    def pins(self, leaf: int, subleaf: int, register: str) -> tuple[Pin, ...]:
        """Return the (mask, location) pins of one register, in the order applied."""
        return self._pins.get((leaf, subleaf, register), ())

    def pinned(self, leaf: int, subleaf: int, register: str, mask: int) -> list[Pin]:
        """Return, for the bits of ``mask``, each owning location with the bits it owns."""
        owners: list[Pin] = []
        remaining = mask
        for pin_mask, where in reversed(self.pins(leaf, subleaf, register)):
            owned = pin_mask & remaining
            if owned:
                owners.append((owned, where))
                remaining &= ~owned
        return owners

    def register_keys(self) -> list[RegisterKey]:
        """Return the (leaf, subleaf, register) keys that have pins."""
        return list(self._pins)

    def by_register(self) -> Mapping[RegisterKey, tuple[Pin, ...]]:
        """Return the (mask, location) pins of each register with pins, in the order applied."""
        return MappingProxyType(self._pins)

    def __getitem__(self, key: BitKey) -> Location:
        leaf, subleaf, register, bit = key
        for pin_mask, where in reversed(self.pins(leaf, subleaf, register)):
            if pin_mask >> bit & 1:
                return where
        raise KeyError(key)

    def __iter__(self) -> Iterator[BitKey]:
        for (leaf, subleaf, register), pins in self._pins.items():
            union = 0
            for pin_mask, _ in pins:
                union |= pin_mask
            for bit in range(union.bit_length()):
                if union >> bit & 1:
                    yield (leaf, subleaf, register, bit)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __bool__(self) -> bool:
        if self._any is None:
            self._any = any(mask for pins in self._pins.values() for mask, _ in pins)
        return self._any


#: Per entry, the bits of each register kept and those set: ``(keep, put)``, in eax…edx order.
EntryMasks = dict[tuple[int, int], tuple[tuple[int, int, int, int], tuple[int, int, int, int]]]
_MASKS = "applied masks"  # where a table keeps its EntryMasks among its derived values
#: Where a table keeps the table it shares each part with (see ``CpuidSet.trusted``).
_SHARE_KEYS = {part: f"shares:{part}" for part in ("keys", "flags", "xsave_components")}
#: The names of each combination of parts ``CpuidSet.trusted`` was given, worked out once.
_SHARE_NAMES: dict[tuple[str, ...], tuple[str, ...]] = {}


def _freeze_provenance(provenance: Mapping[BitKey, Location]) -> Provenance:
    return Provenance.from_bits(provenance)


def _vendor(table: CpuidSet) -> str:
    regs = table.get(0)
    raw = struct.pack("<III", regs.ebx, regs.edx, regs.ecx)
    return raw.decode("latin-1").rstrip("\0")


def _leaf_subleaves(table: CpuidSet) -> Mapping[int, tuple[int, ...]]:
    found: dict[int, list[int]] = {}
    for leaf, subleaf in table.entries:
        found.setdefault(leaf, []).append(subleaf)
    return MappingProxyType({leaf: tuple(sorted(subs)) for leaf, subs in found.items()})


def _freeze_meta(meta: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(meta))


@attrs.frozen(eq=False)
class CpuidSet:
    """An immutable CPUID table: (leaf, subleaf) -> Registers, with where it came from.

    ``source`` names the origin (a path, ``host``, ``kvm``, ``profile:NAME``) and
    ``source_kind`` says what kind of origin it is; ``role`` whether the table is a guest's
    or a CPU's own view; ``leaf_0xd_complete`` is False where the source holds no subleaf
    of leaf 0xD beyond 0 and 1 (libcpuid's native dumps), so that their absence says nothing
    about the CPU. ``flags`` holds KVM's per-entry flags where known
    (``KVM_CPUID_FLAG_SIGNIFCANT_INDEX``); ``provenance`` maps (leaf, subleaf, register,
    bit) to the template line that set or cleared that bit; ``meta`` carries free-form facts
    of the source for display (kernel release, …): nothing decides on it. An entry the
    table lacks reads as zero; ``has`` tells the two apart.
    """

    entries: Mapping[tuple[int, int], Registers] = attrs.field(converter=_freeze)
    source: str = MEMORY_SOURCE
    flags: Mapping[tuple[int, int], int] = attrs.field(factory=dict, converter=_freeze_flags)
    provenance: Provenance = attrs.field(factory=Provenance, converter=_freeze_provenance)
    meta: Mapping[str, str] = attrs.field(factory=dict, converter=_freeze_meta)
    role: Role = "cpu"
    source_kind: SourceKind = "memory"
    leaf_0xd_complete: bool = True
    #: Values derived from the (immutable) entries, computed once (see ``derived``), and
    #: the tables whose parts this one shares (see ``trusted``).
    _derived: dict[str, object] = attrs.field(factory=dict, init=False, repr=False, eq=False)

    @classmethod
    def from_rows(
        cls, rows: Iterable[tuple[int, int, int, int, int, int]], source: str = MEMORY_SOURCE,
        **kwargs: object,
    ) -> CpuidSet:
        """Build a set from ``(leaf, subleaf, eax, ebx, ecx, edx)`` rows."""
        entries = {(row[0], row[1]): Registers(*row[2:6]) for row in rows}
        return cls(entries, source, **kwargs)  # type: ignore[arg-type]

    @classmethod
    def trusted(cls, entries: dict[tuple[int, int], Registers], source: str, *,
                flags: dict[tuple[int, int], int] | None, provenance: Provenance,
                meta: dict[str, str], like: CpuidSet, shares: tuple[str, ...] = (),
                masks: EntryMasks | None = None) -> CpuidSet:
        """Return a set of entries already sorted by (leaf, subleaf), without sorting again.

        The dicts are owned by the set from here on (the caller keeps no reference); role,
        source kind and leaf 0xD completeness are those of ``like``, and so are the KVM
        flags where ``flags`` is None. ``shares`` names the parts of the table that are
        those of ``like`` (changed elsewhere): ``keys`` (the (leaf, subleaf) keys),
        ``flags`` (the keys and their KVM flags), ``xsave_components`` (the leaf 0xD
        subleaves from 2 up); what is derived from such a part alone is taken from
        ``like`` (``shared``). ``masks``, where given, say how the entries came from those
        of ``like`` (see ``applied_masks``).
        """
        made = cls.__new__(cls)
        set_entries, set_source, set_flags, set_provenance, set_meta, set_role, set_kind, \
            set_complete, set_derived = _SLOT_SETTERS
        set_entries(made, MappingProxyType(entries))
        set_source(made, source)
        set_flags(made, like.flags if flags is None else MappingProxyType(flags))
        set_provenance(made, provenance)
        set_meta(made, MappingProxyType(meta))
        set_role(made, like.role)
        set_kind(made, like.source_kind)
        set_complete(made, like.leaf_0xd_complete)
        names = _SHARE_NAMES.get(shares)
        if names is None:
            names = _SHARE_NAMES[shares] = tuple(
                _SHARE_KEYS.get(part) or f"shares:{part}" for part in shares)
        derived: dict[str, object] = dict.fromkeys(names, like)
        if masks is not None:
            derived[_MASKS] = masks
        set_derived(made, derived)
        return made

    def applied_masks(self) -> EntryMasks | None:
        """Return how this table's entries came from those of ``shared("keys")``: per entry
        changed, ``(keep, put)`` with each register ``(old & keep) | put``, every other
        entry the same; None where the table does not say so (see ``trusted``)."""
        masks = self._derived.get(_MASKS)
        return masks if isinstance(masks, dict) else None

    def derived(self, name: str, compute: Callable[[CpuidSet], _T],
                part: str | None = None) -> _T:
        """Return ``compute(self)``, computed on first use: a value derived from the table.

        ``compute`` must read nothing but the table (which is immutable), and ``name`` must
        name it alone (one name, one function). With ``part`` (see ``trusted``) it reads
        that part alone, so a table sharing the part with another takes the other's value.
        """
        table = self
        derived = self._derived
        if part is not None:
            # The table that owns the part: followed here, not by calling each in turn.
            shares = _SHARE_KEYS.get(part) or f"shares:{part}"
            source = derived.get(shares)
            while source is not None:
                table = source  # type: ignore[assignment]
                derived = table._derived
                source = derived.get(shares)
        try:
            return derived[name]  # type: ignore[return-value]
        except KeyError:
            value = derived[name] = compute(table)
            return value

    def shared(self, part: str) -> CpuidSet | None:
        """Return the table whose ``part`` this one has unchanged (see ``trusted``), or None."""
        table = self._derived.get(_SHARE_KEYS.get(part) or f"shares:{part}")
        return table if isinstance(table, CpuidSet) else None

    def leaf_subleaves(self) -> Mapping[int, tuple[int, ...]]:
        """Return each leaf's subleaves the table holds, ascending (computed once)."""
        return self.derived("leaf_subleaves", _leaf_subleaves, "keys")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CpuidSet):
            return NotImplemented
        return copy_mapping(self.entries) == copy_mapping(other.entries)

    __hash__ = None  # type: ignore[assignment]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, key: object) -> bool:
        return key in self.entries

    def has(self, leaf: int, subleaf: int = 0) -> bool:
        """Return whether the table holds an entry for (leaf, subleaf)."""
        return (leaf, subleaf) in self.entries

    def get(self, leaf: int, subleaf: int = 0) -> Registers:
        """Return the registers of (leaf, subleaf); all zero where the table has no entry."""
        return self.entries.get((leaf, subleaf), ZERO)

    def register(self, leaf: int, subleaf: int, register: str) -> int:
        """Return one register of (leaf, subleaf) by name (``eax``…``edx``)."""
        return getattr(self.get(leaf, subleaf), register)  # type: ignore[no-any-return]

    def feature(self, name: str) -> bool:
        """Return whether the named feature bit (``AVX``, ``XSAVES``, ``AMX_TILE``…) is set."""
        where = FEATURES[name]
        return bool(self.register(where.leaf, where.subleaf, where.register) >> where.bit & 1)

    def features(self) -> dict[str, bool]:
        """Return every named feature bit and whether it is set."""
        return {name: self.feature(name) for name in FEATURES}

    @property
    def is_file(self) -> bool:
        """Return whether the table was read from a file (findings can point at it)."""
        return self.source_kind == "file"

    @property
    def xcr0_supported(self) -> int:
        """Return CPUID.(0xD,0) EDX:EAX, the XCR0 bits enumerated (zero without leaf 0xD)."""
        regs = self.get(0xD, 0)
        return regs.edx << 32 | regs.eax

    @property
    def xss_supported(self) -> int:
        """Return CPUID.(0xD,1) EDX:ECX, the IA32_XSS bits enumerated (zero without them)."""
        regs = self.get(0xD, 1)
        return regs.edx << 32 | regs.ecx

    @property
    def max_basic_leaf(self) -> int:
        """Return CPUID.0:EAX, the highest basic leaf."""
        return self.get(0).eax

    @property
    def vendor(self) -> str:
        """Return the vendor string of leaf 0 (``GenuineIntel``, ``AuthenticAMD``…)."""
        return self.derived("vendor", _vendor)

    @property
    def signature(self) -> int:
        """Return CPUID.1:EAX, the family/model/stepping signature."""
        return self.get(1).eax

    @property
    def brand(self) -> str:
        """Return the brand string of leaves 0x80000002..4, stripped; empty where absent."""
        raw = b"".join(
            struct.pack("<IIII", *self.get(leaf)) for leaf in (0x80000002, 0x80000003, 0x80000004)
        )
        return raw.decode("latin-1").split("\0", 1)[0].strip()

    def subleaves(self, leaf: int) -> list[int]:
        """Return the subleaves the table holds for ``leaf``, ascending."""
        return [sub for (lf, sub) in self.entries if lf == leaf]

    def replace(self, **changes: object) -> CpuidSet:
        """Return a copy with some fields replaced."""
        return attrs.evolve(self, **changes)  # type: ignore[arg-type]

    def with_registers(self, leaf: int, subleaf: int, **registers: int) -> CpuidSet:
        """Return a copy where some registers of (leaf, subleaf) are replaced (entry added)."""
        entries = dict(self.entries)
        entries[(leaf, subleaf)] = self.get(leaf, subleaf)._replace(**registers)
        return attrs.evolve(self, entries=entries)

    def without(self, leaf: int, subleaf: int = 0) -> CpuidSet:
        """Return a copy without the entry (leaf, subleaf)."""
        entries = {key: value for key, value in self.entries.items() if key != (leaf, subleaf)}
        return attrs.evolve(self, entries=entries)

    def rows(self) -> list[tuple[int, int, int, int, int, int]]:
        """Return the table as sorted ``(leaf, subleaf, eax, ebx, ecx, edx)`` rows."""
        return [(leaf, sub, *regs) for (leaf, sub), regs in self.entries.items()]

    def flag(self, leaf: int, subleaf: int) -> int:
        """Return KVM's flags for an entry: as recorded, else derived from the leaf number."""
        recorded = self.flags.get((leaf, subleaf))
        if recorded is not None:
            return recorded
        return SIGNIFICANT_INDEX if leaf in INDEXED_LEAVES else 0


#: The slots' own setters, in ``CpuidSet.trusted``'s order: a frozen class's slot set
#: without the refusing ``__setattr__`` (what ``object.__setattr__`` does, found once).
_SLOT_SETTERS = tuple(getattr(CpuidSet, name).__set__ for name in (
    "entries", "source", "flags", "provenance", "meta", "role", "source_kind",
    "leaf_0xd_complete", "_derived"))
