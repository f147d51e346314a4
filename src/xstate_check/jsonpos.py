"""A small strict JSON parser that remembers the line and column of every value.

It accepts exactly RFC 8259 JSON, as serde_json (which Firecracker uses) does: no comments,
no trailing commas, no NaN or Infinity, no leading zeros, no raw control characters in
strings, no byte-order mark, nothing after the document, at most 128 nested arrays and
objects, and at most ``MAX_JSON_VALUES`` values (both bounds are checked by one linear scan
before any value is built). Numbers read as serde_json reads them: integers of the u64 or
i64 range are ``int``, ``-0`` and anything else is ``float``. A \\u escape of a lone
surrogate is refused unless the caller asks to keep it (serde_json refuses it only in the
strings it keeps; ``has_lone_surrogate`` tells the caller which strings hold one). A
repeated key in one object is an error unless the caller asks to see the repeats. Every
syntax error is an ``InputError`` naming path, line and column, with the offending source
line and a caret.
"""

from __future__ import annotations

import gc
import json
import re
from collections.abc import Callable
from typing import Any

from xstate_check.errors import InputError, LineIndex, error_at
from xstate_check.limits import MAX_DEPTH, MAX_JSON_VALUES

__all__ = [
    "MAX_DEPTH",
    "MAX_JSON_VALUES",
    "Node",
    "check_bounds",
    "has_lone_surrogate",
    "parse",
]

