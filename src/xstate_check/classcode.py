"""The methods attrs writes for the package's classes, compiled once and kept on disk.

attrs makes a class's ``__init__``, ``__eq__``, ``__hash__`` and ``__repr__`` by writing
their source and compiling it: parsing and compiling that source is two thirds of what a
class costs to create, and the pre-boot path creates a dozen classes on every start. Within
``compiled_once()``, the source attrs compiles is looked up in a file of code objects kept
beside the compiled catalogue (``XSTATE_CHECK_CACHE_DIR``, as ``engine.shipped`` keeps it):
a source seen before is not compiled again; attrs's own classes, made as attrs imports, are
looked up likewise. The classes are the very ones attrs makes: the same source gives the
same code object, and a source not found (another attrs, another class) is compiled as
attrs would. The file is named by the interpreter's version (code
objects are tied to it) and, like the catalogue's cache, used only when this user or root
owns it and no one else may write it.

attrs's ``__hash__`` holds a number derived from the per-process string hash; it is taken
out of the source before the lookup and put back in the code object found.
"""

from __future__ import annotations

import builtins
import contextlib
import gc
import marshal
import os
import sys
from collections.abc import Iterator
from types import CodeType
from typing import Any

__all__ = ["cache_folders", "collector_paused", "compiled_once", "open_trusted", "write_cache"]

_PACKAGE = os.path.dirname(os.path.realpath(__file__))
_FORMAT = b"xstate-check class code 1\n"
#: The file's entries past which those this run did not use are dropped.
_MAX_ENTRIES = 256
#: What stands for the number in attrs's ``__hash__`` (``hash((NUMBER, self.a, ...))``)
#: in the source looked up; 19 digits no class of the package writes.
_SENTINEL = 7_919_191_919_191_919_191
_HASH_OPEN = "return hash(("
#: ``compile`` as this module found it (it stands in for it while attrs itself imports).
_COMPILE = builtins.compile


def cache_folders() -> list[str]:
    """Return the folders compiled caches may be kept in, in the order tried."""
    chosen = os.environ.get("XSTATE_CHECK_CACHE_DIR")
    if chosen is not None:
        return [chosen] if chosen else []
    user = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return [os.path.join(_PACKAGE, "__pycache__"), os.path.join(user, "xstate-check")]


def open_trusted(path: str) -> Any:
    """Return ``path`` opened for reading, or None where another user could have written it
    (what it holds is run: pickled rules, code objects)."""
    handle = open(path, "rb")  # noqa: SIM115 - returned to the caller, who closes it
    info = os.fstat(handle.fileno())
    if info.st_uid not in (0, os.geteuid()) or info.st_mode & 0o022:
        handle.close()
        return None
    return handle


def write_cache(folders: list[str], name: str, data: bytes) -> str | None:
    """Write ``data`` as file ``name`` in the first of ``folders`` that takes it (a temporary
    file renamed over it, so no reader sees half a file); return that folder, or None."""
    for folder in folders:
        temporary = os.path.join(folder, f".{name}.{os.getpid()}")
        try:
            os.makedirs(folder, exist_ok=True)
            with open(temporary, "xb") as handle:
                handle.write(data)
            os.replace(temporary, os.path.join(folder, name))
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            continue
        return folder
    return None


def _file_name() -> str:
    return f"classcode-{sys.implementation.cache_tag}.marshal"


def _header() -> bytes:
    return _FORMAT + sys.version.encode() + b"\0"


def _split_hash(source: str) -> tuple[str, int | None]:
    """Return ``source`` with the number of its ``__hash__`` replaced by the sentinel, and
    that number (None where it has none)."""
    start = source.find(_HASH_OPEN)
    if start < 0:
        return source, None
    first = start + len(_HASH_OPEN)
    end = source.find(",", first)
    text = source[first:end].strip()
    try:
        number = int(text)
    except ValueError:
        return source, None
    return source[:first] + f"\n                {_SENTINEL}" + source[end:], number


