"""Command-line conventions, run as a user runs them: colour flags and variables, formats a
command cannot write, gate options that need each other, ``--profiles`` beside templates,
standard input as a source, and the changes hook in a repository without commits."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BROKEN = REPO / "examples" / "broken" / "amx-half-masked.json"
GOOD = REPO / "examples" / "templates" / "no-amx.json"
SPR = "profile:fc-sapphire-rapids-6.1"
ANSI = "\x1b["


def run(*args: str, env: dict[str, str] | None = None, stdin: bytes | None = None,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m xstate_check ARGS`` with this tree's package; colour variables unset."""
    base = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    base["PYTHONPATH"] = str(REPO / "src")
    done = subprocess.run(
        [sys.executable, "-m", "xstate_check", *args], input=stdin if stdin is not None else b"",
        capture_output=True, check=False, timeout=300, cwd=cwd, env={**base, **(env or {})},
    )
    return subprocess.CompletedProcess(
        done.args, done.returncode, done.stdout.decode("utf-8", "replace"),
        done.stderr.decode("utf-8", "replace"),
    )


def subject_names(output: str) -> list[str]:
    """Return the subject names of a JSON report."""
    return [subject["name"] for subject in json.loads(output)["subjects"]]


# --------------------------------------------------------------------------- colour


@pytest.mark.parametrize(
    ("flag", "env", "coloured"),
    [
        ("always", {"NO_COLOR": "1"}, True),      # an explicit flag beats NO_COLOR
        ("never", {"FORCE_COLOR": "1"}, False),   # and beats FORCE_COLOR
        ("auto", {"FORCE_COLOR": "1"}, True),     # FORCE_COLOR colours a pipe
        ("auto", {"FORCE_COLOR": "1", "NO_COLOR": "1"}, False),  # NO_COLOR beats FORCE_COLOR
        ("auto", {"NO_COLOR": "", "FORCE_COLOR": ""}, False),    # empty values do not count
        ("auto", {}, False),                      # a pipe is not a terminal
    ],
)
def test_colour_follows_flag_then_no_color_then_force_color(
    flag: str, env: dict[str, str], coloured: bool
) -> None:
    """--color always/never win over NO_COLOR and FORCE_COLOR; under auto NO_COLOR wins."""
    done = run("check", SPR, "--template", str(BROKEN), "--color", flag, env=env)
    assert done.returncode == 1, done.stderr
    assert "amx-tile-pair" in done.stdout
    assert (ANSI in done.stdout) is coloured


def test_an_output_file_is_coloured_only_when_asked(tmp_path: Path) -> None:
    """FORCE_COLOR colours standard output, not an --output file; --color always colours it."""
    plain, painted = tmp_path / "plain.txt", tmp_path / "painted.txt"
    assert run("check", SPR, "-t", str(BROKEN), "-o", str(plain),
               env={"FORCE_COLOR": "1"}).returncode == 1
    assert run("check", SPR, "-t", str(BROKEN), "-o", str(painted), "--color", "always",
               env={"NO_COLOR": "1"}).returncode == 1
    assert "amx-tile-pair" in plain.read_text(encoding="utf-8")
    assert ANSI not in plain.read_text(encoding="utf-8")
    assert ANSI in painted.read_text(encoding="utf-8")


# --------------------------------------------------------------------------- formats


@pytest.mark.parametrize("fmt", ["sarif", "junit", "github"])
def test_convert_refuses_a_format_it_cannot_write(fmt: str, tmp_path: Path) -> None:
    """convert writes its CPUID JSON only: another --format is a usage error, nothing written."""
    out = tmp_path / "out"
    done = run("convert", SPR, "--format", fmt, "-o", str(out))
    assert done.returncode == 2
    assert done.stdout == "" and not out.exists()
    # One line (a workflow command under --format github) saying what convert writes.
    assert len(done.stderr.splitlines()) == 1
    assert done.stderr.endswith(
        f"xstate-check convert: writes xstate-check's CPUID JSON (--format json), not {fmt}\n"
    )


def test_convert_writes_json_by_default_and_when_asked() -> None:
    """The default and --format json both give the same CPUID JSON."""
    default, asked = run("convert", SPR), run("convert", SPR, "--format", "json")
    assert default.returncode == asked.returncode == 0
    assert default.stdout == asked.stdout
    assert json.loads(asked.stdout)["schema"].startswith("xstate-check-cpuid/")


# --------------------------------------------------------------------------- gate options


