"""Isolated children: a fresh interpreter per task, time limits, descriptors, reaping, threads.

The tasks below are module-level functions: the child imports this module by name (the
request carries the caller's sys.path) and runs them on a copy of the caller's system.
"""

from __future__ import annotations

import atexit
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fakehost import FakeSystem, PretendAmx
from xstate_check.errors import ProbeError
from xstate_check.oracle import run_oracle
from xstate_check.system import isolated
from xstate_check.system.calls import RealSystem
from xstate_check.system.isolated import ChildRun, decode_frames, run_isolated, serve
from xstate_check.system.protocol import System

TESTS = Path(__file__).resolve().parent
SRC = TESTS.parent / "src"
X86_LINUX = os.uname().machine == "x86_64" and os.uname().sysname == "Linux"
needs_x86 = pytest.mark.skipif(not X86_LINUX, reason="needs Linux on x86-64")


def _kvm_usable() -> bool:
    return X86_LINUX and os.access("/dev/kvm", os.R_OK | os.W_OK)


needs_kvm = pytest.mark.skipif(not _kvm_usable(), reason="needs a usable /dev/kvm")


# --- tasks the children run ----------------------------------------------------------------
def report_self(system: System, send: Callable[[bytes], None], count: int) -> None:
    """Send this process's pid, flags and descriptors ``count`` times."""
    for _ in range(count):
        send(json.dumps({
            "pid": os.getpid(),
            "ppid": os.getppid(),
            "isolated": sys.flags.isolated,
            "no_site": sys.flags.no_site,
            "fds": sorted(int(fd) for fd in os.listdir("/proc/self/fd")),
            "system": type(system).__name__,
        }).encode())


def fail_with_errno(system: System, send: Callable[[bytes], None]) -> None:
    """Send one message, then fail as a refused arch_prctl does."""
    send(b"before")
    raise PermissionError(errno.EBUSY, os.strerror(errno.EBUSY), "ARCH_REQ_XCOMP_GUEST_PERM(18)")


def fail_otherwise(system: System, send: Callable[[bytes], None]) -> None:
    """Fail without an errno."""
    raise ValueError("broken")


def die(system: System, send: Callable[[bytes], None]) -> None:
    """Die of SIGKILL before finishing."""
    send(b"last words")
    os.kill(os.getpid(), signal.SIGKILL)


def hang_after(system: System, send: Callable[[bytes], None], sent: int) -> None:
    """Send ``sent`` messages, then hang for good."""
    for index in range(sent):
        send(str(index).encode())
    signal.pause()


def hang(system: System, send: Callable[[bytes], None]) -> None:
    """Hang for good without sending anything."""
    signal.pause()


def open_descriptors() -> list[str]:
    """Return this process's descriptors."""
    return sorted(os.listdir("/proc/self/fd"))


def assert_no_children() -> None:
    """Fail if this process has a child left (running or unreaped)."""
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)


@pytest.fixture
def no_leaks() -> Iterator[None]:
    """Check that the test leaves no descriptor and no child process behind."""
    before = open_descriptors()
    yield
    assert open_descriptors() == before
    assert_no_children()


# --- the child and its answer --------------------------------------------------------------
@needs_x86
def test_child_is_a_fresh_isolated_interpreter(no_leaks: None) -> None:
    """The task runs in another process started with -I -S, holding fds 0-3 and nothing else."""
    run = run_isolated(report_self, RealSystem(), 2, timeout=10)
    assert run.finished and len(run.messages) == 2
    first = json.loads(run.messages[0])
    assert first["pid"] != os.getpid() and first["ppid"] == os.getpid()
    assert (first["isolated"], first["no_site"]) == (1, 1)
    assert first["system"] == "RealSystem"
    assert first["fds"][:4] == [0, 1, 2, 3] and len(first["fds"]) == 5  # + the listing


@needs_x86
def test_child_of_a_subclass_runs_the_subclass(no_leaks: None) -> None:
    """The system the task gets is a copy of the caller's, subclass included."""
    run = PretendAmx().run_isolated(report_self, 1, timeout=10)
    assert json.loads(run.messages[0])["system"] == "PretendAmx"


@needs_x86
def test_child_oserror_comes_back_with_errno_and_context(no_leaks: None) -> None:
    """An OSError in the child is raised here with its errno and context."""
    with pytest.raises(OSError) as caught:
        run_isolated(fail_with_errno, RealSystem(), timeout=10)
    assert caught.value.errno == errno.EBUSY
    assert caught.value.filename == "ARCH_REQ_XCOMP_GUEST_PERM(18)"


@needs_x86
def test_child_other_failure_is_a_runtime_error(no_leaks: None) -> None:
    """Any other exception in the child is a RuntimeError naming it."""
    with pytest.raises(RuntimeError, match=r"ValueError: broken"):
        run_isolated(fail_otherwise, RealSystem(), timeout=10)


@needs_x86
def test_child_killed_by_a_signal_is_reported(no_leaks: None) -> None:
    """A child that dies before finishing is an error naming the signal, not a short answer."""
    with pytest.raises(RuntimeError, match="killed by signal 9"):
        run_isolated(die, RealSystem(), timeout=10)


