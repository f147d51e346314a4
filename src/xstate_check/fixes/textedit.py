"""Change a template's bitmaps in its own text, keeping everything else as it was.

A change says, per (leaf, subleaf, register), which bits to pin to 0 and which of the
template's pins to drop. A bit pinned to 0 is written in the last register modifier of that
register (the one Firecracker applies last), a dropped pin becomes ``x`` in every modifier
that pins it; only the characters that must change are replaced. Where the template has no
modifier for a register, one is inserted into the entry's last cpuid modifier, and where it
has none for the (leaf, subleaf), a whole cpuid modifier is inserted: both are copied from
the shape of their neighbours (indentation, key order, separators, line endings).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Literal

import attrs

from xstate_check import jsonpos
from xstate_check.errors import line_column
from xstate_check.fixes.model import Applicability, Edit
from xstate_check.jsonpos import Node
from xstate_check.template import format_bitmap, parse_bitmap

__all__ = ["BitChange", "Why", "apply_edits", "edit_text"]

_REGISTERS = ("eax", "ebx", "ecx", "edx")
_WIDTH = 32
_LEAF_FIELDS = ("leaf", "subleaf", "flags", "modifiers")

RegisterKey = tuple[int, int, str]


@attrs.frozen
class BitChange:
    """What to do to one register: pin ``clear`` bits to 0, drop the pins of ``unpin``."""

    clear: int = 0
    unpin: int = 0


@attrs.frozen
class Why:
    """Why bits change: the rules whose findings the change fixes, and how safe it is."""

    rules: tuple[str, ...]
    applicability: Applicability


@attrs.frozen
class _Register:
    """One register modifier of the text: its register, and its bitmap's value node."""

    register: str
    bitmap: Node
    node: Node


@attrs.frozen
class _Leaf:
    """One cpuid modifier of the text."""

    leaf: int
    subleaf: int
    node: Node
    members: Mapping[str, Node]
    registers: tuple[_Register, ...]


def _number(text: str) -> int:
    return int(text[2:], 16 if text.startswith("0x") else 2)


def _leaves(root: Node) -> tuple[Node | None, list[_Leaf]]:
    """Return the cpuid_modifiers array node (None if absent) and its cpuid modifiers.

    The text is a template the project's reader accepted, so its shape is known.
    """
    array = root.object_items().get("cpuid_modifiers")
    if array is None:
        return None, []
    found: list[_Leaf] = []
    for item in array.array_items():
        members = item.object_items()
        registers = tuple(
            _Register(entry.object_items()["register"].value, entry.object_items()["bitmap"], entry)
            for entry in members["modifiers"].array_items()
        )
        found.append(_Leaf(_number(members["leaf"].value.lstrip("+")),
                           _number(members["subleaf"].value.lstrip("+")), item, members,
                           registers))
    return array, found


def _bit_positions(body: str) -> dict[int, int]:
    """Map each bit of a bitmap body (after ``0b``) to its character index."""
    positions: dict[int, int] = {}
    bit = 0
    for index in range(len(body) - 1, -1, -1):
        if body[index] == "_":
            continue
        positions[bit] = index
        bit += 1
    return positions


