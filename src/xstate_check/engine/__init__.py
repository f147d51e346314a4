"""The rules engine: the rule language, the catalogue loader, and evaluation.

``rules/*.toml`` hold the rules (data); this package reads them (``loader``), parses their
expressions without ``eval`` (``tokenizer``, ``parser``), compiles them to closures
(``compiler``, with ``operators``; quantifiers over components to mask operations in
``quantify``), orders them and finds shortcuts (``plan``, which changes no verdict) and
runs them on subjects (``runner``).
"""

from __future__ import annotations

from xstate_check.engine.catalogue import FAMILIES, Catalogue, Rule
from xstate_check.engine.runner import check_subjects, evaluate, evaluate_rules
from xstate_check.engine.shipped import default_rules_dir, load_catalogue

__all__ = [
    "FAMILIES",
    "Catalogue",
    "Rule",
    "check_subjects",
    "default_rules_dir",
    "evaluate",
    "evaluate_rules",
    "load_catalogue",
]
