"""Isolated children: one task in a fresh interpreter, with a time limit, never a fork.

Probes that change process state (``ARCH_REQ_XCOMP_GUEST_PERM``, a KVM VM) run in a child
so the caller is left as it was. The caller may be a multi-threaded orchestrator, so the
child is never a fork of it (a forked copy of a threaded process can deadlock on a lock
another thread held, and Python 3.12+ warns about it): ``run_isolated`` starts
``sys.executable -I -S`` with ``os.posix_spawn`` and sends it the task: the function and
the system's class by name, the system's state and the arguments as plain data
(``marshal``: ints, strings, bytes, tuples, lists, dicts, None).

- **What the child gets**: descriptors 0 (the request, a sealed memfd), 1 and 2
  (/dev/null) and 3 (the result pipe); it closes anything else at once, and every
  descriptor of the caller is close-on-exec, so a concurrent child gets none of another's.
  ``-I -S`` ignores ``PYTHON*`` variables, the user site and ``.pth`` files; the request
  carries the caller's ``sys.path`` so the child imports the same modules.
- **What comes back**: framed messages on the pipe (a tag byte, a u32 length, the body):
  ``M`` one message the task sent, ``D`` the task finished, ``E`` an ``OSError`` (errno
  and context), ``X`` any other failure. A frame cut short is never read as whole.
- **Time limit**: the child is killed when it goes ``timeout`` seconds without a frame
  (its first frame may take ``STARTUP_SECONDS`` longer: a fresh interpreter starts);
  it also arms ``alarm()`` so it dies by itself should the caller be gone.
- **Reaping**: the result comes from the pipe alone, never from the exit status, so a
  caller that ignores SIGCHLD (the kernel then reaps the child and ``waitpid`` gives
  ECHILD) gets the same result. A child is signalled through its pidfd, which cannot
  name another process once the child is gone; without pidfds, only while ``waitid``
  shows it is still this process's child.
- **Failure paths**: every descriptor made for a child is closed whatever fails
  (the request, memfd, pipe, posix_spawn's EAGAIN under a pids cgroup or RLIMIT_NPROC).

Standard library only: the child imports this module first.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import importlib
import marshal
import os
import select
import signal
import struct
import sys
import time
from collections import namedtuple
from collections.abc import Callable

from xstate_check.system.calls import os_error

TYPE_CHECKING = False  # typing is not imported at run time: a child imports this module
if TYPE_CHECKING:
    from typing import Any, NamedTuple

__all__ = [
    "STARTUP_SECONDS",
    "ChildRun",
    "child_main",
    "decode_frames",
    "run_isolated",
    "serve",
]

#: Extra seconds a child has for its first frame: interpreter start and imports.
STARTUP_SECONDS = 5.0
#: The descriptor the child writes its frames to.
CHILD_RESULT_FD = 3
#: The caller's descriptors are moved at or above this before ``posix_spawn`` maps them
#: to 0..3, so no mapping overwrites another.
_HIGH_FD = 10
#: A frame body larger than this is garbage, not a message.
MAX_FRAME = 1 << 26

_MESSAGE, _DONE, _OSERROR, _FAILED = b"M", b"D", b"E", b"X"
_TAGS = frozenset({_MESSAGE, _DONE, _OSERROR, _FAILED})
_LENGTH = struct.Struct("=I")
_ERRNO = struct.Struct("=i")
_HEAD = 1 + _LENGTH.size

_BOOTSTRAP = (
    "import sys; sys.path.insert(0, sys.argv[1]); "
    "from xstate_check.system.isolated import child_main; child_main()"
)
#: Signals the child starts with their default action, whatever the caller ignores.
_DEFAULT_SIGNALS = tuple(
    getattr(signal, name)
    for name in ("SIGALRM", "SIGCHLD", "SIGHUP", "SIGINT", "SIGTERM", "SIGPIPE")
    if hasattr(signal, name)
)


if TYPE_CHECKING:

    class ChildRun(NamedTuple):
        """What a child sent: its messages in order, and whether its task finished.

        ``finished`` False means the time limit expired (``detail`` says after what); the
        messages sent before are kept.
        """

        messages: tuple[bytes, ...]
        finished: bool
        detail: str = ""

else:
    ChildRun = namedtuple("ChildRun", "messages finished detail", defaults=("",))


def _frame(tag: bytes, body: bytes = b"") -> bytes:
    return tag + _LENGTH.pack(len(body)) + body


def serve(
    func: Callable[..., None],
    system: object,
    args: tuple[object, ...],
    write: Callable[[bytes], None],
) -> None:
    """Run ``func(system, send, *args)``, writing each frame through ``write``.

    ``send(body)`` writes one message. The end frame says how the task ended: done, an
    OSError (errno and context), or any other failure (its repr). Never raises but for
    ``write``'s own errors.
    """

    def send(body: bytes) -> None:
        """Send one message to the parent."""
        write(_frame(_MESSAGE, bytes(body)))

    try:
        func(system, send, *args)
    except OSError as error:
        context = error.filename if isinstance(error.filename, str) else ""
        text = f"{context}\0{error.strerror or ''}".encode(errors="replace")
        write(_frame(_OSERROR, _ERRNO.pack(error.errno or 0) + text))
    except BaseException as error:  # reported to the parent, never lost
        write(_frame(_FAILED, f"{type(error).__name__}: {error}".encode(errors="replace")))
    else:
        write(_frame(_DONE))


class _Frames:
    """Frames parsed from a byte stream as it arrives."""

    def __init__(self) -> None:
        self.pending = bytearray()
        self.messages: list[bytes] = []
        self.end: tuple[bytes, bytes] | None = None

    def feed(self, data: bytes) -> int:
        """Add bytes; return how many whole frames they completed."""
        self.pending += data
        complete = 0
        while self.end is None and len(self.pending) >= _HEAD:
            tag = bytes(self.pending[:1])
            (length,) = _LENGTH.unpack_from(self.pending, 1)
            if tag not in _TAGS or length > MAX_FRAME:
                raise RuntimeError("the child process's answer is garbled")
            if len(self.pending) < _HEAD + length:
                break
            body = bytes(self.pending[_HEAD : _HEAD + length])
            del self.pending[: _HEAD + length]
            complete += 1
            if tag == _MESSAGE:
                self.messages.append(body)
            else:
                self.end = (tag, body)
        return complete

    def result(self, context: str) -> ChildRun:
        """Return the whole run; raise the child's OSError, or RuntimeError if it failed."""
        if self.end is None:
            if self.pending:
                raise RuntimeError(
                    f"{context}: the child process's answer is cut short "
                    f"({len(self.pending)} bytes of a frame)"
                )
            raise RuntimeError(f"{context}: the child process ended before it finished")
        tag, body = self.end
        if tag == _DONE:
            return ChildRun(tuple(self.messages), True)
        if tag == _OSERROR and len(body) >= _ERRNO.size:
            (code,) = _ERRNO.unpack_from(body)
            where, _, strerror = body[_ERRNO.size :].decode(errors="replace").partition("\0")
            if not code:
                raise OSError(f"{where or context}: failed without errno")
            error = os_error(code, where or context)
            if strerror:
                error.strerror = strerror
            raise error
        raise RuntimeError(f"{context}: the child process failed: {body.decode(errors='replace')}")