def test_fail_on_new_without_changed_since_is_a_usage_error() -> None:
    """--fail-on new means nothing without a revision: exit 2 saying so, not a silent pass."""
    done = run("gate", str(BROKEN), "--fail-on", "new")
    assert done.returncode == 2 and done.stdout == ""
    assert "--fail-on new needs --changed-since REV" in done.stderr
    # --fail-on any is what the gate does anyway: still accepted, and it fails the error.
    assert run("gate", str(BROKEN), "--fail-on", "any").returncode == 1


def test_profiles_before_a_template_leave_the_template_alone() -> None:
    """`gate --profiles builtin T.json` checks T.json on the builtin profiles."""
    expected = run("gate", str(BROKEN), "--format", "json")
    done = run("gate", "--profiles", "builtin", str(BROKEN), "--format", "json")
    assert expected.returncode == done.returncode == 1, done.stderr
    assert done.stdout == expected.stdout
    assert SPR.removeprefix("profile:") in subject_names(done.stdout)


def test_profiles_comma_separated_repeated_and_in_the_older_form() -> None:
    """A,B and --profiles A --profiles B name the same profiles as the older `--profiles A B`."""
    names = ["fc-sapphire-rapids-6.1", "fc-milan-6.1"]
    forms = [
        ["gate", "--profiles", f"{SPR},profile:fc-milan-6.1", str(BROKEN)],
        ["gate", "--profiles", SPR, "--profiles", "profile:fc-milan-6.1", str(BROKEN)],
        ["gate", str(BROKEN), "--profiles", SPR, "profile:fc-milan-6.1"],
        ["gate", "--profiles", SPR, "profile:fc-milan-6.1", str(BROKEN)],
    ]
    for argv in forms:
        done = run(*argv, "--format", "json")
        assert done.returncode == 1, (argv, done.stderr)
        assert subject_names(done.stdout) == names, argv


def test_profiles_followed_by_a_cpuid_file_and_a_template(tmp_path: Path) -> None:
    """In `--profiles P cpuid.json T.json` the CPUID file is a profile and T.json a template."""
    milan = tmp_path / "milan.json"
    assert run("convert", "profile:fc-milan-6.1", "-o", str(milan)).returncode == 0
    done = run("gate", "--profiles", SPR, str(milan), str(BROKEN), "--format", "json")
    assert done.returncode == 1, done.stderr
    assert subject_names(done.stdout) == ["fc-sapphire-rapids-6.1", "milan"]
    both = run("gate", "--profiles", SPR, str(milan), str(GOOD), str(BROKEN), "--format", "json")
    assert both.returncode == 1, both.stderr
    assert len(subject_names(both.stdout)) == 4


# --------------------------------------------------------------------------- standard input


def test_standard_input_is_a_source_for_check_decode_and_convert(tmp_path: Path) -> None:
    """`-` reads the source from standard input: the same findings, layout and JSON as a file."""
    path = tmp_path / "spr.json"
    assert run("convert", SPR, "-o", str(path)).returncode == 0
    table = path.read_bytes()
    from_file = run("check", str(path), "-t", str(BROKEN), "--format", "json")
    from_stdin = run("check", "-", "-t", str(BROKEN), "--format", "json", stdin=table)
    assert from_file.returncode == from_stdin.returncode == 1, from_stdin.stderr
    (piped,), (read,) = (json.loads(from_stdin.stdout)["subjects"],
                         json.loads(from_file.stdout)["subjects"])
    assert piped["findings"] == read["findings"]
    assert "amx-tile-pair" in {finding["name"] for finding in piped["findings"]}
    decoded = run("decode", "-", stdin=table)
    assert decoded.returncode == 0, decoded.stderr
    assert decoded.stdout == run("decode", str(path)).stdout
    converted = run("convert", "-", stdin=table)
    assert converted.returncode == 0
    assert converted.stdout.encode() == table  # the project's JSON reads back unchanged


def test_standard_input_is_a_source_for_restore(tmp_path: Path) -> None:
    """`restore - --on DEST` judges the piped table as `restore FILE --on DEST` does."""
    path = tmp_path / "spr.json"
    assert run("convert", SPR, "-o", str(path)).returncode == 0
    dest = "profile:fc-sapphire-rapids-5.10"  # its KVM lacks AMX: the restore fails
    from_file = run("restore", str(path), "--on", dest, "--format", "json")
    from_stdin = run("restore", "-", "--on", dest, "--format", "json", stdin=path.read_bytes())
    assert from_file.returncode == from_stdin.returncode == 1, from_stdin.stderr
    (piped,), (read,) = (json.loads(from_stdin.stdout)["subjects"],
                         json.loads(from_file.stdout)["subjects"])
    assert piped["findings"] == read["findings"]
    assert "restore-xcr0-supported" in {finding["name"] for finding in piped["findings"]}


