"""The CI gate: templates x profiles, matrix files, vendor inference, regression mode."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from conftest import X86_TEMPLATES
from xstate_check.cli import main
from xstate_check.engine.shipped import load_catalogue
from xstate_check.errors import InputError, Location
from xstate_check.formats import render
from xstate_check.gate import (
    AMD,
    INTEL,
    FailOn,
    GateResult,
    load_matrix,
    resolve_profiles,
    run_gate,
    template_vendor,
)
from xstate_check.report import Finding, Report, Severity, SubjectReport
from xstate_check.sources.profiles import load_profile, match_profiles, profile_index
from xstate_check.template import Template, load_template, parse_template

REPO = Path(__file__).resolve().parents[1]
MATRIX = REPO / "examples" / "firecracker-matrix.toml"
# 0xD.0 EAX bitmaps as they stand in Firecracker's T2.json and SPR_TO_T2_6.1.json; bit 17
# (TILECFG) and bit 18 (TILEDATA) are the 15th and 14th characters after 0b.
T2_XCR0 = '"0bxxxxxxxxxxxxxxxxxxxxxx0x00000xxx"'
T2_XCR0_NO_TILEDATA = '"0bxxxxxxxxxxxxx0xxxxxxxx0x00000xxx"'
SPR_XCR0 = '"0bxxxxxxxxxxxxx00xxxxxxx0x00000xxx"'
SPR_XCR0_ONLY_TILEDATA_MASKED = '"0bxxxxxxxxxxxxx0xxxxxxxx0x00000xxx"'


def _line_of(text: str, needle: str, start: int = 0) -> int:
    """Return the 1-based line where ``needle`` first stands at or after offset ``start``."""
    return text.count("\n", 0, text.index(needle, start)) + 1


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.invalid",
         "-c", "commit.gpgsign=false", *args],
        capture_output=True, text=True, check=True,
    )
    return done.stdout


@pytest.fixture
def repo(tmp_path: Path, data_dir: Path) -> Path:
    """A git repository whose first commit holds copies of T2 and SPR_TO_T2_6.1."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    root = tmp_path / "fleet"
    (root / "cpu-templates").mkdir(parents=True)
    for name in ("T2", "SPR_TO_T2_6.1"):
        shutil.copy(data_dir / "firecracker" / f"{name}.json", root / "cpu-templates")
    _git(root, "init", "-q")
    _git(root, "add", ".")
    _git(root, "commit", "-q", "-m", "templates")
    return root


def _states(subject: SubjectReport) -> list[str]:
    """Return a gate subject's regression states (new/unchanged per finding)."""
    return [str(finding.baseline_state) for finding in subject.findings]


def _edit(path: Path, old: str, new: str) -> int:
    """Replace ``old`` (once) in a file and return the line of the change."""
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1
    path.write_text(text.replace(old, new), encoding="utf-8")
    return _line_of(text, old)


# --------------------------------------------------------------------------- the whole fleet


def test_gate_runs_firecracker_templates_on_their_hosts(data_dir: Path) -> None:
    """The example matrix checks each Firecracker x86 template on the hosts it is for."""
    result = run_gate(matrix=MATRIX)
    grid = load_matrix(MATRIX)
    expected = []
    for entry in grid.entries:
        names = dict.fromkeys(i.name for p in entry.profiles for i in match_profiles(p))
        expected += [(entry.path, name) for name in names]
    seen = [(Path(s.template or "").name, s.details["profile"]) for s in result.report.subjects
            if "group" not in s.details]  # the matrix's migration group: test_migration.py
    assert seen == expected
    # T2, C3: SKX 3 + CLX 4 + ICX 4 kernels; T2S: SKX+CLX; T2CL: CLX+ICX; T2A: Milan 4; SPR/GNR.
    assert len(seen) == 2 * (3 + 4 + 4) + (3 + 4) + (4 + 4) + 4 + 1 + 2 + 1 + 2
    # Firecracker's official templates keep the XSETBV invariants on their own hosts
    # (FIRECRACKER.md §3.3): no pair may fail.
    assert result.report.errors == []
    assert result.exit_code() == 0


