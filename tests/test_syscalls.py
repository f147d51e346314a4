"""The system layer: real arch_prctl/CPUID/XGETBV on this machine, errno mapping, the ABI."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from fakehost import FakeSystem, IllegalInstructionError
from xstate_check.system import abi
from xstate_check.system.abi import (
    ARCH_GET_XCOMP_GUEST_PERM,
    ARCH_GET_XCOMP_PERM,
    ARCH_GET_XCOMP_SUPP,
    ARCH_REQ_XCOMP_GUEST_PERM,
    ARCH_REQ_XCOMP_PERM,
)
from xstate_check.system.calls import RealSystem, errno_meaning, os_error, req_xcomp_guest_perm
from xstate_check.system.protocol import System

X86_LINUX = os.uname().machine == "x86_64" and os.uname().sysname == "Linux"
needs_x86 = pytest.mark.skipif(not X86_LINUX, reason="needs Linux on x86-64")


def get_xcomp_supp(system: System) -> int:
    """Return ARCH_GET_XCOMP_SUPP: the xfeatures the kernel can enable for a process."""
    return system.arch_prctl_get(ARCH_GET_XCOMP_SUPP)


def get_xcomp_perm(system: System) -> int:
    """Return ARCH_GET_XCOMP_PERM: this process's permitted xfeatures."""
    return system.arch_prctl_get(ARCH_GET_XCOMP_PERM)


def get_xcomp_guest_perm(system: System) -> int:
    """Return ARCH_GET_XCOMP_GUEST_PERM: the xfeatures this process's vCPUs may get."""
    return system.arch_prctl_get(ARCH_GET_XCOMP_GUEST_PERM)


def req_xcomp_perm(system: System, component: int) -> None:
    """Call ARCH_REQ_XCOMP_PERM(component); changes this process's permission."""
    system.arch_prctl(ARCH_REQ_XCOMP_PERM, component)


@pytest.fixture
def real() -> RealSystem:
    """Return a RealSystem of this machine."""
    return RealSystem()


def test_option_values_match_the_uapi_header() -> None:
    """The arch_prctl option numbers are those of arch/x86/include/uapi/asm/prctl.h."""
    assert (ARCH_GET_XCOMP_SUPP, ARCH_GET_XCOMP_PERM, ARCH_REQ_XCOMP_PERM) == (
        0x1021, 0x1022, 0x1023,
    )
    assert (ARCH_GET_XCOMP_GUEST_PERM, ARCH_REQ_XCOMP_GUEST_PERM) == (0x1024, 0x1025)
    assert abi.SYS_ARCH_PRCTL == 158


def test_abi_table_names_each_number_and_its_header() -> None:
    """REQUESTS lists every ioctl and option once, with the header that defines it.

    The ioctl values are those the _IOC macros give for the uapi structure sizes (as
    ``printf("%#lx", KVM_GET_SUPPORTED_CPUID)`` prints them on x86-64).
    """
    by_name = {request.name: request for request in abi.REQUESTS}
    assert len(by_name) == len(abi.REQUESTS)
    assert by_name["KVM_GET_SUPPORTED_CPUID"] == (
        "KVM_GET_SUPPORTED_CPUID", 0xC008AE05, "include/uapi/linux/kvm.h"
    )
    assert by_name["KVM_SET_CPUID2"].value == 0x4008AE90
    assert by_name["KVM_GET_DEVICE_ATTR"].value == 0x4018AEE2
    assert by_name["KVM_CHECK_EXTENSION"].value == 0xAE03
    assert by_name["KVM_RUN"].value == 0xAE80
    assert by_name["KVM_GET_XCRS"].value == 0x8188AEA6
    assert by_name["KVM_SET_SREGS"].value == 0x4138AE84
    assert by_name["ARCH_REQ_XCOMP_GUEST_PERM"].header == "arch/x86/include/uapi/asm/prctl.h"
    assert by_name["SYS_arch_prctl"].header == "arch/x86/entry/syscalls/syscall_64.tbl"


