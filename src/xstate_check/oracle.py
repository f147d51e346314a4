"""The oracle: run the guest's XSETBV for real in a throwaway KVM vCPU.

A child process opens /dev/kvm, creates a VM with one vCPU, hands it the subject's CPUID
with KVM_SET_CPUID2 and runs a tiny real-mode guest that executes XSETBV as a guest kernel
does in ``fpu__init_cpu_xstate`` (``system.vcpu`` holds the guest and the child's side);
this module builds the jobs and turns the child's records into results. The child is a fresh
interpreter (``System.run_isolated``, never a fork of the caller), holds no descriptor of
the caller, is killed when it stops reporting for ``timeout`` seconds, and is always
reaped; its records come through a pipe, so the result does not depend on the caller's
SIGCHLD disposition. The calling process never holds a VM.

XCR0 bits this machine cannot put to the test are not tried: bits the subject enumerates
but this host's KVM cannot enable, and bits where the vCPU's 0xD.0 (read back with
KVM_GET_CPUID2) differs from the subject's because KVM rewrote it. They are reported as
untestable here, and XSETBV runs with the rest. Everything that touches KVM goes through a
``System`` (``system.calls``) so a fake can stand in for what this machine cannot show
(EPERM from KVM_SET_CPUID2 on an AMX host, a missing /dev/kvm).
"""

from __future__ import annotations

import errno
import json
import marshal
import os
from collections.abc import Iterable, Sequence
from typing import Literal

import attrs

from xstate_check.cpuid import CpuidSet
from xstate_check.errors import InputError, Location, ProbeError
from xstate_check.system import abi as kvmabi
from xstate_check.system import kvm as kvmreader
from xstate_check.system import vcpu
from xstate_check.system.calls import KVM_DEVICE, RealSystem, errno_name
from xstate_check.system.protocol import System
from xstate_check.system.vcpu import CR4_OSXSAVE, Job, split_testable
from xstate_check.xfeatures import USER_DYNAMIC_MASK, format_mask

__all__ = [
    "ORACLE_SCHEMA",
    "OracleResult",
    "Outcome",
    "exit_code",
    "render_text",
    "run_many",
    "run_oracle",
    "run_subjects",
    "split_testable",
    "to_json",
    "to_json_text",
]

#: The ``schema`` of :func:`to_json_text` output.
ORACLE_SCHEMA = "xstate-check-oracle/1"

#: What happened to one XCR0 value in one vCPU.
#: ``accepted``: XSETBV succeeded; ``#GP``/``#UD``: XSETBV raised that exception;
#: ``exception``: another vector; ``xsave-unavailable``: MOV to CR4.OSXSAVE raised #GP
#: because the subject does not enumerate XSAVE (a guest kernel then never runs XSETBV);
#: ``set-cpuid-failed``: KVM_SET_CPUID2 refused the subject; ``timeout``: the vCPU did not
#: report in time; ``unexpected-exit``: KVM_RUN stopped for another reason.
Outcome = Literal[
    "accepted", "#GP", "#UD", "exception", "xsave-unavailable", "set-cpuid-failed",
    "timeout", "unexpected-exit",
]
#: The step of the guest program that was running when it reported.
Stage = Literal["cr4", "xsetbv", "done"]

GUEST_FAULTS = frozenset({"#GP", "#UD", "exception"})
INCONCLUSIVE = frozenset({"timeout", "unexpected-exit"})

