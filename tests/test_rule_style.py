"""House style of the shipped rules: a bitwise operation that is compared is parenthesised.

The rule language binds ``&``, ``|`` and ``^`` tighter than ``==``, ``!=``, ``<``… and
``in``; C binds them looser, so ``xcr0 & mpx == 0`` reads as ``xcr0 & (mpx == 0)`` to
anyone coming from the kernel code a rule cites. The shipped rules write
``(xcr0 & mpx) == 0``.
"""

from __future__ import annotations

from xstate_check.engine import load_catalogue
from xstate_check.engine.loader import language_names
from xstate_check.engine.tokenizer import tokenize

BITWISE = frozenset({"&", "|", "^"})
COMPARISONS = frozenset({"==", "!=", "<", "<=", ">", ">=", "in"})
#: Tokens that end an operand of a comparison: a bitwise operator and a comparison on either
#: side of one of these do not meet.
BOUNDARIES = frozenset({"and", "or", "=>", ",", "not"})
ITEM_NAMES = frozenset({"item.leaf", "item.subleaf", "item.detail", "item.hidden",
                        "item.effect"})


def unparenthesised_bitwise_comparison(source: str, names: frozenset[str]) -> bool:
    """Return whether ``source`` compares a bitwise operation that has no parentheses."""
    levels = [[False, False]]  # per bracket level: a bitwise operator seen, a comparison seen
    for token in tokenize(source, names):
        if token.text in ("(", "["):
            levels.append([False, False])
        elif token.text in (")", "]"):
            levels.pop()
        elif token.text in BOUNDARIES:
            levels[-1] = [False, False]
        elif token.text in BITWISE or token.text in COMPARISONS:
            level = levels[-1]
            level[token.text in COMPARISONS] = True
            if all(level):
                return True
    return False


def test_the_checker_sees_the_c_trap() -> None:
    """The scan tells ``xcr0 & mpx == 0`` from ``(xcr0 & mpx) == 0`` and from ``a and b``."""
    names = frozenset(language_names())
    assert unparenthesised_bitwise_comparison("xcr0 & mpx == 0", names)
    assert unparenthesised_bitwise_comparison("xcr0 & xtile in [0, xtile]", names)
    assert unparenthesised_bitwise_comparison("size_max < xcr0 | xss", names)
    assert not unparenthesised_bitwise_comparison("(xcr0 & mpx) == 0", names)
    assert not unparenthesised_bitwise_comparison("(avx512 | ymm) in xcr0", names)
    assert not unparenthesised_bitwise_comparison("xcr0 != 0 and xcr0 & mpx", names)


def test_shipped_rules_parenthesise_compared_bitwise_operations() -> None:
    """No check, applies or let of a shipped rule compares an unparenthesised ``&``/``|``/``^``."""
    base = frozenset(language_names()) | ITEM_NAMES
    offenders = []
    for rule in load_catalogue():
        names = base | {name for name, _ in rule.lets}
        for label, source in (("check", rule.check), ("applies", rule.applies), *rule.lets):
            if source and unparenthesised_bitwise_comparison(source, names):
                offenders.append(f"{rule.id} {label}: {source}")
    assert not offenders, "\n".join(offenders)
