"""Seeded, reproducible mutations of real inputs, shared by the fuzz command and the tests.

A ``Mutator`` holds seeds (the real files of ../shared/data, or text made from them) and makes
input number ``index`` of campaign ``seed`` by stacking one to five mutations on one seed:
byte flips, truncation, line duplication/deletion/swaps, hex digit corruption, numbers at
their limits, format tokens, encoding damage, JSON structural mutations, token edits of rule
expressions, and splicing two seeds. The same (seed, index) always gives the same bytes, on
any machine and under any hash seed, so a failure is reproduced from two integers.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = [
    "EXPRESSION_TOKENS",
    "EXTREME_SHAPES",
    "JSON_TOKENS",
    "MAX_INPUT",
    "TEXT_TOKENS",
    "TOML_TOKENS",
    "Extremes",
    "Mutator",
    "read_seeds",
    "trim_dump",
]

#: Generated inputs are cut to this many bytes, so one input stays quick to read.
MAX_INPUT = 1 << 20

Mutation = Callable[[bytes, random.Random, "Mutator"], bytes]

_HEX_RUN = re.compile(rb"[0-9A-Fa-f]{2,}")
_NUMBER = re.compile(rb"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
_EXPR_TOKEN = re.compile(
    rb"\s+|0[xXbB][0-9A-Fa-f_]+|\d+|[A-Za-z_][A-Za-z0-9_.]*|==|!=|<=|>=|&&|\|\||<<|>>|\*\*|\S"
)
_CPU_HEADER = re.compile(
    rb"^(?:-+\[ (?:CPUID Registers / )?Logical CPU #[1-9]\d*|CPU#0*[1-9]\d* |CPU [1-9]\d*:"
    rb"|_+ Logical CPU #[1-9]\d*)",
    re.MULTILINE,
)
_FIELD_BLOCK = re.compile(rb"^-{80}$", re.MULTILINE)

INTERESTING_NUMBERS: tuple[bytes, ...] = (
    b"0", b"-1", b"1", b"7", b"31", b"32", b"63", b"64", b"255", b"65535",
    b"2147483647", b"4294967295", b"4294967296", b"18446744073709551615",
    b"18446744073709551616", b"-9223372036854775809", b"9" * 400, b"9" * 5000,
    b"1e999", b"-0", b"0.5", b"1.0", b"NaN", b"Infinity", b"0x", b"0b", b"0x" + b"F" * 17,
    b"0b" + b"1" * 65, b"0o17", b"1_000", b"\xd9\xa3",  # an Arabic-Indic digit three
)
INTERESTING_BYTES = b"\x00\x01\x7f\x80\xff\n\r\t \"'[]{},:;-=x#\\/.0123456789abcdefABCDEFGgz"

#: Tokens of the dump formats (AIDA64/InstLatx64, libcpuid, ``cpuid -r``), spliced in anywhere.
TEXT_TOKENS: tuple[bytes, ...] = (
    b"CPUID ", b"CPUID 0000000D: ", b"[SL ", b"[SL 00]", b"[SL FF]", b"[SL 1]", b"]", b"[",
    b"------[ CPUID Registers / Logical CPU #0 ]------\n",
    b"------[ CPUID Registers / Logical CPU #99999999999999999999 ]------\n",
    b"------[ Logical CPU #1 ]------\n", b"------[ Versions ]------\n",
    b"CPU#000 AffMask: 0x0000000000000001\n", b"CPU:\n", b"CPU 0:\n", b"CPU 4294967296:\n",
    b"   0x0000000d 0x00: eax=0x", b" ebx=0x", b" ecx=0x", b" edx=0x", b"eax=", b"0x",
    b"basic_cpuid[13]=", b"ext_cpuid[", b"intel_fn4[", b"]=", b"allcpu: Package 0 / Core 0",
    b"-" * 80 + b"\n", b"_________________ Logical CPU #0 _________________\n",
    b"00000000-00000000-00000000-00000000", b"FFFFFFFF", b"-", b"\n\n", b"\r\n", b"\r",
    b"\t", b"\xef\xbb\xbf", b"\x00", b"\xff\xfe", b"\xc3\x28", b"\xe2\x80\xa8", b"\x85",
    b"x" * 10000,
)
#: Tokens of JSON (templates, fingerprints, the project's own JSON).
JSON_TOKENS: tuple[bytes, ...] = (
    b"{", b"}", b"[", b"]", b",", b":", b'"', b'\\"', b"\\u0000", b"\\ud800", b"\\", b"null",
    b"true", b"false", b'"leaf": "0xd",', b'"subleaf": "0x0",', b'"flags": 1,',
    b'"register": "eax",', b'"bitmap": "0b', b'"modifiers": [', b'"cpuid_modifiers": [',
    b'"msr_modifiers": [', b'"kvm_capabilities": [', b'"entries": [', b'"schema": ',
    b'"__proto__": 1,', b"0x", b"0b", b"x", b"_", b"1e999", b"-0", b"NaN", b"Infinity",
    b"[" * 100, b"{\"a\":" * 100, b"[" * 50000, b"\xef\xbb\xbf", b"\x00", b"\xc3\x28", b"//",
    b"/*", b"'",
)
#: Tokens of TOML rule files.
TOML_TOKENS: tuple[bytes, ...] = (
    b"[[rule]]\n", b"[rule]\n", b"[[rules]]\n", b"id = ", b"name = ", b"severity = ",
    b"check = ", b"message = ", b"consequence = ", b"fix = ", b"summary = ", b"when = ",
    b"references = [", b"examples = [", b'"""', b"'''", b'"', b"'", b"=", b"[", b"]", b"{", b"}",
    b"\\", b"\\u0000", b"#", b"\n", b'"error"', b'"warning"', b'"info"', b'"bogus"', b"XS0001",
    b"XS9999", b"{0.__class__}", b"{__import__('os').system('true')}", b"{}", b"{{", b"}}",
    b"{xcr0", b"1979-05-27T07:32:00Z", b"inf", b"nan", b"0x", b"+", b"[" * 3000,
    b'__import__("os").system("true")',
)
#: Tokens of the rule language, and of languages people may mistake it for.
EXPRESSION_TOKENS: tuple[bytes, ...] = (
    b"(", b")", b"[", b"]", b"{", b"}", b",", b".", b"!", b"~", b"-", b"+", b"*", b"/", b"%",
    b"**", b"&", b"|", b"^", b"<<", b">>", b"==", b"!=", b"<", b"<=", b">", b">=", b"&&",
    b"||", b"=>", b" => ", b" and ", b" or ", b"not ", b" in ", b" not in ", b"is", b"if",
    b"else", b"lambda", b"implies", b"6.4", b"5.17", b"99999999999.1", b"'x87'", b'"tilecfg"',
    b"[1, 2]", b"[]", b"xss", b"tiledata", b"tilecfg", b"AMX_TILE", b"XSAVE",
    b"max_basic_leaf", b"amx.palettes", b"item", b"item.size", b"xsave_size(xcr0)",
    b"all c in components(xcr0): ", b"any d in components(", b"components", b"c.size",
    b"c.offset", b"c.overlaps", b"c.host.size", b"c.dest.aligned", b"d.end", b"c", b"c.",
    b"all " * 40, b"all c in components(xcr0): all c in components(xss): ",
    b"<< 99999999999", b"<< 64", b"<< 63", b"* 0x100000000",
    b"true", b"false", b"True", b"None", b"xcr0", b"xcr0.17", b"bit(17)", b"__class__",
    b"__import__", b"__builtins__", b"os", b"system", b"eval", b"exec", b"open", b"getattr",
    b"'", b'"', b"\\", b"#", b";", b"=", b":", b"@", b"$", b"`", b"?", b"0", b"1", b"17",
    b"0x602e7", b"0b11", b"64", b"-1", b"18446744073709551616", b"9" * 5000, b"0x",
    b"2**2**64", b"1 << 100000", b"(" * 200, b"(" * 5000, b"!" * 5000, b"-" * 5000, b"\x00",
    b"\xc3\x28", b"\t", b"\n",
)


