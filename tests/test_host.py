"""The host probe: this machine for real, and AMX hosts, old kernels and errors as modelled."""

from __future__ import annotations

import errno
import mmap
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fakehost import FakeSystem, sapphire_rapids_cpu, without_osxsave, without_xsave
from xstate_check.cpuid import Registers
from xstate_check.errors import ProbeError
from xstate_check.sources import host as hostsource
from xstate_check.system.abi import (
    ARCH_GET_XCOMP_GUEST_PERM,
    ARCH_REQ_XCOMP_GUEST_PERM,
    ARCH_REQ_XCOMP_PERM,
)
from xstate_check.system.calls import KVM_DEVICE, RealSystem, Uname
from xstate_check.system.isolated import ChildRun
from xstate_check.xfeatures import bits

TILECFG, TILEDATA = 1 << 17, 1 << 18
X86_LINUX = os.uname().machine == "x86_64" and os.uname().sysname == "Linux"
needs_x86 = pytest.mark.skipif(not X86_LINUX, reason="needs Linux on x86-64")
SRC = Path(__file__).resolve().parents[1] / "src"


def _kvm_usable() -> bool:
    try:
        os.close(os.open(KVM_DEVICE, os.O_RDWR | os.O_CLOEXEC))
    except OSError:
        return False
    return X86_LINUX


needs_kvm = pytest.mark.skipif(not _kvm_usable(), reason="needs a usable /dev/kvm")


class CountingReal:
    """This machine, with a count of every CPUID instruction and arch_prctl request."""

    def __init__(self) -> None:
        self.inner = RealSystem()
        self.cpuid_calls: list[tuple[int, int]] = []
        self.requests: list[int] = []
        self.children = 0

    def uname(self) -> Uname:
        return self.inner.uname()

    def cpuid(self, leaf: int, subleaf: int) -> Registers:
        self.cpuid_calls.append((leaf, subleaf))
        return self.inner.cpuid(leaf, subleaf)

    def xgetbv(self, index: int) -> int:
        return self.inner.xgetbv(index)

    def arch_prctl_get(self, option: int) -> int:
        return self.inner.arch_prctl_get(option)

    def arch_prctl(self, option: int, arg: int) -> int:
        self.requests.append(option)
        return self.inner.arch_prctl(option, arg)

    def open_kvm(self, path: str | None = None) -> int:
        return self.inner.open_kvm(path)

    def ioctl(self, fd: int, request: int, arg: int | bytearray = 0) -> int:
        return self.inner.ioctl(fd, request, arg)

    def close(self, fd: int) -> None:
        self.inner.close(fd)

    def map_vcpu(self, fd: int, size: int) -> mmap.mmap:
        return self.inner.map_vcpu(fd, size)

    def guest_memory(self, size: int) -> tuple[mmap.mmap, int]:
        return self.inner.guest_memory(size)

    def run_isolated(self, func: Callable[..., None], *args: object, timeout: float) -> ChildRun:
        self.children += 1
        return self.inner.run_isolated(func, *args, timeout=timeout)


def _leaf_0xd_reads(calls: list[tuple[object, ...]]) -> int:
    return sum(1 for call in calls if call[:2] == ("cpuid", 0xD))


def _requests(calls: list[tuple[object, ...]]) -> list[tuple[object, ...]]:
    return [
        call for call in calls
        if call[0] == "arch_prctl" and call[1] in (ARCH_REQ_XCOMP_PERM, ARCH_REQ_XCOMP_GUEST_PERM)
    ]


# --- this machine --------------------------------------------------------------------


@needs_x86
def test_real_probe_reads_masks_and_xcr0() -> None:
    """probe() reads XCR0 and the three permission masks; XCR0 equals the supported mask."""
    state = hostsource.probe(kvm=False)
    assert state.machine == "x86_64"
    assert state.kernel_release == os.uname().release
    assert state.xcr0 is not None
    assert state.supported == state.xcr0
    assert state.permitted is not None and state.permitted & ~state.supported == 0
    assert state.guest_permitted is not None and state.guest_permitted & ~state.supported == 0
    assert state.kvm_cpuid is None
    assert any("KVM not probed" in note for note in state.notes)


