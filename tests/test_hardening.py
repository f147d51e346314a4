"""Hostile inputs: bounds checked before the work, linear readers, no exit 4, safe output.

Each class of input that once cost seconds to hours, gigabytes, an internal error or a
forged line of output has a test here: the bound refuses past it with the file, the line and
the bound named; the reader's work is bounded by structure (no lazy group before an anchor,
a bounded number of provenance pins), never judged by the clock; the command line answers
with exit 0, 1 or 2 and never lets a control character from input reach its output.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import xstate_check
from xstate_check import jsonpos, limits
from xstate_check.cpuid import CpuidSet, Provenance
from xstate_check.errors import InputError, Location, printable
from xstate_check.gate import load_matrix, run_gate
from xstate_check.sources import dumps
from xstate_check.sources.load import load_cpuid, read_cpuid_text
from xstate_check.sources.ownjson import read_cpuid_json
from xstate_check.template import apply_template, load_template, parse_template
from xstate_check.tomltext import parse_toml

REPO = Path(__file__).resolve().parents[1]
_AIDA_HEAD = "------[ CPUID Registers / Logical CPU #0 ]------\n" + "".join(
    f"CPUID {leaf:08X}: 00000001-00000002-00000003-00000004 [SL 00]\n" for leaf in (0, 1, 7, 0xD)
)
# What may never reach an output raw: controls but LF, DEL, C1, bidi, separators, BOM.
_RAW_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029"
                          "\u202a-\u202e\u2066-\u2069\ufeff]")


def _cli(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    return subprocess.run(
        [sys.executable, "-m", "xstate_check", *argv], capture_output=True, text=True,
        errors="surrogateescape", env=env, check=False, timeout=300, cwd=cwd,
        stdin=subprocess.DEVNULL,
    )


# --------------------------------------------------------------------------- dump readers


def test_dump_regexes_have_no_lazy_group_that_backtracks() -> None:
    """No line regex of the dump readers has a lazy quantifier: a padded line costs O(n)."""
    patterns = [value.pattern for value in vars(dumps).values() if isinstance(value, re.Pattern)]
    assert patterns
    lazy = [pattern for pattern in patterns if re.search(r"[*+}]\?", pattern)]
    assert lazy == []


@pytest.mark.parametrize(
    ("text", "key", "value"),
    [
        ("Windows Version:  Microsoft Windows 11  \n" + _AIDA_HEAD, "os", "Microsoft Windows 11"),
        ("Windows Version: a" + " " * 200_000 + "b\n" + _AIDA_HEAD, "os",
         "a" + " " * 200_000 + "b"),
        (_AIDA_HEAD + "allcpu: Package 0: Intel Atom, Valid\n", "core_type", "Intel Atom"),
        (_AIDA_HEAD + "allcpu: a: b" + " " * 200_000 + "c\n", "core_type",
         "b" + " " * 200_000 + "c"),
    ],
    ids=["windows", "windows-padded", "allcpu", "allcpu-padded"],
)
def test_aida64_header_lines_are_read_whatever_their_padding(
    text: str, key: str, value: str
) -> None:
    """Header values are the stripped rest of the line, padded with 200,000 spaces or not."""
    assert read_cpuid_text(text, "h.txt").meta[key] == value


def test_a_dump_of_too_many_lines_is_refused_at_the_first_line_past_the_bound() -> None:
    """A dump of 500,001 lines is an InputError at line 500,001 naming the bound."""
    text = _AIDA_HEAD + "\n" * (limits.MAX_DUMP_LINES - _AIDA_HEAD.count("\n"))
    with pytest.raises(InputError) as caught:
        read_cpuid_text(text + "x", "long.txt")
    assert caught.value.location == Location("long.txt", limits.MAX_DUMP_LINES + 1, 1)
    assert "at most 500000 lines" in caught.value.expected
    # At the bound itself the dump reads.
    assert read_cpuid_text(text, "long.txt").has(0xD, 0)


def _aida_untagged(count: int) -> str:
    return _AIDA_HEAD + "CPUID 00000004: 00000001-00000002-00000003-00000004\n" * count


def _raw_subleaves(count: int) -> str:
    return "CPU:\n" + "".join(
        f"   0x00000004 0x{sub:08x}: eax=0x00000001 ebx=0x00000002 ecx=0x00000003 "
        "edx=0x00000004\n" for sub in range(count))


def _native_indexes(count: int) -> str:
    return "basic_cpuid[0]=0000000d 756e6547 6c65746e 49656e69\n" + "".join(
        f"intel_fn4[{index}]=00000001 00000002 00000003 00000004\n" for index in range(count))


@pytest.mark.parametrize(
    ("make", "line"),
    # The head's entries count too: AIDA64 has 4 before line 6, libcpuid 1 on line 1.
    [(_aida_untagged, 2050), (_raw_subleaves, 2050), (_native_indexes, 2049)],
    ids=["aida64", "cpuid-raw", "libcpuid"],
)
def test_a_table_of_too_many_entries_is_refused_at_the_entry_past_the_bound(
    make: object, line: int
) -> None:
    """Entry 2,049 of one CPU is an InputError at its line naming the bound of 2,048."""
    assert callable(make)
    with pytest.raises(InputError) as caught:
        read_cpuid_text(make(limits.MAX_ENTRIES + 10), "many.txt")
    assert "at most 2048 CPUID entries" in caught.value.expected
    assert caught.value.location.line == line
    assert len(read_cpuid_text(make(limits.MAX_ENTRIES - 4), "few.txt").entries) <= 2048


def test_a_text_of_blank_lines_is_refused_by_the_line_bound_before_any_sniffing() -> None:
    """A million blank lines and one word: the line bound answers, not a line-by-line scan."""
    with pytest.raises(InputError) as caught:
        read_cpuid_text("\n" * (2 * limits.MAX_DUMP_LINES) + "x", "blank.txt")
    assert caught.value.location.line == limits.MAX_DUMP_LINES + 1


def test_an_unknown_format_points_at_its_first_word() -> None:
    """The first non-blank character of an unknown text is where the error points."""
    with pytest.raises(InputError) as caught:
        read_cpuid_text("\n\n  \r\n   hello world\n", "u.txt")
    assert (caught.value.location.line, caught.value.location.column) == (4, 4)


# --------------------------------------------------------------------------- JSON


@pytest.mark.parametrize(
    ("text", "where", "bound"),
    [
        ("[" + "0," * limits.MAX_JSON_VALUES + "0]", (1, 2 * limits.MAX_JSON_VALUES),
         "50000 JSON"),
        ("[" + "[]," * limits.MAX_JSON_VALUES + "[]]", (1, 3 * limits.MAX_JSON_VALUES - 1),
         "50000 JSON"),
        ("[\n" + "]" * (limits.MAX_JSON_VALUES + 5), (2, limits.MAX_JSON_VALUES + 1),
         "50000 JSON"),
        ("\n" + "[" * 200, (2, 129), "128 nested"),
    ],
    ids=["zeros", "empty-arrays", "closers", "nesting"],
)
@pytest.mark.parametrize("reader", ["jsonpos", "own-json", "template", "dump"])
def test_json_bounds_are_checked_before_any_value_is_built(
    reader: str, text: str, where: tuple[int, int], bound: str
) -> None:
    """Every JSON reader refuses past 50,000 values or 128 levels, at the token past it."""
    with pytest.raises(InputError) as caught:
        if reader == "jsonpos":
            jsonpos.parse(text, "b.json")
        elif reader == "own-json":
            read_cpuid_json(text, "b.json")
        elif reader == "template":
            parse_template(text, "b.json")
        else:
            read_cpuid_text(text, "b.json")
    error = caught.value
    assert (error.location.path, error.location.line, error.location.column) == ("b.json", *where)
    assert bound in error.expected


def test_json_at_the_bound_still_reads() -> None:
    """A document of exactly 50,000 values parses."""
    text = "[" + ",".join(["0"] * (limits.MAX_JSON_VALUES - 1)) + "]"
    assert len(jsonpos.parse(text, "b.json").value) == limits.MAX_JSON_VALUES - 1


def test_own_json_long_number_and_deep_nesting_name_their_line() -> None:
    """A 5000-digit flags value and 200 nested arrays are errors with a line, not without."""
    text = '{"schema": "xstate-check-cpuid/1",\n "entries": [{"flags": ' + "9" * 5000 + "}]}"
    with pytest.raises(InputError) as caught:
        read_cpuid_json(text, "n.json")
    assert (caught.value.location.line, caught.value.location.column) == (2, 24)
    assert "at most 4300 digits" in caught.value.expected
    with pytest.raises(InputError) as caught:
        read_cpuid_json('{"schema": "xstate-check-cpuid/1",\n "entries": ' + "[" * 200, "d.json")
    assert caught.value.location.line == 2
    assert "128 nested" in caught.value.expected


def test_own_json_of_too_many_entries_is_refused_at_the_entry_past_the_bound() -> None:
    """Entry 2,049 of the project's JSON is an InputError at its line."""
    rows = ",\n".join(
        f'{{"leaf": "0x4", "subleaf": "{sub:#x}", "eax": "0x1", "ebx": "0x2", "ecx": "0x3", '
        '"edx": "0x4"}' for sub in range(limits.MAX_ENTRIES + 1))
    text = '{"schema": "xstate-check-cpuid/1", "entries": [\n' + rows + "]}"
    with pytest.raises(InputError) as caught:
        read_cpuid_json(text, "e.json")
    assert caught.value.location.line == limits.MAX_ENTRIES + 2
    assert "at most 2048 entries" in caught.value.expected


