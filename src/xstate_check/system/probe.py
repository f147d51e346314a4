"""The host probe: this host's CPUID, XCR0, xstate permission masks and KVM facts.

``probe()`` reads everything into a ``HostState`` without changing the process: no
``ARCH_REQ_*`` call unless ``request_permission=True``, no KVM VM. The view KVM gives
*after* ``ARCH_REQ_XCOMP_GUEST_PERM(18)`` is learnt in a child process (``run_isolated``:
a fresh interpreter, never a fork of the caller, killed after ``PERMITTED_VIEW_TIMEOUT``
seconds), and only when the kernel supports TILEDATA; otherwise the two views are the
same table. ``sources.host`` offers the same functions as CPUID sources.

"Cannot probe" (not x86-64, no CPUID, /dev/kvm required but unusable) raises
``ProbeError`` (exit 3); "this kernel cannot tell" (EINVAL on an old kernel) leaves the
fact None and adds a note saying why.
"""

from __future__ import annotations

import contextlib
import errno as errnos
import os

from xstate_check.cpuid import CpuidSet, Registers
from xstate_check.errors import ProbeError
from xstate_check.hoststate import HostState
from xstate_check.system import abi
from xstate_check.system import kvm as kvmsource
from xstate_check.system.abi import (
    ARCH_GET_XCOMP_GUEST_PERM,
    ARCH_GET_XCOMP_PERM,
    ARCH_GET_XCOMP_SUPP,
    ARCH_OPTION_NAMES,
    ARCH_REQ_XCOMP_GUEST_PERM,
    ARCH_XCOMP_TILEDATA,
)
from xstate_check.system.calls import (
    KVM_DEVICE,
    X86_64_MACHINES,
    Uname,
    default_system,
    errno_meaning,
    errno_name,
    req_xcomp_guest_perm,
)
from xstate_check.xfeatures import bits

TYPE_CHECKING = False  # the protocol (a typing.Protocol class) is for the type checker only
if TYPE_CHECKING:
    from xstate_check.system.protocol import System

__all__ = [
    "PERMITTED_VIEW_TIMEOUT",
    "host_cpuid",
    "kvm_cpuid",
    "permitted_kvm_cpuid",
    "probe",
]

#: Seconds the child that learns KVM's CPUID with guest permission may take (after its
#: interpreter has started); it is killed and ``ProbeError`` raised after that.
PERMITTED_VIEW_TIMEOUT = 5.0

TILEDATA = 1 << ARCH_XCOMP_TILEDATA
XSAVE_LEAF = 0xD
#: Subleaf enumerations driven by a register (7.0 EAX, 0x1D.0 EAX…) stop here at most.
MAX_ENUMERATED_SUBLEAF = 8
#: Extended leaves read when the CPU has them: features, brand string, address sizes.
EXTENDED_LEAVES = (0x80000001, 0x80000002, 0x80000003, 0x80000004, 0x80000008)


def _require_x86_64(name: Uname) -> None:
    if name.sysname != "Linux" or name.machine not in X86_64_MACHINES:
        raise ProbeError(
            f"this machine is {name.sysname} {name.machine}: the host check needs Linux on x86-64"
        )