@needs_x86
def test_silent_child_is_killed_at_its_time_limit(no_leaks: None) -> None:
    """A child that stops sending is killed and reaped; what it sent before is kept."""
    run = run_isolated(hang_after, RealSystem(), 2, timeout=0.5)
    assert run.messages == (b"0", b"1") and not run.finished
    assert "no answer within 0.5s" in run.detail


@needs_x86
def test_child_that_never_answers_is_killed(
    monkeypatch: pytest.MonkeyPatch, no_leaks: None
) -> None:
    """The time limit holds before the first message too (start-up allowance included)."""
    monkeypatch.setattr(isolated, "STARTUP_SECONDS", 0.5)
    run = run_isolated(hang_after, RealSystem(), 0, timeout=0.5)
    assert run == ChildRun((), False, run.detail) and "killed" in run.detail


@needs_x86
def test_time_limit_holds_without_pidfds(
    monkeypatch: pytest.MonkeyPatch, no_leaks: None
) -> None:
    """Before Linux 5.3 (no pidfd_open) a silent child is still killed and reaped."""

    def no_pidfd(pid: int, flags: int = 0) -> int:
        raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS))

    monkeypatch.setattr(os, "pidfd_open", no_pidfd)
    run = run_isolated(hang_after, RealSystem(), 1, timeout=0.5)
    assert run.messages == (b"0",) and not run.finished


def test_frames_cut_anywhere_are_never_read_as_whole() -> None:
    """A stream cut inside any frame, or before the end frame, is an error."""
    stream = bytearray()
    serve(report_self, FakeSystem.genoa(), (1,), stream.extend)
    whole = decode_frames(bytes(stream))
    assert whole.finished and len(whole.messages) == 1
    for cut in range(len(stream)):
        with pytest.raises(RuntimeError, match=r"cut short|ended before"):
            decode_frames(bytes(stream[:cut]))
    with pytest.raises(RuntimeError, match="garbled"):
        decode_frames(b"Z" + bytes(stream))


# --- failure paths leak nothing ------------------------------------------------------------
@pytest.mark.parametrize("code", [errno.EAGAIN, errno.ENOMEM])
def test_spawn_failure_leaks_no_descriptor(
    monkeypatch: pytest.MonkeyPatch, code: int, no_leaks: None
) -> None:
    """posix_spawn failing (pids cgroup, RLIMIT_NPROC: EAGAIN) raises its errno, closes all."""

    def refuse(*args: object, **kwargs: object) -> int:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "posix_spawn", refuse)
    for _ in range(3):
        with pytest.raises(OSError) as caught:
            run_isolated(report_self, RealSystem(), 1, timeout=1)
        assert caught.value.errno == code and "posix_spawn" in str(caught.value.filename)


@pytest.mark.parametrize("call", ["pipe", "memfd_create"])
def test_descriptor_exhaustion_leaks_nothing(
    monkeypatch: pytest.MonkeyPatch, call: str, no_leaks: None
) -> None:
    """EMFILE from pipe() or memfd_create() closes what was already made."""

    def exhausted(*args: object, **kwargs: object) -> object:
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))

    monkeypatch.setattr(os, call, exhausted)
    with pytest.raises(OSError) as caught:
        run_isolated(report_self, RealSystem(), 1, timeout=1)
    assert caught.value.errno == errno.EMFILE


def test_task_that_cannot_be_sent_leaks_nothing(no_leaks: None) -> None:
    """A task that cannot be sent fails before any descriptor or process exists."""
    with pytest.raises(TypeError, match="cannot be imported by name"):
        run_isolated(lambda system, send: None, RealSystem(), timeout=1)
    with pytest.raises(ValueError, match="unmarshallable"):
        run_isolated(report_self, RealSystem(), object(), timeout=1)


@needs_kvm
def test_probe_notes_a_child_that_cannot_start(
    monkeypatch: pytest.MonkeyPatch, no_leaks: None
) -> None:
    """EAGAIN starting the permission child: a note, no permitted view, nothing leaked."""
    from xstate_check.system.probe import probe

    monkeypatch.setattr(os, "posix_spawn", lambda *a, **k: (_ for _ in ()).throw(
        OSError(errno.EAGAIN, os.strerror(errno.EAGAIN))))
    state = probe(PretendAmx())
    assert state.kvm_cpuid is not None and state.kvm_cpuid_permitted is None
    assert any("EAGAIN" in note and "posix_spawn" in note for note in state.notes)


@needs_kvm
def test_oracle_spawn_failure_is_a_probe_error(
    monkeypatch: pytest.MonkeyPatch, no_leaks: None
) -> None:
    """The oracle that cannot start its child: ProbeError with the errno (exit 3)."""
    from xstate_check.system.kvm import kvm_cpuid

    table = kvm_cpuid()
    monkeypatch.setattr(os, "posix_spawn", lambda *a, **k: (_ for _ in ()).throw(
        OSError(errno.EAGAIN, os.strerror(errno.EAGAIN))))
    with pytest.raises(ProbeError) as caught:
        run_oracle(table)
    assert caught.value.errno == errno.EAGAIN and caught.value.exit_code == 3