@needs_x86
def test_real_host_cpuid_leaf_0xd_costs_two_plus_components() -> None:
    """Leaf 0xD is read with exactly 2 + (enumerated components) CPUID instructions."""
    system = CountingReal()
    table = hostsource.host_cpuid(system)
    sub0, sub1 = table.get(0xD, 0), table.get(0xD, 1)
    components = [
        n for n in bits((sub0.edx << 32 | sub0.eax) | (sub1.edx << 32 | sub1.ecx)) if n >= 2
    ]
    reads = [call for call in system.cpuid_calls if call[0] == 0xD]
    assert len(reads) == 2 + len(components)
    assert sorted(sub for _, sub in reads) == [0, 1, *components]
    assert len(set(system.cpuid_calls)) == len(system.cpuid_calls)  # nothing read twice


@needs_x86
def test_real_host_cpuid_matches_the_instruction() -> None:
    """host_cpuid() holds what CPUID returns, with source host and role cpu."""
    real = RealSystem()
    table = hostsource.host_cpuid(real)
    assert table.get(0xD, 0) == real.cpuid(0xD, 0)
    assert table.get(1).ecx == real.cpuid(1, 0).ecx  # EBX holds the APIC ID, ECX is stable
    assert table.source == "host"
    assert (table.role, table.source_kind) == ("cpu", "host")


@needs_kvm
def test_real_probe_reads_kvm_facts_without_a_child() -> None:
    """With /dev/kvm the probe reads KVM's facts; without TILEDATA no child is started."""
    system = CountingReal()
    state = hostsource.probe(system)
    assert state.kvm_available
    assert state.kvm_cpuid is not None
    assert state.kvm_guest_supported is not None
    assert state.kvm_xsave2_size is not None and state.kvm_xsave2_size >= 4096
    if not (state.supported or 0) & TILEDATA:
        assert state.kvm_cpuid_permitted is state.kvm_cpuid
        assert system.children == 0
    assert system.requests == []


@needs_kvm
def test_real_probe_leaves_guest_permission_unchanged() -> None:
    """A default probe issues no ARCH_REQ_* and leaves ARCH_GET_XCOMP_GUEST_PERM as it was."""
    real = RealSystem()
    before = real.arch_prctl_get(ARCH_GET_XCOMP_GUEST_PERM)
    system = CountingReal()
    hostsource.probe(system)
    assert system.requests == []
    assert real.arch_prctl_get(ARCH_GET_XCOMP_GUEST_PERM) == before


