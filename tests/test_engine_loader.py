"""Rule files: discovery, caching, and errors that name file, line and a caret."""

from __future__ import annotations

from pathlib import Path

import pytest

from xstate_check.engine import default_rules_dir, load_catalogue
from xstate_check.errors import InputError

GOOD_RULE = '''\
family = "xcr0"

[[rule]]
id = "XS0190"
name = "test-rule"
severity = "error"
summary = "a test rule"
check = "xcr0 & xtile in [0, xtile]"
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
    text = GOOD_RULE.replace('check = "xcr0 & xtile', 'check = "xcr0 & xtiel')
    assert load_error(tmp_path, text) == (
        "xcr0.toml:8:17: unknown name 'xtiel' (did you mean 'xtile'?)\n"
        '    check = "xcr0 & xtiel in [0, xtile]"\n'
        "                    ~~~~^"
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
        "xcr0.toml:9:18: a fact, let or item field to show, not 'xrc0'\n"
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
    text = GOOD_RULE.replace('check = "xcr0 & xtile in [0, xtile]"', 'check = "xtile != 0"')
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
        ["xcr0", "layout", "features", "kvm", "linux-guest", "host"])
    assert load_catalogue([directory]).paths == load_catalogue().paths


def test_unknown_rule_lookup_is_a_key_error() -> None:
    """Catalogue.get raises KeyError for an unknown id or name."""
    with pytest.raises(KeyError):
        load_catalogue().get("XS9999")
    assert "amx-tile-pair" in load_catalogue() and "XS9999" not in load_catalogue()
