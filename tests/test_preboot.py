"""The pre-boot call and the host check: subjects, details, errors, and no side effects."""

from __future__ import annotations

import contextlib
import errno
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fakehost import FakeSystem
from xstate_check.errors import InputError, ProbeError
from xstate_check.preboot import PrebootError, check_host, host_subjects, preboot, subject_details
from xstate_check.report import Finding, Report, SubjectReport
from xstate_check.sources import host as hostsource
from xstate_check.system import probe as probemodule
from xstate_check.system.abi import ARCH_GET_XCOMP_GUEST_PERM, ARCH_REQ_XCOMP_GUEST_PERM
from xstate_check.system.calls import KVM_DEVICE, RealSystem
from xstate_check.template import load_template

# The package exports the function ``preboot``, which hides the module of the same name.
prebootmodule = importlib.import_module("xstate_check.preboot")
TILEDATA = 1 << 18
SRC = Path(__file__).resolve().parents[1] / "src"


def _kvm_usable() -> bool:
    try:
        os.close(os.open(KVM_DEVICE, os.O_RDWR | os.O_CLOEXEC))
    except OSError:
        return False
    return os.uname().machine == "x86_64"


needs_kvm = pytest.mark.skipif(not _kvm_usable(), reason="needs a usable /dev/kvm")


def _names(report: Report, subject: str, severity: str = "error") -> set[str]:
    found = next(s for s in report.subjects if s.name == subject)
    return {finding.name for finding in found.findings if finding.severity == severity}


def _guest_requests(fake: FakeSystem) -> list[tuple[object, ...]]:
    return [c for c in fake.calls if c[:2] == ("arch_prctl", ARCH_REQ_XCOMP_GUEST_PERM)]


# --- subjects (no rules needed) ------------------------------------------------------


def test_spr_61_has_three_subjects() -> None:
    """A 6.1 SPR host gives host, kvm and kvm+guest-permission, each with its own host facts."""
    state = hostsource.probe(FakeSystem.sapphire_rapids("6.1.0"))
    subjects = host_subjects(state)
    assert [s.name for s in subjects] == ["host", "kvm", "kvm+guest-permission"]
    assert [s.role for s in subjects] == ["cpu", "guest", "guest"]
    host, plain, permitted = subjects
    assert host.cpuid.get(0xD, 0).eax == 0x602E7
    assert plain.cpuid.get(0xD, 0).eax == 0x202E7
    assert permitted.cpuid.get(0xD, 0).eax == 0x602E7
    assert plain.host is not None and permitted.host is not None
    assert plain.host.guest_permitted is not None and not plain.host.guest_permitted & TILEDATA
    assert permitted.host.guest_permitted is not None and permitted.host.guest_permitted & TILEDATA
    assert permitted.host.kvm_xsave2_size == 11008  # KVM-10: SPR with AMX
    assert plain.host.kvm_xsave2_size == 4096
    assert (plain.host.permission_requested, permitted.host.permission_requested) == (False, True)


def test_one_kvm_subject_when_views_are_equal() -> None:
    """Without TILEDATA, or with the permission already held, there is one kvm subject."""
    genoa = host_subjects(hostsource.probe(FakeSystem.genoa("6.8.0")))
    assert [s.name for s in genoa] == ["host", "kvm"]
    asked = host_subjects(
        hostsource.probe(FakeSystem.sapphire_rapids("6.1.0"), request_permission=True)
    )
    assert [s.name for s in asked] == ["host", "kvm"]
    assert asked[1].cpuid.get(0xD, 0).eax == 0x602E7


def test_views_differing_only_in_apic_ids_are_one_view() -> None:
    """The child's table carries the APIC ID of the CPU it ran on: that is not a new view."""
    import attrs

    state = hostsource.probe(FakeSystem.sapphire_rapids("6.1.0"), request_permission=True)
    table = state.kvm_cpuid
    assert table is not None
    moved = table.with_registers(0x1, 0, ebx=table.get(0x1).ebx ^ 0x0300_0000)
    for leaf in (0xB, 0x1F):
        if table.has(leaf):
            moved = moved.with_registers(leaf, 0, edx=table.get(leaf).edx ^ 3)
    other = attrs.evolve(state, kvm_cpuid_permitted=moved)
    assert [s.name for s in host_subjects(other)] == ["host", "kvm"]
    # A difference anywhere else is a view of its own.
    changed = moved.with_registers(0x1, 0, ebx=moved.get(0x1).ebx ^ 0x1)
    assert [s.name for s in host_subjects(attrs.evolve(state, kvm_cpuid_permitted=changed))] \
        == ["host", "kvm", "kvm+guest-permission"]


