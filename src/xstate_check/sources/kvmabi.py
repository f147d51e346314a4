"""The KVM ABI xstate-check uses: ioctl numbers, constants and structure layouts.

Numbers are computed with the kernel's _IOC macros from the structure sizes in
``include/uapi/linux/kvm.h`` and ``arch/x86/include/uapi/asm/kvm.h``; RULES-CATALOGUE.md
§5.1 lists the resulting values, which the tests check.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from xstate_check.cpuid import CpuidSet, Registers

KVMIO = 0xAE
_IOC_NONE, _IOC_WRITE, _IOC_READ = 0, 1, 2


def _ioc(direction: int, number: int, size: int) -> int:
    return direction << 30 | size << 16 | KVMIO << 8 | number


def _io(number: int) -> int:
    return _ioc(_IOC_NONE, number, 0)


def _ior(number: int, size: int) -> int:
    return _ioc(_IOC_READ, number, size)


def _iow(number: int, size: int) -> int:
    return _ioc(_IOC_WRITE, number, size)


def _iowr(number: int, size: int) -> int:
    return _ioc(_IOC_READ | _IOC_WRITE, number, size)


# struct kvm_cpuid2 { __u32 nent; __u32 padding; struct kvm_cpuid_entry2 entries[]; }
CPUID2_HEADER = struct.Struct("=II")
# struct kvm_cpuid_entry2 { function, index, flags, eax, ebx, ecx, edx, padding[3] } (u32 each)
CPUID_ENTRY2 = struct.Struct("=7I12x")
# struct kvm_device_attr { __u32 flags; __u32 group; __u64 attr; __u64 addr; }
DEVICE_ATTR = struct.Struct("=IIQQ")
# struct kvm_userspace_memory_region { u32 slot; u32 flags; u64 gpa; u64 size; u64 uaddr; }
USERSPACE_MEMORY_REGION = struct.Struct("=IIQQQ")
KVM_REGS_SIZE = 18 * 8
KVM_SREGS_SIZE = 312
KVM_XCRS_SIZE = 392

# /dev/kvm (system) ioctls
KVM_GET_API_VERSION = _io(0x00)
KVM_CREATE_VM = _io(0x01)
KVM_CHECK_EXTENSION = _io(0x03)
KVM_GET_VCPU_MMAP_SIZE = _io(0x04)
KVM_GET_SUPPORTED_CPUID = _iowr(0x05, CPUID2_HEADER.size)
KVM_GET_EMULATED_CPUID = _iowr(0x09, CPUID2_HEADER.size)
KVM_GET_DEVICE_ATTR = _iow(0xE2, DEVICE_ATTR.size)
KVM_HAS_DEVICE_ATTR = _iow(0xE3, DEVICE_ATTR.size)
# VM ioctls
KVM_CREATE_VCPU = _io(0x41)
KVM_SET_USER_MEMORY_REGION = _iow(0x46, USERSPACE_MEMORY_REGION.size)
# vCPU ioctls
KVM_RUN = _io(0x80)
KVM_GET_REGS = _ior(0x81, KVM_REGS_SIZE)
KVM_SET_REGS = _iow(0x82, KVM_REGS_SIZE)
KVM_GET_SREGS = _ior(0x83, KVM_SREGS_SIZE)
KVM_SET_SREGS = _iow(0x84, KVM_SREGS_SIZE)
KVM_SET_CPUID2 = _iow(0x90, CPUID2_HEADER.size)
KVM_GET_CPUID2 = _iowr(0x91, CPUID2_HEADER.size)
KVM_GET_XCRS = _ior(0xA6, KVM_XCRS_SIZE)
KVM_SET_XCRS = _iow(0xA7, KVM_XCRS_SIZE)

KVM_API_VERSION = 12
KVM_CAP_XSAVE = 55
KVM_CAP_XCRS = 56
KVM_CAP_XSAVE2 = 208
KVM_CAP_SYS_ATTRIBUTES = 209
KVM_X86_GRP_SYSTEM = 0
KVM_X86_XCOMP_GUEST_SUPP = 0
KVM_CPUID_FLAG_SIGNIFCANT_INDEX = 1  # sic, the kernel's spelling
KVM_MAX_CPUID_ENTRIES = 256


def pack_cpuid2(cpuid: CpuidSet) -> bytearray:
    """Return a ``struct kvm_cpuid2`` holding every entry of ``cpuid`` (with its flags)."""
    rows = cpuid.rows()
    buffer = bytearray(CPUID2_HEADER.size + CPUID_ENTRY2.size * len(rows))
    CPUID2_HEADER.pack_into(buffer, 0, len(rows), 0)
    for index, (leaf, subleaf, eax, ebx, ecx, edx) in enumerate(rows):
        CPUID_ENTRY2.pack_into(
            buffer,
            CPUID2_HEADER.size + index * CPUID_ENTRY2.size,
            leaf, subleaf, cpuid.flag(leaf, subleaf), eax, ebx, ecx, edx,
        )
    return buffer


def empty_cpuid2(capacity: int) -> bytearray:
    """Return a zeroed ``struct kvm_cpuid2`` with room for ``capacity`` entries."""
    buffer = bytearray(CPUID2_HEADER.size + CPUID_ENTRY2.size * capacity)
    CPUID2_HEADER.pack_into(buffer, 0, capacity, 0)
    return buffer


def unpack_cpuid2(buffer: bytes | bytearray, source: str, **meta: str) -> CpuidSet:
    """Return the CpuidSet held by a ``struct kvm_cpuid2`` (flags kept per entry)."""
    (count, _padding) = CPUID2_HEADER.unpack_from(buffer, 0)
    count = min(count, (len(buffer) - CPUID2_HEADER.size) // CPUID_ENTRY2.size)
    entries: dict[tuple[int, int], Registers] = {}
    flags: dict[tuple[int, int], int] = {}
    for index in range(count):
        leaf, subleaf, flag, eax, ebx, ecx, edx = CPUID_ENTRY2.unpack_from(
            buffer, CPUID2_HEADER.size + index * CPUID_ENTRY2.size
        )
        entries[(leaf, subleaf)] = Registers(eax, ebx, ecx, edx)
        flags[(leaf, subleaf)] = flag
    return CpuidSet(entries, source, flags=flags, meta=meta)


def cpuid_rows(entries: Iterable[tuple[int, int, int, int, int, int, int]]) -> CpuidSet:
    """Return a CpuidSet from ``(leaf, subleaf, flags, eax, ebx, ecx, edx)`` tuples."""
    entries = list(entries)
    table = {(e[0], e[1]): Registers(*e[3:7]) for e in entries}
    flags = {(e[0], e[1]): e[2] for e in entries}
    return CpuidSet(table, "kvm", flags=flags)


# --- Appended for the oracle (a real-mode guest in a throwaway vCPU) ---
# struct kvm_regs: rax rbx rcx rdx rsi rdi rsp rbp r8..r15 rip rflags (u64 each)
REGS = struct.Struct("=18Q")
# struct kvm_sregs: cs ds es fs gs ss tr ldt (struct kvm_segment, 24 bytes each), gdt idt
# (struct kvm_dtable, 16 bytes each), cr0 cr2 cr3 cr4 cr8 efer apic_base, interrupt_bitmap[4]
SREGS_SEGMENT_SIZE = 24
SREGS_CS_OFFSET = 0  # kvm_segment: base u64 @0, limit u32 @8, selector u16 @12
SREGS_CR0_OFFSET = 224
SREGS_CR4_OFFSET = 248
# struct kvm_run: immediate_exit u8 @1, exit_reason u32 @8; the exit union starts @32
KVM_RUN_IMMEDIATE_EXIT_OFFSET = 1
KVM_RUN_EXIT_REASON_OFFSET = 8
# union member io: direction u8 @32, size u8 @33, port u16 @34, count u32 @36, data_offset u64 @40
KVM_RUN_IO = struct.Struct("=BBHIQ")
KVM_RUN_IO_OFFSET = 32
KVM_EXIT_IO_OUT = 1
KVM_EXIT_UNKNOWN = 0
KVM_EXIT_IO = 2
KVM_EXIT_HLT = 5
KVM_EXIT_MMIO = 6
KVM_EXIT_SHUTDOWN = 8
KVM_EXIT_FAIL_ENTRY = 9
KVM_EXIT_INTERNAL_ERROR = 17
# struct kvm_xcrs { __u32 nr_xcrs; __u32 flags; struct kvm_xcr xcrs[16]; __u64 padding[16]; }
# struct kvm_xcr { __u32 xcr; __u32 reserved; __u64 value; }
XCRS_HEADER = struct.Struct("=II")
XCR_ENTRY = struct.Struct("=IIQ")