# --------------------------------------------------------------------------- templates

_REGISTER = '{"register": "ecx", "bitmap": "0bxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx1"}'


def _leaf(modifiers: int = 1, leaf: int = 1) -> str:
    return (f'{{"leaf": "{leaf:#x}", "subleaf": "0x0", "flags": 0, "modifiers": ['
            + ", ".join([_REGISTER] * modifiers) + "]}")


@pytest.mark.parametrize(
    ("text", "line", "bound"),
    [
        ('{"cpuid_modifiers": [\n' + ",\n".join([_leaf()] * (limits.MAX_ENTRIES + 1)) + "]}",
         limits.MAX_ENTRIES + 2, "at most 2048 cpuid modifiers"),
        ('{"cpuid_modifiers": [\n' + ",\n".join([_leaf(1500)] * 3) + "]}",
         4, "at most 4096 register modifiers"),
        ('{"msr_modifiers": [\n' + ",\n".join(
            ['{"addr": "0x10a", "bitmap": "0b1"}'] * (limits.MAX_MSR_MODIFIERS + 1)) + "]}",
         limits.MAX_MSR_MODIFIERS + 2, "at most 2048 MSR modifiers"),
    ],
    ids=["cpuid", "register", "msr"],
)
def test_template_modifier_bounds(text: str, line: int, bound: str) -> None:
    """A template past a modifier bound is refused at the modifier past it."""
    with pytest.raises(InputError) as caught:
        parse_template(text, "t.json")
    assert caught.value.location.line == line
    assert bound in caught.value.expected


