"""The project's own CPUID JSON (schema ``xstate-check-cpuid/1``): what ``convert`` writes.

```
{"schema": "xstate-check-cpuid/1",
 "source": "dumps/GenuineIntel00806F8_SapphireRapids_05_CPUID.txt",
 "role": "cpu",                       # "cpu": a CPU as an OS saw it; "guest": a guest's table
 "meta": {"cpu": "0", "format": "aida64"},
 "entries": [{"leaf": "0x0000000d", "subleaf": "0x0", "flags": 1,
              "eax": "0x000602e7", "ebx": "0x00002b00", "ecx": "0x00002b00", "edx": "0x00000000"}]}
```

``schema`` and ``entries`` are required; ``source`` defaults to the file's path, ``role`` to
``"cpu"`` and ``meta`` to ``{}``. Leaf, subleaf and registers are strings of ``0x`` and 1 to 8
hexadecimal digits (decimal is refused, as in Firecracker templates); ``flags`` (KVM's
per-entry flags) is an optional integer, written only where the table records it. Unknown
keys and a repeated (leaf, subleaf) are errors. ``meta["format"]`` names the format the table
was first read from and is kept; a file without it reads as ``"xstate-check-json"``.
``to_json_text`` is deterministic (entries sorted, meta keys sorted, ASCII only) and
``read_cpuid_json`` gives back equal entries, flags, meta, role and source. The template
provenance of a ``CpuidSet`` is not written.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

from xstate_check import jsonpos
from xstate_check.cpuid import REGISTERS, CpuidSet, Registers, recorded_source_kind
from xstate_check.errors import InputError, Location, error_at, line_column
from xstate_check.limits import MAX_ENTRIES

__all__ = [
    "FORMAT",
    "ROLES",
    "SCHEMA",
    "read_cpuid_json",
    "to_json_text",
]

SCHEMA = "xstate-check-cpuid/1"
FORMAT = "xstate-check-json"
ROLES = ("cpu", "guest")

_TOP_KEYS = ("schema", "source", "role", "meta", "entries")
_ENTRY_KEYS = ("leaf", "subleaf", "flags", *REGISTERS)
_ENTRY_KEY_SET = frozenset(_ENTRY_KEYS)
#: The fields every entry has, in order.
_FIELDS = ("leaf", "subleaf", *REGISTERS)
_HEX_VALUE = re.compile(r"0x[0-9a-fA-F]{1,8}\Z")
_U32 = 0xFFFFFFFF
#: The meta key that says a table holds no subleaf of leaf 0xD beyond 0 (``"absent"``).
_SUBLEAVES_KEY = "leaf_0xd_subleaves"


def to_json_text(cpuid: CpuidSet) -> str:
    """Return ``cpuid`` as the project's CPUID JSON; the same table gives the same bytes."""
    role = cpuid.role
    shown = dict(cpuid.meta)
    if not cpuid.leaf_0xd_complete:
        shown[_SUBLEAVES_KEY] = "absent"
    meta = {key: shown[key] for key in sorted(shown) if key != "role"}
    out = [
        "{",
        f'  "schema": {json.dumps(SCHEMA)},',
        f'  "source": {json.dumps(cpuid.source)},',
        f'  "role": {json.dumps(role)},',
    ]
    if meta:
        out.append('  "meta": {')
        items = [f"    {json.dumps(key)}: {json.dumps(value)}" for key, value in meta.items()]
        out.append(",\n".join(items))
        out.append("  },")
    else:
        out.append('  "meta": {},')
    rows = []
    for (leaf, subleaf), regs in sorted(cpuid.entries.items()):
        fields = [f'"leaf": "0x{leaf:08x}"', f'"subleaf": "{subleaf:#x}"']
        flags = cpuid.flags.get((leaf, subleaf))
        if flags is not None:
            fields.append(f'"flags": {flags}')
        fields.extend(
            f'"{name}": "0x{value:08x}"' for name, value in zip(REGISTERS, regs, strict=True)
        )
        rows.append("    {" + ", ".join(fields) + "}")
    if rows:
        out.append('  "entries": [')
        out.append(",\n".join(rows))
        out.append("  ]")
    else:
        out.append('  "entries": []')
    out.append("}")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- positions

