"""The oracle: the guest's XSETBV run for real in a throwaway KVM vCPU.

Most tests run real VMs on this machine's /dev/kvm (skipped with a reason where there is
none). Fakes stand in only for what the machine cannot show: a hanging vCPU, a missing or
forbidden /dev/kvm, an AMX host's permission check, and guest reports this KVM never gives.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import json
import mmap
import os
import signal
import struct
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest

from xstate_check import oracle
from xstate_check.cpuid import CpuidSet
from xstate_check.errors import InputError, ProbeError
from xstate_check.facts import valid_xcr0
from xstate_check.hoststate import HostState
from xstate_check.oracle import OracleResult, run_many, run_oracle, run_subjects
from xstate_check.report import Finding
from xstate_check.sources.load import load_cpuid
from xstate_check.subject import Subject
from xstate_check.system import abi as kvmabi
from xstate_check.system import calls as syscalls
from xstate_check.system import kvm as kvmreader
from xstate_check.system import vcpu
from xstate_check.system.calls import RealSystem
from xstate_check.system.kvm import kvm_cpuid
from xstate_check.xfeatures import AVX512_MASK, MPX_MASK, XFEATURES, XTILE_MASK, by_name

KVM_DEVICE = Path("/dev/kvm")
X87, SSE, YMM = 0x1, 0x2, 0x4
XSAVE_BIT = 1 << 26  # CPUID.1:ECX
TILEDATA = by_name("tiledata").mask
#: The XSETBV bundle rules (the xcr0 family), which the differential test needs.
BUNDLE_RULES = frozenset({
    "amx-tile-pair", "x87-required", "avx-requires-sse", "mpx-pair", "avx512-triple",
})
#: The rules of the xcr0 family (rules/xcr0.toml): what XSETBV accepts.
XCR0_RULES = BUNDLE_RULES | {"apx-excludes-mpx", "guest-within-kvm-supported"}


def sdm_faults(xcr0: int, enumerated: int) -> bool:
    """Return whether XSETBV(xcr0) raises #GP on a CPU enumerating ``enumerated`` in 0xD.0.

    Intel SDM Vol.1 §13.3 and the XSETBV page (the XSETBV #GP conditions), written
    out here so the oracle is checked against the architecture, not against itself.
    """
    if not xcr0 & X87:
        return True  # x87 must be set
    if xcr0 & YMM and not xcr0 & SSE:
        return True  # YMM needs SSE
    if xcr0 & ~enumerated:
        return True  # only enumerated bits
    if xcr0 & MPX_MASK not in (0, MPX_MASK):
        return True  # BNDREGS and BNDCSR together
    if xcr0 & AVX512_MASK and (xcr0 & AVX512_MASK != AVX512_MASK or not xcr0 & YMM):
        return True  # opmask, zmm_hi256, hi16_zmm together, and with YMM
    return bool(xcr0 & XTILE_MASK not in (0, XTILE_MASK))  # TILECFG and TILEDATA together


def kvm_faults(xcr0: int, enumerated: int) -> bool:
    """Return the SDM verdict as KVM applies it: x87 always counts as enumerated.

    ``__kvm_set_xcr``: valid bits = guest_supported_xcr0 | XFEATURE_MASK_FP.
    """
    return sdm_faults(xcr0, enumerated | X87)


def subsets(mask: int) -> list[int]:
    """Return every subset of ``mask``, the empty one included."""
    found = [0]
    for bit in (1 << n for n in range(64) if mask >> n & 1):
        found += [subset | bit for subset in found]
    return sorted(found)


def enumerating(cpuid: CpuidSet, mask: int) -> CpuidSet:
    """Return ``cpuid`` with 0xD.0 EDX:EAX replaced by ``mask`` and CPUID.1:ECX.XSAVE set.

    XSAVE is set because a CPU that enumerates leaf 0xD has it, and because kvm-pvm's
    KVM_GET_SUPPORTED_CPUID leaves it clear (it puts the host's leaf 1 back at
    KVM_SET_CPUID2): without it the rules rightly expect no XSETBV at all.
    """
    with_xsave = cpuid.with_registers(1, 0, ecx=cpuid.get(1, 0).ecx | XSAVE_BIT)
    return with_xsave.with_registers(0xD, 0, eax=mask & 0xFFFFFFFF, edx=mask >> 32)


def open_descriptors() -> int:
    """Return how many descriptors this process holds."""
    return len(os.listdir("/proc/self/fd"))


def assert_no_children() -> None:
    """Fail if this process has a child left (running or unreaped)."""
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)


def guest_permission() -> int | None:
    """Return this process's guest permission mask, or None where it cannot be read."""
    try:
        return syscalls.RealSystem().arch_prctl_get(kvmabi.ARCH_GET_XCOMP_GUEST_PERM)
    except OSError:
        return None


@pytest.fixture(scope="module")
def host_cpuid() -> CpuidSet:
    """Return KVM_GET_SUPPORTED_CPUID of this host; skip where /dev/kvm is not usable."""
    if not KVM_DEVICE.exists():
        pytest.skip("/dev/kvm is absent: the oracle needs KVM")
    if not os.access(KVM_DEVICE, os.R_OK | os.W_OK):
        pytest.skip("/dev/kvm is not readable and writable by this user")
    return kvm_cpuid()


@pytest.fixture(scope="module")
def host_xcr0(host_cpuid: CpuidSet) -> int:
    """Return the XCR0 bits this host's KVM can enable, as the oracle reads them."""
    result = run_oracle(host_cpuid)
    assert result.kvm_supported_xcr0 is not None
    return result.kvm_supported_xcr0


@pytest.fixture
def no_leaks() -> Iterator[None]:
    """Check that the test leaves no descriptor and no child process behind."""
    before = open_descriptors()
    yield
    assert open_descriptors() == before
    assert_no_children()


# --- the host's own CPUID and mutations of it -------------------------------------------
def test_host_cpuid_is_accepted(host_cpuid: CpuidSet, no_leaks: None) -> None:
    """KVM's own supported CPUID: SET_CPUID2 accepted, XSETBV of what it enumerates works."""
    result = run_oracle(host_cpuid)
    enumerated = oracle.enumerated_xcr0(host_cpuid)
    assert result.set_cpuid_errno is None
    assert result.outcome == "accepted"
    assert result.xcr0_requested == enumerated and not result.xcr0_given
    assert result.untestable_bits == enumerated & ~(result.kvm_supported_xcr0 or 0)
    assert result.xcr0_read_back == result.xcr0_tried == enumerated & ~result.untestable_bits
    assert result.exit_code == 0


def test_partial_avx512_raises_gp(host_cpuid: CpuidSet, host_xcr0: int) -> None:
    """A subject enumerating opmask and zmm_hi256 without hi16_zmm: the guest's XSETBV #GPs."""
    if host_xcr0 & AVX512_MASK != AVX512_MASK:
        pytest.skip("this host's KVM cannot enable AVX-512 state")
    partial = oracle.enumerated_xcr0(host_cpuid) & ~by_name("hi16_zmm").mask
    result = run_oracle(enumerating(host_cpuid, partial))
    assert (result.outcome, result.stage, result.vector) == ("#GP", "xsetbv", 13)
    assert result.xcr0_tried == partial and result.untestable_bits == 0
    assert result.guest_faults and result.exit_code == 1


def test_clean_cpuid_is_accepted(host_cpuid: CpuidSet) -> None:
    """x87|sse|ymm enumerated and enabled: accepted, and XCR0 reads back as written."""
    result = run_oracle(enumerating(host_cpuid, X87 | SSE | YMM))
    assert result.outcome == "accepted"
    assert result.xcr0_read_back == X87 | SSE | YMM


def test_bit_not_enumerated_raises_gp(host_cpuid: CpuidSet) -> None:
    """XSETBV of a bit in no bundle that the subject's 0xD.0 does not enumerate: #GP."""
    enumerated = oracle.enumerated_xcr0(host_cpuid)
    extra = next(1 << n for n in (9, 19, 62) if not enumerated >> n & 1)
    assert sdm_faults(enumerated | extra, enumerated)
    result = run_oracle(host_cpuid, xcr0=enumerated | extra)
    assert result.xcr0_given and result.untestable_bits == 0
    assert result.xcr0_tried == enumerated | extra
    assert (result.outcome, result.vector) == ("#GP", 13)


def test_xsetbv_is_checked_against_the_vcpus_enumeration(host_cpuid: CpuidSet,
                                                         host_xcr0: int) -> None:
    """ymm beyond a subject's x87|sse: #GP, or untestable where KVM rewrote 0xD.0.

    Mainline KVM keeps the subject's 0xD.0 and XSETBV #GPs; a KVM that rewrites it (kvm-pvm
    puts the host's back) is caught with KVM_GET_CPUID2 and ymm is reported untestable
    instead of a wrong "accepted".
    """
    assert host_xcr0 & YMM, "an x86-64 KVM host without AVX state"
    result = run_oracle(enumerating(host_cpuid, X87 | SSE), xcr0=X87 | SSE | YMM)
    assert result.vcpu_xcr0 is not None
    if result.enumeration_rewritten:
        assert result.vcpu_xcr0 & YMM and result.untestable_bits == YMM
        assert (result.xcr0_tried, result.outcome) == (X87 | SSE, "accepted")
        assert "KVM rewrote 0xD.0" in oracle.render_text(result)
    else:
        assert result.vcpu_xcr0 == X87 | SSE and result.untestable_bits == 0
        assert (result.xcr0_tried, result.outcome) == (X87 | SSE | YMM, "#GP")


def test_unsupported_bits_are_untestable_not_faults(host_cpuid: CpuidSet, host_xcr0: int) -> None:
    """A user xfeature this host's KVM lacks is reported apart and left out of XSETBV."""
    missing = [x.mask for x in XFEATURES.values()
               if not x.supervisor and not x.dynamic and not x.mask & host_xcr0]
    if not missing:
        pytest.skip("this host's KVM supports every static user xfeature")
    enumerated = oracle.enumerated_xcr0(host_cpuid) | missing[0]
    result = run_oracle(enumerating(host_cpuid, enumerated))
    assert result.untestable_bits == missing[0]
    assert result.xcr0_tried == enumerated & ~missing[0]
    assert result.outcome == "accepted" and result.exit_code == 0
    assert "untestable here" in oracle.render_text(result)


def test_xsetbv_without_osxsave_raises_ud(host_cpuid: CpuidSet) -> None:
    """With CR4.OSXSAVE left clear XSETBV raises #UD, reported by the #UD stub."""
    result = run_oracle(host_cpuid, osxsave=False)
    assert (result.outcome, result.stage, result.vector) == ("#UD", "xsetbv", 6)


def test_ymm_without_sse_raises_gp(host_cpuid: CpuidSet) -> None:
    """XCR0 = x87|ymm (no SSE) #GPs even though the subject enumerates all three."""
    assert run_oracle(host_cpuid, xcr0=X87 | YMM).outcome == "#GP"


def test_high_xcr0_bits_reach_xsetbv_through_edx(host_cpuid: CpuidSet) -> None:
    """Bit 63 (reserved), neither enumerated nor supported, goes to XSETBV in EDX: #GP."""
    result = run_oracle(host_cpuid, xcr0=X87 | SSE | 1 << 63)
    assert result.untestable_bits == 0 and result.xcr0_tried == X87 | SSE | 1 << 63
    assert result.outcome == "#GP"


# --- differential: the oracle against the SDM rules, then against the rule engine -------
def test_every_xcr0_subset_matches_the_sdm(host_cpuid: CpuidSet, host_xcr0: int) -> None:
    """Every subset of the host's XCR0 bits, x87 or not, does in one vCPU what the SDM says."""
    values = subsets(host_xcr0)
    results = run_many(host_cpuid, values)
    enumerated = oracle.enumerated_xcr0(host_cpuid)
    wrong = [(hex(r.xcr0_tried), r.outcome) for r in results
             if r.outcome != ("#GP" if kvm_faults(r.xcr0_tried, enumerated) else "accepted")]
    assert wrong == []
    assert all(r.xcr0_read_back == r.xcr0_tried for r in results if r.outcome == "accepted")
    assert {r.outcome for r in results} == {"#GP", "accepted"}


def test_valid_xcr0_is_what_kvm_accepts(host_cpuid: CpuidSet, host_xcr0: int) -> None:
    """valid_xcr0(mask), which the XSETBV rules of rules/xcr0.toml define, holds exactly for
    the masks KVM lets a guest's XSETBV write, on a vCPU enumerating every bit this host's
    KVM supports: every subset of them, and reserved bit 63."""
    values = [*subsets(host_xcr0), X87 | SSE | 1 << 63]
    wrong = [(hex(r.xcr0_tried), r.outcome) for r in run_many(host_cpuid, values)
             if valid_xcr0(r.xcr0_tried) != (r.outcome == "accepted")]
    assert wrong == []


def test_every_enumeration_and_xcr0_matches_the_sdm(host_cpuid: CpuidSet, host_xcr0: int) -> None:
    """Every enumeration x every XCR0 subset of the host's bits matches the SDM (x87 aside)."""
    values = subsets(host_xcr0)
    if len(values) <= 128:
        enumerations = values
    else:  # keep the matrix to seconds on hosts with many xfeatures
        enumerations = [host_xcr0 & ~(1 << n) for n in range(64) if host_xcr0 >> n & 1]
    wrong = []
    for enumerated in enumerations:
        for result in run_many(enumerating(host_cpuid, enumerated), values):
            expected = "#GP" if kvm_faults(result.xcr0_tried, enumerated) else "accepted"
            if result.outcome != expected:
                wrong.append((hex(enumerated), hex(result.xcr0_tried), result.outcome))
    assert wrong == []


def test_subjects_enabling_what_they_enumerate_match_the_sdm(
    host_cpuid: CpuidSet, host_xcr0: int, no_leaks: None
) -> None:
    """Subjects enabling their own 0xD.0 (one VM each) are accepted iff the SDM rules hold."""
    masks = subsets(host_xcr0)
    results = run_subjects(enumerating(host_cpuid, mask) for mask in masks)
    assert [r.xcr0_requested for r in results] == masks
    wrong = [hex(r.xcr0_requested) for r in results
             if r.outcome != ("#GP" if sdm_faults(r.xcr0_requested, r.xcr0_requested)
                              else "accepted")]
    assert wrong == []


def rule_engine(needed: frozenset[str]) -> Callable[[Subject], Iterable[Finding]]:
    """Return the engine's findings function; skip where it or the ``needed`` rules lack."""
    engine = importlib.import_module("xstate_check.engine")
    evaluate = getattr(engine, "evaluate", None)
    if evaluate is None:
        pytest.skip("xstate_check.engine.evaluate is not there yet: the rule engine has "
                    "not landed, so the oracle is checked against the SDM rules only")
    load_catalogue = getattr(engine, "load_catalogue", None)
    try:
        catalogue = load_catalogue() if load_catalogue is not None else None
    except InputError as error:
        pytest.skip(f"the rule engine has landed but its rules have not ({error})")
    if catalogue is not None:
        missing = sorted(needed - {rule.name for rule in catalogue.rules})
        if missing:
            pytest.skip(f"the catalogue lacks the rules {', '.join(missing)}")

    def findings(subject: Subject) -> Iterable[Finding]:
        """Return the engine's findings on ``subject``."""
        report = evaluate(subject) if catalogue is None else evaluate(subject, catalogue)
        return getattr(report, "findings", report)  # type: ignore[no-any-return]

    return findings


def test_rule_engine_agrees_with_the_oracle(host_cpuid: CpuidSet, host_xcr0: int) -> None:
    """The xcr0 rules predict #GP exactly when XSETBV raises it, for every host subset."""
    findings = rule_engine(BUNDLE_RULES)
    masks = subsets(host_xcr0)
    subjects = [enumerating(host_cpuid, mask) for mask in masks]
    disagreements = []
    for mask, cpuid, result in zip(masks, subjects, run_subjects(subjects), strict=True):
        fired = sorted({f.name for f in findings(Subject(f"xcr0 {mask:#x}", cpuid))
                        if f.name in XCR0_RULES and f.severity == "error"})
        if bool(fired) != (result.outcome == "#GP"):
            disagreements.append((hex(mask), fired, result.outcome))
    assert disagreements == []


def test_permission_rule_agrees_with_kvm_set_cpuid2(host_cpuid: CpuidSet) -> None:
    """dynamic-needs-guest-permission fires exactly where KVM_SET_CPUID2 gives EPERM."""
    findings = rule_engine(frozenset({"dynamic-needs-guest-permission"}))
    host = HostState(kernel_release=os.uname().release, guest_permitted=guest_permission())
    enumerated = oracle.enumerated_xcr0(host_cpuid)
    subjects = [enumerating(host_cpuid, mask) for mask in (enumerated, enumerated | XTILE_MASK)]
    verdicts = []
    for cpuid, result in zip(subjects, run_subjects(subjects), strict=True):
        names = {f.name for f in findings(Subject("permission", cpuid, host=host))}
        verdicts.append(("dynamic-needs-guest-permission" in names,
                         result.set_cpuid_errno == errno.EPERM))
    assert verdicts[0] == (False, False)
    assert verdicts[1][0] == verdicts[1][1]


# --- KVM behaviour that differs from the architecture -----------------------------------
def test_kvm_lets_xsetbv_set_x87_the_subject_does_not_enumerate(host_cpuid: CpuidSet) -> None:
    """KVM accepts XSETBV(x87|sse) for a subject whose 0xD.0 lacks x87; the SDM says #GP.

    KVM's valid bits are guest_supported_xcr0 | FP (real CPUs always enumerate x87);
    kvm-pvm accepts too, having put the host's 0xD.0 back.
    """
    result = run_oracle(enumerating(host_cpuid, SSE), xcr0=X87 | SSE)
    assert sdm_faults(X87 | SSE, SSE)
    assert result.outcome == "accepted" and result.xcr0_read_back == X87 | SSE


def test_tiledata_without_guest_permission_is_refused(host_cpuid: CpuidSet) -> None:
    """TILEDATA without guest permission: KVM_SET_CPUID2 gives EPERM, even without AMX.

    KVM-03: the dynamic-xfeature check runs whatever the host supports.
    """
    permission = guest_permission()
    if permission is not None and permission & TILEDATA:
        pytest.skip("this process holds guest permission for tiledata")
    subject = enumerating(host_cpuid, oracle.enumerated_xcr0(host_cpuid) | XTILE_MASK)
    result = run_oracle(subject)
    assert result.outcome == "set-cpuid-failed" and result.set_cpuid_errno == errno.EPERM
    assert result.kvm_refused and result.exit_code == 1
    text = oracle.render_text(result)
    assert "failed: EPERM" in text and "ARCH_REQ_XCOMP_GUEST_PERM" in text


def test_permission_is_requested_in_the_child_only(host_cpuid: CpuidSet) -> None:
    """request_permission asks in the child only and reports the answer.

    The caller's guest permission is unchanged; without AMX the request fails and EPERM stays.
    """
    before = guest_permission()
    subject = enumerating(host_cpuid, oracle.enumerated_xcr0(host_cpuid) | XTILE_MASK)
    result = run_oracle(subject, request_permission=True)
    assert guest_permission() == before
    assert result.permission_requested
    if result.permission_errno is not None:
        assert result.set_cpuid_errno == errno.EPERM
        assert "ARCH_REQ_XCOMP_GUEST_PERM(18) failed" in oracle.render_text(result)
    else:
        assert result.set_cpuid_errno is None


def test_subject_without_xsave_never_faults_at_xsetbv(host_cpuid: CpuidSet) -> None:
    """A subject without XSAVE is never reported as faulting at XSETBV.

    Mainline KVM makes CR4.OSXSAVE reserved (MOV to CR4 #GPs: xsave-unavailable); a KVM that
    puts XSAVE back in KVM_SET_CPUID2 (kvm-pvm) accepts.
    """
    subject = host_cpuid.with_registers(1, 0, ecx=host_cpuid.get(1, 0).ecx & ~XSAVE_BIT)
    result = run_oracle(subject)
    assert result.outcome in ("xsave-unavailable", "accepted")


# --- real data: Firecracker guest CPUIDs ------------------------------------------------
def test_firecracker_fingerprints(shared_dir: Path, host_cpuid: CpuidSet, host_xcr0: int) -> None:
    """Firecracker guest CPUIDs: AMX ones get EPERM, the rest run what this host can test.

    SPR/GNR on 6.1+ hosts enumerate TILEDATA (0x602e7).
    """
    paths = sorted((shared_dir / "data" / "firecracker").glob("fingerprint_*.json"))
    cpuids = [load_cpuid(path) for path in paths]
    results = run_subjects(cpuids)
    permission = guest_permission() or 0
    named = {path.name: result for path, result in zip(paths, results, strict=True)}
    assert named["fingerprint_INTEL_SAPPHIRE_RAPIDS_6.18host.json"].enumerated_xcr0 == 0x602E7
    for name, result in named.items():
        enumerated = result.enumerated_xcr0
        if enumerated & TILEDATA and not permission & TILEDATA:
            refused = (result.outcome, result.set_cpuid_errno)
            assert refused == ("set-cpuid-failed", errno.EPERM), name
            continue
        # Untestable: enumerated bits this vCPU cannot enable or does not hold.
        held = host_xcr0 & (~0 if result.vcpu_xcr0 is None else result.vcpu_xcr0)
        assert result.untestable_bits == enumerated & ~held & ~X87, name
        expected = "#GP" if kvm_faults(result.xcr0_tried, enumerated) else "accepted"
        assert result.outcome == expected, name


# --- the child process: descriptors, reaping, time limit --------------------------------
def test_runs_leave_no_descriptor_or_child(host_cpuid: CpuidSet, no_leaks: None) -> None:
    """Successful, refused and failing runs leave the caller's descriptors as they were."""
    run_many(host_cpuid, [X87, X87 | SSE, X87 | YMM])
    run_oracle(enumerating(host_cpuid, XTILE_MASK | X87 | SSE))
    with pytest.raises(ProbeError):
        run_oracle(host_cpuid, system=RealSystem("/dev/null"))


class ListingKvm(RealSystem):
    """Fails to open /dev/kvm with the child's descriptors (number: target) as the message."""

    def open_kvm(self, path: str | None = None) -> int:
        """Raise ENODEV naming every descriptor the child holds and what it points to."""
        folder = "/proc/self/fd"
        listed = {}
        for name in os.listdir(folder):
            with contextlib.suppress(OSError):  # the listing's own descriptor is gone by now
                listed[name] = os.readlink(f"{folder}/{name}")
        raise OSError(errno.ENODEV, f"fds {json.dumps(listed)}", "listing")


def test_child_closes_inherited_descriptors(host_cpuid: CpuidSet, tmp_path: Path) -> None:
    """The child holds its request, /dev/null and its result pipe: nothing of the caller's."""
    canary_path = tmp_path / "canary"
    canary = os.open(canary_path, os.O_RDONLY | os.O_CREAT)
    os.set_inheritable(canary, True)  # even a descriptor the caller lets children inherit
    try:
        with pytest.raises(ProbeError) as caught:
            run_oracle(host_cpuid, system=ListingKvm())
    finally:
        os.close(canary)
    listed = json.loads(str(caught.value).split("fds ", 1)[1])
    assert str(canary_path) not in listed.values()
    assert sorted(listed) == ["0", "1", "2", "3"]
    assert listed["0"].startswith("/memfd:xstate-check-request")
    assert listed["1"] == listed["2"] == "/dev/null"
    assert listed["3"].startswith("pipe:")


class HangingKvm(RealSystem):
    """Real KVM, except that running the guest with XCR0 = ``hang_on`` never returns."""

    def __init__(self, hang_on: int) -> None:
        super().__init__()
        self.hang_on = hang_on
        self.armed = False

    def ioctl(self, fd: int, request: int, arg: int | bytearray = 0) -> int:
        """Remember the XCR0 of KVM_SET_REGS; hang in KVM_RUN when it is ``hang_on``."""
        if request == kvmabi.KVM_SET_REGS and isinstance(arg, bytearray):
            registers = kvmabi.REGS.unpack(arg)
            self.armed = (registers[3] << 32 | registers[5]) == self.hang_on
        if request == kvmabi.KVM_RUN and self.armed:
            os.kill(os.getpid(), signal.SIGSTOP)  # stuck for good, as a wedged vCPU would be
        return super().ioctl(fd, request, arg)


def test_stuck_vcpu_times_out_and_is_reaped(host_cpuid: CpuidSet, no_leaks: None) -> None:
    """A stuck vCPU: earlier runs kept, the rest ``timeout``, child reaped, exit code 3."""
    results = run_many(host_cpuid, [X87 | SSE, X87, X87 | YMM, X87 | SSE], timeout=1.0,
                       system=HangingKvm(X87 | YMM))
    assert [r.outcome for r in results] == ["accepted", "accepted", "timeout", "timeout"]
    assert "no report within 1s" in results[2].detail
    assert oracle.exit_code(results) == 3


class Forbidden(RealSystem):
    """/dev/kvm that this user may not open."""

    def open_kvm(self, path: str | None = None) -> int:
        """Refuse as a root-owned 0600 device refuses another user."""
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path or self.kvm_device)