def decode_frames(data: bytes, context: str = "child process") -> ChildRun:
    """Return the run a whole stream of frames describes (as ``run_isolated`` reads it)."""
    frames = _Frames()
    frames.feed(data)
    return frames.result(context)


# --- the parent side -----------------------------------------------------------------------
def _package_root() -> str:
    """Return the folder holding this ``xstate_check`` package (for the child's sys.path)."""
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class _Descriptors:
    """The descriptors made for one child; whatever is still held is closed on exit."""

    def __init__(self) -> None:
        self.held: list[int] = []

    def __enter__(self) -> _Descriptors:
        return self

    def __exit__(self, *exc: object) -> None:
        while self.held:
            with contextlib.suppress(OSError):
                os.close(self.held.pop())

    def keep(self, fd: int) -> int:
        """Hold ``fd`` until it is released or the block ends."""
        self.held.append(fd)
        return fd

    def high(self, fd: int) -> int:
        """Replace held ``fd`` by a close-on-exec copy numbered at least _HIGH_FD."""
        new = self.keep(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, _HIGH_FD))
        self.release(fd)
        os.close(fd)
        return new

    def release(self, fd: int) -> int:
        """Stop holding ``fd`` (the caller owns it now)."""
        self.held.remove(fd)
        return fd


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _argv(executable: str) -> list[str]:
    flags = ["-I", "-S"]
    if sys.flags.dont_write_bytecode:
        flags.append("-B")
    return [executable, *flags, "-c", _BOOTSTRAP, _package_root()]