class _Editor:
    """Collects the replacements of one text and makes them Edits."""

    def __init__(self, text: str, path: str) -> None:
        self.text = text
        self.path = path
        self.edits: list[Edit] = []
        self.newline = "\r\n" if "\r\n" in text else "\n"

    def add(self, start: int, end: int, replacement: str, key: RegisterKey | tuple[int, int, str],
            why: Why) -> None:
        line, column = line_column(self.text, start)
        end_line, end_column = line_column(self.text, end)
        self.edits.append(Edit(
            path=self.path, start=start, end=end, line=line, column=column, end_line=end_line,
            end_column=end_column, original=self.text[start:end], replacement=replacement,
            leaf=key[0], subleaf=key[1], register=key[2], rules=why.rules,
            applicability=why.applicability,
        ))

    # --- bitmaps in place ------------------------------------------------------------------

    def bitmap(self, modifier: _Register, key: RegisterKey, clear: int, unpin: int,
               why_of: Mapping[int, Why]) -> None:
        """Pin ``clear`` to 0 and drop the pins of ``unpin`` in one register modifier."""
        node = modifier.bitmap
        raw = self.text[node.offset + 1:node.end - 1]
        parsed = parse_bitmap(node.value, _WIDTH)
        assert not isinstance(parsed, str)  # the reader accepted this template
        filter_bits, value_bits = parsed
        unpin &= filter_bits
        new_filter = (filter_bits & ~unpin) | clear
        new_value = value_bits & ~unpin & ~clear
        if (new_filter, new_value) == (filter_bits, value_bits):
            return
        changed_bits = (new_filter ^ filter_bits) | (new_value ^ value_bits)
        why = _merge_why(why_of, changed_bits)
        if raw != node.value:
            # Escapes in the string: rewrite the whole bitmap, as Firecracker writes one.
            self.add(node.offset + 1, node.end - 1, format_bitmap(new_filter, new_value), key, why)
            return
        prefix = 2 if raw.startswith("0b") else 0
        body = raw[prefix:]
        positions = _bit_positions(body)
        chars = list(body)
        extra: list[str] = []
        for bit in range(_WIDTH):
            mask = 1 << bit
            if not changed_bits & mask:
                continue
            char = ("1" if new_value & mask else "0") if new_filter & mask else "x"
            if bit in positions:
                chars[positions[bit]] = char
            else:
                while len(positions) + len(extra) <= bit:
                    extra.append("x")
                extra[bit - len(positions)] = char
        start = node.offset + 1 + prefix
        head = "".join(reversed(extra))
        spans = [(first, last, "".join(chars[first:last]), _bits_at(positions, first, last))
                 for first, last in _runs(body, chars)]
        if head:
            high = changed_bits & _high_bits(len(positions))
            if spans and spans[0][0] == 0:
                _, last, replacement, bits = spans.pop(0)
                spans.insert(0, (0, last, head + replacement, bits | high))
            else:
                spans.insert(0, (0, 0, head, high))
        for first, last, replacement, bits in spans:
            self.add(start + first, start + last, replacement, key, _merge_why(why_of, bits))

    # --- insertions ------------------------------------------------------------------------

    def newformat_bitmap(self, like: str | None, clear: int) -> str:
        """Return a bitmap string value for a new modifier, in the style of ``like``."""
        prefix = "0b" if like is None or like.startswith("0b") else ""
        return prefix + format_bitmap(clear, 0)[2:]

    def new_register(self, like: Node | None, register: str, clear: int,
                     bitmap_like: str | None) -> str:
        """Return the text of a new register modifier shaped like ``like``."""
        value = json.dumps(self.newformat_bitmap(bitmap_like, clear))
        if like is not None:
            members = like.object_items()
            if set(members) == {"register", "bitmap"} and not like.duplicates:
                return _replace_values(self.text, like, {
                    members["register"]: json.dumps(register), members["bitmap"]: value})
        return f'{{"register": {json.dumps(register)}, "bitmap": {value}}}'

    def new_leaf(self, like: _Leaf | None, leaf: int, subleaf: int, *, flags: int,
                 registers: list[tuple[str, int]], bitmap_like: str | None,
                 register_like: Node | None) -> str:
        """Return the text of a new cpuid modifier shaped like ``like``."""
        if like is not None and set(like.members) == set(_LEAF_FIELDS) and not like.node.duplicates:
            array = like.members["modifiers"]
            items = array.array_items()
            model = items[0] if items else register_like
            elements = [self.new_register(model, register, clear, bitmap_like)
                        for register, clear in registers]
            if items:
                separator = (self.text[items[0].end:items[1].offset] if len(items) > 1
                             else "," + self.text[array.offset + 1:items[0].offset])
                inner = (self.text[array.offset:items[0].offset] + separator.join(elements)
                         + self.text[items[-1].end:array.end])
            else:
                inner = "[" + ", ".join(elements) + "]"
            return _replace_values(self.text, like.node, {
                like.members["leaf"]: json.dumps(_like_number(like.members["leaf"].value, leaf)),
                like.members["subleaf"]: json.dumps(
                    _like_number(like.members["subleaf"].value, subleaf)),
                like.members["flags"]: str(flags),
                array: inner,
            })
        document = {
            "leaf": f"{leaf:#x}", "subleaf": f"{subleaf:#x}", "flags": flags,
            "modifiers": [{"register": register,
                           "bitmap": self.newformat_bitmap(bitmap_like, clear)}
                          for register, clear in registers],
        }
        return self.indented(json.dumps(document, indent=self.indent_unit()), 2)

    def indent_unit(self) -> int:
        """Return the file's indentation step (2 when it shows none)."""
        for line in self.text.splitlines():
            stripped = line.lstrip(" ")
            if stripped and len(line) > len(stripped):
                return len(line) - len(stripped)
        return 2

    def indented(self, block: str, levels: int) -> str:
        """Indent the lines after the first of ``block`` by ``levels`` steps, in the file's
        line endings."""
        pad = " " * (self.indent_unit() * levels)
        return self.newline.join(
            line if index == 0 else pad + line for index, line in enumerate(block.split("\n")))


