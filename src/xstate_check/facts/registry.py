"""The fact registry: every name the rules read, declared once with its kind, doc and needs.

A rule names facts (``xcr0``, ``host.guest_permitted``), xfeature constants (``tilecfg``,
``avx512``), CPUID feature bits (``AMX_TILE``) and a few functions (``std_size(mask)``).
Each fact is declared by ``fact(name, kind, doc, sources, reads)`` next to its computation,
in the module of its stage; ``reads`` says what of the subject beyond its CPUID table it
needs, which is how evaluation skips a rule a subject cannot answer without computing it.

A fact the subject lacks (no HostState, a dump without leaf 0xD subleaves) raises
``Missing``: the rule that reads it is *not applicable*, never a false finding.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Literal

from xstate_check.cpuid import ZERO
from xstate_check.errors import Location
from xstate_check.layout import XsaveLayout
from xstate_check.records import NamedTuple
from xstate_check.subject import Subject
from xstate_check.xfeatures import SUPERVISOR_MASK, bits

__all__ = [
    "FACTS",
    "FUNCTIONS",
    "ITEM_FIELDS",
    "NEEDS",
    "BitRef",
    "EntryItem",
    "FactSpec",
    "Facts",
    "FunctionSpec",
    "Kind",
    "MaskRefs",
    "Missing",
    "Read",
    "available_of",
    "fact",
    "function",
    "language_type",
    "needs_of",
]

#: How a value is typed in the rule language and shown in a message.
#: ``mask``: an xfeature mask (``0x602e7 (x87|sse|…)``); ``size``: bytes (``2696 (0xa88)``);
#: ``int``: a number shown in hex; ``items``: a list of entries a rule can walk with ``each``.
Kind = Literal["mask", "size", "int", "bool", "str", "version", "sizes", "items"]

#: What a fact reads beyond the subject's CPUID table: the leaf 0xD subleaves (a libcpuid
#: native dump has none), the table before a template, the host's probe, a restore's
#: destination, or a reference table to compare with (the host's probe or the table before
#: the template, either). A subject without one of them makes every rule reading the fact
#: not applicable.
Read = Literal["subleaves", "base", "host", "destination", "reference"]

#: Each Read as a bit, so a rule's needs are one integer.
NEEDS: dict[str, int] = {"host": 1, "base": 2, "subleaves": 4, "destination": 8,
                         "reference": 16}

#: (leaf, subleaf, register, bits): CPUID register bits a fact is computed from.
BitRef = tuple[int, int, str, int]

_ALL = 0xFFFF_FFFF


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
Compute = Callable[["Facts"], object]


class FactSpec(NamedTuple):
    """One named fact: kind, meaning, how it is computed, which CPUID bits and what it reads."""

    name: str
    kind: Kind
    doc: str
    compute: Compute
    sources: SourceSpec = ()
    reads: tuple[Read, ...] = ()

    def bit_refs(self, facts: Facts, value: object) -> Iterable[BitRef]:
        """Return the CPUID bits this fact's value came from, on one subject."""
        if callable(self.sources):
            return self.sources(facts, value)
        return self.sources

    @property
    def needs(self) -> int:
        """Return the NEEDS bits of what this fact reads."""
        return sum(NEEDS[read] for read in set(self.reads))


class FunctionSpec(NamedTuple):
    """A function a rule can call: argument kinds, result kind, implementation, needs."""

    name: str
    args: tuple[Kind, ...]
    kind: Kind
    doc: str
    call: Callable[..., object]
    sources: Callable[[Facts], Iterable[BitRef]] | None = None
    reads: tuple[Read, ...] = ()

    @property
    def needs(self) -> int:
        """Return the NEEDS bits of what this function reads."""
        return sum(NEEDS[read] for read in set(self.reads))


#: The facts ``Facts`` sets when it is made (with ``registers``; XCR0 always): most rules
#: read them.
PRESET = frozenset({"role", "has_template", "max_basic_leaf", "xcr0", "size_max", "xss",
                    "compacted_size_current", "base.xcr0", "base.xss"})


