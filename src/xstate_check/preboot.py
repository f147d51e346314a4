"""The pre-boot validation call and the ``host`` check: this machine as the rules see it.

``check_host()`` reads the host (``sources.host.probe``) and checks up to three subjects:

- ``host``: the CPU's own CPUID with the syscall masks (role ``cpu``);
- ``kvm``: KVM_GET_SUPPORTED_CPUID as a VMM gets it with the guest permission the calling
  process has (without ``ARCH_REQ_XCOMP_GUEST_PERM`` unless asked), template applied;
- ``kvm+guest-permission``: the same after ``ARCH_REQ_XCOMP_GUEST_PERM(18)``, as
  Firecracker does it, learnt in a child process. Present only where it differs from
  ``kvm`` (the host supports TILEDATA and the caller has no permission yet).

``preboot()`` is the same check for a VMM or orchestrator: KVM is required by default and
error findings raise ``PrebootError``, which carries the report. Nothing changes the calling
process unless ``request_permission=True``; no KVM VM is created.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, cast

import attrs

from xstate_check.cpuid import CpuidSet
from xstate_check.engine import evaluate
from xstate_check.errors import InputError, Location, XstateCheckError
from xstate_check.hoststate import HostState
from xstate_check.report import Report, SubjectReport
from xstate_check.sources.host import probe
from xstate_check.sources.syscalls import ARCH_XCOMP_TILEDATA, System
from xstate_check.subject import Subject

if TYPE_CHECKING:
    from xstate_check.template import Template

__all__ = ["PrebootError", "check_host", "host_subjects", "preboot", "subject_details"]

TILEDATA = 1 << ARCH_XCOMP_TILEDATA
#: KVM_CAP_XSAVE2 never reports less than sizeof(struct kvm_xsave).
KVM_XSAVE_SIZE = 4096


class PrebootError(XstateCheckError):
    """Raised by ``preboot()`` when the report has error findings (warnings too if strict).

    ``report`` holds the whole report; the exit code is 1.
    """

    exit_code = 1

    def __init__(self, report: Report, *, strict: bool = False) -> None:
        self.report = report
        self.strict = strict
        found = report.errors or (report.warnings if strict else [])
        first = found[0] if found else None
        summary = report.summary()
        text = (
            f"pre-boot check failed: {summary['errors']} error(s), "
            f"{summary['warnings']} warning(s)"
        )
        if first is not None:
            text += f"; first: {first.rule} {first.name}: {first.message}"
        super().__init__(text)


def _hex(value: int | None) -> str | None:
    return None if value is None else f"{value:#x}"


def _table_details(cpuid: CpuidSet, prefix: str = "") -> dict[str, object]:
    return {
        f"{prefix}xcr0_supported": _hex(cpuid.xcr0_supported),
        f"{prefix}xss_supported": _hex(cpuid.xss_supported),
        f"{prefix}xsave_size_max": cpuid.get(0xD, 0).ecx,
    }


def subject_details(subject: Subject) -> dict[str, object]:
    """Return the facts read for a host-check subject, masks as hex strings, for the report."""
    host = subject.host
    details: dict[str, object] = {"role": subject.role}
    if host is not None and subject.role == "cpu":
        details.update(
            kernel_release=host.kernel_release,
            machine=host.machine,
            cpu=subject.cpuid.meta.get("cpu", ""),
            xcr0=_hex(host.xcr0),
            xinuse=_hex(host.xinuse),
            supported=_hex(host.supported),
            permitted=_hex(host.permitted),
            guest_permitted=_hex(host.guest_permitted),
            kvm_available=host.kvm_available,
            kvm_guest_supported=_hex(host.kvm_guest_supported),
            kvm_xsave2_size=host.kvm_xsave2_size,
            permission_requested=host.permission_requested,
        )
        details.update(_table_details(subject.cpuid, "cpuid_"))
        details["notes"] = list(host.notes)
        return details
    details.update(_table_details(subject.cpuid))
    details["entries"] = len(subject.cpuid)
    if subject.base is not None:
        details.update(_table_details(subject.base, "kvm_"))
    if host is not None:
        details.update(
            view=subject.cpuid.meta.get("view", ""),
            guest_permitted=_hex(host.guest_permitted),
            kvm_guest_supported=_hex(host.kvm_guest_supported),
            kvm_xsave2_size=host.kvm_xsave2_size,
        )
    return details


def _permitted_host(state: HostState, permitted: CpuidSet) -> HostState:
    """Return the host as a VMM sees it once its ARCH_REQ_XCOMP_GUEST_PERM(18) succeeded.

    The kernel sets the guest permission to ``permitted | TILEDATA``; KVM_CAP_XSAVE2 is then
    max(4096, the standard size KVM reports in 0xD.0 ECX), both by the code KVM-06/10 cite.
    """
    return attrs.evolve(
        state,
        guest_permitted=(state.guest_permitted or 0) | TILEDATA,
        kvm_xsave2_size=(
            max(KVM_XSAVE_SIZE, permitted.get(0xD, 0).ecx)
            if state.kvm_xsave2_size is not None
            else None
        ),
        kvm_cpuid=permitted,
        permission_requested=True,
    )


def host_subjects(state: HostState, template: Template | None = None) -> list[Subject]:
    """Return the subjects of a host check: the host, and KVM's CPUID views when read."""
    subjects: list[Subject] = []
    if state.host_cpuid is not None:
        subjects.append(Subject("host", state.host_cpuid, role="cpu", host=state))
    if state.kvm_cpuid is None:
        return subjects
    views: list[tuple[str, CpuidSet, HostState]] = [("kvm", state.kvm_cpuid, state)]
    permitted = state.kvm_cpuid_permitted
    if permitted is not None and permitted != state.kvm_cpuid:
        views.append(("kvm+guest-permission", permitted, _permitted_host(state, permitted)))
    if template is None:
        subjects.extend(Subject(name, table, role="guest", host=host)
                        for name, table, host in views)
        return subjects
    # The template machinery (JSON with positions) is imported only when a template is given.
    build_subject = importlib.import_module("xstate_check.api").build_subject
    for name, table, host in views:
        subjects.append(build_subject(table, template, host, name=name, role="guest"))
    return subjects