@pytest.mark.parametrize("code", [errno.ENOENT, errno.EACCES])
def test_unusable_kvm_device_is_a_probe_error(tmp_path: Path, code: int, no_leaks: None) -> None:
    """ENOENT (real) or EACCES (faked: root passes modes) on /dev/kvm: ProbeError, exit 3."""
    missing = str(tmp_path / "kvm")
    system = RealSystem(missing) if code == errno.ENOENT else Forbidden(missing)
    with pytest.raises(ProbeError) as caught:
        run_oracle(CpuidSet.from_rows([(0, 0, 0xD, 0, 0, 0)]), system=system)
    assert caught.value.errno == code and caught.value.exit_code == 3
    assert missing in str(caught.value)


def test_device_that_is_not_kvm_is_a_probe_error(no_leaks: None) -> None:
    """/dev/null answers KVM_GET_API_VERSION with ENOTTY: ProbeError, nothing left behind."""
    with pytest.raises(ProbeError) as caught:
        run_oracle(CpuidSet.from_rows([(0, 0, 0xD, 0, 0, 0)]), system=RealSystem("/dev/null"))
    assert caught.value.errno == errno.ENOTTY


# --- fakes for what this machine cannot show --------------------------------------------
class AmxHostKvm(RealSystem):
    """An AMX host: KVM_SET_CPUID2 with TILEDATA gives EPERM until permission is requested.

    Once granted, the real KVM below gets the CPUID without the AMX bits.
    """

    def __init__(self) -> None:
        super().__init__()
        self.permitted = False

    def arch_prctl(self, option: int, arg: int) -> int:
        """Grant ARCH_REQ_XCOMP_GUEST_PERM(18) (in the child, as the real request would be)."""
        if option != kvmabi.ARCH_REQ_XCOMP_GUEST_PERM:
            return super().arch_prctl(option, arg)
        self.permitted = arg == 18
        return 0

    def ioctl(self, fd: int, request: int, arg: int | bytearray = 0) -> int:
        """Apply the permission check to KVM_SET_CPUID2; pass the rest to KVM."""
        if request == kvmabi.KVM_SET_CPUID2 and isinstance(arg, bytearray):
            cpuid = kvmreader.unpack_cpuid2(arg, "subject")
            if oracle.enumerated_xcr0(cpuid) & TILEDATA:
                if not self.permitted:
                    raise PermissionError(errno.EPERM, os.strerror(errno.EPERM))
                regs = cpuid.get(0xD, 0)
                masked = cpuid.with_registers(0xD, 0, eax=regs.eax & ~XTILE_MASK)
                arg = kvmreader.pack_cpuid2(masked)
        return super().ioctl(fd, request, arg)


