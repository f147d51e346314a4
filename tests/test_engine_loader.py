"""Rule files: discovery, caching, and errors that name file, line and a caret."""

from __future__ import annotations

from pathlib import Path

import pytest

from xstate_check.engine import default_rules_dir, load_catalogue
from xstate_check.engine.catalogue import Rule
from xstate_check.engine.loader import load_rule_text
from xstate_check.errors import InputError

GOOD_RULE = '''\
family = "xcr0"

[[rule]]
id = "XS0190"
name = "test-rule"
severity = "error"
summary = "a test rule"
check = "(xcr0 & xtile) in [0, xtile]"
message = "XCR0 {xcr0}"
consequence = "XSETBV raises #GP"
fix = "keep the pair"
references = ["RULES-CATALOGUE.md XCR0-08"]

[[rule.pass]]
cpuid = { "0xd.0.eax" = "0x602e7" }

[[rule.fail]]
cpuid = { "0xd.0.eax" = "0x202e7" }
'''


def write(tmp_path: Path, text: str, name: str = "xcr0.toml") -> Path:
    """Write a rule file and return its path."""
    path = tmp_path / name
    path.write_text(text)
    return path


def load_error(tmp_path: Path, text: str, name: str = "xcr0.toml") -> str:
    """Return the rendered InputError of loading ``text`` as a rule file."""
    path = write(tmp_path, text, name)
    with pytest.raises(InputError) as caught:
        load_catalogue([path])
    return str(caught.value).replace(str(path), name)


def test_a_good_file_loads(tmp_path: Path) -> None:
    """A minimal well-formed file gives one compiled rule with its examples."""
    catalogue = load_catalogue([write(tmp_path, GOOD_RULE)])
    rule = catalogue.get("test-rule")
    assert (rule.id, rule.family, rule.severity) == ("XS0190", "xcr0", "error")
    assert rule.location.line == 3 and len(rule.passes) == len(rule.fails) == 1


def test_bad_expression_is_drawn_in_the_file(tmp_path: Path) -> None:
    """A misspelt name in 'check' names file, line and column, with the line and a caret."""
    text = GOOD_RULE.replace('check = "(xcr0 & xtile', 'check = "(xcr0 & xtiel')
    assert load_error(tmp_path, text) == (
        "xcr0.toml:8:18: unknown name 'xtiel' (did you mean 'xtile'?)\n"
        '    check = "(xcr0 & xtiel) in [0, xtile]"\n'
        "                     ~~~~^"
    )


def test_type_error_in_applies_is_drawn(tmp_path: Path) -> None:
    """A type error in 'applies' points at its operand."""
    text = GOOD_RULE.replace('check = "', 'applies = "role and XSAVE"\ncheck = "')
    assert load_error(tmp_path, text) == (
        "xcr0.toml:8:12: 'and' needs a condition, found a string\n"
        '    applies = "role and XSAVE"\n'
        "               ~~~^"
    )


def test_unknown_rule_key_is_an_error(tmp_path: Path) -> None:
    """An unknown key in a rule names the key and lists the allowed ones."""
    text = GOOD_RULE.replace('fix = "keep the pair"', 'fix = "keep the pair"\nfixx = "typo"')
    message = load_error(tmp_path, text)
    assert message.startswith("xcr0.toml:12:1: one of the rule keys (id, name, severity,")
    assert message.endswith("not 'fixx'\n    fixx = \"typo\"\n    ~~~^")


def test_unknown_top_level_key_is_an_error(tmp_path: Path) -> None:
    """Unknown keys outside the rules are errors too."""
    message = load_error(tmp_path, "colour = 1\n" + GOOD_RULE)
    assert message.startswith("xcr0.toml:1:1: one of the top-level keys (family, description")


def test_missing_key_points_at_the_rule(tmp_path: Path) -> None:
    """A rule without 'fix' is reported at its [[rule]] header."""
    text = GOOD_RULE.replace('fix = "keep the pair"\n', "")
    assert load_error(tmp_path, text).startswith("xcr0.toml:3:1: the rule key 'fix'\n")


