"""Readers of CPUID dump text: AIDA64/InstLatx64, libcpuid ``.test`` and ``cpuid -r`` output.

Each reader is a pure function of the text and the path it came from, returns the
``CpuidSet`` of one logical CPU (the first one unless ``cpu`` names another) and raises
``InputError`` naming the file, line and column of the first malformed register line.
Line grammars and the quirks tolerated here are in FORMATS.md §3 and §5. Only the lines
of the selected CPU are parsed: a reader stops at the end of that CPU's block.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

from xstate_check.cpuid import CpuidSet, Registers
from xstate_check.errors import InputError, Location, clip_snippet
from xstate_check.limits import MAX_DUMP_LINES, MAX_ENTRIES

__all__ = [
    "check_lines",
    "read_aida64",
    "read_cpuid_raw",
    "read_libcpuid",
]

XSAVE_LEAF = 0xD
EXTENDED_BASE = 0x80000000

# --------------------------------------------------------------------------- shared helpers


def _lines(text: str) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, line without its line ending), lazily."""
    pos = 0
    lineno = 0
    length = len(text)
    while pos < length:
        end = text.find("\n", pos)
        if end < 0:
            end = length
        lineno += 1
        line = text[pos:end]
        if line.endswith("\r"):
            line = line[:-1]
        yield lineno, line
        pos = end + 1


def check_lines(text: str, path: str) -> None:
    """Refuse a dump of more than ``MAX_DUMP_LINES`` lines before reading any of them."""
    if text.count("\n", 0, len(text) - 1) < MAX_DUMP_LINES:
        return
    raise InputError(
        Location(path, MAX_DUMP_LINES + 1, 1),
        f"expected a CPUID dump of at most {MAX_DUMP_LINES} lines (xstate-check's limit); "
        f"this one has {text.count(chr(10), 0, len(text) - 1) + 1}",
    )


def _too_many_entries(path: str, lineno: int, line: str) -> InputError:
    """Return the error for the register line that would be entry ``MAX_ENTRIES + 1``."""
    return _line_error(
        Location(path, lineno, 1), line, (0, len(line)),
        f"expected at most {MAX_ENTRIES} CPUID entries (leaf and subleaf) for one CPU "
        "(xstate-check's limit)",
    )


def _line_error(
    location: Location, line: str, span: tuple[int, int], expected: str
) -> InputError:
    """Return an InputError at ``line`` with a (clipped) caret drawing of ``span``."""
    snippet, clipped = clip_snippet(line, *span)
    return InputError(location, expected, snippet=snippet, span=clipped)


# One step of a line shape, for error messages, with what it means: a literal, a number of
# hexadecimal digits, or a regex.
_Step = tuple[str | int | re.Pattern[str], str]

_HEX_RUN = re.compile(r"[0-9A-Fa-f]*")
_TOKEN_END = re.compile(r"[^\s\-:=\[\]]*")


def _shape_error(path: str, lineno: int, line: str, steps: Sequence[_Step]) -> InputError:
    """Return the error for the first place where ``line`` leaves the shape ``steps``.

    The column is that of the first wrong character: a non-hex digit, the ninth digit of
    a register, a missing separator.
    """
    pos = 0
    for step, what in steps:
        if isinstance(step, str):
            if line.startswith(step, pos):
                pos += len(step)
                continue
            end = pos + 1
        elif isinstance(step, int):
            run = _HEX_RUN.match(line, pos).end() - pos  # type: ignore[union-attr]
            if run == step:
                pos += step
                continue
            end = pos + min(run, step) + 1
        else:
            match = step.match(line, pos)
            if match is not None:
                pos = match.end()
                continue
            end = max(pos + 1, _TOKEN_END.match(line, pos).end())  # type: ignore[union-attr]
        return _line_error(Location(path, lineno, end), line, (pos, end), f"expected {what}")
    # The whole shape matched: the line went wrong after it (should not happen).
    return _line_error(
        Location(path, lineno, pos + 1), line, (pos, max(pos + 1, len(line))),
        "expected the end of the line",
    )


