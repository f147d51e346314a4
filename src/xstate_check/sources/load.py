"""One entry point for every CPUID source: a dump file, ``profile:NAME``, ``host``, ``kvm``.

A file's format is detected from its content, never its name. Files are read by the one
bounded reader (``xstate_check.textfile``). Every problem is an ``InputError`` naming the
path (and line and column where there is one).
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import cast

from xstate_check.cpuid import PROFILE_PREFIX, CpuidSet
from xstate_check.errors import InputError, Location, check_argument, error_at
from xstate_check.textfile import decode_text, read_text

__all__ = [
    "FORMATS",
    "decode_text",
    "detect_format",
    "load_cpuid",
    "read_cpuid_text",
    "read_text",
]

#: What ``detect_format`` can answer, besides ``"unknown"``.
FORMATS = (
    "aida64",
    "libcpuid",
    "cpuid-raw",
    "xstate-check-json",
    "firecracker-fingerprint",
    "firecracker-dump",
)

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
    line_end = text.find("\n", first.start())
    line_end = len(text) if line_end < 0 else line_end
    return error_at(path, text, first.start(), _EXPECTED_DUMP,
                    end=len(text[:line_end].rstrip()))


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
