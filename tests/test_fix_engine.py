"""The fix engine through the library: what it changes, what it leaves, and why."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import xstate_check
from xstate_check.sources.profiles import load_profile
from xstate_check.template import load_template

REPO = Path(__file__).resolve().parents[1]
AMX_HALF = REPO / "examples" / "broken" / "amx-half-masked.json"


def _template(tmp_path: Path, modifiers: list[dict[str, object]]) -> Path:
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"cpuid_modifiers": modifiers}, indent=2) + "\n")
    return path


def _leaf(leaf: str, subleaf: str, **registers: str) -> dict[str, object]:
    return {"leaf": leaf, "subleaf": subleaf, "flags": 1,
            "modifiers": [{"register": name, "bitmap": bitmap}
                          for name, bitmap in registers.items()]}


def test_fix_returns_edits_text_and_counts() -> None:
    """fix() on the bundled profiles: one edit, naming its rule, line and column; the text
    has the change; nothing is written."""
    before = AMX_HALF.read_text()
    fix = xstate_check.fix(AMX_HALF)
    assert isinstance(fix, xstate_check.Fix)
    assert fix.fixed == ("amx-tile-pair",) and fix.unfixed == ()
    assert (fix.found, fix.remaining) == (4, 0)
    (edit,) = fix.edits
    assert (edit.line, edit.column, edit.end_line, edit.end_column) == (10, 38, 10, 39)
    assert (edit.original, edit.replacement, edit.applicability) == ("x", "0", "safe")
    assert fix.text == before[:edit.start] + "0" + before[edit.end:]
    assert "fc-sapphire-rapids-6.1" in fix.profiles and "fc-skylake-4.14" in fix.profiles
    assert fix.edits_for("amx-tile-pair") == (edit,)
    assert AMX_HALF.read_text() == before


def test_fix_takes_cpuid_sets_as_declared_profiles() -> None:
    """A CpuidSet is a declared profile: on Sapphire Rapids 6.1 alone the AMX flags of leaf
    7 are cleared too, in an inserted modifier."""
    fix = xstate_check.fix(AMX_HALF, profiles=[load_profile("fc-sapphire-rapids-6.1")])
    assert fix.fixed == ("amx-tile-pair",)
    assert {(edit.leaf, edit.subleaf, edit.register) for edit in fix.edits} == {
        (7, 0, "edx"), (0xD, 0, "eax")}


def test_arguments_of_another_type_are_type_errors() -> None:
    """As the other API functions: a TypeError naming the function and the argument."""
    with pytest.raises(TypeError, match=r"fix\(\) expects template"):
        xstate_check.fix(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"fix\(\) expects profiles"):
        xstate_check.fix(AMX_HALF, profiles="builtin")
    with pytest.raises(TypeError, match=r"fix\(\) expects unsafe"):
        xstate_check.fix(AMX_HALF, unsafe="yes")  # type: ignore[arg-type]


def test_bad_input_is_an_input_error(tmp_path: Path) -> None:
    """A template Firecracker refuses is an InputError with its line, as for check."""
    path = tmp_path / "bad.json"
    path.write_text('{"cpuid_modifiers": [{"leaf": "13"}]}')
    with pytest.raises(xstate_check.InputError) as caught:
        xstate_check.fix(path)
    assert caught.value.location is not None and caught.value.location.line == 1


def test_no_declared_fix_and_unsafe_only_are_said(tmp_path: Path) -> None:
    """A modified entry the declared host lacks has no fix; XFD masked under AMX has only
    unsafe fixes, applied when asked."""
    path = _template(tmp_path, [
        _leaf("0xd", "0x1", eax="0bxxxxxxxxxxxxxxxxxxxxxxxxxxx0xxxx"),
        _leaf("0xd", "0x13", eax="0bxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx0"),
    ])
    profile = load_profile("fc-sapphire-rapids-6.1")
    fix = xstate_check.fix(path, profiles=[profile])
    reasons = {item.rule: item.reason for item in fix.unfixed}
    assert reasons == {"template-leaf-missing": "no-fix", "amx-requires-xfd": "unsafe-only"}
    assert not fix.changed() and fix.edits == ()
    unsafe = xstate_check.fix(path, profiles=[profile], unsafe=True)
    assert unsafe.fixed == ("amx-requires-xfd",)
    assert [edit.applicability for edit in unsafe.edits] == ["unsafe"]
    assert {item.rule for item in unsafe.unfixed} == {"template-leaf-missing"}


def test_only_the_pins_that_matter_are_restored(tmp_path: Path) -> None:
    """A template that sets TILECFG and TILEDATA on Skylake, which lacks them, and clears
    MPX: the fix drops the two set bits and keeps the template's clearing of MPX."""
    path = _template(tmp_path, [
        _leaf("0x7", "0x0", ebx="0bxxxxxxxxxxxxxxxxx0xxxxxxxxxxxxxx"),
        _leaf("0xd", "0x0", eax="0bxxxxxxxxxxxxx11xxxxxxxxxxxx00xxx"),
    ])
    fix = xstate_check.fix(path, profiles=["profile:fc-skylake-6.1"])
    assert "template-sets-unsupported-bits" in fix.fixed
    template_after = load_template(path)  # unchanged on disk
    assert template_after.modified_bits()[(0xD, 0, "eax")] == (0x60018, 0x60000)
    from xstate_check.template import parse_template

    pins = parse_template(fix.text, str(path)).modified_bits()
    assert pins[(0xD, 0, "eax")] == (0x18, 0)
    assert pins[(7, 0, "ebx")] == (1 << 14, 0)


