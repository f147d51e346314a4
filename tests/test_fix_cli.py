"""``gate --fix``/``--diff``/``--unsafe-fixes`` and ``check --template T --fix``, as a user
runs them: a process, files on disk, exit codes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import X86_TEMPLATES
from xstate_check.template import load_template

REPO = Path(__file__).resolve().parents[1]
AMX_HALF = REPO / "examples" / "broken" / "amx-half-masked.json"
NO_AVX512 = REPO / "examples" / "templates" / "no-avx512.json"
NO_AMX = REPO / "examples" / "templates" / "no-amx.json"
# The AVX-512 components are bits 5-7 of 0xD.0 EAX: the last 8 characters are bits 7..0.
AVX512_ALL = '"0bxxxxxxxxxxxxxxxxxxxxxxxx000xxxxx"'
AVX512_TWO = '"0bxxxxxxxxxxxxxxxxxxxxxxxxx00xxxxx"'


def run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``xstate-check ARGS`` in a fresh interpreter."""
    return subprocess.run([sys.executable, "-m", "xstate_check", *map(str, args)],
                          capture_output=True, text=True, check=False, cwd=cwd,
                          env={**os.environ, "NO_COLOR": "1"})


def changed_lines(before: str, after: str) -> list[tuple[str, str]]:
    """Return the (old, new) pairs of lines that differ; the line count must not change."""
    old, new = before.split("\n"), after.split("\n")
    assert len(old) == len(new), "the fix added or removed lines"
    return [(a, b) for a, b in zip(old, new, strict=True) if a != b]


def bitmap_of(line: str) -> str:
    """Return the bitmap string of a '"bitmap": "0b…"' line."""
    return line.split('"bitmap": ')[1].strip().rstrip(",").strip('"')


@pytest.fixture
def amx_half(tmp_path: Path) -> Path:
    """A template that masks TILEDATA (0xD.0 EAX bit 18) but not TILECFG (bit 17)."""
    path = tmp_path / "amx-half.json"
    shutil.copy(AMX_HALF, path)
    return path


@pytest.fixture
def avx512_two(tmp_path: Path) -> Path:
    """A template that masks AVX-512 as no-avx512.json does, but two components of three."""
    text = NO_AVX512.read_text()
    assert text.count(AVX512_ALL) == 1
    path = tmp_path / "avx512-two.json"
    path.write_text(text.replace(AVX512_ALL, AVX512_TWO))
    return path


@pytest.mark.parametrize(("fixture", "bits"), [("amx_half", (17,)), ("avx512_two", (7,))])
def test_gate_fix_rewrites_the_template_so_that_the_gate_passes(
        request: pytest.FixtureRequest, fixture: str, bits: tuple[int, ...]) -> None:
    """The gate fails over the bundled profiles, --fix rewrites the template, the gate then
    passes; only the leaf 0xD bitmap changed, in the characters of the missing bits, and the
    file keeps its layout and stays a template Firecracker accepts."""
    path: Path = request.getfixturevalue(fixture)
    before = path.read_text()
    assert run("gate", path).returncode == 1
    fixed = run("gate", path, "--fix")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert "remaining" in fixed.stdout and ", 0 remaining)." in fixed.stdout
    after = path.read_text()
    [(old, new)] = changed_lines(before, after)
    assert '"bitmap"' in old
    old_bits, new_bits = bitmap_of(old), bitmap_of(new)
    differing = [index for index, (a, b) in enumerate(zip(old_bits, new_bits, strict=True))
                 if a != b]
    # Character i of "0b" + 32 holds bit 33 - i.
    assert sorted(33 - index for index in differing) == list(bits)
    assert all(new_bits[index] == "0" for index in differing)
    template = load_template(path)
    (leaf_modifier,) = [m for m in template.cpuid_modifiers if m.leaf == 0xD]
    (register,) = leaf_modifier.modifiers
    assert register.location.line == before[:before.index(old)].count("\n") + 1
    assert run("gate", path).returncode == 0
    again = run("gate", path, "--fix")
    assert again.returncode == 0 and path.read_text() == after


