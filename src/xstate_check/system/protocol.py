"""The System protocol: what the host probe and the oracle may ask of a machine.

``system.calls.RealSystem`` is this machine; the test suite's fake host models others.
Every failure is an ``OSError`` with its errno (``system.calls.os_error``); callers decide
what an errno means. A child process never imports this module (it needs ``typing``).
"""

from __future__ import annotations

import mmap
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from xstate_check.cpuid import Registers
    from xstate_check.system.calls import Uname
    from xstate_check.system.isolated import ChildRun

__all__ = ["System"]


class System(Protocol):
    """What the probe and the oracle may ask of a machine; failures are ``OSError``s."""

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

    def open_kvm(self, path: str | None = None) -> int:
        """Open the KVM device (default: this system's) read-write, close-on-exec."""
        ...

    def ioctl(self, fd: int, request: int, arg: int | bytearray = 0) -> int:
        """Issue an ioctl; a bytearray is passed by address and updated in place."""
        ...

    def close(self, fd: int) -> None:
        """Close a descriptor ``open_kvm`` or an ioctl returned."""
        ...

    def map_vcpu(self, fd: int, size: int) -> mmap.mmap:
        """Map a vCPU's ``struct kvm_run`` (shared, read-write)."""
        ...

    def guest_memory(self, size: int) -> tuple[mmap.mmap, int]:
        """Return anonymous page-aligned memory and its user-space address."""
        ...

    def run_isolated(
        self, func: Callable[..., None], *args: object, timeout: float
    ) -> ChildRun:
        """Run ``func(system, send, *args)`` in a child process; return what it sent.

        Whatever ``func`` changes (arch_prctl permissions, a VM) stays in the child. The
        child is killed when it goes ``timeout`` seconds without sending; an ``OSError``
        raised there is raised here with the same errno (``isolated`` says the rest).
        """
        ...
