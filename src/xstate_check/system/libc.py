"""libc's ``syscall(2)`` and the C integers handed to it, through ctypes's C core alone.

The probe calls arch_prctl(2) through libc's ``syscall`` (with ``errno`` kept) and gives
KVM the address of a ``uint64_t`` to fill. The ctypes package's Python layer (its fifty
types and helpers, ``ctypes._endian``) costs 6.8 million instructions of each start,
about 1 ms, against 1 million for ``_ctypes``, its C core, which is all this needs: the
three integer types are declared as ``ctypes/__init__.py`` declares ``c_long``,
``c_ulong`` and ``c_uint64``, and ``syscall`` is found as ``ctypes.CDLL(None,
use_errno=True).syscall`` finds it (``dlopen(NULL)``, then ``dlsym``). Where ``_ctypes``
lacks any of that, the ctypes package serves instead.

Standard library only, without ``typing``: a child imports this module.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing is not imported at run time: a child imports this module
if TYPE_CHECKING:
    from collections.abc import Callable
    from ctypes import c_long, c_uint64, c_ulong

__all__ = ["addressof", "byref", "c_long", "c_uint64", "c_ulong", "get_errno", "set_errno",
           "syscall_function"]

try:
    from _ctypes import (
        FUNCFLAG_CDECL,
        FUNCFLAG_USE_ERRNO,
        CFuncPtr,
        _SimpleCData,
        addressof,
        byref,
        dlopen,
        get_errno,
        set_errno,
    )
except ImportError:  # pragma: no cover - an interpreter whose ctypes core differs
    from ctypes import addressof, byref, c_long, c_uint64, c_ulong, get_errno, set_errno

    def syscall_function() -> Callable[..., int]:
        """Return libc's ``long syscall(long, ...)``, keeping errno (``get_errno``)."""
        from ctypes import CDLL

        function = CDLL(None, use_errno=True).syscall
        function.restype = c_long
        return function

else:
    if not TYPE_CHECKING:

        # Named and declared as the ctypes package declares them.
        class c_long(_SimpleCData):  # noqa: N801
            """C ``long``."""

            _type_ = "l"

        class c_ulong(_SimpleCData):  # noqa: N801
            """C ``unsigned long``."""

            _type_ = "L"

        class c_uint64(_SimpleCData):  # noqa: N801
            """C ``uint64_t``."""

            _type_ = "Q"

    class _Syscall(CFuncPtr):
        """A libc function returning ``long``, called with errno kept (``get_errno``)."""

        _flags_ = FUNCFLAG_CDECL | FUNCFLAG_USE_ERRNO
        _restype_ = c_long

    class _Program:
        """The running program and the libraries it loaded, as ``CDLL(None)`` opens them:
        ``_handle`` is what ``dlsym`` looks a name up in."""

        def __init__(self) -> None:
            self._handle = dlopen(None)  # type: ignore[arg-type]  # NULL: the program itself

    def syscall_function() -> Callable[..., int]:
        """Return libc's ``long syscall(long, ...)``, keeping errno (``get_errno``)."""
        # A (name, library) pair: CFuncPtr reads the library's ``_handle`` alone.
        function: Callable[..., int] = _Syscall(("syscall", _Program()))  # type: ignore[arg-type]
        return function