def test_every_firecracker_template_leaves_shstk_without_xsaves_on_6_18(
    templates: list[str],
) -> None:
    """What shstk-requires-xsaves's fix says of Firecracker's templates holds: each of the
    nine clears XSAVES and leaves SHSTK, so the rule fires for each on a 6.18 host it runs
    on, and on no older host (which does not expose SHSTK)."""
    result = run_gate(templates)
    fired: dict[str, set[str]] = {}
    for subject in result.report.subjects:
        kernel = str(subject.details["profile"]).rsplit("-", 1)[1]
        if any(f.name == "shstk-requires-xsaves" for f in subject.findings):
            fired.setdefault(Path(subject.template or "").name, set()).add(kernel)
    assert fired == {f"{name}.json": {"6.18"} for name in X86_TEMPLATES}
    rule = next(r for r in load_catalogue().rules if r.name == "shstk-requires-xsaves")
    assert "nine x86 templates all clear XSAVES" in " ".join(rule.fix.split())


def test_gate_without_matrix_uses_each_templates_vendor(data_dir: Path) -> None:
    """Without a matrix, T2A runs on AMD profiles only, SPR_TO_T2_6.1 on Intel only."""
    folder = data_dir / "firecracker"
    result = run_gate([folder / "T2A.json", folder / "SPR_TO_T2_6.1.json"])
    by_template: dict[str, set[str]] = {}
    for subject in result.report.subjects:
        by_template.setdefault(Path(subject.template or "").name, set()).add(
            str(subject.details["vendor"])
        )
    assert by_template == {"T2A.json": {AMD}, "SPR_TO_T2_6.1.json": {INTEL}}
    amd = [i.name for i in profile_index() if i.vendor == AMD and i.role == "guest"]
    names = [s.name for s in result.report.subjects if s.template and "T2A" in s.template]
    assert names == amd


@pytest.mark.parametrize("name", X86_TEMPLATES)
def test_template_vendor_of_firecracker_templates(name: str, data_dir: Path) -> None:
    """T2A sets AMD-only 0x80000008 EBX bits; the _6.1 SPR/GNR templates modify 0x1D/0x1E."""
    template = load_template(data_dir / "firecracker" / f"{name}.json")
    expected = {"T2A": AMD, "SPR_TO_T2_6.1": INTEL, "GNR_TO_T2_6.1": INTEL}.get(name)
    assert template_vendor(template) == expected


def _vendor_by_modified_bits(template: Template) -> str | None:
    """Return a template's vendor read from its modifiers one by one (what ``template_vendor``
    reads from the folded masks): AMD's or Intel's own leaves, bits only AMD defines set."""
    vendors = set()
    for leaf, _subleaf in template.entries():
        if leaf in (0x12, 0x14, 0x19, 0x1A, 0x1B, 0x1C, 0x1D, 0x1E, 0x20, 0x23, 0x24):
            vendors.add(INTEL)
        elif 0x80000008 < leaf <= 0x8000FFFF:
            vendors.add(AMD)
    amd_only = {(0x80000001, 0, "ecx"): ~0x121, (0x80000001, 0, "edx"): ~0x2C100800,
                (0x80000008, 0, "ebx"): ~0x200}
    for key, (filter_bits, value_bits) in template.modified_bits().items():
        if filter_bits & value_bits & amd_only.get(key, 0):
            vendors.add(AMD)
    return vendors.pop() if len(vendors) == 1 else None


def test_template_vendor_reads_the_bits_set_in_the_end() -> None:
    """A bit only AMD defines makes a template AMD's where the template sets it in the end,
    whichever modifiers set and clear it before; random templates answer as read modifier by
    modifier."""
    def template(*bitmaps: tuple[str, str]) -> Template:
        return parse_template(json.dumps({"cpuid_modifiers": [
            {"leaf": leaf, "subleaf": "0x0", "flags": 0,
             "modifiers": [{"register": "ebx", "bitmap": bitmap}]}
            for leaf, bitmap in bitmaps]}), "t.json")

    wbnoinvd_and_bit_0 = "0b" + "x" * 22 + "1" + "x" * 8 + "1"
    clear_bit_0 = "0b" + "x" * 31 + "0"
    assert template_vendor(template(("0x80000008", wbnoinvd_and_bit_0))) == AMD
    assert template_vendor(template(("0x80000008", wbnoinvd_and_bit_0),
                                    ("0x80000008", clear_bit_0))) is None
    assert template_vendor(template(("0x1d", clear_bit_0))) == INTEL
    assert template_vendor(template(("0x1d", clear_bit_0),
                                    ("0x80000008", wbnoinvd_and_bit_0))) is None
    chooser = random.Random(5)
    leaves = ["0x1", "0x7", "0x1d", "0x80000001", "0x80000008", "0x8000001f"]
    for _ in range(300):
        made = json.dumps({"cpuid_modifiers": [
            {"leaf": chooser.choice(leaves), "subleaf": "0x0", "flags": 0, "modifiers": [
                {"register": chooser.choice(["eax", "ebx", "ecx", "edx"]),
                 "bitmap": "0b" + "".join(chooser.choice("01xxxx") for _ in range(32))}
                for _ in range(chooser.randrange(3))]}
            for _ in range(chooser.randrange(1, 4))]})
        parsed = parse_template(made, "t.json")
        assert template_vendor(parsed) == _vendor_by_modified_bits(parsed), made


