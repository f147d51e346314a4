"""Facts: the named values the rules read, computed lazily from one subject.

One registry (``facts.registry``) holds every name; each stage declares its facts there:
``enumeration`` (the subject, leaf 0xD as enumerated, CPUID feature bits), ``layout``
(sizes, offsets and flags, from ``XsaveLayout``), ``linux`` (what a Linux guest does),
``template`` (what a template did), ``host`` (the probe's ``host.*`` and ``kvm.*``),
``restore`` (a snapshot's ``dest.*``); ``components`` declares what a quantifier reads of
each component (``c.size``, ``c.host.offset`` …); ``rendering`` shows values in messages.
"""

from __future__ import annotations

import importlib

from xstate_check.facts import registry
from xstate_check.facts.components import ATTRIBUTES, AttributeSpec
from xstate_check.facts.enumeration import CONSTANTS, valid_xcr0
from xstate_check.facts.registry import *  # noqa: F403 - the registry's names are the package's
from xstate_check.facts.rendering import format_value

__all__ = ["ATTRIBUTES", "CONSTANTS", "AttributeSpec", "format_value", "valid_xcr0"]
__all__ += registry.__all__

# The stages register their facts in this order (the order the vocabulary is listed in).
for _stage in ("layout", "linux", "template", "host", "restore"):
    importlib.import_module(f"xstate_check.facts.{_stage}")

_CLASHES = (set(CONSTANTS) & set(registry.FACTS)) | (set(CONSTANTS) & set(registry.FUNCTIONS)) | (
    set(registry.FACTS) & set(registry.FUNCTIONS)
)
assert not _CLASHES, f"names used twice in the rule language: {sorted(_CLASHES)}"
