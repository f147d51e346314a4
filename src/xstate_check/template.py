"""Firecracker x86_64 custom CPU templates: parse with positions, apply with provenance.

The parser accepts exactly what Firecracker's serde deserializer accepts (FIRECRACKER.md §1
and §7) and quotes Firecracker's own error wording; every error names file, line and column.
Applying follows ``apply_template_to_cpuid``: each modifier needs its exact (leaf, subleaf)
entry, overwrites that entry's flags and applies ``new = (old & ~filter) | value`` in order;
a template never adds an entry. Each bit a template sets or clears remembers its JSON line.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator, Mapping
from operator import itemgetter
from types import MappingProxyType
from typing import Any, Literal

import attrs

from xstate_check import jsonpos
from xstate_check.cpuid import CpuidSet, EntryMasks, Provenance, Registers, copy_mapping
from xstate_check.errors import QUOTE_WIDTH, InputError, Location, check_argument, error_at
from xstate_check.jsonpos import Node
from xstate_check.limits import (
    MAX_ENTRIES,
    MAX_JSON_VALUES,
    MAX_MSR_MODIFIERS,
    MAX_REGISTER_MODIFIERS,
)
from xstate_check.subject import MissingEntry
from xstate_check.textfile import read_text

__all__ = [
    "AppliedTemplate",
    "LeafModifier",
    "MsrModifier",
    "RegisterModifier",
    "Template",
    "apply_template",
    "format_bitmap",
    "load_template",
    "parse_bitmap",
    "parse_template",
    "template_from_node",
]

Register = Literal["eax", "ebx", "ecx", "edx"]

_U32 = 0xFFFF_FFFF
_TOP_LEVEL = ("kvm_capabilities", "cpuid_modifiers", "msr_modifiers")
_AARCH64_KEYS = ("reg_modifiers", "vcpu_features")
_FINGERPRINT_KEYS = ("guest_cpu_config", "firecracker_version", "kernel_version")
_VM_CONFIG_KEYS = ("boot-source", "machine-config", "cpu-config", "drives")
_LEAF_FIELDS = ("leaf", "subleaf", "flags", "modifiers")
_REGISTER_FIELDS = ("register", "bitmap")
_MSR_FIELDS = ("addr", "bitmap")
_PREFIX_HINT = (
    "Make sure to prefix the number with '0x' for hexadecimal numbers or '0b' for binary "
    "numbers."
)
_INT_ERROR_TEXT = {
    "Empty": "cannot parse integer from empty string",
    "InvalidDigit": "invalid digit found in string",
    "PosOverflow": "number too large to fit in target type",
}


@attrs.frozen
class RegisterModifier:
    """One ``{"register", "bitmap"}``: the bits ``filter`` selects become ``value``."""

    register: Register
    filter: int
    value: int
    location: Location


@attrs.frozen
class LeafModifier:
    """One cpuid modifier: the (leaf, subleaf) entry, its new KVM flags, register changes.

    ``location`` is where the ``"leaf"`` value stands in the JSON.
    """

    leaf: int
    subleaf: int
    flags: int
    modifiers: tuple[RegisterModifier, ...]
    location: Location


@attrs.frozen
class MsrModifier:
    """One ``{"addr", "bitmap"}``: a 64-bit MSR change."""

    addr: int
    filter: int
    value: int
    location: Location


@attrs.frozen
class Template:
    """A parsed Firecracker x86_64 custom CPU template, in file order.

    ``kvm_capabilities`` holds the normalized strings (``"56"``, ``"!56"``).
    """

    path: str
    cpuid_modifiers: tuple[LeafModifier, ...] = ()
    msr_modifiers: tuple[MsrModifier, ...] = ()
    kvm_capabilities: tuple[str, ...] = ()

    def entries(self) -> list[tuple[int, int]]:
        """Return the (leaf, subleaf) entries the template modifies, in first-use order."""
        return list(dict.fromkeys((mod.leaf, mod.subleaf) for mod in self.cpuid_modifiers))

    def modified_bits(self) -> dict[tuple[int, int, str], tuple[int, int]]:
        """Return (leaf, subleaf, register) -> (filter, value) after all modifiers, in order.

        ``filter`` has a 1 for every bit the template pins; ``value`` gives those bits.
        """
        result: dict[tuple[int, int, str], tuple[int, int]] = {}
        for leaf_modifier in self.cpuid_modifiers:
            for modifier in leaf_modifier.modifiers:
                key = (leaf_modifier.leaf, leaf_modifier.subleaf, modifier.register)
                old_filter, old_value = result.get(key, (0, 0))
                result[key] = (
                    old_filter | modifier.filter,
                    (old_value & ~modifier.filter) | modifier.value,
                )
        return result


@attrs.frozen
class AppliedTemplate:
    """The result of applying a template: the guest CpuidSet and the entries it lacked."""

    cpuid: CpuidSet
    missing: tuple[MissingEntry, ...] = ()


# --- parsing ---------------------------------------------------------------------------


def parse_template(text: str, path: str) -> Template:
    """Parse a template's JSON text; any deviation from Firecracker's rules is an InputError."""
    plain = _plain_template(text, path)
    if plain is not None:
        return plain
    root = jsonpos.parse(text, path, allow_duplicates=True, lone_surrogates=True)
    return template_from_node(root, text, path)


def load_template(path: str | os.PathLike[str]) -> Template:
    """Read and parse a template file (at most 16 MiB of UTF-8, no byte-order mark).

    Errors are InputError; a ``path`` that is not a string or path is a TypeError.
    """
    check_argument("load_template", "path", path, (str, os.PathLike), "a path (str or Path)")
    name = os.fspath(path)
    check_argument("load_template", "path", name, str, "a text path (str or Path)")
    return parse_template(read_text(name, byte_order_mark=False), name)


# With no backslash in the text every quote delimits a string, and a string followed by a
# colon is a key: these are the "leaf" and "bitmap" keys of every object, each with its
# value's offset.
_LOCATED_KEY = re.compile(r'"(leaf|bitmap)"[ \t\n\r]*:[ \t\n\r]*')
_SURROGATES = re.compile("[\ud800-\udfff]")


def _plain_template(text: str, path: str) -> Template | None:
    """Read a template the common way in C, or return None to read it the thorough way.

    The plain case: no backslash escape, no surrogate, no repeated or unknown key, every
    value of the type and form Firecracker takes, within xstate-check's limits, and the
    text no larger than its limit of JSON values (so that bounds hold as they are). Its
    Template is the one ``template_from_node`` reads from the positioned tree (a test
    compares them on generated texts); anything else (every error included) is left to
    that reader, which says where and why.
    """
    # No minus sign: no field takes a negative number, and -0 reads as a float (serde_json).
    # A text of ASCII alone (the common case, told in C at once) holds no surrogate.
    if (len(text) > MAX_JSON_VALUES or "\\" in text or "-" in text
            or (not text.isascii() and _SURROGATES.search(text))):
        return None
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if type(document) is not dict or not document.keys() <= _TOP_LEVEL_KEYS:
        return None
    capabilities = _plain_capabilities(document.get("kvm_capabilities", []))
    leaves = document.get("cpuid_modifiers", [])
    msrs = document.get("msr_modifiers", [])
    if (capabilities is None or type(leaves) is not list or type(msrs) is not list
            or len(leaves) > MAX_ENTRIES or len(msrs) > MAX_MSR_MODIFIERS):
        return None
    # Where the values stand: each leaf modifier's "leaf", each register and MSR modifier's
    # "bitmap", in document order; any other object with such a key makes the counts differ.
    leaf_offsets: list[int] = []
    bitmap_offsets: list[int] = []
    for match in _LOCATED_KEY.finditer(text):
        (leaf_offsets if match.group(1) == "leaf" else bitmap_offsets).append(match.end())
    registers = 0
    for leaf in leaves:
        modifiers = leaf.get("modifiers") if type(leaf) is dict else None
        if type(modifiers) is not list:
            return None
        registers += len(modifiers)
    # Every object of a plain template has its exact keys and no string value holds a colon
    # (both checked below), so each colon of the text follows a key: there are as many as
    # the objects' keys only where no object repeats one.
    keys = (len(document) + len(leaves) * len(_LEAF_KEYS) + registers * len(_REGISTER_KEYS)
            + len(msrs) * len(_MSR_KEYS))
    if (len(leaf_offsets) != len(leaves) or registers > MAX_REGISTER_MODIFIERS
            or len(bitmap_offsets) != registers + len(msrs) or text.count(":") != keys):
        return None
    where = _positions(text, path, [*leaf_offsets, *bitmap_offsets])
    cpuid_bitmaps = msr_bitmaps = bitmap_offsets
    if msrs and leaves:
        sections = list(document)
        if sections.index("msr_modifiers") < sections.index("cpuid_modifiers"):
            cpuid_bitmaps = bitmap_offsets[len(msrs):]
        else:
            msr_bitmaps = bitmap_offsets[registers:]
    bitmaps = map(where.__getitem__, cpuid_bitmaps)
    read: list[LeafModifier] = []
    for leaf_modifier, offset in zip(leaves, leaf_offsets, strict=True):
        made = _plain_leaf(leaf_modifier, where[offset], bitmaps)
        if made is None:
            return None
        read.append(made)
    msr_modifiers: list[MsrModifier] = []
    for msr, offset in zip(msrs, msr_bitmaps, strict=False):
        if type(msr) is not dict or msr.keys() != _MSR_KEYS:
            return None
        addr = _plain_number(msr["addr"])
        bits = _plain_bitmap(msr["bitmap"], 64)
        if addr is None or bits is None:
            return None
        msr_modifiers.append(MsrModifier(addr, bits[0], bits[1], where[offset]))
    return Template(path, tuple(read), tuple(msr_modifiers), capabilities)


def _plain_capabilities(items: object) -> tuple[str, ...] | None:
    """Return kvm_capabilities normalized (``N``, ``!N``), or None where not plain."""
    if type(items) is not list:
        return None
    kept: list[str] = []
    for item in items:
        if type(item) is not str:
            return None
        remove = item.startswith("!")
        parsed = _rust_parse_u32(item[1:] if remove else item, 10)
        if isinstance(parsed, str):
            return None
        kept.append(f"!{parsed}" if remove else str(parsed))
    return tuple(kept)


def _plain_leaf(node: object, location: Location,
                bitmaps: Iterator[Location]) -> LeafModifier | None:
    """Return one plain cpuid modifier (its bitmaps' locations taken in turn), or None."""
    if type(node) is not dict or node.keys() != _LEAF_KEYS:
        return None
    leaf = _plain_number(node["leaf"])
    subleaf = _plain_number(node["subleaf"])
    flags = node["flags"]
    if leaf is None or subleaf is None or type(flags) is not int or flags > _U32:
        return None
    changes: list[RegisterModifier] = []
    for modifier in node["modifiers"]:
        if type(modifier) is not dict or modifier.keys() != _REGISTER_KEYS:
            return None
        register = modifier["register"]
        if register not in _REGISTERS:
            return None
        bitmap = modifier["bitmap"]
        # parse_bitmap's fast path inline (the common case); anything else goes through it.
        body = bitmap[2:] if type(bitmap) is str and bitmap.startswith("0b") else bitmap
        if type(body) is str and body and len(body) <= 32 and not body.strip("01x"):
            changes.append(RegisterModifier(
                register, int(body.replace("0", "1").replace("x", "0"), 2),
                int(body.replace("x", "0"), 2), next(bitmaps)))
            continue
        bits = _plain_bitmap(bitmap, 32)
        if bits is None:
            return None
        changes.append(RegisterModifier(register, bits[0], bits[1], next(bitmaps)))
    return LeafModifier(leaf, subleaf, flags, tuple(changes), location)


_TOP_LEVEL_KEYS = frozenset(("kvm_capabilities", "cpuid_modifiers", "msr_modifiers"))
_LEAF_KEYS = frozenset(("leaf", "subleaf", "flags", "modifiers"))
_REGISTER_KEYS = frozenset(("register", "bitmap"))
_MSR_KEYS = frozenset(("addr", "bitmap"))
_REGISTERS: tuple[Register, ...] = ("eax", "ebx", "ecx", "edx")
_HEX_DIGITS = "0123456789abcdefABCDEF"


def _plain_bitmap(value: object, width: int) -> tuple[int, int] | None:
    """Return a bitmap string's (filter, value), else None."""
    if type(value) is not str:
        return None
    parsed = parse_bitmap(value, width)
    return None if isinstance(parsed, str) else parsed


def _plain_number(value: object) -> int | None:
    """Return a leaf, subleaf or addr string's number (0x or 0b, u32), else None."""
    if type(value) is not str or not value.startswith(("0x", "0b")):
        return None
    digits = value[2:]
    # At most 8 hex or 32 binary digits, nothing else (no sign, separator or space, which
    # int() would take): int() reads them as Rust does, and they fit in u32.
    if value[1] == "x":
        if 0 < len(digits) <= 8 and not digits.strip(_HEX_DIGITS):
            return int(digits, 16)
        radix = 16
    else:
        if 0 < len(digits) <= 32 and not digits.strip("01"):
            return int(digits, 2)
        radix = 2
    parsed = _rust_parse_u32(digits, radix)
    return None if isinstance(parsed, str) else parsed


def _positions(text: str, path: str, offsets: list[int]) -> dict[int, Location]:
    """Return the Location of each offset, the text's newlines counted once, in C."""
    found: dict[int, Location] = {}
    line, start, previous = 1, 0, 0
    for offset in sorted(offsets):
        newlines = text.count("\n", previous, offset)
        if newlines:
            line += newlines
            start = text.rfind("\n", previous, offset) + 1
        previous = offset
        found[offset] = Location(path, line, offset - start + 1)
    return found


def template_from_node(node: Node, text: str, path: str) -> Template:
    """Interpret an already parsed JSON node (a file, or a fingerprint's guest_cpu_config)."""
    return _Reader(text, path).template(node)


def _rust_parse_u32(digits: str, radix: int, bits: int = 32) -> int | str:
    """Mimic Rust's ``from_str_radix`` for an unsigned type: the value or the error kind."""
    if digits in ("", "+"):
        return "Empty" if digits == "" else "InvalidDigit"
    if digits[0] == "+":
        digits = digits[1:]
    limit = (1 << bits) - 1
    result = 0
    for char in digits:
        # ASCII digits only: Python's int() would also accept '_', spaces and other scripts.
        digit = "0123456789abcdef".find(char.lower()) if char.isascii() else -1
        if digit < 0 or digit >= radix:
            return "InvalidDigit"
        result = result * radix + digit
        if result > limit:
            return "PosOverflow"
    return result


def parse_bitmap(text: str, width: int) -> tuple[int, int] | str:
    """Parse a tri-state bitmap as Firecracker does: (filter, value), or its error message.

    An optional ``0b`` prefix, then ``0``/``1``/``x`` read from the right; ``_`` is skipped;
    missing high bits are ``x``; more than ``width`` characters (counting a ``_`` met after
    the width is full) is too long.
    """
    body = text[2:] if text.startswith("0b") else text
    if len(body) <= width and body.strip("01x") == "":
        # Fast path: no separators, no bad characters.
        return (
            int(body.replace("0", "1").replace("x", "0"), 2) if body else 0,
            int(body.replace("x", "0"), 2) if body else 0,
        )
    filter_bits = value_bits = 0
    bit = 0
    for char in reversed(body):
        if bit == width:
            return f"Failed to parse string [{text}] as a bitmap - string is too long"
        if char == "_":
            continue
        if char == "1":
            value_bits |= 1 << bit
        if char in "01":
            filter_bits |= 1 << bit
        elif char != "x":
            byte = char.encode("utf-8", "surrogatepass")[-1]
            return (
                f"Failed to parse string [{text}] as a bitmap - unknown character: {byte}"
            )
        bit += 1
    return filter_bits, value_bits


def _describe(node: Node) -> str:
    """Name what a JSON value is, for 'found …' in messages."""
    kind = node.kind
    if kind == "string":
        return f"the string {_quote(node.value)}"
    if kind == "number":
        return f"the number {json.dumps(node.value)}"
    if kind in ("boolean", "null"):
        return json.dumps(node.value)
    return f"an {kind}"


def _quote(value: str) -> str:
    """Show a string on one line, JSON-escaped, in double quotes, cut to ``QUOTE_WIDTH``."""
    if len(value) > QUOTE_WIDTH:
        value = value[:QUOTE_WIDTH] + "…"
    return json.dumps(value, ensure_ascii=False)


def _oneline(value: str) -> str:
    """Show a string on one line, JSON-escaped, without quotes."""
    return _quote(value)[1:-1]


def _serde_type(node: Node) -> str:
    """Say what serde_json's 'invalid type' message would say the value is."""
    kind = node.kind
    value = node.value
    if kind == "number":
        return f"floating point `{value!r}`" if isinstance(value, float) else f"integer `{value}`"
    if kind == "string":
        return f"string {_quote(value)}"
    if kind == "boolean":
        return f"boolean `{json.dumps(value)}`"
    return {"null": "null", "object": "map", "array": "sequence"}[kind]


class _Reader:
    """Turns the JSON tree of one file into a Template, raising positioned InputErrors."""

    def __init__(self, text: str, path: str) -> None:
        self.text = text
        self.path = path

    def location(self, node: Node) -> Location:
        """Return the Location of a node."""
        return Location(self.path, node.line, node.column)

    def error(self, node: Node, expected: str) -> InputError:
        """Return an InputError pointing at ``node``."""
        return error_at(self.path, self.text, node.offset, expected, end=node.end)

    def kept(self, node: Node) -> None:
        """Refuse a lone surrogate in a string serde_json keeps (a key, a String field).

        serde_json checks surrogates only in the strings it deserializes; it skips those of
        fields it ignores without looking (read.rs: parse_unicode_escape vs ignore_escape).
        """
        if isinstance(node.value, str) and jsonpos.has_lone_surrogate(node.value):
            raise self.error(
                node, "expected \\u escapes that pair surrogates (no lone surrogate) in a key "
                "or a string Firecracker reads (Firecracker: lone leading surrogate in hex "
                "escape)"
            )

    def fields(
        self, node: Node, what: str, struct: str, fields: tuple[str, ...], *, required: bool,
        deny_unknown: bool = False,
    ) -> dict[str, Node]:
        """Check an object's keys like a serde derive: repeats, missing and unknown fields."""
        if node.kind != "object":
            raise self.error(
                node, f"expected {what} as an object, found {_describe(node)} (Firecracker: "
                f"invalid type: {_serde_type(node)}, expected struct {struct})"
            )
        for key in sorted([*(node.keys or {}).values(), *node.duplicates],
                          key=lambda key: key.offset):
            self.kept(key)
        members = node.object_items()
        for key in node.duplicates:
            if key.value in fields:
                raise self.error(
                    key, f"expected {key.value!r} once in {what} (Firecracker: duplicate field "
                    f"`{key.value}`)"
                )
        if deny_unknown:
            for name, key in (node.keys or {}).items():
                if name not in fields:
                    raise self.error(key, self.unknown_field_message(name, what, fields))
        if required:
            for name in fields:
                if name not in members:
                    raise error_at(
                        self.path, self.text, node.offset,
                        f"expected the field {name!r} in {what} (Firecracker: missing field "
                        f"`{name}`)",
                        end=node.offset + 1,
                    )
        return members

    @staticmethod
    def unknown_field_message(name: str, what: str, fields: tuple[str, ...]) -> str:
        """Word the error for a key a deny_unknown_fields struct does not know."""
        allowed = ", ".join(fields)
        serde = ", ".join(f"`{field}`" for field in fields)
        message = f"expected only {allowed} in {what}, found {_quote(name)}"
        if name in _AARCH64_KEYS:
            message += (
                f": {name} belongs to aarch64 CPU templates, and aarch64 templates are not x86 "
                "templates"
            )
        elif name in _FINGERPRINT_KEYS:
            message += ": this looks like a Firecracker fingerprint, which is a CPUID source"
        elif name in _VM_CONFIG_KEYS:
            message += (
                ": this looks like a Firecracker VM configuration; its template is the file "
                'named by "cpu-config"'
            )
        return f"{message} (Firecracker: unknown field `{name}`, expected one of {serde})"

    def bound(self, items: list[Node], limit: int, what: str) -> None:
        """Refuse more than ``limit`` items, at the first one past it."""
        if len(items) > limit:
            raise self.error(
                items[limit], f"expected at most {limit} {what} in a template (xstate-check's "
                "limit)"
            )

    def array(self, node: Node, what: str) -> list[Node]:
        """Require a JSON array (serde's Vec)."""
        if node.kind != "array":
            raise self.error(
                node, f"expected {what} as an array, found {_describe(node)} (Firecracker: "
                f"invalid type: {_serde_type(node)}, expected a sequence)"
            )
        return node.array_items()

    def string(self, node: Node, what: str) -> str:
        """Require a JSON string (serde's String)."""
        if node.kind != "string":
            raise self.error(
                node, f"expected {what} as a string, found {_describe(node)} (Firecracker: "
                f"invalid type: {_serde_type(node)}, expected a string)"
            )
        self.kept(node)
        value: str = node.value
        return value

    def number(self, node: Node, what: str, example: str) -> int:
        """Parse leaf/subleaf/addr: a string with a lowercase 0x or 0b prefix, range u32."""
        text = self.string(node, f'"{what}" (such as "{example}")')
        if text.startswith("0b"):
            radix, name = 2, "binary digits"
        elif text.startswith("0x"):
            radix, name = 16, "hex digits"
        else:
            raise self.error(
                node, f'expected "{what}" as a string with a lowercase 0x or 0b prefix such as '
                f'"{example}", found {_quote(text)} (Firecracker: No supported number system '
                f"prefix found in value [{_oneline(text)}]. {_PREFIX_HINT})"
            )
        parsed = _rust_parse_u32(text[2:], radix)
        if isinstance(parsed, str):
            problem = {
                "Empty": f"no {name} after the prefix",
                "InvalidDigit": f"a character that is not one of the {name}",
                "PosOverflow": "a value above 0xffffffff",
            }[parsed]
            raise self.error(
                node, f'expected "{what}" as {name} after {text[:2]} that fit in 32 bits, '
                f"found {problem} in {_quote(text)} (Firecracker: Failed to parse string "
                f"[{_oneline(text)}] as a number for CPU template - ParseIntError {{ kind: "
                f"{parsed} }})"
            )
        return parsed

    def flags(self, node: Node) -> int:
        """Parse ``flags``: a JSON integer from 0 to 2**32-1 (no bool, float or string)."""
        value = node.value
        if node.kind == "number" and isinstance(value, int) and 0 <= value <= _U32:
            return value
        if node.kind == "number" and isinstance(value, int):
            serde = f"invalid value: integer `{value}`, expected u32"
        else:
            serde = f"invalid type: {_serde_type(node)}, expected u32"
        raise self.error(
            node, f'expected "flags" as a JSON integer from 0 to 4294967295 (KVM cpuid '
            f"flags: 1 = significant index), found {_describe(node)} (Firecracker: {serde})"
        )

    def bitmap(self, node: Node, width: int) -> tuple[int, int]:
        """Parse a bitmap string of ``width`` bits into (filter, value)."""
        text = self.string(node, f'"bitmap" (such as "0b{"x" * (width - 4)}0110")')
        parsed = parse_bitmap(text, width)
        if isinstance(parsed, str):
            body = text[2:] if text.startswith("0b") else text
            if parsed.endswith("too long"):
                count = len(body.replace("_", ""))
                found = (
                    f"{count} bit characters" if count > width
                    else f"a _ left of all {width} bit characters (Firecracker counts it)"
                )
            else:
                bad = next(char for char in reversed(body) if char not in "01x_")
                found = f"the character {bad!r}"
            raise self.error(
                node, f'expected "bitmap" as at most {width} characters 0, 1 or x (lowercase) '
                f"after an optional 0b, with _ as separator, found {found} in {_quote(text)} "
                f"(Firecracker: {parsed.replace(text, _oneline(text), 1)})"
            )
        return parsed

    def register(self, node: Node) -> Register:
        """Parse ``register``: exactly eax, ebx, ecx or edx."""
        text = self.string(node, '"register" (eax, ebx, ecx or edx)')
        if text == "eax":
            return "eax"
        if text == "ebx":
            return "ebx"
        if text == "ecx":
            return "ecx"
        if text == "edx":
            return "edx"
        raise self.error(
            node, f'expected "register" as one of eax, ebx, ecx, edx (lowercase), found '
            f"{_quote(text)} (Firecracker: Invalid CPUID register. Must be one of [eax, ebx, "
            "ecx, edx])"
        )

    def capability(self, node: Node) -> str:
        """Parse one kvm_capabilities string: ``N`` or ``!N``, N decimal fitting u32."""
        text = self.string(node, 'a KVM capability (such as "171" or "!56")')
        remove = text.startswith("!")
        parsed = _rust_parse_u32(text[1:] if remove else text, 10)
        if isinstance(parsed, str):
            raise self.error(
                node, f"expected a KVM capability as a decimal number, optionally after !, "
                f"found {_quote(text)} (Firecracker: Failed to parse string "
                f"[{_oneline(text)}] as a kvm capability - can not convert to numeric: "
                f"{_INT_ERROR_TEXT[parsed]})"
            )
        return f"!{parsed}" if remove else str(parsed)

    def template(self, node: Node) -> Template:
        """Read the top-level CustomCpuTemplate object."""
        members = self.fields(
            node, "an x86_64 CPU template", "CustomCpuTemplate", _TOP_LEVEL,
            required=False, deny_unknown=True,
        )
        capabilities: tuple[str, ...] = ()
        leaves: tuple[LeafModifier, ...] = ()
        msrs: tuple[MsrModifier, ...] = ()
        if "kvm_capabilities" in members:
            items = self.array(members["kvm_capabilities"], '"kvm_capabilities"')
            capabilities = tuple(self.capability(item) for item in items)
        if "cpuid_modifiers" in members:
            items = self.array(members["cpuid_modifiers"], '"cpuid_modifiers"')
            self.bound(items, MAX_ENTRIES, "cpuid modifiers")
            registers = 0
            read: list[LeafModifier] = []
            for item in items:
                read.append(self.leaf_modifier(item))
                registers += len(read[-1].modifiers)
                if registers > MAX_REGISTER_MODIFIERS:
                    raise self.error(
                        item, f"expected at most {MAX_REGISTER_MODIFIERS} register modifiers "
                        "in all cpuid modifiers of a template (xstate-check's limit)"
                    )
            leaves = tuple(read)
        if "msr_modifiers" in members:
            items = self.array(members["msr_modifiers"], '"msr_modifiers"')
            self.bound(items, MAX_MSR_MODIFIERS, "MSR modifiers")
            msrs = tuple(self.msr_modifier(item) for item in items)
        return Template(self.path, leaves, msrs, capabilities)

    def leaf_modifier(self, node: Node) -> LeafModifier:
        """Read one cpuid modifier {leaf, subleaf, flags, modifiers}; other keys are ignored."""
        members = self.fields(
            node, "a cpuid modifier", "CpuidLeafModifier", _LEAF_FIELDS, required=True
        )
        leaf = self.number(members["leaf"], "leaf", "0x7")
        subleaf = self.number(members["subleaf"], "subleaf", "0x0")
        flags = self.flags(members["flags"])
        modifiers = tuple(
            self.register_modifier(item)
            for item in self.array(members["modifiers"], '"modifiers"')
        )
        return LeafModifier(leaf, subleaf, flags, modifiers, self.location(members["leaf"]))

    def register_modifier(self, node: Node) -> RegisterModifier:
        """Read one {register, bitmap}; other keys are ignored."""
        members = self.fields(
            node, "a register modifier", "CpuidRegisterModifier", _REGISTER_FIELDS, required=True
        )
        register = self.register(members["register"])
        filter_bits, value_bits = self.bitmap(members["bitmap"], 32)
        return RegisterModifier(
            register, filter_bits, value_bits, self.location(members["bitmap"])
        )

    def msr_modifier(self, node: Node) -> MsrModifier:
        """Read one {addr, bitmap} with a 64-bit bitmap; other keys are ignored."""
        members = self.fields(
            node, "an MSR modifier", "RegisterModifier", _MSR_FIELDS, required=True
        )
        addr = self.number(members["addr"], "addr", "0x10a")
        filter_bits, value_bits = self.bitmap(members["bitmap"], 64)
        return MsrModifier(addr, filter_bits, value_bits, self.location(members["bitmap"]))


# --- applying --------------------------------------------------------------------------


#: One cpuid modifier, ready to apply: its entry, its flags, per register (in eax…edx order)
#: the bits kept and the bits set, and the (leaf, subleaf, register) pins it adds.
Step = tuple[tuple[int, int], int, tuple[int, int, int, int], tuple[int, int, int, int],
             tuple[tuple[tuple[int, int, str], tuple[tuple[int, Location], ...]], ...],
             Location]
_REGISTER_INDEX = {"eax": 0, "ebx": 1, "ecx": 2, "edx": 3}
#: One modified entry, ready to apply (see ``FoldedTemplate.composed``).
Composed = tuple[tuple[int, int], int | None, int | None, int | None, int | None,
                 int, int, int, int]


class FoldedTemplate:
    """A template's modifiers folded into masks once, to apply to many bases.

    ``masks``: per entry modified, ``(keep, put)`` per register (in eax…edx order): every
    modifier of the entry composed, ``new = (old & keep) | put``. ``composed``: per entry,
    in first-use order, ``keep`` register by register (None where the register keeps every
    bit and gets none) and ``put`` (what ``apply`` applies). ``provenance``: the template
    lines' pins once every modifier applies to a base without pins of its own (a profile),
    the case of every pair of a gate where nothing is missing. ``entries``: the (leaf,
    subleaf) keys it modifies, in first-use order, each with the line of its first
    modifier; ``keys`` the same as a set; ``written``: each key with the KVM flags it gets
    (those of its last modifier), in that order, and ``flag_values`` those flags alone;
    ``xsave_components``: whether one is a leaf 0xD subleaf from 2 up (a component's size,
    offset and flags). ``steps`` (worked out on first use, for a base with pins of its own
    or lacking an entry): per cpuid modifier, in order, its masks and the pins it adds.
    """

    __slots__ = ("_shares", "_shares_but_flags", "_steps", "_template", "composed", "entries",
                 "flag_values", "keys", "masks", "provenance", "read", "written",
                 "xsave_components")

    def __init__(self, template: Template) -> None:
        self._template = template
        self._steps: tuple[Step, ...] | None = None
        pins: dict[tuple[int, int, str], list[tuple[int, Location]]] = {}
        entries: dict[tuple[int, int], Location] = {}
        flags: dict[tuple[int, int], int] = {}
        masks: EntryMasks = {}
        index_of = _REGISTER_INDEX
        # One pass: each modifier applied in turn to its entry's masks is every step of the
        # entry composed, ``(old & k1 | p1) & k2 | p2`` being ``old & (k1 & k2) | (p1 & k2 | p2)``.
        xsave_components = False
        for leaf_modifier in template.cpuid_modifiers:
            leaf, subleaf = leaf_modifier.leaf, leaf_modifier.subleaf
            key = (leaf, subleaf)
            known = masks.get(key)
            if known is None:
                location = entries[key] = leaf_modifier.location
                keep, put = [_U32] * 4, [0] * 4
                # An empty pin under "flags" names the entry's first modifier's line for
                # findings about the entry's KVM flags; it owns no register bit.
                pins[leaf, subleaf, "flags"] = [(0, location)]
                xsave_components = xsave_components or (leaf == 0xD and subleaf >= 2)
            else:
                keep, put = list(known[0]), list(known[1])
            flags[key] = leaf_modifier.flags
            for modifier in leaf_modifier.modifiers:
                bits = modifier.filter
                if not bits:
                    continue  # a bitmap of x alone changes nothing and pins nothing
                index = index_of[modifier.register]
                mask = ~bits & _U32
                keep[index] &= mask
                put[index] = (put[index] & mask) | modifier.value
                pin = (bits, modifier.location)
                found = pins.get((leaf, subleaf, modifier.register))
                if found is None:
                    pins[leaf, subleaf, modifier.register] = [pin]
                else:
                    found.append(pin)
            masks[key] = ((keep[0], keep[1], keep[2], keep[3]),
                          (put[0], put[1], put[2], put[3]))
        self.masks = masks
        self.provenance = Provenance({key: (kept[0],) if len(kept) == 1 else _owning_pins(kept)
                                      for key, kept in pins.items()})
        self.entries = tuple(entries.items())
        self.keys = frozenset(entries)
        self.composed = tuple(_composed(key, keep, put) for key, (keep, put) in masks.items())
        self.written = tuple((key, flags[key]) for key in masks)
        self.flag_values = tuple(flags[key] for key in masks)
        #: The values of every modified entry in a mapping holding them all (a table's
        #: registers, its flags), in order.
        self.read: Callable[[Mapping[tuple[int, int], Any]], tuple[Any, ...]] = (
            itemgetter(*masks) if len(masks) > 1 else _read_one(*masks) if masks
            else _read_none)
        self.xsave_components = xsave_components
        # The parts of a base its guest table shares (see ``CpuidSet.trusted``).
        self._shares_but_flags = ("keys",) if self.xsave_components else (
            "keys", "xsave_components")
        self._shares = ("keys", "flags", *self._shares_but_flags[1:])

    @property
    def steps(self) -> tuple[Step, ...]:
        """Return each cpuid modifier ready to apply, in order (see ``Step``)."""
        if self._steps is None:
            self._steps = _steps(self._template)
        return self._steps

    def missing(self, base: CpuidSet) -> tuple[MissingEntry, ...]:
        """Return the entries the template modifies that ``base`` lacks, in first-use order."""
        have = base.entries
        if have.keys() >= self.keys:
            return ()
        return tuple(MissingEntry(*key, location) for key, location in self.entries
                     if key not in have)

    def apply(self, base: CpuidSet, path: str) -> tuple[CpuidSet, tuple[MissingEntry, ...]]:
        """Return the template (read from ``path``) applied to ``base``, and the entries
        ``base`` lacks (see ``apply_template``)."""
        have = base.entries
        entries = have.copy() if isinstance(have, MappingProxyType) else dict(have)
        base_flags = base.flags
        flags: dict[tuple[int, int], int] | None = None  # None: the base's, unchanged
        # Every modified entry at once: the modifiers of each entry composed (``masks``), its
        # flags those of its last modifier.
        try:  # the common case, told at once: every modified entry's flags are the base's
            same_flags = self.read(base_flags) == self.flag_values
        except KeyError:
            same_flags = False
        if not same_flags:
            for key, entry_flags in self.written:
                if key in have and base_flags.get(key) != entry_flags:
                    if flags is None:
                        flags = copy_mapping(base_flags)
                    flags[key] = entry_flags
        get = entries.get
        lacking = 0
        for key, k0, k1, k2, k3, p0, p1, p2, p3 in self.composed:
            old = get(key)
            if old is None:
                lacking += 1
                continue
            a, b, c, d = old
            entries[key] = _new_registers(Registers, (
                a if k0 is None else (a & k0) | p0, b if k1 is None else (b & k1) | p1,
                c if k2 is None else (c & k2) | p2, d if k3 is None else (d & k3) | p3))
        missing = self.missing(base) if lacking else ()
        provenance = base.provenance
        keys = provenance.register_keys()
        if not keys and not missing:  # every pin is the template's: folded once
            provenance = self.provenance
        else:
            pins = {key: list(provenance.pins(*key)) for key in keys}
            for key, *_, added, _location in self.steps:
                if key in have:
                    for register_key, register_pins in added:
                        pins.setdefault(register_key, []).extend(register_pins)
            provenance = Provenance({key: _owning_pins(kept) for key, kept in pins.items()})
        meta = copy_mapping(base.meta)
        meta["template"] = path
        # The base's entries are sorted and a template adds none: the order stands as it is,
        # and so does every part of the base the template does not modify (its flags too
        # where every modified entry keeps those the base records for it).
        cpuid = CpuidSet.trusted(
            entries, base.source, flags=flags, provenance=provenance, meta=meta, like=base,
            shares=self._shares if flags is None else self._shares_but_flags,
            masks=None if missing else self.masks)
        return cpuid, missing


def _composed(key: tuple[int, int], keep: tuple[int, int, int, int],
              put: tuple[int, int, int, int]) -> Composed:
    """Return one entry's ``composed`` row: ``keep`` None for a register left alone."""
    k0, k1, k2, k3 = keep
    p0, p1, p2, p3 = put
    return (key, None if k0 == _U32 and not p0 else k0,
            None if k1 == _U32 and not p1 else k1, None if k2 == _U32 and not p2 else k2,
            None if k3 == _U32 and not p3 else k3, p0, p1, p2, p3)


def _read_one(key: tuple[int, int]) -> Callable[[Mapping[tuple[int, int], Any]],
                                                tuple[Any, ...]]:
    """Return what reads the value of one entry, as a tuple (``itemgetter`` of one key
    gives the value alone)."""
    def read(values: Mapping[tuple[int, int], Any]) -> tuple[Any, ...]:
        return (values[key],)
    return read


def _read_none(values: Mapping[tuple[int, int], Any]) -> tuple[Any, ...]:
    """Read no entry: a template that modifies none."""
    return ()


def fold_template(template: Template) -> FoldedTemplate:
    """Return the template folded once (see ``FoldedTemplate``): what ``apply_template`` runs."""
    return FoldedTemplate(template)


def _steps(template: Template) -> tuple[Step, ...]:
    steps: list[Step] = []
    for leaf_modifier in template.cpuid_modifiers:
        key = (leaf_modifier.leaf, leaf_modifier.subleaf)
        keep = [_U32] * 4
        put = [0] * 4
        # An empty pin under "flags" names the modifier's line for findings about the
        # entry's KVM flags; it owns no register bit.
        pins: dict[tuple[int, int, str], list[tuple[int, Location]]] = {
            (*key, "flags"): [(0, leaf_modifier.location)]}
        for modifier in leaf_modifier.modifiers:
            index = _REGISTER_INDEX[modifier.register]
            mask = ~modifier.filter & _U32
            keep[index] &= mask
            put[index] = (put[index] & mask) | modifier.value
            if modifier.filter:
                pins.setdefault((*key, modifier.register), []).append(
                    (modifier.filter, modifier.location))
        steps.append((key, leaf_modifier.flags, (keep[0], keep[1], keep[2], keep[3]),
                      (put[0], put[1], put[2], put[3]),
                      tuple((register, tuple(added)) for register, added in pins.items()),
                      leaf_modifier.location))
    return tuple(steps)


_new_registers = tuple.__new__


def apply_template(template: Template, base: CpuidSet,
                   folded: FoldedTemplate | None = None) -> AppliedTemplate:
    """Apply a template to a base CpuidSet as Firecracker does, remembering each bit's line.

    A modifier whose exact (leaf, subleaf) the base lacks is recorded in ``missing`` (where
    Firecracker refuses to boot) and skipped; the result never gains an entry. ``folded``
    (``fold_template(template)``) saves folding the modifiers again for each base.
    """
    cpuid, missing = (folded or fold_template(template)).apply(base, template.path)
    return AppliedTemplate(cpuid, missing)


def _owning_pins(pins: list[tuple[int, Location]]) -> tuple[tuple[int, Location], ...]:
    """Return the pins of one register that still own a bit, and the first pin, in order.

    A pin all of whose bits later pins override changes no answer (each bit belongs to its
    last pin), except the first, whose line is where the template first touches the entry.
    Dropping the others keeps a register to at most 33 pins however many modifiers a
    template repeats: applying stays linear.
    """
    kept: list[tuple[int, Location]] = []
    covered = 0
    for index in range(len(pins) - 1, -1, -1):
        mask, where = pins[index]
        if mask & ~covered or index == 0:
            kept.append((mask, where))
        covered |= mask
    kept.reverse()
    return tuple(kept)


# --- writing ---------------------------------------------------------------------------


def format_bitmap(filter_bits: int, value_bits: int, width: int = 32) -> str:
    """Write a bitmap as Firecracker serializes it: 0b, then every bit, x where unfiltered."""
    chars = [
        ("1" if value_bits >> bit & 1 else "0") if filter_bits >> bit & 1 else "x"
        for bit in range(width - 1, -1, -1)
    ]
    return "0b" + "".join(chars)

