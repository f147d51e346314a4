"""Fault injection below the host probe: every errno of every call, short reads, lost /dev/kvm.

A ``Faulty`` system wraps the modelled machine of ``fakehost`` and makes one
operation fail with one errno (from its first call, or after some calls succeed). Every
combination must end in a defined result (a HostState whose notes name the errno) or a
ProbeError carrying the errno, which the command line turns into exit code 3; never
another exception, and never a partial table reported as whole.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
from collections.abc import Callable

import attrs
import pytest

from fakehost import FakeSystem
from xstate_check import cli
from xstate_check.cpuid import Registers
from xstate_check.errors import ProbeError
from xstate_check.hoststate import HostState
from xstate_check.sources import host as hostsource
from xstate_check.system import abi as kvmabi
from xstate_check.system import probe as probemodule
from xstate_check.system.abi import ARCH_OPTION_NAMES
from xstate_check.system.calls import Uname, errno_name, os_error
from xstate_check.system.isolated import ChildRun, decode_frames, serve

#: The errnos the issue names; each call below is made to fail with each of them.
ERRNOS = (
    errno.EINVAL, errno.EPERM, errno.EOPNOTSUPP, errno.EBUSY, errno.ENOSPC, errno.EFAULT,
    errno.ENOSYS, errno.E2BIG, errno.EACCES, errno.ENOENT,
)
IOCTL_NAMES = {
    kvmabi.KVM_GET_API_VERSION: "KVM_GET_API_VERSION",
    kvmabi.KVM_CHECK_EXTENSION: "KVM_CHECK_EXTENSION",
    kvmabi.KVM_GET_SUPPORTED_CPUID: "KVM_GET_SUPPORTED_CPUID",
    kvmabi.KVM_GET_DEVICE_ATTR: "KVM_GET_DEVICE_ATTR",
}
#: Every operation of the System interface that issues a system call or an instruction
#: which can fail, named as Faulty matches them.
OPERATIONS = (
    "cpuid",
    *(f"arch_prctl_get:{name}" for name in sorted(ARCH_OPTION_NAMES.values()) if "GET" in name),
    *(f"arch_prctl:{name}" for name in sorted(ARCH_OPTION_NAMES.values()) if "REQ" in name),
    "open_kvm",
    *(f"ioctl:{name}" for name in IOCTL_NAMES.values()),
    "close",
    "run_isolated",
)
KVM_OPERATIONS = ("open_kvm", "ioctl:KVM_GET_API_VERSION", "ioctl:KVM_GET_SUPPORTED_CPUID",
                  "ioctl:KVM_CHECK_EXTENSION", "close")


@attrs.define
class Faulty:
    """A modelled machine whose ``operation`` fails with ``code`` after ``after`` successes.

    ``times`` bounds how often it fails (None: every call from then on). ``short`` cuts the
    message of a child process (``run_isolated``) to that many bytes, as a child killed
    while writing would leave it.
    """

    inner: FakeSystem
    operation: str = ""
    code: int = 0
    after: int = 0
    times: int | None = None
    short: int | None = None
    seen: int = 0
    failed: int = 0

    def _check(self, name: str, context: str | None = None) -> None:
        if self.operation != name:
            return
        self.seen += 1
        if self.seen > self.after and (self.times is None or self.failed < self.times):
            self.failed += 1
            raise os_error(self.code, context or name.rsplit(":", maxsplit=1)[-1])

    def uname(self) -> Uname:
        """Return the modelled uname (it cannot fail)."""
        return self.inner.uname()

    def cpuid(self, leaf: int, subleaf: int) -> Registers:
        """Execute CPUID, or fail."""
        self._check("cpuid")
        return self.inner.cpuid(leaf, subleaf)

    def xgetbv(self, index: int) -> int:
        """Execute XGETBV (an instruction without errno)."""
        return self.inner.xgetbv(index)

    def arch_prctl_get(self, option: int) -> int:
        """Call a GET option, or fail."""
        self._check(f"arch_prctl_get:{ARCH_OPTION_NAMES.get(option)}")
        return self.inner.arch_prctl_get(option)

    def arch_prctl(self, option: int, arg: int) -> int:
        """Call a REQ option, or fail."""
        self._check(f"arch_prctl:{ARCH_OPTION_NAMES.get(option)}")
        return self.inner.arch_prctl(option, arg)

    def open_kvm(self, path: str | None = None) -> int:
        """Open /dev/kvm, or fail."""
        self._check("open_kvm", path or "/dev/kvm")
        return self.inner.open_kvm(path)

    def ioctl(self, fd: int, request: int, arg: int | bytearray = 0) -> int:
        """Issue an ioctl, or fail."""
        self._check(f"ioctl:{IOCTL_NAMES.get(request, hex(request))}")
        return self.inner.ioctl(fd, request, arg)

    def close(self, fd: int) -> None:
        """Close a descriptor (the fake's bookkeeping happens first), or fail."""
        self.inner.close(fd)
        self._check("close")

    def map_vcpu(self, fd: int, size: int) -> mmap.mmap:
        """Map a vCPU (the model has none)."""
        return self.inner.map_vcpu(fd, size)

    def guest_memory(self, size: int) -> tuple[mmap.mmap, int]:
        """Allocate guest memory (the model has none)."""
        return self.inner.guest_memory(size)

    def run_isolated(self, func: Callable[..., None], *args: object, timeout: float) -> ChildRun:
        """Run ``func`` on a copy of the machine, as a child; or fail to start one."""
        self._check("run_isolated")
        child = attrs.evolve(
            self,
            inner=attrs.evolve(self.inner, failures={}, calls=[], child_calls=[],
                               open_fds=set(self.inner.open_fds)),
        )
        stream = bytearray()
        serve(func, child, args, stream.extend)
        self.seen, self.failed = child.seen, child.failed
        if self.short is not None:
            del stream[self.short:]
        return decode_frames(bytes(stream))


def _machines() -> dict[str, Callable[[], FakeSystem]]:
    return {
        "sapphire-rapids-6.8": lambda: FakeSystem.sapphire_rapids("6.8.0"),
        "sapphire-rapids-6.1": lambda: FakeSystem.sapphire_rapids("6.1.0"),
        "genoa-5.10": lambda: FakeSystem.genoa("5.10.0"),
    }


MODES = (
    {"kvm": None},
    {"kvm": True},
    {"kvm": None, "request_permission": True},
)


def _errno_name(code: int) -> str:
    return errno_name(code)  # the kernel's names: EOPNOTSUPP, not Python's ENOTSUP


@pytest.mark.parametrize("operation", OPERATIONS)
def test_every_errno_of_every_call_gives_a_result_or_probe_error(operation: str) -> None:
    """Each call failing with each listed errno: a HostState or a ProbeError keeping errno."""
    outcomes = 0
    for machine_name, machine in _machines().items():
        for code in ERRNOS:
            for mode in MODES:
                system = Faulty(machine(), operation, code)
                where = f"{operation} -> {_errno_name(code)} on {machine_name} with {mode}"
                try:
                    state = hostsource.probe(system, **mode)
                except ProbeError as error:
                    assert error.exit_code == 3, where
                    assert error.errno == code, f"{where}: the errno is lost: {error}"
                    assert system.failed, f"{where}: ProbeError without the fault: {error}"
                    outcomes += 1
                    continue
                assert isinstance(state, HostState), where
                if system.failed:
                    # The fault happened and was absorbed: a note must name the errno or
                    # the call that failed.
                    call = operation.rsplit(":", maxsplit=1)[-1]
                    assert any(
                        _errno_name(code) in note or call in note for note in state.notes
                    ), f"{where}: the failure left no note: {state.notes}"
                outcomes += 1
    assert outcomes == len(_machines()) * len(ERRNOS) * len(MODES)


@pytest.mark.parametrize("operation", KVM_OPERATIONS)
@pytest.mark.parametrize("code", ERRNOS, ids=_errno_name)
def test_kvm_required_and_unusable_is_exit_3(operation: str, code: int) -> None:
    """With /dev/kvm required, any failure of the KVM layer is a ProbeError with its errno."""
    # Failing on every call: for E2BIG, the buffer never becomes large enough.
    system = Faulty(FakeSystem.sapphire_rapids("6.8.0"), operation, code)
    with pytest.raises(ProbeError) as caught:
        hostsource.probe(system, kvm=True)
    assert caught.value.errno == code
    assert caught.value.exit_code == 3
    assert _errno_name(code) in str(caught.value)


@pytest.mark.parametrize("code", ERRNOS, ids=_errno_name)
def test_kvm_optional_and_unusable_gives_facts_without_kvm(code: int) -> None:
    """Without --kvm, an unusable /dev/kvm leaves the KVM facts unknown and says why."""
    system = Faulty(FakeSystem.sapphire_rapids("6.8.0"), "open_kvm", code)
    state = hostsource.probe(system)
    assert not state.kvm_available
    assert state.kvm_cpuid is None
    assert state.host_cpuid is not None and state.host_cpuid.feature("AMX_TILE")
    assert any("/dev/kvm" in note and _errno_name(code) in note for note in state.notes)


def test_e2big_grows_the_buffer_until_kvm_answers() -> None:
    """E2BIG from KVM_GET_SUPPORTED_CPUID a few times: the buffer grows and the table is whole."""
    expected = hostsource.probe(FakeSystem.sapphire_rapids("6.8.0"), kvm=True)
    system = Faulty(FakeSystem.sapphire_rapids("6.8.0"), "ioctl:KVM_GET_SUPPORTED_CPUID",
                    errno.E2BIG, times=3)
    state = hostsource.probe(system, kvm=True)
    assert system.failed == 3
    assert state.kvm_cpuid == expected.kvm_cpuid
    assert state.kvm_cpuid_permitted == expected.kvm_cpuid_permitted


def test_dev_kvm_disappears_between_the_two_views() -> None:
    """/dev/kvm opens for the first view, then is gone (ENOENT) for the permitted view."""
    system = Faulty(FakeSystem.sapphire_rapids("6.1.0"), "open_kvm", errno.ENOENT, after=1)
    state = hostsource.probe(system, kvm=True)
    assert state.kvm_available
    assert state.kvm_cpuid is not None
    assert state.kvm_cpuid_permitted is None
    assert system.failed == 1
    assert any("ENOENT" in note for note in state.notes), state.notes


@pytest.mark.parametrize("code", (errno.ENODEV, errno.EBADF, errno.EIO), ids=_errno_name)
def test_dev_kvm_disappears_after_open(code: int) -> None:
    """/dev/kvm opens, then its ioctls fail (device gone): exit 3 when required, else a note."""
    for mode in ({"kvm": True}, {"kvm": None}):
        system = Faulty(FakeSystem.genoa("6.8.0"), "ioctl:KVM_GET_SUPPORTED_CPUID", code)
        if mode["kvm"]:
            with pytest.raises(ProbeError) as caught:
                hostsource.probe(system, **mode)
            assert caught.value.errno == code
        else:
            state = hostsource.probe(system, **mode)
            assert not state.kvm_available
            assert any(_errno_name(code) in note for note in state.notes)
        assert not system.inner.open_fds, "the descriptor leaked"


def test_a_failing_ioctl_never_leaks_the_descriptor() -> None:
    """Whatever ioctl fails, /dev/kvm is closed again."""
    for operation in ("ioctl:KVM_GET_API_VERSION", "ioctl:KVM_GET_SUPPORTED_CPUID",
                      "ioctl:KVM_GET_DEVICE_ATTR", "ioctl:KVM_CHECK_EXTENSION"):
        for code in ERRNOS:
            system = Faulty(FakeSystem.sapphire_rapids("6.8.0"), operation, code)
            with contextlib.suppress(ProbeError):
                hostsource.probe(system)
            assert not system.inner.open_fds, f"{operation} {_errno_name(code)} leaked"


def _short_payloads() -> list[int]:
    # The child's answer is a frame (a tag byte, a u32 length) holding a struct kvm_cpuid2,
    # then the end frame: cut it everywhere that matters (nothing, the tag alone, inside
    # the frame's head, inside the cpuid2 header, inside an entry, one entry short, the
    # whole message without its end frame).
    head, header, entry = 5, kvmabi.CPUID2_HEADER.size, kvmabi.CPUID_ENTRY2.size
    permitted = hostsource.probe(FakeSystem.sapphire_rapids("6.1.0")).kvm_cpuid_permitted
    assert permitted is not None
    whole = head + header + len(permitted) * entry
    return [0, 1, 2, head + header - 1, head + header, head + header + entry // 2,
            head + header + entry, head + header + 3 * entry - 1, whole, whole + head - 1]


@pytest.mark.parametrize("cut", _short_payloads())
def test_a_short_read_from_the_child_is_never_a_smaller_table(cut: int) -> None:
    """A child's message cut short gives no permitted view (and a note), never part of one."""
    whole = hostsource.probe(FakeSystem.sapphire_rapids("6.1.0"), kvm=True)
    assert whole.kvm_cpuid_permitted is not None
    system = Faulty(FakeSystem.sapphire_rapids("6.1.0"), short=cut)
    state = hostsource.probe(system, kvm=True)
    assert state.kvm_cpuid is not None
    assert state.kvm_cpuid_permitted is None or (
        state.kvm_cpuid_permitted == whole.kvm_cpuid_permitted
    ), f"a message cut at {cut} bytes was read as a table of {len(state.kvm_cpuid_permitted)}"
    if state.kvm_cpuid_permitted is None:
        assert any("not learnt" in note for note in state.notes), state.notes


def test_non_x86_machine_is_probe_error() -> None:
    """Linux on aarch64: the host probe refuses with ProbeError (exit 3)."""
    with pytest.raises(ProbeError) as caught:
        hostsource.probe(FakeSystem.genoa("6.8.0", machine="aarch64"))
    assert caught.value.exit_code == 3
    assert "aarch64" in str(caught.value)


# ----------------------------------------------------------------------------- the CLI


def _inject(monkeypatch: pytest.MonkeyPatch, system: object) -> None:
    """Make the command line probe ``system`` instead of this machine."""
    monkeypatch.setattr(probemodule, "default_system", lambda: system)


@pytest.mark.parametrize("code", ERRNOS, ids=_errno_name)
@pytest.mark.parametrize("argv", (["host", "--kvm"], ["check", "kvm"], ["decode", "kvm"]),
                         ids=" ".join)
def test_cli_unusable_kvm_is_exit_3(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], argv: list[str],
    code: int,
) -> None:
    """`host --kvm`, `check kvm`, `decode kvm` with /dev/kvm failing: exit 3, one message."""
    _inject(monkeypatch, Faulty(FakeSystem.sapphire_rapids("6.8.0"), "open_kvm", code))
    assert cli.main([*argv, "--format", "json"]) == 3
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("xstate-check: ")
    assert "/dev/kvm" in captured.err and _errno_name(code) in captured.err
    assert "Traceback" not in captured.err


@pytest.mark.parametrize("code", ERRNOS, ids=_errno_name)
@pytest.mark.parametrize("argv", (["host"], ["check", "host"]), ids=" ".join)
def test_cli_cpuid_failure_is_exit_3(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], argv: list[str],
    code: int,
) -> None:
    """CPUID itself failing (no usable instruction) is exit 3 for `host` and `check host`."""
    _inject(monkeypatch, Faulty(FakeSystem.genoa("6.8.0"), "cpuid", code))
    assert cli.main(argv) == 3
    assert "CPUID" in capsys.readouterr().err


@pytest.mark.parametrize("argv", (["host"], ["host", "--kvm"], ["check", "host"],
                                  ["check", "kvm"]), ids=" ".join)
def test_cli_non_x86_is_exit_3(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    """On a machine that is not x86-64 every probing command exits 3 with one message."""
    _inject(monkeypatch, FakeSystem.genoa("6.8.0", machine="aarch64"))
    assert cli.main(argv) == 3
    err = capsys.readouterr().err
    assert "x86-64" in err and err.count("\n") == 1
