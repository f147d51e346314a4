"""The rule language's vocabulary as the registry holds it: ``xstate-check facts``.

Text and JSON for the command, Markdown for rules/README.md's fact table (which
tools/fact_table.py writes and a test keeps equal).
"""

from __future__ import annotations

import json

from xstate_check.cpuid import FEATURES
from xstate_check.errors import InputError, Location
from xstate_check.facts import ATTRIBUTES, CONSTANTS, FACTS, FUNCTIONS
from xstate_check.xfeatures import format_mask

__all__ = ["render_vocabulary", "vocabulary"]

SCHEMA = "xstate-check-facts/1"


def vocabulary() -> list[dict[str, object]]:
    """Return every name a rule can read: facts, functions, component attributes (as
    ``c.size``) and constants, in registry order."""
    entries: list[dict[str, object]] = []
    for spec in FACTS.values():
        entries.append({"name": spec.name, "what": "fact", "kind": spec.kind,
                        "reads": list(spec.reads), "doc": spec.doc})
    for call in FUNCTIONS.values():
        entries.append({"name": f"{call.name}({', '.join(call.args)})", "what": "function",
                        "kind": call.kind, "reads": list(call.reads), "doc": call.doc})
    for attribute in ATTRIBUTES.values():
        entries.append({"name": f"c.{attribute.name}", "what": "attribute",
                        "kind": attribute.kind, "reads": list(attribute.reads),
                        "doc": attribute.doc})
    for name, value in CONSTANTS.items():
        entries.append({"name": name, "what": "constant", "kind": "mask", "reads": [],
                        "doc": format_mask(value)})
    return entries


def _reads(entry: dict[str, object]) -> str:
    reads = entry["reads"]
    assert isinstance(reads, list)
    return ", ".join(reads) or "-"


def _markdown(entries: list[dict[str, object]]) -> str:
    lines = ["| name | kind | needs | meaning |", "|---|---|---|---|"]
    bits = [entry for entry in entries if entry["what"] == "fact" and entry["name"] in FEATURES]
    for entry in entries:
        if entry["what"] == "constant" or entry in bits:
            continue  # constants and feature bits: one row each below
        doc = str(entry["doc"]).replace("|", "\\|")
        lines.append(f"| `{entry['name']}` | {entry['kind']} | {_reads(entry)} | {doc} |")
    names = ", ".join(f"`{entry['name']}`" for entry in bits)
    lines.append(f"| {names} | bool | subleaves for leaf 0xD bits | CPUID feature bits by their "
                 "Linux names (`xstate-check facts` gives each one's leaf, register and bit) |")
    constants = ", ".join(f"`{name}`" for name in CONSTANTS)
    lines.append(f"| {constants} | mask | - | xfeatures and groups of them, as masks |")
    return "\n".join(lines) + "\n"


def render_vocabulary(fmt: str = "text") -> str:
    """Return the vocabulary as a table (``text``), JSON, or rules/README.md's table
    (``markdown``)."""
    entries = vocabulary()
    if fmt == "json":
        return json.dumps({"schema": SCHEMA, "names": entries}, indent=2) + "\n"
    if fmt == "markdown":
        return _markdown(entries)
    if fmt != "text":
        raise InputError(Location("--format"),
                         f"expected text, json or markdown for facts, not {fmt}")
    width = max(len(str(entry["name"])) for entry in entries)
    lines = [f"{'NAME':<{width}}  {'KIND':<7}  {'NEEDS':<11}  MEANING"]
    for entry in entries:
        lines.append(f"{entry['name']!s:<{width}}  {entry['kind']!s:<7}  "
                     f"{_reads(entry):<11}  {entry['doc']}")
    lines.append("")
    lines.append(f"{len(entries)} names; NEEDS: what a subject must have beyond its CPUID "
                 "table, else a rule reading the name is not applicable")
    return "\n".join(lines) + "\n"