def test_a_fix_that_would_break_another_host_is_not_made(tmp_path: Path) -> None:
    """Masking two AVX-512 components in 0xD only, on every bundled profile: the third is
    cleared, but the AVX-512 flags are not, since clearing AVX512_BF16 would need a leaf 7.1
    modifier that Skylake lacks (Firecracker would refuse to boot there)."""
    path = _template(tmp_path, [_leaf("0xd", "0x0", eax="0bxxxxxxxxxxxxxxxxxxxxxxxxx00xxxxx")])
    fix = xstate_check.fix(path, profiles=["profile:fc-skylake-6.1",
                                           "profile:fc-sapphire-rapids-6.1"])
    assert (7, 1) not in {(edit.leaf, edit.subleaf) for edit in fix.edits}
    from xstate_check.template import parse_template

    template = parse_template(fix.text, str(path))
    assert template.modified_bits()[(0xD, 0, "eax")] == (0xE0, 0)
    # linux-avx-state-missing needs AVX512F cleared, which Sapphire Rapids cannot have
    # without AVX512_BF16 in leaf 7.1: it stays, with its reason.
    assert "avx512-triple" in fix.fixed
    assert {item.rule: item.reason for item in fix.unfixed} == {
        "linux-avx-state-missing": "new-finding"}


def test_a_fault_of_the_table_itself_is_not_the_templates(tmp_path: Path) -> None:
    """A table whose 0xD.0 lacks x87 (no template pin causes it): x87-required's fix only
    drops template pins, so it stays, as not the template's; the text is left as it is."""
    profile = load_profile("fc-skylake-6.1")
    eax = profile.get(0xD, 0).eax
    table = profile.with_registers(0xD, 0, eax=eax & ~1)
    path = _template(tmp_path, [_leaf("0xd", "0x0", eax="0b" + "x" * 32)])
    fix = xstate_check.fix(path, profiles=[table])
    assert not fix.changed()
    assert {item.rule: item.reason for item in fix.unfixed}["x87-required"] == "not-template"


def test_a_fix_brings_no_warning_to_a_table_that_lacked_it(tmp_path: Path) -> None:
    """A new warning counts per table: a fix is refused when it adds a warning to one
    profile, even if another profile already had that warning."""
    path = _template(tmp_path, [_leaf("0xd", "0x0", eax="0bxxxxxxxxxxxxx0xxxxxxxxxxxxxxxxxx")])
    fix = xstate_check.fix(path, profiles=["profile:fc-sapphire-rapids-6.1",
                                           "profile:fc-granite-rapids-6.18"])
    from xstate_check.engine import evaluate
    from xstate_check.gate import GateProfile, _subject
    from xstate_check.template import parse_template

    for name in ("fc-sapphire-rapids-6.1", "fc-granite-rapids-6.18"):
        profile = GateProfile(name, load_profile(name))
        before = {f.name for f in evaluate(_subject(load_template(path), profile)).findings
                  if f.severity in ("error", "warning")}
        after = {f.name for f in evaluate(_subject(parse_template(fix.text, str(path)),
                                                   profile)).findings
                 if f.severity in ("error", "warning")}
        assert after <= before - {"amx-tile-pair"}, name