def _with_number(code: CodeType, number: int) -> CodeType:
    """Return ``code`` with the sentinel constant, in it or a function it defines, replaced."""
    consts = tuple(
        number if type(const) is int and const == _SENTINEL
        else _with_number(const, number) if isinstance(const, CodeType) else const
        for const in code.co_consts
    )
    return code if consts == code.co_consts else code.replace(co_consts=consts)


class _Codes:
    """The stored code objects by (file name, source), and what this run used and added."""

    def __init__(self) -> None:
        self.stored: dict[tuple[str, str], CodeType] = {}
        self.used: dict[tuple[str, str], CodeType] = {}
        self.added = 0
        self.folders = cache_folders()
        for folder in self.folders:
            if self._load(os.path.join(folder, _file_name())):
                break

    def _load(self, path: str) -> bool:
        try:
            handle = open_trusted(path)
            if handle is None:
                return False
            with handle:
                data = handle.read()
            header = _header()
            if not data.startswith(header):
                return False
            stored = marshal.loads(data[len(header):])
        except Exception:  # no file, or a damaged one: compile as attrs does
            return False
        if isinstance(stored, dict):
            self.stored = {key: code for key, code in stored.items()
                           if isinstance(key, tuple) and isinstance(code, CodeType)}
        return True

    def compile(self, source: Any, filename: Any, mode: Any, *args: Any, **kwargs: Any) -> Any:
        """``compile`` as attrs calls it: a source seen before comes from the file."""
        if args or kwargs or mode != "exec" or not isinstance(source, str):
            return _COMPILE(source, filename, mode, *args, **kwargs)
        looked_up, number = _split_hash(source)
        key = (str(filename), looked_up)
        code = self.stored.get(key)
        if code is None:
            code = _COMPILE(looked_up, filename, mode)
            self.stored[key] = code
            self.added += 1
        self.used[key] = code
        return code if number is None else _with_number(code, number)

    def save(self) -> None:
        """Write the code objects to the first folder that takes them, where some were added."""
        if not self.added:
            return
        kept = self.stored if len(self.stored) <= _MAX_ENTRIES else self.used
        data = _header() + marshal.dumps(kept)
        self.added = 0
        write_cache(self.folders, _file_name(), data)


_ACTIVE: list[_Codes] = []
#: The file, read once per process.
_LOADED: list[_Codes] = []


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Within the block, the cyclic garbage collector does not run (where it was enabled,
    it is enabled again after).

    Importing modules and loading the catalogue make tens of thousands of objects that all
    live on, and almost no cycles: each collection the allocations would set off walks
    them for nothing (about 14 million instructions of a first ``preboot()``).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@contextlib.contextmanager
def compiled_once() -> Iterator[None]:
    """Within the block, attrs classes made take their methods' code from the file where it
    has them; new ones are added to it when the outermost block ends. The garbage
    collector is paused meanwhile (``collector_paused``): the block imports modules."""
    with collector_paused():
        if "attr._make" not in sys.modules and not _ACTIVE and builtins.compile is _COMPILE:
            # attrs makes a dozen classes of its own as it imports (validators, Attribute,
            # Factory …), with the builtin ``compile``: it stands in for it meanwhile, so
            # that their code comes from the file too (a third of attrs's import). Whatever
            # else is compiled meanwhile gets the code ``compile`` gives its source.
            if not _LOADED:
                _LOADED.append(_Codes())
            builtins.compile = _LOADED[0].compile
            try:
                import attr._make  # noqa: F401 - imported under the stand-in compile
            finally:
                builtins.compile = _COMPILE
        import attr._make as make

        if _ACTIVE or "compile" in vars(make) or not hasattr(make, "_compile_and_eval"):
            yield  # nested, or an attrs that compiles otherwise: nothing to do
            return
        if not _LOADED:
            _LOADED.append(_Codes())
        codes = _LOADED[0]
        _ACTIVE.append(codes)
        make.compile = codes.compile  # type: ignore[attr-defined]
        try:
            yield
        finally:
            del make.compile  # type: ignore[attr-defined]
            _ACTIVE.pop()
            with contextlib.suppress(Exception):  # the file is an optimisation, never a failure
                codes.save()
