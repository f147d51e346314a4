"""Ground truth for the restore rules: save a real vCPU's XSAVE state, restore it elsewhere.

Two throwaway VMs on this machine's /dev/kvm play the source and the destination of a
snapshot. The source vCPU gets its CPUID and XCR0, and its XSAVE buffer is read with
KVM_GET_XSAVE2 (KVM_GET_XSAVE where the kernel lacks it). The destination vCPU then takes
the snapshot in Firecracker's order (KVM_SET_CPUID2, KVM_SET_XSAVE, KVM_SET_XCRS), and the
errno of the first ioctl that refuses it is compared with what ``restore-xcr0-supported``
predicts for the same pair of tables. Skipped, with the reason, where /dev/kvm is not usable
or where this KVM rewrites the table the prediction depends on (kvm-pvm rewrites leaves 1,
7 and 0xD on KVM_SET_CPUID2).
"""

from __future__ import annotations

import errno
import os
import struct
from collections.abc import Iterator

import pytest

from xstate_check.cpuid import CpuidSet
from xstate_check.engine import load_catalogue
from xstate_check.engine.examples import apply_edits
from xstate_check.restore import restore
from xstate_check.subject import Destination
from xstate_check.system import abi as kvmabi
from xstate_check.system.calls import KVM_DEVICE, RealSystem
from xstate_check.system.kvm import empty_cpuid2, pack_cpuid2, unpack_cpuid2


def _ioc(direction: int, number: int, size: int) -> int:
    return direction << 30 | size << 16 | kvmabi.KVMIO << 8 | number


#: struct kvm_xsave is 4096 bytes; KVM_GET_XSAVE2 takes KVM_CAP_XSAVE2's size in the same
#: struct (the ioctl number encodes 4096 whatever the size).
KVM_XSAVE_SIZE = 4096
KVM_GET_XSAVE = _ioc(2, 0xA4, KVM_XSAVE_SIZE)
KVM_SET_XSAVE = _ioc(1, 0xA5, KVM_XSAVE_SIZE)
KVM_GET_XSAVE2 = _ioc(2, 0xCF, KVM_XSAVE_SIZE)
XSTATE_BV_OFFSET = 512

RULE = load_catalogue().get("restore-xcr0-supported")


class _Kvm:
    """One /dev/kvm descriptor and the VMs made from it, all closed at the end."""

    def __init__(self) -> None:
        self.system = RealSystem()
        self.fd = self.system.open_kvm()
        self.fds: list[int] = []

    def supported_cpuid(self) -> CpuidSet:
        buffer = empty_cpuid2(kvmabi.KVM_MAX_CPUID_ENTRIES)
        self.system.ioctl(self.fd, kvmabi.KVM_GET_SUPPORTED_CPUID, buffer)
        return unpack_cpuid2(buffer, "kvm", role="guest")

    def vcpu(self, table: CpuidSet) -> tuple[int, int, CpuidSet]:
        """Return (vm, vcpu, the table the vCPU holds) of a new VM given ``table``."""
        vm = self.system.ioctl(self.fd, kvmabi.KVM_CREATE_VM, 0)
        self.fds.append(vm)
        vcpu = self.system.ioctl(vm, kvmabi.KVM_CREATE_VCPU, 0)
        self.fds.append(vcpu)
        self.system.ioctl(vcpu, kvmabi.KVM_SET_CPUID2, pack_cpuid2(table))
        held = empty_cpuid2(kvmabi.KVM_MAX_CPUID_ENTRIES)
        self.system.ioctl(vcpu, kvmabi.KVM_GET_CPUID2, held)
        return vm, vcpu, unpack_cpuid2(held, "vcpu", role="guest")

    def xsave_size(self, vm: int) -> int:
        return max(KVM_XSAVE_SIZE, self.system.ioctl(vm, kvmabi.KVM_CHECK_EXTENSION,
                                                     kvmabi.KVM_CAP_XSAVE2))

    def get_xsave(self, vm: int, vcpu: int) -> bytearray:
        size = self.xsave_size(vm)
        buffer = bytearray(size)
        has_xsave2 = self.system.ioctl(vm, kvmabi.KVM_CHECK_EXTENSION, kvmabi.KVM_CAP_XSAVE2)
        self.system.ioctl(vcpu, KVM_GET_XSAVE2 if has_xsave2 else KVM_GET_XSAVE, buffer)
        return buffer

    def close(self) -> None:
        for fd in reversed(self.fds):
            os.close(fd)
        os.close(self.fd)


