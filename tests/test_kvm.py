"""KVM as a source: the real /dev/kvm ioctls here, and the modelled kernels and errors."""

from __future__ import annotations

import errno
import json
import mmap
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fakehost import FakeSystem
from xstate_check.cpuid import Registers
from xstate_check.layout import XsaveLayout
from xstate_check.system import abi as kvmabi
from xstate_check.system import kvm as kvmsource
from xstate_check.system.calls import KVM_DEVICE, RealSystem, Uname
from xstate_check.system.isolated import ChildRun
from xstate_check.system.protocol import System


def _kvm_usable() -> bool:
    try:
        os.close(os.open(KVM_DEVICE, os.O_RDWR | os.O_CLOEXEC))
    except OSError:
        return False
    return os.uname().machine == "x86_64"


needs_kvm = pytest.mark.skipif(not _kvm_usable(), reason="needs a usable /dev/kvm")


class Counting:
    """A System that forwards to another one and counts the ioctls it issues."""

    def __init__(self, inner: System) -> None:
        self.inner = inner
        self.ioctls: list[int] = []

    def uname(self) -> Uname:
        return self.inner.uname()

    def cpuid(self, leaf: int, subleaf: int) -> Registers:
        return self.inner.cpuid(leaf, subleaf)

    def xgetbv(self, index: int) -> int:
        return self.inner.xgetbv(index)

    def arch_prctl_get(self, option: int) -> int:
        return self.inner.arch_prctl_get(option)

    def arch_prctl(self, option: int, arg: int) -> int:
        return self.inner.arch_prctl(option, arg)

    def open_kvm(self, path: str | None = None) -> int:
        return self.inner.open_kvm(path)

    def ioctl(self, fd: int, request: int, arg: int | bytearray = 0) -> int:
        self.ioctls.append(request)
        return self.inner.ioctl(fd, request, arg)

    def close(self, fd: int) -> None:
        self.inner.close(fd)

    def map_vcpu(self, fd: int, size: int) -> mmap.mmap:
        return self.inner.map_vcpu(fd, size)

    def guest_memory(self, size: int) -> tuple[mmap.mmap, int]:
        return self.inner.guest_memory(size)

    def run_isolated(self, func: Callable[..., None], *args: object, timeout: float) -> ChildRun:
        return self.inner.run_isolated(func, *args, timeout=timeout)


@pytest.fixture
def real_fd() -> Iterator[tuple[RealSystem, int]]:
    """Return a RealSystem and an open /dev/kvm descriptor."""
    system = RealSystem()
    fd = kvmsource.open_kvm(system)
    try:
        yield system, fd
    finally:
        system.close(fd)


def _vm_fds() -> list[str]:
    links = []
    for entry in Path("/proc/self/fd").iterdir():
        try:
            links.append(os.readlink(entry))
        except OSError:
            continue
    return [link for link in links if "kvm-vm" in link or "kvm-vcpu" in link]


@needs_kvm
def test_real_supported_cpuid_is_read(real_fd: tuple[RealSystem, int]) -> None:
    """KVM_GET_SUPPORTED_CPUID returns leaf 0 with the host's vendor and a 0xD.0 entry."""
    system, fd = real_fd
    table = kvmsource.supported_cpuid(system, fd)
    host = system.cpuid(0, 0)
    assert table.get(0)[1:] == host[1:]  # vendor registers
    assert table.has(0xD, 0)
    assert table.flag(0xD, 0) & kvmabi.KVM_CPUID_FLAG_SIGNIFCANT_INDEX
    assert (table.role, table.source_kind) == ("guest", "kvm")
    assert table.source == "kvm"


