"""The one reader of /dev/kvm's facts, for the host probe and the oracle alike.

Every call here is a read-only system ioctl on /dev/kvm: ``KVM_GET_API_VERSION``,
``KVM_GET_SUPPORTED_CPUID`` (the buffer grows on E2BIG), ``KVM_GET_DEVICE_ATTR
(KVM_X86_XCOMP_GUEST_SUPP)`` and ``KVM_CHECK_EXTENSION(KVM_CAP_XSAVE2)``.
KVM_CHECK_EXTENSION on /dev/kvm reaches the same ``kvm_vm_ioctl_check_extension()`` as on
a VM fd (``kvm_dev_ioctl_check_extension_generic`` passes a NULL VM, and the XSAVE2 case
does not use it), so no VM is created. Answers that depend on the guest permission
(``kvm_get_filtered_xcr0()``) reflect the calling process's permission; ``permitted_view``
learns them after ``ARCH_REQ_XCOMP_GUEST_PERM(18)`` in a child.

The errno policy of ``KVM_X86_XCOMP_GUEST_SUPP`` is one: ENXIO (5.17+, unknown attribute)
and EINVAL (before 5.17, ``kvm_arch_dev_ioctl`` has no KVM_GET_DEVICE_ATTR) mean "this
kernel cannot tell" and give None; any other errno is a failure and is raised. Papering
over it with 0xD.0 of ``KVM_GET_SUPPORTED_CPUID`` would be wrong from 5.17 on, where that
table is filtered by the caller's guest permission and drops TILEDATA. Only where the
attribute does not exist is 0xD.0 the same mask (before 5.17 KVM filters nothing), and
only there does ``supported_xcr0`` use it.

Raw ``struct kvm_cpuid2`` bytes are the currency here (a child imports this module and
stays on the standard library); ``unpack_cpuid2`` and ``pack_cpuid2`` convert to and from
``CpuidSet``.
"""

from __future__ import annotations

import errno as errnos
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

from xstate_check.system import abi, libc
from xstate_check.system.calls import KVM_DEVICE, default_system, os_error, req_xcomp_guest_perm

TYPE_CHECKING = False  # typing is not imported at run time: a child imports this module
if TYPE_CHECKING:
    from xstate_check.cpuid import CpuidSet
    from xstate_check.system.protocol import System

__all__ = [
    "INITIAL_CAPACITY",
    "MAX_CAPACITY",
    "cpuid2_xcr0",
    "empty_cpuid2",
    "kvm_cpuid",
    "open_kvm",
    "opened",
    "pack_cpuid2",
    "permitted_view",
    "supported_cpuid",
    "supported_cpuid2",
    "supported_xcr0",
    "unpack_cpuid2",
    "xcomp_guest_supp",
    "xsave2_size",
]

#: Firecracker asks for KVM_MAX_CPUID_ENTRIES; KVM clamps larger requests to it.
INITIAL_CAPACITY = abi.KVM_MAX_CPUID_ENTRIES
#: The buffer doubles on E2BIG up to this many entries, then the E2BIG is raised.
MAX_CAPACITY = 4096


def open_kvm(system: System, path: str | None = None) -> int:
    """Open /dev/kvm and check its API version (12); return the descriptor.

    Raises the OSError of open(2) (ENOENT, EACCES…) naming the device, that of
    KVM_GET_API_VERSION (ENOTTY for a device that is not KVM), or EPROTO for another
    API version.
    """
    device = str(path or getattr(system, "kvm_device", None) or KVM_DEVICE)
    try:
        fd = system.open_kvm(path)
    except OSError as error:
        if error.errno is not None and not error.filename:
            raise os_error(error.errno, device) from None
        raise
    try:
        version = system.ioctl(fd, abi.KVM_GET_API_VERSION, 0)
    except BaseException:
        system.close(fd)
        raise
    if version != abi.KVM_API_VERSION:
        system.close(fd)
        raise OSError(
            errnos.EPROTO, f"KVM API version {version}, expected {abi.KVM_API_VERSION}", device
        )
    return fd


@contextmanager
def opened(system: System, path: str | None = None) -> Iterator[int]:
    """Open /dev/kvm for the duration of a ``with`` block."""
    fd = open_kvm(system, path)
    try:
        yield fd
    finally:
        system.close(fd)


