"""The system layer: CPUID, XGETBV, arch_prctl and /dev/kvm ioctls behind one interface.

``System`` is what every probe talks to. ``RealSystem`` issues the real instructions and
system calls (ctypes ``syscall(158, …)`` with ``use_errno``, ``cpuid_native``,
``fcntl.ioctl``); ``sources.fakehost.FakeSystem`` models other machines and kernels.
Failures raise ``OSError(errno, os.strerror(errno), context)``, so ``FileNotFoundError``,
``PermissionError``… appear by themselves; callers decide what an errno means.

The arch_prctl options and their errors (RULES-CATALOGUE.md §4.3, from
``arch/x86/include/uapi/asm/prctl.h`` and ``fpu_xstate_prctl()`` in
``arch/x86/kernel/fpu/xstate.c``):

==========================  ======  =====  ==========================================
option                      value   since  errors
==========================  ======  =====  ==========================================
ARCH_GET_XCOMP_SUPP         0x1021  5.16   EINVAL before 5.16 (unknown option)
ARCH_GET_XCOMP_PERM         0x1022  5.16   EINVAL before 5.16
ARCH_REQ_XCOMP_PERM         0x1023  5.16   EINVAL, EOPNOTSUPP, ENOSPC (sigaltstack)
ARCH_GET_XCOMP_GUEST_PERM   0x1024  5.17   EINVAL before 5.17
ARCH_REQ_XCOMP_GUEST_PERM   0x1025  5.17   EINVAL, EOPNOTSUPP, EBUSY (a vCPU exists)
==========================  ======  =====  ==========================================
"""

from __future__ import annotations

import ctypes
import errno as errnos
import fcntl
import os
import struct
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

from xstate_check.cpuid import Registers

try:  # the PyPI ``cpuid`` package; absent off x86-64, where nothing here may run anyway
    import cpuid_native
except ImportError:  # pragma: no cover - this machine has it
    cpuid_native = None

__all__ = [
    "ARCH_GET_XCOMP_GUEST_PERM",
    "ARCH_GET_XCOMP_PERM",
    "ARCH_GET_XCOMP_SUPP",
    "ARCH_OPTION_NAMES",
    "ARCH_REQ_XCOMP_GUEST_PERM",
    "ARCH_REQ_XCOMP_PERM",
    "ARCH_XCOMP_TILECFG",
    "ARCH_XCOMP_TILEDATA",
    "KVM_DEVICE",
    "SYS_ARCH_PRCTL",
    "X86_64_MACHINES",
    "RealSystem",
    "System",
    "Uname",
    "default_system",
    "errno_meaning",
    "get_xcomp_guest_perm",
    "get_xcomp_perm",
    "get_xcomp_supp",
    "os_error",
    "req_xcomp_guest_perm",
    "req_xcomp_perm",
]

#: x86-64 system call number of arch_prctl (arch/x86/entry/syscalls/syscall_64.tbl).
SYS_ARCH_PRCTL = 158
ARCH_GET_XCOMP_SUPP = 0x1021
ARCH_GET_XCOMP_PERM = 0x1022
ARCH_REQ_XCOMP_PERM = 0x1023
ARCH_GET_XCOMP_GUEST_PERM = 0x1024
ARCH_REQ_XCOMP_GUEST_PERM = 0x1025
#: Component numbers the REQ options take; only the highest one of a facility is accepted.
ARCH_XCOMP_TILECFG = 17
ARCH_XCOMP_TILEDATA = 18