# The whitespace pattern matches the empty string, so it never returns None.
_skip: Callable[[str, int], re.Match[str]] = re.compile(r"[ \t\n\r]*").match  # type: ignore[assignment]
_STRING = re.compile(
    r'"([^"\\\x00-\x1f]*(?:\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4})[^"\\\x00-\x1f]*)*)"'
).match
_VALID_ESCAPE = re.compile(r'\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4})').match
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?").match
_NUMBER_TAIL = frozenset(".eE0123456789")
_SURROGATE = re.compile("[\ud800-\udfff]")
_LITERALS = (("true", True), ("false", False), ("null", None))
# One token of the bounds scan: a string (to its closing quote, or the end of the file), an
# opening or closing bracket, or a run of scalar characters. The string alternative is an
# unrolled loop, so it keeps no backtracking state however long the string is.
_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?|[\[{]|[\]}]|[^\s\[\]{},:"]+', re.S)


def check_bounds(text: str, path: str, *, max_values: int = MAX_JSON_VALUES,
                 max_depth: int = MAX_DEPTH) -> None:
    """Refuse a JSON text of more than ``max_values`` values or ``max_depth`` nesting.

    One linear scan of the tokens, stopped at the first token past a bound, before any value
    is built; the error names the line and column of that token.
    """
    if len(text) <= max_values and (
            text.count("[") + text.count("{") <= max_depth or _nesting(text) <= max_depth):
        # No more values than characters, and not too deep (fewer brackets in all than the
        # depth allowed, or so deep at most): nothing to point at.
        return
    depth = values = closers = 0
    for match in _TOKEN.finditer(text):
        char = text[match.start()]
        if char in "]}":
            # A closing bracket is no value, but a run of them must not be scanned forever.
            closers += 1
            depth = max(0, depth - 1)
            if closers <= max_values:
                continue
        else:
            values += 1
        if values > max_values or closers > max_values:
            raise error_at(
                path, text, match.start(),
                f"expected at most {max_values} JSON values in one file "
                           "(xstate-check's limit)",
                end=match.end(),
            )
        if char in "[{":
            depth += 1
            if depth > max_depth:
                raise error_at(
                    path, text, match.start(),
                    f"expected at most {max_depth} nested arrays and objects",
                    end=match.start() + 1,
                )


_STRING_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?', re.S)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


def _nesting(text: str) -> int:
    """Return the deepest nesting ``check_bounds`` would see, its brackets alone scanned
    (strings, as its tokens find them, taken out first)."""
    depth = deepest = 0
    for char in _NOT_BRACKET.sub("", _STRING_TOKEN.sub("", text)):
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif depth:
            depth -= 1
    return deepest


def has_lone_surrogate(value: str) -> bool:
    """Return whether a decoded JSON string holds a lone surrogate (from a \\u escape)."""
    return _SURROGATE.search(value) is not None


_NO_DUPLICATES: list[Node] = []


class Node:
    """One JSON value with its position: ``value`` (plain Python), ``line``, ``column``.

    Objects have ``items`` (key -> Node, first occurrence) and ``keys`` (key -> the key's
    own string Node); arrays have ``items`` (a list of Node); scalars have ``items = None``.
    ``duplicates`` lists the key Nodes of repeated keys (only when the parser allowed them).
    ``offset`` and ``end`` are character offsets of the value in the text.
    """

    __slots__ = ("_lines", "duplicates", "end", "items", "keys", "offset", "value")

    def __init__(
        self,
        value: Any,
        offset: int,
        end: int,
        lines: LineIndex,
        *,
        items: dict[str, Node] | list[Node] | None = None,
        keys: dict[str, Node] | None = None,
        duplicates: list[Node] | None = None,
    ) -> None:
        self.value = value
        self.offset = offset
        self.end = end
        self._lines = lines
        self.items = items
        self.keys = keys
        # Scalars share one empty list (never appended to): one allocation less per value.
        self.duplicates = duplicates or _NO_DUPLICATES

    @property
    def line(self) -> int:
        """Return the 1-based line where the value starts."""
        return self._lines.position(self.offset)[0]

    @property
    def column(self) -> int:
        """Return the 1-based column (in characters) where the value starts."""
        return self._lines.position(self.offset)[1]

    @property
    def kind(self) -> str:
        """Return the JSON type: object, array, string, number, boolean or null."""
        value = self.value
        if isinstance(value, dict):
            return "object"
        if isinstance(value, list):
            return "array"
        if isinstance(value, str):
            return "string"
        if isinstance(value, bool):
            return "boolean"
        if value is None:
            return "null"
        return "number"

    def object_items(self) -> dict[str, Node]:
        """Return the members of an object node (empty for any other kind)."""
        return self.items if isinstance(self.items, dict) else {}

    def array_items(self) -> list[Node]:
        """Return the elements of an array node (empty for any other kind)."""
        return self.items if isinstance(self.items, list) else []

    def __repr__(self) -> str:
        return f"Node({self.kind} at {self.line}:{self.column})"


def parse(
    text: str, path: str, *, allow_duplicates: bool = False, lone_surrogates: bool = False
) -> Node:
    """Parse one strict JSON document and return its root Node.

    A repeated key in an object raises InputError, unless ``allow_duplicates`` is set: then
    the first occurrence is kept in ``items`` and the repeats are listed in ``duplicates``.
    A lone surrogate escape raises InputError, unless ``lone_surrogates`` is set: then the
    string keeps it, and ``has_lone_surrogate`` finds it.
    """
    check_bounds(text, path)
    # The tree holds no cycles: a collection pass every few hundred Nodes only costs time
    # (half of it for the largest documents), so the collector pauses while it is built.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _Parser(text, path, allow_duplicates, lone_surrogates).document()
    finally:
        if collecting:
            gc.enable()


def _decode_string(raw: str) -> str:
    """Return the value of a string body with escapes; surrogate pairs are joined.

    ``raw`` has matched the string grammar (valid escapes, no raw control character), so
    Python's own decoder reads it alike, in C: a string of half a million escapes costs no
    Python call per escape.
    """
    if "\\" not in raw:
        return raw
    value: str = json.loads(f'"{raw}"')
    if _SURROGATE.search(value):
        # Pairs become one character; a lone surrogate stays (the caller decides).
        value = value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")
    return value


class _Parser:
    """Recursive descent over the text; one method per JSON production."""

    def __init__(self, text: str, path: str, allow_duplicates: bool,
                 lone_surrogates: bool) -> None:
        self.text = text
        self.path = path
        self.allow_duplicates = allow_duplicates
        self.lone_surrogates = lone_surrogates
        self.newlines = LineIndex(text)

    def fail(
        self, offset: int, expected: str, end: int | None = None, *, found: bool = True
    ) -> InputError:
        """Return the InputError for ``offset``, saying what was found there."""
        if found:
            expected = f"{expected}, found {self.found(offset)}"
        return error_at(self.path, self.text, offset, expected, end=end)

    def found(self, offset: int) -> str:
        """Describe the character at ``offset`` for an error message."""
        if offset >= len(self.text):
            return "the end of the file"
        char = self.text[offset]
        if char == "\ufeff":
            return "a byte-order mark (JSON files must not start with one)"
        for word in ("NaN", "Infinity"):
            if self.text.startswith(word, offset):
                return f"{word} (not a JSON number)"
        return repr(char)

    def document(self) -> Node:
        """document = ws value ws EOF."""
        node, offset = self.value(_skip(self.text, 0).end(), 0)
        offset = _skip(self.text, offset).end()
        if offset != len(self.text):
            raise self.fail(offset, "expected the end of the JSON document")
        return node

    def value(self, offset: int, depth: int) -> tuple[Node, int]:
        """value = object / array / string / number / true / false / null."""
        text = self.text
        char = text[offset : offset + 1]
        if char == '"':
            return self.string(offset)
        if char == "{":
            return self.object(offset, depth + 1)
        if char == "[":
            return self.array(offset, depth + 1)
        if char and char in "-0123456789":
            return self.number(offset)
        for word, literal in _LITERALS:
            if text.startswith(word, offset):
                end = offset + len(word)
                return Node(literal, offset, end, self.newlines), end
        raise self.fail(offset, "expected a JSON value")

    def object(self, offset: int, depth: int) -> tuple[Node, int]:
        """object = '{' ws [ member *( ',' ws member ) ] '}'; member = string ws ':' ws value ws."""
        if depth > MAX_DEPTH:
            raise self.fail(offset, f"expected at most {MAX_DEPTH} nested arrays and objects")
        text = self.text
        items: dict[str, Node] = {}
        keys: dict[str, Node] = {}
        duplicates: list[Node] = []
        cursor = _skip(text, offset + 1).end()
        if text.startswith("}", cursor):
            return Node({}, offset, cursor + 1, self.newlines, items=items, keys=keys), cursor + 1
        while True:
            if not text.startswith('"', cursor):
                if text.startswith("}", cursor) and items:
                    raise self.fail(cursor, "expected another \"key\" after ',' (JSON allows "
                                    "no trailing comma)")
                raise self.fail(cursor, 'expected a "key" string in double quotes')
            key, cursor = self.string(cursor)
            cursor = _skip(text, cursor).end()
            if not text.startswith(":", cursor):
                raise self.fail(cursor, f"expected ':' after the key {key.value!r}")
            member, cursor = self.value(_skip(text, cursor + 1).end(), depth)
            name = key.value
            if name in items:
                if not self.allow_duplicates:
                    first = keys[name]
                    raise self.fail(
                        key.offset,
                        f"expected each key once in an object, but {name!r} is already at "
                        f"line {first.line} column {first.column} (Firecracker: duplicate "
                        f"field `{name}`)",
                        key.end,
                        found=False,
                    )
                duplicates.append(key)
            else:
                items[name] = member
                keys[name] = key
            cursor = _skip(text, cursor).end()
            char = text[cursor : cursor + 1]
            if char == ",":
                cursor = _skip(text, cursor + 1).end()
                continue
            if char == "}":
                value = {name: node.value for name, node in items.items()}
                node = Node(
                    value, offset, cursor + 1, self.newlines,
                    items=items, keys=keys, duplicates=duplicates,
                )
                return node, cursor + 1
            raise self.fail(cursor, "expected ',' or '}' in the object")

    def array(self, offset: int, depth: int) -> tuple[Node, int]:
        """array = '[' ws [ value ws *( ',' ws value ws ) ] ']'."""
        if depth > MAX_DEPTH:
            raise self.fail(offset, f"expected at most {MAX_DEPTH} nested arrays and objects")
        text = self.text
        items: list[Node] = []
        cursor = _skip(text, offset + 1).end()
        if text.startswith("]", cursor):
            return Node([], offset, cursor + 1, self.newlines, items=items), cursor + 1
        while True:
            if text.startswith("]", cursor) and items:
                raise self.fail(cursor, "expected another value after ',' (JSON allows no "
                                "trailing comma)")
            element, cursor = self.value(cursor, depth)
            items.append(element)
            cursor = _skip(text, cursor).end()
            char = text[cursor : cursor + 1]
            if char == ",":
                cursor = _skip(text, cursor + 1).end()
                continue
            if char == "]":
                values = [n.value for n in items]
                node = Node(values, offset, cursor + 1, self.newlines, items=items)
                return node, cursor + 1
            raise self.fail(cursor, "expected ',' or ']' in the array")

    def string(self, offset: int) -> tuple[Node, int]:
        """string = '"' *( unescaped / escape ) '"'."""
        match = _STRING(self.text, offset)
        if match is None:
            raise self.string_error(offset)
        end = match.end()
        raw = match.group(1)
        value = raw if "\\" not in raw else _decode_string(raw)
        if not self.lone_surrogates and has_lone_surrogate(value):
            raise self.fail(offset, "expected \\u escapes that pair surrogates (no lone "
                            "surrogate)", end, found=False)
        return Node(value, offset, end, self.newlines), end

    def string_error(self, offset: int) -> InputError:
        """Return the error for the malformed string that starts at ``offset``."""
        text = self.text
        cursor = offset + 1
        while cursor < len(text):
            char = text[cursor]
            if char == '"':
                break
            if char == "\\":
                if not _VALID_ESCAPE(text, cursor):
                    return self.fail(
                        cursor, 'expected a JSON escape (\\" \\\\ \\/ \\b \\f \\n \\r \\t '
                        "or \\u and 4 hex digits)", cursor + 2, found=False
                    )
                cursor += 2
                continue
            if ord(char) < 0x20:
                return self.fail(cursor, "expected no raw control character inside a string "
                                 "(write it as an escape such as \\n)")
            cursor += 1
        node = Node(None, offset, offset, self.newlines)
        return self.fail(len(text), f"expected '\"' to close the string that starts at line "
                         f"{node.line} column {node.column}")

    def number(self, offset: int) -> tuple[Node, int]:
        """number = [ '-' ] int [ frac ] [ exp ]."""
        match = _NUMBER(self.text, offset)
        end = match.end() if match else offset + 1
        if match is None or self.text[end : end + 1] in _NUMBER_TAIL:
            raise self.fail(
                end, "expected a JSON number (digits, no leading zero, digits after '.' and 'e')"
            )
        literal = match.group(0)
        value: int | float
        if literal == "-0":
            # serde_json reads -0 as the float -0.0 (parse_number: "or on `-0`").
            value = -0.0
        elif match.group(1) is None and match.group(2) is None and len(literal) <= 40:
            value = int(literal)
            # serde_json keeps integers in u64 or i64; anything larger becomes a float.
            if not -(2**63) <= value < 2**64:
                value = float(literal)
        else:
            value = float(literal)
        return Node(value, offset, end, self.newlines), end