_HEX8 = 8

#: Leaves, subleaves, registers and logical CPU numbers are 32-bit.
_U32_MAX = 0xFFFF_FFFF


def _decimal(
    path: str, lineno: int, line: str, match: re.Match[str], *, group: int, limit: int,
    what: str,
) -> int:
    """Return the decimal number in ``match.group(group)``; above ``limit`` is an InputError.

    The digits are counted before ``int`` is called: Python refuses to convert more than
    4300 digits, and a leaf or CPU number of thousands of digits is a malformed line anyway.
    """
    digits = match.group(group)
    significant = digits.lstrip("0") or "0"
    if len(significant) <= len(str(limit)) and int(significant) <= limit:
        return int(significant)
    start, end = match.span(group)
    found = (f"a number of {len(significant)} digits" if len(significant) > len(str(limit))
             else significant)
    raise _line_error(
        Location(path, lineno, start + 1), line, (start, end),
        f"expected {what} from 0 to {limit}; found {found}",
    )


def _cpu_number(path: str, lineno: int, line: str, match: re.Match[str]) -> int:
    """Return the logical CPU number of a block header (group 1 of ``match``)."""
    return _decimal(
        path, lineno, line, match, group=1, limit=_U32_MAX, what="a logical CPU number"
    )


def _describe_cpus(seen: Sequence[int]) -> str:
    """Return 'CPUs 0-23' / 'CPUs 0, 2, 5' / 'no CPU block' for an error message.

    Works on the numbers present only: a dump of CPUs 0 and 4294967295 is described without
    building the range between them.
    """
    if not seen:
        return "no CPU block"
    numbers = sorted(set(seen))
    if len(numbers) > 2 and numbers[-1] - numbers[0] == len(numbers) - 1:
        return f"CPUs {numbers[0]}-{numbers[-1]}"
    if len(numbers) > 12:
        shown = ", ".join(str(n) for n in numbers[:12])
        return f"CPUs {shown}, …"
    word = "CPU" if len(numbers) == 1 else "CPUs"
    return f"{word} " + ", ".join(str(n) for n in numbers)


def _missing_cpu(path: str, cpu: int, seen: Sequence[int]) -> InputError:
    """Return the error for a ``cpu=N`` that the dump does not hold."""
    return InputError(
        Location(path), f"expected logical CPU {cpu}; the dump holds {_describe_cpus(seen)}"
    )


class _Table:
    """The (leaf, subleaf) rows of one CPU block, refusing conflicting duplicates."""

    __slots__ = ("lines", "path", "rows")

    def __init__(self, path: str) -> None:
        self.path = path
        self.rows: dict[tuple[int, int], Registers] = {}
        self.lines: dict[tuple[int, int], int] = {}

    def add(self, key: tuple[int, int], regs: Registers, lineno: int, line: str) -> None:
        """Record one row; an identical repeat is ignored, a different one is an error."""
        old = self.rows.get(key)
        if old is None:
            if len(self.rows) >= MAX_ENTRIES:
                raise _too_many_entries(self.path, lineno, line)
            self.rows[key] = regs
            self.lines[key] = lineno
        elif old != regs:
            raise _line_error(
                Location(self.path, lineno, 1), line, (0, len(line)),
                f"expected one value per leaf and subleaf; leaf {key[0]:#x} subleaf "
                f"{key[1]:#x} already has other values at line {self.lines[key]}",
            )


# --------------------------------------------------------------------------- AIDA64 / InstLatx64

