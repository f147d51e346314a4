"""What a template or a restore adds to a subject: the entries a template touched that its
base lacks, the host a snapshot is restored on. ``subject`` gives them under its own names,
importing this module on first use, so that a host check creates neither class."""

from __future__ import annotations

import attrs

from xstate_check.cpuid import CpuidSet
from xstate_check.errors import Location
from xstate_check.hoststate import HostState

__all__ = ["Destination", "MissingEntry"]


@attrs.frozen
class MissingEntry:
    """A CPUID entry a template modifies but the base table lacks (Firecracker refuses it)."""

    leaf: int
    subleaf: int
    location: Location | None


@attrs.frozen
class Destination:
    """Where a snapshot of the subject's guest is restored: the restoring host's KVM view.

    ``cpuid`` is the table the destination's KVM offers a VMM (KVM_GET_SUPPORTED_CPUID after
    the VMM's guest-permission request: a Firecracker fingerprint, this host's ``kvm``) or a
    CPU's own view; ``host`` adds what the syscall layer read there (this host only);
    ``peer`` is the guest table a guest booted at the destination sees (after its template),
    which a migration group compares with the subject's.
    """

    name: str
    cpuid: CpuidSet
    host: HostState | None = None
    peer: CpuidSet | None = None