def test_missing_leaf_is_an_error_on_the_template_line(data_dir: Path) -> None:
    """SPR_TO_T2_6.1 on a 5.10 host modifies 0xD.0x11, which KVM there lacks: an error."""
    path = data_dir / "firecracker" / "SPR_TO_T2_6.1.json"
    text = path.read_text(encoding="utf-8")
    leaf_line = _line_of(text, '"leaf": "0xd"', text.index('"subleaf": "0x11"') - 40)
    result = run_gate([path], profiles=["profile:fc-sapphire-rapids-5.10"])
    (subject,) = result.report.subjects
    missing = [f for f in subject.findings if f.name == "template-leaf-missing"]
    assert missing and all(f.severity == "error" for f in missing)
    assert missing[0].location is not None
    assert (missing[0].location.path, missing[0].location.line) == (str(path), leaf_line)
    assert result.exit_code() == 1


def test_official_template_on_the_wrong_kernel_fails_where_declared(data_dir: Path) -> None:
    """GNR_TO_T2_6.1 declared for a 5.10 host fails there: one error naming every entry."""
    template = data_dir / "firecracker" / "GNR_TO_T2_6.1.json"
    result = run_gate([template], profiles=["profile:fc-granite-rapids-5.10",
                                            "profile:fc-granite-rapids-6.1"])
    failing = {s.name: [f for f in s.findings if f.severity == "error"]
               for s in result.report.subjects}
    assert [f.name for f in failing["fc-granite-rapids-5.10"]] == ["template-leaf-missing"]
    assert failing["fc-granite-rapids-6.1"] == []
    (error,) = failing["fc-granite-rapids-5.10"]
    base = load_profile("fc-granite-rapids-5.10")
    template_entries = load_template(template).entries()
    lacking = [f"{leaf:#x}.{sub:#x}" for leaf, sub in template_entries if (leaf, sub) not in base]
    assert len(lacking) >= 2 and all(entry in error.message for entry in lacking)
    assert result.skipped == () and result.exit_code() == 1


def test_a_template_is_not_for_a_host_it_lacks_entries_of_by_inference(data_dir: Path) -> None:
    """Inferred pairs: a 5.10 host lacking the 6.1 template's entries is a skipped pair."""
    result = run_gate([data_dir / "firecracker" / "GNR_TO_T2_6.1.json"],
                      profiles=["profile:fc-granite-rapids-*"])
    assert {s.name for s in result.subjects} == {"fc-granite-rapids-6.1",
                                                 "fc-granite-rapids-6.18"}
    (pair,) = result.skipped
    assert pair.profile == "fc-granite-rapids-5.10" and "not for this host" in pair.reason
    assert "0xd.0x11" in pair.reason
    assert result.errors == [] and result.exit_code() == 0
    assert result.summary()["not_for_host"] == 1
    assert "1 template/profile pair not for their host" in result.summary_text()


# --------------------------------------------------------------------------- regression mode


def test_masking_tiledata_but_not_tilecfg_fails_at_the_changed_line(repo: Path) -> None:
    """A change masking XCR0 bit 18 but not 17 is a new error pointing at that line."""
    template = repo / "cpu-templates" / "T2.json"
    line = _edit(template, T2_XCR0, T2_XCR0_NO_TILEDATA)
    result = run_gate([template], changed_since="HEAD")
    assert result.fail_on == "new" and result.baseline == "HEAD"
    new = [
        (subject.name, finding)
        for subject in result.report.subjects
        for finding, state in zip(subject.findings, _states(subject), strict=True)
        if state == "new"
    ]
    assert new, "the change must introduce findings"
    pair_errors = [(n, f) for n, f in new if f.name == "amx-tile-pair"]
    # Only profiles whose XCR0 has AMX can lose half of it.
    amx = {i.name for i in profile_index() if i.role == "guest"
           and i.name.startswith(("fc-sapphire-rapids-6", "fc-granite-rapids-6"))}
    assert amx <= {name for name, _ in pair_errors}
    for _, finding in pair_errors:
        assert finding.severity == "error"
        assert finding.location is not None
        assert (finding.location.path, finding.location.line) == (str(template), line)
    assert result.exit_code() == 1