def _spawn(request: bytes) -> tuple[int, int, int | None]:
    """Start the child; return (pid, read end of its result pipe, pidfd or None).

    Every descriptor made here is closed if anything fails, and all but the read end
    (which the caller then owns) once the child holds its copies.
    """
    executable = sys.executable
    if not executable:
        raise os_error(errno.ENOENT, "no Python interpreter to start a child with (sys.executable)")
    with _Descriptors() as fds:
        memfd = fds.keep(os.memfd_create("xstate-check-request",
                                         os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING))
        memfd = fds.high(memfd)
        _write_all(memfd, request)
        os.lseek(memfd, 0, os.SEEK_SET)
        seals = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
        fcntl.fcntl(memfd, fcntl.F_ADD_SEALS, seals)
        read_end, write_end = (fds.keep(fd) for fd in os.pipe())  # both close-on-exec
        read_end, write_end = fds.high(read_end), fds.high(write_end)
        try:
            pid = os.posix_spawn(
                executable,
                _argv(executable),
                os.environ,
                file_actions=[
                    (os.POSIX_SPAWN_DUP2, memfd, 0),
                    (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
                    (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0),
                    (os.POSIX_SPAWN_DUP2, write_end, CHILD_RESULT_FD),
                ],
                setsigmask=(),
                setsigdef=_DEFAULT_SIGNALS,
            )
        except OSError as error:
            code = error.errno or errno.EIO
            raise os_error(code, f"posix_spawn of a child process ({executable})") from None
        read_end = fds.release(read_end)
    pidfd: int | None = None
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):  # before Linux 5.3: _kill falls back on waitid
        pidfd = None
    return pid, read_end, pidfd


def _readable(fd: int, seconds: float) -> bool:
    """Return whether ``fd`` is readable (or hung up) within ``seconds`` (poll: any fd number)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(max(0, int(seconds * 1000) + 1)))


def _kill(pid: int, pidfd: int | None) -> None:
    """SIGKILL the child, never another process that took its pid after it was reaped."""
    send = getattr(signal, "pidfd_send_signal", None)
    if pidfd is not None and send is not None:
        try:
            send(pidfd, signal.SIGKILL)
        except ProcessLookupError:
            return  # it ended by itself
        except OSError:  # a kernel without pidfd_send_signal (before 5.1): check as below
            pass
        else:
            return
    try:  # still this process's child (alive or a zombie) without being reaped?
        state = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return  # reaped already (SIGCHLD ignored): the pid may be someone else's now
    if state is None:
        os.kill(pid, signal.SIGKILL)


def _reap(pid: int, pidfd: int | None) -> int | None:
    """Wait for the child to end; return its wait status, None where it was reaped for us.

    A child that sent its end frame has nothing left to do; one that does not end within
    ``STARTUP_SECONDS`` is killed first.
    """
    if pidfd is not None and not _readable(pidfd, STARTUP_SECONDS):
        _kill(pid, pidfd)
    while True:
        try:
            _, status = os.waitpid(pid, 0)
        except ChildProcessError:
            return None  # SIGCHLD ignored or reaped by someone else: the kernel reaped it
        except InterruptedError:  # pragma: no cover - PEP 475 retries; kept for clarity
            continue
        return status


def _describe(status: int | None) -> str:
    if status is None or status == 0:
        return ""
    if os.WIFSIGNALED(status):
        return f" (killed by signal {os.WTERMSIG(status)})"
    return f" (exit status {os.waitstatus_to_exitcode(status)})"


def _by_name(thing: object, what: str) -> tuple[str, str]:
    """Return (module, qualified name) of a function or class a child can import."""
    module = getattr(thing, "__module__", None)
    name = getattr(thing, "__qualname__", "")
    if not isinstance(module, str) or module == "__main__" or "<" in name:
        raise TypeError(f"{what} {name or thing!r} cannot be imported by name in a child")
    return module, name


def _request(func: Callable[..., None], system: object, args: tuple[object, ...],
             timeout: float) -> bytes:
    """Return the child's request; raise TypeError or ValueError for what cannot be sent."""
    state = system.__getstate__()
    request: tuple[Any, ...] = (
        list(sys.path), _by_name(func, "function"), _by_name(type(system), "class"),
        state if isinstance(state, dict) else {}, args, float(timeout),
    )
    return marshal.dumps(request)