ARCH_OPTION_NAMES = {
    ARCH_GET_XCOMP_SUPP: "ARCH_GET_XCOMP_SUPP",
    ARCH_GET_XCOMP_PERM: "ARCH_GET_XCOMP_PERM",
    ARCH_REQ_XCOMP_PERM: "ARCH_REQ_XCOMP_PERM",
    ARCH_GET_XCOMP_GUEST_PERM: "ARCH_GET_XCOMP_GUEST_PERM",
    ARCH_REQ_XCOMP_GUEST_PERM: "ARCH_REQ_XCOMP_GUEST_PERM",
}
_GUEST_OPTIONS = frozenset({ARCH_GET_XCOMP_GUEST_PERM, ARCH_REQ_XCOMP_GUEST_PERM})
_REQ_OPTIONS = frozenset({ARCH_REQ_XCOMP_PERM, ARCH_REQ_XCOMP_GUEST_PERM})

KVM_DEVICE = "/dev/kvm"
#: ``uname -m`` values of x86-64 machines.
X86_64_MACHINES = frozenset({"x86_64", "amd64", "AMD64"})


class Uname(NamedTuple):
    """The parts of uname(2) the probes read."""

    sysname: str
    release: str
    machine: str


class System(Protocol):
    """What a probe may ask of a machine; every failure is an ``OSError`` with its errno."""

    def uname(self) -> Uname:
        """Return the kernel name, release and machine."""
        ...

    def cpuid(self, leaf: int, subleaf: int) -> Registers:
        """Execute CPUID (leaf, subleaf) on this CPU."""
        ...

    def xgetbv(self, index: int) -> int:
        """Execute XGETBV(index); the caller checks OSXSAVE (and XGETBV1 for 1) first."""
        ...

    def arch_prctl_get(self, option: int) -> int:
        """Call arch_prctl(option, &u64) and return the u64 the kernel wrote."""
        ...

    def arch_prctl(self, option: int, arg: int) -> int:
        """Call arch_prctl(option, arg) with an integer argument; return its result."""
        ...

    def open_kvm(self, path: str = KVM_DEVICE) -> int:
        """Open the KVM device read-write (close-on-exec) and return the descriptor."""
        ...

    def ioctl(self, fd: int, request: int, arg: int | bytearray) -> int:
        """Issue an ioctl; a bytearray is passed by address and updated in place."""
        ...

    def close(self, fd: int) -> None:
        """Close a descriptor ``open_kvm`` returned."""
        ...

    def run_isolated(self, func: Callable[[System], bytes]) -> bytes:
        """Run ``func`` in a copy of this process (a child) and return the bytes it returns.

        Whatever ``func`` changes (arch_prctl permissions) stays in the copy. An ``OSError``
        raised there is raised here with the same errno.
        """
        ...


def os_error(code: int, context: str) -> OSError:
    """Return ``OSError(code, strerror, context)``, which Python maps to its subclass."""
    return OSError(code, os.strerror(code), context)


def errno_meaning(option: int, code: int) -> str:
    """Return what an errno from arch_prctl ``option`` means, kernel versions included."""
    guest = option in _GUEST_OPTIONS
    if code == errnos.EINVAL:
        if option in _REQ_OPTIONS:
            return (
                "this kernel has no guest permission API (added in Linux 5.17), or the "
                "component number is out of range"
                if guest
                else "this kernel has no xstate permission API (added in Linux 5.16), or the "
                "component number is out of range"
            )
        return (
            "this kernel has no guest permission API (added in Linux 5.17)"
            if guest
            else "this kernel has no xstate permission API (added in Linux 5.16)"
        )
    if code == errnos.EOPNOTSUPP:
        return (
            "the component is not a dynamic facility, or this kernel/CPU does not support it"
        )
    if code == errnos.EBUSY:
        return (
            "a vCPU already exists in this process: its guest permission is locked"
        )
    if code == errnos.ENOSPC:
        return "an existing sigaltstack is too small for the larger signal frame"
    if code == errnos.EFAULT:
        return "the kernel could not write the result"
    return os.strerror(code)


def _context(option: int, arg: int | None = None) -> str:
    name = ARCH_OPTION_NAMES.get(option, f"arch_prctl({option:#x})")
    return name if arg is None else f"{name}({arg})"