def _naive_owner(pins: list[tuple[int, Location]], bit: int) -> Location | None:
    for mask, where in reversed(pins):
        if mask >> bit & 1:
            return where
    return None


def test_applying_a_template_keeps_a_bounded_number_of_pins_per_register() -> None:
    """4,096 modifiers of one register leave at most 33 pins, and every bit's owner is right.

    Applying used to copy the growing tuple of pins once per modifier (quadratic); the pins
    that no longer own a bit are dropped, which changes no answer.
    """
    rng = random.Random(5)
    modifiers = []
    for _ in range(limits.MAX_REGISTER_MODIFIERS):
        chars = [rng.choice("01xxxxxxxx") for _ in range(32)]
        modifiers.append(f'{{"register": "ecx", "bitmap": "0b{"".join(chars)}"}}')
    leaves = [
        '{"leaf": "0x1", "subleaf": "0x0", "flags": 0, "modifiers": [\n'
        + ",\n".join(modifiers[start:start + 16]) + "]}"
        for start in range(0, len(modifiers), 16)
    ]
    template = parse_template('{"cpuid_modifiers": [' + ",\n".join(leaves) + "]}", "t.json")
    base = CpuidSet.from_rows([(1, 0, 0, 0, 0x5555_5555, 0)], "base")
    guest = apply_template(template, base).cpuid
    pins = guest.provenance.pins(1, 0, "ecx")
    assert len(pins) <= 33
    every = [(mod.filter, mod.location) for leaf in template.cpuid_modifiers
             for mod in leaf.modifiers if mod.filter]
    for bit in range(32):
        owner = _naive_owner(every, bit)
        assert guest.provenance.get((1, 0, "ecx", bit)) == owner
    assert pins[0][1] == every[0][1]  # where the template first touches the register
    filter_bits, value_bits = template.modified_bits()[(1, 0, "ecx")]
    assert guest.get(1, 0).ecx == (0x5555_5555 & ~filter_bits) | value_bits