def test_os_error_maps_errno_to_the_python_subclass() -> None:
    """os_error() keeps the errno, so FileNotFoundError/PermissionError appear by themselves."""
    assert isinstance(os_error(errno.ENOENT, "/dev/kvm"), FileNotFoundError)
    assert isinstance(os_error(errno.EACCES, "/dev/kvm"), PermissionError)
    error = os_error(errno.EBUSY, "ARCH_REQ_XCOMP_GUEST_PERM(18)")
    assert (error.errno, error.filename) == (errno.EBUSY, "ARCH_REQ_XCOMP_GUEST_PERM(18)")


def test_errno_meaning_names_kernel_versions() -> None:
    """EINVAL means 'older than 5.16' for the process API and 'older than 5.17' for guests."""
    assert "5.16" in errno_meaning(ARCH_GET_XCOMP_SUPP, errno.EINVAL)
    assert "5.17" in errno_meaning(ARCH_GET_XCOMP_GUEST_PERM, errno.EINVAL)
    assert "5.17" in errno_meaning(ARCH_REQ_XCOMP_GUEST_PERM, errno.EINVAL)
    assert "vCPU" in errno_meaning(ARCH_REQ_XCOMP_GUEST_PERM, errno.EBUSY)
    assert "sigaltstack" in errno_meaning(ARCH_REQ_XCOMP_PERM, errno.ENOSPC)
    assert "dynamic" in errno_meaning(ARCH_REQ_XCOMP_PERM, errno.EOPNOTSUPP)


@needs_x86
def test_real_supported_mask_is_the_kernels_xcr0(real: RealSystem) -> None:
    """ARCH_GET_XCOMP_SUPP equals XCR0 read with XGETBV: Linux enables every user xfeature."""
    supported = get_xcomp_supp(real)
    assert supported == real.xgetbv(0)
    assert supported & 0x3 == 0x3


@needs_x86
def test_real_permissions_are_within_supported(real: RealSystem) -> None:
    """The process and guest permissions are subsets of the supported mask."""
    supported = get_xcomp_supp(real)
    assert get_xcomp_perm(real) & ~supported == 0
    assert get_xcomp_guest_perm(real) & ~supported == 0
    # Non-dynamic xfeatures are permitted by default (everything but TILEDATA).
    assert get_xcomp_perm(real) | (1 << 18) == supported | (1 << 18)


@needs_x86
def test_real_unknown_option_is_einval(real: RealSystem) -> None:
    """An arch_prctl option the kernel does not know fails with EINVAL, as on old kernels."""
    with pytest.raises(OSError) as caught:
        real.arch_prctl_get(0x10FF)
    assert caught.value.errno == errno.EINVAL


@needs_x86
def test_real_request_of_a_non_facility_is_eopnotsupp(real: RealSystem) -> None:
    """ARCH_REQ_XCOMP_PERM(17) fails with EOPNOTSUPP: only 18 names the AMX facility."""
    before = get_xcomp_perm(real)
    with pytest.raises(OSError) as caught:
        req_xcomp_perm(real, 17)
    assert caught.value.errno == errno.EOPNOTSUPP
    assert caught.value.filename == "ARCH_REQ_XCOMP_PERM(17)"
    assert get_xcomp_perm(real) == before


@needs_x86
def test_real_request_out_of_range_is_einval(real: RealSystem) -> None:
    """ARCH_REQ_XCOMP_PERM(64) fails with EINVAL (index >= XFEATURE_MAX)."""
    with pytest.raises(OSError) as caught:
        req_xcomp_perm(real, 64)
    assert caught.value.errno == errno.EINVAL


def test_libc_syscall_keeps_errno_and_fills_a_uint64() -> None:
    """system.libc's syscall(2) returns what the kernel returns, keeps its errno, and passes
    integers and a uint64_t's address as the ctypes package would."""
    from xstate_check.system import libc

    syscall = libc.syscall_function()
    sys_getpid, sys_getppid = 39, 110
    assert syscall(libc.c_long(sys_getpid)) == os.getpid()
    assert syscall(libc.c_long(sys_getppid)) == os.getppid()
    libc.set_errno(0)
    assert syscall(libc.c_long(-1)) == -1 and libc.get_errno() == errno.ENOSYS
    cell = libc.c_uint64(2**64 - 1)
    assert cell.value == 2**64 - 1 and libc.addressof(cell) > 0
    assert libc.c_ulong(2**64 - 1).value == 2**64 - 1 and libc.c_long(-5).value == -5


