"""Migration groups in the gate: every ordered pair of members restores and sees one view."""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from xstate_check.errors import InputError
from xstate_check.gate import load_matrix, run_gate
from xstate_check.migration import load_groups

REPO = Path(__file__).resolve().parents[1]
MATRIX = REPO / "examples" / "firecracker-matrix.toml"
#: T2CL's 0xD.0 EAX bitmap, and the same with PKRU (bit 9) left as it is.
T2CL_XCR0 = '"0bxxxxxxxxxxxxxxxxxxxxxx0x00000xxx"'
T2CL_XCR0_KEEP_PKRU = '"0bxxxxxxxxxxxxxxxxxxxxxxxx00000xxx"'


def _group_subjects(result: object) -> list:  # type: ignore[type-arg]
    return [s for s in result.subjects if "group" in s.details]  # type: ignore[attr-defined]


def test_t2_pool_keeps_its_promise(data_dir: Path) -> None:
    """The example T2 pool: 5 members, 20 ordered pairs, each restorable with one view."""
    result = run_gate(matrix=MATRIX)
    pairs = _group_subjects(result)
    assert len(pairs) == 5 * 4
    assert len({s.name for s in pairs}) == 20
    assert all(s.details["group"] == "t2-pool" and s.details["restorable"] for s in pairs)
    assert [f for s in pairs for f in s.findings if f.severity != "info"] == []
    assert "group t2-pool: fc-sapphire-rapids-6.1 + SPR_TO_T2_6.1.json -> fc-ice-lake-6.1 " \
           "+ T2.json" in {s.name for s in pairs}


def _matrix(tmp_path: Path, templates: Path, body: str) -> Path:
    path = tmp_path / "matrix.toml"
    path.write_text(f'templates_dir = "{templates}"\n\n{body}')
    return path


MIXED = """[[group]]
name = "mixed"
members = [
  { template = "T2S.json", profiles = ["fc-skylake-6.1"] },
  { profiles = ["fc-cascade-lake-6.1"] },
  { template = "T2CL.json", profiles = ["fc-ice-lake-6.1"] },
]
"""


def test_mixed_group_fails_and_points_at_template_lines(data_dir: Path, tmp_path: Path) -> None:
    """A bare Cascade Lake guest (MPX, AVX-512) cannot go to Ice Lake under T2CL; the
    templates' view differences are warnings at the modifier lines that make them."""
    matrix = _matrix(tmp_path, data_dir / "firecracker", MIXED)
    result = run_gate(matrix=matrix)
    pairs = {s.name: s for s in _group_subjects(result)}
    assert len(pairs) == 6
    bare = pairs["group mixed: fc-cascade-lake-6.1 -> fc-ice-lake-6.1 + T2CL.json"]
    assert not bare.details["restorable"]
    assert [f.name for f in bare.findings if f.severity == "error"] == [
        "restore-xcr0-supported"]
    assert "bndregs|bndcsr" in bare.findings[0].message or any(
        "bndregs|bndcsr" in f.message for f in bare.findings)
    assert result.exit_code() == 1

    moved = pairs["group mixed: fc-skylake-6.1 + T2S.json -> fc-cascade-lake-6.1"]
    assert moved.details["restorable"]
    differences = [f for f in moved.findings if f.name == "group-view-equal"]
    assert {f.message.split("CPUID ")[1].split(",")[0] for f in differences} == {
        "leaf 0x7 subleaf 0x0", "leaf 0xd subleaf 0x0", "leaf 0xd subleaf 0x1"}
    lines = (data_dir / "firecracker" / "T2S.json").read_text().splitlines()
    for finding in differences:
        assert finding.location is not None and finding.location.path.endswith("T2S.json")
        assert '"bitmap"' in lines[finding.location.line - 1]
    # Pairs between the two templates of the T2 family keep one view.
    assert pairs["group mixed: fc-skylake-6.1 + T2S.json -> fc-ice-lake-6.1 + T2CL.json"
                 ].findings == ()


@pytest.mark.parametrize(("body", "expected"), [
    ('[[group]]\nname = "g"\nmembers = [{ profiles = ["fc-skylake-6.1"] }]\n',
     "two members or more"),
    ('[[group]]\nname = "g"\ncolour = "red"\nmembers = []\n', "only name and members"),
    ('[[group]]\nname = "g"\nmembers = [{ profiles = ["nope-*"] }, '
     '{ profiles = ["fc-ice-lake-6.1"] }]\n', r"'nope-\*'"),
    ('[[group]]\nname = "g"\nmembers = [{ template = 3, profiles = ["fc-ice-lake-6.1"] }]\n',
     "template ="),
    ('[[group]]\nname = "g"\nmembers = [{ profiles = ["a"] }]\n\n[[group]]\nname = "g"\n'
     'members = [{ profiles = ["b"] }]\n', "named twice"),
])
def test_group_errors_name_the_line(tmp_path: Path, body: str, expected: str) -> None:
    """A malformed group is an input error at its [[group]] line."""
    matrix = _matrix(tmp_path, tmp_path, body)
    with pytest.raises(InputError, match=expected) as caught:
        run_gate(matrix=matrix, profiles=["builtin"])
    assert caught.value.location.path == str(matrix)
    assert caught.value.location.line >= 3