def trim_dump(data: bytes) -> bytes:
    """Return a dump cut to its first logical CPU, keeping a libcpuid expected-field block.

    Real dumps repeat the same registers for up to 256 logical CPUs; one CPU holds every
    line shape, and a small input lets the fuzzer try many more of them.
    """
    second_cpu = _CPU_HEADER.search(data)
    if second_cpu is None:
        return data
    head = data[: second_cpu.start()]
    fields = _FIELD_BLOCK.search(data, second_cpu.start())
    return head + (data[fields.start():] if fields else b"")


def read_seeds(paths: Sequence[Path], *, trim: bool = False) -> list[bytes]:
    """Return the bytes of each file in ``paths`` (sorted), trimmed to one CPU if asked."""
    seeds = []
    for path in sorted(paths):
        data = path.read_bytes()
        seeds.append(trim_dump(data) if trim else data)
    return seeds


class Mutator:
    """Makes reproducible inputs from seeds by stacking mutations.

    ``tokens`` are spliced in by the token mutation; ``structure`` names an extra family of
    mutations ("json" or "expression") that understands the seeds' syntax.
    """

    def __init__(
        self,
        seeds: Sequence[bytes],
        *,
        tokens: Sequence[bytes] = TEXT_TOKENS,
        structure: str | None = None,
        max_stack: int = 5,
    ) -> None:
        if not seeds:
            raise ValueError("a mutator needs at least one seed")
        self.seeds = list(seeds)
        self.tokens = list(tokens)
        self.max_stack = max_stack
        mutations: list[tuple[Mutation, int]] = [
            (flip_bit, 3), (set_byte, 3), (insert_bytes, 2), (delete_range, 2),
            (truncate, 3), (duplicate_line, 3), (delete_line, 3), (swap_lines, 2),
            (corrupt_hex, 6), (corrupt_number, 4), (insert_token, 5), (splice, 2),
            (replace_line, 2), (damage_encoding, 1), (repeat_chunk, 1),
        ]
        if structure == "json":
            mutations += [(json_structure, 10)]
        elif structure == "expression":
            mutations += [(expression_tokens, 14), (combine_expressions, 4), (nest, 1)]
        elif structure is not None:
            raise ValueError(f"unknown structure {structure!r}")
        self.mutations = [mutation for mutation, _ in mutations]
        self.weights = [weight for _, weight in mutations]

    def rng(self, seed: int, index: int) -> random.Random:
        """Return the random generator of input ``index`` of campaign ``seed``."""
        # A str seed goes through SHA-512: the same on every run, whatever PYTHONHASHSEED.
        return random.Random(f"xstate-check-fuzz:{seed}:{index}")

    def input(self, seed: int, index: int) -> bytes:
        """Return input number ``index`` of campaign ``seed`` (always the same bytes)."""
        return self.mutate(self.rng(seed, index))

    def mutate(self, rng: random.Random, data: bytes | None = None) -> bytes:
        """Return ``data`` (default: a seed ``rng`` picks) after one to max_stack mutations."""
        if data is None:
            data = rng.choice(self.seeds)
        # Few mutations most of the time, so inputs stay close to a real file's shape.
        count = min(self.max_stack, 1 + int(rng.expovariate(0.9)))
        for mutation in rng.choices(self.mutations, self.weights, k=count):
            data = mutation(data, rng, self)[:MAX_INPUT]
        return data