def _like_number(example: str, value: int) -> str:
    """Write ``value`` as hex the way ``example`` (a leaf or subleaf string) is written."""
    digits = example[2:] if example.startswith("0x") else ""
    text = f"{value:x}"
    if len(digits) > len(text) and digits.startswith("0"):
        text = text.rjust(len(digits), "0")
    if digits and digits.upper() == digits and any(c in "ABCDEF" for c in digits):
        text = text.upper()
    return "0x" + text


def _replace_values(text: str, node: Node, values: Mapping[Node, str]) -> str:
    """Return ``node``'s text with the value nodes of ``values`` replaced."""
    out: list[str] = []
    position = node.offset
    for child in sorted(values, key=lambda child: child.offset):
        out.append(text[position:child.offset])
        out.append(values[child])
        position = child.end
    out.append(text[position:node.end])
    return "".join(out)


def _runs(before: str, after: list[str]) -> list[tuple[int, int]]:
    """Return the (start, end) spans where ``after`` differs from ``before``."""
    runs: list[tuple[int, int]] = []
    start = None
    for index, char in enumerate(after):
        if char != before[index]:
            if start is None:
                start = index
        elif start is not None:
            runs.append((start, index))
            start = None
    if start is not None:
        runs.append((start, len(after)))
    return runs


def _bits_at(positions: Mapping[int, int], first: int, last: int) -> int:
    return sum(1 << bit for bit, index in positions.items() if first <= index < last)


def _high_bits(count: int) -> int:
    return ((1 << _WIDTH) - 1) & ~((1 << count) - 1)


def _merge_why(why_of: Mapping[int, Why], bits: int) -> Why:
    return _joined_why([why for bit, why in sorted(why_of.items()) if bits >> bit & 1])


Order = Literal["sorted", "end"]