def test_fix_on_a_declared_profile_clears_the_leaf_7_flags_the_rule_names(
        amx_half: Path) -> None:
    """On Sapphire Rapids alone, the AMX fix clears TILECFG and, as amx-tile-pair's fix
    says, AMX_TILE, AMX_BF16 and AMX_INT8: a leaf 7 modifier shaped like the leaf 0xD one is
    added, and nothing else changes."""
    before = amx_half.read_text()
    fixed = run("gate", "--profiles", "profile:fc-sapphire-rapids-6.1", amx_half, "--fix")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    after = amx_half.read_text()
    template = load_template(amx_half)
    entries = [(m.leaf, m.subleaf) for m in template.cpuid_modifiers]
    assert entries == [(7, 0), (0xD, 0)]
    leaf7 = template.cpuid_modifiers[0]
    assert leaf7.flags == 1
    [(register)] = leaf7.modifiers
    assert register.register == "edx"
    assert (register.filter, register.value) == ((1 << 22) | (1 << 24) | (1 << 25), 0)
    # The inserted text copies the existing modifier's indentation; the rest is as it was,
    # but for TILECFG in the leaf 0xD bitmap.
    start = after.index('{\n      "leaf": "0x7"')
    end = after.index('{\n      "leaf": "0xd"')
    inserted = after[start:end]
    assert inserted.startswith('{\n      "leaf": "0x7",\n      "subleaf": "0x0",\n      '
                               '"flags": 1,\n      "modifiers": [\n        {\n          '
                               '"register": "edx",\n')
    assert after.replace(inserted, "") == before.replace(
        "0bxxxxxxxxxxxxx0xxxxxxxxxxxxxxxxxx", "0bxxxxxxxxxxxxx00xxxxxxxxxxxxxxxxx")


def test_a_template_without_errors_is_left_byte_for_byte(tmp_path: Path) -> None:
    """--fix writes nothing where the gate finds no error: same bytes, same file."""
    path = tmp_path / "no-amx.json"
    shutil.copy(NO_AMX, path)
    data, inode = path.read_bytes(), path.stat().st_ino
    done = run("gate", path, "--fix")
    assert done.returncode == 0
    assert path.read_bytes() == data and path.stat().st_ino == inode
    diff = run("gate", path, "--diff")
    assert (diff.returncode, diff.stdout) == (0, "")


def test_firecrackers_templates_are_left_byte_for_byte(tmp_path: Path, data_dir: Path) -> None:
    """Firecracker's x86 templates pass the gate, so --fix leaves every byte of them."""
    paths = []
    for name in X86_TEMPLATES:
        path = tmp_path / f"{name}.json"
        shutil.copy(data_dir / "firecracker" / f"{name}.json", path)
        paths.append(path)
    before = {path: path.read_bytes() for path in paths}
    done = run("gate", *paths, "--fix")
    assert done.returncode == 0, done.stdout + done.stderr
    assert {path: path.read_bytes() for path in paths} == before
    assert run("gate", *paths, "--diff").stdout == ""


def test_diff_prints_a_unified_diff_and_writes_nothing(amx_half: Path) -> None:
    """--diff: the change on stdout as ruff prints it, exit 1, the file untouched; the
    summary goes to stderr."""
    before = amx_half.read_bytes()
    done = run("gate", amx_half.name, "--diff", cwd=amx_half.parent)
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert lines[:2] == ["--- a/amx-half.json", "+++ b/amx-half.json"]
    assert lines[2].startswith("@@ ")
    assert [line for line in lines if line[:1] in "+-" and line[:3] not in ("---", "+++")] == [
        '-          "bitmap": "0bxxxxxxxxxxxxx0xxxxxxxxxxxxxxxxxx"',
        '+          "bitmap": "0bxxxxxxxxxxxxx00xxxxxxxxxxxxxxxxx"',
    ]
    assert "Would fix 4 errors." in done.stderr
    assert amx_half.read_bytes() == before
    # The diff applies with patch(1) and gives what --fix writes.
    if shutil.which("patch"):
        copy = amx_half.with_name("copy.json")
        shutil.copy(amx_half, copy)
        subprocess.run(["patch", "-s", str(copy)], input=done.stdout, text=True, check=True)
        assert run("gate", amx_half, "--fix").returncode == 0
        assert copy.read_text() == amx_half.read_text()


def test_fix_exits_1_when_findings_remain_and_hints_at_unsafe_fixes(tmp_path: Path) -> None:
    """A template that masks XFD on Sapphire Rapids 6.1 (AMX without XFD) has only unsafe
    fixes: --fix changes nothing and exits 1, saying --unsafe-fixes would help; with it, the
    template's clearing of XFD is dropped and the run exits 0."""
    path = tmp_path / "no-xfd.json"
    path.write_text(json.dumps({"cpuid_modifiers": [{
        "leaf": "0xd", "subleaf": "0x1", "flags": 1,
        "modifiers": [{"register": "eax", "bitmap": "0bxxxxxxxxxxxxxxxxxxxxxxxxxxx0xxxx"}]}]},
        indent=2) + "\n")
    before = path.read_bytes()
    profile = ("--profiles", "profile:fc-sapphire-rapids-6.1")
    done = run("gate", *profile, path, "--fix")
    assert done.returncode == 1
    assert path.read_bytes() == before
    assert "Found 1 error (0 fixed, 1 remaining)." in done.stdout
    assert "No fixes available (1 hidden fix can be enabled with the `--unsafe-fixes` " \
           "option)." in done.stdout
    assert f"{path}: amx-requires-xfd: not fixed, only an unsafe fix exists" in done.stdout
    diff = run("gate", *profile, path, "--diff")
    assert (diff.returncode, diff.stdout) == (0, "")
    assert "No errors would be fixed (1 fix available with `--unsafe-fixes`)." in diff.stderr
    unsafe_diff = run("gate", *profile, path, "--diff", "--unsafe-fixes")
    assert unsafe_diff.returncode == 1 and "+" in unsafe_diff.stdout
    fixed = run("gate", *profile, path, "--fix", "--unsafe-fixes")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert "bitmap\": \"0bxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"" in path.read_text()