def test_no_kvm_subject_without_kvm() -> None:
    """Without /dev/kvm only the host itself is a subject."""
    state = hostsource.probe(FakeSystem.genoa(kvm_errno=errno.ENOENT))
    assert [s.name for s in host_subjects(state)] == ["host"]


@pytest.mark.shared
def test_template_needs_the_permission_on_61(data_dir: Path) -> None:
    """SPR_TO_T2_6.1.json modifies 0xD.18: missing without permission on 6.1, present with it."""
    template = load_template(data_dir / "firecracker" / "SPR_TO_T2_6.1.json")
    state = hostsource.probe(FakeSystem.sapphire_rapids("6.1.0"))
    _, plain, permitted = host_subjects(state, template)
    assert [(m.leaf, m.subleaf) for m in plain.missing_entries] == [(0xD, 18)]
    assert permitted.missing_entries == ()
    assert plain.template == permitted.template == str(template.path)
    assert plain.base is state.kvm_cpuid
    # The template zeroes 0xD.17/0xD.18 and clears bits 17/18 of 0xD.0 EAX.
    assert permitted.cpuid.get(0xD, 0).eax & (3 << 17) == 0
    assert permitted.cpuid.get(0xD, 18) == (0, 0, 0, 0)


@pytest.mark.shared
def test_template_on_68_misses_both_tile_subleaves(data_dir: Path) -> None:
    """On 6.4+ without permission KVM drops 0xD.17 and 0xD.18, which the template modifies."""
    template = load_template(data_dir / "firecracker" / "SPR_TO_T2_6.1.json")
    state = hostsource.probe(FakeSystem.sapphire_rapids("6.8.0"))
    _, plain, permitted = host_subjects(state, template)
    assert [(m.leaf, m.subleaf) for m in plain.missing_entries] == [(0xD, 17), (0xD, 18)]
    assert permitted.missing_entries == ()


def test_details_carry_masks_as_hex() -> None:
    """Details name the masks read, as hex strings, and survive JSON."""
    state = hostsource.probe(FakeSystem.sapphire_rapids("6.1.0"))
    host, plain, permitted = host_subjects(state)
    details = subject_details(host)
    assert details["supported"] == "0x602e7"
    assert details["guest_permitted"] == "0x202e7"
    assert details["kvm_guest_supported"] == "0x602e7"
    assert details["cpuid_xss_supported"] == "0xdd00"
    assert details["kvm_xsave2_size"] == 4096
    assert subject_details(plain)["xcr0_supported"] == "0x202e7"
    assert subject_details(permitted)["xcr0_supported"] == "0x602e7"
    assert subject_details(permitted)["guest_permitted"] == "0x602e7"
    assert subject_details(permitted)["view"] == "after ARCH_REQ_XCOMP_GUEST_PERM(18)"
    json.dumps([subject_details(s) for s in (host, plain, permitted)])


def test_old_kernel_details_are_null_with_notes() -> None:
    """On 5.10 the masks are null in the details and the notes say why."""
    host = host_subjects(hostsource.probe(FakeSystem.sapphire_rapids("5.10.0")))[0]
    details = subject_details(host)
    assert details["supported"] is None and details["guest_permitted"] is None
    notes = details["notes"]
    assert isinstance(notes, list) and any("5.16" in note for note in notes)


# --- errors and options --------------------------------------------------------------


def test_template_with_kvm_skipped_is_input_error(tmp_path: Path) -> None:
    """A template with kvm=False is a usage error naming the template (exit 2)."""
    path = tmp_path / "t.json"
    path.write_text('{"cpuid_modifiers": []}')
    with pytest.raises(InputError) as caught:
        check_host(path, kvm=False, system=FakeSystem.genoa())
    assert str(path) in str(caught.value)
    assert caught.value.exit_code == 2


def test_bad_template_fails_before_probing(tmp_path: Path) -> None:
    """A malformed template raises InputError before anything is probed or requested."""
    path = tmp_path / "bad.json"
    path.write_text('{"cpuid_modifiers": 3}')
    fake = FakeSystem.sapphire_rapids("6.1.0")
    with pytest.raises(InputError):
        preboot(path, system=fake, request_permission=True)
    assert fake.calls == []


def test_preboot_requires_kvm() -> None:
    """preboot() needs /dev/kvm: ProbeError (exit 3) without it, unless kvm=False."""
    with pytest.raises(ProbeError) as caught:
        preboot(system=FakeSystem.genoa(kvm_errno=errno.ENOENT))
    assert caught.value.exit_code == 3


