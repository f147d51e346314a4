"""This machine's system layer: CPUID, XGETBV, arch_prctl, /dev/kvm and children.

``RealSystem`` implements the ``System`` protocol (``system.protocol``), what the probe and
the oracle talk to. It issues the real
instructions, system calls and ioctls (libc's ``syscall(158, …)`` keeping errno, through
``libc``; ``cpuid_native``, ``fcntl.ioctl``, ``mmap``) and starts children with
``isolated.run_isolated``; the test suite's fake host models other machines and kernels.
Failures raise ``OSError(errno, os.strerror(errno), context)``, so ``FileNotFoundError``,
``PermissionError``… appear by themselves; callers decide what an errno means.

The arch_prctl options and their errors (from ``arch/x86/include/uapi/asm/prctl.h`` and
``fpu_xstate_prctl()`` in ``arch/x86/kernel/fpu/xstate.c``):

==========================  ======  =====  ==========================================
option                      value   since  errors
==========================  ======  =====  ==========================================
ARCH_GET_XCOMP_SUPP         0x1021  5.16   EINVAL before 5.16 (unknown option)
ARCH_GET_XCOMP_PERM         0x1022  5.16   EINVAL before 5.16
ARCH_REQ_XCOMP_PERM         0x1023  5.16   EINVAL, EOPNOTSUPP, ENOSPC (sigaltstack)
ARCH_GET_XCOMP_GUEST_PERM   0x1024  5.17   EINVAL before 5.17
ARCH_REQ_XCOMP_GUEST_PERM   0x1025  5.17   EINVAL, EOPNOTSUPP, EBUSY (a vCPU exists)
==========================  ======  =====  ==========================================

Standard library only, without ``typing`` (``Registers`` is imported when CPUID runs): a
child imports this module.
"""

from __future__ import annotations

import errno as errnos
import fcntl
import os
from collections import namedtuple
from collections.abc import Callable

from xstate_check.system import libc
from xstate_check.system.abi import (
    ARCH_GET_XCOMP_GUEST_PERM,
    ARCH_OPTION_NAMES,
    ARCH_REQ_XCOMP_GUEST_PERM,
    ARCH_REQ_XCOMP_PERM,
    ARCH_XCOMP_TILEDATA,
    SYS_ARCH_PRCTL,
)

TYPE_CHECKING = False  # typing is not imported at run time: a child imports this module
if TYPE_CHECKING:
    import mmap
    from typing import Any, NamedTuple

    from xstate_check.cpuid import Registers
    from xstate_check.system.isolated import ChildRun
    from xstate_check.system.protocol import System

__all__ = [
    "KVM_DEVICE",
    "X86_64_MACHINES",
    "RealSystem",
    "Uname",
    "default_system",
    "errno_meaning",
    "errno_name",
    "os_error",
    "req_xcomp_guest_perm",
]

_new_tuple = tuple.__new__

_GUEST_OPTIONS = frozenset({ARCH_GET_XCOMP_GUEST_PERM, ARCH_REQ_XCOMP_GUEST_PERM})
_REQ_OPTIONS = frozenset({ARCH_REQ_XCOMP_PERM, ARCH_REQ_XCOMP_GUEST_PERM})

KVM_DEVICE = "/dev/kvm"
#: ``uname -m`` values of x86-64 machines.
X86_64_MACHINES = frozenset({"x86_64", "amd64", "AMD64"})


if TYPE_CHECKING:

    class Uname(NamedTuple):
        """The parts of uname(2) the probes read."""

        sysname: str
        release: str
        machine: str

else:
    Uname = namedtuple("Uname", "sysname release machine")


def os_error(code: int, context: str) -> OSError:
    """Return ``OSError(code, strerror, context)``, which Python maps to its subclass."""
    return OSError(code, os.strerror(code), context)


def errno_name(code: int | None) -> str:
    """Return the kernel's name of an errno (``EOPNOTSUPP``, not Python's ``ENOTSUP``)."""
    if code == errnos.EOPNOTSUPP:
        return "EOPNOTSUPP"
    return errnos.errorcode.get(code or 0, str(code))


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
        return "a vCPU already exists in this process: its guest permission is locked"
    if code == errnos.ENOSPC:
        return "an existing sigaltstack is too small for the larger signal frame"
    if code == errnos.EFAULT:
        return "the kernel could not write the result"
    return os.strerror(code)


def _context(option: int, arg: int | None = None) -> str:
    name = ARCH_OPTION_NAMES.get(option, f"arch_prctl({option:#x})")
    return name if arg is None else f"{name}({arg})"


def req_xcomp_guest_perm(system: System, component: int = ARCH_XCOMP_TILEDATA) -> None:
    """Call ARCH_REQ_XCOMP_GUEST_PERM(component); changes this process's guest permission."""
    system.arch_prctl(ARCH_REQ_XCOMP_GUEST_PERM, component)


