"""A throwaway VM with one vCPU that runs a guest's XSETBV: the oracle's child side.

``run_jobs`` runs in a child process (``System.run_isolated``): for each job it creates a
VM with one vCPU, hands it the job's ``struct kvm_cpuid2`` with KVM_SET_CPUID2 and runs a
tiny real-mode guest that sets CR4.OSXSAVE, loads EDX:EAX and executes XSETBV, as a guest
kernel does in ``fpu__init_cpu_xstate``. The guest reports through a port write: "done"
(XCR0 is then read back with KVM_GET_XCRS), or the vector of the exception (#GP 13, #UD 6)
that its interrupt vector table caught. Each step is sent to the parent as one record (a
``marshal``-ed dict: ``host``, ``job``, ``run``), so a vCPU that hangs later keeps the
earlier answers.

Standard library only: the child imports nothing else, so it starts in a few milliseconds.
"""

from __future__ import annotations

import errno
import marshal
import mmap
import struct
from collections import namedtuple
from collections.abc import Callable, Sequence

from xstate_check.system import abi as kvmabi
from xstate_check.system import kvm as kvmreader
from xstate_check.system.abi import ARCH_XCOMP_TILEDATA
from xstate_check.system.calls import errno_name, req_xcomp_guest_perm

TYPE_CHECKING = False  # typing is not imported at run time: a child imports this module
if TYPE_CHECKING:
    from typing import Any, NamedTuple

    from xstate_check.system.protocol import System

__all__ = [
    "CR4_OSXSAVE",
    "GUEST_MAIN",
    "REPORT_PORT",
    "Job",
    "guest_image",
    "run_jobs",
    "split_testable",
]

# ---------------------------------------------------------------------------------------
# The guest: 16-bit real mode, CS = DS = SS = 0, everything inside 64 KiB at GPA 0.
# ---------------------------------------------------------------------------------------
GUEST_MEMORY_SIZE = 0x10000
CODE_ADDRESS = 0x1000
STUB_ADDRESS = 0x1100  # one 8-byte stub per exception vector 0..31
STUB_SIZE = 8
EXCEPTION_VECTORS = 32
STACK_TOP = 0x8000
REPORT_PORT = 0x10
DONE = 0xFF
CR4_OSXSAVE = 1 << 18
X87_MASK = 1
VECTOR_UD = 6
VECTOR_GP = 13
_STAGE_CR4, _STAGE_XSETBV, _STAGE_DONE = 1, 2, 3
STAGES: dict[int, str] = {_STAGE_CR4: "cr4", _STAGE_XSETBV: "xsetbv", _STAGE_DONE: "done"}

# The host sets EDI = XCR0[31:0], EDX = XCR0[63:32], ECX = 0, ESI = CR4 bits to set
# (CR4.OSXSAVE, or 0 to provoke #UD), BL carries the stage into the exception stubs.
# XCR0 is read back with KVM_GET_XCRS, not XGETBV: a KVM that runs real mode through its
# instruction emulator (as kvm-pvm does) cannot emulate XGETBV.
GUEST_MAIN = bytes([
    0xB3, _STAGE_CR4,                     # mov bl, 1             stage: CR4.OSXSAVE
    0x0F, 0x20, 0xE0,                     # mov eax, cr4
    0x66, 0x25, 0xFF, 0xFF, 0xFB, 0xFF,   # and eax, ~0x40000     clear OSXSAVE
    0x66, 0x09, 0xF0,                     # or eax, esi           set it when ESI says so
    0x0F, 0x22, 0xE0,                     # mov cr4, eax          #GP without CPUID XSAVE
    0xB3, _STAGE_XSETBV,                  # mov bl, 2             stage: XSETBV
    0x66, 0x89, 0xF8,                     # mov eax, edi          EDX:EAX = XCR0 to try
    0x0F, 0x01, 0xD1,                     # xsetbv                (ECX = 0: XCR0)
    0xB3, _STAGE_DONE,                    # mov bl, 3             stage: done
    0xB0, DONE,                           # mov al, 0xff          "done"
    0x88, 0xDC,                           # mov ah, bl            stage
    0xE7, REPORT_PORT,                    # out 0x10, ax
    0xF4,                                 # hlt
])


def _stub(vector: int) -> bytes:
    """Return the exception stub for ``vector``: report (vector, stage) on the port."""
    return bytes([
        0xB0, vector,                     # mov al, vector
        0x88, 0xDC,                       # mov ah, bl            stage
        0xE7, REPORT_PORT,                # out 0x10, ax
        0xF4,                             # hlt
        0x90,                             # nop (pads the stub to 8 bytes)
    ])


def guest_image() -> bytes:
    """Return the guest's first pages: the interrupt vector table, the program, the stubs."""
    image = bytearray(STUB_ADDRESS + STUB_SIZE * EXCEPTION_VECTORS)
    for vector in range(EXCEPTION_VECTORS):
        # Real-mode IVT entry: offset (u16), segment (u16).
        struct.pack_into("<HH", image, vector * 4, STUB_ADDRESS + STUB_SIZE * vector, 0)
        start = STUB_ADDRESS + STUB_SIZE * vector
        image[start:start + STUB_SIZE] = _stub(vector)
    image[CODE_ADDRESS:CODE_ADDRESS + len(GUEST_MAIN)] = GUEST_MAIN
    return bytes(image)


