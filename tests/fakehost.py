"""A model of machines this one cannot show: AMX CPUs, old kernels, errors, no /dev/kvm.

``FakeSystem`` implements the ``System`` protocol of ``xstate_check.system.calls`` from a
CPU's CPUID table and a kernel release, following the kernel code the rules cite:

- arch_prctl (``fpu_xstate_prctl``): EINVAL before 5.16 (and for the guest options before
  5.17); ``ARCH_REQ_*`` accepts only 18 (TILEDATA), EOPNOTSUPP otherwise or without kernel
  support, EBUSY once a vCPU exists, ENOSPC for a small sigaltstack; permission is
  ``permitted | TILEDATA`` afterwards.
- KVM: ``KVM_GET_SUPPORTED_CPUID`` builds leaf 0xD from ``kvm_get_filtered_xcr0()``:
  5.17-6.3 report TILECFG without TILEDATA when the guest permission lacks TILEDATA, 6.4+
  drop both, before 5.17 KVM has no AMX at all; E2BIG when the buffer is too small;
  ``KVM_X86_XCOMP_GUEST_SUPP`` and ``KVM_CAP_XSAVE2`` from 5.17.
- XGETBV raises ``IllegalInstructionError`` (the real process would die of SIGILL) without
  OSXSAVE, and XGETBV(1) without XGETBV1; CPUID on a non-x86 machine fails with ENOSYS.
- ``run_isolated`` runs the task on a copy of the machine in this process, framed as a
  real child's answer is.

The CPU tables are the bundled bare-metal profiles (``sapphire-rapids-w7-2475x``,
``zen4-genoa-epyc-9124``), read from public CPUID dumps.
"""

from __future__ import annotations

import ctypes
import errno as errnos
import mmap
from collections.abc import Callable

import attrs

from xstate_check.cpuid import CpuidSet, Registers
from xstate_check.layout import XsaveLayout
from xstate_check.sources.profiles import load_profile
from xstate_check.system import abi as kvmabi
from xstate_check.system.abi import (
    ARCH_GET_XCOMP_GUEST_PERM,
    ARCH_GET_XCOMP_PERM,
    ARCH_GET_XCOMP_SUPP,
    ARCH_OPTION_NAMES,
    ARCH_REQ_XCOMP_GUEST_PERM,
    ARCH_REQ_XCOMP_PERM,
)
from xstate_check.system.calls import KVM_DEVICE, X86_64_MACHINES, RealSystem, Uname, os_error
from xstate_check.system.isolated import ChildRun, decode_frames, serve
from xstate_check.system.kvm import pack_cpuid2
from xstate_check.xfeatures import bits

__all__ = [
    "FakeSystem",
    "IllegalInstructionError",
    "genoa_cpu",
    "kernel_version",
    "sapphire_rapids_cpu",
    "without_osxsave",
    "without_xsave",
]

TILECFG, TILEDATA, APX = 1 << 17, 1 << 18, 1 << 19
LEGACY = 0x3
#: Components a kernel of any supported age handles: x87 … Hi16_ZMM and PKRU.
BASE_USER_XFEATURES = 0x2FF
MPX = 0x18
CET = 0x1800
FPU_GUEST_PERM_LOCKED = 1 << 63
SIGNIFICANT = kvmabi.KVM_CPUID_FLAG_SIGNIFCANT_INDEX
AMX_LEAF7_EDX = (1 << 22) | (1 << 24) | (1 << 25)  # AMX_BF16, AMX_TILE, AMX_INT8
# xstate-gating features KVM does not offer (the SPR fingerprints lack them): INTEL_PT
# (only with pt_mode=host_guest), ENQCMD, ARCH_LBR; CET (SHSTK, IBT) only from 6.18 (KVM-19).
KVM_HIDDEN_7_EBX = 1 << 25
KVM_HIDDEN_7_ECX = 1 << 29
KVM_HIDDEN_7_EDX = 1 << 19
CET_7_ECX, CET_7_EDX = 1 << 7, 1 << 20
AMX_LEAF7_1_EAX = 1 << 21  # AMX_FP16
OSXSAVE_BIT, HYPERVISOR_BIT, XSAVE_BIT, AVX_BIT = 1 << 27, 1 << 31, 1 << 26, 1 << 28
OSPKE_BIT = 1 << 4
XSAVEC, XSAVES, XFD = 1 << 1, 1 << 3, 1 << 4
KVM_XSAVE_FEATURES = 0x1F  # XSAVEOPT | XSAVEC | XGETBV1 | XSAVES | XFD
KVM_MAX_BASIC_LEAF = 0x24
KVM_MAX_EXTENDED_LEAF = 0x80000021


