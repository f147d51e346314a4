"""Every exit path of the command line: 0, 1, 2 (usage and input), 3, 4, and the quiet ones.

0: no error findings; 1: error findings (warnings too with --strict); 2: bad usage or input,
one message naming the file (and line) and never a traceback; 3: the environment cannot be
probed; 4: an internal error, which is a bug, still without a traceback; 130 on Ctrl-C;
0 when the reader of the output goes away (BrokenPipeError).
"""

from __future__ import annotations

import errno
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fakehost import FakeSystem, sapphire_rapids_cpu
from xstate_check import cli
from xstate_check.sources import load as loadmodule
from xstate_check.sources.ownjson import to_json_text
from xstate_check.system import probe as probemodule

REPO = Path(__file__).resolve().parents[1]
SPR = "cpuid-dumps/instlatx64/GenuineIntel00806F8_SapphireRapids_05_CPUID.txt"


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    """Run `python -m xstate_check ARGV` as a user would, without a terminal."""
    return subprocess.run(
        [sys.executable, "-m", "xstate_check", *argv], capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")}, timeout=300, check=False,
        stdin=subprocess.DEVNULL,
    )


def _one_message(stderr: str) -> None:
    assert stderr.startswith("xstate-check") or stderr.startswith("usage:"), stderr
    assert "Traceback" not in stderr