def test_unknown_placeholder_is_drawn(tmp_path: Path) -> None:
    """A message placeholder that names no fact is drawn under the placeholder."""
    text = GOOD_RULE.replace('message = "XCR0 {xcr0}"', 'message = "XCR0 {xrc0}"')
    assert load_error(tmp_path, text) == (
        "xcr0.toml:9:18: a fact, let, item field or variable of the check's 'all' to show, "
        "not 'xrc0'\n"
        '    message = "XCR0 {xrc0}"\n'
        "                     ~~~^"
    )


def test_family_must_match_the_file_and_the_id_block(tmp_path: Path) -> None:
    """The family names the file, and ids of the xcr0 family are XS01nn."""
    assert "family = 'layout', the file's name" in load_error(tmp_path, GOOD_RULE, "layout.toml")
    text = GOOD_RULE.replace('id = "XS0190"', 'id = "XS0290"')
    assert "an id XS01nn for the xcr0 family" in load_error(tmp_path, text)


def test_duplicate_ids_across_files_are_an_error(tmp_path: Path) -> None:
    """Two rules with one id (or name) are refused, naming both places."""
    first = write(tmp_path, GOOD_RULE)
    other = tmp_path / "other"
    other.mkdir()
    second = write(other, GOOD_RULE.replace('name = "test-rule"', 'name = "other-rule"'))
    with pytest.raises(InputError) as caught:
        load_catalogue([first, second])
    assert "a unique rule id and name: XS0190 is also the rule at" in str(caught.value)


def test_toml_syntax_error_names_line_and_column(tmp_path: Path) -> None:
    """Broken TOML is reported with tomllib's line and column."""
    message = load_error(tmp_path, GOOD_RULE.replace('severity = "error"', 'severity = error'))
    assert message.startswith("xcr0.toml:6:12: valid TOML (")


def test_a_check_that_reads_nothing_is_refused(tmp_path: Path) -> None:
    """A check that folds to a constant is refused (it would always or never fire)."""
    text = GOOD_RULE.replace('check = "(xcr0 & xtile) in [0, xtile]"', 'check = "xtile != 0"')
    assert "a check that reads some fact (this one is always true)" in load_error(tmp_path, text)


def test_bad_example_edit_is_an_error(tmp_path: Path) -> None:
    """An example's CPUID edit must be a value or bit edits."""
    text = GOOD_RULE.replace('"0x202e7" }', '"bit18" }')
    message = load_error(tmp_path, text)
    assert message.startswith("xcr0.toml:18:1: a register value")
    text = GOOD_RULE.replace("[[rule.fail]]\n", "[[rule.fail]]\nbase = \"nehalem\"\n")
    assert "base = one of spr-guest, spr-cpu, skx-guest, genoa-guest" in load_error(tmp_path, text)


def test_cpuid_bits_are_parsed(tmp_path: Path) -> None:
    """cpuid_bits accept LEAF.SUBLEAF.REG[:LOW[-HIGH]] and nothing else."""
    text = GOOD_RULE.replace("references =", 'cpuid_bits = ["0xd.0.eax:17-18"]\nreferences =')
    rule = load_catalogue([write(tmp_path, text)]).get("XS0190")
    assert rule.cpuid_bits == ((0xD, 0, "eax", 0x60000),)
    bad = GOOD_RULE.replace("references =", 'cpuid_bits = ["0xd.0.eax:40"]\nreferences =')
    assert "bit numbers 0 to 31" in load_error(tmp_path, bad)


def test_default_catalogue_is_loaded_once() -> None:
    """The shipped catalogue is cached: two calls give the same object."""
    assert load_catalogue() is load_catalogue()


def test_rules_directory_holds_one_file_per_family() -> None:
    """The repository's rules/ has the six family files the catalogue is made of."""
    directory = default_rules_dir()
    assert sorted(path.stem for path in directory.glob("*.toml")) == sorted(
        ["xcr0", "layout", "features", "kvm", "linux-guest", "host", "restore"])
    assert load_catalogue([directory]).paths == load_catalogue().paths