def get_xcomp_supp(system: System) -> int:
    """Return ARCH_GET_XCOMP_SUPP: the xfeatures the kernel can enable for a process."""
    return system.arch_prctl_get(ARCH_GET_XCOMP_SUPP)


def get_xcomp_perm(system: System) -> int:
    """Return ARCH_GET_XCOMP_PERM: this process's permitted xfeatures."""
    return system.arch_prctl_get(ARCH_GET_XCOMP_PERM)


def get_xcomp_guest_perm(system: System) -> int:
    """Return ARCH_GET_XCOMP_GUEST_PERM: the xfeatures this process's vCPUs may get."""
    return system.arch_prctl_get(ARCH_GET_XCOMP_GUEST_PERM)


def req_xcomp_perm(system: System, component: int = ARCH_XCOMP_TILEDATA) -> None:
    """Call ARCH_REQ_XCOMP_PERM(component); changes this process's permission."""
    system.arch_prctl(ARCH_REQ_XCOMP_PERM, component)


def req_xcomp_guest_perm(system: System, component: int = ARCH_XCOMP_TILEDATA) -> None:
    """Call ARCH_REQ_XCOMP_GUEST_PERM(component); changes this process's guest permission."""
    system.arch_prctl(ARCH_REQ_XCOMP_GUEST_PERM, component)


# Child -> parent messages of run_isolated: a tag byte, the body's length (u32), the body.
# The length tells a whole message from one cut short by a child that died while writing.
_CHILD_OK, _CHILD_OSERROR, _CHILD_FAILED = b"O", b"E", b"X"
_CHILD_LENGTH = struct.Struct("=I")
_CHILD_ERRNO = struct.Struct("=i")


def _frame(tag: bytes, body: bytes) -> bytes:
    return tag + _CHILD_LENGTH.pack(len(body)) + body


def encode_child_result(func: Callable[[], bytes]) -> bytes:
    """Run ``func`` and encode its result (or its OSError) as a child's framed message."""
    try:
        return _frame(_CHILD_OK, func())
    except OSError as error:
        text = (error.filename if isinstance(error.filename, str) else "") or ""
        return _frame(_CHILD_OSERROR, _CHILD_ERRNO.pack(error.errno or 0) + text.encode())
    except BaseException as error:  # reported to the parent, never lost
        return _frame(_CHILD_FAILED, repr(error).encode())


def decode_child_result(message: bytes, context: str) -> bytes:
    """Return the body of a child's message; raise its OSError, or RuntimeError if cut short."""
    if not message:
        raise RuntimeError(f"{context}: the child process died before it answered")
    head = 1 + _CHILD_LENGTH.size
    tag = message[:1]
    if len(message) < head or tag not in (_CHILD_OK, _CHILD_OSERROR, _CHILD_FAILED):
        raise RuntimeError(f"{context}: the child process's answer is cut short or garbled")
    (length,) = _CHILD_LENGTH.unpack_from(message, 1)
    body = message[head:]
    if len(body) != length:
        raise RuntimeError(
            f"{context}: the child process's answer is cut short ({len(body)} of {length} bytes)"
        )
    if tag == _CHILD_OK:
        return body
    if tag == _CHILD_OSERROR and len(body) >= _CHILD_ERRNO.size:
        (code,) = _CHILD_ERRNO.unpack_from(body)
        where = body[_CHILD_ERRNO.size :].decode(errors="replace") or context
        raise os_error(code, where) if code else OSError(f"{where}: failed without errno")
    raise RuntimeError(f"{context}: the child process failed: {body.decode(errors='replace')}")