@needs_kvm
def test_real_probe_in_a_fresh_process_keeps_its_permission() -> None:
    """In a fresh interpreter, the guest permission after probe() equals the one before."""
    code = (
        "from xstate_check.system.calls import default_system as d\n"
        "from xstate_check.sources.host import probe\n"
        "before = d().arch_prctl_get(0x1024)\n"
        "state = probe()\n"
        "print(before, d().arch_prctl_get(0x1024), state.kvm_available)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    ).stdout.split()
    assert out[0] == out[1]
    assert out[2] == "True"


# --- modelled hosts ------------------------------------------------------------------


def test_spr_host_cpuid_reads_fifteen_0xd_subleaves() -> None:
    """On Sapphire Rapids (0xD.0 EAX 0x602e7, 0xD.1 ECX 0xdd00) leaf 0xD costs 2 + 13 reads."""
    fake = FakeSystem.sapphire_rapids()
    table = hostsource.host_cpuid(fake)
    components = bin((0x602E7 | 0xDD00) & ~0x3).count("1")
    assert _leaf_0xd_reads(fake.calls) == 2 + components == 15
    assert table.get(0xD, 18) == Registers(0x2000, 0xB00, 0x6, 0)
    assert table.get(0x1D, 1).eax == 0x04002000


def test_spr_61_views_differ_and_permission_stays() -> None:
    """On a 6.1 SPR host the view without permission is half-enabled, the child's is whole."""
    fake = FakeSystem.sapphire_rapids("6.1.0")
    before = fake.guest_permitted
    state = hostsource.probe(fake)
    assert state.kvm_cpuid is not None and state.kvm_cpuid_permitted is not None
    assert state.kvm_cpuid.get(0xD, 0).eax == 0x202E7
    assert state.kvm_cpuid_permitted.get(0xD, 0).eax == 0x602E7
    assert state.kvm_cpuid_permitted.get(0xD, 0).ecx == 11008
    assert state.kvm_cpuid_permitted.meta["view"] == "after ARCH_REQ_XCOMP_GUEST_PERM(18)"
    assert fake.guest_permitted == before  # the caller's permission is untouched
    assert _requests(fake.calls) == []
    assert ("spawn",) in fake.calls
    assert _requests(fake.child_calls) == [("arch_prctl", ARCH_REQ_XCOMP_GUEST_PERM, 18)]
    assert state.permission_requested is False
    assert state.kvm_guest_supported == 0x602E7
    assert state.supported == 0x602E7
    assert state.guest_permitted == 0x202E7


def test_spr_68_views_differ_by_both_tile_bits() -> None:
    """On 6.4+ the view without permission has neither TILECFG nor TILEDATA."""
    state = hostsource.probe(FakeSystem.sapphire_rapids("6.8.0"))
    assert state.kvm_cpuid is not None and state.kvm_cpuid_permitted is not None
    assert state.kvm_cpuid.get(0xD, 0).eax & (TILECFG | TILEDATA) == 0
    assert not state.kvm_cpuid.has(0xD, 17)
    assert state.kvm_cpuid_permitted.has(0xD, 18)


def test_request_permission_changes_the_caller_only_when_asked() -> None:
    """request_permission=True requests TILEDATA in the caller; then no child is needed."""
    fake = FakeSystem.sapphire_rapids("6.1.0")
    state = hostsource.probe(fake, request_permission=True)
    assert state.permission_requested
    assert state.guest_permitted is not None and state.guest_permitted & TILEDATA
    assert fake.guest_permitted is not None and fake.guest_permitted & TILEDATA
    assert state.kvm_cpuid is not None
    assert state.kvm_cpuid.get(0xD, 0).eax == 0x602E7
    assert state.kvm_cpuid_permitted is state.kvm_cpuid
    assert ("spawn",) not in fake.calls


def test_locked_guest_permission_is_a_note() -> None:
    """A process with a vCPU gets EBUSY: the permitted view is unknown and a note says why."""
    fake = FakeSystem.sapphire_rapids("6.1.0", guest_locked=True)
    state = hostsource.probe(fake)
    assert state.kvm_cpuid_permitted is None
    assert any("EBUSY" in note and "vCPU" in note for note in state.notes)
    asked = hostsource.probe(FakeSystem.sapphire_rapids("6.1.0", guest_locked=True),
                             request_permission=True)
    assert asked.permission_requested is False
    assert any(note.startswith("ARCH_REQ_XCOMP_GUEST_PERM(18) failed with EBUSY")
               for note in asked.notes)


def test_child_failure_is_a_note() -> None:
    """When the child cannot be started the permitted view is None with a note."""
    fake = FakeSystem.sapphire_rapids("6.1.0", failures={"spawn": errno.EAGAIN})
    state = hostsource.probe(fake)
    assert state.kvm_cpuid is not None
    assert state.kvm_cpuid_permitted is None
    assert any("EAGAIN" in note for note in state.notes)


def test_permitted_view_can_be_skipped() -> None:
    """learn_permitted_view=False starts no child and says so."""
    fake = FakeSystem.sapphire_rapids("6.1.0")
    state = hostsource.probe(fake, learn_permitted_view=False)
    assert state.kvm_cpuid_permitted is None
    assert ("spawn",) not in fake.calls
    assert any("not learnt" in note for note in state.notes)


def test_host_without_tiledata_has_one_view() -> None:
    """Without TILEDATA (Genoa) the two views are the same table and no child runs."""
    fake = FakeSystem.genoa("6.8.0")
    state = hostsource.probe(fake)
    assert state.kvm_cpuid_permitted is state.kvm_cpuid
    assert ("spawn",) not in fake.calls
    assert state.kvm_guest_supported == 0x2E7  # AMD: no MPX in KVM (KVM-18)


def test_a_second_probe_of_an_unchanged_host_reuses_its_tables() -> None:
    """Probing an unchanged host again issues every CPUID instruction and ioctl again, and
    returns the very same (immutable) tables: what is derived from them is not redone."""
    fake = FakeSystem.genoa("6.8.0")
    first = hostsource.probe(fake)
    issued = len(fake.calls)
    second = hostsource.probe(fake)
    again = fake.calls[issued:]
    assert [call[0] for call in again] == [call[0] for call in fake.calls[:issued]]
    assert [call for call in again if call[0] == "cpuid"] == [
        call for call in fake.calls[:issued] if call[0] == "cpuid"]  # every CPUID again
    assert second.host_cpuid is first.host_cpuid and second.kvm_cpuid is first.kvm_cpuid
    assert second == first


def test_a_probe_of_a_changed_host_reads_new_tables() -> None:
    """Where the CPU's registers or KVM's table changed, the probe returns new tables that
    hold the new values, not those of a probe before."""
    fake = FakeSystem.sapphire_rapids("6.1.0")
    first = hostsource.probe(fake, learn_permitted_view=False)
    assert first.kvm_cpuid is not None and first.kvm_cpuid.get(0xD, 0).eax == 0x202E7
    fake.arch_prctl(ARCH_REQ_XCOMP_GUEST_PERM, 18)  # KVM's table now has both tile bits
    second = hostsource.probe(fake, learn_permitted_view=False)
    assert second.kvm_cpuid is not None and second.kvm_cpuid.get(0xD, 0).eax == 0x602E7
    assert first.kvm_cpuid.get(0xD, 0).eax == 0x202E7
    assert second.host_cpuid is first.host_cpuid  # the CPU's own registers did not change
    fake.cpu = without_osxsave(fake.cpu)
    third = hostsource.probe(fake, learn_permitted_view=False)
    assert third.host_cpuid is not None and first.host_cpuid is not None
    assert not third.host_cpuid.feature("OSXSAVE") and first.host_cpuid.feature("OSXSAVE")


def test_kernel_510_leaves_masks_unknown() -> None:
    """On 5.10 the arch_prctl masks are None with notes naming 5.16/5.17; nothing crashes."""
    fake = FakeSystem.sapphire_rapids("5.10.0")
    state = hostsource.probe(fake)
    assert (state.supported, state.permitted, state.guest_permitted) == (None, None, None)
    assert state.xcr0 == 0x2E7  # 5.10 does not enable AMX
    assert state.kvm_guest_supported is None and state.kvm_xsave2_size is None
    assert state.kvm_cpuid_permitted is state.kvm_cpuid
    text = "\n".join(state.notes)
    assert "ARCH_GET_XCOMP_SUPP failed with EINVAL" in text and "5.16" in text
    assert "ARCH_GET_XCOMP_GUEST_PERM failed with EINVAL" in text and "5.17" in text
    assert ("spawn",) not in fake.calls


def test_kernel_516_has_no_guest_api() -> None:
    """On 5.16 the process API works, the guest API is EINVAL, KVM has no AMX: one view."""
    fake = FakeSystem.sapphire_rapids("5.16.0")
    state = hostsource.probe(fake, request_permission=True)
    assert state.supported == 0x602E7
    assert state.guest_permitted is None
    assert state.permission_requested is False
    assert state.kvm_cpuid is not None and state.kvm_cpuid.get(0xD, 0).eax == 0x2E7
    assert state.kvm_cpuid_permitted is state.kvm_cpuid
    assert _requests(fake.calls) == []


@pytest.mark.parametrize(("code", "name"), [(errno.ENOENT, "ENOENT"), (errno.EACCES, "EACCES")])
def test_unusable_kvm_is_a_note_unless_required(code: int, name: str) -> None:
    """Missing or unreadable /dev/kvm: a note when optional, ProbeError (exit 3) when required."""
    state = hostsource.probe(FakeSystem.genoa(kvm_errno=code))
    assert not state.kvm_available and state.kvm_cpuid is None
    assert any(note.startswith(f"/dev/kvm is not usable: {name}") for note in state.notes)
    with pytest.raises(ProbeError) as caught:
        hostsource.probe(FakeSystem.genoa(kvm_errno=code), kvm=True)
    assert caught.value.errno == code
    assert caught.value.exit_code == 3
    assert name in str(caught.value)


def test_kvm_failure_after_open_closes_the_device() -> None:
    """An ioctl failure after open is a note, and /dev/kvm is closed again."""
    fake = FakeSystem.genoa(failures={"KVM_GET_SUPPORTED_CPUID": errno.EIO})
    state = hostsource.probe(fake)
    assert not state.kvm_available
    assert fake.open_fds == set()
    assert any("EIO" in note for note in state.notes)


def test_kvm_skipped_is_not_opened() -> None:
    """kvm=False never opens /dev/kvm."""
    fake = FakeSystem.genoa()
    hostsource.probe(fake, kvm=False)
    assert not any(call[0] == "open" for call in fake.calls)


@pytest.mark.parametrize("machine", ["aarch64", "riscv64", "i686"])
def test_non_x86_machine_cannot_be_probed(machine: str) -> None:
    """A machine that is not x86-64 is a ProbeError before any CPUID or arch_prctl."""
    fake = FakeSystem.genoa(machine=machine)
    with pytest.raises(ProbeError, match=machine):
        hostsource.probe(fake)
    with pytest.raises(ProbeError):
        hostsource.host_cpuid(fake)
    with pytest.raises(ProbeError):
        hostsource.kvm_cpuid(fake)
    assert {call[0] for call in fake.calls} == {"uname"}


def test_cpu_without_osxsave_runs_no_xgetbv() -> None:
    """With OSXSAVE clear no XGETBV runs (the fake would raise SIGILL) and a note says why."""
    fake = FakeSystem(without_osxsave(sapphire_rapids_cpu()), "6.8.0")
    state = hostsource.probe(fake)
    assert state.xcr0 is None and state.xinuse is None
    assert not any(call[0] == "xgetbv" for call in fake.calls)
    assert any("OSXSAVE is clear" in note and "SIGILL" in note for note in state.notes)
    assert state.supported == 0x3  # FP|SSE are reported even without XSAVE


def test_cpu_without_xsave_reads_two_0xd_subleaves() -> None:
    """A CPU without XSAVE costs two leaf 0xD reads and gives empty masks, not a crash."""
    fake = FakeSystem(without_xsave(sapphire_rapids_cpu()), "6.8.0")
    state = hostsource.probe(fake)
    assert _leaf_0xd_reads(fake.calls) == 2
    assert state.xcr0 is None
    assert state.kvm_cpuid is not None and state.kvm_cpuid.get(0xD, 0).eax == 0


def test_cpu_without_xgetbv1_reads_xcr0_only() -> None:
    """Without XGETBV1 only XGETBV(0) runs; XINUSE stays None with a note."""
    cpu = sapphire_rapids_cpu()
    cpu = cpu.with_registers(0xD, 1, eax=cpu.get(0xD, 1).eax & ~0x4)
    fake = FakeSystem(cpu, "6.8.0")
    state = hostsource.probe(fake)
    assert state.xcr0 == 0x602E7 and state.xinuse is None
    assert ("xgetbv", 1) not in fake.calls
    assert any("XGETBV1" in note for note in state.notes)


def test_kvm_cpuid_without_kvm_is_a_probe_error() -> None:
    """host.kvm_cpuid() raises ProbeError naming the errno when /dev/kvm is missing."""
    with pytest.raises(ProbeError, match="ENOENT") as caught:
        hostsource.kvm_cpuid(FakeSystem.genoa(kvm_errno=errno.ENOENT))
    assert caught.value.errno == errno.ENOENT


def test_permitted_kvm_cpuid_keeps_the_caller() -> None:
    """permitted_kvm_cpuid() learns the permitted view in a copy and changes nothing here."""
    fake = FakeSystem.sapphire_rapids("6.8.0")
    table = hostsource.permitted_kvm_cpuid(fake, release="6.8.0")
    assert table.get(0xD, 0).eax == 0x602E7
    assert table.meta["kernel_release"] == "6.8.0"
    assert fake.guest_permitted is not None and not fake.guest_permitted & TILEDATA


@settings(max_examples=150, deadline=None)
@given(
    cpu=st.sampled_from(["spr", "genoa", "spr-no-osxsave", "spr-no-xsave"]),
    release=st.sampled_from(["4.19.0", "5.10.0", "5.16.3", "5.17.0", "6.1.0", "6.4.0", "6.18.2"]),
    kvm_errno=st.sampled_from([None, errno.ENOENT, errno.EACCES, errno.ENXIO]),
    locked=st.booleans(),
    request=st.booleans(),
    kvm=st.sampled_from([None, False]),
)
def test_probe_is_total_and_asks_only_when_told(
    *,
    cpu: str, release: str, kvm_errno: int | None, locked: bool, request: bool,
    kvm: bool | None,
) -> None:
    """Whatever the modelled host, probe() returns a HostState; only request=True asks."""
    table = {
        "spr": sapphire_rapids_cpu(),
        "genoa": FakeSystem.genoa().cpu,
        "spr-no-osxsave": without_osxsave(sapphire_rapids_cpu()),
        "spr-no-xsave": without_xsave(sapphire_rapids_cpu()),
    }[cpu]
    fake = FakeSystem(table, release, kvm_errno=kvm_errno, guest_locked=locked)
    before = fake.guest_permitted
    state = hostsource.probe(fake, kvm=kvm, request_permission=request)
    if not request:
        assert fake.guest_permitted == before
        assert _requests(fake.calls) == []
    assert state.kvm_available == (kvm is None and kvm_errno is None)
    assert _leaf_0xd_reads(fake.calls) <= 2 + 13
    assert fake.open_fds == set()
    for view in (state.kvm_cpuid, state.kvm_cpuid_permitted):
        if view is not None and state.kvm_guest_supported is not None:
            regs = view.get(0xD, 0)
            assert (regs.edx << 32 | regs.eax) & ~state.kvm_guest_supported == 0