@needs_kvm
def test_real_table_of_the_same_bytes_is_the_same(real_fd: tuple[RealSystem, int]) -> None:
    """The same kvm_cpuid2 bytes, source and meta give the same immutable CpuidSet (its
    derived values kept); other meta, or other bytes, give another."""
    system, fd = real_fd
    raw = kvmsource.supported_cpuid2(system, fd)
    table = kvmsource.unpack_cpuid2(raw, "kvm", view="one")
    assert kvmsource.unpack_cpuid2(bytearray(raw), "kvm", view="one") is table
    other_view = kvmsource.unpack_cpuid2(raw, "kvm", view="two")
    assert other_view is not table and other_view.meta["view"] == "two"
    assert dict(other_view.entries) == dict(table.entries)
    changed = bytearray(raw)
    header = kvmabi.CPUID2_HEADER.size
    eax_of_first = header + 12  # function, index, flags, then eax
    changed[eax_of_first] ^= 1
    edited = kvmsource.unpack_cpuid2(changed, "kvm", view="one")
    first = next(iter(table.entries))
    assert edited is not table and edited.entries[first].eax == table.entries[first].eax ^ 1


@needs_kvm
def test_real_buffer_grows_on_e2big(real_fd: tuple[RealSystem, int]) -> None:
    """Starting with room for one entry, the E2BIG answers make the buffer grow until it fits."""
    system, fd = real_fd
    counting = Counting(system)
    small = kvmsource.supported_cpuid(counting, fd, capacity=1)
    calls = counting.ioctls.count(kvmabi.KVM_GET_SUPPORTED_CPUID)
    assert calls > 1
    assert 2 ** (calls - 2) < len(small) <= 2 ** (calls - 1)
    assert small == kvmsource.supported_cpuid(system, fd)


@needs_kvm
def test_real_e2big_past_the_limit_is_raised(real_fd: tuple[RealSystem, int]) -> None:
    """When even the largest allowed buffer is too small, E2BIG reaches the caller."""
    system, fd = real_fd
    with pytest.raises(OSError) as caught:
        kvmsource.supported_cpuid(system, fd, capacity=1, max_capacity=2)
    assert caught.value.errno == errno.E2BIG
    assert caught.value.filename == "KVM_GET_SUPPORTED_CPUID"


@needs_kvm
def test_real_guest_supp_covers_the_cpuid_mask(real_fd: tuple[RealSystem, int]) -> None:
    """KVM_X86_XCOMP_GUEST_SUPP (unfiltered) contains KVM's 0xD.0 mask (filtered)."""
    system, fd = real_fd
    supported = kvmsource.xcomp_guest_supp(system, fd)
    table = kvmsource.supported_cpuid(system, fd)
    regs = table.get(0xD, 0)
    assert supported is not None
    assert (regs.edx << 32 | regs.eax) & ~supported == 0


@needs_kvm
def test_real_xsave2_size_matches_the_cpuid_size(real_fd: tuple[RealSystem, int]) -> None:
    """KVM_CAP_XSAVE2 on /dev/kvm is max(4096, the standard size KVM reports in 0xD.0 ECX)."""
    system, fd = real_fd
    size = kvmsource.xsave2_size(system, fd)
    table = kvmsource.supported_cpuid(system, fd)
    assert size == max(4096, table.get(0xD, 0).ecx)


@needs_kvm
def test_real_reads_create_no_vm() -> None:
    """Reading KVM's facts opens no VM or vCPU descriptor and leaves no descriptor open."""
    system = RealSystem()
    before = set(os.listdir("/proc/self/fd"))
    with kvmsource.opened(system) as fd:
        kvmsource.supported_cpuid(system, fd)
        kvmsource.xcomp_guest_supp(system, fd)
        kvmsource.xsave2_size(system, fd)
        assert _vm_fds() == []
    assert set(os.listdir("/proc/self/fd")) <= before


@needs_kvm
def test_real_kvm_cpuid_records_the_kernel() -> None:
    """kvm_cpuid() records the kernel release in the table's meta."""
    table = kvmsource.kvm_cpuid(RealSystem())
    assert table.meta["kernel_release"] == os.uname().release


def test_missing_device_is_file_not_found() -> None:
    """Without /dev/kvm, opening it raises FileNotFoundError (ENOENT)."""
    fake = FakeSystem.genoa(kvm_errno=errno.ENOENT)
    with pytest.raises(FileNotFoundError):
        kvmsource.kvm_cpuid(fake)