# ---------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------
@attrs.frozen
class OracleResult:
    """What one XCR0 value did in a real vCPU holding the subject's CPUID.

    ``xcr0_requested`` is what was asked (``xcr0_given`` False: the subject's 0xD.0
    EDX:EAX, which a Linux guest enables); ``untestable_bits`` are the requested bits this
    machine cannot test (see :func:`split_testable`), left out of ``xcr0_tried``, which is
    what XSETBV got. ``vcpu_xcr0`` is the 0xD.0 EDX:EAX the vCPU holds after
    KVM_SET_CPUID2 (None when it failed or was not reached). ``set_cpuid_errno`` is
    KVM_SET_CPUID2's errno (None: accepted).
    ``stage`` and ``vector`` say where the guest stopped; ``xcr0_read_back`` is the vCPU's
    XCR0 after an accepted XSETBV (KVM_GET_XCRS).
    """

    subject: str
    xcr0_requested: int
    xcr0_tried: int
    outcome: Outcome
    set_cpuid_errno: int | None = None
    untestable_bits: int = 0
    enumerated_xcr0: int = 0
    kvm_supported_xcr0: int | None = None
    vcpu_xcr0: int | None = None
    xcr0_given: bool = False
    stage: Stage | None = None
    vector: int | None = None
    xcr0_read_back: int | None = None
    permission_requested: bool = False
    permission_errno: int | None = None
    detail: str = ""

    @property
    def guest_faults(self) -> bool:
        """Return whether the guest's XSETBV (or what led to it) raised an exception."""
        return self.outcome in GUEST_FAULTS

    @property
    def kvm_refused(self) -> bool:
        """Return whether KVM_SET_CPUID2 refused the subject's CPUID."""
        return self.outcome == "set-cpuid-failed"

    @property
    def enumeration_rewritten(self) -> bool:
        """Return whether KVM_SET_CPUID2 left the vCPU a 0xD.0 other than the subject's."""
        return self.vcpu_xcr0 is not None and self.vcpu_xcr0 != self.enumerated_xcr0

    @property
    def exit_code(self) -> int:
        """Return 1 for a guest fault or a refused CPUID, 3 when inconclusive, else 0."""
        return exit_code([self])


def exit_code(results: Iterable[OracleResult]) -> int:
    """Return the exit code: 1 if any run faulted or was refused, 3 if inconclusive, else 0."""
    results = list(results)
    if any(r.guest_faults or r.kvm_refused for r in results):
        return 1
    if any(r.outcome in INCONCLUSIVE for r in results):
        return 3
    return 0


def _errno_name(code: int | None) -> str | None:
    return None if code is None else errno_name(code)


def _verdict(result: OracleResult) -> str:
    """Return one sentence saying what happened and what it means for the guest."""
    outcome = result.outcome
    if outcome == "accepted":
        read = "" if result.xcr0_read_back is None else f"; XCR0 is now {result.xcr0_read_back:#x}"
        return f"accepted{read}: a guest kernel enabling this XCR0 boots past XSETBV"
    if outcome == "#GP":
        return ("#GP: a guest kernel enabling this XCR0 oopses at boot in "
                "fpu__init_cpu_xstate")
    if outcome == "#UD":
        return "#UD: XSETBV ran with CR4.OSXSAVE clear"
    if outcome == "exception":
        return f"exception vector {result.vector} at stage {result.stage}"
    if outcome == "xsave-unavailable":
        return ("not run: MOV to CR4.OSXSAVE raised #GP because the subject does not "
                "enumerate XSAVE (CPUID.1:ECX[26]); a guest kernel does not use XSAVE")
    if outcome == "set-cpuid-failed":
        return "not run: KVM_SET_CPUID2 refused the subject's CPUID"
    if outcome == "timeout":
        return f"no answer: {result.detail or 'the vCPU did not report in time'}"
    return f"no answer: {result.detail}"


def render_text(result: OracleResult) -> str:
    """Return the result as lines of text for a person."""
    lines = [f"oracle: {result.subject}"]
    if result.permission_requested:
        granted = ("granted" if result.permission_errno is None
                   else f"failed: {_errno_name(result.permission_errno)}")
        lines.append(f"  guest permission  ARCH_REQ_XCOMP_GUEST_PERM(18) {granted}")
    if result.set_cpuid_errno is None:
        lines.append("  KVM_SET_CPUID2    accepted")
    else:
        code = result.set_cpuid_errno
        lines.append(f"  KVM_SET_CPUID2    failed: {_errno_name(code)} ({os.strerror(code)})")
        if code == errno.EPERM and result.enumerated_xcr0 & USER_DYNAMIC_MASK:
            lines.append("                    the subject enumerates tiledata (xfeature 18) and "
                         "this process holds")
            lines.append("                    no guest permission for it "
                         "(ARCH_REQ_XCOMP_GUEST_PERM)")
    if result.enumeration_rewritten:
        held = format_mask(result.vcpu_xcr0 or 0)
        lines.append(f"  KVM rewrote 0xD.0 the vCPU enumerates {held},")
        lines.append(f"                    not the subject's {format_mask(result.enumerated_xcr0)}")
    origin = "given" if result.xcr0_given else "the subject's 0xD.0 EDX:EAX"
    lines.append(f"  XCR0 requested    {format_mask(result.xcr0_requested)} ({origin})")
    if result.untestable_bits:
        supported = ("unknown" if result.kvm_supported_xcr0 is None
                     else format_mask(result.kvm_supported_xcr0))
        lines.append(f"  untestable here   {format_mask(result.untestable_bits)}: not a guest "
                     "fault; this host's KVM")
        lines.append(f"                    can enable only {supported}"
                     + (", and rewrote 0xD.0" if result.enumeration_rewritten else ""))
    label = "XCR0 not tried   " if result.kvm_refused else "XCR0 tried       "
    lines.append(f"  {label} {format_mask(result.xcr0_tried)}")
    lines.append(f"  XSETBV            {_verdict(result)}")
    return "\n".join(lines)


