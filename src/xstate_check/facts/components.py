"""Component attributes: what a rule reads of the component a quantifier binds.

``all c in components(xcr0 | xss): c.size != 0`` walks the xfeatures 2 to 62 of a mask
(x87 and SSE live in the legacy area and have no subleaf; bit 63 is no component) and reads
attributes of each: its subleaf 0xD.n as ``XsaveLayout`` decoded it (``c.size``,
``c.offset``, ``c.aligned`` …), what the xfeature table says of it (``c.name``,
``c.feature``, ``c.arch_size`` …), the same subleaf in the host's or a restore
destination's table (``c.host.size``, ``c.dest.offset`` …). Each is declared once here with
its kind, doc and what it reads, as facts are.

While a quantifier runs, the variable is bound in the Facts dict to a ``layout.Component``
(the table's own subleaf, or an all-zero one for an xfeature without a subleaf).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

from xstate_check.cpuid import FEATURES, CpuidSet
from xstate_check.facts.registry import NEEDS, BitRef, Facts, Kind, Missing, Read
from xstate_check.layout import LEGACY_AND_HEADER, Component, XsaveLayout
from xstate_check.records import NamedTuple
from xstate_check.xfeatures import EXCLUSIVE_PAIRS, EXTRA_FEATURE_NEEDS, XFEATURES, name_of

__all__ = ["ATTRIBUTES", "COMPONENT_BITS", "NOWHERE", "AttributeSpec", "Depends",
           "attribute_needs", "bare", "feature_refs", "reference_components"]

#: The xfeatures a quantifier walks: 2 to 62.
COMPONENT_BITS = ((1 << 63) - 1) & ~0x3

#: An all-zero component of each number: what a table without its subleaf holds.
_BARE = tuple(Component(number, 0, 0, 0, 0) for number in range(64))


#: A component no table has (number 64): what a subleaf attribute reads for every xfeature
#: without a subleaf.
NOWHERE = Component(64, 0, 0, 0, 0)


def bare(number: int) -> Component:
    """Return the all-zero component ``number``."""
    return _BARE[number]


#: How an attribute is read: given the Facts key the variable is bound to, the closure that
#: reads the attribute of the component bound there.
Reader = Callable[[str], Callable[[Facts], object]]
#: How an attribute of many components is read at once.
Values = Callable[[Facts, list[Component]], list[Any]]


#: What an attribute's value depends on: the xfeature's number alone (the xfeature table),
#: the component's subleaf in this table (the same for every xfeature without one), or
#: anything of the subject (its feature bits, another table).
Depends = Literal["number", "subleaf", "subject"]


class AttributeSpec(NamedTuple):
    """One attribute of a component: kind, meaning, how it is read, what it reads.

    ``depends`` says what its value depends on (how a quantifier may compute it for many
    components at once); ``layout`` that it reads the component's own subleaf, so that the
    quantifier binds the table's subleaf rather than a bare one; ``feature`` that it reads
    the CPUID feature bits of the component (a finding's location then counts those bits);
    ``mask``, for a condition, gives the components of the subject it holds for at once, and
    ``values`` the attribute of each of a list of components at once (else each is read
    in turn).
    """

    name: str
    kind: Kind
    doc: str
    read: Reader
    depends: Depends = "number"
    reads: tuple[Read, ...] = ()
    layout: bool = False
    feature: bool = False
    mask: Callable[[Facts], int] | None = None
    values: Values | None = None

    def value(self, facts: Facts, component: Component) -> object:
        """Return this attribute of ``component`` (bound for the read under a private key)."""
        facts[_VALUE_KEY] = component
        return self.read(_VALUE_KEY)(facts)


_VALUE_KEY = "$ value"
_NONE = (0, 0)
ATTRIBUTES: dict[str, AttributeSpec] = {}


def _attribute(name: str, kind: Kind, doc: str, read: Reader, **more: object) -> None:
    assert name not in ATTRIBUTES, f"attribute {name!r} declared twice"
    ATTRIBUTES[name] = AttributeSpec(name, kind, doc, read, **more)  # type: ignore[arg-type]


def _layout_attribute(name: str, kind: Kind, doc: str, read: Reader, values: Values) -> None:
    _attribute(name, kind, doc, read, depends="subleaf", reads=("subleaves",), layout=True,
               values=values)


# --- the xfeature table -----------------------------------------------------------------

_NAMES = tuple(name_of(number) for number in range(64))
_ARCH_SIZES = tuple((XFEATURES[n].size or 0) if n in XFEATURES else 0 for n in range(64))
_EXCLUSIVE = tuple(sum(b for a, b in EXCLUSIVE_PAIRS if 1 << n & a)
                   | sum(a for a, b in EXCLUSIVE_PAIRS if 1 << n & b) for n in range(64))
_FEATURE_NAMES = tuple((XFEATURES[n].feature or "") if n in XFEATURES else ""
                       for n in range(64))
#: Each xfeature's CPUID feature, and the features without state of their own that need it
#: (AVX10 needs YMM and the AVX-512 state).
_NEEDED_BY = tuple(
    tuple(name for name in ((_FEATURE_NAMES[n],) if _FEATURE_NAMES[n] else ())
          + tuple(extra for extra, needs in EXTRA_FEATURE_NEEDS.items() if needs >> n & 1)
          if name)
    for n in range(64))
#: Each CPUID feature that needs state: the xfeatures it needs, and those it announces.
_NEEDS_OF = tuple(
    (name, sum(1 << n for n in range(64) if name in _NEEDED_BY[n]),
     sum(1 << n for n in range(64) if _FEATURE_NAMES[n] == name))
    for name in dict.fromkeys(name for names in _NEEDED_BY for name in names))


# Their feature bits are read from the Facts, where a run sets them all at once; none lives
# in leaf 0xD, so none is Missing.
assert all(FEATURES[name].leaf != 0xD for name, _, _ in _NEEDS_OF)
#: Where ``_features`` keeps its answer in the Facts (no fact's name).
_FEATURE_MASKS = "$feature masks"


def _features(facts: Facts) -> tuple[int, int]:
    """Return (the xfeatures whose own feature is set, those some set feature needs)."""
    found: tuple[int, int] | None = facts.get(_FEATURE_MASKS)
    if found is None:
        own = needed = 0
        for name, needs, announces in _NEEDS_OF:
            if facts[name]:
                needed |= needs
                own |= announces
        found = facts[_FEATURE_MASKS] = (own, needed)
    return found


_attribute("bit", "int", "the xfeature's number n (its bit in XCR0 or IA32_XSS)",
           lambda key: lambda facts: facts[key].number,
           values=lambda facts, cs: [c.number for c in cs])
_attribute("mask", "mask", "the xfeature's bit as a mask (1 << n)",
           lambda key: lambda facts: 1 << facts[key].number,
           values=lambda facts, cs: [1 << c.number for c in cs])
_attribute("name", "str", "the xfeature's name (``tilecfg``; ``bitN`` for one the table lacks)",
           lambda key: lambda facts: _NAMES[facts[key].number])
_attribute("arch_size", "size", "the architectural size: Linux's structure for the xfeature "
           "(0 where it varies or is not fixed)",
           lambda key: lambda facts: _ARCH_SIZES[facts[key].number],
           values=lambda facts, cs: [_ARCH_SIZES[c.number] for c in cs])
_attribute("exclusive", "mask", "the xfeatures XCR0 never holds together with this one, so "
           "that their standard-format regions may share bytes (APX and MPX)",
           lambda key: lambda facts: _EXCLUSIVE[facts[key].number],
           values=lambda facts, cs: [_EXCLUSIVE[c.number] for c in cs])
_attribute("feature", "str", "the CPUID feature that announces the xfeature's registers "
           "(``AVX512F`` for opmask; empty for x87, SSE and the supervisor xfeatures)",
           lambda key: lambda facts: _FEATURE_NAMES[facts[key].number])
_attribute("feature_set", "bool", "whether that CPUID feature is set (false where the "
           "xfeature has none)",
           lambda key: lambda facts: bool(_features(facts)[0] >> facts[key].number & 1),
           depends="subject", feature=True, mask=lambda facts: _features(facts)[0])
_attribute("needed", "bool", "whether a set CPUID feature needs the xfeature (its own feature, "
           "or AVX10 for YMM and the AVX-512 state)",
           lambda key: lambda facts: bool(_features(facts)[1] >> facts[key].number & 1),
           depends="subject", feature=True, mask=lambda facts: _features(facts)[1])
_attribute("needed_by", "str", "the set CPUID features that need the xfeature: its own "
           "feature, and AVX10 for YMM and the AVX-512 state (empty where none is set)",
           lambda key: lambda facts: ", ".join(name for name in _NEEDED_BY[facts[key].number]
                                                if facts[name]),
           depends="subject", feature=True)

# --- the subleaf 0xD.n of this table ------------------------------------------------------

_layout_attribute("size", "size", "0xD.n EAX: the component's size in bytes (0 without a "
                  "subleaf)", lambda key: lambda facts: facts[key].size,
                  lambda facts, cs: [c.size for c in cs])
_layout_attribute("offset", "size", "0xD.n EBX: its offset in the standard format (user "
                  "components)", lambda key: lambda facts: facts[key].offset,
                  lambda facts, cs: [c.offset for c in cs])
_layout_attribute("ecx", "int", "0xD.n ECX: bit 0 supervisor, bit 1 64-byte aligned when "
                  "compacted, bit 2 XFD supported; the rest reserved",
                  lambda key: lambda facts: facts[key].ecx,
                  lambda facts, cs: [c.ecx for c in cs])
_layout_attribute("edx", "int", "0xD.n EDX: reserved", lambda key: lambda facts: facts[key].edx,
                  lambda facts, cs: [c.edx for c in cs])
_layout_attribute("end", "size", "offset + size: the first byte after it in the standard format",
                  lambda key: lambda facts: facts[key].offset + facts[key].size,
                  lambda facts, cs: [c.offset + c.size for c in cs])
_layout_attribute("supervisor", "bool", "0xD.n ECX[0]: the subleaf says supervisor state "
                  "(IA32_XSS), not user (XCR0)", lambda key: lambda facts: facts[key].ecx & 1 == 1,
                  lambda facts, cs: [c.ecx & 1 == 1 for c in cs])
_layout_attribute("aligned", "bool", "0xD.n ECX[1]: 64-byte aligned in the compacted format",
                  lambda key: lambda facts: facts[key].ecx & 2 == 2,
                  lambda facts, cs: [c.ecx & 2 == 2 for c in cs])
_layout_attribute("xfd", "bool", "0xD.n ECX[2]: XFD can arm it (it can be dynamic)",
                  lambda key: lambda facts: facts[key].ecx & 4 == 4,
                  lambda facts, cs: [c.ecx & 4 == 4 for c in cs])
def _related(facts: Facts, components: list[Component], which: int) -> list[int]:
    relations = facts.subleaves.relations()
    return [relations.get(component.number, _NONE)[which] for component in components]


_layout_attribute("overlaps", "mask", "the sized user components whose standard-format "
                  f"regions share a byte with this one's (each occupies [offset, end); the "
                  f"legacy area and header are bytes 0-{LEGACY_AND_HEADER - 1})",
                  lambda key: lambda facts: facts.subleaves.overlaps(facts[key].number),
                  lambda facts, cs: _related(facts, cs, 0))
_layout_attribute("placed_above", "mask", "the sized user components whose standard-format "
                  "offset is above this one's",
                  lambda key: lambda facts: facts.subleaves.placed_above(facts[key].number),
                  lambda facts, cs: _related(facts, cs, 1))


# --- the same subleaf elsewhere: the host's, a restore destination's ---------------------

_HOST_LAYOUT = " host layout"  # where _host_layout keeps it in the Facts (no fact's name)


def _host_layout(facts: Facts) -> XsaveLayout:
    """Return the layout the guest's must equal: KVM's table, the host's CPUID, or the base."""
    layout = facts.get(_HOST_LAYOUT)
    if layout is None:
        subject = facts.subject
        host = subject.host
        table: CpuidSet | None = subject.base
        if host is not None:
            for table in (host.kvm_cpuid_permitted, host.kvm_cpuid, host.host_cpuid,
                          subject.base):
                if table is not None:
                    break
        if table is None:
            raise Missing("neither host facts nor a base table to compare the layout with")
        layout = facts[_HOST_LAYOUT] = XsaveLayout.from_cpuid(table)
    assert isinstance(layout, XsaveLayout)
    return layout


def reference_components(facts: Facts) -> Mapping[int, Component]:
    """Return the subleaves ``c.host.*`` reads: those of the host's layout (see _host_layout)."""
    return _host_layout(facts).components


def _elsewhere(prefix: str, where: str, layout_of: Callable[[Facts], XsaveLayout],
               reads: tuple[Read, ...]) -> None:
    def other(facts: Facts, number: int) -> Component:
        return layout_of(facts).components.get(number) or _BARE[number]

    def others(facts: Facts, components: list[Component]) -> list[Component]:
        found = layout_of(facts).components
        return [found.get(c.number) or _BARE[c.number] for c in components]

    attributes: tuple[tuple[str, Kind, str, Reader, Values], ...] = (
        ("size", "size", "EAX: the size there (0 where that table lacks the subleaf)",
         lambda key: lambda facts: other(facts, facts[key].number).size,
         lambda facts, cs: [c.size for c in others(facts, cs)]),
        ("offset", "size", "EBX: the standard-format offset there",
         lambda key: lambda facts: other(facts, facts[key].number).offset,
         lambda facts, cs: [c.offset for c in others(facts, cs)]),
        ("aligned", "bool", "ECX[1]: 64-byte aligned when compacted there",
         lambda key: lambda facts: other(facts, facts[key].number).ecx & 2 == 2,
         lambda facts, cs: [c.ecx & 2 == 2 for c in others(facts, cs)]),
    )
    for name, kind, what, read, values in attributes:
        register, _, meaning = what.partition(": ")
        _attribute(f"{prefix}.{name}", kind, f"0xD.n {register} in {where}: {meaning}", read,
                   depends="subject", reads=reads, values=values)


_elsewhere("host", "the host's table (KVM's, else the host CPUID, else the table before the "
           "template)", _host_layout, ("reference",))
def _dest_layout(facts: Facts) -> XsaveLayout:
    from xstate_check.facts.restore import dest_layout  # a later stage

    return dest_layout(facts)


_elsewhere("dest", "the restore destination's table (KVM_GET_SUPPORTED_CPUID after the "
           "VMM's guest-permission request)", _dest_layout, ("destination",))


def feature_refs(mask: int) -> list[BitRef]:
    """Return the CPUID feature bits of the components 2 to 62 of ``mask``: each one's own
    feature and those without state of their own that need it."""
    refs: list[BitRef] = []
    for number in range(2, 63):
        if mask >> number & 1:
            for name in _NEEDED_BY[number]:
                where = FEATURES[name]
                refs.append((where.leaf, where.subleaf, where.register, 1 << where.bit))
    return refs


def attribute_needs(names: Iterable[str]) -> int:
    """Return the NEEDS bits of the component attributes ``names``, as they declare them."""
    needs = 0
    for name in names:
        for read in ATTRIBUTES[name].reads:
            needs |= NEEDS[read]
    return needs
