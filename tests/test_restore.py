"""Snapshot restore: verdicts on the bundled profiles, every rule firing, API and command line."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

import xstate_check
from xstate_check.api import build_subject
from xstate_check.engine import load_catalogue
from xstate_check.engine.examples import apply_edits
from xstate_check.engine.runner import evaluate_rules
from xstate_check.errors import InputError, Location
from xstate_check.hoststate import HostState
from xstate_check.restore import destination_of, restore, restore_subject
from xstate_check.sources.profiles import load_profile
from xstate_check.subject import Destination, Subject

REPO = Path(__file__).resolve().parents[1]
CATALOGUE = load_catalogue()
RESTORE_RULES = list(CATALOGUE.family("restore"))


def _verdict(guest: str, dest: str, template: Path | None = None) -> tuple[bool, set[str]]:
    report = restore(f"profile:{guest}", [f"profile:{dest}"], template)
    (subject,) = report.subjects
    errors = {f.name for f in subject.findings if f.severity == "error"}
    assert subject.details["restorable"] == (not errors)
    return not errors, errors


def test_sapphire_rapids_guest_does_not_restore_on_ice_lake() -> None:
    """AMX state: the SPR 6.1 guest's XCR0 has TILECFG|TILEDATA, Ice Lake's KVM has neither."""
    ok, errors = _verdict("fc-sapphire-rapids-6.1", "fc-ice-lake-6.1")
    assert not ok and errors == {"restore-xcr0-supported"}
    report = restore("profile:fc-sapphire-rapids-6.1", "profile:fc-ice-lake-6.1")
    (finding,) = report.errors
    assert "tilecfg|tiledata" in finding.message and "EINVAL" in finding.consequence
    assert report.exit_code() == 1


def test_sapphire_rapids_guest_under_spr_to_t2_restores_on_ice_lake(data_dir: Path) -> None:
    """SPR_TO_T2_6.1 clears AMX and AVX-512: its guest restores on Ice Lake."""
    template = data_dir / "firecracker" / "SPR_TO_T2_6.1.json"
    ok, errors = _verdict("fc-sapphire-rapids-6.1", "fc-ice-lake-6.1", template)
    assert ok, errors


def test_genoa_guest_does_not_restore_on_milan_and_milan_restores_on_genoa() -> None:
    """AVX-512 state goes one way only: Milan has none, Genoa lays Milan's PKRU out alike."""
    ok, errors = _verdict("fc-genoa-6.1", "fc-milan-6.1")
    assert not ok and errors == {"restore-xcr0-supported"}
    assert _verdict("fc-milan-6.1", "fc-genoa-6.1") == (True, set())


def test_intel_guest_on_amd_is_silent_corruption() -> None:
    """Across vendors the offsets of AVX-512 and PKRU differ: the layout rule says so."""
    _, errors = _verdict("fc-ice-lake-6.1", "fc-genoa-6.1")
    assert "restore-layout-equal" in errors


def test_cet_guest_needs_cet_on_the_destination() -> None:
    """A 6.18 Genoa guest (CET_U in IA32_XSS) does not restore on a 6.1 Genoa host."""
    ok, errors = _verdict("fc-genoa-6.18", "fc-genoa-6.1")
    assert not ok and "restore-xss-supported" in errors
    report = restore("profile:fc-genoa-6.18", ["profile:fc-genoa-6.18"])
    assert [f.name for f in report.warnings] == ["restore-xss-in-saved-msrs"]
    assert report.exit_code() == 0 and report.exit_code(strict=True) == 1