class RealSystem:
    """This machine: real CPUID/XGETBV instructions, system calls and ioctls."""

    def __init__(self) -> None:
        self._syscall: Any = None

    def uname(self) -> Uname:
        """Return os.uname()'s kernel name, release and machine."""
        result = os.uname()
        return Uname(result.sysname, result.release, result.machine)

    def _cpuid_native(self) -> Any:
        if cpuid_native is None:
            raise OSError(
                errnos.ENOSYS, "the cpuid package (module cpuid_native) is not installed", "CPUID"
            )
        return cpuid_native

    def cpuid(self, leaf: int, subleaf: int) -> Registers:
        """Execute CPUID through ``cpuid_native.get_cpuid_count``."""
        _, eax, ebx, ecx, edx = self._cpuid_native().get_cpuid_count(leaf, subleaf)
        return Registers(eax & 0xFFFFFFFF, ebx & 0xFFFFFFFF, ecx & 0xFFFFFFFF, edx & 0xFFFFFFFF)

    def xgetbv(self, index: int) -> int:
        """Execute XGETBV(index) through ``cpuid_native.xgetbv`` (SIGILL without OSXSAVE)."""
        return int(self._cpuid_native().xgetbv(index)) & 0xFFFFFFFFFFFFFFFF

    def _libc_syscall(self) -> Any:
        if self._syscall is None:
            libc = ctypes.CDLL(None, use_errno=True)
            function = libc.syscall
            function.restype = ctypes.c_long
            self._syscall = function
        return self._syscall

    def _arch_prctl(self, option: int, arg: Any, context: str) -> int:
        function = self._libc_syscall()
        ctypes.set_errno(0)
        result = int(function(ctypes.c_long(SYS_ARCH_PRCTL), ctypes.c_long(option), arg))
        if result == -1:
            raise os_error(ctypes.get_errno(), context)
        return result

    def arch_prctl_get(self, option: int) -> int:
        """Call arch_prctl(option, &u64) through libc's syscall(2)."""
        value = ctypes.c_uint64(0)
        self._arch_prctl(option, ctypes.byref(value), _context(option))
        return int(value.value)

    def arch_prctl(self, option: int, arg: int) -> int:
        """Call arch_prctl(option, arg) through libc's syscall(2)."""
        return self._arch_prctl(option, ctypes.c_ulong(arg), _context(option, arg))

    def open_kvm(self, path: str = KVM_DEVICE) -> int:
        """Open ``path`` O_RDWR | O_CLOEXEC."""
        return os.open(path, os.O_RDWR | os.O_CLOEXEC)

    def ioctl(self, fd: int, request: int, arg: int | bytearray) -> int:
        """Issue the ioctl with ``fcntl.ioctl`` (a bytearray is mutated in place)."""
        if isinstance(arg, bytearray):
            return int(fcntl.ioctl(fd, request, arg, True))
        return int(fcntl.ioctl(fd, request, arg))

    def close(self, fd: int) -> None:
        """Close the descriptor."""
        os.close(fd)

    def run_isolated(self, func: Callable[[System], bytes]) -> bytes:
        """Fork; the child runs ``func``, sends the result through a pipe and exits."""
        # Load libc before forking so the child only issues system calls.
        self._libc_syscall()
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child, measured through the pipe
            status = 0
            try:
                os.close(read_end)
                message = encode_child_result(lambda: func(self))
                view = memoryview(message)
                while view:
                    view = view[os.write(write_end, view) :]
            except BaseException:  # the child must never return
                status = 1
            finally:
                os._exit(status)
        os.close(write_end)
        chunks = []
        try:
            while chunk := os.read(read_end, 65536):
                chunks.append(chunk)
        finally:
            os.close(read_end)
            _, status = os.waitpid(pid, 0)
        context = "child process"
        if os.WIFSIGNALED(status):
            context += f" (killed by signal {os.WTERMSIG(status)})"
        return decode_child_result(b"".join(chunks), context)


_DEFAULT: list[RealSystem] = []


def default_system() -> RealSystem:
    """Return the process-wide RealSystem (created on first use)."""
    if not _DEFAULT:
        _DEFAULT.append(RealSystem())
    return _DEFAULT[0]