def test_unknown_rule_lookup_is_a_key_error() -> None:
    """Catalogue.get raises KeyError for an unknown id or name."""
    with pytest.raises(KeyError):
        load_catalogue().get("XS9999")
    assert "amx-tile-pair" in load_catalogue() and "XS9999" not in load_catalogue()


# --------------------------------------------------------------------------- hostile files
# Found by `python fuzz/run.py --reader rule-file` (fuzz-out/rule-file): tomllib's
# RecursionError on deep nesting and a TypeError for a table where a string was expected.


@pytest.mark.parametrize("opening", ["[", "{a = ", "[{b = "])
def test_deep_nesting_is_an_input_error_naming_the_file(tmp_path: Path, opening: str) -> None:
    """1000 nested arrays or inline tables make tomllib recurse too deep: an InputError."""
    message = load_error(tmp_path, "x = " + opening * 1000 + "\n" + GOOD_RULE)
    assert message == "xcr0.toml: valid TOML (arrays and inline tables nested too deeply to read)"


def test_integer_of_thousands_of_digits_is_drawn(tmp_path: Path) -> None:
    """A 5000-digit integer (more than Python converts) is an InputError at its column."""
    message = load_error(tmp_path, GOOD_RULE + "\n[[rule.fail.x]]\ny = " + "9" * 5000 + "\n")
    first, snippet, marker = message.splitlines()
    line = GOOD_RULE.count("\n") + 3
    assert first == f"xcr0.toml:{line}:5: valid TOML (an integer of at most 4300 digits)"
    assert snippet == "    y = " + "9" * 116 + "…"
    assert marker == "        " + "~" * 115 + "^"


@pytest.mark.parametrize("value", ["{ a = 1 }", "[1]", "[{ a = 1 }]", "1", "true"])
def test_example_base_of_another_type(tmp_path: Path, value: str) -> None:
    """base = a table, an array or a number is refused at its line, like an unknown base."""
    text = GOOD_RULE.replace("[[rule.fail]]\n", f"[[rule.fail]]\nbase = {value}\n")
    assert load_error(tmp_path, text).startswith(
        "xcr0.toml:18:1: base = one of spr-guest, spr-cpu, skx-guest, genoa-guest\n"
        f"    base = {value}\n"
    )


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('family = "xcr0"', "family = { a = 1 }", "xcr0.toml:1:1: family = one of xcr0,"),
        ('family = "xcr0"', "family = [1]", "xcr0.toml:1:1: family = one of xcr0,"),
        ('cpuid = { "0xd.0.eax" = "0x202e7" }', 'missing = ["0xd.zz"]',
         "xcr0.toml:18:1: a CPUID key such as \"0xd.0.eax\" or \"0x1d.1\", not '0xd.zz'"),
        ('cpuid = { "0xd.0.eax" = "0x202e7" }', 'missing = ["0xd.0.eax"]',
         "xcr0.toml:18:1: missing = [\"LEAF.SUBLEAF\", …], not '0xd.0.eax'"),
        ('"0xd.0.eax" = "0x202e7"', '"4294967296.0.eax" = "0x202e7"',
         "xcr0.toml:18:1: a leaf and subleaf of at most 0xffffffff, not '4294967296.0.eax'"),
        ('cpuid = { "0xd.0.eax" = "0x202e7" }', 'flags = { "0xd.0" = "4294967296" }',
         "xcr0.toml:18:1: flags = { \"LEAF.SUBLEAF\" = \"FLAGS\" }, not '0xd.0'"),
        ('cpuid = { "0xd.0.eax" = "0x202e7" }', 'host = { xcr0 = "18446744073709551616" }',
         "xcr0.toml:18:1: xcr0 = a 64-bit mask such as \"0x602e7\", not '18446744073709551616'"),
        ('cpuid = { "0xd.0.eax" = "0x202e7" }', 'host = { xcr0 = "0x10000000000000000" }',
         "xcr0.toml:18:1: xcr0 = a 64-bit mask such as \"0x602e7\", not '0x10000000000000000'"),
        ("references =", 'cpuid_bits = ["4294967296.0.eax"]\nreferences =',
         "xcr0.toml:12:1: a leaf and subleaf of at most 0xffffffff"),
    ],
)
def test_wrong_types_and_out_of_range_values_are_refused(
    tmp_path: Path, old: str, new: str, expected: str
) -> None:
    """Tables where strings belong, and leaves, subleaves, flags or masks too wide: InputError."""
    assert old in GOOD_RULE
    assert load_error(tmp_path, GOOD_RULE.replace(old, new, 1)).startswith(expected)