class IllegalInstructionError(Exception):
    """XGETBV on a CPU or kernel that forbids it: a real process would die of SIGILL."""


def kernel_version(release: str) -> tuple[int, int]:
    """Return (major, minor) of a kernel release such as ``6.1.0-18-amd64``."""
    head = release.split("-", 1)[0].split(".")
    try:
        return int(head[0]), int(head[1])
    except (IndexError, ValueError):
        return (0, 0)


def sapphire_rapids_cpu() -> CpuidSet:
    """Return a Sapphire Rapids CPU's CPUID (Xeon w7-2475X, XCR0 = 0x602e7 set by its OS)."""
    return load_profile("sapphire-rapids-w7-2475x")


def genoa_cpu() -> CpuidSet:
    """Return an AMD Genoa (Zen 4) CPU's CPUID (EPYC 9124, XCR0 = 0x2e7, no AMX, no MPX)."""
    return load_profile("zen4-genoa-epyc-9124")


def without_osxsave(cpu: CpuidSet) -> CpuidSet:
    """Return ``cpu`` as a kernel booted with ``noxsave`` leaves it: XSAVE there, OSXSAVE clear."""
    leaf1 = cpu.get(1)
    return cpu.with_registers(1, 0, ecx=leaf1.ecx & ~OSXSAVE_BIT)


def without_xsave(cpu: CpuidSet) -> CpuidSet:
    """Return ``cpu`` as a CPU without XSAVE: no XSAVE/OSXSAVE/AVX bits, leaf 0xD all zero."""
    leaf1 = cpu.get(1)
    table = cpu.with_registers(1, 0, ecx=leaf1.ecx & ~(OSXSAVE_BIT | XSAVE_BIT | AVX_BIT))
    for leaf, subleaf in list(table):
        if leaf == 0xD:
            table = table.without(leaf, subleaf)
    return table


def _mask(regs: Registers, low: str, high: str) -> int:
    return getattr(regs, high) << 32 | getattr(regs, low)  # type: ignore[no-any-return]