def test_amx_host_refuses_without_permission_and_accepts_with_it(host_cpuid: CpuidSet) -> None:
    """On a (faked) AMX host the subject gets EPERM, and passes once permission is asked."""
    subject = enumerating(host_cpuid, oracle.enumerated_xcr0(host_cpuid) | XTILE_MASK)
    refused = run_oracle(subject, system=AmxHostKvm())
    granted = run_oracle(subject, system=AmxHostKvm(), request_permission=True)
    assert (refused.outcome, refused.set_cpuid_errno) == ("set-cpuid-failed", errno.EPERM)
    assert granted.set_cpuid_errno is None and granted.permission_errno is None
    assert granted.outcome == "accepted"
    assert "ARCH_REQ_XCOMP_GUEST_PERM(18) granted" in oracle.render_text(granted)


class ReportingKvm(RealSystem):
    """Real VM and vCPU, but KVM_RUN returns a fixed exit instead of running the guest."""

    def __init__(self, exit_reason: int, report: bytes, port: int = vcpu.REPORT_PORT) -> None:
        super().__init__()
        self.exit_reason, self.report, self.port = exit_reason, report, port
        self.run: object = None

    def map_vcpu(self, fd: int, size: int) -> mmap.mmap:
        """Keep the kvm_run page to write exits into."""
        self.run = run = super().map_vcpu(fd, size)
        return run

    def ioctl(self, fd: int, request: int, arg: int | bytearray = 0) -> int:
        """Answer KVM_RUN with the fixed exit (EINTR when immediate_exit is set)."""
        if request != kvmabi.KVM_RUN:
            return super().ioctl(fd, request, arg)
        run = self.run
        assert isinstance(run, mmap.mmap)
        if run[kvmabi.KVM_RUN_IMMEDIATE_EXIT_OFFSET]:
            raise InterruptedError(errno.EINTR, os.strerror(errno.EINTR))
        struct.pack_into("=I", run, kvmabi.KVM_RUN_EXIT_REASON_OFFSET, self.exit_reason)
        kvmabi.KVM_RUN_IO.pack_into(run, kvmabi.KVM_RUN_IO_OFFSET, 1, len(self.report),
                                    self.port, 1, 0x800)
        run[0x800:0x800 + len(self.report)] = self.report
        return 0


