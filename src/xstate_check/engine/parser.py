"""Recursive-descent parser of rule expressions, with a type check.

Each ``_parse_*`` method handles one precedence level; its docstring holds the level's
grammar line. The tree is small frozen nodes, each with the span it came from so that a
type error can be drawn with a caret. Precedence, lowest first::

    implication  =>  (right-associative)
    or, and, not
    comparison   == != < <= > >= in, not in  (not chained; a '&', '|' or '^' operand
                 must be in parentheses, since C binds those looser than comparisons)
    |  ^  &  << >>  + -  *
    unary        ~ -
    primary      number, version (6.4), "string", true, false, name, call(...), [list], (...)

A quantifier, ``all c in components(MASK): CONDITION`` or ``any …``, stands where ``not``
does; its condition reaches as far right as it can (parentheses end it), and reads the
component's attributes as ``c.size``, ``c.offset`` … (``facts.components``).

Types: ``int`` (masks, sizes, numbers), ``bool``, ``str``, ``version`` and lists of them.
``a in b`` on two ints means "every bit of a is set in b"; with a list on the right it is
membership.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING, NamedTuple, NoReturn

from xstate_check.engine.nodes import (
    Attribute,
    Binary,
    Call,
    Compare,
    ListExpr,
    Literal,
    Name,
    Node,
    Quantifier,
    Span,
    Unary,
)
from xstate_check.errors import clip_quote

if TYPE_CHECKING:
    from xstate_check.engine.tokenizer import Token

__all__ = ["Resolved", "parse_expression"]

class Resolved(NamedTuple):
    """The meaning of one name: its role (``fact``, ``constant``, ``function``, ``let``,
    ``item``), its type in the language and, for calls, the argument types."""

    role: str
    type: str
    args: tuple[str, ...] = ()
    value: object = None



_ORDERED = {"int", "version"}
#: Operators C binds looser than comparisons: compared, they must be in parentheses.
_BITWISE = frozenset({"&", "|", "^"})
#: Limits that keep parsing and compiling well inside Python's recursion limit; the rules
#: shipped use a tenth of them.
MAX_TOKENS = 512
MAX_NESTING = 32
#: Quantifiers one inside another: a pair of components is what overlap and order need;
#: each level multiplies the components walked (61 at most) by as many again.
MAX_QUANTIFIERS = 2


class _Parser:
    def __init__(self, source: str, resolve: Callable[[str], Resolved], names: Collection[str],
                 attributes: Mapping[str, str]):
        # The tokenizer (and its patterns) loads when an expression is parsed: a catalogue
        # read from its cache holds parse trees, which need the node types alone.
        from xstate_check.engine.tokenizer import tokenize

        self.source = source
        self.resolve = resolve
        self.names = names
        self.attributes = attributes
        #: The variables bound by the quantifiers around the token being read, innermost last.
        self.scope: list[str] = []
        self.tokens = tokenize(source, names)
        self.index = 0
        self.depth = 0
        #: The nodes written in parentheses, by id (held, so that no id is reused): a
        #: compared bitwise operation must be one of them.
        self.grouped: dict[int, Node] = {}
        if len(self.tokens) > MAX_TOKENS:
            self.fail(f"a shorter expression (at most {MAX_TOKENS} tokens)",
                      self.tokens[MAX_TOKENS])

    def nest(self) -> None:
        self.depth += 1
        if self.depth > MAX_NESTING:
            self.fail(f"at most {MAX_NESTING} levels of nesting", self.token)

    # --- token helpers -------------------------------------------------------------------

    @property
    def token(self) -> Token:
        return self.tokens[self.index]

    def check(self, kind: str, *texts: str) -> bool:
        token = self.token
        return token.kind == kind and (not texts or token.text in texts)

    def read(self) -> Token:
        token = self.token
        self.index += 1
        return token

    def expect(self, kind: str, text: str | None, expected: str) -> Token:
        if not self.check(kind, *(() if text is None else (text,))):
            self.fail(f"expected {expected}", self.token)
        return self.read()

    def fail(self, message: str, where: Token | Span) -> NoReturn:
        from xstate_check.engine.tokenizer import RuleSyntaxError, Token

        span = (where.start, max(where.end, where.start + 1)) if isinstance(where, Token) else where
        if isinstance(where, Token) and where.kind == "END":
            message += ", found the end of the expression"
        raise RuleSyntaxError(message, source=self.source, span=span)

    def want(self, node: Node, wanted: str, what: str) -> None:
        if node.type != wanted:
            self.fail(f"{what} needs {_describe(wanted)}, found {_describe(node.type)}", node.span)

    # --- grammar --------------------------------------------------------------------------

    def parse(self) -> Node:
        """expression = implication END"""
        node = self._parse_implication()
        if not self.check("END"):
            self.fail("expected an operator or the end of the expression", self.token)
        return node

    def _parse_implication(self) -> Node:
        """implication = disjunction ( "=>" implication )?"""
        self.nest()
        left = self._parse_disjunction()
        if self.check("OP", "=>"):
            self.read()
            right = self._parse_implication()
            self.want(left, "bool", "'=>'")
            self.want(right, "bool", "'=>'")
            left = Binary("=>", left, right, "bool", (left.span[0], right.span[1]))
        self.depth -= 1
        return left

    def _parse_disjunction(self) -> Node:
        """disjunction = conjunction ( "or" conjunction )*"""
        node = self._parse_conjunction()
        while self.check("KEYWORD", "or"):
            self.read()
            right = self._parse_conjunction()
            self.want(node, "bool", "'or'")
            self.want(right, "bool", "'or'")
            node = Binary("or", node, right, "bool", (node.span[0], right.span[1]))
        return node

    def _parse_conjunction(self) -> Node:
        """conjunction = negation ( "and" negation )*"""
        node = self._parse_negation()
        while self.check("KEYWORD", "and"):
            self.read()
            right = self._parse_negation()
            self.want(node, "bool", "'and'")
            self.want(right, "bool", "'and'")
            node = Binary("and", node, right, "bool", (node.span[0], right.span[1]))
        return node

    def _parse_negation(self) -> Node:
        """negation = "not" negation | quantifier | comparison"""
        if self.check("KEYWORD", "all", "any"):
            return self._parse_quantifier()
        if self.check("KEYWORD", "not"):
            start = self.read().start
            self.nest()
            operand = self._parse_negation()
            self.depth -= 1
            self.want(operand, "bool", "'not'")
            return Unary("not", operand, "bool", (start, operand.span[1]))
        return self._parse_comparison()

    def _parse_quantifier(self) -> Node:
        """quantifier = ("all" | "any") NAME "in" "components" "(" implication ")" ":"
                        implication"""
        start = self.token
        if len(self.scope) >= MAX_QUANTIFIERS:
            self.fail(f"at most {MAX_QUANTIFIERS} quantifiers one inside another (a component "
                      "and another): each multiplies the work by the components walked", start)
        self.read()
        self.nest()
        var = self.expect("NAME", None, f"a variable name after '{start.text}', such as c")
        if ("." in var.text or var.text in self.names or var.text in self.scope
                or any(name.startswith(var.text + ".") for name in self.names)
                or var.text == "item"):
            self.fail(f"a new variable name, not {clip_quote(var.text)}, which is taken", var)
        self.expect("KEYWORD", "in", f"'in' after '{start.text} {var.text}'")
        self.expect("KEYWORD", "components", "components(MASK): a quantifier walks the "
                    "xfeatures of a mask")
        self.expect("LPAREN", None, "'(' after components")
        domain = self._parse_implication()
        self.expect("RPAREN", None, "')' to close components(")
        self.want(domain, "int", "components()")
        self.expect("COLON", None, f"':' and the condition each component of {var.text} "
                    "must meet")
        self.scope.append(var.text)
        body = self._parse_implication()
        self.scope.pop()
        self.want(body, "bool", f"'{start.text}'")
        self.depth -= 1
        return Quantifier(start.text, var.text, domain, body, (start.start, body.span[1]))

    def _parse_comparison(self) -> Node:
        """comparison = bit_or ( COMPARE_OP bit_or )?

        COMPARE_OP = "==" | "!=" | "<" | "<=" | ">" | ">=" | "in" | "not" "in"
        """
        left = self._parse_bit_or()
        if self.check("OP", "==", "!=", "<", "<=", ">", ">=") or self.check("KEYWORD", "in"):
            op = self.read().text
        elif self.check("KEYWORD", "not"):
            self.read()
            self.expect("KEYWORD", "in", "'in' after 'not'")
            op = "not in"
        else:
            return left
        right = self._parse_bit_or()
        span = (left.span[0], right.span[1])
        for operand in (left, right):
            if (isinstance(operand, Binary) and operand.op in _BITWISE
                    and id(operand) not in self.grouped):
                self.fail(f"parentheses around this '{operand.op}' operand of '{op}': C binds "
                          "== != < <= > >= tighter than & | ^, so a compared bitwise operation is "
                          "written (a & b) == c", operand.span)
        if op in ("in", "not in"):
            if right.type == "int":
                self.want(left, "int", f"'{op}' on a mask")
            elif right.type.startswith("list:"):
                self.want(left, right.type[5:], f"'{op}' on this list")
            else:
                self.fail(f"'{op}' needs a mask or a list on its right, found "
                          f"{_describe(right.type)}", right.span)
        elif op in ("==", "!="):
            if left.type != right.type:
                self.fail(f"'{op}' compares {_describe(left.type)} with "
                          f"{_describe(right.type)}", span)
        else:
            if left.type not in _ORDERED:
                self.fail(f"'{op}' needs numbers or versions, found {_describe(left.type)}",
                          left.span)
            self.want(right, left.type, f"'{op}'")
        if self.check("OP", "==", "!=", "<", "<=", ">", ">=") or self.check("KEYWORD", "in"):
            self.fail("comparisons do not chain; use 'and'", self.token)
        return Compare(op, left, right, span)

    def _binary_level(self, ops: tuple[str, ...], lower: Callable[[], Node]) -> Node:
        node = lower()
        while self.check("OP", *ops):
            op = self.read().text
            right = lower()
            self.want(node, "int", f"'{op}'")
            self.want(right, "int", f"'{op}'")
            node = Binary(op, node, right, "int", (node.span[0], right.span[1]))
        return node

    def _parse_bit_or(self) -> Node:
        """bit_or = bit_xor ( "|" bit_xor )*"""
        return self._binary_level(("|",), self._parse_bit_xor)

    def _parse_bit_xor(self) -> Node:
        """bit_xor = bit_and ( "^" bit_and )*"""
        return self._binary_level(("^",), self._parse_bit_and)

    def _parse_bit_and(self) -> Node:
        """bit_and = shift ( "&" shift )*"""
        return self._binary_level(("&",), self._parse_shift)

    def _parse_shift(self) -> Node:
        """shift = additive ( ("<<" | ">>") additive )*"""
        return self._binary_level(("<<", ">>"), self._parse_additive)

    def _parse_additive(self) -> Node:
        """additive = product ( ("+" | "-") product )*"""
        return self._binary_level(("+", "-"), self._parse_product)

    def _parse_product(self) -> Node:
        """product = unary ( "*" unary )*"""
        return self._binary_level(("*",), self._parse_unary)

    def _parse_unary(self) -> Node:
        """unary = ("~" | "-") unary | primary"""
        if self.check("OP", "~", "-"):
            token = self.read()
            self.nest()
            operand = self._parse_unary()
            self.depth -= 1
            self.want(operand, "int", f"'{token.text}'")
            return Unary(token.text, operand, "int", (token.start, operand.span[1]))
        return self._parse_primary()

    def _parse_primary(self) -> Node:
        """primary = NUMBER | VERSION | STRING | "true" | "false" | NAME | NAME "(" args ")"
                   | "[" items "]" | "(" implication ")"
        """
        token = self.token
        if token.kind == "NUMBER":
            self.read()
            digits = token.text.replace("_", "")
            if len(digits) > 66 or (digits.isdigit() and len(digits) > 20):
                self.fail("a number of at most 64 bits", token)
            try:
                value = int(digits, 0)
            except ValueError:
                self.fail("a number: 0x… hex, 0b… binary or decimal", token)
            if value >> 64:
                self.fail("a number of at most 64 bits", token)
            return Literal(value, "int", (token.start, token.end))
        if token.kind == "VERSION":
            self.read()
            major, minor = token.text.split(".")
            return Literal((int(major), int(minor)), "version", (token.start, token.end))
        if token.kind == "STRING":
            self.read()
            return Literal(token.text[1:-1], "str", (token.start, token.end))
        if token.kind == "KEYWORD" and token.text in ("true", "false"):
            self.read()
            return Literal(token.text == "true", "bool", (token.start, token.end))
        if token.kind == "NAME":
            return self._parse_name()
        if token.kind == "LBRACKET":
            return self._parse_list()
        if token.kind == "LPAREN":
            self.read()
            node = self._parse_implication()
            close = self.expect("RPAREN", None, "')' to close the '(' at column "
                                f"{token.start + 1}")
            grouped = node._replace(span=(token.start, close.end))
            self.grouped[id(grouped)] = grouped
            return grouped
        self.fail("expected a number, name, '(' or '['", token)

    def _parse_name(self) -> Node:
        """name = NAME ( "(" ( implication ( "," implication )* )? ")" )?"""
        token = self.read()
        span = (token.start, token.end)
        head, _, attribute = token.text.partition(".")
        if head in self.scope:
            return self._attribute(token, head, attribute)
        if token.text not in self.names:
            self._unknown(token, list(self.names)
                          + [f"{var}.{name}" for var in self.scope for name in self.attributes])
        meaning = self.resolve(token.text)
        if meaning.role == "function":
            self.expect("LPAREN", None, f"'(' after the function {token.text}")
            args: list[Node] = []
            if not self.check("RPAREN"):
                args.append(self._parse_implication())
                while self.check("COMMA"):
                    self.read()
                    args.append(self._parse_implication())
            close = self.expect("RPAREN", None, f"')' to close the call of {token.text}")
            span = (token.start, close.end)
            if len(args) != len(meaning.args):
                self.fail(f"{token.text}() takes {len(meaning.args)} argument(s), "
                          f"found {len(args)}", span)
            for arg, wanted in zip(args, meaning.args, strict=True):
                self.want(arg, wanted, f"{token.text}()")
            return Call(token.text, tuple(args), meaning.type, span)
        if self.check("LPAREN"):
            self.fail(f"{token.text} is not a function", self.token)
        if meaning.role == "constant":
            return Literal(meaning.value, meaning.type, span)
        return Name(token.text, meaning.role, meaning.type, span)

    def _attribute(self, token: Token, var: str, attribute: str) -> Node:
        """attribute = VARIABLE "." ATTRIBUTE, of a variable a quantifier around binds"""
        if not attribute:
            self.fail(f"an attribute of the component {var} ({var}.size, {var}.offset, …)", token)
        kind = self.attributes.get(attribute)
        if kind is None:
            self._unknown(token, [f"{var}.{name}" for name in self.attributes])
        if self.check("LPAREN"):
            self.fail(f"{token.text} is not a function", self.token)
        return Attribute(var, attribute, kind, (token.start, token.end))

    def _unknown(self, token: Token, known: list[str]) -> NoReturn:
        import difflib

        close = difflib.get_close_matches(token.text, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        self.fail(f"unknown name {clip_quote(token.text)}{hint}", token)

    def _parse_list(self) -> Node:
        """list = "[" ( bit_or ( "," bit_or )* )? "]" """
        start = self.read().start
        self.nest()
        items: list[Node] = []
        if not self.check("RBRACKET"):
            items.append(self._parse_bit_or())
            while self.check("COMMA"):
                self.read()
                items.append(self._parse_bit_or())
        end = self.expect("RBRACKET", None, "',' or ']'").end
        self.depth -= 1
        if not items:
            self.fail("an empty list matches nothing", (start, end))
        for item in items[1:]:
            self.want(item, items[0].type, "a list")
        return ListExpr(tuple(items), "list:" + items[0].type, (start, end))


def _describe(type_name: str) -> str:
    return {
        "int": "a number or mask",
        "bool": "a condition",
        "str": "a string",
        "version": "a version",
        "items": "a list of entries",
    }.get(type_name, "a list" if type_name.startswith("list:") else type_name)


def parse_expression(
    source: str, resolve: Callable[[str], Resolved], names: Collection[str],
    attributes: Mapping[str, str] | None = None,
) -> Node:
    """Parse and type-check ``source``; ``names`` lists every name ``resolve`` knows and
    ``attributes`` the type of each component attribute (by default the registry's).

    Raises ``RuleSyntaxError`` with the source and the span of the problem.
    """
    if attributes is None:
        from xstate_check.facts import ATTRIBUTES, language_type

        attributes = {name: language_type(spec.kind) for name, spec in ATTRIBUTES.items()}
    return _Parser(source, resolve, names, attributes).parse()
