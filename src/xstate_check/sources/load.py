"""One entry point for every CPUID source: a dump file, ``profile:NAME``, ``host``, ``kvm``.

A file's format is detected from its content, never its name. Files are read with a size
limit (``MAX_INPUT_BYTES``) and must be regular files, so that a FIFO, ``/dev/zero`` or a
huge file cannot hang or exhaust the checker. Every problem is an ``InputError`` naming
the path (and line and column where there is one).
"""

from __future__ import annotations

import importlib
import os
import re
import stat
from collections.abc import Callable
from pathlib import Path
from typing import cast

from xstate_check import limits
from xstate_check.cpuid import CpuidSet
from xstate_check.errors import InputError, Location, check_argument, clip_snippet

__all__ = [
    "FORMATS",
    "MAX_INPUT_BYTES",
    "decode_text",
    "detect_format",
    "load_cpuid",
    "read_cpuid_text",
    "read_text",
]

#: The largest input file read, in bytes (16 MiB; the largest real dump is about 1.4 MiB).
MAX_INPUT_BYTES = limits.MAX_INPUT_BYTES

#: What ``detect_format`` can answer, besides ``"unknown"``.
FORMATS = (
    "aida64",
    "libcpuid",
    "cpuid-raw",
    "xstate-check-json",
    "firecracker-fingerprint",
    "firecracker-dump",
)

PROFILE_PREFIX = "profile:"

_EXPECTED_DUMP = (
    "expected a CPUID dump: AIDA64/InstLatx64 text, a libcpuid .test file, `cpuid -r` output, "
    "xstate-check CPUID JSON, a Firecracker fingerprint or a cpu-template-helper template dump"
)

# The first line that tells a text format apart (FORMATS.md §3).
_SNIFF = re.compile(
    r"""^(?:
        (?P<aida>CPUID\ [0-9A-Fa-f]{8}:
          | ------\[\ (?:CPUID\ Registers\ /\ )?Logical\ CPU\ \#\d+\ \]------
          | CPU\#\d+\ AffMask:
          | ------\[\ Versions\ \]------)
      | (?P<native>(?:basic_cpuid|ext_cpuid|intel_fn\w+|amd_fn\w+)\[\d+\]=
          | _+\ Logical\ CPU\ \#\d+\ _+)
      | (?P<raw>CPU(?:\ \d+)?:[ \t\r]*$
          | [ \t]+0x[0-9A-Fa-f]{8}\ 0x[0-9A-Fa-f]+:\ eax=)
    )""",
    re.M | re.X,
)
_OWN_SCHEMA = re.compile(r'"schema"\s*:\s*"xstate-check-cpuid')
_FINGERPRINT = re.compile(r'"guest_cpu_config"\s*:')
_TEMPLATE = re.compile(r'"(?:cpuid_modifiers|msr_modifiers|kvm_capabilities)"\s*:')
_LIBCPUID_DELIMITER = "-" * 80


def detect_format(text: str) -> str:
    """Return the format of a CPUID source text (one of ``FORMATS``), or ``"unknown"``."""
    head = text.lstrip("\ufeff \t\r\n")
    if head.startswith(("{", "[")):
        if _OWN_SCHEMA.search(text):
            return "xstate-check-json"
        if _FINGERPRINT.search(text):
            return "firecracker-fingerprint"
        if _TEMPLATE.search(text):
            return "firecracker-dump"
        return "xstate-check-json"  # its reader says what is missing, with a line
    match = _SNIFF.search(text)
    if match is None:
        return "unknown"
    if match.lastgroup == "aida":
        if text.startswith(_LIBCPUID_DELIMITER) or "\n" + _LIBCPUID_DELIMITER in text:
            return "libcpuid"
        return "aida64"
    if match.lastgroup == "native":
        return "libcpuid"
    return "cpuid-raw"