if TYPE_CHECKING:

    class Job(NamedTuple):
        """One subject: its packed CPUID, XCR0 values to try (None: enumerated), CR4 bits."""

        subject: str
        cpuid2: bytes
        enumerated: int
        xcr0_values: tuple[int | None, ...]
        cr4_bits: int = CR4_OSXSAVE

else:
    Job = namedtuple("Job", "subject cpuid2 enumerated xcr0_values cr4_bits",
                     defaults=(CR4_OSXSAVE,))


def split_testable(requested: int, *, enumerated: int, supported: int | None,
                   held: int | None) -> tuple[int, int]:
    """Return (XCR0 to try, untestable bits) for ``requested`` on this machine.

    Untestable: bits the subject enumerates (``enumerated``) that KVM cannot enable
    (``supported``), and bits where the vCPU's 0xD.0 after KVM_SET_CPUID2 (``held``)
    disagrees with the subject's. x87 is always testable: KVM accepts it whatever 0xD.0
    says. A bit neither enumerated nor supported stays: XSETBV must #GP on it anyway.
    """
    untestable = 0
    if supported is not None:
        untestable |= enumerated & ~supported
    if held is not None:
        untestable |= enumerated ^ held
    untestable &= requested & ~X87_MASK
    return requested & ~untestable, untestable


# --- the child side -------------------------------------------------------------------------
def run_jobs(system: System, send: Callable[[bytes], None],
             jobs: Sequence[tuple[Any, ...]], request_permission: bool) -> None:
    """In the child: run every job, sending a ``host`` record and one ``run`` per XCR0.

    ``jobs`` are ``Job`` fields as plain tuples (what a request can carry).
    """

    def emit(record: dict[str, object]) -> None:
        """Send one record to the parent."""
        send(marshal.dumps(record))

    permission_errno: int | None = None
    if request_permission:
        try:
            req_xcomp_guest_perm(system, ARCH_XCOMP_TILEDATA)
        except OSError as error:
            permission_errno = error.errno
    memory: mmap.mmap | None = None
    with kvmreader.opened(system) as kvm:
        try:
            supported = kvmreader.supported_xcr0(system, kvm)
            run_size = system.ioctl(kvm, kvmabi.KVM_GET_VCPU_MMAP_SIZE)
            emit({"kind": "host", "kvm_supported_xcr0": supported,
                  "permission_errno": permission_errno})
            memory, address = system.guest_memory(GUEST_MEMORY_SIZE)
            image = guest_image()
            memory[:len(image)] = image
            for job_index, fields in enumerate(jobs):
                _execute_job(job_index, Job(*fields), system, kvm=kvm, address=address,
                             run_size=run_size, supported=supported, emit=emit)
        finally:
            if memory is not None:
                memory.close()


def _execute_job(job_index: int, job: Job, system: System, *, kvm: int, address: int,
                 run_size: int, supported: int,
                 emit: Callable[[dict[str, object]], None]) -> None:
    """Create one VM with one vCPU for ``job``, try each XCR0 value, tear it all down."""
    vm = system.ioctl(kvm, kvmabi.KVM_CREATE_VM, 0)
    vcpu: int | None = None
    run: mmap.mmap | None = None
    try:
        region = bytearray(kvmabi.USERSPACE_MEMORY_REGION.pack(
            0, 0, 0, GUEST_MEMORY_SIZE, address))
        system.ioctl(vm, kvmabi.KVM_SET_USER_MEMORY_REGION, region)
        vcpu = system.ioctl(vm, kvmabi.KVM_CREATE_VCPU, 0)
        run = system.map_vcpu(vcpu, run_size)
        set_cpuid_errno: int | None = None
        vcpu_xcr0: int | None = None
        try:
            system.ioctl(vcpu, kvmabi.KVM_SET_CPUID2, bytearray(job.cpuid2))
        except OSError as error:
            set_cpuid_errno = error.errno
        else:
            vcpu_xcr0 = _held_xcr0(system, vcpu)
            _real_mode(system, vcpu)
        emit({"kind": "job", "job": job_index, "set_cpuid_errno": set_cpuid_errno,
              "vcpu_xcr0": vcpu_xcr0})
        for index, value in enumerate(job.xcr0_values):
            requested = job.enumerated if value is None else value
            tried, _ = split_testable(requested, enumerated=job.enumerated,
                                      supported=supported, held=vcpu_xcr0)
            record: dict[str, object] = {"kind": "run", "job": job_index, "index": index}
            if set_cpuid_errno is not None:
                record["outcome"] = "set-cpuid-failed"
            else:
                record.update(_try_xcr0(system, vcpu, run, tried, job.cr4_bits))
            emit(record)
    finally:
        if run is not None:
            run.close()
        if vcpu is not None:
            system.close(vcpu)
        system.close(vm)