def test_unfixable_errors_keep_exit_1(tmp_path: Path) -> None:
    """An error no fix removes (a modified entry the declared host lacks) stays: exit 1."""
    path = tmp_path / "leaf.json"
    path.write_text(json.dumps({"cpuid_modifiers": [{
        "leaf": "0xd", "subleaf": "0x12", "flags": 1,
        "modifiers": [{"register": "eax", "bitmap": "0b0"}]}]}) + "\n")
    before = path.read_bytes()
    done = run("gate", "--profiles", "profile:fc-skylake-6.1", path, "--fix")
    assert done.returncode == 1
    assert "Found 1 error (0 fixed, 1 remaining)." in done.stdout
    assert path.read_bytes() == before


def test_fix_writes_atomically_and_keeps_the_mode(amx_half: Path) -> None:
    """The fixed file replaces the old one by rename (a new inode) with the old mode; no
    temporary file is left beside it."""
    amx_half.chmod(0o640)
    inode = amx_half.stat().st_ino
    assert run("gate", amx_half, "--fix").returncode == 0
    info = amx_half.stat()
    assert info.st_mode & 0o777 == 0o640
    assert info.st_ino != inode
    assert sorted(p.name for p in amx_half.parent.iterdir()) == ["amx-half.json"]


def test_fix_through_a_link_rewrites_its_file_and_keeps_the_link(amx_half: Path) -> None:
    """A template given through a symbolic link: the file it points at is fixed, the link
    stays a link to it."""
    link = amx_half.with_name("link.json")
    link.symlink_to(amx_half.name)
    assert run("gate", link, "--fix").returncode == 0
    assert link.is_symlink() and os.readlink(link) == amx_half.name
    assert "0bxxxxxxxxxxxxx00xxxxxxxxxxxxxxxxx" in amx_half.read_text()


def test_fix_refuses_a_file_with_hard_links(amx_half: Path) -> None:
    """Replacing a file with other hard links would split them: exit 2, nothing written."""
    other = amx_half.with_name("other.json")
    os.link(amx_half, other)
    before = amx_half.read_bytes()
    done = run("gate", amx_half, "--fix")
    assert done.returncode == 2
    assert "hard links" in done.stderr and str(amx_half) in done.stderr
    assert amx_half.read_bytes() == before == other.read_bytes()


def test_check_fix_rewrites_the_template_for_its_source(amx_half: Path) -> None:
    """check SOURCE --template T --fix fixes T for that one table, then reports on it."""
    done = run("check", "profile:fc-sapphire-rapids-6.1", "--template", amx_half, "--fix")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Found 1 error (1 fixed, 0 remaining)." in done.stdout
    assert "0bxxxxxxxxxxxxx00xxxxxxxxxxxxxxxxx" in amx_half.read_text()
    diff = run("check", "profile:fc-sapphire-rapids-6.1", "--template", amx_half, "--diff")
    assert (diff.returncode, diff.stdout) == (0, "")


def test_check_fix_needs_a_template() -> None:
    """--fix without --template has nothing to rewrite: a usage error, exit 2."""
    done = run("check", "profile:fc-sapphire-rapids-6.1", "--fix")
    assert done.returncode == 2 and "--template" in done.stderr


def test_json_output_stays_json_with_fix(amx_half: Path) -> None:
    """With --format json the report stays one JSON document; the fix summary is on stderr."""
    done = run("gate", amx_half, "--fix", "--format", "json")
    assert done.returncode == 0
    report = json.loads(done.stdout)
    assert report["summary"]["errors"] == 0
    assert "Found 4 errors (4 fixed, 0 remaining)." in done.stderr


def test_fix_refuses_one_file_given_twice_before_writing(amx_half: Path) -> None:
    """The same file under two names (itself and a link) is refused: exit 2, nothing
    written."""
    link = amx_half.with_name("link.json")
    link.symlink_to(amx_half.name)
    before = amx_half.read_bytes()
    done = run("gate", amx_half, link, "--fix")
    assert done.returncode == 2 and "expected each template once" in done.stderr
    assert amx_half.read_bytes() == before