@attrs.define
class FakeSystem:
    """A modelled machine: a CPU's CPUID table, a kernel release and a /dev/kvm state.

    ``kvm_errno`` makes open(/dev/kvm) fail (ENOENT: no KVM, EACCES: not readable);
    ``guest_locked`` models a process that already created a vCPU (EBUSY);
    ``sigaltstack_too_small`` makes ARCH_REQ_XCOMP_PERM fail with ENOSPC; ``failures``
    injects an errno into one operation by name (``KVM_GET_SUPPORTED_CPUID``, an
    ARCH_* option name, ``open``, ``spawn``). ``calls`` logs every operation; the CPUID
    instructions are ``("cpuid", leaf, subleaf)`` entries.
    """

    cpu: CpuidSet
    release: str = "6.8.0"
    machine: str = "x86_64"
    sysname: str = "Linux"
    kvm_errno: int | None = None
    kvm_api_version: int = kvmabi.KVM_API_VERSION
    kvm_max_entries: int = kvmabi.KVM_MAX_CPUID_ENTRIES
    guest_locked: bool = False
    sigaltstack_too_small: bool = False
    xinuse: int = LEGACY
    permitted: int | None = None
    guest_permitted: int | None = None
    failures: dict[str, int] = attrs.field(factory=dict)
    calls: list[tuple[object, ...]] = attrs.field(factory=list)
    child_calls: list[tuple[object, ...]] = attrs.field(factory=list)
    open_fds: set[int] = attrs.field(factory=set)
    _next_fd: int = 100

    def __attrs_post_init__(self) -> None:
        default = self.user_xfeatures & ~TILEDATA
        if self.permitted is None:
            self.permitted = default
        if self.guest_permitted is None:
            self.guest_permitted = default

    @classmethod
    def sapphire_rapids(cls, release: str = "6.8.0", **kwargs: object) -> FakeSystem:
        """Return a Sapphire Rapids host (AMX) running kernel ``release``."""
        return cls(sapphire_rapids_cpu(), release, **kwargs)  # type: ignore[arg-type]

    @classmethod
    def genoa(cls, release: str = "6.8.0", **kwargs: object) -> FakeSystem:
        """Return an AMD Genoa host (no AMX) running kernel ``release``."""
        return cls(genoa_cpu(), release, **kwargs)  # type: ignore[arg-type]

    # -- the kernel model -------------------------------------------------------------

    @property
    def version(self) -> tuple[int, int]:
        """Return (major, minor) of the modelled kernel."""
        return kernel_version(self.release)

    @property
    def x86(self) -> bool:
        """Return whether the machine is x86-64."""
        return self.machine in X86_64_MACHINES

    @property
    def user_xfeatures(self) -> int:
        """Return ``fpu_user_cfg.max_features``: the user xfeatures the kernel enabled."""
        if not self.cpu.feature("OSXSAVE"):
            return LEGACY
        known = BASE_USER_XFEATURES
        if self.version >= (5, 16):
            known |= TILECFG | TILEDATA
        if self.version >= (6, 16):
            known |= APX
        enabled = _mask(self.cpu.get(0xD, 0), "eax", "edx") & known
        if not self.cpu.feature("XFD"):
            enabled &= ~TILEDATA
        return enabled | LEGACY

    @property
    def xfeature_max(self) -> int:
        """Return XFEATURE_MAX of the modelled kernel (APX is component 19 from 6.16)."""
        return 20 if self.version >= (6, 16) else 19

    @property
    def kvm_supported_xcr0(self) -> int:
        """Return ``kvm_caps.supported_xcr0``: the XCR0 bits KVM offers before the filter."""
        offered = BASE_USER_XFEATURES
        if self.version >= (5, 17):
            offered |= TILECFG | TILEDATA
        if self.cpu.vendor == "AuthenticAMD":
            offered &= ~MPX  # KVM-18: never on SVM
        return self.user_xfeatures & offered

    @property
    def kvm_supported_xss(self) -> int:
        """Return KVM's supported XSS: CET_U | CET_S from 6.18 where the CPU has them."""
        if self.version < (6, 18):
            return 0
        return _mask(self.cpu.get(0xD, 1), "ecx", "edx") & CET

    def kvm_filtered_xcr0(self) -> int:
        """Return ``kvm_get_filtered_xcr0()`` for the current guest permission."""
        xcr0 = self.kvm_supported_xcr0
        if xcr0 & TILEDATA:
            xcr0 &= self.guest_permitted or 0
            if self.version >= (6, 4) and not xcr0 & TILEDATA:
                xcr0 &= ~TILECFG
        return xcr0

    def kvm_supported_cpuid(self) -> CpuidSet:
        """Return what KVM_GET_SUPPORTED_CPUID reports with the current guest permission."""
        cpu = self.cpu
        entries: dict[tuple[int, int], Registers] = {}
        flags: dict[tuple[int, int], int] = {}
        max_basic = min(cpu.max_basic_leaf, KVM_MAX_BASIC_LEAF)
        entries[(0, 0)] = cpu.get(0)._replace(eax=max_basic)
        leaf1 = cpu.get(1)
        entries[(1, 0)] = leaf1._replace(ecx=(leaf1.ecx & ~OSXSAVE_BIT) | HYPERVISOR_BIT)
        amx = self.version >= (5, 17)
        if max_basic >= 7:
            last = min(cpu.get(7, 0).eax, 2)
            for subleaf in range(last + 1):
                regs = cpu.get(7, subleaf)
                if subleaf == 0:
                    hidden_ecx, hidden_edx = KVM_HIDDEN_7_ECX | OSPKE_BIT, KVM_HIDDEN_7_EDX
                    if not self.kvm_supported_xss & CET:
                        hidden_ecx, hidden_edx = hidden_ecx | CET_7_ECX, hidden_edx | CET_7_EDX
                    if not amx:
                        hidden_edx |= AMX_LEAF7_EDX
                    regs = Registers(
                        last, regs.ebx & ~KVM_HIDDEN_7_EBX, regs.ecx & ~hidden_ecx,
                        regs.edx & ~hidden_edx,
                    )
                if subleaf == 1 and not amx:
                    regs = regs._replace(eax=regs.eax & ~AMX_LEAF7_1_EAX)
                entries[(7, subleaf)] = regs
                flags[(7, subleaf)] = SIGNIFICANT
        if max_basic >= 0xD:
            self._kvm_leaf_0xd(entries, flags)
        has_amx = amx and cpu.feature("AMX_TILE")
        for leaf in (0x1D, 0x1E):
            if max_basic >= leaf:
                last = cpu.get(leaf, 0).eax if has_amx and leaf == 0x1D else 0
                for subleaf in range(last + 1):
                    entries[(leaf, subleaf)] = cpu.get(leaf, subleaf) if has_amx else Registers()
                    flags[(leaf, subleaf)] = SIGNIFICANT
        max_extended = min(cpu.get(0x80000000).eax, KVM_MAX_EXTENDED_LEAF)
        if max_extended >= 0x80000000:
            entries[(0x80000000, 0)] = cpu.get(0x80000000)._replace(eax=max_extended)
            for leaf in (0x80000001, 0x80000002, 0x80000003, 0x80000004, 0x80000008):
                if leaf <= max_extended:
                    entries[(leaf, 0)] = cpu.get(leaf)
        for key in entries:
            flags.setdefault(key, 0)
        return CpuidSet(entries, "kvm", flags=flags, role="guest", source_kind="kvm")

    def _kvm_leaf_0xd(
        self, entries: dict[tuple[int, int], Registers], flags: dict[tuple[int, int], int]
    ) -> None:
        """KVM-05: leaf 0xD from the filtered XCR0, the supported XSS and the host subleaves."""
        layout = XsaveLayout.from_cpuid(self.cpu)
        xcr0 = self.kvm_filtered_xcr0() if self.cpu.feature("XSAVE") else 0
        size = layout.standard_size(xcr0)
        entries[(0xD, 0)] = Registers(xcr0 & 0xFFFFFFFF, size, size, xcr0 >> 32)
        flags[(0xD, 0)] = SIGNIFICANT
        if not xcr0:
            return
        xss = self.kvm_supported_xss
        features = self.cpu.get(0xD, 1).eax & KVM_XSAVE_FEATURES
        if self.version < (5, 17):
            features &= ~XFD
        compacted = layout.compacted_size(xcr0 | xss) if features & (XSAVEC | XSAVES) else 0
        entries[(0xD, 1)] = Registers(features, compacted, xss & 0xFFFFFFFF, xss >> 32)
        flags[(0xD, 1)] = SIGNIFICANT
        for number in bits((xcr0 | xss) & ~LEGACY):
            regs = self.cpu.get(0xD, number)
            ecx = regs.ecx if features & XFD else regs.ecx & ~0x4
            entries[(0xD, number)] = regs._replace(ecx=ecx, edx=0)
            flags[(0xD, number)] = SIGNIFICANT

    # -- the System interface ---------------------------------------------------------

    def _fail(self, operation: str, context: str | None = None) -> None:
        code = self.failures.get(operation)
        if code:
            raise os_error(code, context or operation)

    def uname(self) -> Uname:
        """Return the modelled kernel name, release and machine."""
        self.calls.append(("uname",))
        return Uname(self.sysname, self.release, self.machine)

    def cpuid(self, leaf: int, subleaf: int) -> Registers:
        """Return the CPU table's entry (zeros where absent); ENOSYS off x86."""
        self.calls.append(("cpuid", leaf, subleaf))
        if not self.x86:
            raise os_error(errnos.ENOSYS, "CPUID")
        return self.cpu.get(leaf, subleaf)

    def xgetbv(self, index: int) -> int:
        """Return XCR0 or XINUSE; raise IllegalInstructionError where a real CPU raises #UD."""
        self.calls.append(("xgetbv", index))
        if not self.x86 or not self.cpu.feature("OSXSAVE"):
            raise IllegalInstructionError(f"XGETBV({index}) with CR4.OSXSAVE clear")
        if index == 1 and not self.cpu.feature("XGETBV1"):
            raise IllegalInstructionError("XGETBV(1) on a CPU without XGETBV1")
        if index not in (0, 1):
            raise IllegalInstructionError(f"XGETBV({index}): #GP, no such XCR")
        xcr0 = self.user_xfeatures
        return xcr0 if index == 0 else self.xinuse & xcr0

    def _arch_prctl_checks(self, option: int, context: str) -> None:
        if not self.x86:
            raise os_error(errnos.ENOSYS, context)
        self._fail(ARCH_OPTION_NAMES.get(option, "arch_prctl"), context)
        guest = option in (ARCH_GET_XCOMP_GUEST_PERM, ARCH_REQ_XCOMP_GUEST_PERM)
        if option not in ARCH_OPTION_NAMES or self.version < ((5, 17) if guest else (5, 16)):
            raise os_error(errnos.EINVAL, context)

    def arch_prctl_get(self, option: int) -> int:
        """Return what a GET option writes; errno as ``fpu_xstate_prctl`` returns it."""
        self.calls.append(("arch_prctl", option))
        context = ARCH_OPTION_NAMES.get(option, f"arch_prctl({option:#x})")
        self._arch_prctl_checks(option, context)
        if option == ARCH_GET_XCOMP_SUPP:
            return self.user_xfeatures
        if option == ARCH_GET_XCOMP_PERM:
            return (self.permitted or 0) & self.user_xfeatures
        if option == ARCH_GET_XCOMP_GUEST_PERM:
            return (self.guest_permitted or 0) & self.user_xfeatures
        raise os_error(errnos.EFAULT, context)  # a REQ option given a pointer

    def arch_prctl(self, option: int, arg: int) -> int:
        """Apply a REQ option (``xstate_request_perm``); GET options need a pointer: EFAULT."""
        self.calls.append(("arch_prctl", option, arg))
        context = f"{ARCH_OPTION_NAMES.get(option, f'arch_prctl({option:#x})')}({arg})"
        self._arch_prctl_checks(option, context)
        if option not in (ARCH_REQ_XCOMP_PERM, ARCH_REQ_XCOMP_GUEST_PERM):
            raise os_error(errnos.EFAULT, context)
        guest = option == ARCH_REQ_XCOMP_GUEST_PERM
        if arg >= self.xfeature_max:
            raise os_error(errnos.EINVAL, context)
        if arg != 18 or not self.user_xfeatures & TILEDATA:
            raise os_error(errnos.EOPNOTSUPP, context)
        current = (self.guest_permitted if guest else self.permitted) or 0
        if current & TILEDATA:
            return 0
        if guest and self.guest_locked:
            raise os_error(errnos.EBUSY, context)
        if not guest and self.sigaltstack_too_small:
            raise os_error(errnos.ENOSPC, context)
        if guest:
            self.guest_permitted = current | TILEDATA
        else:
            self.permitted = current | TILEDATA
        return 0

    def open_kvm(self, path: str | None = None) -> int:
        """Return a new descriptor, or raise ``kvm_errno`` (ENOENT, EACCES…)."""
        path = path or KVM_DEVICE
        self.calls.append(("open", path))
        if self.kvm_errno:
            raise os_error(self.kvm_errno, path)
        if not self.x86:
            raise os_error(errnos.ENOENT, path)
        self._fail("open", path)
        fd = self._next_fd
        self._next_fd += 1
        self.open_fds.add(fd)
        return fd

    def close(self, fd: int) -> None:
        """Forget the descriptor; EBADF if it is not open."""
        self.calls.append(("close", fd))
        if fd not in self.open_fds:
            raise os_error(errnos.EBADF, "close")
        self.open_fds.discard(fd)

    def ioctl(self, fd: int, request: int, arg: int | bytearray = 0) -> int:
        """Answer the /dev/kvm system ioctls the probes use; EINVAL for any other request."""
        self.calls.append(("ioctl", request))
        if fd not in self.open_fds:
            raise os_error(errnos.EBADF, "ioctl")
        if request == kvmabi.KVM_GET_API_VERSION:
            return self.kvm_api_version
        if request == kvmabi.KVM_CHECK_EXTENSION and isinstance(arg, int):
            return self._check_extension(arg)
        if request == kvmabi.KVM_GET_SUPPORTED_CPUID and isinstance(arg, bytearray):
            return self._get_supported_cpuid(arg)
        if request == kvmabi.KVM_GET_DEVICE_ATTR and isinstance(arg, bytearray):
            return self._get_device_attr(arg)
        raise os_error(errnos.EINVAL, f"ioctl({request:#x})")

    def _check_extension(self, capability: int) -> int:
        new_api = self.version >= (5, 17)
        if capability == kvmabi.KVM_CAP_XSAVE2:
            if not new_api:
                return 0
            layout = XsaveLayout.from_cpuid(self.cpu)
            return max(4096, layout.standard_size(self.kvm_filtered_xcr0()))
        if capability == kvmabi.KVM_CAP_SYS_ATTRIBUTES:
            return int(new_api)
        if capability in (kvmabi.KVM_CAP_XSAVE, kvmabi.KVM_CAP_XCRS):
            return int(self.cpu.feature("XSAVE"))
        return 0

    def _get_supported_cpuid(self, buffer: bytearray) -> int:
        self._fail("KVM_GET_SUPPORTED_CPUID")
        (capacity, _) = kvmabi.CPUID2_HEADER.unpack_from(buffer, 0)
        if capacity < 1:
            raise os_error(errnos.E2BIG, "KVM_GET_SUPPORTED_CPUID")
        capacity = min(capacity, self.kvm_max_entries)
        if len(buffer) < kvmabi.CPUID2_HEADER.size + capacity * kvmabi.CPUID_ENTRY2.size:
            raise os_error(errnos.EFAULT, "KVM_GET_SUPPORTED_CPUID")
        table = self.kvm_supported_cpuid()
        if len(table) > capacity:
            raise os_error(errnos.E2BIG, "KVM_GET_SUPPORTED_CPUID")
        packed = pack_cpuid2(table)
        buffer[: len(packed)] = packed
        return 0

    def _get_device_attr(self, buffer: bytearray) -> int:
        if self.version < (5, 17):
            raise os_error(errnos.EINVAL, "KVM_GET_DEVICE_ATTR")
        self._fail("KVM_GET_DEVICE_ATTR")
        _flags, group, attr, address = kvmabi.DEVICE_ATTR.unpack_from(buffer, 0)
        if group != kvmabi.KVM_X86_GRP_SYSTEM or attr != kvmabi.KVM_X86_XCOMP_GUEST_SUPP:
            raise os_error(errnos.ENXIO, "KVM_GET_DEVICE_ATTR")
        if not address:
            raise os_error(errnos.EFAULT, "KVM_GET_DEVICE_ATTR")
        ctypes.c_uint64.from_address(address).value = self.kvm_supported_xcr0
        return 0

    def map_vcpu(self, fd: int, size: int) -> mmap.mmap:
        """Refuse: the model has no vCPUs (the oracle runs on real KVM only)."""
        raise os_error(errnos.ENOTTY, "mmap of a vCPU")

    def guest_memory(self, size: int) -> tuple[mmap.mmap, int]:
        """Refuse: the model runs no guest."""
        raise os_error(errnos.ENOMEM, "guest memory")

    def run_isolated(
        self, func: Callable[..., None], *args: object, timeout: float
    ) -> ChildRun:
        """Run ``func`` on a copy of this machine, framed as a child's answer; keep ``self``.

        ``failures["spawn"]`` makes the child fail to start with that errno.
        """
        self.calls.append(("spawn",))
        self._fail("spawn")
        child = attrs.evolve(
            self,
            failures=dict(self.failures),
            calls=[],
            child_calls=[],
            open_fds=set(self.open_fds),
        )
        stream = bytearray()
        try:
            serve(func, child, args, stream.extend)
        finally:
            self.child_calls.extend(child.calls)
        return decode_frames(bytes(stream))


class PretendAmx(RealSystem):
    """This machine, except that its kernel claims TILEDATA and grants guest permission.

    The probe then learns KVM's CPUID with guest permission in a real child (a fresh
    interpreter, which imports this class from this module); the grant is pretended in
    the child, and KVM_GET_SUPPORTED_CPUID is this machine's.
    """

    def arch_prctl_get(self, option: int) -> int:
        """Return the real mask, with TILEDATA added to ARCH_GET_XCOMP_SUPP."""
        value = super().arch_prctl_get(option)
        return value | TILEDATA if option == ARCH_GET_XCOMP_SUPP else value

    def arch_prctl(self, option: int, arg: int) -> int:
        """Pretend ARCH_REQ_XCOMP_GUEST_PERM(18) succeeded; issue anything else for real."""
        if option == ARCH_REQ_XCOMP_GUEST_PERM and arg == 18:
            return 0
        return super().arch_prctl(option, arg)