def _held_xcr0(system: System, vcpu: int) -> int | None:
    """Return 0xD.0 EDX:EAX of the CPUID the vCPU holds (KVM_GET_CPUID2); None if unknown."""
    buffer = kvmreader.empty_cpuid2(kvmabi.KVM_MAX_CPUID_ENTRIES)
    try:
        system.ioctl(vcpu, kvmabi.KVM_GET_CPUID2, buffer)
    except OSError:
        return None
    return kvmreader.cpuid2_xcr0(buffer)


def _real_mode(system: System, vcpu: int) -> None:
    """Put the vCPU in real mode with CS base 0 (the reset state has CS base 0xffff0000)."""
    sregs = bytearray(kvmabi.KVM_SREGS_SIZE)
    system.ioctl(vcpu, kvmabi.KVM_GET_SREGS, sregs)
    struct.pack_into("=Q", sregs, kvmabi.SREGS_CS_OFFSET, 0)  # base
    struct.pack_into("=H", sregs, kvmabi.SREGS_CS_OFFSET + 12, 0)  # selector
    system.ioctl(vcpu, kvmabi.KVM_SET_SREGS, sregs)


def _try_xcr0(system: System, vcpu: int, run: mmap.mmap, xcr0: int,
              cr4_bits: int) -> dict[str, object]:
    """Run the guest program once with ``xcr0`` and decode how it stopped."""
    regs = bytearray(kvmabi.REGS.pack(
        0, 0, 0, xcr0 >> 32,          # rax rbx rcx(=0: XCR0) rdx
        cr4_bits, xcr0 & 0xFFFFFFFF,  # rsi rdi
        STACK_TOP, 0,                 # rsp rbp
        0, 0, 0, 0, 0, 0, 0, 0,       # r8..r15
        CODE_ADDRESS, 0x2,            # rip rflags (bit 1 is always set)
    ))
    system.ioctl(vcpu, kvmabi.KVM_SET_REGS, regs)
    try:
        system.ioctl(vcpu, kvmabi.KVM_RUN, 0)
    except OSError as error:
        return {"outcome": "unexpected-exit",
                "detail": f"KVM_RUN failed: {errno_name(error.errno)} ({error.strerror})"}
    (reason,) = struct.unpack_from("=I", run, kvmabi.KVM_RUN_EXIT_REASON_OFFSET)
    if reason != kvmabi.KVM_EXIT_IO:
        return {"outcome": "unexpected-exit", "detail": f"KVM_RUN exit reason {reason}"}
    direction, size, port, count, offset = kvmabi.KVM_RUN_IO.unpack_from(
        run, kvmabi.KVM_RUN_IO_OFFSET)
    if (direction, size, port, count) != (kvmabi.KVM_EXIT_IO_OUT, 2, REPORT_PORT, 1):
        return {"outcome": "unexpected-exit",
                "detail": f"port I/O direction {direction} size {size} port {port:#x}"}
    vector, stage_number = run[offset], run[offset + 1]
    _complete_io(system, vcpu, run)
    stage = STAGES.get(stage_number)
    if vector == DONE and stage == "done":
        return {"outcome": "accepted", "stage": stage, "xcr0_read_back": _read_xcr0(system, vcpu)}
    outcome = "exception"
    if stage == "cr4" and vector == VECTOR_GP:
        outcome = "xsave-unavailable"
    elif stage == "xsetbv" and vector == VECTOR_GP:
        outcome = "#GP"
    elif stage == "xsetbv" and vector == VECTOR_UD:
        outcome = "#UD"
    return {"outcome": outcome, "stage": stage, "vector": vector}


def _read_xcr0(system: System, vcpu: int) -> int | None:
    """Return the vCPU's XCR0 as KVM_GET_XCRS reports it (None where KVM lists none)."""
    xcrs = bytearray(kvmabi.KVM_XCRS_SIZE)
    system.ioctl(vcpu, kvmabi.KVM_GET_XCRS, xcrs)
    (count, _flags) = kvmabi.XCRS_HEADER.unpack_from(xcrs, 0)
    for index in range(min(count, 16)):
        number, _reserved, value = kvmabi.XCR_ENTRY.unpack_from(
            xcrs, kvmabi.XCRS_HEADER.size + index * kvmabi.XCR_ENTRY.size)
        if number == 0:
            return int(value)
    return None


def _complete_io(system: System, vcpu: int, run: mmap.mmap) -> None:
    """Let KVM finish the pending port write without entering the guest (immediate_exit)."""
    run[kvmabi.KVM_RUN_IMMEDIATE_EXIT_OFFSET] = 1
    try:
        system.ioctl(vcpu, kvmabi.KVM_RUN, 0)
    except OSError as error:
        if error.errno != errno.EINTR:
            raise
    finally:
        run[kvmabi.KVM_RUN_IMMEDIATE_EXIT_OFFSET] = 0
