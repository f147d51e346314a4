"""The kernel ABI xstate-check uses: every number and layout, with the header it comes from.

ioctl request numbers are computed with the kernel's ``_IOC`` macros
(``include/uapi/asm-generic/ioctl.h``) from the structure sizes below; ``REQUESTS`` lists
each one with its header, and the tests check the resulting values. Standard library only:
a child process imports this module.
"""

from __future__ import annotations

import struct
from collections import namedtuple

__all__ = ["HEADERS", "REQUESTS", "Request"]

PRCTL_H = "arch/x86/include/uapi/asm/prctl.h"
SYSCALL_TBL = "arch/x86/entry/syscalls/syscall_64.tbl"
KVM_H = "include/uapi/linux/kvm.h"
ASM_KVM_H = "arch/x86/include/uapi/asm/kvm.h"
IOCTL_H = "include/uapi/asm-generic/ioctl.h"


TYPE_CHECKING = False  # typing is not imported at run time: a child imports this module
if TYPE_CHECKING:
    from typing import NamedTuple

    class Request(NamedTuple):
        """One number of the ABI: its name, value and the header (or table) that defines it."""

        name: str
        value: int
        header: str

else:
    Request = namedtuple("Request", "name value header")


# --- _IOC (include/uapi/asm-generic/ioctl.h) ---------------------------------------------
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


# --- arch_prctl (arch/x86/include/uapi/asm/prctl.h, syscall_64.tbl) ----------------------
#: x86-64 system call number of arch_prctl.
SYS_ARCH_PRCTL = 158
ARCH_GET_XCOMP_SUPP = 0x1021
ARCH_GET_XCOMP_PERM = 0x1022
ARCH_REQ_XCOMP_PERM = 0x1023
ARCH_GET_XCOMP_GUEST_PERM = 0x1024
ARCH_REQ_XCOMP_GUEST_PERM = 0x1025
#: Component numbers the REQ options take; only the highest one of a facility is accepted.
ARCH_XCOMP_TILECFG = 17
ARCH_XCOMP_TILEDATA = 18

# --- structures (include/uapi/linux/kvm.h, arch/x86/include/uapi/asm/kvm.h) --------------
#: struct kvm_cpuid2 { __u32 nent; __u32 padding; struct kvm_cpuid_entry2 entries[]; }
CPUID2_HEADER = struct.Struct("=II")
#: struct kvm_cpuid_entry2 { function, index, flags, eax, ebx, ecx, edx, padding[3] } (u32)
CPUID_ENTRY2 = struct.Struct("=7I12x")
#: struct kvm_device_attr { __u32 flags; __u32 group; __u64 attr; __u64 addr; }
DEVICE_ATTR = struct.Struct("=IIQQ")
#: struct kvm_userspace_memory_region { u32 slot; u32 flags; u64 gpa; u64 size; u64 uaddr; }
USERSPACE_MEMORY_REGION = struct.Struct("=IIQQQ")
#: struct kvm_regs: rax rbx rcx rdx rsi rdi rsp rbp r8..r15 rip rflags (u64 each)
REGS = struct.Struct("=18Q")
KVM_REGS_SIZE = REGS.size
#: struct kvm_sregs: cs ds es fs gs ss tr ldt (struct kvm_segment, 24 bytes each), gdt idt
#: (struct kvm_dtable, 16 bytes each), cr0 cr2 cr3 cr4 cr8 efer apic_base, interrupt_bitmap[4]
KVM_SREGS_SIZE = 312
SREGS_SEGMENT_SIZE = 24
SREGS_CS_OFFSET = 0  # kvm_segment: base u64 @0, limit u32 @8, selector u16 @12
SREGS_CR0_OFFSET = 224
SREGS_CR4_OFFSET = 248
#: struct kvm_xcrs { __u32 nr_xcrs; __u32 flags; struct kvm_xcr xcrs[16]; __u64 padding[16]; }
KVM_XCRS_SIZE = 392
XCRS_HEADER = struct.Struct("=II")
#: struct kvm_xcr { __u32 xcr; __u32 reserved; __u64 value; }
XCR_ENTRY = struct.Struct("=IIQ")
#: struct kvm_run: immediate_exit u8 @1, exit_reason u32 @8; the exit union starts @32
KVM_RUN_IMMEDIATE_EXIT_OFFSET = 1
KVM_RUN_EXIT_REASON_OFFSET = 8
#: union member io: direction u8, size u8, port u16, count u32, data_offset u64 (@32)
KVM_RUN_IO = struct.Struct("=BBHIQ")
KVM_RUN_IO_OFFSET = 32