def test_a_matrix_needs_templates_or_groups(tmp_path: Path) -> None:
    """Neither [[template]] nor [[group]]: the error names both."""
    matrix = _matrix(tmp_path, tmp_path, "")
    with pytest.raises(InputError, match=r"\[\[group\]\]"):
        load_matrix(matrix)


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c",
                    "user.email=t@example.invalid", "-c", "commit.gpgsign=false", *args],
                   capture_output=True, check=True)


@pytest.fixture
def pool_repo(tmp_path: Path, data_dir: Path) -> Path:
    """A git repository with T2S and T2CL and a matrix grouping Skylake and Ice Lake."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    root = tmp_path / "pool"
    root.mkdir()
    for name in ("T2S", "T2CL"):
        shutil.copy(data_dir / "firecracker" / f"{name}.json", root)
    (root / "matrix.toml").write_text(
        '[[group]]\nname = "pool"\nmembers = [\n'
        '  { template = "T2S.json", profiles = ["fc-skylake-6.1"] },\n'
        '  { template = "T2CL.json", profiles = ["fc-ice-lake-6.1"] },\n]\n')
    _git(root, "init", "-q")
    _git(root, "add", ".")
    _git(root, "commit", "-q", "-m", "pool")
    return root


def test_group_regression_marks_what_the_change_introduced(pool_repo: Path) -> None:
    """Unchanged templates: every group finding unchanged; a template that stops clearing
    PKRU makes a new view difference, at the changed line, and fails --strict."""
    matrix = pool_repo / "matrix.toml"
    clean = run_gate(matrix=matrix, changed_since="HEAD")
    assert [f for s in _group_subjects(clean) for f in s.findings] == []
    t2cl = pool_repo / "T2CL.json"
    text = t2cl.read_text()
    assert T2CL_XCR0 in text
    t2cl.write_text(text.replace(T2CL_XCR0, T2CL_XCR0_KEEP_PKRU, 1))
    line = text.count("\n", 0, text.index(T2CL_XCR0)) + 1
    result = run_gate(matrix=matrix, changed_since="HEAD")
    pairs = {s.name: s for s in _group_subjects(result)}
    moved = pairs["group pool: fc-ice-lake-6.1 + T2CL.json -> fc-skylake-6.1 + T2S.json"]
    (finding,) = [f for f in moved.findings if f.name == "group-view-equal"]
    assert "leaf 0xd subleaf 0x0" in finding.message and "0x00000200" in finding.message
    assert finding.location is not None and finding.location.line == line
    assert [f.baseline_state for f in moved.findings] == ["new"] * len(moved.findings)
    assert result.exit_code(strict=True) == 1 and result.exit_code() == 0
    _git(pool_repo, "commit", "-q", "-am", "keep PKRU")
    again = run_gate(matrix=matrix, changed_since="HEAD", fail_on="new")
    assert all(f.baseline_state == "unchanged" for s in _group_subjects(again)
               for f in s.findings)
    assert again.exit_code(strict=True) == 0


def test_configuration_file_can_name_a_group(data_dir: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """A [[group]] in .xstate-check.toml is the gate's group when no matrix is given."""
    from xstate_check.cli import main

    (tmp_path / ".xstate-check.toml").write_text(
        f'templates-dir = "{data_dir / "firecracker"}"\n\n' + MIXED)
    monkeypatch.chdir(tmp_path)
    code = main(["gate", "--format", "json"])
    out = capsys.readouterr().out
    assert code == 1  # the bare Cascade Lake guest cannot go to Ice Lake
    assert out.count('"group": "mixed"') == 6


class _CountedText(str):
    """A matrix text that counts how often it is split into lines."""

    splits = 0

    def splitlines(self, keepends: bool = False) -> list[str]:
        _CountedText.splits += 1
        return str.splitlines(self, keepends)


def test_many_groups_read_the_text_once(tmp_path: Path) -> None:
    """The line of every [[group]] comes from one reading of the matrix text, not one per
    group (3,000 groups took 9 s), and each group still names its own header's line."""
    group = ('[[group]]\nname = "g{}"\nmembers = [{{ profiles = ["p"] }}, '
             '{{ profiles = ["q"] }}]\n')
    text = 'templates_dir = "."\n' + "".join(group.format(number) for number in range(2_000))
    raw = tomllib.loads(text)["group"]
    _CountedText.splits = 0
    groups = load_groups(raw, _CountedText(text), "m.toml", tmp_path)
    assert _CountedText.splits == 1
    lines = text.splitlines()
    assert len(groups) == 2_000
    assert [lines[g.location.line - 1] for g in groups] == ["[[group]]"] * 2_000
    assert groups[-1].location.line == len(lines) - 2