def test_owning_pins_answer_like_all_pins() -> None:
    """Dropping pins that own no bit keeps pinned(), every bit's owner and the first line."""
    rng = random.Random(11)
    for _ in range(200):
        pins = [(rng.getrandbits(32) & rng.getrandbits(32), Location("t.json", line))
                for line in range(1, rng.randint(1, 40))]
        template = parse_template("{}", "t.json")
        full = Provenance({(1, 0, "eax"): tuple(pins)})
        base = CpuidSet.from_rows([(1, 0, 0, 0, 0, 0)], "b", provenance=full)
        kept = apply_template(template, base).cpuid.provenance
        assert set(kept) == set(full)
        for bit in range(32):
            assert kept.get((1, 0, "eax", bit)) == full.get((1, 0, "eax", bit))
        mask = rng.getrandbits(32)
        assert kept.pinned(1, 0, "eax", mask) == full.pinned(1, 0, "eax", mask)
        assert kept.pins(1, 0, "eax")[:1] == full.pins(1, 0, "eax")[:1]


# --------------------------------------------------------------------------- TOML


def test_toml_bounds_and_unterminated_strings_name_a_line() -> None:
    """A TOML file over 2 MiB is refused; an unterminated string points at the file's end."""
    with pytest.raises(InputError, match=r"at most 2097152 bytes \(2 MiB"):
        parse_toml("# x\n" * (limits.MAX_TOML_BYTES // 4 + 1), "big.toml")
    with pytest.raises(InputError) as caught:
        parse_toml('x = 1\nname = """unterminated\n\n', "u.toml")
    assert (caught.value.location.line, caught.value.location.column) == (2, 23)
    assert "Unterminated string" in caught.value.expected


def test_a_matrix_of_too_many_entries_is_refused_at_the_entry_past_the_bound(
    tmp_path: Path,
) -> None:
    """[[template]] table 1,001 is refused at its line."""
    matrix = tmp_path / "m.toml"
    matrix.write_text('[[template]]\npath = "x.json"\nvendor = "intel"\n'
                      * (limits.MAX_MATRIX_ENTRIES + 1), encoding="utf-8")
    with pytest.raises(InputError) as caught:
        load_matrix(matrix)
    assert caught.value.location.line == 3 * limits.MAX_MATRIX_ENTRIES + 1
    assert "at most 1000 [[template]]" in caught.value.expected


# --------------------------------------------------------------------------- matrix patterns


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    """Return a git work tree with cpu-templates/{a.json, sub/b.json} and a matrix folder."""
    root = tmp_path / "repo"
    (root / "cpu-templates" / "sub").mkdir(parents=True)
    (root / ".git").mkdir()
    (root / "cpu-templates" / "a.json").write_text("{}", encoding="utf-8")
    (root / "cpu-templates" / "sub" / "b.json").write_text("{}", encoding="utf-8")
    return root


def _matrix(root: Path, pattern: str, templates_dir: str | None = None) -> Path:
    head = f"templates_dir = {json.dumps(templates_dir)}\n" if templates_dir else ""
    matrix = root / "m.toml"
    matrix.write_text(f'{head}\n[[template]]\npath = {json.dumps(pattern)}\nvendor = "intel"\n',
                      encoding="utf-8")
    return matrix


@pytest.mark.parametrize(
    ("pattern", "found"),
    [
        ("cpu-templates/*.json", ["a.json"]),
        ("cpu-templates/**/*.json", ["a.json", "sub/b.json"]),
        ("cpu-templates/**.json", ["a.json", "sub/b.json"]),  # the README's CI glob
        ("c?u-templates/[!x]*.json", ["a.json"]),
        ("**/b.json", ["sub/b.json"]),
        ("cpu-templates/sub/b.json", ["sub/b.json"]),
    ],
)
def test_matrix_patterns_name_files_below_the_matrix(
    repository: Path, pattern: str, found: list[str]
) -> None:
    """Patterns match per part, ** across folders, relative to the matrix's folder."""
    grid = load_matrix(_matrix(repository, pattern))
    names = [Path(path).resolve().relative_to(repository / "cpu-templates").as_posix()
             for path in grid.templates()]
    assert names == found


@pytest.mark.parametrize(
    ("pattern", "why"),
    [
        ("/etc/passwd", "is absolute"),
        (".", "has a part '.'"),
        ("../x.json", "has a part '..'"),
        ("cpu-templates//a.json", "has a part ''"),
        ("cpu-templates/[ab.json", "without its ']'"),
        ("nothing-*.json", "to name template files"),
    ],
)
def test_bad_matrix_patterns_are_input_errors_at_their_line(
    repository: Path, pattern: str, why: str
) -> None:
    """Absolute, dotted, empty and unclosed patterns are InputErrors at the entry's line."""
    matrix = _matrix(repository, pattern)
    with pytest.raises(InputError) as caught:
        run_gate(matrix=matrix)
    assert caught.value.location == Location(str(matrix), 2)
    assert why in caught.value.expected


def test_a_matrix_pattern_cannot_reach_outside_its_repository(
    repository: Path, tmp_path: Path
) -> None:
    """A link leading out of the repository is refused, and nothing there is read."""
    secret = tmp_path / "secret.json"
    secret.write_text("TOP SECRET\n", encoding="utf-8")
    (repository / "cpu-templates" / "evil.json").symlink_to(secret)
    for pattern in ("cpu-templates/*.json", "cpu-templates/evil.json"):
        with pytest.raises(InputError) as caught:
            run_gate(matrix=_matrix(repository, pattern))
        assert "links to a file outside it" in caught.value.expected
        assert "TOP SECRET" not in caught.value.render()


def test_a_matrix_walk_is_bounded(repository: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pattern's walk stops at MAX_MATRIX_FILES entries with an InputError."""
    from xstate_check import gate

    for index in range(30):
        (repository / "cpu-templates" / f"t{index}.json").write_text("{}", encoding="utf-8")
    monkeypatch.setattr(gate, "MAX_MATRIX_FILES", 20)
    with pytest.raises(InputError, match="at most 20 files and folders"):
        run_gate(matrix=_matrix(repository, "**/*.json"))


@pytest.mark.parametrize("pattern", ["/etc/*", ".", "***", "cpu-templates/**.json", "[", "\\"])
def test_hostile_matrix_patterns_never_exit_4(repository: Path, pattern: str) -> None:
    """The command line answers every such pattern with exit 0, 1 or 2, never a traceback."""
    done = _cli("gate", "--matrix", str(_matrix(repository, pattern)))
    assert done.returncode in (0, 1, 2), done.stderr
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr


def test_changed_since_on_a_link_out_of_the_work_tree_is_an_input_error(tmp_path: Path) -> None:
    """A committed template that links outside the repository: exit 2 naming it."""
    outside = tmp_path / "outside.json"
    outside.write_text("{}", encoding="utf-8")
    root = tmp_path / "repo"
    root.mkdir()
    (root / "t.json").symlink_to(outside)
    git = ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "t.json"], check=True)
    subprocess.run([*git, "commit", "-qm", "t"], check=True)
    done = _cli("gate", str(root / "t.json"), "--changed-since", "HEAD")
    assert done.returncode == 2, done.stderr
    assert "link to a file outside it" in done.stderr


# --------------------------------------------------------------------------- output


_HOSTILE = "\x1b[2J\x1b[H\r\nno findings\u202e\x9b31m\x07"


@pytest.fixture
def hostile_dump(tmp_path: Path) -> Path:
    """Return the project's JSON of a real-looking table whose source forges output."""
    rows = [(0, 0, 0xD, 0x756E6547, 0x6C65746E, 0x49656E69), (1, 0, 0, 0, 1 << 26, 0),
            (0xD, 0, 0x2E7, 0x2B00, 0x2B00, 0), (0xD, 1, 0xF, 0, 0, 0)]
    document = {
        "schema": "xstate-check-cpuid/1", "source": "src" + _HOSTILE + "\ud800",
        "meta": {"os": _HOSTILE},
        "entries": [{"leaf": hex(r[0]), "subleaf": hex(r[1]), "eax": hex(r[2]),
                     "ebx": hex(r[3]), "ecx": hex(r[4]), "edx": hex(r[5])} for r in rows],
    }
    path = tmp_path / ("dump" + "\x1b[31m\n::error::forged" + ".json")
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("command", "fmt"),
    [*(("check", fmt) for fmt in ("text", "json", "sarif", "junit", "github", "markdown")),
     ("decode", "text"), ("decode", "json")],
)
def test_no_control_character_from_input_reaches_any_output(
    hostile_dump: Path, fmt: str, command: str
) -> None:
    """A dump whose source and file name hold ESC, CR/LF, C1 and bidi characters."""
    done = _cli(command, str(hostile_dump), "--format", fmt, "--strict")
    assert done.returncode in (0, 1), done.stderr
    for stream in (done.stdout, done.stderr):
        assert _RAW_CONTROL.search(stream) is None, ascii(stream)
        for line in stream.splitlines():
            assert not line.lstrip().startswith(("no findings", "::error::forged")), line