_AIDA_REG = re.compile(
    r"CPUID ([0-9A-Fa-f]{8}): ([0-9A-Fa-f]{8})-([0-9A-Fa-f]{8})-([0-9A-Fa-f]{8})-([0-9A-Fa-f]{8})"
    r"(\s.*)?$"
)
# Lines that claim to be registers (so a malformed one is an error, not skipped): the word
# after "CPUID" is a hex run, or 8 characters and a colon. "CPUID Manufacturer: …",
# "CPUID CPU Name    : …" and "CPUID Revision    : …" of the AIDA64 report header are not.
_AIDA_REGISH = re.compile(r"CPUID\s+(?:[0-9A-Fa-f]+(?:[\s:\-]|$)|\w{8}:)")
_AIDA_SHAPE: tuple[_Step, ...] = (
    ("CPUID ", '"CPUID " at the start of a register line'),
    (_HEX8, "the leaf as 8 hexadecimal digits"),
    (": ", '": " after the leaf'),
    (_HEX8, "EAX as 8 hexadecimal digits"),
    ("-", '"-" between EAX and EBX'),
    (_HEX8, "EBX as 8 hexadecimal digits"),
    ("-", '"-" between EBX and ECX'),
    (_HEX8, "ECX as 8 hexadecimal digits"),
    ("-", '"-" between ECX and EDX'),
    (_HEX8, "EDX as 8 hexadecimal digits"),
    (re.compile(r"(?:\s.*)?$"), "a space, a [note] or the end of the line after EDX"),
)
_SL_TAG = re.compile(r"\[SL ([0-9A-Fa-f]{1,8})\]")
_AIDA_CPU_HEADER = re.compile(r"------\[ (?:CPUID Registers / )?Logical CPU #(\d+) \]------")
_AFFMASK_HEADER = re.compile(r"CPU#(\d+) AffMask:")
# Only the fixed head of these lines is matched: the value is the rest of the line, stripped
# by str.strip. A lazy group before "\s*$" backtracks over every space of a padded value.
_ALLCPU = re.compile(r"allcpu: [^:]*:")
_REPORT_FACTS = {"Windows Version": "os", "Program Version": "program"}
_REPORT_FACT = re.compile(r"(Windows Version|Program Version)\s*:")
LIBCPUID_DELIMITER = "-" * 80


class _Selection:
    """Which CPU block is read: the first one, or the one whose header names ``cpu``."""

    __slots__ = ("cpu", "found", "path", "seen", "selected")

    def __init__(self, path: str, cpu: int | None) -> None:
        self.path = path
        self.cpu = cpu
        self.seen: list[int] = []
        self.selected = False
        self.found: int | None = None

    @property
    def next_number(self) -> int:
        """Return the number of a block that has no header: one more than the last."""
        return self.seen[-1] + 1 if self.seen else 0

    def enter(self, number: int) -> bool:
        """Enter the block of CPU ``number``; return False where the selected block ended."""
        if self.selected:
            return False
        self.seen.append(number)
        self.selected = self.cpu is None or number == self.cpu
        if self.selected:
            self.found = number
        return True

    def finish(self, expected: str) -> int:
        """Return the number of the CPU read, or raise: ``cpu`` absent, or no block at all."""
        if self.found is None:
            if self.cpu is not None:
                raise _missing_cpu(self.path, self.cpu, self.seen)
            raise InputError(Location(self.path), expected)
        return self.found


