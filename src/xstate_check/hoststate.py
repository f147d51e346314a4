"""HostState: what the syscall layer read on this machine."""

from __future__ import annotations

import attrs

from xstate_check.cpuid import CpuidSet

__all__ = ["HostState"]


@attrs.frozen
class HostState:
    """The facts of one host, as read by ``sources.host.probe`` (or built by a test).

    Masks are None where the kernel cannot tell them (EINVAL on an old kernel) or the probe
    was not made; ``notes`` says why, one line per fact left out.

    - ``xcr0`` / ``xinuse``: XGETBV(0) and XGETBV(1) in this process.
    - ``supported``: ``ARCH_GET_XCOMP_SUPP``, what the kernel can enable for a process.
    - ``permitted``: ``ARCH_GET_XCOMP_PERM``, this process's permission.
    - ``guest_permitted``: ``ARCH_GET_XCOMP_GUEST_PERM``, the guest (vCPU) permission.
    - ``kvm_guest_supported``: ``KVM_GET_DEVICE_ATTR(KVM_X86_XCOMP_GUEST_SUPP)``, KVM's
      supported XCR0 before the permission filter.
    - ``kvm_xsave2_size``: ``KVM_CHECK_EXTENSION(KVM_CAP_XSAVE2)``.
    - ``kvm_cpuid``: ``KVM_GET_SUPPORTED_CPUID`` as the VMM gets it with the guest permission
      this process has now; ``kvm_cpuid_permitted``: the same after
      ``ARCH_REQ_XCOMP_GUEST_PERM(18)`` (learnt in a child process unless asked otherwise).
    """

    kernel_release: str
    machine: str = "x86_64"
    host_cpuid: CpuidSet | None = None
    xcr0: int | None = None
    xinuse: int | None = None
    supported: int | None = None
    permitted: int | None = None
    guest_permitted: int | None = None
    kvm_available: bool = False
    kvm_guest_supported: int | None = None
    kvm_xsave2_size: int | None = None
    kvm_cpuid: CpuidSet | None = None
    kvm_cpuid_permitted: CpuidSet | None = None
    permission_requested: bool = False
    notes: tuple[str, ...] = ()

    @property
    def kernel_version(self) -> tuple[int, int]:
        """Return (major, minor) of the kernel release; (0, 0) where it cannot be read."""
        head = self.kernel_release.split("-", 1)[0].split(".")
        try:
            return int(head[0]), int(head[1])
        except (IndexError, ValueError):
            return (0, 0)
