"""The pre-boot validation call and the ``host`` check: this machine as the rules see it.

``check_host()`` reads the host (``sources.host.probe``) and checks up to three subjects:

- ``host``: the CPU's own CPUID with the syscall masks (role ``cpu``);
- ``kvm``: KVM_GET_SUPPORTED_CPUID as a VMM gets it with the guest permission the calling
  process has (without ``ARCH_REQ_XCOMP_GUEST_PERM`` unless asked), template applied;
- ``kvm+guest-permission``: the same after ``ARCH_REQ_XCOMP_GUEST_PERM(18)``, learnt in a
  child process. Present only where it differs from ``kvm`` (the host supports TILEDATA and
  the caller has no permission yet).

The verdict follows the caller's VMM. By default it requests guest permission before it
reads KVM's CPUID, as Firecracker (``request_dynamic_xstate_features``), QEMU and Cloud
Hypervisor do: the ``kvm+guest-permission`` view decides, and the findings of the ``kvm``
view, which that VMM never uses, are information, except the half-enabled AMX state of
kernels 5.17-6.3, which stays a warning naming the fix. ``vmm_requests_permission=False``
(``--no-vmm-requests-permission``) turns the roles round.

KVM is required unless the caller opts out (``kvm=False``, ``--no-kvm``): KVM facts that
cannot be read, including the deciding view, raise ProbeError (exit 3) naming the cause, so a
partial check never passes as whole. ``preboot()`` raises ``PrebootError``, carrying the
report, on error findings. Nothing changes the calling process unless
``request_permission=True``; no KVM VM is created.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, cast

from xstate_check.classcode import compiled_once

# The classes of the pre-boot path take the code of their attrs methods from a cache.
with compiled_once():
    import attrs

    from xstate_check.cpuid import CpuidSet
    from xstate_check.engine import evaluate
    from xstate_check.errors import InputError, Location, ProbeError, XstateCheckError
    from xstate_check.hoststate import HostState
    from xstate_check.report import Finding, Report, SubjectReport
    from xstate_check.subject import Subject
    from xstate_check.system.abi import ARCH_XCOMP_TILEDATA
    from xstate_check.system.probe import probe

if TYPE_CHECKING:
    from xstate_check.system.protocol import System
    from xstate_check.template import Template

__all__ = [
    "NO_PERMISSION_VIEW",
    "PERMISSION_VIEW",
    "PrebootError",
    "check_host",
    "host_subjects",
    "preboot",
    "same_view",
    "subject_details",
]

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


#: The view of KVM's CPUID a VMM gets without and with guest permission.
NO_PERMISSION_VIEW = "kvm"
PERMISSION_VIEW = "kvm+guest-permission"
#: The rule whose finding in the no-permission view stays a warning: kernels 5.17-6.3 give a
#: VMM that skips the request TILECFG without TILEDATA, and the guest's XSETBV raises #GP.
_HALF_AMX_RULE = "amx-tile-pair"
_REQUEST_FIRST = (
    "Request guest permission before reading KVM's CPUID: "
    "arch_prctl(ARCH_REQ_XCOMP_GUEST_PERM, 18), as Firecracker's "
    "request_dynamic_xstate_features() does."
)


#: Fields KVM_GET_SUPPORTED_CPUID fills from the CPU the ioctl ran on, its APIC ID: leaf 1
#: EBX[31:24], the x2APIC ID in EDX of leaves 0xB and 0x1F, AMD's extended APIC ID in
#: 0x8000001E EAX. Two reads of one table (the caller's, and the child's that asked for
#: guest permission) may differ there alone.
_APIC_ID_BITS = {(0x1, "ebx"): 0xFF00_0000, (0xB, "edx"): 0xFFFF_FFFF,
                 (0x1F, "edx"): 0xFFFF_FFFF, (0x8000_001E, "eax"): 0xFFFF_FFFF}


def same_view(one: CpuidSet, other: CpuidSet) -> bool:
    """Return whether two KVM CPUID tables are the same but for the APIC IDs in them."""
    if one is other:
        return True  # the probe found nothing the permission changes: one table
    if one.entries.keys() != other.entries.keys() or dict(one.flags) != dict(other.flags):
        return False
    for (leaf, subleaf), registers in one.entries.items():
        theirs = other.entries[(leaf, subleaf)]
        if registers == theirs:
            continue
        for name in ("eax", "ebx", "ecx", "edx"):
            differ = getattr(registers, name) ^ getattr(theirs, name)
            if differ & ~_APIC_ID_BITS.get((leaf, name), 0):
                return False
    return True


def host_subjects(state: HostState, template: Template | None = None) -> list[Subject]:
    """Return the subjects of a host check: the host, and KVM's CPUID views when read."""
    subjects: list[Subject] = []
    if state.host_cpuid is not None:
        subjects.append(Subject.of("host", state.host_cpuid, role="cpu", host=state))
    if state.kvm_cpuid is None:
        return subjects
    views: list[tuple[str, CpuidSet, HostState]] = [(NO_PERMISSION_VIEW, state.kvm_cpuid, state)]
    permitted = state.kvm_cpuid_permitted
    if permitted is not None and not same_view(permitted, state.kvm_cpuid):
        views.append((PERMISSION_VIEW, permitted, _permitted_host(state, permitted)))
    if template is None:
        subjects.extend(Subject.of(name, table, role="guest", host=host)
                        for name, table, host in views)
        return subjects
    # The template machinery (JSON with positions) is imported only when a template is given.
    build_subject = importlib.import_module("xstate_check.api").build_subject
    for name, table, host in views:
        subjects.append(build_subject(table, template, host, name=name, role="guest"))
    return subjects