def test_unrelated_change_to_the_same_file_passes(repo: Path) -> None:
    """Clearing an unrelated leaf-1 bit adds no finding: the gate passes on --fail-on new."""
    template = repo / "cpu-templates" / "T2.json"
    # 0x80000001 ECX: also clear bit 5 (LZCNT), a bit no XSAVE rule reads.
    _edit(template, '"0bxx0xxxxxxxxxxxxxxxxxxxx0xxxxxxxx"', '"0bxx0xxxxxxxxxxxxxxxxxxxx0xx0xxxxx"')
    result = run_gate([template], changed_since="HEAD")
    assert result.report.subjects, "a changed template is checked"
    for subject in result.report.subjects:
        assert "new" not in _states(subject), subject.name
    assert result.exit_code() == 0
    assert result.exit_code(strict=True) == 0
    any_result = run_gate([template], changed_since="HEAD", fail_on="any")
    assert any_result.exit_code() == (1 if any_result.report.errors else 0)


def test_unmasking_tilecfg_in_spr_template_is_new(repo: Path) -> None:
    """SPR_TO_T2_6.1 changed to keep TILECFG but mask TILEDATA fails on its SPR hosts."""
    template = repo / "cpu-templates" / "SPR_TO_T2_6.1.json"
    line = _edit(template, SPR_XCR0, SPR_XCR0_ONLY_TILEDATA_MASKED)
    result = run_gate([template], changed_since="HEAD", matrix=MATRIX)
    pairs = [s for s in result.report.subjects if "group" not in s.details]
    assert [s.name for s in pairs] == ["fc-sapphire-rapids-6.1", "fc-sapphire-rapids-6.18"]
    for subject in pairs:
        states = dict(zip([f.name for f in subject.findings], _states(subject), strict=True))
        assert states["amx-tile-pair"] == "new"
        finding = next(f for f in subject.findings if f.name == "amx-tile-pair")
        assert finding.location == Location(str(template), line, finding.location.column)  # type: ignore[union-attr]
    assert result.exit_code() == 1


def test_unchanged_templates_are_still_checked_and_never_fail_on_new(repo: Path) -> None:
    """With nothing changed since HEAD every template is checked; no finding is new."""
    paths = sorted((repo / "cpu-templates").glob("*.json"))
    result = run_gate(paths, changed_since="HEAD")
    assert {s.template for s in result.subjects} == {str(p) for p in paths}
    assert result.summary()["subjects"] == len(result.subjects) > 0
    for subject in result.subjects:
        assert set(_states(subject)) <= {"unchanged"}
    assert result.exit_code() == 0


def test_changes_since_an_older_revision_count(repo: Path) -> None:
    """A change committed after REV is compared with REV, not with HEAD."""
    template = repo / "cpu-templates" / "T2.json"
    _edit(template, T2_XCR0, T2_XCR0_NO_TILEDATA)
    _git(repo, "commit", "-q", "-am", "mask TILEDATA")
    since_head = run_gate([template], changed_since="HEAD")
    assert since_head.subjects and since_head.errors  # still checked: the error is there
    assert since_head.exit_code() == 0  # but the change since HEAD did not introduce it
    assert run_gate([template], changed_since="HEAD", fail_on="any").exit_code() == 1
    assert run_gate([template], changed_since="HEAD~1").exit_code() == 1


def test_new_template_file_has_only_new_findings(repo: Path, data_dir: Path) -> None:
    """A template REV lacks is changed, and all its findings are new."""
    added = repo / "cpu-templates" / "SPR_TO_T2_6.1-copy.json"
    shutil.copy(data_dir / "firecracker" / "SPR_TO_T2_6.1.json", added)
    result = run_gate([added], changed_since="HEAD",
                      profiles=["profile:fc-sapphire-rapids-5.10"])
    (subject,) = result.report.subjects
    assert subject.findings
    assert set(_states(subject)) == {"new"}
    assert result.exit_code() == 1