def test_an_error_in_github_mode_is_one_escaped_workflow_command(tmp_path: Path) -> None:
    """A file name with a newline and ::error:: gives one command, not a forged one."""
    path = tmp_path / "t\n::error file=x::forged\r.json"
    path.write_text("{ not json", encoding="utf-8")
    done = _cli("check", "profile:fc-skylake-6.1", "--template", str(path), "--format", "github")
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 1
    command, _, message = lines[0].partition(",line=1,col=3,title=xstate-check::")
    assert command.startswith("::error file=") and message
    # What came from the file name is escaped: no "::" or "," can end the properties.
    assert "::" not in command[2:] and "," not in command
    assert "%3A%3Aerror file=x%3A%3Aforged%0D.json" in command


def test_error_excerpts_are_escaped_with_the_caret_in_place() -> None:
    """A dump line holding ESC and a tab: escaped in the message, caret under the bad digit."""
    text = "CPUID 0000000D: 000602E7-0000\x1bZZ-00002B00-00000000\t\n"
    with pytest.raises(InputError) as caught:
        read_cpuid_text(text, "e\x1b.txt")
    rendered = caught.value.render()
    assert "\x1b" not in rendered and "\t" not in rendered
    head, excerpt, caret = rendered.split("\n")
    assert head.startswith("e\\x1b.txt:1:")
    # The caret spans EBX's four digits and the ESC after them, escape included.
    assert excerpt[caret.index("~"):caret.index("^") + 1] == "0000\\x1b"


