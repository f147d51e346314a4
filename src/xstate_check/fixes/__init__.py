"""Fixes: the smallest template change that removes a template's error findings.

The model (``Edit``, ``Fix``, ``Unfixed``) is imported at once; the functions that compute
fixes load the rule engine, so they are imported when first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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


def __getattr__(name: str) -> Any:
    """Load a fix function's module on first use."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'xstate_check.fixes' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