@needs_x86
def test_real_cpuid_reads_the_vendor_of_proc_cpuinfo(real: RealSystem) -> None:
    """CPUID leaf 0 spells the vendor /proc/cpuinfo reports."""
    regs = real.cpuid(0, 0)
    vendor = b"".join(r.to_bytes(4, "little") for r in (regs.ebx, regs.edx, regs.ecx)).decode()
    cpuinfo = Path("/proc/cpuinfo").read_text()
    assert f"vendor_id\t: {vendor}" in cpuinfo


@needs_x86
def test_real_xinuse_is_within_xcr0(real: RealSystem) -> None:
    """XGETBV(1) (XINUSE) only reports components enabled in XCR0."""
    leaf1 = real.cpuid(1, 0)
    sub1 = real.cpuid(0xD, 1)
    if not (leaf1.ecx >> 27 & 1 and sub1.eax >> 2 & 1):
        pytest.skip("this CPU has no OSXSAVE or no XGETBV1")
    assert real.xgetbv(1) & ~real.xgetbv(0) == 0


def test_fake_xgetbv_without_osxsave_is_sigill() -> None:
    """The fake refuses XGETBV where a real CPU raises #UD (the process would die)."""
    fake = FakeSystem.sapphire_rapids()
    fake.cpu = fake.cpu.with_registers(1, 0, ecx=fake.cpu.get(1).ecx & ~(1 << 27))
    with pytest.raises(IllegalInstructionError):
        fake.xgetbv(0)


def test_fake_guest_request_is_ebusy_once_a_vcpu_exists() -> None:
    """ARCH_REQ_XCOMP_GUEST_PERM fails with EBUSY after the first vCPU (permission locked)."""
    fake = FakeSystem.sapphire_rapids("6.8.0", guest_locked=True)
    with pytest.raises(OSError) as caught:
        req_xcomp_guest_perm(fake, 18)
    assert caught.value.errno == errno.EBUSY
    req_xcomp_perm(fake, 18)  # the process permission is not locked
    assert get_xcomp_perm(fake) & (1 << 18)


def test_fake_request_with_small_sigaltstack_is_enospc() -> None:
    """ARCH_REQ_XCOMP_PERM fails with ENOSPC when a sigaltstack is too small; guests do not."""
    fake = FakeSystem.sapphire_rapids("6.8.0", sigaltstack_too_small=True)
    with pytest.raises(OSError) as caught:
        req_xcomp_perm(fake, 18)
    assert caught.value.errno == errno.ENOSPC
    req_xcomp_guest_perm(fake, 18)
    assert get_xcomp_guest_perm(fake) & (1 << 18)


@pytest.mark.parametrize(
    ("release", "process_errno", "guest_errno"),
    [
        ("5.15.0", errno.EINVAL, errno.EINVAL),
        ("5.16.0", None, errno.EINVAL),
        ("5.17.0", None, None),
    ],
)
def test_fake_old_kernels_answer_einval(
    release: str, process_errno: int | None, guest_errno: int | None
) -> None:
    """Kernels before 5.16 lack the process API and before 5.17 the guest API (EINVAL)."""
    fake = FakeSystem.sapphire_rapids(release)
    for option, expected in (
        (ARCH_GET_XCOMP_SUPP, process_errno),
        (ARCH_GET_XCOMP_PERM, process_errno),
        (ARCH_GET_XCOMP_GUEST_PERM, guest_errno),
    ):
        if expected is None:
            assert fake.arch_prctl_get(option) & 0x3 == 0x3
        else:
            with pytest.raises(OSError) as caught:
                fake.arch_prctl_get(option)
            assert caught.value.errno == expected


def test_fake_request_of_tiledata_without_kernel_support_is_eopnotsupp() -> None:
    """A kernel/CPU without TILEDATA answers ARCH_REQ_XCOMP_GUEST_PERM(18) with EOPNOTSUPP."""
    fake = FakeSystem.genoa("6.8.0")
    with pytest.raises(OSError) as caught:
        req_xcomp_guest_perm(fake, 18)
    assert caught.value.errno == errno.EOPNOTSUPP