@pytest.mark.parametrize("rules", ["[1]", '["XS0190"]', '[{ id = "XS0190" }, 2]'])
def test_rule_array_of_other_values_is_refused(tmp_path: Path, rules: str) -> None:
    """rule = an array holding anything but tables is refused at the rule key."""
    assert load_error(tmp_path, f'family = "xcr0"\nrule = {rules}\n') == (
        "xcr0.toml:2:1: at least one [[rule]] table (and nothing but tables)\n"
        f"    rule = {rules}\n"
        "    ~~~^"
    )


def test_decimal_leaves_with_leading_zeros_are_read(tmp_path: Path) -> None:
    """"010.0.eax" is leaf 10 (decimal), in examples and cpuid_bits alike."""
    text = GOOD_RULE.replace('"0xd.0.eax" = "0x202e7"', '"013.00.eax" = "0x202e7"').replace(
        "references =", 'cpuid_bits = ["013.0.eax:1"]\nreferences =')
    rule = load_catalogue([write(tmp_path, text)]).get("XS0190")
    assert rule.fails[0].cpuid == (("013.00.eax", "0x202e7"),)
    assert rule.cpuid_bits == ((0xD, 0, "eax", 0x2),)


def test_long_lines_and_names_give_short_messages(tmp_path: Path) -> None:
    """A 1 MiB check with a misspelt name: the line and the name are cut in the message."""
    name = "x" * (1 << 20)
    text = GOOD_RULE.replace('check = "(xcr0 & xtile', f'check = "(xcr0 & {name} & xtile')
    first, snippet, marker = load_error(tmp_path, text).splitlines()
    assert first == f"xcr0.toml:8:18: unknown name '{'x' * 100}…'"
    assert snippet == '    check = "(xcr0 & ' + "x" * 103 + "…"
    assert marker == "    " + " " * 17 + "~" * 102 + "^"


def test_toml_syntax_error_on_a_long_line_is_cut(tmp_path: Path) -> None:
    """A TOML syntax error after a 100 000-character value: the line is cut around the caret."""
    text = GOOD_RULE.replace('severity = "error"', 'severity = "' + "e" * 100_000 + '" x')
    first, snippet, marker = load_error(tmp_path, text).splitlines()
    assert first.startswith("xcr0.toml:6:100015: valid TOML (")
    assert snippet == "    …" + "e" * 117 + '" x'
    assert marker == "    " + " " * 120 + "^"


@pytest.mark.parametrize(("defines", "check", "expected"), [
    ('"valid_xcr1"', "(xcr0 & xtile) in [0, xtile]", "defines = one of 'valid_xcr0'"),
    ('"valid_xcr0"', "XSAVE => x87 in xcr0", "a check that reads xcr0 alone"),
    ('"valid_xcr0"', "(xss & xtile) == 0", "a check that reads xcr0 alone"),
])
def test_defines_names_a_defined_function_and_reads_its_argument_alone(
        tmp_path: Path, defines: str, check: str, expected: str) -> None:
    """A rule that defines valid_xcr0 must check xcr0 (its argument) and nothing else."""
    text = GOOD_RULE.replace('check = "(xcr0 & xtile) in [0, xtile]"',
                             f'check = "{check}"\ndefines = {defines}')
    assert expected in load_error(tmp_path, text)