def _position(data: bytes, rng: random.Random) -> int:
    return rng.randrange(len(data) + 1)


def _line_spans(data: bytes) -> list[tuple[int, int]]:
    spans = []
    start = 0
    for line in data.splitlines(keepends=True):
        spans.append((start, start + len(line)))
        start += len(line)
    return spans


def flip_bit(data: bytes, rng: random.Random, mutator: Mutator) -> bytes:
    """Flip one bit of one byte."""
    if not data:
        return bytes([rng.randrange(256)])
    at = rng.randrange(len(data))
    return data[:at] + bytes([data[at] ^ (1 << rng.randrange(8))]) + data[at + 1:]


def set_byte(data: bytes, rng: random.Random, mutator: Mutator) -> bytes:
    """Overwrite one byte with a byte that means something in some format."""
    if not data:
        return bytes([rng.choice(INTERESTING_BYTES)])
    at = rng.randrange(len(data))
    return data[:at] + bytes([rng.choice(INTERESTING_BYTES)]) + data[at + 1:]


def insert_bytes(data: bytes, rng: random.Random, mutator: Mutator) -> bytes:
    """Insert a few random bytes."""
    at = _position(data, rng)
    return data[:at] + rng.randbytes(rng.randint(1, 8)) + data[at:]


def delete_range(data: bytes, rng: random.Random, mutator: Mutator) -> bytes:
    """Delete a short run of bytes."""
    at = _position(data, rng)
    return data[:at] + data[at + rng.randint(1, 64):]


def truncate(data: bytes, rng: random.Random, mutator: Mutator) -> bytes:
    """Cut the input short, at a random byte or at the end of a line."""
    if rng.random() < 0.5:
        spans = _line_spans(data)
        if spans:
            return data[: rng.choice(spans)[1]]
    return data[: _position(data, rng)]