def _read_cpuid(system: System, release: str) -> CpuidSet:
    """Read leaf 0 and then only the leaves and subleaves the rules use."""
    entries: dict[tuple[int, int], Registers] = {}

    def read(leaf: int, subleaf: int = 0) -> Registers:
        regs = entries[(leaf, subleaf)] = system.cpuid(leaf, subleaf)
        return regs

    max_basic = read(0).eax
    if max_basic >= 1:
        read(1)
    if max_basic >= 7:
        for subleaf in range(1, min(read(7, 0).eax, MAX_ENUMERATED_SUBLEAF) + 1):
            read(7, subleaf)
    if max_basic >= XSAVE_LEAF:
        # 2 + one per enumerated component: 0xD.0 (XCR0 bits), 0xD.1 (XSS bits), then n >= 2.
        sub0, sub1 = read(XSAVE_LEAF, 0), read(XSAVE_LEAF, 1)
        mask = (sub0.edx << 32 | sub0.eax) | (sub1.edx << 32 | sub1.ecx)
        for number in bits(mask & ~0x3):
            read(XSAVE_LEAF, number)
    for leaf in (0x1D, 0x1E):
        if max_basic >= leaf:
            for subleaf in range(1, min(read(leaf, 0).eax, MAX_ENUMERATED_SUBLEAF) + 1):
                read(leaf, subleaf)
    max_extended = read(0x80000000).eax
    if 0x80000000 < max_extended < 0x8000FFFF:
        for leaf in EXTENDED_LEAVES:
            if leaf <= max_extended:
                read(leaf)
    key = (release, tuple(entries.items()))
    made = _MADE.get(key)
    if made is None:
        table = CpuidSet(entries, "host", source_kind="host")
        meta = {"kernel_release": release, "cpu": table.brand or table.vendor}
        made = table.replace(meta=meta)
        if len(_MADE) >= _MADE_KEPT:
            with contextlib.suppress(KeyError):  # another thread emptied it meanwhile
                _MADE.popitem()
        _MADE[key] = made
    return made


#: The host tables made of the last reads, by (kernel release, entries): a process that
#: probes again and reads the same registers (the CPU does not change while it runs) gets
#: the same immutable CpuidSet back, with the values already derived from it. Leaf 1 EBX
#: holds the APIC ID of the CPU that ran CPUID: one table per CPU; past sixteen, the newest
#: makes room.
_MADE: dict[tuple[str, tuple[tuple[tuple[int, int], Registers], ...]], CpuidSet] = {}
_MADE_KEPT = 16


def host_cpuid(system: System | None = None) -> CpuidSet:
    """Return this CPU's CPUID as the host kernel left it (source ``host``, role ``cpu``).

    Leaf 0xD costs exactly 2 + (number of enumerated components) CPUID instructions.
    Raises ProbeError on a machine that is not x86-64 or where CPUID cannot be executed.
    """
    system = system or default_system()
    name = system.uname()
    _require_x86_64(name)
    return _host_cpuid(system, name)


def _host_cpuid(system: System, name: Uname) -> CpuidSet:
    try:
        return _read_cpuid(system, name.release)
    except OSError as error:
        raise ProbeError(f"cannot execute CPUID: {error.strerror or error}", error.errno) from error


def kvm_cpuid(system: System | None = None) -> CpuidSet:
    """Return KVM_GET_SUPPORTED_CPUID with this process's guest permission (source ``kvm``).

    Raises ProbeError where the machine is not x86-64 or /dev/kvm is not usable.
    """
    system = system or default_system()
    name = system.uname()
    _require_x86_64(name)
    try:
        return kvmsource.kvm_cpuid(system)
    except OSError as error:
        raise ProbeError(_kvm_unusable(error), error.errno) from error


def _kvm_unusable(error: OSError) -> str:
    where = error.filename if isinstance(error.filename, str) else KVM_DEVICE
    return (
        f"{where} is not usable: {errno_name(error.errno)} "
        f"({error.strerror or os.strerror(error.errno or errnos.EIO)})"
    )


