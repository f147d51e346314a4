"""Rule pages (``xstate-check explain ID|NAME``) and the catalogue listing (``rules``).

A page says what the rule checks, why, what the guest, KVM or kernel does when it fails,
how to fix it, and shows the rule's own examples: each failing one with the finding the
engine gives on it, so the page can never drift from what the rule does.
"""

from __future__ import annotations

import difflib
import json
import textwrap
from pathlib import Path

from xstate_check.engine.catalogue import FAMILIES, Catalogue, FixGroup, Rule
from xstate_check.engine.examples import Example, build_subject, describe
from xstate_check.engine.runner import evaluate_rules
from xstate_check.engine.shipped import load_catalogue
from xstate_check.errors import InputError, Location

__all__ = ["find_rule", "render_catalogue", "render_rule", "rule_page"]

_WIDTH = 88
_INDENT = "    "


def find_rule(id_or_name: str, catalogue: Catalogue | None = None) -> Rule:
    """Return the rule with this id or name; InputError (naming the closest one) otherwise."""
    chosen = catalogue or load_catalogue()
    try:
        return chosen.get(id_or_name)
    except KeyError:
        keys = [rule.id for rule in chosen] + [rule.name for rule in chosen]
        close = difflib.get_close_matches(id_or_name, keys, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise InputError(Location(id_or_name), "a rule id such as XS0108 or a name such as "
                         f"amx-tile-pair; `xstate-check rules` lists them{hint}") from None


def _example_finding(rule: Rule, example: Example) -> str | None:
    findings = evaluate_rules(build_subject(example), [rule])
    return findings[0].message if findings else None


def rule_page(rule: Rule) -> dict[str, object]:
    """Return a rule's page as plain data (the JSON form of ``explain``)."""
    return {
        "id": rule.id,
        "name": rule.name,
        "family": rule.family,
        "severity": rule.severity,
        "summary": rule.summary,
        "check": rule.check,
        "applies": rule.applies,
        "each": rule.each,
        "explanation": rule.explanation,
        "consequence": rule.consequence,
        "fix": rule.fix,
        "autofix": [_autofix(group) for group in rule.autofix],
        "references": list(rule.references),
        "examples": {
            "fail": [{"example": describe(example), "finding": _example_finding(rule, example)}
                     for example in rule.fails],
            "pass": [{"example": describe(example)} for example in rule.passes],
        },
        "defined_at": f"rules/{Path(rule.location.path).name}:{rule.location.line}",
    }


def _autofix(group: FixGroup) -> dict[str, object]:
    """Return one ``[[rule.autofix]]`` group as plain data."""
    out: dict[str, object] = {
        "applicability": group.applicability,
        "summary": group.summary,
        group.action: list(group.specs),
    }
    if group.also_specs:
        out["also"] = list(group.also_specs)
    if group.anchor_specs:
        out["anchor"] = list(group.anchor_specs)
    return out


def _autofix_lines(rule: Rule) -> list[str]:
    lines: list[str] = []
    for group in rule.autofix:
        if group.applicability == "unsafe":
            how = "unsafe (applied with --unsafe-fixes)"
        elif group.action == "clear":
            how = ("safe where the template already clears one of these bits, unsafe "
                   "otherwise")
        else:
            how = "safe"
        lines += ["", _paragraph(f"{group.summary}: {how}.")]
        verb = "clears" if group.action == "clear" else "drops the template's pins on"
        lines.append(_paragraph(f"{verb} {', '.join(group.specs)}", _INDENT * 2))
        if group.also_specs:
            lines.append(_paragraph(f"with {', '.join(group.also_specs)} where clearing "
                                    "them too brings no new finding", _INDENT * 2))
        if group.anchor_specs:
            anchor = ", ".join(group.anchor_specs)
            one_bit = len(group.anchor) == 1 and bin(group.anchor[0][3]).count("1") == 1
            where = f"where {anchor} is clear" if one_bit else f"where a bit of {anchor} is clear"
            lines.append(_paragraph(where, _INDENT * 2))
    return lines


def _paragraph(text: str, indent: str = _INDENT) -> str:
    return "\n\n".join(
        textwrap.fill(part, _WIDTH, initial_indent=indent, subsequent_indent=indent)
        for part in text.split("\n\n")
        if part.strip()
    )


def _rule_text(rule: Rule) -> str:
    page = rule_page(rule)
    lines = [f"{rule.id} {rule.name} ({rule.severity}, {rule.family} family)",
             textwrap.fill(rule.summary, _WIDTH)]
    if rule.explanation:
        lines += ["", "Problem", _paragraph(rule.explanation)]
    lines += ["", "Check"]
    if rule.each and rule.check == "false":
        lines.append(_INDENT + f"every item of {rule.each} is a finding")
    else:
        lines.append(_INDENT + rule.check)
        if rule.each:
            lines.append(_INDENT + f"for each item of {rule.each}")
    if rule.applies:
        lines.append(_INDENT + f"applies when: {rule.applies}")
    examples = page["examples"]
    assert isinstance(examples, dict)
    for entry in examples["fail"]:
        lines += ["", "Example that fails", _paragraph(entry["example"])]
        if entry["finding"] is not None:
            lines.append(_paragraph(f"{rule.severity}: {entry['finding']}", _INDENT * 2))
    for entry in examples["pass"]:
        lines += ["", "Example that passes", _paragraph(entry["example"])]
    lines += ["", "Why it matters", _paragraph(rule.consequence), "", "Fix",
              _paragraph(rule.fix)]
    if rule.autofix:
        lines += ["", "Automatic fix (check --template T --fix, gate --fix)"]
        lines += _autofix_lines(rule)[1:]
    if rule.references:
        lines += ["", "References"]
        # URLs stay whole, so that a terminal can open them.
        lines += [textwrap.fill(reference, _WIDTH, initial_indent=_INDENT + "- ",
                                subsequent_indent=_INDENT + "  ", break_long_words=False,
                                break_on_hyphens=False)
                  for reference in rule.references]
    lines += ["", f"Defined in {page['defined_at']}"]
    return "\n".join(lines) + "\n"


def render_rule(id_or_name: str, fmt: str = "text", catalogue: Catalogue | None = None) -> str:
    """Return one rule's page as text or JSON (``fmt``: ``text`` or ``json``)."""
    _check_format(fmt)
    rule = find_rule(id_or_name, catalogue)
    if fmt == "json":
        return json.dumps(rule_page(rule), indent=2) + "\n"
    return _rule_text(rule)


def render_catalogue(fmt: str = "text", catalogue: Catalogue | None = None) -> str:
    """Return the catalogue as a listing by family (text) or a JSON array."""
    _check_format(fmt)
    chosen = catalogue or load_catalogue()
    if fmt == "json":
        rows = [{"id": rule.id, "name": rule.name, "family": rule.family,
                 "severity": rule.severity, "summary": rule.summary} for rule in chosen]
        return json.dumps(rows, indent=2) + "\n"
    width = max((len(rule.name) for rule in chosen), default=0)
    lines: list[str] = []
    for family in FAMILIES:
        rules = [rule for rule in chosen if rule.family == family]
        if not rules:
            continue
        if lines:
            lines.append("")
        lines.append(f"{family}")
        for rule in rules:
            lines.append(f"  {rule.id}  {rule.severity:<7}  {rule.name:<{width}}  {rule.summary}")
    lines += ["", f"{len(chosen)} rules; `xstate-check explain ID|NAME` shows one rule's page."]
    return "\n".join(lines) + "\n"


def _check_format(fmt: str) -> None:
    if fmt not in ("text", "json"):
        raise InputError(Location("--format"), f"text or json for rule pages, not {fmt!r}")
