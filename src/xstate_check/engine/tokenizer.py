"""The rule language's tokens: a table of compiled regexes, tried in order.

Names are checked against the known facts, xfeatures, CPUID features, functions and the
variables the expression's quantifiers bind while tokenizing, so a misspelt name is
reported with a caret before anything is evaluated.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import NamedTuple, NoReturn

from xstate_check.errors import clip_quote

__all__ = ["KEYWORDS", "PUNCTUATION", "RULES", "RuleSyntaxError", "Token", "tokenize"]


class Token(NamedTuple):
    """One token: its kind (a key of ``RULES``), its text and where it stands."""

    kind: str
    text: str
    start: int

    @property
    def end(self) -> int:
        """Return the offset just past the token."""
        return self.start + len(self.text)


class RuleSyntaxError(Exception):
    """Raised when a rule expression cannot be read; carries the source and the bad span."""

    def __init__(self, message: str, *, source: str, span: tuple[int, int]) -> None:
        super().__init__(message)
        self.message = message
        self.source = source
        self.span = span

    def __str__(self) -> str:
        start, end = self.span
        marker = " " * start + "~" * max(0, end - start - 1) + "^"
        return f"{self.message}\n    {self.source}\n    {marker}"


KEYWORDS = frozenset({"and", "or", "not", "in", "true", "false", "all", "any", "components"})

#: Token kinds in the order they are tried; the first that matches wins.
RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("WS", re.compile(r"[ \t\r\n]+")),
    ("VERSION", re.compile(r"\d{1,4}\.\d{1,4}(?![\w.])")),
    ("NUMBER", re.compile(r"0[xX][0-9a-fA-F_]+|0[bB][01_]+|\d[\d_]*(?![\w.])")),
    ("STRING", re.compile(r'"[^"\\\n]*"|\'[^\'\\\n]*\'')),
    ("NAME", re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")),
    ("OP", re.compile(r"=>|==|!=|<=|>=|<<|>>|[<>&|^~+\-*]")),
    ("PUNCTUATION", re.compile(r"[()\[\],:]")),
)
#: The kind of each punctuation character.
PUNCTUATION = {"(": "LPAREN", ")": "RPAREN", "[": "LBRACKET", "]": "RBRACKET", ",": "COMMA",
               ":": "COLON"}


def _fail(message: str, source: str, start: int, end: int) -> NoReturn:
    raise RuleSyntaxError(message, source=source, span=(start, end))


def _next_match(source: str, position: int) -> tuple[str, re.Match[str]]:
    for kind, pattern in RULES:
        match = pattern.match(source, position)
        if match is not None:
            return kind, match
    _fail(f"unexpected character {source[position]!r}", source, position, position + 1)


def tokenize(source: str, names: Collection[str]) -> list[Token]:
    """Split ``source`` into tokens (whitespace dropped, an ``END`` token last).

    ``names`` are the identifiers the expression may use besides the keywords and the
    variables its quantifiers bind (``all c in …``: ``c`` and ``c.size`` …); any other
    identifier is an error naming the closest known one. The parser checks that a variable
    is used where it is bound, and what its attributes are.
    """
    tokens: list[Token] = []
    variables: set[str] = set()
    position = 0
    length = len(source)
    while position < length:
        kind, match = _next_match(source, position)
        text = match.group()
        if kind == "PUNCTUATION":
            kind = PUNCTUATION[text]
        elif kind == "NAME":
            if text in KEYWORDS:
                kind = "KEYWORD"
            elif tokens and tokens[-1].kind == "KEYWORD" and tokens[-1].text in ("all", "any"):
                variables.add(text)
            elif text not in names and text.partition(".")[0] not in variables:
                import difflib

                close = difflib.get_close_matches(text, list(names), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                _fail(f"unknown name {clip_quote(text)}{hint}", source, position, match.end())
        if kind != "WS":
            tokens.append(Token(kind, text, position))
        position = match.end()
    tokens.append(Token("END", "", length))
    return tokens