_WS = re.compile(r"[ \t\r\n]*")
# Unrolled loops: no backtracking stack per character, even for a 16 MiB string.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_SKIP = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.S)
_SCALAR = re.compile(r"[^,\]}\s]+")

_Path = tuple[str | int, ...]
#: Python's int() refuses longer decimal strings (sys.get_int_max_str_digits()).
_MAX_DIGITS = 4300
_STRING_OR_LONG_NUMBER = re.compile(
    rf'"[^"\\]*(?:\\.[^"\\]*)*"|-?[0-9]{{{_MAX_DIGITS + 1},}}', re.S
)


class _Positions:
    """Where keys and values of the top three levels of a valid JSON text start.

    Built only when an error needs a line: ``json`` itself keeps no positions.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.keys: dict[_Path, int] = {}
        self.values: dict[_Path, int] = {}
        self.duplicates: list[_Path] = []
        self._walk(_WS.match(text, 0).end(), (), 0)  # type: ignore[union-attr]

    def _ws(self, pos: int) -> int:
        return _WS.match(self.text, pos).end()  # type: ignore[union-attr]

    def _skip(self, pos: int) -> int:
        """Return the end of the value starting at ``pos``, without recursion."""
        text = self.text
        if text.startswith('"', pos):
            return _STRING.match(text, pos).end()  # type: ignore[union-attr]
        if not text.startswith(("[", "{"), pos):
            match = _SCALAR.match(text, pos)
            return match.end() if match else pos + 1
        depth = 0
        for match in _SKIP.finditer(text, pos):
            token = match.group()
            if token in ("[", "{"):
                depth += 1
            elif token in ("]", "}"):
                depth -= 1
                if depth == 0:
                    return match.end()
        return len(text)

    def _walk(self, pos: int, path: _Path, depth: int) -> int:
        text = self.text
        self.values.setdefault(path, pos)
        if depth >= 3 or not text.startswith(("[", "{"), pos):
            return self._skip(pos)
        is_object = text[pos] == "{"
        pos = self._ws(pos + 1)
        index = 0
        while pos < len(text) and text[pos] not in "]}":
            if is_object:
                key_pos = pos
                match = _STRING.match(text, pos)
                if match is None:
                    return len(text)
                child: _Path = (*path, json.loads(match.group()))
                pos = self._ws(match.end()) + 1  # past ':'
                pos = self._ws(pos)
                if child in self.keys:
                    self.duplicates.append(child)
                    self.keys[(*child, "#duplicate")] = key_pos
                else:
                    self.keys[child] = key_pos
            else:
                child = (*path, index)
                index += 1
            pos = self._ws(self._walk(pos, child, depth + 1))
            if text.startswith(",", pos):
                pos = self._ws(pos + 1)
        return pos + 1

    def span(self, at: _Path, *, key: bool = False) -> tuple[int, int]:
        """Return the start and end offsets of a key or value."""
        offset = self.keys.get(at) if key else self.values.get(at)
        if offset is None:
            offset = self.values.get(at, self.values.get((), 0))
        key_match = _STRING.match(self.text, offset) if key else None
        return offset, key_match.end() if key_match is not None else self._skip(offset)


class _Reader:
    """Validation of one decoded document, with positions looked up on error."""

    def __init__(self, text: str, path: str) -> None:
        self.text = text
        self.path = path
        self._positions: _Positions | None = None

    @property
    def positions(self) -> _Positions:
        if self._positions is None:
            self._positions = _Positions(self.text)
        return self._positions

    def fail(self, at: _Path, expected: str, *, key: bool = False) -> InputError:
        """Return an InputError pointing at the key or value ``at``."""
        start, end = self.positions.span(at, key=key)
        return error_at(self.path, self.text, start, expected, end=end)

    def hex_field(self, value: object, at: _Path, name: str) -> int:
        """Return a ``"0x…"`` field as an int, or fail naming what was expected."""
        if isinstance(value, str) and _HEX_VALUE.match(value):
            return int(value, 16)
        raise self.fail(
            at,
            f'expected "{name}" as a string of "0x" and 1 to 8 hexadecimal digits '
            f'such as "0x0000000d"; found {_json_name(value)} {_shown(value)}',
        )


def _shown(value: object) -> str:
    """Return a decoded value as JSON for a message, cut to 40 characters."""
    shown = json.dumps(value)
    return shown if len(shown) <= 40 else shown[:37] + "..."


def _json_name(value: object) -> str:
    """Return the JSON name of a decoded value's type."""
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return {
        dict: "an object", list: "an array", str: "a string", int: "a number", float: "a number"
    }[type(value)]