def read_cpuid_text(text: str, path: str, *, cpu: int | None = None) -> CpuidSet:
    """Detect the format of ``text`` (read from ``path``) and read it into a ``CpuidSet``."""
    if not text.lstrip("\ufeff \t\r\n").startswith(("{", "[")):
        from xstate_check.sources.dumps import check_lines

        check_lines(text, path)  # before the format is sniffed line by line
    fmt = detect_format(text)
    if fmt == "unknown":
        raise _unknown_format(text, path)
    if fmt in ("aida64", "libcpuid", "cpuid-raw"):
        from xstate_check.sources import dumps

        if fmt == "aida64":
            return dumps.read_aida64(text, path, cpu=cpu)
        if fmt == "libcpuid":
            return dumps.read_libcpuid(text, path, cpu=cpu)
        return dumps.read_cpuid_raw(text, path, cpu=cpu)
    if cpu is not None:
        raise InputError(
            Location(path),
            f"expected no CPU selection: a {fmt} file holds the CPUID table of one CPU",
        )
    if fmt == "xstate-check-json":
        from xstate_check.sources.ownjson import read_cpuid_json

        return read_cpuid_json(text, path)
    reader = _optional(
        "xstate_check.sources.firecracker", "read_firecracker",
        Location(path), f"expected a format this build reads; {fmt} files are not supported",
    )
    return cast("Callable[[str, str], CpuidSet]", reader)(text, path)


_NOT_BLANK = re.compile(r"\S")


def _unknown_format(text: str, path: str) -> InputError:
    """Return the error for a text of no known format, pointing at its first line."""
    first = _NOT_BLANK.search(text)
    if first is None:
        return InputError(Location(path, 1), _EXPECTED_DUMP + "; found an empty file")
    line_start = text.rfind("\n", 0, first.start()) + 1
    line_end = text.find("\n", first.start())
    line = text[line_start:line_end if line_end >= 0 else len(text)].rstrip("\r")
    start = first.start() - line_start
    snippet, span = clip_snippet(line, start, len(line.rstrip()))
    number = text.count("\n", 0, line_start) + 1
    return InputError(Location(path, number, start + 1), _EXPECTED_DUMP, snippet=snippet, span=span)


def _optional(module: str, name: str, location: Location, expected: str) -> object:
    """Return ``module.name``, importing lazily; a missing module is an InputError."""
    try:
        found = importlib.import_module(module)
    except ModuleNotFoundError as error:
        if error.name != module:
            raise
        raise InputError(location, expected) from None
    return getattr(found, name)


def load_cpuid(source: str | os.PathLike[str], *, cpu: int | None = None) -> CpuidSet:
    """Return the CPUID table of ``source``: a dump file, ``profile:NAME``, ``host`` or ``kvm``.

    A ``Path`` is always a file; of strings, ``host``, ``kvm`` and ``profile:NAME`` are the
    keywords (write ``./host`` for a file named host). ``cpu`` selects a logical CPU of a
    dump that holds several; by default the first one is read. Other argument types are a
    TypeError.
    """
    check_argument("load_cpuid", "source", source, (str, os.PathLike),
                   "a file path (str or Path), 'host', 'kvm' or 'profile:NAME'")
    if not isinstance(source, str):
        source = Path(os.fspath(source))
        check_argument("load_cpuid", "source", str(source), str, "a text path")
    if cpu is not None:
        check_argument("load_cpuid", "cpu", cpu, int, "an int (a logical CPU number) or None")
    if isinstance(source, str) and (
        source in ("host", "kvm") or source.startswith(PROFILE_PREFIX)
    ):
        if cpu is not None:
            raise InputError(
                Location(source),
                "expected no CPU selection: cpu applies to dump files of several CPUs",
            )
        if source.startswith(PROFILE_PREFIX):
            name = source[len(PROFILE_PREFIX):]
            unknown = f"expected the name of a bundled profile; unknown profile {name!r}"
            if not name:
                raise InputError(Location(source), unknown)
            load_profile = _optional(
                "xstate_check.sources.profiles", "load_profile", Location(source), unknown
            )
            return cast("Callable[[str], CpuidSet]", load_profile)(name)
        probe = _optional(
            "xstate_check.sources.host", f"{source}_cpuid", Location(source),
            f"expected a CPUID source this build supports; reading {source} is not available",
        )
        return cast("Callable[[], CpuidSet]", probe)()
    path = str(source)
    text = read_text(path)
    if not text.strip():
        raise InputError(Location(path, 1), _EXPECTED_DUMP + "; found an empty file")
    return read_cpuid_text(text, path, cpu=cpu)