class _AidaReader:
    """The state of reading one AIDA64/InstLatx64 text (one pass, stops after the CPU)."""

    def __init__(self, path: str, cpu: int | None, fmt: str) -> None:
        self.path = path
        self.blocks = _Selection(path, cpu)
        self.table = _Table(path)
        self.untagged: dict[int, int] = {}
        self.in_block = False
        self.has_leaf0 = False
        self.meta: dict[str, str] = {"format": fmt}
        if fmt != "aida64":
            self.meta["dialect"] = "aida64"

    def read(self, text: str) -> CpuidSet:
        """Read ``text`` and return the selected CPU's table."""
        for lineno, line in _lines(text):
            first = line[:1]
            if first == "-":
                if not self._dashes(lineno, line):
                    break
            elif first == "C":
                if not self._c_line(lineno, line):
                    break
            elif first == "a":
                if self.blocks.selected and line.startswith("allcpu:"):
                    self._allcpu(line)
            elif first in ("W", "P") and not self.blocks.seen:
                match = _REPORT_FACT.match(line)
                if match is not None:
                    self.meta[_REPORT_FACTS[match.group(1)]] = line[match.end():].strip()
        found = self.blocks.finish(
            "expected CPUID register lines such as "
            '"CPUID 0000000D: 000602E7-00002B00-00002B00-00000000 [SL 00]"'
        )
        if not self.table.rows:
            raise InputError(
                Location(self.path),
                f"expected CPUID register lines in the block of logical CPU {found}; it has none",
            )
        self.meta["cpu"] = str(found)
        return CpuidSet(self.table.rows, self.path, meta=self.meta, source_kind="file")

    def _enter(self, number: int) -> bool:
        if not self.blocks.enter(number):
            return False
        self.in_block = True
        self.has_leaf0 = False
        self.untagged.clear()
        return True

    def _dashes(self, lineno: int, line: str) -> bool:
        """Handle a line starting with "-": a section header or libcpuid's delimiter."""
        if line.startswith("------["):
            match = _AIDA_CPU_HEADER.match(line)
            if match is not None:
                return self._enter(_cpu_number(self.path, lineno, line, match))
            # Another section (MSR registers, All CPUs, CPU Info…) ends the CPU block.
            if self.blocks.selected:
                return False
            self.in_block = False
            return True
        return line.rstrip() != LIBCPUID_DELIMITER

    def _c_line(self, lineno: int, line: str) -> bool:
        """Handle a line starting with "C": a ``CPU#nnn AffMask`` header or a register."""
        if line.startswith("CPU#"):
            match = _AFFMASK_HEADER.match(line)
            if match is None:
                return True
            return self._enter(_cpu_number(self.path, lineno, line, match))
        if not line.startswith("CPUID"):
            return True
        match = _AIDA_REG.match(line)
        if match is None and not _AIDA_REGISH.match(line):
            return True  # "CPUID Manufacturer: …" and the like of the report header
        is_leaf0 = line.startswith("CPUID 00000000:")
        # Register lines without a header (variant C): leaf 0 again starts the next CPU.
        if (not self.in_block or (is_leaf0 and self.has_leaf0)) and not self._enter(
            self.blocks.next_number
        ):
            return False
        self.has_leaf0 = self.has_leaf0 or is_leaf0
        if self.blocks.selected:
            if match is None:
                raise _shape_error(self.path, lineno, line, _AIDA_SHAPE)
            self._register(lineno, line, match)
        return True

    def _register(self, lineno: int, line: str, match: re.Match[str]) -> None:
        """Record one register line of the selected CPU."""
        leaf_text, eax, ebx, ecx, edx, rest = match.groups()
        leaf = int(leaf_text, 16)
        regs = Registers(int(eax, 16), int(ebx, 16), int(ecx, 16), int(edx, 16))
        tag = _SL_TAG.search(rest) if rest and "[SL" in rest else None
        if tag is not None:
            subleaf = int(tag.group(1), 16)  # the first tag wins ("[SL 00] [SL 00]")
        else:
            subleaf = self.untagged.get(leaf, 0)
            self.untagged[leaf] = subleaf + 1
        self.table.add((leaf, subleaf), regs, lineno, line)

    def _allcpu(self, line: str) -> None:
        """Record the core kind of an ``allcpu:`` line ("Intel Atom", "AMD P-Core")."""
        match = _ALLCPU.match(line)
        if match is None:
            return
        kinds = [kind.strip() for kind in line[match.end():].split(",")]
        kinds = [kind for kind in kinds if kind and kind not in ("Valid", "Virtual")]
        if kinds:
            self.meta["core_type"] = ", ".join(kinds)


def read_aida64(
    text: str, path: str, *, cpu: int | None = None, fmt: str = "aida64"
) -> CpuidSet:
    """Read AIDA64/InstLatx64 CPUID text (variants A-D of FORMATS.md §3a) for one CPU.

    ``cpu`` selects a logical CPU by the number in its block header; by default the first
    block is read. A line without ``[SL xx]`` is subleaf 0, or the n-th repeat of the same
    untagged leaf is subleaf n (variant C). A libcpuid expected-results delimiter ends the
    dump. ``fmt`` is recorded as ``meta["format"]``.
    """
    check_lines(text, path)
    return _AidaReader(path, cpu, fmt).read(text)