class Facts(dict[str, Any]):
    """The facts of one subject: a dict that computes a missing name on first read."""

    __slots__ = ("_computes", "_layout", "_subleaves", "cpuid", "subject")

    def __init__(self, subject: Subject, preset: Iterable[Mapping[str, Any]] = (),
                 registers: bool = True) -> None:
        """Start the facts of ``subject`` with the values of each of ``preset`` (a later
        one's over an earlier one's): facts the caller has at hand (its feature bits);
        with ``registers``, the facts of ``PRESET`` too (else each on its first read)."""
        if preset:
            for values in preset:
                # Into an empty dict the first copies at C level, faster than into a filled
                # one.
                self.update(values)
        self.subject = subject
        cpuid = self.cpuid = subject.cpuid
        self._layout: XsaveLayout | None = None
        self._subleaves: XsaveLayout | None = None
        # Where the source holds leaf 0xD's subleaves, no fact needs to check for them.
        complete = cpuid.leaf_0xd_complete
        self._computes = _UNCHECKED if complete else _CHECKED
        # Facts most rules read, set here at less cost than a first read's computation: XCR0
        # (every family reads it); with ``registers``, the subject's role and template, plain
        # registers of leaves 0 and 0xD, and XCR0 and XSS of the table before the template.
        # Each is declared, and computed the same way, in its stage's module; a test
        # compares the two.
        entries = cpuid.entries
        sub0 = entries.get(_XCR0_ENTRY, ZERO)
        self["xcr0"] = sub0[3] << 32 | sub0[0]
        if not registers:
            return
        self["role"] = subject.role
        self["has_template"] = subject.template is not None
        self["max_basic_leaf"] = entries.get(_LEAF_0, ZERO)[0]
        self["size_max"] = sub0[2]
        if complete:  # else they are Missing
            sub1 = entries.get(_XSS_ENTRY, ZERO)
            self["xss"] = sub1[3] << 32 | sub1[2]
            self["compacted_size_current"] = sub1[1]
        base = subject.base
        if base is not None:
            base_entries = base.entries
            sub0 = base_entries.get(_XCR0_ENTRY, ZERO)
            self["base.xcr0"] = sub0[3] << 32 | sub0[0]
            sub1 = base_entries.get(_XSS_ENTRY, ZERO)
            self["base.xss"] = sub1[3] << 32 | sub1[2]

    def __missing__(self, name: str) -> object:
        value = self[name] = self._computes[name](self)
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

    @property
    def subleaves(self) -> XsaveLayout:
        """Return the table's component subleaves decoded, for what reads them alone (sizes,
        offsets, flags): ``XsaveLayout.of_subleaves``, its 0xD.0 and 0xD.1 fields perhaps
        zero; Missing where the source has no subleaves."""
        if self._subleaves is None:
            self.require_subleaves()
            self._subleaves = XsaveLayout.of_subleaves(self.cpuid)
        return self._subleaves


#: Where XCR0 is enumerated (CpuidSet.xcr0_supported): 0xD.0 EDX:EAX; XSS: 0xD.1 EDX:ECX.
_XCR0_ENTRY = (0xD, 0)
_XSS_ENTRY = (0xD, 1)
_LEAF_0 = (0, 0)

FACTS: dict[str, FactSpec] = {}
#: Each fact's computation (``FACTS[name].compute``), and the same without the check that
#: the source holds leaf 0xD's subleaves (for the Facts of a source that holds them).
_CHECKED: dict[str, Compute] = {}
_UNCHECKED: dict[str, Compute] = {}
FUNCTIONS: dict[str, FunctionSpec] = {}