def test_standard_input_reads_a_real_dump(data_dir: Path) -> None:
    """A libcpuid dump piped in reads as the file does."""
    path = data_dir / "cpuid-dumps" / "libcpuid" / "epyc-genoa.test"
    piped = run("convert", "-", stdin=path.read_bytes())
    direct = run("convert", str(path))
    assert piped.returncode == direct.returncode == 0
    assert json.loads(piped.stdout)["entries"] == json.loads(direct.stdout)["entries"]


BAD_INPUTS = {
    "empty": (b"", "xstate-check: <stdin>:1: expected a CPUID dump; found empty input"),
    "binary": (b"CPUID 0000000D: \0",
               "xstate-check: <stdin>:1:17: expected text; found binary data"),
    "over 16 MiB": (b"x" * (16 * 1024 * 1024 + 1),
                    "xstate-check: <stdin>: expected at most 16777216 bytes (16 MiB); this is "
                    "larger"),
}


@pytest.mark.parametrize("kind", sorted(BAD_INPUTS))
def test_bad_standard_input_is_one_clear_error(kind: str) -> None:
    """Empty, binary and oversized standard input: exit 2, one message naming <stdin>."""
    data, message = BAD_INPUTS[kind]
    done = run("check", "-", stdin=data)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.startswith(message), done.stderr
    assert "Traceback" not in done.stderr


# --------------------------------------------------------------------------- the changes hook


def _git(root: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@example.invalid",
         "-c", "commit.gpgsign=false", *args],
        capture_output=True, text=True, check=True,
    )


def test_changes_hook_in_a_repository_without_commits(tmp_path: Path) -> None:
    """Before the first commit every template is a change: a good one passes, a careless one
    fails with its error; neither is a usage error (exit 2)."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    text = (REPO / ".pre-commit-hooks.yaml").read_text(encoding="utf-8")
    entry = dict(re.findall(r"^- id: (\S+)\n(?:  .*\n)*?  entry: (.+)$", text, re.M))[
        "xstate-check-gate-changes"]
    program, *options = entry.split()
    assert program == "xstate-check" and "--changed-since" in options
    root = tmp_path / "fleet"
    (root / "cpu-templates").mkdir(parents=True)
    shutil.copy(GOOD, root / "cpu-templates" / "good.json")
    shutil.copy(BROKEN, root / "cpu-templates" / "careless.json")
    _git(root, "init", "-q")
    _git(root, "add", ".")  # staged, as pre-commit sees them: still no commit
    good = run(*options, "cpu-templates/good.json", cwd=root)
    assert good.returncode == 0, good.stderr
    careless = run(*options, "--format", "github", "cpu-templates/careless.json", cwd=root)
    assert careless.returncode == 1, careless.stderr
    assert "::error file=cpu-templates/careless.json" in careless.stdout
    # Once something is committed, a revision that does not exist is a usage error again.
    _git(root, "commit", "-q", "-m", "templates")
    wrong = run("gate", "--changed-since", "no-such-branch", "cpu-templates/good.json", cwd=root)
    assert wrong.returncode == 2
    assert "expected a git revision" in wrong.stderr


# --------------------------------------------------------------------------- the README


def _blocks(text: str, after: str) -> list[str]:
    """Return the fenced blocks that follow the first line containing ``after``."""
    rest = text[text.index(after):]
    return re.findall(r"^```[a-z]*\n(.*?)^```$", rest, re.M | re.S)


def test_readme_installs_in_a_virtual_environment() -> None:
    """Both set-up commands create and activate a venv before pip (Debian refuses pip outside
    one), and none says `pip install xstate-check`, which is not published."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    for marker in ("<!-- main-command -->", "<!-- test-command -->"):
        command = _blocks(text, marker)[0].strip()
        assert command.startswith("python3 -m venv .venv && . .venv/bin/activate && "), marker
        assert "python -m pip install" in command, marker
    assert not re.search(r"pip install xstate-check\b", text)


def test_readme_pre_commit_example_names_a_matrix_and_a_real_hook() -> None:
    """The pre-commit example uses a hook of .pre-commit-hooks.yaml and names a matrix."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    (config,) = [b for b in _blocks(text, "With pre-commit") if "hooks:" in b][:1]
    hooks = (REPO / ".pre-commit-hooks.yaml").read_text(encoding="utf-8")
    (hook_id,) = re.findall(r"- id: (\S+)", config)
    assert re.search(rf"^- id: {re.escape(hook_id)}$", hooks, re.M)
    args = re.search(r"args: \[(.*)\]", config)
    assert args is not None and args.group(1).split(", ")[0] == "--matrix"