def to_json(result: OracleResult) -> dict[str, object]:
    """Return the result as a JSON-ready dict (masks as integers, errno also by name)."""
    return {
        "subject": result.subject,
        "outcome": result.outcome,
        "guest_faults": result.guest_faults,
        "set_cpuid_errno": result.set_cpuid_errno,
        "set_cpuid_error": _errno_name(result.set_cpuid_errno),
        "xcr0_requested": result.xcr0_requested,
        "xcr0_given": result.xcr0_given,
        "xcr0_tried": result.xcr0_tried,
        "untestable_bits": result.untestable_bits,
        "enumerated_xcr0": result.enumerated_xcr0,
        "kvm_supported_xcr0": result.kvm_supported_xcr0,
        "vcpu_xcr0": result.vcpu_xcr0,
        "stage": result.stage,
        "vector": result.vector,
        "xcr0_read_back": result.xcr0_read_back,
        "permission_requested": result.permission_requested,
        "permission_error": _errno_name(result.permission_errno),
        "detail": result.detail,
    }


def to_json_text(results: Sequence[OracleResult]) -> str:
    """Return every result as one JSON document (byte-identical for identical results)."""
    document = {
        "schema": ORACLE_SCHEMA,
        "results": [to_json(result) for result in results],
        "exit_code": exit_code(results),
    }
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


# ---------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------
def enumerated_xcr0(cpuid: CpuidSet) -> int:
    """Return the subject's 0xD.0 EDX:EAX: the XCR0 a Linux guest enables by default."""
    return cpuid.xcr0_supported


def run_oracle(
    cpuid: CpuidSet,
    *,
    xcr0: int | None = None,
    timeout: float = 2.0,
    system: System | None = None,
    request_permission: bool = False,
    osxsave: bool = True,
) -> OracleResult:
    """Run one XCR0 (default: the subject's enumerated one) in a throwaway vCPU.

    ``request_permission`` asks for guest permission for tiledata in the child first (as
    a VMM does); ``osxsave=False`` leaves CR4.OSXSAVE clear, so XSETBV raises #UD.
    """
    return run_many(cpuid, [xcr0], timeout=timeout, system=system,
                    request_permission=request_permission, osxsave=osxsave)[0]


def run_many(
    cpuid: CpuidSet,
    xcr0_values: Iterable[int | None],
    *,
    timeout: float = 2.0,
    system: System | None = None,
    request_permission: bool = False,
    osxsave: bool = True,
) -> list[OracleResult]:
    """Run many XCR0 values in one vCPU of one throwaway VM holding ``cpuid``, in order.

    ``timeout`` bounds how long the child may go without reporting a result; the other
    options are those of :func:`run_oracle`.
    """
    return _run_jobs([_job(cpuid, xcr0_values, osxsave=osxsave)], timeout=timeout,
                     system=system, request_permission=request_permission)


def run_subjects(
    cpuids: Iterable[CpuidSet],
    *,
    xcr0: int | None = None,
    timeout: float = 2.0,
    system: System | None = None,
    request_permission: bool = False,
) -> list[OracleResult]:
    """Run each subject in its own throwaway VM, all in one child process, in order."""
    return _run_jobs([_job(cpuid, [xcr0]) for cpuid in cpuids], timeout=timeout,
                     system=system, request_permission=request_permission)