@pytest.fixture
def kvm() -> Iterator[_Kvm]:
    """This machine's KVM, or a skip saying why it cannot be used."""
    try:
        handle = _Kvm()
    except OSError as error:
        pytest.skip(f"{KVM_DEVICE} is not usable: {os.strerror(error.errno or errno.EIO)}")
    try:
        yield handle
    finally:
        handle.close()


def _xcrs(xcr0: int) -> bytearray:
    buffer = bytearray(kvmabi.KVM_XCRS_SIZE)
    kvmabi.XCRS_HEADER.pack_into(buffer, 0, 1, 0)
    kvmabi.XCR_ENTRY.pack_into(buffer, kvmabi.XCRS_HEADER.size, 0, 0, xcr0)
    return buffer


def _restore_errno(kvm: _Kvm, vcpu: int, xsave: bytearray, xcr0: int) -> tuple[str, int] | None:
    """Restore XSAVE then XCR0 (Firecracker's order); return the first (ioctl, errno) refused."""
    for name, request, argument in (("KVM_SET_XSAVE", KVM_SET_XSAVE, bytearray(xsave)),
                                    ("KVM_SET_XCRS", kvmabi.KVM_SET_XCRS, _xcrs(xcr0))):
        try:
            kvm.system.ioctl(vcpu, request, argument)
        except OSError as error:
            return name, error.errno or 0
    return None


def _source_state(kvm: _Kvm, table: CpuidSet) -> tuple[CpuidSet, bytearray, int]:
    """Give a source vCPU ``table`` and its full XCR0; return its table, XSAVE2 buffer, XCR0."""
    vm, vcpu, held = kvm.vcpu(table)
    xcr0 = held.xcr0_supported & table.xcr0_supported
    kvm.system.ioctl(vcpu, kvmabi.KVM_SET_XCRS, _xcrs(xcr0))
    return held, kvm.get_xsave(vm, vcpu), xcr0


def _predicts_refusal(guest: CpuidSet, destination: CpuidSet) -> bool:
    report = restore(guest, [Destination("destination", destination)])
    return any(finding.rule == RULE.id for finding in report.errors)


#: Components a guest table can carry that this KVM may not support: (XCR0 bits, the CPUID
#: feature edits a guest with them has, the subleaf rows to add, as (subleaf, size)).
CANDIDATES = (
    (1 << 9, (("0x7.0.ecx", "+bit3"),), ((9, 8),)),  # PKRU, with PKU
    (0xE0, (("0x7.0.ebx", "+bit16"),), ((5, 64), (6, 512), (7, 1024))),  # AVX-512
)


