"""KVM as a CPUID source: what /dev/kvm says a guest may get, without creating a VM.

Every call here is a read-only system ioctl on /dev/kvm (RULES-CATALOGUE.md §5):
``KVM_GET_API_VERSION``, ``KVM_GET_SUPPORTED_CPUID`` (the buffer grows on E2BIG),
``KVM_GET_DEVICE_ATTR(KVM_X86_XCOMP_GUEST_SUPP)`` and ``KVM_CHECK_EXTENSION(KVM_CAP_XSAVE2)``.
KVM_CHECK_EXTENSION on /dev/kvm reaches the same ``kvm_vm_ioctl_check_extension()`` as on
a VM fd (``kvm_dev_ioctl_check_extension_generic`` passes a NULL VM, and the XSAVE2 case does
not use it), so no VM is created. Answers that depend on the guest permission
(``kvm_get_filtered_xcr0()``) reflect the calling process's permission.
"""

from __future__ import annotations

import ctypes
import errno as errnos
from collections.abc import Iterator
from contextlib import contextmanager

from xstate_check.cpuid import CpuidSet
from xstate_check.sources import kvmabi
from xstate_check.sources.syscalls import KVM_DEVICE, System, default_system, os_error

__all__ = [
    "INITIAL_CAPACITY",
    "MAX_CAPACITY",
    "kvm_cpuid",
    "open_kvm",
    "supported_cpuid",
    "xcomp_guest_supp",
    "xsave2_size",
]

#: Firecracker asks for KVM_MAX_CPUID_ENTRIES; KVM clamps larger requests to it (KVM-01).
INITIAL_CAPACITY = kvmabi.KVM_MAX_CPUID_ENTRIES
#: The buffer doubles on E2BIG up to this many entries, then the E2BIG is raised.
MAX_CAPACITY = 4096


def open_kvm(system: System, path: str = KVM_DEVICE) -> int:
    """Open /dev/kvm and check its API version (12); return the descriptor.

    Raises the OSError of open(2) (ENOENT, EACCES…), or EPROTO for another API version.
    """
    fd = system.open_kvm(path)
    try:
        version = system.ioctl(fd, kvmabi.KVM_GET_API_VERSION, 0)
    except BaseException:
        system.close(fd)
        raise
    if version != kvmabi.KVM_API_VERSION:
        system.close(fd)
        raise OSError(
            errnos.EPROTO,
            f"KVM API version {version}, expected {kvmabi.KVM_API_VERSION}",
            path,
        )
    return fd


@contextmanager
def opened(system: System, path: str = KVM_DEVICE) -> Iterator[int]:
    """Open /dev/kvm for the duration of a ``with`` block."""
    fd = open_kvm(system, path)
    try:
        yield fd
    finally:
        system.close(fd)


def supported_cpuid(
    system: System,
    fd: int,
    capacity: int = INITIAL_CAPACITY,
    *,
    max_capacity: int = MAX_CAPACITY,
    **meta: str,
) -> CpuidSet:
    """Return KVM_GET_SUPPORTED_CPUID as a CpuidSet (source ``kvm``, meta role ``guest``).

    Starts with room for ``capacity`` entries and doubles it on E2BIG up to ``max_capacity``.
    """
    capacity = max(1, capacity)
    while True:
        buffer = kvmabi.empty_cpuid2(capacity)
        try:
            system.ioctl(fd, kvmabi.KVM_GET_SUPPORTED_CPUID, buffer)
        except OSError as error:
            if error.errno == errnos.E2BIG and capacity < max_capacity:
                capacity = min(capacity * 2, max_capacity)
                continue
            if error.errno is not None and not error.filename:
                raise os_error(error.errno, "KVM_GET_SUPPORTED_CPUID") from error
            raise
        return kvmabi.unpack_cpuid2(buffer, "kvm", role="guest", **meta)


def xcomp_guest_supp(system: System, fd: int) -> int | None:
    """Return KVM_GET_DEVICE_ATTR(KVM_X86_XCOMP_GUEST_SUPP): KVM's XCR0 before the filter.

    None where the kernel lacks the attribute (before 5.17: ENXIO or EINVAL).
    """
    value = ctypes.c_uint64(0)
    attr = bytearray(
        kvmabi.DEVICE_ATTR.pack(
            0, kvmabi.KVM_X86_GRP_SYSTEM, kvmabi.KVM_X86_XCOMP_GUEST_SUPP, ctypes.addressof(value)
        )
    )
    try:
        system.ioctl(fd, kvmabi.KVM_GET_DEVICE_ATTR, attr)
    except OSError as error:
        if error.errno in (errnos.ENXIO, errnos.EINVAL):
            return None
        raise os_error(error.errno or errnos.EIO, "KVM_GET_DEVICE_ATTR") from error
    return int(value.value)


def xsave2_size(system: System, fd: int) -> int | None:
    """Return KVM_CHECK_EXTENSION(KVM_CAP_XSAVE2), the KVM_GET_XSAVE2 size; None before 5.17."""
    try:
        size = system.ioctl(fd, kvmabi.KVM_CHECK_EXTENSION, kvmabi.KVM_CAP_XSAVE2)
    except OSError as error:
        raise os_error(error.errno or errnos.EIO, "KVM_CHECK_EXTENSION") from error
    return size or None


def kvm_cpuid(system: System | None = None, *, path: str = KVM_DEVICE) -> CpuidSet:
    """Return KVM's supported CPUID as this process would get it (source ``kvm``)."""
    system = system or default_system()
    release = system.uname().release
    with opened(system, path) as fd:
        return supported_cpuid(system, fd, kernel_release=release)
