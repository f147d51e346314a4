"""The rule language: tokens, precedence, types, errors with carets, compiled evaluation."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xstate_check.cpuid import CpuidSet
from xstate_check.engine.compiler import compile_expression, constant_value
from xstate_check.engine.loader import language_names
from xstate_check.engine.nodes import Node
from xstate_check.engine.parser import Resolved, parse_expression
from xstate_check.engine.plan import quick_condition
from xstate_check.engine.tokenizer import RuleSyntaxError, tokenize
from xstate_check.facts import Facts, Missing, valid_xcr0
from xstate_check.hoststate import HostState
from xstate_check.subject import Subject

NAMES: dict[str, Resolved] = language_names()


def parse(source: str) -> Node:
    """Parse with the names every rule file can use."""
    return parse_expression(source, NAMES.__getitem__, NAMES)


def value_of(source: str, subject: Subject | None = None) -> object:
    """Evaluate an expression on a subject (an empty guest table by default)."""
    subject = subject or Subject("t", CpuidSet({}))
    return compile_expression(parse(source))(Facts(subject))


def error_of(source: str) -> str:
    """Return the rendered syntax error of an expression."""
    with pytest.raises(RuleSyntaxError) as caught:
        parse(source)
    return str(caught.value)


def table(xcr0: int, **leaf7: int) -> Subject:
    """A guest table with 0xD.0 EDX:EAX = xcr0 and leaf 7.0 registers as given."""
    rows = [(0, 0, 0xD, 0, 0, 0), (0xD, 0, xcr0 & 0xFFFF_FFFF, 0x240, 0x340, xcr0 >> 32),
            (7, 0, 0, leaf7.get("ebx", 0), leaf7.get("ecx", 0), leaf7.get("edx", 0))]
    return Subject("t", CpuidSet.from_rows(rows))


def test_unknown_name_is_rejected_with_a_suggestion_and_caret() -> None:
    """A misspelt fact is an error at tokenizing, naming the closest fact, caret under it."""
    assert error_of("(xcr & tilecfg) == 0") == (
        "unknown name 'xcr' (did you mean 'xcr0'?)\n"
        "    (xcr & tilecfg) == 0\n"
        "     ~~^"
    )


def test_python_is_not_a_rule_language() -> None:
    """Python builtins and attribute tricks are unknown names, never evaluated."""
    assert "unknown name '__import__'" in error_of("__import__('os').system('true')")
    assert "unexpected character" in error_of("xcr0 @ 1")
    assert "unknown name 'xcr0.__class__'" in error_of("xcr0.__class__ == 0")


def test_type_errors_point_at_the_operand() -> None:
    """'and' on a mask is a type error drawn under the mask."""
    assert error_of("xcr0 and XSAVE") == (
        "'and' needs a condition, found a number or mask\n"
        "    xcr0 and XSAVE\n"
        "    ~~~^"
    )


@pytest.mark.parametrize(("source", "caret"), [
    ("xcr0 & mpx == 0", "    ~~~~~~~~~^"),
    ("xcr0 & xtile in [0, xtile]", "    ~~~~~~~~~~~^"),
    ("size_max < xcr0 | xss", "               ~~~~~~~~~^"),
    ("0 != xcr0 ^ xss", "         ~~~~~~~~~^"),
    ("(xcr0) & mpx == 0", "    ~~~~~~~~~~~^"),
    ("XSAVE and (xcr0 & mpx) | xss != 0", "              ~~~~~~~~~~~~~~~~~^"),
])
def test_a_compared_bitwise_operation_needs_parentheses(source: str, caret: str) -> None:
    """C binds == tighter than &, this language the other way round: rather than let a reader
    from the kernel code misread ``a & b == c``, the parser refuses it, caret under the
    operand, and asks for the parentheses that say which was meant."""
    message = error_of(source)
    assert message.startswith("parentheses around this ")
    assert message.splitlines()[1:] == [f"    {source}", caret]


@pytest.mark.parametrize("source", [
    "(xcr0 & mpx) == 0", "((xcr0 & mpx)) == 0", "(xcr0 & mpx) == (1 | 2)",
    "(avx512 | ymm) in xcr0", "xcr0 in (known | 1 << 63)", "(xcr0 & xtile) in [0, xtile | 0]",
    "xcr0 != 0 and (xcr0 & mpx) != 0",
])
def test_parenthesised_bitwise_comparisons_parse(source: str) -> None:
    """Parentheses on the bitwise side, a list item, or a comparison inside the bitwise
    operation are all fine."""
    parse(source)


def test_comparisons_do_not_chain() -> None:
    """a == b == c is refused rather than read one way or the other."""
    assert "comparisons do not chain" in error_of("xcr0 == 1 == 1")


def test_unclosed_parenthesis_names_its_column() -> None:
    """A missing ')' says which '(' it should close."""
    message = error_of("((xcr0 & 1) == 1")
    assert message.startswith("expected ')' to close the '(' at column 1, found the end")


def test_function_arity_and_argument_type() -> None:
    """Calls check their argument count and types; names that are not functions cannot be called."""
    assert "std_size() takes 1 argument(s), found 2" in error_of("std_size(xcr0, xss) > 0")
    assert "std_size() needs a number or mask, found a condition" in error_of("std_size(XSAVE) > 0")
    assert "xcr0 is not a function" in error_of("xcr0(1) == 1")


def test_in_needs_a_mask_or_list() -> None:
    """'in' on a string right side is refused."""
    assert "'in' needs a mask or a list on its right" in error_of("xcr0 in role")


@pytest.mark.parametrize(("source", "expected"), [
    ("(1 | 2 & 3) == 3", True),         # & binds tighter than |
    ("(1 ^ 3 & 1) == 0", True),         # 1 ^ (3 & 1)
    ("(1 << 4 | 1) == 17", True),       # << binds tighter than |
    ("2 * 3 + 1 == 7", True),
    ("~0 == 0xffffffffffffffff", True),  # masks stay 64-bit
    ("0x3 in 0x7", True),                # subset
    ("0x9 in 0x7", False),
    ("0x9 not in 0x7", True),
    ("2 in [1, 2, 3]", True),
    ("6.4 > 6.1", True),                 # versions compare as (major, minor)
    ("6.10 > 6.9", True),
    ("\"guest\" == 'guest'", True),
    ("false => false => false", True),   # right-associative: false => (false => false)
    ("not true or true", True),          # not binds tighter than or
    ("true and false or true", True),
    ("(tilecfg | tiledata) == xtile", True),
    ("1 + 2 * 3 == 7", True),           # arithmetic and shifts compare unparenthesised
    ("1 << 2 == 4", True),
    ("0b101 == 5", True),
    ("1_000 == 1000", True),
])
def test_constant_expressions(source: str, expected: bool) -> None:
    """Operators follow the documented precedence and meaning; constants fold at load."""
    constant, value = constant_value(parse(source))
    assert constant and value is expected


def test_facts_are_read_from_the_subject() -> None:
    """Facts, feature bits and functions evaluate on the subject's table."""
    subject = table(0x602E7, edx=1 << 24)
    assert value_of("(xcr0 & xtile) == xtile", subject) is True
    assert value_of("AMX_TILE and not AVX512F", subject) is True
    assert value_of("valid_xcr0(xcr0)", subject) is True
    assert value_of("popcount(xcr0 & avx512) == 3", subject) is True