def test_bad_revision_and_untracked_folder_are_input_errors(repo: Path, tmp_path: Path,
                                                            data_dir: Path) -> None:
    """An unknown revision, or a template outside any git work tree, is an InputError."""
    template = repo / "cpu-templates" / "T2.json"
    with pytest.raises(InputError, match="expected a git revision"):
        run_gate([template], changed_since="no-such-branch")
    loose = tmp_path / "loose" / "T2.json"
    loose.parent.mkdir()
    shutil.copy(data_dir / "firecracker" / "T2.json", loose)
    env_dir = os.environ.get("GIT_CEILING_DIRECTORIES")
    os.environ["GIT_CEILING_DIRECTORIES"] = str(tmp_path)
    try:
        with pytest.raises(InputError, match="inside a git work tree"):
            run_gate([loose], changed_since="HEAD")
    finally:
        if env_dir is None:
            os.environ.pop("GIT_CEILING_DIRECTORIES")
        else:
            os.environ["GIT_CEILING_DIRECTORIES"] = env_dir


def test_regression_gate_in_every_format(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The TILEDATA change shows at its line in sarif, junit, github, json and text."""
    monkeypatch.chdir(repo)
    template = Path("cpu-templates") / "T2.json"
    line = _edit(template, T2_XCR0, T2_XCR0_NO_TILEDATA)
    report = run_gate([template], changed_since="HEAD",
                      profiles=["profile:fc-sapphire-rapids-6.1", "profile:fc-skylake-5.10"]).report

    sarif = json.loads(render(report, "sarif"))
    new = [r for r in sarif["runs"][0]["results"]
           if r["baselineState"] == "new" and r["level"] == "error"]
    assert [r["properties"]["ruleName"] for r in new] == ["amx-tile-pair"]
    physical = new[0]["locations"][0]["physicalLocation"]
    assert physical["artifactLocation"]["uri"] == "cpu-templates/T2.json"
    assert physical["region"]["startLine"] == line

    junit = ET.fromstring(render(report, "junit"))
    cases = junit.findall("testsuite/testcase")
    assert [c.get("name") for c in cases] == ["fc-sapphire-rapids-6.1", "fc-skylake-5.10"]
    failure = cases[0].find("failure")
    assert failure is not None and f"cpu-templates/T2.json:{line}:" in (failure.text or "")
    assert cases[1].find("failure") is None

    github = render(report, "github")
    assert re.search(
        rf"^::error file=cpu-templates/T2.json,line={line},col=\d+,title=XS\d+ amx-tile-pair "
        r"\(fc-sapphire-rapids-6.1\)::", github, re.M)

    document = json.loads(render(report, "json"))
    assert "baseline_state" not in document["subjects"][0]["details"]
    states = {f["name"]: f["baseline_state"] for f in document["subjects"][0]["findings"]}
    assert states["amx-tile-pair"] == "new"
    assert "amx-tile-pair (new):" in render(report, "text")
    assert f"cpu-templates/T2.json:{line}" in render(report, "text")


# --------------------------------------------------------------------------- inputs


def test_matrix_errors_name_the_line(tmp_path: Path) -> None:
    """Unknown keys, missing profiles/vendor and bad vendors are InputErrors with a line."""
    bad = tmp_path / "m.toml"
    bad.write_text('[[template]]\npath = "T2.json"\nprofiles = ["fc-*"]\n\n'
                   '[[template]]\npath = "C3.json"\nhosts = ["x"]\n', encoding="utf-8")
    with pytest.raises(InputError) as caught:
        load_matrix(bad)
    assert caught.value.location == Location(str(bad), 5)
    assert "found 'hosts'" in str(caught.value)
    bad.write_text('[[template]]\npath = "T2.json"\nvendor = "via"\n', encoding="utf-8")
    with pytest.raises(InputError, match='vendor = "intel" or "amd"'):
        load_matrix(bad)
    bad.write_text('[[template]]\npath = "T2.json"\n', encoding="utf-8")
    with pytest.raises(InputError, match="profiles, vendor, or both"):
        load_matrix(bad)
    bad.write_text("[[template]\n", encoding="utf-8")
    with pytest.raises(InputError) as caught:
        load_matrix(bad)
    assert caught.value.location.line == 1


def test_matrix_profile_pattern_must_match(tmp_path: Path, data_dir: Path) -> None:
    """A matrix profile pattern that matches no profile is an InputError at its entry."""
    matrix = tmp_path / "m.toml"
    matrix.write_text('[[template]]\npath = "T2.json"\nprofiles = ["fc-pentium-*"]\n',
                      encoding="utf-8")
    with pytest.raises(InputError, match="'fc-pentium-\\*' to match one of the profiles"):
        run_gate([data_dir / "firecracker" / "T2.json"], matrix=matrix)


def test_matrix_vendor_keeps_that_vendors_profiles(tmp_path: Path, data_dir: Path) -> None:
    """vendor = "amd" runs a template on every AMD profile, whatever it modifies."""
    matrix = tmp_path / "m.toml"
    matrix.write_text('[[template]]\npath = "*.json"\nvendor = "amd"\n', encoding="utf-8")
    result = run_gate([data_dir / "firecracker" / "T2.json"], matrix=matrix)
    assert [s.name for s in result.report.subjects] == [
        i.name for i in profile_index() if i.vendor == AMD
    ]


def test_profiles_from_files_folders_and_patterns(tmp_path: Path, data_dir: Path) -> None:
    """--profiles takes profile:PATTERN, CPUID files (named by stem) and folders of JSON."""
    fingerprint = data_dir / "firecracker" / "fingerprint_AMD_GENOA_6.18host.json"
    chosen = resolve_profiles(["profile:fc-milan-6.*", str(fingerprint)])
    assert [p.name for p in chosen] == [
        "fc-milan-6.1", "fc-milan-6.18", "fingerprint_AMD_GENOA_6.18host"
    ]
    folder = tmp_path / "fleet"
    folder.mkdir()
    shutil.copy(fingerprint, folder / "genoa.json")
    assert [p.name for p in resolve_profiles([str(folder)])] == ["genoa"]
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(fingerprint.with_name("fingerprint_AMD_GENOA_5.10host.json"), other / "genoa.json")
    with pytest.raises(InputError, match="unique"):
        resolve_profiles([str(folder), str(other / "genoa.json")])
    with pytest.raises(InputError, match="expected a bundled profile name"):
        resolve_profiles(["profile:fc-pentium"])
    with pytest.raises(InputError, match="existing CPUID file or folder"):
        resolve_profiles([str(tmp_path / "absent")])


def test_gate_needs_templates_or_a_matrix() -> None:
    """A gate with neither template files nor a matrix is an InputError."""
    with pytest.raises(InputError, match="template files or a --matrix"):
        run_gate([])


def test_exit_code_follows_fail_on_and_strict() -> None:
    """GateResult fails on counted errors; strict adds warnings; old findings skip with new."""
    def result(severity: Severity, state: str, fail_on: FailOn) -> GateResult:
        finding = Finding("XS0000", "x", severity, "m", "c", "f",
                          baseline_state="new" if state == "new" else "unchanged")
        subject = SubjectReport("p", "s", "t", [finding], {"fail_on": fail_on})
        return GateResult((subject,), fail_on=fail_on, baseline="HEAD")

    assert result("error", "new", "new").exit_code() == 1
    assert result("error", "unchanged", "new").exit_code() == 0
    assert result("error", "unchanged", "any").exit_code() == 1
    assert result("warning", "new", "new").exit_code() == 0
    assert result("warning", "new", "new").exit_code(strict=True) == 1
    assert result("warning", "unchanged", "new").exit_code(strict=True) == 0
    # A GateResult is a Report (every format renders it); .report counts every finding.
    old_error = result("error", "unchanged", "new")
    assert isinstance(old_error, Report) and old_error.report.exit_code() == 1


def test_command_line_gate_follows_fail_on(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`xstate-check gate --changed-since` exits 1 on a new error, 0 on an unrelated change."""
    template = repo / "cpu-templates" / "T2.json"
    pristine = template.read_text(encoding="utf-8")
    line = _edit(template, T2_XCR0, T2_XCR0_NO_TILEDATA)
    assert main(["gate", str(template), "--changed-since", "HEAD", "--format", "sarif"]) == 1
    results = json.loads(capsys.readouterr().out)["runs"][0]["results"]
    assert any(r["baselineState"] == "new" and r["level"] == "error"
               and r["locations"][0]["physicalLocation"]["region"]["startLine"] == line
               for r in results)
    template.write_text(pristine, encoding="utf-8")
    _edit(template, '"0bxx0xxxxxxxxxxxxxxxxxxxx0xxxxxxxx"', '"0bxx0xxxxxxxxxxxxxxxxxxxx0xx0xxxxx"')
    assert main(["gate", str(template), "--changed-since", "HEAD", "--format", "junit"]) == 0
    assert ET.fromstring(capsys.readouterr().out).get("failures") == "0"


def test_pre_commit_hooks_run_as_declared(repo: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """Each hook's entry in .pre-commit-hooks.yaml runs; the changes hook fails a new error."""
    text = (REPO / ".pre-commit-hooks.yaml").read_text(encoding="utf-8")
    entries = dict(re.findall(r"^- id: (\S+)\n(?:  .*\n)*?  entry: (.+)$", text, re.M))
    assert set(entries) == {"xstate-check-gate", "xstate-check-gate-changes"}
    files = re.findall(r"^  files: (.+)$", text, re.M)
    assert files and all(re.search(pattern, "cpu-templates/T2.json") for pattern in files)
    monkeypatch.chdir(repo)
    template = "cpu-templates/T2.json"
    for entry in entries.values():
        program, *options = entry.split()
        assert program == "xstate-check"
        assert main([*options, template]) == 0, entry
    _edit(repo / template, T2_XCR0, T2_XCR0_NO_TILEDATA)
    options = entries["xstate-check-gate-changes"].split()[1:]
    assert main([*options, "--format", "github", template]) == 1
    assert "::error file=cpu-templates/T2.json" in capsys.readouterr().out


def test_example_templates_pass_and_the_broken_one_fails_where_amx_is() -> None:
    """examples/templates pass the bundled fleet; masking TILEDATA alone fails on AMX hosts."""
    good = run_gate(sorted((REPO / "examples" / "templates").glob("*.json")))
    assert good.subjects and good.errors == [] and good.exit_code() == 0
    path = REPO / "examples" / "broken" / "amx-half-masked.json"
    line = _line_of(path.read_text(encoding="utf-8"), '"0bxxxxxxxxxxxxx0x')  # 0xD.0 EAX
    broken = run_gate([path])
    failing = {s.name for s in broken.subjects if any(f.severity == "error" for f in s.findings)}
    with_tiledata = {
        p.name for p in resolve_profiles(["builtin"])
        if p.cpuid.get(0xD, 0).eax >> 18 & 1 and p.role == "guest"
    }
    assert failing == with_tiledata and len(with_tiledata) >= 4
    for subject in broken.subjects:
        for finding in subject.findings:
            if finding.severity == "error":
                assert finding.name == "amx-tile-pair"
                assert finding.location is not None and finding.location.line == line


# --------------------------------------------------------------------------- pairing

FIRECRACKER_X86 = ("T2", "T2S", "T2CL", "T2A", "C3", "SPR_TO_T2_5.10", "SPR_TO_T2_6.1",
                   "GNR_TO_T2_5.10", "GNR_TO_T2_6.1")


def test_default_gate_over_firecrackers_templates_has_no_error(data_dir: Path) -> None:
    """Firecracker's nine x86 templates on the bundled profiles, no matrix: exit 0."""
    paths = [data_dir / "firecracker" / f"{name}.json" for name in FIRECRACKER_X86]
    result = run_gate(paths)
    assert result.errors == [] and result.exit_code() == 0
    checked = {Path(s.template or "").stem for s in result.subjects}
    assert checked == set(FIRECRACKER_X86)
    # Bare-metal CPU tables are not a VMM's base table: never paired by inference.
    bare = {i.name for i in profile_index() if i.role == "cpu"}
    assert not bare & {s.name for s in result.subjects}
    # The kernel variants: SPR_TO_T2_6.1 is not for the 5.10 Sapphire Rapids host.
    assert any(p.template.endswith("SPR_TO_T2_6.1.json") and p.profile == "fc-sapphire-rapids-5.10"
               for p in result.skipped)
    assert result.summary()["not_for_host"] == len(result.skipped) > 0


def test_masking_tiledata_only_fails_on_the_amx_profiles_only(
    data_dir: Path, tmp_path: Path
) -> None:
    """A template masking TILEDATA but not TILECFG fails with amx-tile-pair where AMX is."""
    paths = [data_dir / "firecracker" / f"{name}.json" for name in FIRECRACKER_X86]
    careless = tmp_path / "careless.json"
    careless.write_text(json.dumps({"cpuid_modifiers": [{
        "leaf": "0xd", "subleaf": "0x0", "flags": 1,
        "modifiers": [{"register": "eax", "bitmap": "0bxxxxxxxxxxxxx0xxxxxxxxxxxxxxxxxx"}],
    }]}), encoding="utf-8")
    result = run_gate([*paths, careless])
    failing = {(Path(s.template or "").name, s.name) for s in result.subjects
               for f in s.findings if f.severity == "error"}
    amx_guests = {i.name for i in profile_index()
                  if i.role == "guest" and load_profile(i.name).get(0xD, 0).eax >> 17 & 3 == 3}
    assert failing == {("careless.json", name) for name in amx_guests}
    assert {f.name for f in result.errors} == {"amx-tile-pair"}
    assert result.exit_code() == 1


def test_a_bare_metal_profile_runs_when_named(data_dir: Path) -> None:
    """A bare-metal table named exactly is a declared pair: the template runs on it."""
    result = run_gate([data_dir / "firecracker" / "T2A.json"],
                      profiles=["builtin", "profile:zen4-genoa-epyc-9124"])
    assert "zen4-genoa-epyc-9124" in {s.name for s in result.subjects}
    assert "zen3-milan-epyc-7713" not in {s.name for s in result.subjects}


def test_a_gate_that_checks_nothing_is_an_input_error(data_dir: Path, tmp_path: Path) -> None:
    """A template no profile fits exits 2 saying why, instead of passing on nothing."""
    template = data_dir / "firecracker" / "SPR_TO_T2_6.1.json"
    with pytest.raises(InputError) as caught:
        run_gate([template], profiles=["profile:fc-milan-*", "profile:fc-skylake-*"])
    text = caught.value.render()
    assert str(template) in text
    assert "of another vendor" in text and "fc-milan-6.1" not in text  # AMD: by vendor
    nowhere = tmp_path / "nowhere.json"
    nowhere.write_text(json.dumps({"cpuid_modifiers": [{
        "leaf": "0x7fffffff", "subleaf": "0x0", "flags": 0,
        "modifiers": [{"register": "eax", "bitmap": "0b1"}],
    }]}), encoding="utf-8")
    with pytest.raises(InputError) as caught:
        run_gate([nowhere])
    assert "lacking entries the template modifies" in caught.value.render()


def test_nothing_checked_exits_2_through_the_command_line(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The command line turns a gate that checks nothing into exit 2 and one message."""
    template = str(data_dir / "firecracker" / "T2A.json")
    assert main(["gate", template, "--profiles", "profile:fc-skylake-*"]) == 2
    err = capsys.readouterr().err
    assert "expected at least one profile to check this template on" in err


def test_text_folds_a_templates_pairs_lacking_the_same_entries(templates: list[str]) -> None:
    """Text writes one note per template and set of entries its profiles lack, with the
    profiles on the next line (a pair alone keeps its own line); JSON keeps every pair."""
    result = run_gate(templates)
    text = render(result, "text")
    groups: dict[tuple[str, str], list[str]] = {}
    for pair in result.skipped:
        groups.setdefault((pair.template, pair.lacking), []).append(pair.profile)
    notes = [line for line in text.splitlines() if "not checked" in line]
    assert len(notes) == len(groups) < len(result.skipped)
    lines = text.splitlines()
    for (template, lacking), profiles in groups.items():
        if len(profiles) == 1:
            assert f"{template} on {profiles[0]}: not checked: not for this host: the template " \
                   f"modifies CPUID {lacking} (leaf.subleaf), which {profiles[0]} lacks" in lines
            continue
        line = (f"{template}: not checked on {len(profiles)} profiles, not for their host: "
                f"the template modifies CPUID {lacking} (leaf.subleaf), which they lack")
        assert lines[lines.index(line) + 1] == "  on " + ", ".join(profiles)
    document = json.loads(render(result, "json"))
    assert document["not_checked"] == [pair.to_json() for pair in result.skipped]
    assert f"{len(result.skipped)} template/profile pairs not for their host" in text


def test_pairs_not_for_their_host_are_listed_in_every_report(data_dir: Path) -> None:
    """Text lists each skipped pair; JSON has them under not_checked; JUnit skips them."""
    result = run_gate([data_dir / "firecracker" / "SPR_TO_T2_6.1.json"],
                      profiles=["profile:fc-sapphire-rapids-*"])
    (pair,) = result.skipped
    text = render(result, "text")
    assert f"{pair.template} on fc-sapphire-rapids-5.10: not checked: not for this host" in text
    document = json.loads(render(result, "json"))
    assert document["not_checked"] == [pair.to_json()]
    assert document["summary"]["not_for_host"] == 1
    junit = ET.fromstring(render(result, "junit"))
    skipped = junit.findall(".//testcase/skipped")
    assert len(skipped) == 1 and junit.get("skipped") == "1"
    assert "not for this host" in (skipped[0].get("message") or "")
