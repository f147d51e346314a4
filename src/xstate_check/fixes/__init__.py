"""Fixes: the smallest template change that removes a template's error findings."""

from __future__ import annotations

from xstate_check.fixes.model import Applicability, Edit, Fix, Unfixed, UnfixedReason

__all__ = ["Applicability", "Edit", "Fix", "Unfixed", "UnfixedReason"]
