"""The one bounded text reader: every input file is read here.

Files are read with a size limit (``MAX_INPUT_BYTES``) and must be regular files, so that a
FIFO, ``/dev/zero`` or a huge file cannot hang or exhaust the checker. Text is UTF-8 (a
byte-order mark dropped) or UTF-16 with a byte-order mark, without NUL. Every problem is an
``InputError`` naming the path (and line and column where there is one).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from xstate_check import limits
from xstate_check.errors import InputError, Location, line_column

__all__ = ["MAX_INPUT_BYTES", "decode_text", "read_text"]

#: The largest input file read, in bytes (16 MiB; the largest real dump is about 1.4 MiB).
MAX_INPUT_BYTES = limits.MAX_INPUT_BYTES

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


def _byte_position(data: bytes, offset: int) -> tuple[int, int]:
    """Return the 1-based line and column (in characters) of byte ``offset``."""
    before = data[:offset].decode("utf-8", "replace")
    return line_column(before, len(before))


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
            line, column = line_column(text, nul)
            raise InputError(
                Location(path, line, column), "expected text; found binary data (a NUL character)"
            )
        return text
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    nul = data.find(b"\0")
    if nul >= 0:
        line, column = _byte_position(data, nul)
        raise InputError(
            Location(path, line, column), "expected text; found binary data (a NUL byte)"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line, column = _byte_position(data, error.start)
        raise InputError(
            Location(path, line, column),
            f"expected UTF-8 text; byte 0x{data[error.start]:02x} is not valid UTF-8 here",
        ) from None
