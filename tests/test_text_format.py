"""The text format: findings by subject, notes shown, colour only when asked."""

from __future__ import annotations

from pathlib import Path

import pytest

from xstate_check.cli import main
from xstate_check.cpuid import CpuidSet
from xstate_check.errors import Location
from xstate_check.formats.text import render_text
from xstate_check.report import Finding, Report, SubjectReport
from xstate_check.sources.ownjson import to_json_text

FINDING = Finding(
    rule="XS0108", name="amx-tile-pair", severity="error", message="TILECFG without TILEDATA",
    consequence="XSETBV raises #GP at guest boot", fix="keep bits 17 and 18 together",
    location=Location("t.json", 21, 21),
)


def test_text_shows_findings_with_location_consequence_and_fix() -> None:
    """Each finding prints its severity, id, name, message, location, consequence and fix."""
    report = Report((SubjectReport("spr", "spr.json", "t.json", (FINDING,)),))
    text = render_text(report)
    assert "spr + template t.json" in text
    assert "  error XS0108 amx-tile-pair: TILECFG without TILEDATA" in text
    assert "    at t.json:21:21" in text
    assert "consequence: XSETBV raises #GP at guest boot" in text
    assert text.endswith("1 subject: 1 error, 0 warnings, 0 infos\n")
    assert "\x1b[" not in text


def test_text_shows_notes_of_what_could_not_be_read() -> None:
    """A subject's notes (facts left out) are printed, so a partial probe does not look whole."""
    details = {"kvm_available": False, "notes": ["KVM not probed: the caller skipped /dev/kvm"]}
    report = Report((SubjectReport("host", "host", None, (), details),))
    text = render_text(report)
    assert "  note: KVM not probed: the caller skipped /dev/kvm" in text
    assert "  kvm_available: False" in text
    assert "  no findings" in text


def test_text_colours_only_when_asked() -> None:
    """ANSI colour codes appear with color=True and never otherwise."""
    report = Report((SubjectReport("spr", "spr.json", None, (FINDING,)),))
    assert "\x1b[1;31merror\x1b[0m" in render_text(report, color=True)
    assert "\x1b[" not in render_text(report, color=False)


def test_cli_colour_follows_the_option_and_no_color(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """--color always colours, auto does not off a terminal, and NO_COLOR yields to a flag."""
    cpuid = CpuidSet.from_rows([(0xD, 0, 0x202E7, 0x240, 0x2B00, 0)], "t")
    dump = tmp_path / "half-amx.json"
    dump.write_text(to_json_text(cpuid.replace(role="guest")), encoding="utf-8")
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert main(["check", str(dump), "--color", "always"]) == 1
    assert "\x1b[1;31merror" in capsys.readouterr().out
    assert main(["check", str(dump)]) == 1
    assert "\x1b[" not in capsys.readouterr().out
    monkeypatch.setenv("NO_COLOR", "1")
    assert main(["check", str(dump), "--color", "always"]) == 1
    assert "\x1b[1;31merror" in capsys.readouterr().out
    monkeypatch.setenv("FORCE_COLOR", "1")
    assert main(["check", str(dump)]) == 1
    assert "\x1b[" not in capsys.readouterr().out


def test_gate_text_names_each_problem_once_with_its_profiles(data_dir: Path) -> None:
    """A gate's text lists a template line once with its profiles, and counts the infos."""
    from xstate_check.gate import run_gate

    template = data_dir / "firecracker" / "SPR_TO_T2_6.1.json"
    result = run_gate([template], profiles=["profile:fc-sapphire-rapids-*",
                                            "profile:fc-granite-rapids-*"])
    text = render_text(result)
    shown = [f for f in result.findings() if f.severity != "info"]
    places = {(f.rule, f.location.line if f.location else 0) for f in shown}
    entries = [line for line in text.splitlines() if f"{template}:" in line and " XS" in line]
    assert len(entries) == len(places) < len(shown)
    assert "on 2 profiles: fc-sapphire-rapids-6.18, fc-granite-rapids-6.18" in text
    infos = {(f.rule, f.location.line if f.location else 0) for f in result.infos}
    assert f"{len(infos)} harmless info problem" in text
    listed = render_text(result, min_severity="info")
    assert len([line for line in listed.splitlines() if f"{template}:" in line and " XS" in line]
               ) == len(places | infos)
    assert text.rstrip().endswith(result.summary_text())