def duplicate_line(data: bytes, rng: random.Random, mutator: Mutator) -> bytes:
    """Repeat one line (a repeated register row, key, header or rule)."""
    spans = _line_spans(data)
    if not spans:
        return data
    start, end = rng.choice(spans)
    line = data[start:end] if data[start:end].endswith(b"\n") else data[start:end] + b"\n"
    return data[:end] + line * rng.randint(1, 3) + data[end:]


def delete_line(data: bytes, rng: random.Random, mutator: Mutator) -> bytes:
    """Delete one to a few consecutive lines."""
    spans = _line_spans(data)
    if not spans:
        return data
    first = rng.randrange(len(spans))
    last = min(len(spans) - 1, first + rng.randint(0, 3))
    return data[: spans[first][0]] + data[spans[last][1]:]


def swap_lines(data: bytes, rng: random.Random, mutator: Mutator) -> bytes:
    """Swap two lines."""
    lines = data.splitlines(keepends=True)
    if len(lines) < 2:
        return data
    i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
    lines[i], lines[j] = lines[j], lines[i]
    return b"".join(lines)


def corrupt_hex(data: bytes, rng: random.Random, mutator: Mutator) -> bytes:
    """Damage one run of hex digits: another value, a digit more or less, a non-hex digit."""
    runs = list(_HEX_RUN.finditer(data))
    if not runs:
        return insert_token(data, rng, mutator)
    run = rng.choice(runs)
    digits = run.group()
    choice = rng.randrange(8)
    if choice == 0:
        new = bytes(rng.choice(b"0123456789ABCDEF") for _ in digits)
    elif choice == 1:
        new = digits[:-1]
    elif choice == 2:
        new = digits + bytes([rng.choice(b"0123456789abcdefF")])
    elif choice == 3:
        at = rng.randrange(len(digits))
        new = digits[:at] + bytes([rng.choice(b"GgXxZz -+_.\x00")]) + digits[at + 1:]
    elif choice == 4:
        new = b"F" * rng.choice((8, 9, 16, 17, 64))
    elif choice == 5:
        new = digits.swapcase()
    elif choice == 6:
        new = b"0x" + digits if rng.random() < 0.5 else b"-" + digits
    else:
        new = b""
    return data[: run.start()] + new + data[run.end():]


def corrupt_number(data: bytes, rng: random.Random, mutator: Mutator) -> bytes:
    """Replace one decimal number with a value at some limit (huge, negative, float, NaN)."""
    numbers = list(_NUMBER.finditer(data))
    if not numbers:
        return insert_token(data, rng, mutator)
    number = rng.choice(numbers)
    return data[: number.start()] + rng.choice(INTERESTING_NUMBERS) + data[number.end():]


def insert_token(data: bytes, rng: random.Random, mutator: Mutator) -> bytes:
    """Insert or overwrite with a token of the input's own format."""
    token = rng.choice(mutator.tokens)
    at = _position(data, rng)
    end = at + (len(token) if rng.random() < 0.3 else 0)
    return data[:at] + token + data[end:]


def splice(data: bytes, rng: random.Random, mutator: Mutator) -> bytes:
    """Join the head of this input to the tail of another seed, at line or byte boundaries."""
    other = rng.choice(mutator.seeds)
    if rng.random() < 0.5:
        mine, theirs = _line_spans(data), _line_spans(other)
        if mine and theirs:
            return data[: rng.choice(mine)[1]] + other[rng.choice(theirs)[0]:]
    return data[: _position(data, rng)] + other[_position(other, rng):]


def replace_line(data: bytes, rng: random.Random, mutator: Mutator) -> bytes:
    """Replace one line with a line of another seed."""
    spans, theirs = _line_spans(data), _line_spans(other := rng.choice(mutator.seeds))
    if not spans or not theirs:
        return data
    start, end = rng.choice(spans)
    other_start, other_end = rng.choice(theirs)
    return data[:start] + other[other_start:other_end] + data[end:]