def _resolve(reference: tuple[str, str]) -> object:
    """Import a (module, qualified name) reference."""
    module, name = reference
    found: object = importlib.import_module(module)
    for part in name.split("."):
        found = getattr(found, part)
    return found


def run_isolated(
    func: Callable[..., None], system: object, *args: object, timeout: float
) -> ChildRun:
    """Run ``func(system, send, *args)`` in a fresh interpreter; return what it sent.

    ``func`` must be a module-level function and ``system`` an instance of a module-level
    class (the child imports both by name); the system's state and ``args`` must be plain
    data (``marshal``). Raises the child's OSError with its errno and context, RuntimeError when
    the child failed otherwise or ended without finishing, and the OSError of
    ``posix_spawn`` (EAGAIN, ENOMEM…) when no child could be started. A child that goes
    ``timeout`` seconds without a frame is killed: the result then has ``finished`` False.
    """
    request = _request(func, system, args, timeout)
    pid, read_end, pidfd = _spawn(request)
    frames = _Frames()
    finished = True
    with _Descriptors() as fds:
        fds.keep(read_end)
        if pidfd is not None:
            fds.keep(pidfd)
        try:
            deadline = time.monotonic() + timeout + STARTUP_SECONDS
            while True:
                wait = deadline - time.monotonic()
                if wait <= 0 or not _readable(read_end, wait):
                    finished = False
                    _kill(pid, pidfd)
                    break
                chunk = os.read(read_end, 65536)
                if not chunk:
                    break
                if frames.feed(chunk):
                    deadline = time.monotonic() + timeout
        except BaseException:
            _kill(pid, pidfd)
            _reap(pid, pidfd)
            raise
        status = _reap(pid, pidfd)
    if not finished:
        return ChildRun(
            tuple(frames.messages), False,
            f"no answer within {timeout:g}s; the child process was killed",
        )
    return frames.result("child process" + _describe(status))


# --- the child side ------------------------------------------------------------------------
def _alarm(seconds: float) -> None:
    signal.alarm(min(int(seconds) + 2, 1 << 30))


def _read_request() -> bytes:
    chunks = []
    while chunk := os.read(0, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


def child_main() -> None:  # pragma: no cover - runs in the child; the tests see its frames
    """Run the task the parent sent on descriptor 0, framing results to descriptor 3; exit."""
    status = 0
    try:
        os.closerange(CHILD_RESULT_FD + 1, (1 << 31) - 1)  # close_range(2): any limit
        _alarm(3600)  # replaced below; bounds a child whose request never arrives
        try:
            path, func_ref, class_ref, state, args, timeout = marshal.loads(_read_request())
            sys.path[:] = [*path, *(entry for entry in sys.path if entry not in path)]
            func = _resolve(func_ref)
            cls = _resolve(class_ref)
            if not isinstance(cls, type) or not callable(func):
                raise TypeError(f"{class_ref} is not a class or {func_ref} not a function")
            system: Any = object.__new__(cls)
            system.__dict__.update(state)
        except BaseException as error:
            message = f"cannot read the task: {type(error).__name__}: {error}"
            _write_all(CHILD_RESULT_FD, _frame(_FAILED, message.encode(errors="replace")))
            raise SystemExit(1) from None

        def write(frame: bytes) -> None:
            """Write one frame and re-arm the alarm."""
            _alarm(timeout)
            _write_all(CHILD_RESULT_FD, frame)

        _alarm(timeout + STARTUP_SECONDS)
        serve(func, system, args, write)
    except BaseException:
        status = 1
    finally:
        os._exit(status)
