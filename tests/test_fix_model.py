"""The fix model: a Fix's diff and change test."""

from __future__ import annotations

from xstate_check.fixes import Edit, Fix


def _edit(original: str, replacement: str, start: int) -> Edit:
    return Edit("t.json", start, start + len(original), 2, 5, 2, 5 + len(original), original,
                replacement, 0xD, 0, "eax", ("amx-tile-pair",), "safe")


def test_unchanged_fix_has_no_diff() -> None:
    fix = Fix("t.json", "{}\n", "{}\n")
    assert not fix.changed()
    assert fix.diff() == ""


def test_diff_names_both_sides_like_ruff() -> None:
    original = '{\n  "bitmap": "0b01"\n}\n'
    text = original.replace("0b01", "0b00")
    edit = _edit("1", "0", original.index("0b01") + 3)
    fix = Fix("dir/t.json", original, text, (edit,), ("amx-tile-pair",))
    assert fix.changed()
    diff = fix.diff().splitlines()
    assert diff[:2] == ["--- a/dir/t.json", "+++ b/dir/t.json"]
    assert '-  "bitmap": "0b01"' in diff and '+  "bitmap": "0b00"' in diff
    assert fix.edits_for("amx-tile-pair") == (edit,)
    assert fix.edits_for("mpx-pair") == ()


def test_diff_marks_a_missing_final_newline() -> None:
    fix = Fix("t.json", '{"a": "0b1"}', '{"a": "0b0"}')
    assert fix.diff().endswith('+{"a": "0b0"}\n\\ No newline at end of file\n')