# --------------------------------------------------------------------------- reading files

_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def read_text(path: str | Path, *, byte_order_mark: bool = True) -> str:
    """Return the text of a regular file of at most ``MAX_INPUT_BYTES``, decoded as UTF-8.

    A UTF-8 byte-order mark is dropped and UTF-16 with a byte-order mark is accepted, unless
    ``byte_order_mark`` is False: then a file that starts with one is refused. Never reads
    more than the limit plus one byte, and refuses directories, FIFOs and devices.
    """
    name = str(path)
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(name, flags)
    except FileNotFoundError:
        raise InputError(Location(name), "expected an existing file; no such file") from None
    except PermissionError:
        raise InputError(Location(name), "expected a readable file; permission denied") from None
    except IsADirectoryError:
        raise InputError(Location(name), "expected a file; found a directory") from None
    except OSError as error:
        raise InputError(
            Location(name), f"expected a readable file; {error.strerror or error}"
        ) from None
    try:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            kind = next(
                (what for test, what in _FILE_KINDS if test(status.st_mode)), "not a regular file"
            )
            raise InputError(Location(name), f"expected a regular file; found {kind}")
        if status.st_size > MAX_INPUT_BYTES:
            raise _too_large(name)
        chunks: list[bytes] = []
        remaining = MAX_INPUT_BYTES + 1
        while remaining > 0:
            chunk = os.read(fd, min(remaining, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
    except OSError as error:
        raise InputError(
            Location(name), f"expected a readable file; {error.strerror or error}"
        ) from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > MAX_INPUT_BYTES:
        raise _too_large(name)
    if not byte_order_mark and data.startswith((b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")):
        encoding = "UTF-8" if data.startswith(b"\xef") else "UTF-16"
        raise InputError(
            Location(name, 1, 1),
            f"expected UTF-8 JSON without a byte-order mark, found the {encoding} byte-order "
            "mark (Firecracker: expected value at line 1 column 1)",
        )
    return decode_text(data, name)


def _too_large(path: str) -> InputError:
    """Return the error for a file over the size limit."""
    return InputError(
        Location(path),
        f"expected a file of at most {MAX_INPUT_BYTES} bytes (16 MiB); this one is larger",
    )


def _line_and_column(data: bytes, offset: int) -> tuple[int, int]:
    """Return the 1-based line and column (in characters) of byte ``offset``."""
    line_start = data.rfind(b"\n", 0, offset) + 1
    column = len(data[line_start:offset].decode("utf-8", "replace")) + 1
    return data.count(b"\n", 0, offset) + 1, column


def decode_text(data: bytes, path: str) -> str:
    """Decode file bytes as text: UTF-8 (BOM dropped) or UTF-16 with a BOM; no NUL bytes."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            text = data.decode("utf-16")
        except UnicodeDecodeError as error:
            raise InputError(
                Location(path), f"expected UTF-16 text after its byte-order mark; {error.reason}"
            ) from None
        nul = text.find("\0")
        if nul >= 0:
            line = text.count("\n", 0, nul) + 1
            column = nul - text.rfind("\n", 0, nul)
            raise InputError(
                Location(path, line, column), "expected text; found binary data (a NUL character)"
            )
        return text
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    nul = data.find(b"\0")
    if nul >= 0:
        line, column = _line_and_column(data, nul)
        raise InputError(
            Location(path, line, column), "expected text; found binary data (a NUL byte)"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line, column = _line_and_column(data, error.start)
        raise InputError(
            Location(path, line, column),
            f"expected UTF-8 text; byte 0x{data[error.start]:02x} is not valid UTF-8 here",
        ) from None