def test_missing_facts_raise_missing() -> None:
    """A host fact on a subject without HostState is Missing, not a value."""
    with pytest.raises(Missing):
        value_of("host.guest_permitted == 0")
    hosted = Subject("t", CpuidSet({}), host=HostState(kernel_release="6.1.0"))
    with pytest.raises(Missing):
        value_of("host.guest_permitted == 0", hosted)
    assert value_of("host.kernel < 6.4", hosted) is True


@settings(max_examples=300, deadline=None)
@given(mask=st.integers(0, (1 << 20) - 1) | st.sampled_from([1 << 63, 0x602E7 | 1 << 40]))
def test_quick_conditions_match_the_full_test(mask: int) -> None:
    """A rule's quick mask condition implies its full test (and equals it when exact)."""
    from xstate_check.engine import load_catalogue

    facts = Facts(table(mask))
    for rule in load_catalogue().family("xcr0"):
        assert rule.compiled.source is not None
        quick = quick_condition(rule.compiled.source[0])
        assert quick is not None and quick.name == "xcr0"
        passes_quickly = mask & quick.mask in quick.values
        try:
            passes = bool(rule.compiled.test(facts))
        except Missing:
            continue
        if passes_quickly:
            assert passes, rule.name
        if quick.exact:
            assert passes_quickly == passes, rule.name


def test_quick_condition_of_a_disjunction_is_exact() -> None:
    """'(xcr0 & avx512) == 0 or (avx512 | ymm) in xcr0' folds into one exact mask test."""
    quick = quick_condition(parse("(xcr0 & avx512) == 0 or (avx512 | ymm) in xcr0"))
    assert quick is not None and quick.exact
    assert (quick.name, quick.mask) == ("xcr0", 0xE4)
    assert quick.values == frozenset({0x0, 0x4, 0xE4})