def test_template_finding_points_at_the_template_line(tmp_path: Path) -> None:
    """A template that keeps AVX-512 on a guest moved to Milan is blamed at its 0xD line."""
    template = tmp_path / "keep.json"
    template.write_text(json.dumps({"cpuid_modifiers": [
        {"leaf": "0x7", "subleaf": "0x0", "flags": 1,
         "modifiers": [{"register": "ebx", "bitmap": "0bxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}]},
        {"leaf": "0xd", "subleaf": "0x0", "flags": 1,
         "modifiers": [{"register": "eax", "bitmap": "0b00000000000000000000001011100111"}]},
    ]}, indent=1))
    report = restore("profile:fc-genoa-6.1", "profile:fc-milan-6.1", template)
    (finding,) = report.errors
    assert finding.location is not None and finding.location.path == str(template)
    lines = template.read_text().splitlines()
    assert '"0b00000000000000000000001011100111"' in lines[finding.location.line - 1]


# --- every restore rule fires on mutated real data ---------------------------------------------

SPR61, SPR618, ICX61 = "fc-sapphire-rapids-6.1", "fc-sapphire-rapids-6.18", "fc-ice-lake-6.1"
GENOA618 = "fc-genoa-6.18"
Edits = dict[str, str]

#: rule -> (guest profile, destination profile, before, after): each of before/after gives
#: CPUID edits of the guest ("guest") and of the destination ("dest"), host facts of the
#: destination ("dest_host": kvm_guest_supported) and a peer's edits of the destination
#: table ("peer"). The rule must not fire before and must fire after.
MUTATIONS: dict[str, tuple[str, str, dict[str, object], dict[str, object]]] = {
    "restore-xcr0-supported": (SPR61, SPR61, {}, {"dest": {"0xd.0.eax": "0x2e7"}}),
    "restore-xss-supported": (GENOA618, GENOA618, {}, {"dest": {"0xd.1.ecx": "0x0"}}),
    "restore-layout-equal": (ICX61, ICX61, {}, {"dest": {"0xd.7.ebx": "0x6c0"}}),
    "restore-xsave-size-equal": (SPR61, SPR618, {}, {"dest": {"0xd.18.eax": "0x2040"}}),
    "restore-amx-permission": (SPR61, SPR61, {"dest_host": 0x602E7},
                               {"dest_host": 0x602E7, "dest": {"0xd.0.eax": "0x2e7"}}),
    "restore-needs-xsave2": (SPR61, SPR618, {"guest": {"0xd.0.eax": "-bit17 -bit18"}}, {}),
    "restore-xss-in-saved-msrs": (GENOA618, GENOA618, {"guest": {"0x7.0.ecx": "-bit7"}}, {}),
    "restore-xfd-msrs": (SPR61, SPR618, {"guest": {"0xd.1.eax": "-bit4"}}, {}),
    "group-view-equal": (ICX61, ICX61, {"peer": {}}, {"peer": {"0x7.0.ebx": "-bit16"}}),
}


def _subject(guest: str, dest: str, change: dict[str, object]) -> Subject:
    def edits(key: str) -> tuple[tuple[str, str], ...]:
        value = change.get(key, {})
        assert isinstance(value, dict)
        return tuple(value.items())

    table = apply_edits(load_profile(guest), edits("guest"))
    dest_table = apply_edits(load_profile(dest), edits("dest"))
    host = None
    if "dest_host" in change:
        supported = change["dest_host"]
        assert isinstance(supported, int)
        host = HostState(kernel_release="6.1.0", kvm_available=True,
                         kvm_guest_supported=supported, kvm_cpuid=dest_table)
    peer = apply_edits(dest_table, edits("peer")) if "peer" in change else None
    return restore_subject(build_subject(table, name=guest, role="guest"),
                           Destination(dest, dest_table, host=host, peer=peer))


def test_every_restore_rule_has_a_mutation() -> None:
    """Each restore rule has a mutation here."""
    assert set(MUTATIONS) == {rule.name for rule in RESTORE_RULES}


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_restore_rule_fires_on_mutated_real_data(name: str) -> None:
    """The rule is silent on the real pair and fires once one side is changed."""
    guest, dest, before, after = MUTATIONS[name]
    rule = CATALOGUE.get(name)
    assert evaluate_rules(_subject(guest, dest, before), [rule]) == [], name
    findings = evaluate_rules(_subject(guest, dest, after), [rule])
    assert findings and {f.rule for f in findings} == {rule.id}


def test_restore_rules_are_not_applicable_without_a_destination() -> None:
    """A plain check never gives a restore finding: the dest facts are missing."""
    subject = build_subject(load_profile(SPR61), role="guest")
    assert evaluate_rules(subject, RESTORE_RULES) == []


def test_group_difference_names_the_bits() -> None:
    """A view difference says which register bits differ and their feature names."""
    subject = _subject(ICX61, ICX61, {"peer": {"0x7.0.ebx": "-bit16 -bit17"}})
    (finding,) = evaluate_rules(subject, [CATALOGUE.get("group-view-equal")])
    assert "leaf 0x7 subleaf 0x0" in finding.message
    assert "AVX512F" in finding.message and "AVX512DQ" in finding.message


# --- API and command line ----------------------------------------------------------------------


def test_public_api_is_exported() -> None:
    """xstate_check.restore(…) restores, whichever was imported first; one or several DESTs."""
    import xstate_check.restore as module

    assert callable(module) and module.restore is restore
    report = xstate_check.restore("profile:fc-milan-6.1",
                                  ["profile:fc-genoa-6.1", "profile:fc-milan-6.1"])
    assert [s.name for s in report.subjects] == ["fc-milan-6.1 -> fc-genoa-6.1",
                                                 "fc-milan-6.1 -> fc-milan-6.1"]


def test_destination_host_is_refused() -> None:
    """'host' is a CPU view, not a KVM's: an input error naming what to write."""
    with pytest.raises(InputError, match="'kvm' for this host"):
        destination_of("host")
    with pytest.raises(InputError):
        restore("profile:fc-milan-6.1", [])


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "xstate_check", *args],
                          capture_output=True, text=True, timeout=60, check=False)


def test_cli_exit_codes(tmp_path: Path) -> None:
    """restore exits 0 restorable, 1 not, 2 on bad input with one message."""
    ok = _cli("restore", "profile:fc-milan-6.1", "--on", "profile:fc-genoa-6.1")
    assert ok.returncode == 0, ok.stderr
    bad = _cli("restore", "profile:fc-genoa-6.1", "--on", "profile:fc-milan-6.1",
               "profile:fc-genoa-6.1", "--format", "json")
    assert bad.returncode == 1
    document = json.loads(bad.stdout)
    assert [s["details"]["restorable"] for s in document["subjects"]] == [False, True]
    broken = tmp_path / "dest.json"
    broken.write_text("{")
    wrong = _cli("restore", "profile:fc-milan-6.1", "--on", str(broken))
    assert wrong.returncode == 2 and "Traceback" not in wrong.stderr
    assert str(broken) in wrong.stderr
    missing = _cli("restore", "profile:fc-milan-6.1")
    assert missing.returncode == 2 and "--on" in missing.stderr


def test_location_of_a_pseudo_source_is_none() -> None:
    """Findings between two profiles carry no file location."""
    report = restore("profile:fc-genoa-6.1", "profile:fc-milan-6.1")
    assert all(f.location is None or isinstance(f.location, Location) for f in report.errors)


def test_docs_pair_table_is_what_the_code_computes() -> None:
    """docs/restore-pairs.md equals tools/restore_table.py's rendering of today's verdicts."""
    spec = importlib.util.spec_from_file_location("restore_table",
                                                  REPO / "tools" / "restore_table.py")
    assert spec is not None and spec.loader is not None
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert (REPO / "docs" / "restore-pairs.md").read_text(encoding="utf-8") == tool.render()
    rows = dict(tool.verdicts()["GenuineIntel"])
    assert dict(rows["fc-sapphire-rapids-6.1"])["fc-ice-lake-6.1"] == "XS0701"
    assert dict(rows["fc-ice-lake-6.1"])["fc-sapphire-rapids-6.1"] == "ok"
    amd = dict(tool.verdicts()["AuthenticAMD"])
    assert dict(amd["fc-genoa-6.1"])["fc-milan-6.1"] == "XS0701"
    assert dict(amd["fc-milan-6.1"])["fc-genoa-6.1"] == "ok"


def test_a_guest_that_cannot_boot_has_no_snapshot(data_dir: Path) -> None:
    """SPR_TO_T2_6.1 on a 5.10 host modifies entries its KVM lacks: Firecracker refuses to
    boot, and restore says so with template-leaf-missing at the template's lines."""
    template = data_dir / "firecracker" / "SPR_TO_T2_6.1.json"
    report = restore("profile:fc-sapphire-rapids-5.10", "profile:fc-ice-lake-6.1", template)
    assert {f.name for f in report.errors} == {"template-leaf-missing"}
    assert all(f.location is not None and f.location.path == str(template)
               for f in report.errors)
    assert report.subjects[0].details["restorable"] is False


def test_readme_worked_example_is_what_the_command_prints(
        data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The README's snapshot portability example shows the command's real output."""
    from xstate_check.cli import main

    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Snapshot portability", 1)[1].split("\n## ", 1)[0]
    block = section.split("```console\n", 1)[1].split("```", 1)[0]
    commands = block.split("$ xstate-check ")[1:]
    assert len(commands) == 2
    for chunk in commands:
        command, _, shown = chunk.partition("\n")
        args = [str(data_dir / "firecracker" / arg) if arg.endswith(".json") else arg
                for arg in command.split()]
        main([*args, "--color", "never"])
        printed = capsys.readouterr().out.replace(str(data_dir / "firecracker") + "/", "")
        for line in shown.splitlines():
            expected = line.split("[…]", 1)[0]
            assert any(out.startswith(expected) for out in printed.splitlines()), line
