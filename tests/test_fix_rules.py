"""Fixes as rule data: ``[[rule.autofix]]`` tables, read and checked like every rule key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from xstate_check.cpuid import FEATURES
from xstate_check.engine import load_catalogue
from xstate_check.engine.catalogue import Catalogue
from xstate_check.errors import InputError

RULE = '''\
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
references = ["Intel SDM: https://example.org"]

[[rule.autofix]]
applicability = "safe"
clear = ["0xd.0.eax:17-18"]
also = ["AMX_TILE", "0x7.0.edx:22,25"]
summary = "Clear TILECFG and TILEDATA together"

[[rule.autofix]]
applicability = "unsafe"
restore = ["0xd.2-4.eax"]
summary = "Drop the template's size changes"

[[rule.pass]]
cpuid = { "0xd.0.eax" = "0x602e7" }

[[rule.fail]]
cpuid = { "0xd.0.eax" = "0x202e7" }
'''


def _load(tmp_path: Path, text: str) -> Catalogue:
    path = tmp_path / "xcr0.toml"
    path.write_text(text)
    return load_catalogue([path])


def _error(tmp_path: Path, text: str) -> str:
    with pytest.raises(InputError) as caught:
        _load(tmp_path, text)
    return str(caught.value).replace(str(tmp_path / "xcr0.toml"), "xcr0.toml")


def test_autofix_tables_are_read_in_order(tmp_path: Path) -> None:
    """Bits, feature names, bit lists and subleaf ranges become (leaf, subleaf, reg, mask)."""
    catalogue = _load(tmp_path, RULE)
    clear, restore = catalogue.get("test-rule").autofix
    assert (clear.action, clear.applicability) == ("clear", "safe")
    assert clear.bits == ((0xD, 0, "eax", 0x60000),)
    tile = FEATURES["AMX_TILE"]
    assert clear.also == ((7, 0, "edx", 1 << tile.bit), (7, 0, "edx", (1 << 22) | (1 << 25)))
    assert restore.action == "restore" and restore.applicability == "unsafe"
    assert restore.bits == tuple((0xD, n, "eax", 0xFFFF_FFFF) for n in (2, 3, 4))
    assert restore.specs == ("0xd.2-4.eax",)


@pytest.mark.parametrize(("change", "expected", "line"), [
    ('applicability = "safe"\nclear', "applicability = \"safe\" (completes", "15:1"),
    ('clear = ["0xd.0.eax:17-18"]', "exactly one of clear", "17:1"),
    ('"0x7.0.edx:22,25"', "bit numbers 0 to 31", "17:22"),
    ('"AMX_TILE"', "a CPUID feature `xstate-check facts` names, not 'AMX_TILES' (did you mean "
     "AMX_TILE?)", "17:10"),
    ('summary = "Clear TILECFG and TILEDATA together"', "summary = \"a sentence", "18:1"),
    ('also = [', "one of the autofix keys", "17:1"),
])
def test_a_bad_autofix_is_an_input_error_at_its_line(tmp_path: Path, change: str,
                                                     expected: str, line: str) -> None:
    """Each mistake names the file and the line of the key or value at fault."""
    text = {
        'applicability = "safe"\nclear': RULE.replace('applicability = "safe"\nclear',
                                                      'applicability = "sure"\nclear'),
        'clear = ["0xd.0.eax:17-18"]': RULE.replace(
            'clear = ["0xd.0.eax:17-18"]', 'clear = ["0xd.0.eax:17-18"]\nrestore = ["0x1.0.ecx"]'),
        '"0x7.0.edx:22,25"': RULE.replace('"0x7.0.edx:22,25"', '"0x7.0.edx:22,33"'),
        '"AMX_TILE"': RULE.replace('"AMX_TILE"', '"AMX_TILES"'),
        'summary = "Clear TILECFG and TILEDATA together"': RULE.replace(
            'summary = "Clear TILECFG and TILEDATA together"', 'summary = ""'),
        'also = [': RULE.replace('also = [', 'alsoo = ['),
    }[change]
    message = _error(tmp_path, text)
    assert message.startswith(f"xcr0.toml:{line}:"), message
    assert expected in message


def test_also_and_anchor_go_with_clear_only(tmp_path: Path) -> None:
    """A restore group with ``anchor`` is refused, naming the key."""
    text = RULE.replace('restore = ["0xd.2-4.eax"]', 'restore = ["0xd.2-4.eax"]\nanchor = ["XFD"]')
    assert "anchor only with clear" in _error(tmp_path, text)


def test_a_bad_autofix_is_exit_2(tmp_path: Path) -> None:
    """A rule-file error of an autofix is an InputError: exit 2, as every rule-file error."""
    path = tmp_path / "xcr0.toml"
    path.write_text(RULE.replace('"AMX_TILE"', '"AMX_TILES"'))
    with pytest.raises(InputError) as caught:
        load_catalogue([path])
    assert caught.value.exit_code == 2
    assert caught.value.render().startswith(f"{path}:17:10:")


def test_explain_shows_the_fix_in_text_and_json() -> None:
    """``explain`` prints the rule's automatic fix: applicability and bits."""
    from xstate_check.explain import render_rule

    text = render_rule("amx-tile-pair")
    section = " ".join(text[text.index("Automatic fix"):text.index("References")].split())
    assert "clears 0xd.0.eax:17-18" in section
    assert "safe where the template already clears one of these bits" in section
    assert "AMX_TILE, AMX_BF16, AMX_INT8" in section
    page = json.loads(render_rule("amx-tile-pair", fmt="json"))
    assert page["autofix"] == [{
        "applicability": "safe",
        "summary": "Clear TILECFG and TILEDATA (0xD.0 EAX bits 17-18) together, with AMX_TILE, "
                   "AMX_BF16, AMX_INT8, AMX_FP16 and AMX_COMPLEX",
        "clear": ["0xd.0.eax:17-18"],
        "also": ["AMX_TILE", "AMX_BF16", "AMX_INT8", "AMX_FP16", "AMX_COMPLEX"],
    }]
    assert "Automatic fix" not in render_rule("template-leaf-missing")
    unsafe = json.loads(render_rule("amx-requires-xfd", fmt="json"))["autofix"]
    assert [group["applicability"] for group in unsafe] == ["unsafe", "unsafe"]