def _deciding_view(subjects: list[Subject], vmm_requests_permission: bool) -> str | None:
    """Return the name of the KVM view that decides the verdict, or None without two views."""
    names = {subject.name for subject in subjects}
    if PERMISSION_VIEW not in names:
        return None  # one view only: it decides, whatever the VMM does
    return PERMISSION_VIEW if vmm_requests_permission else NO_PERMISSION_VIEW


def _as_information(finding: Finding, view: str) -> Finding:
    """Return a finding of the view the caller's VMM does not use, rated as information."""
    if view == NO_PERMISSION_VIEW and finding.name == _HALF_AMX_RULE:
        return attrs.evolve(
            finding,
            severity="warning" if finding.severity == "error" else finding.severity,
            message=f"without guest permission (a VMM that skips the request): "
            f"{finding.message}",
            fix=_REQUEST_FIRST,
        )
    who = "skips" if view == NO_PERMISSION_VIEW else "makes"
    return attrs.evolve(
        finding,
        severity="info",
        message=f"only for a VMM that {who} the guest-permission request: {finding.message}",
    )


def _load(template: Template | str | os.PathLike[str] | None) -> Template | None:
    if template is None:
        return None
    module = importlib.import_module("xstate_check.template")
    if isinstance(template, str | os.PathLike):
        return cast("Template", module.load_template(template))
    if not isinstance(template, module.Template):
        raise TypeError("preboot() and check_host() expect template to be a Template, a "
                        f"template file path or None, not {type(template).__name__}")
    return cast("Template", template)


def _evaluate(subjects: list[Subject], vmm_requests_permission: bool = True) -> Report:
    deciding = _deciding_view(subjects, vmm_requests_permission)
    reports: list[SubjectReport] = []
    for subject in subjects:
        result = evaluate(subject)
        details: dict[str, object] = {**result.details, **subject_details(subject)}
        findings = result.findings
        if deciding is not None and subject.name in (PERMISSION_VIEW, NO_PERMISSION_VIEW):
            decides = subject.name == deciding
            details["verdict"] = "decides" if decides else "information"
            if not decides:
                findings = tuple(_as_information(f, subject.name) for f in findings)
        reports.append(attrs.evolve(result, findings=findings, details=details))
    return Report(tuple(reports))


def _require_deciding_view(state: HostState, vmm_requests_permission: bool) -> None:
    """Raise ProbeError where the KVM view that decides the verdict could not be read."""
    if state.kvm_cpuid is None:
        return  # the caller skipped KVM (kvm=False): the report says so in its notes
    if vmm_requests_permission and state.kvm_cpuid_permitted is None:
        why = "; ".join(note for note in state.notes if "guest permission" in note)
        raise ProbeError(
            "cannot read KVM's CPUID as a VMM that requests guest permission gets it"
            + (f": {why}" if why else "")
            + " (pass --no-vmm-requests-permission / vmm_requests_permission=False if "
            "the VMM does not request it)"
        )


def check_host(
    template: Template | str | os.PathLike[str] | None = None,
    *,
    vmm_requests_permission: bool = True,
    request_permission: bool = False,
    system: System | None = None,
    kvm: bool = True,
) -> Report:
    """Check this host: its CPU and syscall masks, and KVM's CPUID (template applied).

    ``vmm_requests_permission``: whether the VMM calls ARCH_REQ_XCOMP_GUEST_PERM before it
    reads KVM's CPUID (Firecracker, QEMU, Cloud Hypervisor do); that view decides, the other
    is information. ``kvm=False`` skips /dev/kvm (not with a template, which applies to KVM's
    CPUID). ProbeError (exit 3) where the host or KVM cannot be probed; InputError (exit 2)
    for a bad template. ``request_permission`` asks for guest permission in this process.
    """
    loaded = _load(template)
    if loaded is not None and not kvm:
        raise InputError(
            Location(loaded.path),
            "a template applies to KVM's supported CPUID, which --no-kvm skips: drop one of them",
        )
    state = probe(system, kvm=kvm, request_permission=request_permission)
    _require_deciding_view(state, vmm_requests_permission)
    return _evaluate(host_subjects(state, loaded), vmm_requests_permission)


def preboot(
    template: Template | str | os.PathLike[str] | None = None,
    *,
    vmm_requests_permission: bool = True,
    request_permission: bool = False,
    system: System | None = None,
    kvm: bool = True,
    strict: bool = False,
) -> Report:
    """Validate, before a VM boots, the KVM CPUID view the caller's VMM will use.

    Takes the same arguments as ``check_host``. Returns the report when it has no error
    findings (no warnings either when ``strict``); raises PrebootError carrying it otherwise,
    and ProbeError where the host cannot be probed.
    """
    report = check_host(
        template,
        vmm_requests_permission=vmm_requests_permission,
        request_permission=request_permission,
        system=system,
        kvm=kvm,
    )
    if report.exit_code(strict):
        raise PrebootError(report, strict=strict)
    return report