def test_preboot_error_carries_the_report() -> None:
    """PrebootError keeps the report, exits 1 and names the first error finding."""
    finding = Finding("XS0001", "amx-tile-pair", "error", "TILECFG without TILEDATA", "c", "f")
    report = Report((SubjectReport("kvm", "kvm", None, (finding,)),))
    error = PrebootError(report)
    assert error.report is report
    assert error.exit_code == 1
    assert "amx-tile-pair" in str(error)


def test_preboot_strict_fails_on_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    """preboot(strict=True) raises on warnings; the default returns the report."""
    warning = Finding("XS0002", "w", "warning", "m", "c", "f")
    report = Report((SubjectReport("kvm", "kvm", None, (warning,)),))
    monkeypatch.setattr(prebootmodule, "check_host", lambda *args, **kwargs: report)
    assert preboot() is report
    with pytest.raises(PrebootError) as caught:
        preboot(strict=True)
    assert caught.value.report is report


# --- with the rules ------------------------------------------------------------------


def test_check_host_changes_no_permission() -> None:
    """check_host() on an AMX host requests nothing in the caller: only the child does."""
    fake = FakeSystem.sapphire_rapids("6.1.0")
    before = fake.guest_permitted
    report = check_host(system=fake)
    assert [s.name for s in report.subjects] == ["host", "kvm", "kvm+guest-permission"]
    assert fake.guest_permitted == before
    assert _guest_requests(fake) == []
    assert [c for c in fake.child_calls if c[:2] == ("arch_prctl", ARCH_REQ_XCOMP_GUEST_PERM)]


def test_preboot_flags_half_enabled_amx_on_61_for_a_vmm_without_permission() -> None:
    """On 6.1 without permission KVM's view has TILECFG alone: an error for such a VMM."""
    with pytest.raises(PrebootError) as caught:
        preboot(system=FakeSystem.sapphire_rapids("6.1.0"), vmm_requests_permission=False)
    report = caught.value.report
    assert "amx-tile-pair" in _names(report, "kvm")
    assert "amx-tile-pair" not in _names(report, "kvm+guest-permission", "info")
    views = {s.name: s.details.get("verdict") for s in report.subjects}
    assert views == {"host": None, "kvm": "decides", "kvm+guest-permission": "information"}


def test_preboot_judges_the_permission_view_by_default() -> None:
    """A VMM that requests permission (the default) passes; the half AMX stays a warning."""
    report = preboot(system=FakeSystem.sapphire_rapids("6.1.0"))
    assert report.errors == []
    views = {s.name: s.details.get("verdict") for s in report.subjects}
    assert views == {"host": None, "kvm": "information", "kvm+guest-permission": "decides"}
    (warning,) = [f for f in report.warnings if f.name == "amx-tile-pair"]
    assert "ARCH_REQ_XCOMP_GUEST_PERM" in warning.fix and "without guest permission" in \
        warning.message
    kvm = next(s for s in report.subjects if s.name == "kvm")
    assert all(f.severity == "info" for f in kvm.findings if f.name != "amx-tile-pair")


def test_a_deciding_view_that_cannot_be_read_is_a_probe_error() -> None:
    """The permission view learnt in a child: when the child fails, exit 3, not a pass."""
    failing = FakeSystem.sapphire_rapids("6.1.0", failures={"spawn": errno.EAGAIN})
    with pytest.raises(ProbeError) as caught:
        preboot(system=failing)
    assert caught.value.exit_code == 3
    assert "guest permission" in str(caught.value) and "EAGAIN" in str(caught.value)
    # A VMM that does not request permission needs only the view this process reads.
    failing = FakeSystem.sapphire_rapids("6.1.0", failures={"spawn": errno.EAGAIN})
    with pytest.raises(PrebootError):
        preboot(system=failing, vmm_requests_permission=False)


def test_preboot_after_permission_request_passes_the_tile_pair() -> None:
    """With request_permission=True the one KVM view holds both tile components."""
    fake = FakeSystem.sapphire_rapids("6.1.0")
    try:
        report = preboot(system=fake, request_permission=True)
    except PrebootError as error:
        report = error.report
    assert [s.name for s in report.subjects] == ["host", "kvm"]
    assert "amx-tile-pair" not in _names(report, "kvm")
    assert fake.guest_permitted is not None and fake.guest_permitted & TILEDATA


@pytest.mark.shared
def test_preboot_reports_the_missing_template_leaf(data_dir: Path) -> None:
    """Firecracker refuses SPR_TO_T2_6.1.json without permission on 6.1; preboot says so."""
    template = data_dir / "firecracker" / "SPR_TO_T2_6.1.json"
    with pytest.raises(PrebootError) as caught:
        preboot(template, system=FakeSystem.sapphire_rapids("6.1.0"),
                vmm_requests_permission=False)
    report = caught.value.report
    assert "template-leaf-missing" in _names(report, "kvm")
    assert "template-leaf-missing" not in _names(report, "kvm+guest-permission", "info")
    # Firecracker requests permission first: the same template passes for it.
    passed = preboot(template, system=FakeSystem.sapphire_rapids("6.1.0"))
    assert passed.errors == []
    assert "template-leaf-missing" in _names(passed, "kvm", "info")


