"""Layout facts: leaf 0xD's sizes, offsets and flags, all read from ``XsaveLayout``.

What a rule reads of one component (its size, offset, flags, overlaps) is a component
attribute (``facts.components``), read in a quantifier: ``all c in components(xcr0): …``.
"""

from __future__ import annotations

from collections.abc import Iterable

from xstate_check.facts.registry import (
    BitRef,
    Facts,
    MaskRefs,
    component_sources,
    fact,
    function,
    reg,
)
from xstate_check.layout import XsaveLayout

__all__: list[str] = []


@fact("standard_sizes", "sizes", "every 0xD.0 EBX an OS could see: the standard-format size "
      "of some XCR0 made of enumerated xfeatures", (reg(0xD, 0, "eax"), reg(0xD, 0, "ebx")),
      reads=("subleaves",))
def _standard_sizes(facts: Facts) -> object:
    xcr0 = facts["xcr0"]
    assert isinstance(xcr0, int)
    return facts.subleaves.standard_sizes(xcr0)


@fact("described", "mask", "the xfeatures 2 to 62 whose subleaf 0xD.n is present and not all "
      "zero (whether or not 0xD.0 or 0xD.1 enumerates them)", component_sources,
      reads=("subleaves",))
def _described(facts: Facts) -> object:
    return facts.subleaves.of_components("described", _described_mask)


def _described_mask(layout: XsaveLayout) -> int:
    return sum(1 << number for number, regs in layout.components.items()
               if number < 63 and regs[1:] != (0, 0, 0, 0))


@fact("xfd_flagged", "mask", "xfeatures whose subleaf sets ECX[2] (XFD supported)",
      component_sources,
      reads=("subleaves",))
def _xfd_flagged(facts: Facts) -> object:
    return facts.subleaves.of_components("xfd_flagged", _xfd_flagged_mask)


def _xfd_flagged_mask(layout: XsaveLayout) -> int:
    return sum(1 << c.number for c in layout.components.values() if c.size and c.xfd)


def _layout_sources(facts: Facts) -> Iterable[BitRef]:
    xcr0, xss = facts["xcr0"], facts["xss"]
    assert isinstance(xcr0, int) and isinstance(xss, int)
    return MaskRefs(xcr0 | xss)


@function("std_size", ("mask",), "size", "standard-format size of an xfeature mask from this "
          "table's subleaves (KVM's xstate_required_size)", sources=_layout_sources,
          reads=("subleaves",))
def _std_size(facts: Facts, mask: int) -> int:
    # standard_size stops at the mask's last component: asked twice, cheaper than kept.
    return facts.subleaves.standard_size(mask)


@function("compacted_size", ("mask",), "size", "compacted-format size of an xfeature mask from "
          "this table's subleaves", sources=_layout_sources, reads=("subleaves",))
def _compacted_size(facts: Facts, mask: int) -> int:
    return facts.subleaves.compacted_size(mask)