def _job(cpuid: CpuidSet, xcr0_values: Iterable[int | None], *, osxsave: bool = True) -> Job:
    """Check and pack one subject; raise InputError for values KVM cannot take."""
    values = tuple(xcr0_values)
    for value in values:
        if value is not None and not 0 <= value < 1 << 64:
            raise InputError(Location("--xcr0"), f"an XCR0 value of 0..2**64-1, not {value:#x}")
    if len(cpuid) > kvmabi.KVM_MAX_CPUID_ENTRIES:
        raise InputError(Location(cpuid.source),
                         f"at most {kvmabi.KVM_MAX_CPUID_ENTRIES} CPUID entries "
                         f"(KVM_MAX_CPUID_ENTRIES), not {len(cpuid)}")
    return Job(cpuid.source, bytes(kvmreader.pack_cpuid2(cpuid)), enumerated_xcr0(cpuid), values,
                CR4_OSXSAVE if osxsave else 0)


# --- the parent side ---------------------------------------------------------------------
def _run_jobs(
    jobs: list[Job], *, timeout: float, system: System | None, request_permission: bool
) -> list[OracleResult]:
    """Run the jobs in a child process and turn its records into results."""
    system = system or RealSystem()
    try:
        run = system.run_isolated(vcpu.run_jobs, [tuple(job) for job in jobs],
                                  request_permission, timeout=timeout)
    except OSError as error:  # the child's own, or no child could be started
        code = error.errno
        where = error.filename if isinstance(error.filename, str) else KVM_DEVICE
        raise ProbeError(f"KVM oracle: {where}: {error.strerror or error}", code) from None
    except RuntimeError as error:  # the child died or its answer is cut short
        raise ProbeError(f"KVM oracle: {error}") from None
    records = [marshal.loads(message) for message in run.messages]
    return _assemble(jobs, (records, run.finished), timeout=timeout,
                     request_permission=request_permission)


def _assemble(jobs: list[Job], outcome: tuple[list[dict[str, object]], bool], *,
              timeout: float, request_permission: bool) -> list[OracleResult]:
    """Turn the child's records into one result per (job, XCR0), in order."""
    records, finished = outcome
    host = next((r for r in records if r["kind"] == "host"), {})
    supported = _int_or_none(host.get("kvm_supported_xcr0"))
    permission_errno = _int_or_none(host.get("permission_errno"))
    held = {r["job"]: r for r in records if r["kind"] == "job"}
    runs = {(r["job"], r["index"]): r for r in records if r["kind"] == "run"}
    results: list[OracleResult] = []
    for job_index, job in enumerate(jobs):
        job_record = held.get(job_index, {})
        set_cpuid_errno = _int_or_none(job_record.get("set_cpuid_errno"))
        vcpu_xcr0 = _int_or_none(job_record.get("vcpu_xcr0"))
        for index, value in enumerate(job.xcr0_values):
            requested = job.enumerated if value is None else value
            tried, untestable = split_testable(requested, enumerated=job.enumerated,
                                               supported=supported, held=vcpu_xcr0)
            run = runs.get((job_index, index))
            if run is None:
                run = {"outcome": "timeout", "detail": (
                    f"no report within {timeout:g}s" if not finished
                    else "the oracle child did not report this run")}
            results.append(OracleResult(
                subject=job.subject,
                xcr0_requested=requested,
                xcr0_tried=tried,
                outcome=run["outcome"],  # type: ignore[arg-type]
                set_cpuid_errno=set_cpuid_errno,
                untestable_bits=untestable,
                enumerated_xcr0=job.enumerated,
                kvm_supported_xcr0=supported,
                vcpu_xcr0=vcpu_xcr0,
                xcr0_given=value is not None,
                stage=run.get("stage"),  # type: ignore[arg-type]
                vector=_int_or_none(run.get("vector")),
                xcr0_read_back=_int_or_none(run.get("xcr0_read_back")),
                permission_requested=request_permission,
                permission_errno=permission_errno,
                detail=str(run.get("detail", "")),
            ))
    return results


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) else None