def test_printable_escapes_every_kind_of_control_character() -> None:
    """ESC, CR, LF, TAB, DEL, C1, bidi overrides, separators and lone surrogates."""
    assert printable("a\x1b\r\n\t\x7f\x85\u202e\u2028\ud800b") == (
        "a\\x1b\\r\\n\\t\\x7f\\x85\\u202e\\u2028\\ud800b")
    assert printable("é 100% ✓") == "é 100% ✓"


@pytest.mark.parametrize("target", ["-o", ">"])
def test_a_full_output_device_is_an_input_error_naming_it(target: str) -> None:
    """-o /dev/full, or stdout on /dev/full: exit 2, one message naming where, no traceback."""
    argv = [sys.executable, "-m", "xstate_check", "check", "profile:fc-skylake-6.1"]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    with open("/dev/full", "w", encoding="utf-8") as full:
        done = subprocess.run(
            [*argv, "-o", "/dev/full"] if target == "-o" else argv, env=env, check=False,
            stdout=subprocess.PIPE if target == "-o" else full, stderr=subprocess.PIPE,
            text=True, timeout=120,
        )
    assert done.returncode == 2, done.stderr
    where = "/dev/full" if target == "-o" else "<stdout>"
    assert done.stderr == f"xstate-check: {where}: expected " + (
        "a writable output file" if target == "-o" else "to write the output"
    ) + "; No space left on device\n"


