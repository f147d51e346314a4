"""Subject: one thing checked, a guest CpuidSet with an optional HostState."""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from xstate_check import lazy_attributes
from xstate_check.cpuid import CpuidSet, Role
from xstate_check.hoststate import HostState

if TYPE_CHECKING:
    from xstate_check.subjectparts import Destination, MissingEntry

__all__ = ["Destination", "MissingEntry", "Role", "Subject"]



@attrs.frozen
class Subject:
    """One subject: the CpuidSet to check, where it came from, and optional host facts.

    ``base`` is the table before the template (None without one); ``template`` names the
    template file; ``missing_entries`` lists what the template touched that ``base`` lacks;
    ``destination`` is set when the subject is a snapshot to restore on another host.
    """

    name: str
    cpuid: CpuidSet
    role: Role = "guest"
    host: HostState | None = None
    template: str | None = None
    base: CpuidSet | None = None
    missing_entries: tuple[MissingEntry, ...] = ()
    destination: Destination | None = None

    @classmethod
    def of(
        cls,
        name: str,
        table: CpuidSet,
        *,
        role: Role | None = None,
        host: HostState | None = None,
        template: str | None = None,
        guest: CpuidSet | None = None,
        missing: tuple[MissingEntry, ...] = (),
    ) -> Subject:
        """Return the subject of ``table``, or of the ``guest`` a template made of it.

        Without a template the role is ``role``, else the table's own. With one (``template``
        names it, ``guest`` is the table after it, ``missing`` the entries it lacked), the
        subject is a guest: a template is applied to the table a VMM hands to KVM.
        """
        if template is None:
            return cls(name, table, role=role or table.role, host=host)
        return cls(name, guest if guest is not None else table, role="guest", host=host,
                   template=template, base=table, missing_entries=missing)



#: Made when first used: a host check creates neither.
__getattr__ = lazy_attributes(__name__, dict.fromkeys(("Destination", "MissingEntry"),
                                                     "xstate_check.subjectparts"), globals())