# --- ioctl requests (include/uapi/linux/kvm.h) --------------------------------------------
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

# --- constants ----------------------------------------------------------------------------
KVM_API_VERSION = 12
KVM_CAP_XSAVE = 55
KVM_CAP_XCRS = 56
KVM_CAP_XSAVE2 = 208
KVM_CAP_SYS_ATTRIBUTES = 209
KVM_X86_GRP_SYSTEM = 0  # arch/x86/include/uapi/asm/kvm.h
KVM_X86_XCOMP_GUEST_SUPP = 0  # arch/x86/include/uapi/asm/kvm.h
KVM_CPUID_FLAG_SIGNIFCANT_INDEX = 1  # sic, the kernel's spelling
KVM_MAX_CPUID_ENTRIES = 256  # arch/x86/include/asm/kvm_host.h (not uapi; KVM clamps to it)
KVM_EXIT_UNKNOWN = 0
KVM_EXIT_IO = 2
KVM_EXIT_HLT = 5
KVM_EXIT_MMIO = 6
KVM_EXIT_SHUTDOWN = 8
KVM_EXIT_FAIL_ENTRY = 9
KVM_EXIT_INTERNAL_ERROR = 17
KVM_EXIT_IO_OUT = 1

#: Every request number and option, with the header (or table) it comes from.
REQUESTS: tuple[Request, ...] = (
    Request("SYS_arch_prctl", SYS_ARCH_PRCTL, SYSCALL_TBL),
    *(
        Request(name, value, PRCTL_H)
        for name, value in (
            ("ARCH_GET_XCOMP_SUPP", ARCH_GET_XCOMP_SUPP),
            ("ARCH_GET_XCOMP_PERM", ARCH_GET_XCOMP_PERM),
            ("ARCH_REQ_XCOMP_PERM", ARCH_REQ_XCOMP_PERM),
            ("ARCH_GET_XCOMP_GUEST_PERM", ARCH_GET_XCOMP_GUEST_PERM),
            ("ARCH_REQ_XCOMP_GUEST_PERM", ARCH_REQ_XCOMP_GUEST_PERM),
        )
    ),
    *(
        Request(name, value, KVM_H)
        for name, value in (
            ("KVM_GET_API_VERSION", KVM_GET_API_VERSION),
            ("KVM_CREATE_VM", KVM_CREATE_VM),
            ("KVM_CHECK_EXTENSION", KVM_CHECK_EXTENSION),
            ("KVM_GET_VCPU_MMAP_SIZE", KVM_GET_VCPU_MMAP_SIZE),
            ("KVM_GET_SUPPORTED_CPUID", KVM_GET_SUPPORTED_CPUID),
            ("KVM_GET_EMULATED_CPUID", KVM_GET_EMULATED_CPUID),
            ("KVM_GET_DEVICE_ATTR", KVM_GET_DEVICE_ATTR),
            ("KVM_HAS_DEVICE_ATTR", KVM_HAS_DEVICE_ATTR),
            ("KVM_CREATE_VCPU", KVM_CREATE_VCPU),
            ("KVM_SET_USER_MEMORY_REGION", KVM_SET_USER_MEMORY_REGION),
            ("KVM_RUN", KVM_RUN),
            ("KVM_GET_REGS", KVM_GET_REGS),
            ("KVM_SET_REGS", KVM_SET_REGS),
            ("KVM_GET_SREGS", KVM_GET_SREGS),
            ("KVM_SET_SREGS", KVM_SET_SREGS),
            ("KVM_SET_CPUID2", KVM_SET_CPUID2),
            ("KVM_GET_CPUID2", KVM_GET_CPUID2),
            ("KVM_GET_XCRS", KVM_GET_XCRS),
            ("KVM_SET_XCRS", KVM_SET_XCRS),
        )
    ),
)
#: Name -> header of every entry of ``REQUESTS``.
HEADERS = {request.name: request.header for request in REQUESTS}
#: arch_prctl option -> name.
ARCH_OPTION_NAMES = {r.value: r.name for r in REQUESTS if r.header == PRCTL_H}