def test_valid_xcr0_matches_the_xsetbv_rules() -> None:
    """valid_xcr0 accepts the real enumerations and refuses each broken bundle."""
    for good in (0x1, 0x3, 0x7, 0x1F, 0x2FF, 0x2E7, 0x602E7, 0x80207):
        assert valid_xcr0(good), hex(good)
    for bad in (0x0, 0x2, 0x5, 0xF, 0x67, 0xE3, 0x202E7, 0x402E7, 0x107, 0x8001F, 1 << 63 | 3):
        assert not valid_xcr0(bad), hex(bad)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, (1 << 64) - 1) | st.integers(0, 0xFFFFF) | st.sampled_from(
    [0x602E7, 0x2E7, 0x207, 0x80207, 0x602FF]).map(lambda m: m ^ 1 << (m % 23)))
def test_valid_xcr0_is_every_defining_check(mask: int) -> None:
    """valid_xcr0, which answers at once where the checks' quick conditions hold, says what
    running every check of the rules that define it says."""
    from xstate_check.engine.shipped import load_catalogue

    checks = [compile_expression(rule.compiled.definition) for rule in load_catalogue()
              if rule.defines == "valid_xcr0" and rule.compiled.definition is not None]
    assert len(checks) >= 7
    view: Any = {"xcr0": mask}  # what valid_xcr0 hands its checks: XCR0 alone
    assert valid_xcr0(mask) == all(check(view) for check in checks), hex(mask)


def test_tokens_keep_their_positions() -> None:
    """Tokens carry their offsets, for carets; whitespace is dropped; END closes the list."""
    tokens = tokenize("xcr0  &  0x3", {"xcr0"})
    assert [(t.kind, t.text, t.start) for t in tokens] == [
        ("NAME", "xcr0", 0), ("OP", "&", 6), ("NUMBER", "0x3", 9), ("END", "", 12)]


def test_deep_nesting_and_long_expressions_are_refused() -> None:
    """Nesting and length limits keep parsing and compiling far from the recursion limit."""
    assert error_of("(" * 40 + "xcr0" + ")" * 40 + " == 0").startswith(
        "at most 32 levels of nesting")
    assert error_of("not " * 40 + "XSAVE").startswith("at most 32 levels of nesting")
    assert error_of(" | ".join(["xcr0"] * 300) + " == 0").startswith(
        "a shorter expression (at most 512 tokens)")


def test_numbers_are_at_most_64_bits() -> None:
    """Literals beyond 64 bits (or with Python's digit limit in reach) are refused."""
    assert error_of("xcr0 == 0x1" + "0" * 16).startswith("a number of at most 64 bits")
    assert error_of("xcr0 == " + "9" * 5000).startswith("a number of at most 64 bits")
    assert error_of("xcr0 == 0x_").startswith("a number: 0x")


def test_shifts_stay_within_64_bits() -> None:
    """A shift by a huge or negative count gives 0 instead of a huge number or an error."""
    assert value_of("1 << 0xffffffff == 0") is True
    assert value_of("1 << -1 == 0 and 8 >> 70 == 0") is True
    assert value_of("(xcr0 | 1) << 0x7fffffff == 0", table(0x602E7)) is True


def test_subtraction_and_negation_stay_within_64_bits() -> None:
    """A result below zero wraps within 64 bits, at run time as in constant folding (``-1``
    is ``~0``): a mask has no negative value, whose bits would never end."""
    subject = table(0x602E7)
    assert value_of("-xcr0 == ~xcr0 + 1", subject) is True
    assert value_of("xcr0 - (xcr0 + 1) == ~0", subject) is True
    assert value_of("-1 == -(xcr0 & 1) and -(xcr0 & 0) == 0", subject) is True
    assert value_of("all c in components(xcr0): c.mask - 0x100000 > c.mask", subject) is True
    assert value_of("all c in components(xcr0): -c.mask == ~c.mask + 1", subject) is True