def empty_cpuid2(capacity: int) -> bytearray:
    """Return a zeroed ``struct kvm_cpuid2`` with room for ``capacity`` entries."""
    buffer = bytearray(abi.CPUID2_HEADER.size + abi.CPUID_ENTRY2.size * capacity)
    abi.CPUID2_HEADER.pack_into(buffer, 0, capacity, 0)
    return buffer


def supported_cpuid2(
    system: System,
    fd: int,
    capacity: int = INITIAL_CAPACITY,
    *,
    max_capacity: int = MAX_CAPACITY,
) -> bytes:
    """Return KVM_GET_SUPPORTED_CPUID as ``struct kvm_cpuid2`` bytes, exactly ``nent`` long.

    Starts with room for ``capacity`` entries and doubles it on E2BIG up to ``max_capacity``.
    """
    capacity = max(1, capacity)
    while True:
        buffer = empty_cpuid2(capacity)
        try:
            system.ioctl(fd, abi.KVM_GET_SUPPORTED_CPUID, buffer)
        except OSError as error:
            if error.errno == errnos.E2BIG and capacity < max_capacity:
                capacity = min(capacity * 2, max_capacity)
                continue
            if error.errno is not None and not error.filename:
                raise os_error(error.errno, "KVM_GET_SUPPORTED_CPUID") from error
            raise
        (count, _) = abi.CPUID2_HEADER.unpack_from(buffer, 0)
        count = min(count, capacity)
        return bytes(buffer[: abi.CPUID2_HEADER.size + count * abi.CPUID_ENTRY2.size])


