"""Host and KVM facts: what the probe read on this machine (``host.*``, ``kvm.*``)."""

from __future__ import annotations

from collections.abc import Callable

from xstate_check.cpuid import CpuidSet
from xstate_check.facts.registry import Facts, Missing, fact
from xstate_check.hoststate import HostState

__all__ = ["kvm_supported_xcr0"]


def kvm_supported_xcr0(host: HostState | None, table: Callable[[], CpuidSet]) -> int:
    """Return the XCR0 bits a host's KVM supports for a guest whose VMM holds the guest
    permission: KVM_X86_XCOMP_GUEST_SUPP where the probe read it, else 0xD.0 EDX:EAX of
    ``table()`` (KVM_GET_SUPPORTED_CPUID as that VMM reads it)."""
    if host is not None and host.kvm_guest_supported is not None:
        return host.kvm_guest_supported
    return table().xcr0_supported


def _host_field(facts: Facts, field: str) -> object:
    host = facts.subject.host
    if host is None:
        raise Missing("no host facts")
    value = getattr(host, field)
    if value is None:
        raise Missing(f"the host probe could not read {field}")
    return value


def _host_fact(name: str, field: str, doc: str) -> None:
    fact(name, "mask", doc, reads=("host",))(lambda facts: _host_field(facts, field))


_host_fact("host.supported", "supported", "ARCH_GET_XCOMP_SUPP: what the host kernel can enable "
           "for a process")
_host_fact("host.permitted", "permitted", "ARCH_GET_XCOMP_PERM: this process's permission")
_host_fact("host.guest_permitted", "guest_permitted", "ARCH_GET_XCOMP_GUEST_PERM: the guest "
           "(vCPU) permission of the probing process")
_host_fact("host.xcr0", "xcr0", "XGETBV(0) in the probing process")
_host_fact("host.kvm_guest_supported", "kvm_guest_supported", "KVM_X86_XCOMP_GUEST_SUPP: KVM's "
           "supported XCR0 before the permission filter")


@fact("host.cpuid_xcr0", "mask", "0xD.0 EDX:EAX of the host's own CPUID",
      reads=("host",))
def _host_cpuid_xcr0(facts: Facts) -> object:
    table = _host_field(facts, "host_cpuid")
    assert isinstance(table, CpuidSet)
    return table.xcr0_supported


@fact("host.kernel", "version", "the host kernel's (major, minor) version",
      reads=("host",))
def _host_kernel(facts: Facts) -> object:
    host = facts.subject.host
    if host is None or host.kernel_version == (0, 0):
        raise Missing("no host kernel version")
    return host.kernel_version


@fact("host.permission_requested", "bool", "whether the probe asked for guest permission "
      "(ARCH_REQ_XCOMP_GUEST_PERM) before reading KVM",
      reads=("host",))
def _host_permission_requested(facts: Facts) -> object:
    return bool(_host_field(facts, "permission_requested"))


@fact("kvm.cpuid_xcr0", "mask", "0xD.0 EDX:EAX of KVM_GET_SUPPORTED_CPUID as read with the "
      "guest permission the probing process had",
      reads=("host",))
def _kvm_cpuid_xcr0(facts: Facts) -> object:
    table = _host_field(facts, "kvm_cpuid")
    assert isinstance(table, CpuidSet)
    return table.xcr0_supported


@fact("kvm.xcr0", "mask", "the XCR0 bits KVM supports for a guest whose VMM holds the guest "
      "permission: KVM_X86_XCOMP_GUEST_SUPP, else 0xD.0 of KVM_GET_SUPPORTED_CPUID (after the "
      "permission request where it was made)",
      reads=("host",))
def _kvm_xcr0(facts: Facts) -> object:
    return kvm_supported_xcr0(facts.subject.host, lambda: _kvm_table(facts))


@fact("kvm.xss", "mask", "0xD.1 EDX:ECX of KVM_GET_SUPPORTED_CPUID: the IA32_XSS bits KVM "
      "supports",
      reads=("host",))
def _kvm_xss(facts: Facts) -> object:
    return _kvm_table(facts).xss_supported


def _kvm_table(facts: Facts) -> CpuidSet:
    """Return KVM_GET_SUPPORTED_CPUID as read after the permission request where it was made."""
    host = facts.subject.host
    if host is None:
        raise Missing("no host facts")
    for table in (host.kvm_cpuid_permitted, host.kvm_cpuid):
        if table is not None:
            return table
    raise Missing("KVM's supported CPUID was not read")