# --------------------------------------------------------------------------- libcpuid native

# Array name -> (leaf, whether the index is the subleaf). basic/ext index the leaf itself.
_NATIVE_ARRAYS: dict[str, tuple[int, bool]] = {
    "basic_cpuid": (0, False),
    "ext_cpuid": (EXTENDED_BASE, False),
    "intel_fn4": (0x4, True),
    "intel_fn11": (0xB, True),
    "intel_fn12h": (0x12, True),
    "intel_fn14h": (0x14, True),
    "amd_fn8000001dh": (0x8000001D, True),
}
_NATIVE_LINE = re.compile(
    r"(basic_cpuid|ext_cpuid|intel_fn4|intel_fn11|intel_fn12h|intel_fn14h|amd_fn8000001dh)"
    r"\[(\d+)\]=([0-9A-Fa-f]{8}) ([0-9A-Fa-f]{8}) ([0-9A-Fa-f]{8}) ([0-9A-Fa-f]{8})\s*$"
)
_NATIVE_ISH = re.compile(r"[a-z][a-z0-9_]*(?:\[[^\]]*\])?\s*=")
_NATIVE_HEADER = re.compile(r"_+ Logical CPU #(\d+) _+\s*$")
_NATIVE_NAMES = "|".join(_NATIVE_ARRAYS)
_NATIVE_SHAPE: tuple[_Step, ...] = (
    (re.compile(rf"(?:{_NATIVE_NAMES})(?![a-z0-9_])"),
     "one of " + ", ".join(f"{name}[N]" for name in _NATIVE_ARRAYS)),
    ("[", '"[" after the array name'),
    (re.compile(r"\d+"), "a decimal index"),
    ("]=", '"]=" after the index'),
    (_HEX8, "EAX as 8 hexadecimal digits"),
    (" ", '" " between EAX and EBX'),
    (_HEX8, "EBX as 8 hexadecimal digits"),
    (" ", '" " between EBX and ECX'),
    (_HEX8, "ECX as 8 hexadecimal digits"),
    (" ", '" " between ECX and EDX'),
    (_HEX8, "EDX as 8 hexadecimal digits"),
    (re.compile(r"\s*$"), "the end of the line after EDX"),
)


def _native_rows(arrays: dict[str, dict[int, Registers]]) -> dict[tuple[int, int], Registers]:
    """Turn libcpuid's arrays into (leaf, subleaf) rows, dropping indexes past the max leaf.

    libcpuid fills ``basic_cpuid[i]`` past the highest basic leaf with whatever the CPU
    returns there (on Intel: the highest basic leaf again, FORMATS.md §3b), so only leaves
    up to CPUID.0:EAX and CPUID.80000000h:EAX are real.
    """
    basic = arrays.get("basic_cpuid", {})
    ext = arrays.get("ext_cpuid", {})
    max_basic = basic[0].eax if 0 in basic else None
    max_ext = ext[0].eax if 0 in ext else None

    def real(leaf: int) -> bool:
        limit = max_ext if leaf >= EXTENDED_BASE else max_basic
        return limit is None or leaf <= limit or leaf in (0, EXTENDED_BASE)

    rows: dict[tuple[int, int], Registers] = {}
    for name, (base, indexed) in _NATIVE_ARRAYS.items():
        for index, regs in sorted(arrays.get(name, {}).items()):
            leaf, subleaf = (base, index) if indexed else (base + index, 0)
            if real(leaf):
                rows[(leaf, subleaf)] = regs
    return rows