# --------------------------------------------------------------------------- the API


# The public API, untyped here: these calls pass wrong types on purpose.
_API: Any = xstate_check


@pytest.mark.parametrize(
    ("call", "words"),
    [
        (lambda: _API.check(42), "check() expects cpuid"),
        (lambda: _API.check("profile:fc-skylake-6.1", template=3.5),
         "check() expects template"),
        (lambda: _API.check("profile:fc-skylake-6.1", host="h"), "check() expects host"),
        (lambda: _API.load_cpuid(None), "load_cpuid() expects source"),
        (lambda: _API.load_cpuid("profile:fc-skylake-6.1", cpu="0"),
         "load_cpuid() expects cpu"),
        (lambda: _API.load_cpuid("profile:fc-skylake-6.1", cpu=True),
         "load_cpuid() expects cpu"),
        (lambda: _API.load_template(b"t.json"), "load_template() expects path"),
        (lambda: _API.check_host(template=7, kvm=False), "expect template"),
    ],
)
def test_wrong_argument_types_are_type_errors_at_the_edge(call: object, words: str) -> None:
    """The public functions name the argument of the wrong type, not a deep AttributeError."""
    assert callable(call)
    with pytest.raises(TypeError, match=re.escape(words)):
        call()


def test_the_error_classes_are_exported() -> None:
    """XstateCheckError and its subclasses are importable from xstate_check itself."""
    from xstate_check import InputError as Input
    from xstate_check import PrebootError, ProbeError, XstateCheckError

    assert "XstateCheckError" in xstate_check.__all__
    assert issubclass(Input, XstateCheckError) and issubclass(Input, ValueError)
    assert issubclass(ProbeError, XstateCheckError) and issubclass(ProbeError, OSError)
    assert issubclass(PrebootError, XstateCheckError)
    assert (Input.exit_code, ProbeError.exit_code, PrebootError.exit_code) == (2, 3, 1)
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for name in ("XstateCheckError", "InputError", "ProbeError", "PrebootError"):
        assert re.search(rf"`(xstate_check\.)?{name}`", readme), name