def _load(template: Template | str | os.PathLike[str] | None) -> Template | None:
    if template is None:
        return None
    if isinstance(template, str | os.PathLike):
        load_template = importlib.import_module("xstate_check.template").load_template
        return cast("Template", load_template(template))
    return template


def _evaluate(subjects: list[Subject]) -> Report:
    reports: list[SubjectReport] = []
    for subject in subjects:
        result = evaluate(subject)
        details: Mapping[str, object] = {**result.details, **subject_details(subject)}
        reports.append(attrs.evolve(result, details=details))
    return Report(tuple(reports))


def check_host(
    template: Template | str | os.PathLike[str] | None = None,
    *,
    request_permission: bool = False,
    system: System | None = None,
    kvm: bool | None = None,
) -> Report:
    """Check this host: its CPU and syscall masks, and KVM's CPUID (template applied).

    ``kvm``: None uses /dev/kvm when usable (required when a template is given, since the
    template applies to KVM's CPUID), True requires it, False skips it. ProbeError (exit 3)
    where the host cannot be probed; InputError (exit 2) for a bad template.
    """
    loaded = _load(template)
    if loaded is not None and kvm is False:
        raise InputError(
            Location(loaded.path),
            "a template applies to KVM's supported CPUID, which --no-kvm skips: drop one of them",
        )
    state = probe(
        system,
        kvm=True if loaded is not None and kvm is None else kvm,
        request_permission=request_permission,
    )
    return _evaluate(host_subjects(state, loaded))


def preboot(
    template: Template | str | os.PathLike[str] | None = None,
    *,
    request_permission: bool = False,
    system: System | None = None,
    kvm: bool | None = None,
    strict: bool = False,
) -> Report:
    """Validate, before a VM boots, what the VMM will get from KVM (with and without permission).

    KVM is required unless ``kvm=False``. Returns the report when it has no error findings
    (no warnings either when ``strict``); raises PrebootError carrying it otherwise, and
    ProbeError where the host cannot be probed. Requests guest permission in this process
    only when ``request_permission=True``.
    """
    report = check_host(
        template,
        request_permission=request_permission,
        system=system,
        kvm=True if kvm is None else kvm,
    )
    if report.exit_code(strict):
        raise PrebootError(report, strict=strict)
    return report