def _read_libcpuid_native(text: str, path: str, cpu: int | None) -> CpuidSet:
    """Read libcpuid's own raw format (``basic_cpuid[n]=…`` lines) for one CPU."""
    blocks = _Selection(path, cpu)
    arrays: dict[str, dict[int, Registers]] = {}
    has_leaf0 = False
    for lineno, line in _lines(text):
        first = line[:1]
        if first == "_":
            match = _NATIVE_HEADER.match(line)
            if match is not None:
                if not blocks.enter(_cpu_number(path, lineno, line, match)):
                    break
                has_leaf0 = False
            continue
        if first == "-" and line.rstrip() == LIBCPUID_DELIMITER:
            break
        is_leaf0 = line.startswith("basic_cpuid[0]=")
        # Files without headers: the first line, then basic_cpuid[0] again, start a CPU.
        if ((not blocks.seen and _NATIVE_ISH.match(line)) or (is_leaf0 and has_leaf0)) and (
            not blocks.enter(blocks.next_number)
        ):
            break
        has_leaf0 = has_leaf0 or is_leaf0
        if blocks.selected:
            _native_line(path, lineno, line, arrays)
    found = blocks.finish('expected libcpuid raw lines such as "basic_cpuid[0]=0000000d …"')
    rows = _native_rows(arrays)
    meta = {"format": "libcpuid", "dialect": "native", "cpu": str(found)}
    # The native format keeps basic_cpuid[13] only: subleaf 0 of leaf 0xD.
    return CpuidSet(rows, path, meta=meta, source_kind="file",
                    leaf_0xd_complete=(XSAVE_LEAF, 0) not in rows)


def _native_line(
    path: str, lineno: int, line: str, arrays: dict[str, dict[int, Registers]]
) -> None:
    """Parse one ``name[index]=eax ebx ecx edx`` line into ``arrays``."""
    match = _NATIVE_LINE.match(line)
    if match is None:
        if _NATIVE_ISH.match(line):
            raise _shape_error(path, lineno, line, _NATIVE_SHAPE)
        return
    name = match.group(1)
    indexed = _NATIVE_ARRAYS[name][1]
    # A subleaf is 32-bit; basic_cpuid and ext_cpuid index leaves of their own range only.
    limit = _U32_MAX if indexed else EXTENDED_BASE - 1
    what = f"the {'subleaf' if indexed else 'leaf'} index N of {name}[N]"
    index = _decimal(path, lineno, line, match, group=2, limit=limit, what=what)
    values = arrays.setdefault(name, {})
    if index not in values and sum(map(len, arrays.values())) >= MAX_ENTRIES:
        raise _too_many_entries(path, lineno, line)
    regs = Registers(
        int(match.group(3), 16), int(match.group(4), 16),
        int(match.group(5), 16), int(match.group(6), 16),
    )
    if values.get(index, regs) != regs:
        raise _line_error(
            Location(path, lineno, 1), line, (0, len(line)),
            f"expected one value per array index; {name}[{index}] is given twice",
        )
    values[index] = regs


# The first raw line of a libcpuid file tells its dialect.
_LIBCPUID_FIRST = re.compile(
    r"^(?:(?P<native>(?:basic_cpuid|ext_cpuid|intel_fn|amd_fn)\w*\[\d+\]=)"
    r"|(?P<aida>CPUID [0-9A-Fa-f]{8}:))",
    re.M,
)


def read_libcpuid(text: str, path: str, *, cpu: int | None = None) -> CpuidSet:
    """Read a libcpuid ``.test`` file: its raw part, in AIDA64 or libcpuid's native form.

    Reading stops at the first line of 80 dashes, where libcpuid's expected decode starts.
    Native dumps hold no subleaf of leaf 0xD beyond 0; ``leaf_0xd_complete`` is then False
    so that later checks know the other subleaves are unknown, not zero.
    """
    check_lines(text, path)
    first = _LIBCPUID_FIRST.search(text)
    if first is not None and first.lastgroup == "native":
        return _read_libcpuid_native(text, path, cpu)
    return read_aida64(text, path, cpu=cpu, fmt="libcpuid")


# --------------------------------------------------------------------------- cpuid -r