def test_a_message_showing_a_difference_ends(tmp_path: Path) -> None:
    """A rule file's message showing ``-xcr0`` as a mask is written (it once never ended:
    the bits of a negative number were listed forever)."""
    rules = tmp_path / "xcr0.toml"
    rules.write_text(textwrap.dedent("""\
        family = "xcr0"

        [[rule]]
        id = "XS0199"
        name = "shows-a-difference"
        severity = "info"
        summary = "A message that shows a negated mask"
        check = "xcr0 == 0"
        message = "negated {negated}, less {less}"
        consequence = "None."
        fix = "None."
        explanation = "A test of the language."
        references = ["Intel SDM Vol. 1, 13.3: https://www.intel.com/sdm"]

        [rule.let]
        negated = "-xcr0"
        less = "xcr0 - 0x1000000"

        [[rule.pass]]
        template = { "0xd.0.eax" = "0x0", "0xd.0.edx" = "0x0" }

        [[rule.fail]]
        """))
    script = textwrap.dedent(f"""\
        from xstate_check.api import build_subject
        from xstate_check.engine.runner import evaluate
        from xstate_check.engine.shipped import load_catalogue
        from xstate_check.cpuid import CpuidSet
        rows = [(0, 0, 0xD, 0, 0, 0), (0xD, 0, 0x7, 0x240, 0x340, 0)]
        report = evaluate(build_subject(CpuidSet.from_rows(rows)), load_catalogue([{str(rules)!r}]))
        print(report.findings[0].message)
        """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    message = done.stdout.strip()
    assert message.startswith("negated 0xfffffffffffffff9 (x87|bndregs|bndcsr|"), message
    assert ", less 0xffffffffff000007 (x87|sse|ymm|bit24|" in message, message


#: Conditions a chain of ``and``, ``or``, ``not`` and ``=>`` is made of, with what Python
#: says each is on the subject of ``test_logic_matches_python``: a value, or None for Missing.
_ATOMS: dict[str, object] = {
    "AVX": True, "AVX512F": False, "AMX_TILE": True, "MPX": False,
    "ymm in xcr0": True, "(xcr0 & mpx) == mpx": False, "(xcr0 & ymm) != 0": True,
    "role == \"guest\"": True, "role != \"guest\"": False, "has_host": False,
    "host.guest_permitted == 0": None,
}


class _AbsentError(Exception):
    """The reference's Missing."""


def _python(value: object) -> object:
    if value is None:
        raise _AbsentError
    return value


_logic = st.recursive(
    st.sampled_from(sorted(_ATOMS)).map(lambda atom: (atom, lambda: _python(_ATOMS[atom]))),
    lambda inner: st.one_of(
        st.tuples(inner, inner).map(lambda pair: (
            f"({pair[0][0]} and {pair[1][0]})", lambda: pair[0][1]() and pair[1][1]())),
        st.tuples(inner, inner).map(lambda pair: (
            f"({pair[0][0]} or {pair[1][0]})", lambda: pair[0][1]() or pair[1][1]())),
        inner.map(lambda one: (f"not ({one[0]})", lambda: not one[1]())),
        st.tuples(inner, inner).map(lambda pair: (
            f"({pair[0][0]} => {pair[1][0]})", lambda: not pair[0][1]() or pair[1][1]())),
    ),
    max_leaves=8)


@settings(max_examples=400, deadline=None)
@given(expression=_logic, applies=st.none() | _logic)
def test_logic_matches_python(expression: tuple[str, object],
                              applies: tuple[str, object] | None) -> None:
    """Chains of ``and``, ``or`` and ``not``, however the compiler folds them, give what
    Python's operators give: the same value, and Missing where Python would read a missing
    fact. Under ``applies => check`` (which may read the check first), the same verdict."""
    source, reference = expression
    if applies is not None:
        condition, check = applies[1], expression[1]
        assert callable(condition) and callable(check)
        source = f"{applies[0]} => {source}"
        reference = lambda: not condition() or check()  # noqa: E731 - the reference's shape
    assert callable(reference)
    subject = table(0x7 | 1 << 17, edx=1 << 24)
    subject = Subject("t", subject.cpuid.with_registers(1, 0, ecx=1 << 28), role="guest")
    try:
        expected: object = reference()
    except _AbsentError:
        expected = None
    try:
        found: object = value_of(source, subject)
    except Missing:
        found = None
    if "=>" in source:  # a finding exactly when the test is false and reads nothing missing
        assert (found is not None and not found) == (expected is not None and not expected)
    else:
        assert found == expected and type(found) is type(expected), source


def test_an_implication_below_the_root_reads_its_condition_first() -> None:
    """Only a rule's root ``=>`` may test its right side first: under ``not``, ``and`` or a
    quantifier, a missing condition must leave the rule not applicable, never a finding."""
    subject = Subject("t", table(0x7).cpuid, role="guest")
    holds = "(xcr0 & 0x3) == 0x3"
    assert value_of(holds, subject) is True
    with pytest.raises(Missing):
        value_of(f"not (host.kernel < 6.4 => {holds})", subject)
    with pytest.raises(Missing):
        value_of(f"(host.kernel < 6.4 => {holds}) and XSAVE", subject)
    from xstate_check.engine.compiler import compile_rule

    test, _, _ = compile_rule(parse(f"host.kernel < 6.4 => {holds}"), ())
    assert test(Facts(subject)) is True  # at the root: no finding either way, B read first