@needs_kvm
def test_real_check_host_json_carries_the_facts() -> None:
    """On this machine the host check's JSON holds XCR0, the masks and the KVM facts read."""
    real = RealSystem()
    report = check_host()
    data = json.loads(report.to_json_text())
    subjects = {s["name"]: s for s in data["subjects"]}
    assert set(subjects) >= {"host", "kvm"}
    host = subjects["host"]["details"]
    assert host["xcr0"] == hex(real.xgetbv(0))
    assert host["supported"] == hex(real.arch_prctl_get(0x1021))
    assert host["guest_permitted"] == hex(real.arch_prctl_get(ARCH_GET_XCOMP_GUEST_PERM))
    assert host["kvm_available"] is True
    assert host["kvm_xsave2_size"] >= 4096
    kvm = subjects["kvm"]["details"]
    assert int(kvm["xcr0_supported"], 16) & ~int(host["kvm_guest_supported"], 16) == 0
    assert kvm["entries"] > 0


@needs_kvm
def test_real_preboot_leaves_guest_permission_unchanged() -> None:
    """preboot() in this process leaves ARCH_GET_XCOMP_GUEST_PERM as it was."""
    real = RealSystem()
    before = real.arch_prctl_get(ARCH_GET_XCOMP_GUEST_PERM)
    with contextlib.suppress(PrebootError):
        preboot()
    assert real.arch_prctl_get(ARCH_GET_XCOMP_GUEST_PERM) == before


@needs_kvm
def test_real_host_command_leaves_guest_permission_unchanged() -> None:
    """In a fresh process, check_host() (the host command) keeps the guest permission."""
    code = (
        "from xstate_check.system.calls import default_system as d\n"
        "from xstate_check.preboot import check_host\n"
        "before = d().arch_prctl_get(0x1024)\n"
        "report = check_host()\n"
        "print(before, d().arch_prctl_get(0x1024), len(report.subjects))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    ).stdout.split()
    assert out[0] == out[1]
    assert int(out[2]) >= 2


@pytest.mark.parametrize("release", ["5.10.0", "6.8.0"])
def test_healthy_host_cpu_has_no_guest_errors(release: str) -> None:
    """The host's own CPUID (role cpu) is not a guest table: guest-only rules stay silent."""
    report = check_host(system=FakeSystem.sapphire_rapids(release))
    assert _names(report, "host") == set()


# --- the host command: exit codes as a user sees them -----------------------------------


@pytest.mark.parametrize(("code", "name"), [(errno.ENOENT, "ENOENT"), (errno.EACCES, "EACCES"),
                                            (errno.ENOTTY, "ENOTTY")])
def test_host_with_an_unusable_kvm_exits_3_naming_the_cause(
    code: int, name: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """host without a usable /dev/kvm: exit 3 and one message with the errno; --no-kvm: 0."""
    from xstate_check.cli import main

    monkeypatch.setattr(probemodule, "default_system",
                        lambda: FakeSystem.genoa(kvm_errno=code))
    assert main(["host"]) == 3
    captured = capsys.readouterr()
    assert name in captured.err and "/dev/kvm" in captured.err and captured.out == ""
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err
    assert main(["host", "--no-kvm"]) == 0
    out = capsys.readouterr().out
    assert "KVM not probed: the caller skipped /dev/kvm" in out


@pytest.mark.shared
def test_host_template_on_a_faked_spr_61_host_follows_the_vmm(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """host --template SPR_TO_T2_6.1 on SPR 6.1: 0 for Firecracker, 1 for a VMM without it."""
    from xstate_check.cli import main

    monkeypatch.setattr(probemodule, "default_system",
                        lambda: FakeSystem.sapphire_rapids("6.1.0"))
    template = str(data_dir / "firecracker" / "SPR_TO_T2_6.1.json")
    assert main(["host", "--template", template, "--format", "json"]) == 0
    document = json.loads(capsys.readouterr().out)
    verdicts = {s["name"]: s["details"].get("verdict") for s in document["subjects"]}
    assert verdicts["kvm+guest-permission"] == "decides"
    assert main(["host", "--template", template, "--no-vmm-requests-permission"]) == 1
    out = capsys.readouterr().out
    assert "error XS0401 template-leaf-missing" in out
