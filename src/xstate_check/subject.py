"""Subject: one thing checked, a guest CpuidSet with an optional HostState."""

from __future__ import annotations

from typing import Literal

import attrs

from xstate_check.cpuid import CpuidSet
from xstate_check.errors import Location
from xstate_check.hoststate import HostState

__all__ = ["MissingEntry", "Role", "Subject"]

#: ``guest``: a table a VMM hands to KVM_SET_CPUID2 (0xD EBX sizes are the creation values
#: KVM recomputes); ``cpu``: a CPU's own view as an OS saw it (EBX follows that OS's XCR0).
Role = Literal["guest", "cpu"]


@attrs.frozen
class MissingEntry:
    """A CPUID entry a template modifies but the base table lacks (Firecracker refuses it)."""

    leaf: int
    subleaf: int
    location: Location | None


@attrs.frozen
class Subject:
    """One subject: the CpuidSet to check, where it came from, and optional host facts.

    ``base`` is the table before the template (None without one); ``template`` names the
    template file; ``missing_entries`` lists what the template touched that ``base`` lacks.
    """

    name: str
    cpuid: CpuidSet
    role: Role = "guest"
    host: HostState | None = None
    template: str | None = None
    base: CpuidSet | None = None
    missing_entries: tuple[MissingEntry, ...] = ()