@pytest.fixture
def amx_half(tmp_path: Path) -> Path:
    """Return a CPUID JSON that enumerates TILECFG without TILEDATA (XCR0 0x202e7).

    The bundled Sapphire Rapids profile (a public CPUID dump) with bit 18 of
    0xD.0 EAX cleared: the guest's XSETBV of its XCR0 raises #GP.
    """
    table = sapphire_rapids_cpu()
    table = table.with_registers(0xD, 0, eax=table.get(0xD, 0).eax & ~(1 << 18))
    path = tmp_path / "amx-half.json"
    path.write_text(to_json_text(table), encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- 0 and 1


@pytest.mark.parametrize("fmt", ["text", "json", "sarif", "junit", "github"])
def test_exit_0_for_a_real_cpu_without_errors(fmt: str, data_dir: Path) -> None:
    """A real Sapphire Rapids dump: no error findings, exit 0 in every format."""
    done = _run("check", str(data_dir / SPR), "--format", fmt)
    assert done.returncode == 0, done.stderr
    assert done.stdout


@pytest.mark.parametrize("argv", [["rules"], ["explain", "XS0101"], ["explain", "amx-tile-pair"],
                                  ["profiles"], ["--version"], ["--help"], ["check", "--help"]],
                         ids=" ".join)
def test_exit_0_for_listing_commands(argv: list[str]) -> None:
    """rules, explain, profiles, --version and --help print and exit 0."""
    done = _run(*argv)
    assert done.returncode == 0, done.stderr
    assert done.stdout and not done.stderr


@pytest.mark.parametrize("fmt", ["text", "json", "sarif", "junit", "github"])
def test_exit_1_for_error_findings(fmt: str, amx_half: Path) -> None:
    """TILECFG without TILEDATA is an error finding: exit 1, the finding on stdout."""
    done = _run("check", str(amx_half), "--format", fmt)
    assert done.returncode == 1, done.stderr
    assert "amx-tile-pair" in done.stdout or "XS0108" in done.stdout


def test_strict_turns_warnings_into_exit_1(data_dir: Path) -> None:
    """T2 on a Sapphire Rapids 6.1 guest has warnings, no errors: exit 0, 1 with --strict."""
    argv = ["check", str(data_dir / "firecracker/fingerprint_INTEL_SAPPHIRE_RAPIDS_6.1host.json"),
            "-t", str(data_dir / "firecracker/T2.json"), "--format", "json"]
    plain = _run(*argv)
    assert plain.returncode == 0, plain.stderr
    summary = json.loads(plain.stdout)["summary"]
    assert summary["errors"] == 0 and summary["warnings"] > 0
    assert _run(*argv, "--strict").returncode == 1


def test_decode_exit_1_when_the_template_modifies_a_missing_leaf(
    data_dir: Path, tmp_path: Path
) -> None:
    """decode with a template touching a leaf the source lacks: exit 1 and a warning line."""
    template = tmp_path / "missing.json"
    template.write_text(
        '{"cpuid_modifiers": [{"leaf": "0x7fffffff", "subleaf": "0x0", "flags": 0, '
        '"modifiers": [{"register": "eax", "bitmap": "0b1"}]}]}', encoding="utf-8"
    )
    done = _run("decode", str(data_dir / SPR), "-t", str(template))
    assert done.returncode == 1
    assert "0x7fffffff" in done.stderr and "Firecracker refuses to boot" in done.stderr


# ----------------------------------------------------------------------------- 2


@pytest.mark.parametrize(
    "argv",
    [[], ["frobnicate"], ["check"], ["check", "a", "b"], ["check", "x", "--format", "yaml"],
     ["check", "x", "--cpu", "one"], ["oracle", "x", "--xcr0", "zz"],
     ["oracle", "x", "--xcr0", str(1 << 64)], ["host", "--kvm", "--no-kvm"],
     ["gate"], ["explain"]],
    ids=lambda argv: " ".join(argv) or "no-arguments",
)
def test_exit_2_for_usage_errors(argv: list[str]) -> None:
    """A command line argparse refuses: exit 2, one usage message, nothing on stdout."""
    done = _run(*argv)
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    _one_message(done.stderr)


def test_exit_2_for_a_missing_file(tmp_path: Path) -> None:
    """check on a path that does not exist: exit 2, the message names the path."""
    missing = tmp_path / "absent.txt"
    done = _run("check", str(missing))
    assert done.returncode == 2
    assert done.stderr.startswith(f"xstate-check: {missing}")
    _one_message(done.stderr)


def test_exit_2_for_bad_input_names_file_and_line(data_dir: Path, tmp_path: Path) -> None:
    """A dump with one malformed register line: exit 2, message at that file and line."""
    lines = (data_dir / SPR).read_text(encoding="utf-8").splitlines()
    lines[6] = lines[6].replace("-", "+", 1)
    bad = tmp_path / "bad.txt"
    bad.write_text("\n".join(lines) + "\n", encoding="utf-8")
    done = _run("check", str(bad))
    assert done.returncode == 2
    assert done.stderr.startswith(f"xstate-check: {bad}:7:"), done.stderr
    _one_message(done.stderr)


def test_exit_2_for_a_bad_template(data_dir: Path) -> None:
    """Firecracker's own malformed template: exit 2 at the template's line."""
    template = data_dir / "firecracker/malformed_x86_cpu_template.json"
    done = _run("check", str(data_dir / SPR), "-t", str(template))
    assert done.returncode == 2
    assert done.stderr.startswith(f"xstate-check: {template}:4:"), done.stderr


def test_exit_2_for_an_unknown_rule(capsys: pytest.CaptureFixture[str]) -> None:
    """explain of a rule that does not exist: exit 2 with one message."""
    assert cli.main(["explain", "XS9999"]) == 2
    _one_message(capsys.readouterr().err)


def test_exit_2_when_the_output_cannot_be_written(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--output into a missing folder: the OSError is exit 2 with one message."""
    out = tmp_path / "no" / "such" / "folder" / "report.json"
    assert cli.main(["check", str(data_dir / SPR), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(out) in err
    _one_message(err)


def test_exit_2_for_decode_in_a_report_format(data_dir: Path) -> None:
    """decode writes text or json only: --format sarif is a usage error, exit 2."""
    done = _run("decode", str(data_dir / SPR), "--format", "sarif")
    assert done.returncode == 2
    _one_message(done.stderr)


# ----------------------------------------------------------------------------- 3


@pytest.mark.parametrize("argv", [["host", "--kvm"], ["check", "kvm"], ["decode", "kvm"]],
                         ids=" ".join)
def test_exit_3_without_kvm(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    """/dev/kvm missing (ENOENT, modelled): every command that needs it exits 3."""
    system = FakeSystem.sapphire_rapids("6.8.0", kvm_errno=errno.ENOENT)
    monkeypatch.setattr(probemodule, "default_system", lambda: system)
    assert cli.main(argv) == 3
    err = capsys.readouterr().err
    assert "kvm" in err.lower()
    _one_message(err)


def test_exit_3_on_a_machine_that_is_not_x86(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Linux on aarch64 (modelled): `host` exits 3 saying why."""
    system = FakeSystem.genoa("6.8.0", machine="aarch64")
    monkeypatch.setattr(probemodule, "default_system", lambda: system)
    assert cli.main(["host"]) == 3
    assert "aarch64" in capsys.readouterr().err


# ----------------------------------------------------------------------------- 4 and the rest


def test_exit_4_for_an_internal_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], data_dir: Path
) -> None:
    """A bug (any other exception) is exit 4 with one message asking for a report."""

    def broken(source: object, *, cpu: int | None = None) -> object:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(loadmodule, "load_cpuid", broken)
    assert cli.main(["check", str(data_dir / SPR)]) == 4
    err = capsys.readouterr().err
    assert err.startswith("xstate-check: internal error: ZeroDivisionError: a bug")
    assert "Traceback" not in err


def test_exit_130_on_keyboard_interrupt(
    monkeypatch: pytest.MonkeyPatch, data_dir: Path
) -> None:
    """Ctrl-C while checking: exit 130, as shells expect."""

    def interrupted(source: object, *, cpu: int | None = None) -> object:
        raise KeyboardInterrupt

    monkeypatch.setattr(loadmodule, "load_cpuid", interrupted)
    assert cli.main(["check", str(data_dir / SPR)]) == 130


class _ClosedPipe(io.StringIO):
    """A stdout whose reader went away: every write raises BrokenPipeError."""

    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


def test_exit_0_when_the_reader_goes_away(
    monkeypatch: pytest.MonkeyPatch, data_dir: Path
) -> None:
    """`xstate-check decode … | head -1`: the closed pipe is exit 0 and prints nothing."""
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stdout", _ClosedPipe())
    monkeypatch.setattr(sys, "stderr", stderr)
    assert cli.main(["decode", str(data_dir / SPR)]) == 0
    assert stderr.closed