def test_prediction_matches_a_restore_into_a_vcpu_whose_cpuid_lacks_a_component(
        kvm: _Kvm) -> None:
    """A vCPU's saved state restored into a VM whose CPUID lacks one of its components:
    the rule predicts the refusal and KVM refuses with EINVAL; into a VM with the whole
    table, the rule is silent and KVM takes it."""
    table = kvm.supported_cpuid()
    xcr0 = table.xcr0_supported
    lacking = next((bits for bits in (0xE0, 0x4) if xcr0 & bits == bits), None)
    if lacking is None:
        pytest.skip(f"this KVM supports XCR0 {xcr0:#x}: no AVX or AVX-512 state to leave out")
    source, xsave, saved_xcr0 = _source_state(kvm, table)
    edits = [("0xd.0.eax", " ".join(f"-bit{b}" for b in range(8) if lacking >> b & 1))]
    edits += [("0x7.0.ebx", "-bit16")] if lacking == 0xE0 else [("0x1.0.ecx", "-bit28")]
    smaller = apply_edits(source, tuple(edits))
    _, vcpu, held = kvm.vcpu(smaller)
    if held.xcr0_supported & lacking:
        pytest.skip("this KVM rewrote the CPUID given to KVM_SET_CPUID2 (0xD.0 "
                    f"{smaller.xcr0_supported:#x} held as {held.xcr0_supported:#x}, as kvm-pvm "
                    "does): a table lacking a component cannot be observed here")
    assert _predicts_refusal(source, held)
    refused = _restore_errno(kvm, vcpu, xsave, saved_xcr0)
    assert refused is not None and refused[1] == errno.EINVAL, refused
    assert refused[0] in RULE.consequence and "EINVAL" in RULE.consequence

    _, whole, held_whole = kvm.vcpu(source)
    assert not _predicts_refusal(source, held_whole)
    assert _restore_errno(kvm, whole, xsave, saved_xcr0) is None


def test_prediction_matches_a_restore_of_state_this_kvm_does_not_support(kvm: _Kvm) -> None:
    """A snapshot whose guest used a component this KVM lacks (this host as the destination):
    the rule predicts the refusal, and KVM_SET_XSAVE refuses the saved XSTATE_BV with EINVAL
    before KVM_SET_XCRS is reached; the same snapshot without that state restores."""
    table = kvm.supported_cpuid()
    supported = table.xcr0_supported
    candidate = next((c for c in CANDIDATES if not supported & c[0]), None)
    if candidate is None:
        pytest.skip(f"this KVM supports XCR0 {supported:#x}, PKRU and AVX-512 included")
    bits, features, subleaves = candidate
    source, xsave, saved_xcr0 = _source_state(kvm, table)
    # The guest of a host whose KVM has the component: its table enumerates it and its
    # buffer holds its state (XSTATE_BV set: the guest used it since boot).
    rows = [("0xd.0.eax", " ".join(f"+bit{b}" for b in range(32) if bits >> b & 1)),
            *features]
    # Placed after the last component this table lays out, as a CPU would place it.
    offset = max([0x240, *(regs.ebx + regs.eax for (leaf, number), regs in source.entries.items()
                           if leaf == 0xD and number >= 2 and not regs.ecx & 1)])
    for subleaf, size in subleaves:
        rows += [(f"0xd.{subleaf}.eax", hex(size)), (f"0xd.{subleaf}.ebx", hex(offset))]
        offset += size
    guest = apply_edits(source, tuple(rows))
    assert _predicts_refusal(guest, table)
    assert restore(source, [Destination("this host", table)]).errors == []

    used = bytearray(xsave)
    (xstate_bv,) = struct.unpack_from("=Q", used, XSTATE_BV_OFFSET)
    struct.pack_into("=Q", used, XSTATE_BV_OFFSET, xstate_bv | bits)
    _, vcpu, _ = kvm.vcpu(guest)
    refused = _restore_errno(kvm, vcpu, used, saved_xcr0 | bits)
    assert refused == ("KVM_SET_XSAVE", errno.EINVAL)
    # Without that state in the buffer, KVM_SET_XCRS refuses the XCR0 instead.
    _, other, _ = kvm.vcpu(guest)
    assert _restore_errno(kvm, other, xsave, saved_xcr0 | bits) == ("KVM_SET_XCRS",
                                                                      errno.EINVAL)
    # And the snapshot of a guest that never had the component restores.
    _, clean, _ = kvm.vcpu(source)
    assert _restore_errno(kvm, clean, xsave, saved_xcr0) is None