@pytest.mark.parametrize(("vector", "stage", "outcome"), [
    (13, 1, "xsave-unavailable"),
    (13, 2, "#GP"),
    (6, 2, "#UD"),
    (0, 2, "exception"),
    (0xFF, 3, "accepted"),
])
def test_guest_reports_are_decoded(host_cpuid: CpuidSet, vector: int, stage: int,
                                   outcome: str) -> None:
    """Each (vector, stage) report maps to its outcome, the CR4 #GP this KVM never gives too."""
    result = run_oracle(host_cpuid, system=ReportingKvm(kvmabi.KVM_EXIT_IO, bytes([vector, stage])))
    assert result.outcome == outcome
    assert result.exit_code == (0 if outcome in ("accepted", "xsave-unavailable") else 1)


@pytest.mark.parametrize(("reason", "port", "detail"), [
    (kvmabi.KVM_EXIT_SHUTDOWN, vcpu.REPORT_PORT, "exit reason 8"),
    (kvmabi.KVM_EXIT_IO, 0x80, "port 0x80"),
])
def test_unexpected_exits_are_inconclusive(host_cpuid: CpuidSet, reason: int, port: int,
                                           detail: str) -> None:
    """A triple fault or a write to another port is ``unexpected-exit`` (exit code 3)."""
    result = run_oracle(host_cpuid, system=ReportingKvm(reason, bytes([0, 2]), port))
    assert result.outcome == "unexpected-exit" and detail in result.detail
    assert result.exit_code == 3