def read_cpuid_json(text: str, path: str) -> CpuidSet:
    """Read the project's CPUID JSON, validating keys and types with line numbers."""
    duplicates: list[bool] = []

    def pairs_hook(pairs: list[tuple[str, object]]) -> dict[str, object]:
        result = dict(pairs)
        if len(result) != len(pairs):
            duplicates.append(True)
        return result

    # Bounded before json builds anything: values, nesting (json itself would recurse until
    # RecursionError, without a line).
    jsonpos.check_bounds(text, path)
    try:
        document = json.loads(text, object_pairs_hook=pairs_hook)
    except json.JSONDecodeError as error:
        # json's messages end in " at" and carry the position separately.
        problem = re.sub(r"(?: starting)? at$", "", error.msg)
        raise error_at(
            path, text, error.pos, f"expected valid JSON: {problem[:1].lower()}{problem[1:]}",
        ) from None
    except (ValueError, RecursionError) as error:
        number = _long_number(text)
        if number is not None:
            raise error_at(
                path, text, number.start(),
                f"expected a number of at most {_MAX_DIGITS} digits (as Python reads JSON)",
                end=number.end(),
            ) from None
        raise InputError(Location(path), f"expected valid JSON: {error}") from None

    reader = _Reader(text, path)
    if duplicates and reader.positions.duplicates:
        at = reader.positions.duplicates[0]
        where = ".".join(str(part) for part in at)
        raise reader.fail(
            (*at, "#duplicate"), f'expected each key once in an object; "{where}" is repeated',
            key=True,
        )
    if not isinstance(document, dict):
        raise reader.fail(
            (), f'expected a JSON object with "schema": "{SCHEMA}"; found {_json_name(document)}'
        )
    for key in document:
        if key not in _TOP_KEYS:
            allowed = ", ".join(f'"{k}"' for k in _TOP_KEYS)
            raise reader.fail((key,), f"expected one of the keys {allowed}; found {_shown(key)}",
                              key=True)
    if "schema" not in document:
        raise reader.fail((), f'expected the key "schema": "{SCHEMA}" in the top-level object')
    if document["schema"] != SCHEMA:
        raise reader.fail(
            ("schema",),
            f'expected "schema": "{SCHEMA}"; found {_shown(document["schema"])}',
        )
    source = document.get("source", path)
    if not isinstance(source, str):
        raise reader.fail(("source",), f'expected "source" as a string; found {_json_name(source)}')
    role = document.get("role", "cpu")
    if role not in ROLES:
        raise reader.fail(
            ("role",), f'expected "role" to be "cpu" or "guest"; found {_shown(role)}'
        )
    meta = _read_meta(reader, document.get("meta", {}))
    if meta.pop("role", role) != role:
        raise reader.fail(
            ("meta", "role"), f'expected "meta"."role" to equal "role" ("{role}")', key=True
        )
    meta.setdefault("format", FORMAT)
    complete = meta.pop(_SUBLEAVES_KEY, None) != "absent"
    entries, flags = _read_entries(reader, document)
    return CpuidSet(entries, source, flags=flags, meta=meta, role=role,
                    source_kind=recorded_source_kind(source) if "source" in document else "file",
                    leaf_0xd_complete=complete)


