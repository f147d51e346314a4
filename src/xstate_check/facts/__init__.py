"""Facts: the named values the rules read, computed lazily from one subject.

One registry (``facts.registry``) holds every name; each stage declares its facts there:
``enumeration`` (the subject, leaf 0xD as enumerated, CPUID feature bits), ``layout``
(sizes, offsets and flags, from ``XsaveLayout``), ``linux`` (what a Linux guest does),
``template`` (what a template did), ``host`` (the probe's ``host.*`` and ``kvm.*``),
``restore`` (a snapshot's ``dest.*``); ``rendering`` shows values in messages.
"""

from __future__ import annotations

import importlib

from xstate_check.facts.enumeration import CONSTANTS, valid_xcr0
from xstate_check.facts.registry import (
    FACTS,
    FUNCTIONS,
    ITEM_FIELDS,
    NEEDS,
    BitRef,
    EntryItem,
    Facts,
    FactSpec,
    FunctionSpec,
    Kind,
    Missing,
    available_of,
    needs_of,
)
from xstate_check.facts.rendering import format_value

__all__ = [
    "CONSTANTS",
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
    "Missing",
    "available_of",
    "format_value",
    "needs_of",
    "valid_xcr0",
]

# The stages register their facts in this order (the order the vocabulary is listed in).
for _stage in ("layout", "linux", "template", "host", "restore"):
    importlib.import_module(f"xstate_check.facts.{_stage}")

_CLASHES = (set(CONSTANTS) & set(FACTS)) | (set(CONSTANTS) & set(FUNCTIONS)) | (
    set(FACTS) & set(FUNCTIONS)
)
assert not _CLASHES, f"names used twice in the rule language: {sorted(_CLASHES)}"