def edit_text(
    text: str,
    path: str,
    changes: Mapping[RegisterKey, BitChange],
    why: Mapping[RegisterKey, Mapping[int, Why]],
    flags: Mapping[tuple[int, int], int],
) -> list[Edit]:
    """Return the edits that make ``changes`` to the template ``text``.

    ``why`` says, per register and bit, which rules a change fixes; ``flags`` gives the KVM
    flags of an entry that needs a new cpuid modifier (Firecracker writes a modifier's flags
    into the entry).
    """
    root = jsonpos.parse(text, path, allow_duplicates=True, lone_surrogates=True)
    array, leaves = _leaves(root)
    editor = _Editor(text, path)
    bitmap_like = next((reg.bitmap.value for leaf in leaves for reg in leaf.registers), None)
    register_like = next((reg.node for leaf in leaves for reg in leaf.registers), None)
    new_leaves: dict[tuple[int, int], list[tuple[str, int]]] = {}
    for key in sorted(changes, key=lambda key: (key[0], key[1], _REGISTERS.index(key[2]))):
        change = changes[key]
        leaf_key = (key[0], key[1])
        modifiers = [(leaf, reg) for leaf in leaves if (leaf.leaf, leaf.subleaf) == leaf_key
                     for reg in leaf.registers if reg.register == key[2]]
        reasons = why.get(key, {})
        clear = change.clear
        if modifiers:
            for index, (_, modifier) in enumerate(modifiers):
                # The last modifier of the register is applied last: its 0 wins.
                last = index == len(modifiers) - 1
                editor.bitmap(modifier, key, clear if last else 0, change.unpin, reasons)
            continue
        if not clear:
            continue  # nothing pins these bits: nothing to drop
        owners = [leaf for leaf in leaves if (leaf.leaf, leaf.subleaf) == leaf_key]
        if owners:
            _insert_register(editor, owners[-1], key[2], clear, bitmap_like=bitmap_like,
                             register_like=register_like, why=_merge_why(reasons, clear),
                             key=key)
        else:
            new_leaves.setdefault(leaf_key, []).append((key[2], clear))
    reasons_of = {leaf_key: _leaf_why(why, leaf_key, registers)
                  for leaf_key, registers in new_leaves.items()}
    if new_leaves and (array is None or not array.array_items()):
        # No cpuid modifier to insert beside: one insertion holds them all.
        _insert_first(editor, root, array, new_leaves, flags=flags, bitmap_like=bitmap_like,
                      register_like=register_like,
                      why=_joined_why(list(reasons_of.values())))
        new_leaves = {}
    for leaf_key, registers in new_leaves.items():
        assert array is not None  # an absent or empty array took every new leaf above
        _insert_leaf(editor, array, leaves, leaf_key=leaf_key, registers=registers,
                     flags=flags.get(leaf_key, 0), bitmap_like=bitmap_like,
                     register_like=register_like, why=reasons_of[leaf_key])
    return sorted(editor.edits, key=lambda edit: (edit.start, edit.end))


def _leaf_why(why: Mapping[RegisterKey, Mapping[int, Why]], leaf_key: tuple[int, int],
              registers: list[tuple[str, int]]) -> Why:
    return _joined_why([_merge_why(why.get((*leaf_key, register), {}), clear)
                        for register, clear in registers])


def _joined_why(whys: list[Why]) -> Why:
    rules: dict[str, None] = {}
    for item in whys:
        rules.update(dict.fromkeys(item.rules))
    unsafe = any(item.applicability == "unsafe" for item in whys)
    return Why(tuple(rules), "unsafe" if unsafe else "safe")


def _insert_first(editor: _Editor, root: Node, array: Node | None,
                  new_leaves: Mapping[tuple[int, int], list[tuple[str, int]]], *,
                  flags: Mapping[tuple[int, int], int], bitmap_like: str | None,
                  register_like: Node | None, why: Why) -> None:
    """Insert the first cpuid modifiers: into an empty array, or with the array itself."""
    newline = editor.newline
    pad = " " * editor.indent_unit()
    elements = [editor.new_leaf(None, *leaf_key, flags=flags.get(leaf_key, 0),
                                registers=registers, bitmap_like=bitmap_like,
                                register_like=register_like)
                for leaf_key, registers in new_leaves.items()]
    inner = ("," + newline + pad * 2).join(elements)
    first = next(iter(new_leaves))
    key = (first[0], first[1],
           ",".join(register for registers in new_leaves.values() for register, _ in registers))
    if array is not None:
        editor.add(array.offset + 1, array.end - 1, newline + pad * 2 + inner + newline + pad,
                   key, why)
        return
    block = '"cpuid_modifiers": [' + newline + pad * 2 + inner + newline + pad + "]"
    keys = list((root.keys or {}).values())
    if keys:
        first_key = min(keys, key=lambda key_node: key_node.offset)
        lead = editor.text[root.offset + 1:first_key.offset]
        editor.add(first_key.offset, first_key.offset, block + "," + lead, key, why)
    else:
        editor.add(root.offset + 1, root.end - 1, newline + pad + block + newline, key, why)