def permitted_kvm_cpuid(
    system: System | None = None, *, release: str = "", timeout: float = PERMITTED_VIEW_TIMEOUT
) -> CpuidSet:
    """Return KVM's CPUID after ARCH_REQ_XCOMP_GUEST_PERM(18), learnt in a child process.

    The calling process keeps its permission. Raises the child's OSError (EBUSY when a vCPU
    exists, EOPNOTSUPP without TILEDATA, EINVAL before 5.17, or /dev/kvm's errors), the
    OSError of a child that could not be started (EAGAIN…), RuntimeError when the child
    died or its answer is not a whole ``kvm_cpuid2``, and ProbeError when it did not answer
    within ``timeout`` seconds (it is then killed).
    """
    system = system or default_system()
    run = system.run_isolated(kvmsource.permitted_view, timeout=timeout)
    if not run.finished:
        raise ProbeError(
            f"KVM's CPUID with guest permission could not be learnt: {run.detail}",
            errnos.ETIMEDOUT,
        )
    payload = b"".join(run.messages)
    header, entry = abi.CPUID2_HEADER.size, abi.CPUID_ENTRY2.size
    count = abi.CPUID2_HEADER.unpack_from(payload)[0] if len(payload) >= header else -1
    if len(run.messages) != 1 or count < 1 or len(payload) != header + count * entry:
        raise RuntimeError(f"the child process sent {len(payload)} bytes, not a kvm_cpuid2")
    return kvmsource.unpack_cpuid2(
        payload, "kvm", kernel_release=release,
        view="after ARCH_REQ_XCOMP_GUEST_PERM(18)",
    )


class _Probe:
    """One probe run: the system, the facts read so far, and the notes."""

    def __init__(self, system: System) -> None:
        self.system = system
        self.notes: list[str] = []

    def note_failure(self, call: str, option: int, error: OSError) -> None:
        """Note that an arch_prctl call failed, with what its errno means on which kernel."""
        code = error.errno or errnos.EIO
        self.notes.append(
            f"{call} failed with {errno_name(code)}: {errno_meaning(option, code)}"
        )

    def arch_get(self, option: int) -> int | None:
        try:
            return self.system.arch_prctl_get(option)
        except OSError as error:
            self.note_failure(ARCH_OPTION_NAMES[option], option, error)
            return None

    def xcr(self, cpu: CpuidSet) -> tuple[int | None, int | None]:
        if not cpu.feature("OSXSAVE"):
            self.notes.append(
                "XGETBV not executed: CPUID.1:ECX.OSXSAVE is clear (XSAVE is not enabled, "
                "XGETBV would raise SIGILL)"
            )
            return None, None
        xcr0 = self.system.xgetbv(0)
        if not cpu.feature("XGETBV1"):
            self.notes.append(
                "XGETBV(1) not executed: CPUID.(0xD,1):EAX.XGETBV1 is clear (it would raise SIGILL)"
            )
            return xcr0, None
        return xcr0, self.system.xgetbv(1)

    def request_guest_permission(self, supported: int | None, guest: int | None) -> bool:
        if supported is None or guest is None:
            self.notes.append(
                "guest permission not requested: this kernel has no guest permission API"
            )
            return False
        if not supported & TILEDATA:
            self.notes.append(
                "guest permission not requested: the kernel does not support tiledata "
                "(nothing is dynamic)"
            )
            return False
        try:
            req_xcomp_guest_perm(self.system, ARCH_XCOMP_TILEDATA)
        except OSError as error:
            self.note_failure("ARCH_REQ_XCOMP_GUEST_PERM(18)", ARCH_REQ_XCOMP_GUEST_PERM, error)
            return False
        return True