def test_load_cpuid_takes_any_path_like(tmp_path: Path) -> None:
    """An os.PathLike other than Path is a file path too."""

    class Where:
        def __fspath__(self) -> str:
            return str(tmp_path / "absent.txt")

    with pytest.raises(InputError, match="no such file"):
        load_cpuid(Where())
    with pytest.raises(InputError, match="no such file"):
        load_template(Where())


@pytest.mark.parametrize("command", ["check", "gate"])
def test_output_to_a_device_writes_it_and_never_replaces_it(
    command: str, tmp_path: Path
) -> None:
    """-o /dev/full: exit 2 naming it, and /dev/full is still the device afterwards."""
    import stat

    before = os.stat("/dev/full")
    template = tmp_path / "t.json"
    template.write_text("{}", encoding="utf-8")
    argv = (["check", "profile:fc-skylake-6.1"] if command == "check"
            else ["gate", str(template)])
    done = _cli(*argv, "-o", "/dev/full")
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("xstate-check: /dev/full: expected a writable output file")
    after = os.stat("/dev/full")
    assert stat.S_ISCHR(after.st_mode) and after.st_rdev == before.st_rdev


def test_closed_standard_streams_are_an_input_error_not_a_crash() -> None:
    """stdout closed when the process starts: exit 2, one message, no traceback."""
    done = subprocess.run(
        [sys.executable, "-c", "import os, sys\nos.close(1)\n"
         "from xstate_check.cli import run\nsys.argv = ['xstate-check', 'rules']\nrun()"],
        env={**os.environ, "PYTHONPATH": str(REPO / "src")}, capture_output=False,
        stderr=subprocess.PIPE, text=True, check=False, timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr


def test_json_lines_are_counted_on_demand_not_listed() -> None:
    """A JSON text of a million newlines keeps no list of them: lines are counted when asked.

    16 MiB of newlines in a template used to build a list of 16 million offsets (690 MB).
    """
    root = jsonpos.parse('{"a": [' + "\n" * 1_000_000 + "1]}", "n.json")
    assert len(root._lines._marks) == 1  # nothing counted yet
    one = root.object_items()["a"].array_items()[0]
    assert (one.line, one.column) == (1_000_001, 1)
    assert len(root._lines._marks) == 2


def test_a_fingerprint_error_after_a_million_lines_names_its_line(data_dir: Path) -> None:
    """A repeated entry after a million blank lines: the error names its line, at once."""
    document = json.loads((data_dir / "firecracker" /
                           "fingerprint_AMD_GENOA_6.1host.json").read_text(encoding="utf-8"))
    modifiers = document["guest_cpu_config"]["cpuid_modifiers"]
    repeated = json.dumps(modifiers[0])
    modifiers.append("the repeat")
    text = json.dumps(document).replace('"the repeat"', "\n" * 1_000_000 + repeated)
    with pytest.raises(InputError) as caught:
        read_cpuid_text(text, "f.json")
    assert caught.value.location.line == 1_000_001
    assert "expected each CPUID entry once" in caught.value.expected


def test_a_rule_file_key_of_a_megabyte_compiles_no_pattern_of_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unknown rule key of a million characters: an InputError, and no regex built of it.

    Locating the key by a pattern made of it cost 3 s and 300 MB in the fuzz campaign.
    """
    from xstate_check.engine import load_catalogue

    text = (REPO / "rules" / "xcr0.toml").read_text(encoding="utf-8")
    first = text.index("[[rule]]") + len("[[rule]]\n")
    path = tmp_path / "xcr0.toml"
    path.write_text(text[:first] + "k" * 1_000_000 + " = 1\n" + text[first:], encoding="utf-8")
    sizes: list[int] = []
    compile_pattern = re.compile

    def recording(pattern: Any, flags: int = 0) -> Any:
        sizes.append(len(pattern))
        return compile_pattern(pattern, flags)

    monkeypatch.setattr(re, "compile", recording)
    with pytest.raises(InputError) as caught:
        load_catalogue([path])
    assert caught.value.location.line == text[:first].count("\n") + 1
    assert max(sizes, default=0) < 10_000