def _insert_register(editor: _Editor, owner: _Leaf, register: str, clear: int, *,
                     bitmap_like: str | None, register_like: Node | None, why: Why,
                     key: RegisterKey) -> None:
    text = editor.text
    array = owner.members["modifiers"]
    items = array.array_items()
    if not items:
        element = editor.new_register(register_like, register, clear, bitmap_like)
        editor.add(array.offset + 1, array.offset + 1, element, key, why)
        return
    order = [reg.register for reg in owner.registers]
    position = len(items)
    if order == sorted(order, key=_REGISTERS.index):
        position = next((index for index, name in enumerate(order)
                         if _REGISTERS.index(name) > _REGISTERS.index(register)), len(items))
    model = items[min(position, len(items) - 1)]
    element = editor.new_register(model, register, clear, bitmap_like)
    separator = (text[items[0].end:items[1].offset] if len(items) > 1
                 else "," + text[array.offset + 1:items[0].offset])
    if position == len(items):
        at = items[-1].end
        editor.add(at, at, separator + element, key, why)
    else:
        at = items[position].offset
        editor.add(at, at, element + separator, key, why)


def _insert_leaf(editor: _Editor, array: Node, leaves: list[_Leaf], *,
                 leaf_key: tuple[int, int], registers: list[tuple[str, int]], flags: int,
                 bitmap_like: str | None, register_like: Node | None, why: Why) -> None:
    """Insert a cpuid modifier beside the others, in (leaf, subleaf) order if they are."""
    text = editor.text
    key = (leaf_key[0], leaf_key[1], ",".join(register for register, _ in registers))
    items = array.array_items()
    like = _model_leaf(leaves, leaf_key)
    element = editor.new_leaf(like, *leaf_key, flags=flags, registers=registers,
                              bitmap_like=bitmap_like, register_like=register_like)
    order = [(leaf.leaf, leaf.subleaf) for leaf in leaves]
    position = len(items)
    if order == sorted(order):
        position = next((index for index, entry in enumerate(order) if entry > leaf_key),
                        len(items))
    separator = (text[items[0].end:items[1].offset] if len(items) > 1
                 else "," + text[array.offset + 1:items[0].offset])
    if position == len(items):
        editor.add(items[-1].end, items[-1].end, separator + element, key, why)
    else:
        at = items[position].offset
        editor.add(at, at, element + separator, key, why)


def _model_leaf(leaves: list[_Leaf], leaf_key: tuple[int, int]) -> _Leaf | None:
    """Return the cpuid modifier whose shape a new one copies: one with exactly the four
    fields, the nearest by (leaf, subleaf)."""
    usable = [leaf for leaf in leaves
              if set(leaf.members) == set(_LEAF_FIELDS) and not leaf.node.duplicates]
    if not usable:
        return None
    return min(usable, key=lambda leaf: (abs(leaf.leaf - leaf_key[0]),
                                         abs(leaf.subleaf - leaf_key[1])))


def apply_edits(text: str, edits: list[Edit]) -> str:
    """Return ``text`` with non-overlapping ``edits`` applied."""
    out: list[str] = []
    position = 0
    for edit in sorted(edits, key=lambda edit: (edit.start, edit.end)):
        out.append(text[position:edit.start])
        out.append(edit.replacement)
        position = edit.end
    out.append(text[position:])
    return "".join(out)