def fact(name: str, kind: Kind, doc: str, sources: SourceSpec = (),
         reads: tuple[Read, ...] = ()) -> Callable[[Compute], Compute]:
    """Declare the fact ``name``: the decorated function computes it from a Facts.

    A fact that reads the leaf 0xD subleaves is Missing, without being computed, on a
    source that holds none.
    """
    def register(compute: Compute) -> Compute:
        assert name not in FACTS, f"fact {name!r} declared twice"
        checked = compute
        if "subleaves" in reads:
            def checked(facts: Facts) -> object:
                facts.require_subleaves()
                return compute(facts)
        FACTS[name] = FactSpec(name, kind, doc, checked, sources, reads)
        _CHECKED[name] = checked
        _UNCHECKED[name] = compute
        return compute

    return register


def function(name: str, args: tuple[Kind, ...], kind: Kind, doc: str, *,
             sources: Callable[[Facts], Iterable[BitRef]] | None = None,
             reads: tuple[Read, ...] = ()) -> Callable[[Callable[..., object]],
                                                       Callable[..., object]]:
    """Declare the rule-language function ``name``: the decorated one gets (facts, *args)."""
    def register(call: Callable[..., object]) -> Callable[..., object]:
        assert name not in FUNCTIONS, f"function {name!r} declared twice"
        FUNCTIONS[name] = FunctionSpec(name, args, kind, doc, call, sources, reads)
        return call

    return register


def reg(leaf: int, subleaf: int, register: str, mask: int = _ALL) -> BitRef:
    """Return a BitRef: ``mask`` bits of one CPUID register (all of it by default)."""
    return (leaf, subleaf, register, mask)


XCR0_REFS = (reg(0xD, 0, "eax"), reg(0xD, 0, "edx"))
XSS_REFS = (reg(0xD, 1, "ecx"), reg(0xD, 1, "edx"))


@functools.lru_cache(maxsize=1024)
def mask_refs(mask: int) -> tuple[BitRef, ...]:
    """Return the 0xD.0 / 0xD.1 enumeration bits and the subleaves of the xfeatures of mask."""
    refs: list[BitRef] = []
    for number in bits(mask):
        if SUPERVISOR_MASK >> number & 1:
            refs.append(reg(0xD, 1, "ecx" if number < 32 else "edx", 1 << (number % 32)))
        else:
            refs.append(reg(0xD, 0, "eax" if number < 32 else "edx", 1 << (number % 32)))
        if number >= 2:
            refs.extend(reg(0xD, number, register) for register in ("eax", "ebx", "ecx"))
    return tuple(refs)


class MaskRefs:
    """The BitRefs ``mask_refs(mask)`` lists, listed only when iterated: a finding's location
    asks which template lines own them, which ``mask`` answers register by register."""

    __slots__ = ("mask",)

    def __init__(self, mask: int) -> None:
        self.mask = mask

    def __iter__(self) -> Iterator[BitRef]:
        return iter(mask_refs(self.mask))


def component_sources(facts: Facts, value: object) -> Iterable[BitRef]:
    """Return the BitRefs of the xfeatures a mask fact names (its value)."""
    return MaskRefs(value if isinstance(value, int) else 0)


def needs_of(facts_read: Iterable[str], functions_read: Iterable[str] = ()) -> int:
    """Return the NEEDS bits of a set of facts and functions, as they declare them."""
    needs = 0
    for name in facts_read:
        spec = FACTS.get(name)
        if spec is not None:
            needs |= spec.needs
    for name in functions_read:
        call = FUNCTIONS.get(name)
        if call is not None:
            needs |= call.needs
    return needs


def available_of(subject: Subject) -> int:
    """Return the NEEDS bits a subject can satisfy."""
    available = 0
    if subject.host is not None:
        available |= NEEDS["host"] | NEEDS["reference"]
    if subject.base is not None:
        available |= NEEDS["base"] | NEEDS["reference"]
    if subject.cpuid.leaf_0xd_complete:
        available |= NEEDS["subleaves"]
    if subject.destination is not None:
        available |= NEEDS["destination"]
    return available


def language_type(kind: Kind) -> str:
    """Return the rule language's type of a kind: ``int`` for masks, sizes and numbers."""
    if kind in ("mask", "size", "int"):
        return "int"
    if kind == "sizes":
        return "list:int"
    return kind