def test_unreadable_device_is_permission_error() -> None:
    """An unreadable /dev/kvm raises PermissionError (EACCES)."""
    fake = FakeSystem.genoa(kvm_errno=errno.EACCES)
    with pytest.raises(PermissionError):
        kvmsource.kvm_cpuid(fake)


def test_wrong_api_version_is_refused_and_closed() -> None:
    """An API version other than 12 is refused with EPROTO, and the descriptor is closed."""
    fake = FakeSystem.genoa(kvm_api_version=11)
    with pytest.raises(OSError) as caught:
        kvmsource.open_kvm(fake)
    assert caught.value.errno == errno.EPROTO
    assert fake.open_fds == set()


def test_tables_are_kept_one_per_cpu_up_to_a_bound() -> None:
    """KVM's table holds the APIC ID of the CPU the ioctl ran on: a table is kept for each
    (a process moving between CPUs), sixteen at most; past that the first ones stay."""
    table = FakeSystem.genoa().kvm_supported_cpuid()
    kvmsource._MADE.clear()  # what other tests left
    made = []
    for apic_id in range(24):
        leaf1 = table.get(1)
        per_cpu = table.with_registers(1, 0, ebx=leaf1.ebx & 0x00FF_FFFF | apic_id << 24)
        raw = bytes(kvmsource.pack_cpuid2(per_cpu))
        made.append((raw, kvmsource.unpack_cpuid2(raw, "kvm", view="bound test")))
    assert len({id(found) for _, found in made}) == 24
    kept = [kvmsource.unpack_cpuid2(raw, "kvm", view="bound test") is found
            for raw, found in made]
    assert kept[:15] == [True] * 15 and kept.count(True) <= kvmsource._MADE_KEPT == 16
    assert made[3][1].get(1).ebx >> 24 == 3


def test_fake_e2big_grows_then_fits() -> None:
    """The modelled E2BIG makes the buffer double from 4 entries until the table fits."""
    fake = FakeSystem.sapphire_rapids("6.8.0")
    with kvmsource.opened(fake) as fd:
        table = kvmsource.supported_cpuid(fake, fd, capacity=4)
    requests = [call for call in fake.calls if call == ("ioctl", kvmabi.KVM_GET_SUPPORTED_CPUID)]
    size = len(table)
    assert len(requests) == next(n for n in range(1, 10) if 4 * 2 ** (n - 1) >= size)
    assert table == fake.kvm_supported_cpuid()


def test_fake_clamped_kernel_keeps_answering_e2big() -> None:
    """A kernel that clamps nent below the table size gives E2BIG at every size."""
    fake = FakeSystem.sapphire_rapids("6.8.0", kvm_max_entries=8)
    with kvmsource.opened(fake) as fd, pytest.raises(OSError) as caught:
        kvmsource.supported_cpuid(fake, fd)
    assert caught.value.errno == errno.E2BIG


@pytest.mark.parametrize(
    ("release", "xcr0_without_permission"),
    [
        # Before 5.17 KVM has no AMX at all (SPR, 5.10 host: 0x2e7, RULES-CATALOGUE.md §1).
        ("5.10.0", 0x2E7),
        # 5.17-6.3: TILECFG without TILEDATA, the XCR0 of the guest oops (RAX=0x202e7, §9).
        ("5.17.0", 0x202E7),
        ("6.1.0", 0x202E7),
        # 6.4+: "Filter out XTILE_CFG if XTILE_DATA isn't permitted" (KVM-06).
        ("6.4.0", 0x2E7),
        ("6.8.0", 0x2E7),
    ],
)
def test_fake_half_enabled_amx_by_kernel(release: str, xcr0_without_permission: int) -> None:
    """KVM's 0xD.0 mask without guest permission depends on the kernel version (KVM-06)."""
    fake = FakeSystem.sapphire_rapids(release)
    table = kvmsource.kvm_cpuid(fake)
    assert table.get(0xD, 0).eax == xcr0_without_permission
    layout = XsaveLayout.from_cpuid(table)
    assert table.get(0xD, 0).ecx == layout.standard_size(xcr0_without_permission)


