"""Fixes: the smallest template change that removes a template's error findings.

The model (``Edit``, ``Fix``, ``Unfixed``) is imported at once; the functions that compute
fixes load the rule engine, so they are imported when first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from xstate_check import lazy_attributes
from xstate_check.fixes.model import Applicability, Edit, Fix, Unfixed, UnfixedReason

__all__ = ["Applicability", "Edit", "Fix", "Unfixed", "UnfixedReason", "compute_fix",
           "fix_for_gate", "fix_in_pool", "fix_on_source"]

_LAZY = {
    "compute_fix": "xstate_check.fixes.engine",
    "fix_for_gate": "xstate_check.fixes.api",
    "fix_in_pool": "xstate_check.fixes.api",
    "fix_on_source": "xstate_check.fixes.api",
}

if TYPE_CHECKING:
    from xstate_check.fixes.api import fix_for_gate, fix_in_pool, fix_on_source
    from xstate_check.fixes.engine import compute_fix


#: Load a fix function's module on first use.
__getattr__ = lazy_attributes(__name__, _LAZY, globals())
