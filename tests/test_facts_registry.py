"""The fact registry: one declaration per name, the needs it declares hold, and the
vocabulary the command lists is the one rules/README.md shows."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xstate_check.cpuid import CpuidSet
from xstate_check.engine.examples import base_table
from xstate_check.facts import FACTS, FUNCTIONS, Facts, Missing, available_of, needs_of
from xstate_check.subject import Subject

REPO = Path(__file__).resolve().parents[1]


def test_readme_table_is_generated_from_the_registry() -> None:
    """tools/fact_table.py --check: the README's table is the registry's, word for word."""
    result = subprocess.run([sys.executable, str(REPO / "tools" / "fact_table.py"), "--check"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    readme = (REPO / "rules" / "README.md").read_text(encoding="utf-8")
    for name, spec in FACTS.items():
        if spec.doc.startswith("CPUID.("):
            assert f"`{name}`" in readme  # feature bits share one row
        else:
            assert f"| `{name}` | {spec.kind} |" in readme


def test_facts_command_lists_every_name_with_its_needs() -> None:
    """``xstate-check facts -f json`` lists every fact and function once, as registered."""
    result = subprocess.run([sys.executable, "-m", "xstate_check", "facts", "-f", "json"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    names = json.loads(result.stdout)["names"]
    facts = {entry["name"]: entry for entry in names if entry["what"] == "fact"}
    assert list(facts) == list(FACTS)
    assert facts["host.guest_permitted"]["reads"] == ["host"]
    assert facts["overlapping"]["reads"] == ["subleaves"]
    assert facts["dest.std_size"]["reads"] == ["destination"]
    functions = [entry["name"] for entry in names if entry["what"] == "function"]
    assert sorted(functions) == sorted(f"{f.name}({', '.join(f.args)})"
                                       for f in FUNCTIONS.values())


def test_declared_needs_are_true() -> None:
    """A fact declaring a need raises Missing on a subject that lacks it, so skipping a rule
    for that need gives the same verdict as computing it."""
    bare = base_table("spr-guest").replace(leaf_0xd_complete=False)
    subject = Subject("bare", bare)
    assert available_of(subject) == 0
    for name, spec in FACTS.items():
        if not spec.reads:
            continue
        with pytest.raises(Missing):
            Facts(subject)[name]


def test_a_subject_with_every_part_satisfies_every_need() -> None:
    """available_of names each part a subject holds."""
    table: CpuidSet = base_table("spr-guest")
    subject = Subject("t", table, template="t.json", base=table)
    assert available_of(subject) == needs_of(["base.xcr0", "xss"])


XSETBV_RULES = ("x87-required", "avx-requires-sse", "mpx-pair", "avx512-triple",
                "xcr0-supervisor-bits", "apx-excludes-mpx", "amx-tile-pair")


@settings(max_examples=400, deadline=None)
@given(st.integers(0, (1 << 20) - 1), st.booleans(), st.integers(0, 7))
def test_valid_xcr0_is_the_xcr0_rules_checks(low: int, bit63: bool, seed: int) -> None:
    """valid_xcr0(mask) holds exactly when every XSETBV rule of rules/xcr0.toml passes on it."""
    from xstate_check.engine import load_catalogue
    from xstate_check.engine.compiler import compile_expression
    from xstate_check.engine.loader import language_names
    from xstate_check.engine.parser import parse_expression
    from xstate_check.facts import valid_xcr0

    mask = low | (1 << 63 if bit63 else 0)
    if seed < 4:
        mask |= 0x3  # a random mask lacks x87 half the time: give half of them x87 and SSE
    names = language_names()
    catalogue = load_catalogue()
    subject = Subject("t", CpuidSet.from_rows([(0xD, 0, mask & 0xFFFF_FFFF, 0, 0, mask >> 32)]))
    passes = all(
        compile_expression(parse_expression(catalogue.get(rule).check, names.__getitem__,
                                            names))(Facts(subject))
        for rule in XSETBV_RULES)
    assert valid_xcr0(mask) == passes, hex(mask)