def probe(
    system: System | None = None,
    *,
    kvm: bool | None = None,
    request_permission: bool = False,
    learn_permitted_view: bool = True,
) -> HostState:
    """Read this host's facts into a HostState.

    ``kvm``: None uses /dev/kvm when it is usable, True requires it (ProbeError otherwise),
    False skips it. ``request_permission`` calls ARCH_REQ_XCOMP_GUEST_PERM(18) in this
    process first, as Firecracker does; nothing else changes process state.
    ``learn_permitted_view`` learns KVM's CPUID after that request in a child process.
    """
    system = system or default_system()
    name = system.uname()
    _require_x86_64(name)
    cpu = _host_cpuid(system, name)
    run = _Probe(system)
    xcr0, xinuse = run.xcr(cpu)
    supported = run.arch_get(ARCH_GET_XCOMP_SUPP)
    permitted = run.arch_get(ARCH_GET_XCOMP_PERM)
    guest_permitted = run.arch_get(ARCH_GET_XCOMP_GUEST_PERM)
    requested = False
    if request_permission:
        requested = run.request_guest_permission(supported, guest_permitted)
        if requested:
            guest_permitted = run.arch_get(ARCH_GET_XCOMP_GUEST_PERM)

    kvm_available = False
    guest_supported = xsave2 = None
    table = permitted_table = None
    if kvm is False:
        run.notes.append("KVM not probed: the caller skipped /dev/kvm")
    else:
        try:
            with kvmsource.opened(system) as fd:
                guest_supported = kvmsource.xcomp_guest_supp(system, fd)
                xsave2 = kvmsource.xsave2_size(system, fd)
                table = kvmsource.supported_cpuid(
                    system, fd, kernel_release=name.release,
                    view="with this process's guest permission",
                )
        except OSError as error:
            message = _kvm_unusable(error)
            if kvm:
                raise ProbeError(message, error.errno) from error
            run.notes.append(f"{message}; KVM facts not read")
            table = None
        else:
            kvm_available = True
            if guest_supported is None:
                run.notes.append(
                    "KVM_GET_DEVICE_ATTR(KVM_X86_XCOMP_GUEST_SUPP) is not supported: kernel "
                    "older than 5.17"
                )
            if xsave2 is None:
                run.notes.append("KVM_CAP_XSAVE2 is not supported: kernel older than 5.17")
            permitted_table = _permitted_view(
                run, table=table, supported=supported, guest_permitted=guest_permitted,
                learn=learn_permitted_view, release=name.release,
            )

    return HostState(
        kernel_release=name.release,
        machine=name.machine,
        host_cpuid=cpu,
        xcr0=xcr0,
        xinuse=xinuse,
        supported=supported,
        permitted=permitted,
        guest_permitted=guest_permitted,
        kvm_available=kvm_available,
        kvm_guest_supported=guest_supported,
        kvm_xsave2_size=xsave2,
        kvm_cpuid=table,
        kvm_cpuid_permitted=permitted_table,
        permission_requested=requested,
        notes=tuple(run.notes),
    )


def _permitted_view(
    run: _Probe,
    *,
    table: CpuidSet,
    supported: int | None,
    guest_permitted: int | None,
    learn: bool,
    release: str,
) -> CpuidSet | None:
    """Return KVM's CPUID as it is after ARCH_REQ_XCOMP_GUEST_PERM(18), or None with a note."""
    if guest_permitted is not None and guest_permitted & TILEDATA:
        return table  # this process already holds the permission: the view is the same
    if supported is None or not supported & TILEDATA:
        return table  # nothing dynamic: the permission changes nothing
    if guest_permitted is None:
        run.notes.append(
            "KVM's CPUID with guest permission is the same table: this kernel has no guest "
            "permission API (Linux 5.16), so KVM offers no AMX"
        )
        return table
    if not learn:
        run.notes.append("KVM's CPUID with guest permission not learnt: skipped by the caller")
        return None
    try:
        return permitted_kvm_cpuid(run.system, release=release)
    except ProbeError:
        raise  # the child did not answer in time: the check is incomplete
    except OSError as error:
        code = error.errno or errnos.EIO
        meaning = (
            errno_meaning(ARCH_REQ_XCOMP_GUEST_PERM, code)
            if "ARCH_" in str(error.filename)
            else error.strerror or os.strerror(code)
        )
        run.notes.append(
            f"KVM's CPUID with guest permission not learnt: {error.filename or 'child'} failed "
            f"with {errno_name(code)}: {meaning}"
        )
    except RuntimeError as error:
        run.notes.append(f"KVM's CPUID with guest permission not learnt: {error}")
    return None