def cpuid2_xcr0(buffer: bytes | bytearray) -> int:
    """Return 0xD.0 EDX:EAX of a ``struct kvm_cpuid2`` (0 where the entry is absent)."""
    (count, _) = abi.CPUID2_HEADER.unpack_from(buffer, 0)
    count = min(count, (len(buffer) - abi.CPUID2_HEADER.size) // abi.CPUID_ENTRY2.size)
    for index in range(count):
        leaf, subleaf, _flags, eax, _ebx, _ecx, edx = abi.CPUID_ENTRY2.unpack_from(
            buffer, abi.CPUID2_HEADER.size + index * abi.CPUID_ENTRY2.size
        )
        if (leaf, subleaf) == (0xD, 0):
            return int(edx) << 32 | int(eax)
    return 0


def xcomp_guest_supp(system: System, fd: int) -> int | None:
    """Return KVM_GET_DEVICE_ATTR(KVM_X86_XCOMP_GUEST_SUPP): KVM's XCR0 before the filter.

    None where the kernel lacks the attribute (ENXIO or EINVAL: before 5.17); any other
    errno is raised (see the module's note).
    """
    value = libc.c_uint64(0)
    attr = bytearray(
        abi.DEVICE_ATTR.pack(
            0, abi.KVM_X86_GRP_SYSTEM, abi.KVM_X86_XCOMP_GUEST_SUPP, libc.addressof(value)
        )
    )
    try:
        system.ioctl(fd, abi.KVM_GET_DEVICE_ATTR, attr)
    except OSError as error:
        if error.errno in (errnos.ENXIO, errnos.EINVAL):
            return None
        raise os_error(error.errno or errnos.EIO, "KVM_GET_DEVICE_ATTR") from error
    return int(value.value)


def supported_xcr0(system: System, fd: int) -> int:
    """Return the XCR0 bits this host's KVM can enable for a guest, whatever the permission.

    KVM_X86_XCOMP_GUEST_SUPP where the kernel has it; before 5.17, 0xD.0 EDX:EAX of
    KVM_GET_SUPPORTED_CPUID, which those kernels do not filter.
    """
    value = xcomp_guest_supp(system, fd)
    if value is not None:
        return value
    return cpuid2_xcr0(supported_cpuid2(system, fd))


def xsave2_size(system: System, fd: int) -> int | None:
    """Return KVM_CHECK_EXTENSION(KVM_CAP_XSAVE2), the KVM_GET_XSAVE2 size; None before 5.17."""
    try:
        size = system.ioctl(fd, abi.KVM_CHECK_EXTENSION, abi.KVM_CAP_XSAVE2)
    except OSError as error:
        raise os_error(error.errno or errnos.EIO, "KVM_CHECK_EXTENSION") from error
    return size or None


def permitted_view(system: System, send: Callable[[bytes], None]) -> None:
    """In a child: request guest TILEDATA, send KVM_GET_SUPPORTED_CPUID's kvm_cpuid2 bytes."""
    req_xcomp_guest_perm(system, abi.ARCH_XCOMP_TILEDATA)
    with opened(system) as fd:
        send(supported_cpuid2(system, fd))


# --- CpuidSet conversions (they import the model; the child does not need them) ----------
def pack_cpuid2(cpuid: CpuidSet) -> bytearray:
    """Return a ``struct kvm_cpuid2`` holding every entry of ``cpuid`` (with its flags)."""
    rows = cpuid.rows()
    buffer = bytearray(abi.CPUID2_HEADER.size + abi.CPUID_ENTRY2.size * len(rows))
    abi.CPUID2_HEADER.pack_into(buffer, 0, len(rows), 0)
    for index, (leaf, subleaf, eax, ebx, ecx, edx) in enumerate(rows):
        abi.CPUID_ENTRY2.pack_into(
            buffer,
            abi.CPUID2_HEADER.size + index * abi.CPUID_ENTRY2.size,
            leaf, subleaf, cpuid.flag(leaf, subleaf), eax, ebx, ecx, edx,
        )
    return buffer


#: The tables made of the last ``kvm_cpuid2`` buffers, by (bytes, source, meta): KVM's
#: table does not change while a host runs, so a process that checks it again (a VMM's
#: ``preboot()`` before each guest) gets the same immutable CpuidSet back, with the values
#: already derived from it (``CpuidSet.derived``), instead of parsing the same bytes again.
#: The table holds the APIC ID of the CPU the ioctl ran on (``preboot._APIC_ID_BITS``): a
#: process that moves between CPUs reads one table per CPU; past sixteen, the newest makes room.
_MADE: dict[tuple[bytes, str, tuple[tuple[str, str], ...]], CpuidSet] = {}
_MADE_KEPT = 16


def unpack_cpuid2(buffer: bytes | bytearray, source: str, **meta: str) -> CpuidSet:
    """Return the guest CpuidSet held by KVM's ``struct kvm_cpuid2`` (flags kept per entry).

    The same bytes, source and meta give the same (immutable) CpuidSet.
    """
    header, size = abi.CPUID2_HEADER.size, abi.CPUID_ENTRY2.size
    (count, _padding) = abi.CPUID2_HEADER.unpack_from(buffer, 0)
    count = min(count, (len(buffer) - header) // size)
    key = (bytes(buffer[:header + count * size]), source, tuple(meta.items()))
    table = _MADE.get(key)
    if table is None:
        table = _unpack(buffer, count, source, meta)
        if len(_MADE) >= _MADE_KEPT:
            with suppress(KeyError):  # another thread emptied it meanwhile
                _MADE.popitem()
        _MADE[key] = table
    return table


def _unpack(buffer: bytes | bytearray, count: int, source: str, meta: dict[str, str]) -> CpuidSet:
    from xstate_check.cpuid import CpuidSet, Registers

    header, size = abi.CPUID2_HEADER.size, abi.CPUID_ENTRY2.size
    entries: dict[tuple[int, int], Registers] = {}
    flags: dict[tuple[int, int], int] = {}
    new = tuple.__new__  # as Registers._make, without a Python-level call per entry
    # Each row: function, index, flags, eax, ebx, ecx, edx.
    for row in abi.CPUID_ENTRY2.iter_unpack(memoryview(buffer)[header:header + count * size]):
        key = row[:2]
        entries[key] = new(Registers, row[3:])
        flags[key] = row[2]
    return CpuidSet(entries, source, flags=flags, meta=meta, role="guest", source_kind="kvm")


def supported_cpuid(
    system: System,
    fd: int,
    capacity: int = INITIAL_CAPACITY,
    *,
    max_capacity: int = MAX_CAPACITY,
    **meta: str,
) -> CpuidSet:
    """Return KVM_GET_SUPPORTED_CPUID as a CpuidSet (source ``kvm``, role ``guest``)."""
    raw = supported_cpuid2(system, fd, capacity, max_capacity=max_capacity)
    return unpack_cpuid2(raw, "kvm", **meta)


def kvm_cpuid(system: System | None = None, *, path: str | None = None) -> CpuidSet:
    """Return KVM's supported CPUID as this process would get it (source ``kvm``)."""
    system = system or default_system()
    release = system.uname().release
    with opened(system, path) as fd:
        return supported_cpuid(system, fd, kernel_release=release)