_RAW_LINE = re.compile(
    r"\s+0x([0-9A-Fa-f]{8}) 0x([0-9A-Fa-f]{2,8}): eax=0x([0-9A-Fa-f]{8}) "
    r"ebx=0x([0-9A-Fa-f]{8}) ecx=0x([0-9A-Fa-f]{8}) edx=0x([0-9A-Fa-f]{8})\s*$"
)
_RAW_HEADER = re.compile(r"CPU(?: (\d+))?:\s*$")
_RAW_ISH = re.compile(r"\s+0x")
_DECODED_VIEW = re.compile(r"\s+(?:vendor_id = |version information \(1/eax\))")
_RAW_SHAPE: tuple[_Step, ...] = (
    (re.compile(r"\s+"), "leading spaces"),
    ("0x", '"0x" before the leaf'),
    (_HEX8, "the leaf as 8 hexadecimal digits"),
    (" 0x", '" 0x" before the subleaf'),
    (re.compile(r"[0-9A-Fa-f]{2,8}(?![0-9A-Fa-f])"), "the subleaf as 2 hexadecimal digits"),
    (": eax=0x", '": eax=0x" after the subleaf'),
    (_HEX8, "EAX as 8 hexadecimal digits"),
    (" ebx=0x", '" ebx=0x" after EAX'),
    (_HEX8, "EBX as 8 hexadecimal digits"),
    (" ecx=0x", '" ecx=0x" after EBX'),
    (_HEX8, "ECX as 8 hexadecimal digits"),
    (" edx=0x", '" edx=0x" after ECX'),
    (_HEX8, "EDX as 8 hexadecimal digits"),
    (re.compile(r"\s*$"), "the end of the line after EDX"),
)


def read_cpuid_raw(text: str, path: str, *, cpu: int | None = None) -> CpuidSet:
    """Read Todd Allen's ``cpuid -r`` (all CPUs, ``CPU N:``) or ``cpuid -r -1`` (``CPU:``).

    ``cpu`` selects a ``CPU N:`` block by N; a lone ``CPU:`` block is CPU 0.
    """
    check_lines(text, path)
    blocks = _Selection(path, cpu)
    table = _Table(path)
    for lineno, line in _lines(text):
        if line.startswith("CPU"):
            match = _RAW_HEADER.match(line)
            if match is not None:
                number = (
                    _cpu_number(path, lineno, line, match) if match.group(1)
                    else len(blocks.seen)
                )
                if not blocks.enter(number):
                    break
            continue
        if not blocks.seen and _RAW_ISH.match(line):
            blocks.enter(0)  # raw lines without a header: one CPU
        if blocks.selected:
            _raw_line(path, lineno, line, table)
    found = blocks.finish("expected `cpuid -r` output")
    if not table.rows:
        raise InputError(
            Location(path),
            "expected raw lines of `cpuid -r` such as "
            '"   0x0000000d 0x00: eax=0x000002e7 ebx=0x00000980 ecx=0x00000988 edx=0x00000000"',
        )
    meta = {"format": "cpuid-raw", "cpu": str(found)}
    return CpuidSet(table.rows, path, meta=meta, source_kind="file")


def _raw_line(path: str, lineno: int, line: str, table: _Table) -> None:
    """Parse one ``   0xLEAF 0xSUB: eax=… ebx=… ecx=… edx=…`` line into ``table``."""
    match = _RAW_LINE.match(line)
    if match is None:
        if _RAW_ISH.match(line):
            raise _shape_error(path, lineno, line, _RAW_SHAPE)
        if not table.rows and _DECODED_VIEW.match(line):
            raise _line_error(
                Location(path, lineno, 1), line, (len(line) - len(line.lstrip()), len(line)),
                "expected raw lines of `cpuid -r` (0xLEAF 0xSUB: eax=… ebx=… ecx=… edx=…);"
                " this is the decoded view of `cpuid`, which does not hold every register",
            )
        return
    regs = Registers(
        int(match.group(3), 16), int(match.group(4), 16),
        int(match.group(5), 16), int(match.group(6), 16),
    )
    table.add((int(match.group(1), 16), int(match.group(2), 16)), regs, lineno, line)
