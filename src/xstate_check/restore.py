"""Snapshot restore: can a guest that booted on one host be restored on another?

``restore(source, on, template=None)`` builds the guest from ``source`` (any CPUID source:
``profile:NAME``, a dump file, ``host`` or ``kvm``) after the template, and evaluates the
``restore`` rules (and ``template-leaf-missing``: a guest Firecracker refuses to boot has
no snapshot) once per destination in ``on``: a bundled profile or a dump file (the
table the destination's KVM offers a VMM, as a Firecracker fingerprint records it), or
``kvm``, this host's KVM as the syscall layer reads it (probed in a child process; nothing
in the caller changes). Each destination is one subject of the report, named
``GUEST -> DESTINATION``; the report's exit code is 1 when a destination cannot restore.
"""

from __future__ import annotations

import functools
import os
import sys
import types
from collections.abc import Iterable, Sequence
from pathlib import Path

import attrs

from xstate_check.cpuid import CpuidSet
from xstate_check.engine import Catalogue, evaluate_rules, load_catalogue
from xstate_check.errors import InputError, Location
from xstate_check.report import Report, SubjectReport
from xstate_check.subject import Destination, Subject
from xstate_check.template import Template

__all__ = ["destination_of", "restore", "restore_rules", "restore_subject", "restore_subjects"]

#: The rule family a restore evaluates.
FAMILY = "restore"

DestinationSpec = str | os.PathLike[str] | CpuidSet | Destination


#: Rules of other families a restore also runs: a guest whose template Firecracker refuses
#: never boots, so there is no snapshot to restore.
ALSO = ("template-leaf-missing",)


@functools.cache
def restore_rules() -> Catalogue:
    """Return the rules a restore evaluates: the restore family and ``ALSO``."""
    catalogue = load_catalogue()
    chosen = {rule.id for rule in catalogue.family(FAMILY)}
    chosen.update(catalogue.get(name).id for name in ALSO)
    return catalogue.select(chosen)


def destination_of(spec: DestinationSpec) -> Destination:
    """Return the Destination a ``--on`` value names: a profile, a dump file, or ``kvm``."""
    if isinstance(spec, Destination):
        return spec
    if isinstance(spec, CpuidSet):
        return Destination(spec.source, spec)
    text = os.fspath(spec)
    if isinstance(spec, str) and text == "host":
        raise InputError(
            Location("--on"),
            "expected a destination whose KVM can be read: 'kvm' for this host, a profile or "
            "a dump file ('host' is this CPU's own view, not what its KVM offers a guest)",
        )
    if isinstance(spec, str) and text == "kvm":
        from xstate_check.sources.host import probe

        host = probe(kvm=True)
        table = host.kvm_cpuid_permitted or host.kvm_cpuid
        assert table is not None  # probe(kvm=True) raises ProbeError without KVM
        return Destination("this host", table, host=host)
    from xstate_check.sources.load import load_cpuid

    table = load_cpuid(spec if isinstance(spec, Path) else text)
    return Destination(_short_name(table, text), table)


def _short_name(table: CpuidSet, given: str) -> str:
    """Return a bundled profile's name, else the source as given."""
    return table.source.removeprefix("profile:") if table.source_kind == "profile" else given


def restore_subject(guest: Subject, destination: Destination) -> Subject:
    """Return the subject of restoring ``guest``'s snapshot on ``destination``."""
    return attrs.evolve(guest, name=f"{guest.name} -> {destination.name}",
                        destination=destination)


def restore_subjects(guest: Subject, destinations: Iterable[Destination]) -> list[Subject]:
    """Return one restore subject per destination, in the order given."""
    return [restore_subject(guest, destination) for destination in destinations]


def evaluate_restore(subject: Subject, catalogue: Catalogue | None = None) -> SubjectReport:
    """Evaluate the restore rules (or ``catalogue``) on one restore subject."""
    assert subject.destination is not None
    findings = evaluate_rules(subject, catalogue or restore_rules())
    restorable = not any(finding.severity == "error" for finding in findings)
    return SubjectReport(
        name=subject.name,
        source=subject.cpuid.source,
        template=subject.template,
        findings=tuple(findings),
        details={"destination": subject.destination.name,
                 "destination_source": subject.destination.cpuid.source,
                 "restorable": restorable},
    )


def restore(
    source: str | os.PathLike[str] | CpuidSet,
    on: DestinationSpec | Sequence[DestinationSpec],
    template: Template | str | os.PathLike[str] | None = None,
) -> Report:
    """Check that the guest of ``source`` (after ``template``) restores on each of ``on``."""
    from xstate_check.api import build_subject

    specs: list[DestinationSpec] = (
        [on] if isinstance(on, (str, os.PathLike, CpuidSet, Destination)) else list(on)
    )
    if not specs:
        raise InputError(Location("--on"), "expected at least one destination")
    from xstate_check.sources.load import load_cpuid

    table = source if isinstance(source, CpuidSet) else load_cpuid(os.fspath(source))
    chosen = template if template is None or isinstance(template, Template) else os.fspath(template)
    guest = build_subject(table, chosen, name=_short_name(table, table.source), role="guest")
    destinations = [destination_of(spec) for spec in specs]
    return Report(tuple(evaluate_restore(subject)
                        for subject in restore_subjects(guest, destinations)))


class _CallableModule(types.ModuleType):
    """This module, callable as ``restore``.

    ``xstate_check.restore`` names the function, but importing this submodule rebinds the
    package's attribute to the module; calling the module calls the function, so
    ``xstate_check.restore(source, on)`` works in either order of imports.
    """

    def __call__(
        self,
        source: str | os.PathLike[str] | CpuidSet,
        on: DestinationSpec | Sequence[DestinationSpec],
        template: Template | str | os.PathLike[str] | None = None,
    ) -> Report:
        """Call ``restore``."""
        return restore(source, on, template)


sys.modules[__name__].__class__ = _CallableModule