def test_fake_permission_enables_both_tile_components() -> None:
    """After ARCH_REQ_XCOMP_GUEST_PERM(18) KVM reports 0x602e7 and 11008 bytes (SPR, §1)."""
    fake = FakeSystem.sapphire_rapids("6.1.0")
    fake.arch_prctl(0x1025, 18)
    table = kvmsource.kvm_cpuid(fake)
    assert table.get(0xD, 0) == Registers(0x602E7, 0x2B00, 0x2B00, 0)
    assert table.has(0xD, 18)
    with kvmsource.opened(fake) as fd:
        assert kvmsource.xsave2_size(fake, fd) == 11008
        assert kvmsource.xcomp_guest_supp(fake, fd) == 0x602E7


def test_fake_old_kernel_has_no_guest_supp_nor_xsave2() -> None:
    """Before 5.17 KVM_GET_DEVICE_ATTR fails (None) and KVM_CAP_XSAVE2 is 0 (None)."""
    fake = FakeSystem.sapphire_rapids("5.15.0")
    with kvmsource.opened(fake) as fd:
        assert kvmsource.xcomp_guest_supp(fake, fd) is None
        assert kvmsource.xsave2_size(fake, fd) is None


def test_fake_guest_supp_is_unfiltered() -> None:
    """KVM_X86_XCOMP_GUEST_SUPP reports TILEDATA even without the guest permission (KVM-09)."""
    fake = FakeSystem.sapphire_rapids("6.8.0")
    with kvmsource.opened(fake) as fd:
        assert kvmsource.xcomp_guest_supp(fake, fd) == 0x602E7
        assert kvmsource.xsave2_size(fake, fd) == 4096


def test_other_ioctl_errors_keep_their_errno() -> None:
    """An unexpected errno from KVM_GET_SUPPORTED_CPUID reaches the caller with its context."""
    fake = FakeSystem.genoa(failures={"KVM_GET_SUPPORTED_CPUID": errno.EIO})
    with pytest.raises(OSError) as caught:
        kvmsource.kvm_cpuid(fake)
    assert caught.value.errno == errno.EIO
    assert fake.open_fds == set()


def _fingerprint_leaves(path: Path) -> dict[tuple[int, int], tuple[int, ...]]:
    data = json.loads(path.read_text())
    leaves = {}
    for modifier in data["guest_cpu_config"]["cpuid_modifiers"]:
        key = (int(modifier["leaf"], 16), int(modifier["subleaf"], 16))
        if key[0] in (0xD, 0x1D, 0x1E):
            leaves[key] = tuple(int(r["bitmap"][2:], 2) for r in modifier["modifiers"])
    return leaves


@pytest.mark.shared
@pytest.mark.parametrize("kernel", ["5.10", "6.1", "6.18"])
def test_fake_kvm_matches_firecracker_fingerprints(data_dir: Path, kernel: str) -> None:
    """The modelled KVM view of SPR equals Firecracker's real SPR guest fingerprints.

    Leaves 0xD, 0x1D and 0x1E after the permission request, as Firecracker reads them, from
    ``fingerprint_INTEL_SAPPHIRE_RAPIDS_<kernel>host.json``; 0xD.0/0xD.1 EBX are left out
    (they hold the runtime size for XCR0 = 1, which Firecracker's own test masks too).
    """
    expected = _fingerprint_leaves(
        data_dir / "firecracker" / f"fingerprint_INTEL_SAPPHIRE_RAPIDS_{kernel}host.json"
    )
    fake = FakeSystem.sapphire_rapids(f"{kernel}.0")
    if kernel != "5.10":
        fake.arch_prctl(0x1025, 18)
    table = kvmsource.kvm_cpuid(fake)
    got = {key: tuple(regs) for key, regs in table.entries.items() if key[0] in (0xD, 0x1D, 0x1E)}
    assert set(got) == set(expected)
    for key in ((0xD, 0), (0xD, 1)):
        got[key] = got[key][:1] + got[key][2:]
        expected[key] = expected[key][:1] + expected[key][2:]
    assert got == expected