# --- input, rendering, exit codes --------------------------------------------------------
@pytest.mark.parametrize("xcr0", [-1, 1 << 64])
def test_xcr0_outside_64_bits_is_an_input_error(xcr0: int) -> None:
    """An XCR0 that does not fit XSETBV's EDX:EAX is bad input (exit 2), before any fork."""
    with pytest.raises(InputError) as caught:
        run_oracle(CpuidSet.from_rows([(0, 0, 0xD, 0, 0, 0)]), xcr0=xcr0)
    assert caught.value.exit_code == 2 and "--xcr0" in str(caught.value)


def test_too_many_cpuid_entries_is_an_input_error() -> None:
    """More entries than KVM_MAX_CPUID_ENTRIES is bad input naming the source."""
    cpuid = CpuidSet.from_rows([(0x40000000 + n, 0, 0, 0, 0, 0) for n in range(257)], "big.json")
    with pytest.raises(InputError, match=r"big\.json: at most 256 CPUID entries"):
        run_oracle(cpuid)


def test_json_is_complete_and_deterministic(host_cpuid: CpuidSet) -> None:
    """to_json_text gives the same bytes for the same runs, with schema and exit code."""
    first = run_many(host_cpuid, [X87 | SSE, X87 | YMM])
    second = run_many(host_cpuid, [X87 | SSE, X87 | YMM])
    assert oracle.to_json_text(first) == oracle.to_json_text(second)
    document = json.loads(oracle.to_json_text(first))
    assert document["schema"] == oracle.ORACLE_SCHEMA and document["exit_code"] == 1
    assert [r["outcome"] for r in document["results"]] == ["accepted", "#GP"]
    assert document["results"][1]["guest_faults"] is True
    assert document["results"][0]["xcr0_read_back"] == X87 | SSE


def test_text_names_the_outcome_and_the_masks(host_cpuid: CpuidSet) -> None:
    """The text rendering names SET_CPUID2's answer, the masks by name and the verdict."""
    text = oracle.render_text(run_oracle(host_cpuid, xcr0=X87 | YMM))
    assert "KVM_SET_CPUID2    accepted" in text
    assert "XCR0 requested    0x5 (x87|ymm) (given)" in text
    assert "#GP" in text and "fpu__init_cpu_xstate" in text


def test_exit_code_prefers_faults_over_inconclusive() -> None:
    """1 when any run faulted or was refused, else 3 when any was inconclusive, else 0."""
    def result(outcome: oracle.Outcome) -> OracleResult:
        """Return a bare result with ``outcome``."""
        return OracleResult(subject="s", xcr0_requested=3, xcr0_tried=3, outcome=outcome)

    assert oracle.exit_code([result("accepted")]) == 0
    assert oracle.exit_code([result("accepted"), result("timeout")]) == 3
    assert oracle.exit_code([result("timeout"), result("#GP")]) == 1
    assert oracle.exit_code([result("set-cpuid-failed")]) == 1
    assert oracle.exit_code([]) == 0