def damage_encoding(data: bytes, rng: random.Random, mutator: Mutator) -> bytes:
    """Change the encoding: UTF-16, a BOM, CR line ends, or invalid UTF-8 bytes."""
    choice = rng.randrange(5)
    if choice == 0:
        return data.decode("utf-8", "replace").encode("utf-16")
    if choice == 1:
        return b"\xef\xbb\xbf" + data
    if choice == 2:
        return data.replace(b"\n", b"\r")
    if choice == 3:
        return data.replace(b"\n", b"\r\n")
    at = _position(data, rng)
    invalid = rng.choice((b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80"))
    return data[:at] + invalid + data[at:]


def repeat_chunk(data: bytes, rng: random.Random, mutator: Mutator) -> bytes:
    """Repeat a chunk many times (long lines, many entries, deep nesting)."""
    if not data:
        return data
    at = rng.randrange(len(data))
    chunk = data[at: at + rng.randint(1, 64)]
    return data[:at] + chunk * rng.choice((16, 256, 4096)) + data[at:]


# JSON: mutate the parsed tree, then write it back with a random layout.

_JSON_VALUES: tuple[object, ...] = (
    None, True, False, 0, -1, 1, 17, 2**32, 2**64, -(2**63) - 1, 10**400, 0.5, 1e308, -0.0,
    "", "0x", "0b", "0xd", "0x11", "0b1", "0bx", "0b" + "x" * 32, "0b" + "1" * 33, "eax", "esi",
    "\u0000", "\ud800", "é", "x" * 1000, [], {}, [[]], {"": None}, ["0x1"], {"leaf": "0x0"},
)
_JSON_KEYS = (
    "leaf", "subleaf", "flags", "modifiers", "register", "bitmap", "addr", "cpuid_modifiers",
    "msr_modifiers", "kvm_capabilities", "guest_cpu_config", "kernel_version", "entries",
    "schema", "source", "meta", "eax", "ebx", "ecx", "edx", "unknown", "", "__proto__",
)


def _json_nodes(tree: object, path: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    nodes = [path]
    if isinstance(tree, dict):
        for key, value in tree.items():
            nodes.extend(_json_nodes(value, (*path, key)))
    elif isinstance(tree, list):
        for index, value in enumerate(tree):
            nodes.extend(_json_nodes(value, (*path, index)))
    return nodes


def _json_get(tree: object, path: tuple[object, ...]) -> object:
    for step in path:
        tree = tree[step]  # type: ignore[index]
    return tree


def _replace(tree: object, path: tuple[object, ...], value: object) -> object:
    """Return the tree with the node at ``path`` replaced by ``value`` (the root too)."""
    if not path:
        return value
    parent = _json_get(tree, path[:-1])
    parent[path[-1]] = value  # type: ignore[index]
    return tree


def _mutate_json_tree(tree: object, rng: random.Random) -> object:
    nodes = _json_nodes(tree)
    path = rng.choice(nodes)
    node = _json_get(tree, path)
    choice = rng.randrange(9)
    if choice == 0 and path:  # delete this node
        parent = _json_get(tree, path[:-1])
        del parent[path[-1]]  # type: ignore[attr-defined]
    elif choice == 1 and isinstance(node, dict):  # add a key, maybe an unknown one
        node[rng.choice(_JSON_KEYS)] = rng.choice(_JSON_VALUES)
    elif choice == 2 and isinstance(node, list) and node:  # duplicate an element
        node.insert(rng.randrange(len(node) + 1), json.loads(json.dumps(rng.choice(node))))
    elif choice == 3 and isinstance(node, list):  # reorder
        rng.shuffle(node)
    elif choice == 4 and isinstance(node, str):  # edit a string's characters
        if node:
            at = rng.randrange(len(node))
            new = node[:at] + rng.choice("0x1b_ \n\"\\é\u0000G") + node[at + 1:]
        else:
            new = rng.choice(("0", "x", "0x"))
        tree = _replace(tree, path, new)
    elif choice == 5:  # copy a subtree over another
        other = _json_get(tree, rng.choice(nodes))
        tree = _replace(tree, path, json.loads(json.dumps(other)))
    elif choice == 6:  # wrap in a list or object
        tree = _replace(tree, path, [node] if rng.random() < 0.5 else {"value": node})
    elif choice == 7 and isinstance(node, dict) and node:  # rename a key
        old = rng.choice(list(node))
        node[rng.choice(_JSON_KEYS)] = node.pop(old)
    else:  # another value of any type
        tree = _replace(tree, path, json.loads(json.dumps(rng.choice(_JSON_VALUES))))
    return tree


def json_structure(data: bytes, rng: random.Random, mutator: Mutator) -> bytes:
    """Parse the input as JSON and change its tree: keys, types, values, order, nesting."""
    try:
        tree = json.loads(data)
    except (ValueError, RecursionError):
        return insert_token(data, rng, mutator)
    for _ in range(rng.randint(1, 3)):
        tree = _mutate_json_tree(tree, rng)
    indent = rng.choice((None, 2, 2, 4, "\t"))
    text = json.dumps(tree, indent=indent, ensure_ascii=rng.random() < 0.5)
    if rng.random() < 0.1:  # a duplicated key, which json.dumps cannot write
        text = re.sub(r'\{(\s*)("\w+": [^,{}\[\]]+,)', r"{\1\2\1\2", text, count=1)
    return text.encode("utf-8", "surrogatepass")


# Rule expressions: token edits.

def _expression_tokens(data: bytes) -> list[bytes]:
    return [match.group() for match in _EXPR_TOKEN.finditer(data)]


def expression_tokens(data: bytes, rng: random.Random, mutator: Mutator) -> bytes:
    """Delete, repeat, swap, insert or replace one token of a rule expression."""
    tokens = _expression_tokens(data)
    if not tokens:
        return rng.choice(mutator.tokens)
    at = rng.randrange(len(tokens))
    choice = rng.randrange(5)
    if choice == 0:
        del tokens[at]
    elif choice == 1:
        tokens.insert(at, tokens[at])
    elif choice == 2:
        other = rng.randrange(len(tokens))
        tokens[at], tokens[other] = tokens[other], tokens[at]
    elif choice == 3:
        tokens.insert(at, rng.choice(mutator.tokens))
    else:
        donor = _expression_tokens(rng.choice(mutator.seeds)) or [b"0"]
        tokens[at] = rng.choice(donor)
    return b"".join(tokens)


def combine_expressions(data: bytes, rng: random.Random, mutator: Mutator) -> bytes:
    """Join this expression and another seed with an operator, maybe in parentheses."""
    operator = rng.choice((b" && ", b" || ", b" & ", b" | ", b" ^ ", b" == ", b" < ", b" "))
    other = rng.choice(mutator.seeds)
    if rng.random() < 0.5:
        return b"(" + data + b")" + operator + b"(" + other + b")"
    return data + operator + other


def nest(data: bytes, rng: random.Random, mutator: Mutator) -> bytes:
    """Nest the expression very deeply in parentheses or unary operators."""
    depth = rng.choice((50, 500, 5000, 50000))
    opener, closer = rng.choice(((b"(", b")"), (b"!", b""), (b"-", b""), (b"~", b"")))
    return opener * depth + data + closer * depth


# ----------------------------------------------------------------------------- extremes

#: The shapes the extremes generator makes, whatever the format.
EXTREME_SHAPES = (
    "long-line", "many-lines", "many-entries", "deep-nesting", "huge-number", "long-string",
)
# Runs a long line is padded with: blanks, digits, separators, brackets, escapes, UTF-8.
_FILLERS: tuple[bytes, ...] = (
    b" ", b" ", b"\t", b"0", b"9", b"F", b"x", b"-", b":", b",", b"[", b"{", b"(", b'"',
    b"\\", b"_", b"=", b"\xc3\xa9", b" 0x", b"a ", b"\\u00e9", b"\r",
)
# Line heads of the text formats whose rest a reader matches with a regex: padding them is
# how a backtracking pattern shows (an AIDA64 header padded with spaces took 16 s at 60 kB).
_TEXT_HEADS: tuple[bytes, ...] = (
    b"Windows Version: a", b"Program Version: a", b"allcpu: Package 0: Intel", b"CPUID ",
    b"CPUID 0000000D: ", b"CPUID 00000000: 00000001-", b"CPU#000 AffMask: ",
    b"------[ CPUID Registers / Logical CPU #", b"basic_cpuid[", b"intel_fn4[0]=",
    b"   0x0000000d 0x", b"   0x0000000d 0x00: eax=0x", b"CPU ", b"_ Logical CPU #0 ",
)
_TOML_HEADS: tuple[bytes, ...] = (b"id = ", b'check = "', b"x = ", b'message = """', b"# ")
_DIGITS = (b"9", b"0", b"1", b"F", b"f")


def _log_size(rng: random.Random, max_size: int) -> int:
    """Return a size drawn log-uniformly from 64 bytes to ``max_size``: mostly small."""
    return int(2 ** rng.uniform(6, math.log2(max(128, max_size))))


def _pad(line: bytes, rng: random.Random, size: int) -> bytes:
    """Return ``line`` with a run of one filler inserted at a random place, and a tail."""
    filler = rng.choice(_FILLERS)
    at = rng.randrange(len(line) + 1)
    tail = rng.choice((b"", b"b", b"x", b"]", b'"', b"0"))
    return line[:at] + filler * max(1, size // len(filler)) + tail + line[at:]


def extreme_long_line(data: bytes, rng: random.Random, size: int, structure: str | None) -> bytes:
    """Pad one line (of the input, or a line head of the format) to ``size`` bytes."""
    spans = _line_spans(data)
    heads = _TOML_HEADS if structure == "toml" else _TEXT_HEADS
    if spans and rng.random() < 0.5:
        start, end = rng.choice(spans)
        line = data[start:end].rstrip(b"\r\n")
        return data[:start] + _pad(line, rng, size) + b"\n" + data[end:]
    # A line head padded right after it, blanks most often, and a word after the run.
    filler = rng.choice((b" ", b" ", b"\t", *_FILLERS))
    line = rng.choice(heads) + filler * max(1, size // len(filler)) + rng.choice((b"b", b"x0"))
    at = rng.choice([0, *(end for _, end in spans)])
    return data[:at] + line + b"\n" + data[at:]


def extreme_many_lines(data: bytes, rng: random.Random, size: int, structure: str | None) -> bytes:
    """Repeat one line (a register line, a header, a blank line) until ``size`` bytes."""
    spans = _line_spans(data)
    choice = rng.randrange(3)
    if choice == 0 or not spans:
        line = rng.choice((b"\n", b"\r\n", b" \n", b"x\n", b"CPU#001 AffMask: 0x1\n"))
    else:
        start, end = rng.choice(spans)
        line = data[start:end] if data[start:end].endswith(b"\n") else data[start:end] + b"\n"
    at = rng.choice([0, len(data), *(end for _, end in spans)])
    return data[:at] + line * max(1, size // max(1, len(line))) + data[at:]


_AIDA_ROW = re.compile(rb"^CPUID [0-9A-Fa-f]{8}: ", re.MULTILINE)
_RAW_ROW = re.compile(rb"^\s+0x[0-9a-fA-F]{8} 0x", re.MULTILINE)
_NATIVE_ROW = re.compile(rb"^(?:basic_cpuid|intel_fn4)\[", re.MULTILINE)


def _text_entries(data: bytes, rng: random.Random, size: int) -> bytes:
    """Return ``size`` bytes of distinct register lines in the input's own dialect."""
    rows: list[bytes] = []
    total = 0
    index = 0
    if _RAW_ROW.search(data):
        make = ("   0x{leaf:08x} 0x{sub:08x}: eax=0x00000001 ebx=0x00000002 "
                "ecx=0x00000003 edx=0x00000004\n")
    elif _NATIVE_ROW.search(data):
        make = "intel_fn4[{sub}]=00000001 00000002 00000003 00000004\n"
    else:
        make = "CPUID {leaf:08X}: 00000001-00000002-00000003-00000004 [SL {sub:02X}]\n"
    leaf = rng.choice((0x4, 0xD, 0x40000000, 0x8000001D))
    while total < size:
        row = make.format(leaf=leaf, sub=index).encode()
        rows.append(row)
        total += len(row)
        index += 1
    return b"".join(rows)


def _json_tree(data: bytes) -> object:
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        return None


def extreme_many_entries(
    data: bytes, rng: random.Random, size: int, structure: str | None
) -> bytes:
    """Grow the largest array (or an object's keys, or the register lines) to ``size`` bytes."""
    if structure != "json":
        spans = _line_spans(data)
        at = rng.choice([len(data), *(end for _, end in spans)])
        return data[:at] + _text_entries(data, rng, size) + data[at:]
    tree = _json_tree(data)
    if tree is None:
        return _joined_values(rng, size)
    arrays = [path for path in _json_nodes(tree) if isinstance(_json_get(tree, path), list)]
    objects = [path for path in _json_nodes(tree) if isinstance(_json_get(tree, path), dict)]
    if objects and (not arrays or rng.random() < 0.2):
        target = _json_get(tree, rng.choice(objects))
        assert isinstance(target, dict)
        for index in range(max(1, size // 12)):
            target[f"k{index}"] = index
        return json.dumps(tree).encode()
    if not arrays:
        return _joined_values(rng, size)
    path = max(arrays, key=lambda p: len(json.dumps(_json_get(tree, p))))
    items = _json_get(tree, path)
    assert isinstance(items, list)
    element = items[0] if items else 0
    text = json.dumps(element)
    count = max(1, size // (len(text) + 1))
    copies: list[object] = [element] * count
    if isinstance(element, dict) and "subleaf" in element:
        copies = [{**element, "subleaf": hex(index)} for index in range(count)]
    items[:] = copies
    return json.dumps(tree, indent=rng.choice((None, 1))).encode()


def _joined_values(rng: random.Random, size: int) -> bytes:
    """Return a JSON array of ``size`` bytes of one small value repeated (16 MiB of zeros)."""
    value = rng.choice((b"0", b"[]", b"{}", b'""', b"null", b"-0", b"1e9"))
    return b"[" + b",".join([value] * max(1, size // (len(value) + 1))) + b"]"


def extreme_deep_nesting(
    data: bytes, rng: random.Random, size: int, structure: str | None
) -> bytes:
    """Nest ``size`` arrays, objects or parentheses at a random place."""
    depth = max(1, size // 2)
    if structure == "expression":
        opener, closer = rng.choice(((b"(", b")"), (b"!", b""), (b"-", b""), (b"~", b"")))
        return opener * depth + data + closer * depth
    if structure == "toml":
        return b"x = " + b"[" * depth + b"1" + b"]" * depth * rng.randrange(2) + b"\n" + data
    opener, closer = rng.choice(((b"[", b"]"), (b'{"a":', b"}"), (b"[", b"")))
    inner = opener * (depth // len(opener)) + b"0" + closer * (depth // len(opener))
    at = _position(data, rng)
    return data[:at] + inner + data[at:] if rng.random() < 0.5 else inner


_NUMBER_OR_HEX = re.compile(rb"-?\d+|[0-9A-Fa-f]{8}")


def extreme_huge_number(data: bytes, rng: random.Random, size: int, structure: str | None) -> bytes:
    """Replace one number (decimal or a hex register) with a run of ``size`` digits."""
    numbers = list(_NUMBER_OR_HEX.finditer(data))
    digits = rng.choice(_DIGITS) * max(1, size)
    if rng.random() < 0.3:
        digits = b"-" + digits if rng.random() < 0.5 else b"0x" + digits
    if not numbers:
        return data + digits
    number = rng.choice(numbers)
    return data[: number.start()] + digits + data[number.end():]


_JSON_STRING = re.compile(rb'"(?:[^"\\\n]|\\.)*"')
_STRING_FILLERS = (b"x", b" ", b"\\u00e9", b"\\ud800", b"\\\\", b'\\"', b"\\n", b"0", b"_")


def extreme_long_string(data: bytes, rng: random.Random, size: int, structure: str | None) -> bytes:
    """Replace one quoted string with ``size`` bytes of a filler (escapes included)."""
    strings = list(_JSON_STRING.finditer(data))
    if not strings or structure == "expression":
        return extreme_long_line(data, rng, size, structure)
    found = rng.choice(strings)
    filler = rng.choice(_STRING_FILLERS)
    body = filler * max(1, size // len(filler))
    return data[: found.start()] + b'"' + body + b'"' + data[found.end():]


_EXTREMES: dict[str, Callable[[bytes, random.Random, int, str | None], bytes]] = {
    "long-line": extreme_long_line,
    "many-lines": extreme_many_lines,
    "many-entries": extreme_many_entries,
    "deep-nesting": extreme_deep_nesting,
    "huge-number": extreme_huge_number,
    "long-string": extreme_long_string,
}


class Extremes:
    """Makes size and shape extremes from seeds: input ``index`` of campaign ``seed`` is one
    of ``EXTREME_SHAPES`` at a size drawn log-uniformly up to ``max_size`` bytes.

    It finds what mutating real files near their own size does not: work that grows faster
    than the input (backtracking patterns, quadratic loops) and memory that grows with it
    (a tree of millions of values). The same (seed, index) always gives the same bytes.
    """

    def __init__(
        self, seeds: Sequence[bytes], *, structure: str | None = None,
        max_size: int = 1 << 20,
    ) -> None:
        if not seeds:
            raise ValueError("the extremes generator needs at least one seed")
        self.seeds = list(seeds)
        self.structure = structure
        self.max_size = max_size

    def rng(self, seed: int, index: int) -> random.Random:
        """Return the random generator of input ``index`` of campaign ``seed``."""
        return random.Random(f"xstate-check-extreme:{seed}:{index}")

    def make(self, rng: random.Random) -> tuple[bytes, str]:
        """Return one input and its label: ``shape size``."""
        shape = rng.choice(EXTREME_SHAPES)
        size = _log_size(rng, self.max_size)
        data = _EXTREMES[shape](rng.choice(self.seeds), rng, size, self.structure)
        # The whole input stays within the readers' 16 MiB limit, as the campaign's are.
        return data[: max(self.max_size, 1 << 16) * 2], shape

    def input(self, seed: int, index: int) -> bytes:
        """Return input number ``index`` of campaign ``seed`` (always the same bytes)."""
        return self.make(self.rng(seed, index))[0]