def test_a_defining_rule_keeps_its_check_as_the_definition(tmp_path: Path) -> None:
    """defines = "valid_xcr0" is read; the definition is the check, without applies."""
    text = GOOD_RULE.replace('check = "(xcr0 & xtile) in [0, xtile]"',
                             'applies = "XSAVE"\ncheck = "(xcr0 & xtile) in [0, xtile]"\n'
                             'defines = "valid_xcr0"')
    rule = load_catalogue([write(tmp_path, text)]).get("test-rule")
    assert rule.defines == "valid_xcr0"
    assert rule.compiled.definition is not None and rule.compiled.definition.type == "bool"


class _ScanCountingText(str):
    """A rule file's text that adds up the characters its searches scan (count, find,
    rfind, index, rindex), wherever the loader or the TOML reader calls them."""

    scanned = 0

    def _scan(self, start: int | None = None, end: int | None = None) -> None:
        size = len(self)
        low = 0 if start is None else max(0, start + size if start < 0 else start)
        high = size if end is None else min(size, end + size if end < 0 else end)
        _ScanCountingText.scanned += max(0, high - low)

    def count(self, sub: str, start: int | None = None, end: int | None = None) -> int:  # type: ignore[override]
        self._scan(start, end)
        return str.count(self, sub, start, end)

    def find(self, sub: str, start: int | None = None, end: int | None = None) -> int:  # type: ignore[override]
        self._scan(start, end)
        return str.find(self, sub, start, end)

    def rfind(self, sub: str, start: int | None = None, end: int | None = None) -> int:  # type: ignore[override]
        self._scan(start, end)
        return str.rfind(self, sub, start, end)

    def index(self, sub: str, start: int | None = None, end: int | None = None) -> int:  # type: ignore[override]
        self._scan(start, end)
        return str.index(self, sub, start, end)

    def rindex(self, sub: str, start: int | None = None, end: int | None = None) -> int:  # type: ignore[override]
        self._scan(start, end)
        return str.rindex(self, sub, start, end)


def _scanned(text: str) -> tuple[int, list[Rule]]:
    """Return the characters the loader's searches scanned reading ``text``, and its rules."""
    _ScanCountingText.scanned = 0
    rules = load_rule_text(_ScanCountingText(text), "xcr0.toml")
    return _ScanCountingText.scanned, rules


@pytest.mark.parametrize("shape", ["examples", "rules"])
def test_the_loader_scans_a_long_file_a_bounded_number_of_times(shape: str) -> None:
    """A file of many example tables, or of many rules, costs work in proportion to its
    length: ten times the lines scan at most about ten times the characters, each character
    a few times (finding each table's line used to count the newlines from the start of the
    file, so 10x the tables scanned 100x the characters). The lines found stay right."""
    rule = GOOD_RULE.split("\n", 1)[1]

    def text(count: int) -> str:
        if shape == "examples":
            return GOOD_RULE + "[[rule.pass]]\n" * count
        return GOOD_RULE + "".join(
            rule.replace("XS0190", f"XS01{number % 100:02d}").replace("test-rule", f"r{number}")
            for number in range(count // 20)
        )

    small, large = text(2_000), text(20_000)
    small_scan, _ = _scanned(small)
    large_scan, rules = _scanned(large)
    assert large_scan <= 4 * len(large)
    assert large_scan <= 12 * small_scan
    lines = large.splitlines()
    if shape == "examples":
        assert len(rules[0].passes) == 20_001
        last = rules[0].passes[-1].location
        assert last is not None and last.line == len(lines)
        assert lines[last.line - 1] == "[[rule.pass]]"
    else:
        assert len(rules) == 1_001
        assert [lines[r.location.line - 1] for r in rules] == ["[[rule]]"] * 1_001
        assert rules[-1].location.line == large.count("\n", 0, large.rindex("[[rule]]")) + 1