@needs_kvm
def test_permitted_view_child_that_hangs_is_a_probe_error(
    monkeypatch: pytest.MonkeyPatch, no_leaks: None
) -> None:
    """The permission child past its time limit: killed, reaped, ProbeError (exit 3)."""
    from xstate_check.system import kvm
    from xstate_check.system.probe import permitted_kvm_cpuid

    monkeypatch.setattr(isolated, "STARTUP_SECONDS", 0.2)
    monkeypatch.setattr(kvm, "permitted_view", hang)
    with pytest.raises(ProbeError) as caught:
        permitted_kvm_cpuid(PretendAmx(), timeout=0.3)
    assert "could not be learnt" in str(caught.value) and caught.value.exit_code == 3


# --- SIGCHLD ignored, threads, newer Pythons -----------------------------------------------
def _run_script(python: str, *args: str) -> dict[str, object]:
    """Run threaded_children.py under ``python -W error``; return its summary."""
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    done = subprocess.run(
        [python, "-W", "error", str(TESTS / "threaded_children.py"), *args],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )
    assert done.returncode == 0 and not done.stderr, done.stderr
    summary: dict[str, object] = json.loads(done.stdout)
    return summary


def _assert_clean(summary: dict[str, object], threads: int) -> None:
    assert summary["errors"] == []
    assert summary["answers"] == threads and summary["matched"] is True
    assert summary["amx_view"] == "after ARCH_REQ_XCOMP_GUEST_PERM(18)"
    assert summary["fds_after"] == summary["fds_before"]
    assert summary["children_left"] is False
    assert summary["forks"] == 0


@needs_kvm
def test_sigchld_ignored_gives_the_real_result(no_leaks: None) -> None:
    """Under a supervisor that ignores SIGCHLD, the oracle and the probe answer as usual."""
    summary = _run_script(sys.executable, "2", "--ignore-sigchld")
    _assert_clean(summary, 2)
    oracle = summary["oracle"]
    assert isinstance(oracle, dict) and oracle["outcome"] == "accepted"


@needs_kvm
def test_threads_under_this_python(no_leaks: None) -> None:
    """preboot() and the oracle from 8 threads at once, -W error: same answers, no leak."""
    _assert_clean(_run_script(sys.executable, "8"), 8)


def _interpreter(version: str) -> tuple[str | None, str]:
    """Return a Python ``version`` able to import the project's dependencies, or why not."""
    candidates = [
        *filter(None, os.environ.get("XSTATE_CHECK_PYTHONS", "").split(os.pathsep)),
        *sorted(str(p) for p in Path.home().glob(f".pyenv/versions/{version}.*/bin/python")),
        f"/usr/bin/python{version}",
        f"/usr/local/bin/python{version}",
    ]
    probe = textwrap.dedent(f"""
        import sys
        assert sys.version_info[:2] == {tuple(int(n) for n in version.split('.'))}
        import attrs, cpuid_native
    """)
    tried = []
    for candidate in candidates:
        if not os.access(candidate, os.X_OK):
            continue
        env = {**os.environ, "PYTHONPATH": str(SRC)}
        done = subprocess.run([candidate, "-c", probe], capture_output=True, env=env,
                              timeout=60, check=False)
        if done.returncode == 0:
            return candidate, ""
        tried.append(candidate)
    if tried:
        # The interpreter is there without the dependencies: give it a virtual environment
        # of its own with them, as a user of that Python would install the project.
        venv = Path(tempfile.mkdtemp(prefix=f"xstate-check-py{version}-"))
        atexit.register(shutil.rmtree, venv, ignore_errors=True)
        made = subprocess.run(
            [tried[0], "-m", "venv", str(venv)], capture_output=True, timeout=300, check=False)
        python = venv / "bin" / "python"
        if made.returncode == 0:
            subprocess.run([str(python), "-m", "pip", "install", "-q", "attrs", "cpuid"],
                           capture_output=True, timeout=600, check=False)
            env = {**os.environ, "PYTHONPATH": str(SRC)}
            done = subprocess.run([str(python), "-c", probe], capture_output=True, env=env,
                                  timeout=60, check=False)
            if done.returncode == 0:
                return str(python), ""
    why = (f"{', '.join(tried)} cannot import attrs and cpuid_native, and a virtual "
           "environment with them could not be made" if tried
           else f"no Python {version} found")
    return None, why + " (XSTATE_CHECK_PYTHONS may name interpreters with the dependencies)"


@needs_kvm
@pytest.mark.parametrize("version", ["3.12", "3.13"])
def test_threads_under_newer_pythons(version: str, no_leaks: None) -> None:
    """On 3.12+, where forking a threaded process warns, 8 threads under -W error stay clean."""
    python, why = _interpreter(version)
    if python is None:
        pytest.skip(why)
    _assert_clean(_run_script(python, "8"), 8)