def _long_number(text: str) -> re.Match[str] | None:
    """Return the first number of the text with more digits than Python converts, or None."""
    for match in _STRING_OR_LONG_NUMBER.finditer(text):
        if not match.group().startswith('"'):
            return match
    return None


def _read_meta(reader: _Reader, meta: object) -> dict[str, str]:
    """Validate ``meta``: an object of strings."""
    if not isinstance(meta, dict):
        raise reader.fail(("meta",), f'expected "meta" as an object; found {_json_name(meta)}')
    for key, value in meta.items():
        if not isinstance(value, str):
            raise reader.fail(
                ("meta", key),
                f'expected "meta".{_shown(key)} as a string; found {_json_name(value)}',
            )
    return dict(meta)


def _read_entries(
    reader: _Reader, document: Mapping[str, object]
) -> tuple[dict[tuple[int, int], Registers], dict[tuple[int, int], int]]:
    """Validate ``entries`` and return the rows and the recorded flags."""
    if "entries" not in document:
        raise reader.fail((), 'expected the key "entries" (an array) in the top-level object')
    raw = document["entries"]
    if not isinstance(raw, list):
        raise reader.fail(("entries",), f'expected "entries" as an array; found {_json_name(raw)}')
    if len(raw) > MAX_ENTRIES:
        raise reader.fail(("entries", MAX_ENTRIES),
                          f"expected at most {MAX_ENTRIES} entries (xstate-check's limit)")
    entries: dict[tuple[int, int], Registers] = {}
    flags: dict[tuple[int, int], int] = {}
    first_index: dict[tuple[int, int], int] = {}
    match = _HEX_VALUE.match
    for index, entry in enumerate(raw):
        # Most entries are well formed: every field a "0x…" string, no other key. Those are
        # read at once; any other goes through ``_entry``, which names what is wrong.
        try:
            numbers = [int(text, 16) for name in _FIELDS
                       if type(text := entry[name]) is str and match(text)]
            good = len(numbers) == 6 and entry.keys() <= _ENTRY_KEY_SET
        except (KeyError, TypeError):
            good = False
        if good:
            leaf, subleaf, *values = numbers
            regs = Registers(*values)
        else:
            leaf, subleaf, regs = _entry(reader, entry, ("entries", index))
        key_pair = (leaf, subleaf)
        if key_pair in entries:
            other = reader.positions.span(("entries", first_index[key_pair]))[0]
            raise reader.fail(
                ("entries", index),
                f"expected each leaf and subleaf once; leaf {leaf:#x} subleaf {subleaf:#x} "
                f"is already at line {line_column(reader.text, other)[0]}",
            )
        if "flags" in entry:
            value = entry["flags"]
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _U32:
                raise reader.fail(
                    ("entries", index, "flags"),
                    f'expected "flags" as an integer from 0 to {_U32}; found {json.dumps(value)}',
                )
            flags[key_pair] = value
        entries[key_pair] = regs
        first_index[key_pair] = index
    return entries, flags


def _entry(reader: _Reader, entry: object, at: _Path) -> tuple[int, int, Registers]:
    """Return an entry's leaf, subleaf and registers, or fail naming what is wrong."""
    if not isinstance(entry, dict):
        raise reader.fail(at, f"expected an entry object; found {_json_name(entry)}")
    for key in entry:
        if key not in _ENTRY_KEYS:
            allowed = ", ".join(f'"{k}"' for k in _ENTRY_KEYS)
            raise reader.fail((*at, key), f"expected one of the entry keys {allowed}; "
                              f"found {_shown(key)}", key=True)
    missing = [key for key in _FIELDS if key not in entry]
    if missing:
        names = ", ".join(f'"{k}"' for k in missing)
        raise reader.fail(at, f"expected the entry keys {names}")
    leaf = reader.hex_field(entry["leaf"], (*at, "leaf"), "leaf")
    subleaf = reader.hex_field(entry["subleaf"], (*at, "subleaf"), "subleaf")
    regs = Registers(*(reader.hex_field(entry[name], (*at, name), name) for name in REGISTERS))
    return leaf, subleaf, regs