class RealSystem:
    """This machine: real CPUID/XGETBV instructions, system calls, ioctls and children.

    ``kvm_device`` is the device ``open_kvm`` opens by default. A RealSystem is sent to
    its children by class name and state (subclasses too), without the loaded libc function.
    """

    def __init__(self, kvm_device: str = KVM_DEVICE) -> None:
        self.kvm_device = kvm_device
        self._syscall: Any = None
        #: cpuid_native.get_cpuid_count and the Registers type, bound by the first CPUID.
        self._cpuid_count: Any = None
        self._registers: Any = None

    def __getstate__(self) -> dict[str, Any]:
        """Return the state a child gets: everything but the loaded libc and CPUID functions
        (a child stays on the standard library)."""
        return {**self.__dict__, "_syscall": None, "_cpuid_count": None, "_registers": None}

    def uname(self) -> Uname:
        """Return os.uname()'s kernel name, release and machine."""
        result = os.uname()
        return Uname(result.sysname, result.release, result.machine)

    @staticmethod
    def _cpuid_native() -> Any:
        try:
            import cpuid_native  # the PyPI ``cpuid`` package, present on x86-64 only
        except ImportError:
            raise OSError(
                errnos.ENOSYS, "the cpuid package (module cpuid_native) is not installed", "CPUID"
            ) from None
        return cpuid_native

    def cpuid(self, leaf: int, subleaf: int) -> Registers:
        """Execute CPUID through ``cpuid_native.get_cpuid_count``."""
        count = self._cpuid_count
        if count is None:
            from xstate_check.cpuid import Registers

            count = self._cpuid_count = self._cpuid_native().get_cpuid_count
            self._registers = Registers
        _, eax, ebx, ecx, edx = count(leaf, subleaf)
        # tuple.__new__ is what Registers._make does, without a Python-level __new__ call.
        registers: Registers = _new_tuple(self._registers, (eax & 0xFFFFFFFF, ebx & 0xFFFFFFFF,
                                                            ecx & 0xFFFFFFFF, edx & 0xFFFFFFFF))
        return registers

    def xgetbv(self, index: int) -> int:
        """Execute XGETBV(index) through ``cpuid_native.xgetbv`` (SIGILL without OSXSAVE)."""
        return int(self._cpuid_native().xgetbv(index)) & 0xFFFFFFFFFFFFFFFF

    def _libc_syscall(self) -> Any:
        if self._syscall is None:
            self._syscall = libc.syscall_function()
        return self._syscall

    def _arch_prctl(self, option: int, arg: Any, context: str) -> int:
        function = self._libc_syscall()
        libc.set_errno(0)
        result = int(function(libc.c_long(SYS_ARCH_PRCTL), libc.c_long(option), arg))
        if result == -1:
            raise os_error(libc.get_errno(), context)
        return result

    def arch_prctl_get(self, option: int) -> int:
        """Call arch_prctl(option, &u64) through libc's syscall(2)."""
        value = libc.c_uint64(0)
        self._arch_prctl(option, libc.byref(value), _context(option))
        return int(value.value)

    def arch_prctl(self, option: int, arg: int) -> int:
        """Call arch_prctl(option, arg) through libc's syscall(2)."""
        return self._arch_prctl(option, libc.c_ulong(arg), _context(option, arg))

    def open_kvm(self, path: str | None = None) -> int:
        """Open ``path`` (default ``kvm_device``) O_RDWR | O_CLOEXEC."""
        return os.open(path or self.kvm_device, os.O_RDWR | os.O_CLOEXEC)

    def ioctl(self, fd: int, request: int, arg: int | bytearray = 0) -> int:
        """Issue the ioctl with ``fcntl.ioctl`` (a bytearray is mutated in place)."""
        if isinstance(arg, bytearray):
            return int(fcntl.ioctl(fd, request, arg, True))
        return int(fcntl.ioctl(fd, request, arg))

    def close(self, fd: int) -> None:
        """Close the descriptor."""
        os.close(fd)

    def map_vcpu(self, fd: int, size: int) -> mmap.mmap:
        """Map ``struct kvm_run`` of a vCPU."""
        import mmap  # the oracle's alone: a pre-boot check maps nothing

        return mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)

    def guest_memory(self, size: int) -> tuple[mmap.mmap, int]:
        """Return anonymous memory for a guest and its address."""
        import ctypes  # the oracle's alone, as mmap
        import mmap

        memory = mmap.mmap(
            -1, size, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, mmap.PROT_READ | mmap.PROT_WRITE
        )
        view = ctypes.c_char.from_buffer(memory)
        address = ctypes.addressof(view)
        del view  # release the buffer export so the map can be closed
        return memory, address

    def run_isolated(
        self, func: Callable[..., None], *args: object, timeout: float
    ) -> ChildRun:
        """Run ``func(child_system, send, *args)`` in a fresh interpreter (never a fork).

        The child gets a copy of this object (its class by name, its state) and only its
        result pipe.
        """
        from xstate_check.system.isolated import run_isolated

        return run_isolated(func, self, *args, timeout=timeout)


_DEFAULT: list[RealSystem] = []


def default_system() -> RealSystem:
    """Return the process-wide RealSystem (created on first use)."""
    if not _DEFAULT:
        _DEFAULT.append(RealSystem())
    return _DEFAULT[0]
