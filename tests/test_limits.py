"""Limits: huge, endless and special files are refused, or read within bounded memory.

Every reader of a file (CPUID sources, templates, rule files) and the command line must
refuse a file over the documented limit (16 MiB) before reading it, refuse what is not a
regular file (a directory, /dev/zero, a FIFO nobody writes to) without blocking, and read a
file just under the limit with memory bounded by a small multiple of its size. Each case
runs in a child process, so that a reader that blocks or balloons cannot take the test run
with it; the child's time limit is only a guard against a hang, never the assertion.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from xstate_check.errors import InputError
from xstate_check.limits import MAX_INPUT_BYTES
from xstate_check.sources.load import load_cpuid

REPO = Path(__file__).resolve().parents[1]
MIB = 1 << 20
#: A child that has not finished by then is stuck: a hang guard, not a speed target.
HANG_GUARD = 120
#: Refusing a FIFO takes no reading at all; a child still waiting after this is blocked.
FIFO_GUARD = 20
#: Peak resident memory a child may reach reading a file at the size limit: the
#: interpreter and the package (about 40 MiB) plus a dozen copies of the input.
MEMORY_BOUND = 40 * MIB + 12 * MAX_INPUT_BYTES

# Each reader, called on a path in a child process limited to 2 GiB of address space; it
# prints the outcome as one JSON line:
# {"error": type name, "expected": InputError.expected, "maxrss": peak resident KiB}.
READERS = {
    "load_cpuid": "from xstate_check.sources.load import load_cpuid as read",
    "load_template": "from xstate_check.template import load_template as read",
    "read_firecracker": "from xstate_check.sources.firecracker import read_firecracker\n"
                        "from xstate_check.textfile import read_text\n"
                        "def read(path): return read_firecracker(read_text(path), path)",
    "load_catalogue": "from xstate_check.engine import load_catalogue\n"
                      "def read(path): return load_catalogue([path])",
}
CHILD = textwrap.dedent(
    """
    import json, resource, sys
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))  # a runaway fails, not the machine
    {import_line}
    outcome = {{"error": None, "expected": None}}
    try:
        read(sys.argv[1])
    except Exception as error:  # reported to the parent, which judges it
        outcome["error"] = type(error).__name__
        outcome["expected"] = getattr(error, "expected", str(error))
    # VmHWM, not ru_maxrss: Linux carries the forking parent's peak into ru_maxrss.
    with open("/proc/self/status") as status:
        peak = next(line for line in status if line.startswith("VmHWM:"))
    outcome["maxrss"] = int(peak.split()[1])
    print(json.dumps(outcome))
    """
)


def _in_child(reader: str, path: Path | str, guard: int = HANG_GUARD) -> dict[str, object]:
    """Run one reader on ``path`` in a fresh interpreter and return its outcome."""
    code = CHILD.format(import_line=READERS[reader])
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    try:
        done = subprocess.run(
            [sys.executable, "-c", code, str(path)], capture_output=True, text=True,
            timeout=guard, env=env, check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{reader}({path}) blocked: no answer after {guard} s")
    assert done.returncode == 0, done.stderr
    outcome: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return outcome


@pytest.fixture
def sparse_gigabyte(tmp_path: Path) -> Path:
    """Return a 1 GiB sparse file (made with truncate: no disk blocks are written)."""
    path = tmp_path / "huge.txt"
    subprocess.run(["truncate", "-s", "1G", str(path)], check=True)
    return path


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    """Return a FIFO that nobody writes to (opening it for reading would block)."""
    path = tmp_path / "fifo"
    os.mkfifo(path)
    return path


def test_documented_limits_agree() -> None:
    """The bounded reader and the README state the same 16 MiB limit."""
    assert MAX_INPUT_BYTES == 16 * MIB
    readme = " ".join((REPO / "README.md").read_text(encoding="utf-8").split())
    assert "16 MiB" in readme


@pytest.mark.parametrize("reader", sorted(READERS))
def test_a_1gb_file_is_refused_without_being_read(reader: str, sparse_gigabyte: Path) -> None:
    """A 1 GiB file is an InputError naming the limit; it is refused before being read."""
    outcome = _in_child(reader, sparse_gigabyte)
    assert outcome["error"] == "InputError"
    assert "16 MiB" in str(outcome["expected"])
    # Far less than the file: at most the limit was read, if anything.
    assert int(str(outcome["maxrss"])) * 1024 < MEMORY_BOUND


@pytest.mark.parametrize("reader", sorted(READERS))
def test_dev_zero_is_refused(reader: str) -> None:
    """/dev/zero (endless) is an InputError, read at most up to the limit."""
    outcome = _in_child(reader, "/dev/zero")
    assert outcome["error"] == "InputError", outcome
    assert int(str(outcome["maxrss"])) * 1024 < MEMORY_BOUND


@pytest.mark.parametrize("reader", sorted(READERS))
def test_a_fifo_without_writer_is_refused_without_blocking(reader: str, fifo: Path) -> None:
    """A FIFO nobody writes to is refused at once; opening it must not wait for a writer."""
    outcome = _in_child(reader, fifo, FIFO_GUARD)
    assert outcome["error"] == "InputError", outcome


@pytest.mark.parametrize("reader", sorted(READERS))
def test_a_directory_is_refused(reader: str, tmp_path: Path) -> None:
    """A directory is an InputError, not an IsADirectoryError."""
    outcome = _in_child(reader, tmp_path)
    assert outcome["error"] == "InputError", outcome


@pytest.mark.parametrize("reader", sorted(READERS))
def test_a_missing_file_is_refused(reader: str, tmp_path: Path) -> None:
    """A path that does not exist is an InputError."""
    outcome = _in_child(reader, tmp_path / "absent.json")
    assert outcome["error"] == "InputError", outcome


def test_one_byte_over_the_limit_is_refused(tmp_path: Path) -> None:
    """MAX_INPUT_BYTES + 1 bytes: refused, with the limit in the message."""
    path = tmp_path / "over.txt"
    with path.open("wb") as handle:
        handle.truncate(MAX_INPUT_BYTES + 1)
    with pytest.raises(InputError) as caught:
        load_cpuid(path)
    assert caught.value.location.path == str(path)
    assert "16 MiB" in caught.value.expected


def _dump_at_the_limit(data_dir: Path, path: Path) -> None:
    """Write a real AIDA64 dump repeated up to just under the limit."""
    seed = (data_dir / "cpuid-dumps/instlatx64/AuthenticAMD0830F10_K17_Rome_CPUID.txt").read_bytes()
    copies = MAX_INPUT_BYTES // len(seed)
    path.write_bytes(seed * copies)
    assert MAX_INPUT_BYTES - len(seed) < path.stat().st_size <= MAX_INPUT_BYTES


def test_a_dump_at_the_limit_is_read_in_bounded_memory(data_dir: Path, tmp_path: Path) -> None:
    """A real dump repeated to nearly 16 MiB is read with memory bounded by the limit."""
    path = tmp_path / "big.txt"
    _dump_at_the_limit(data_dir, path)
    outcome = _in_child("load_cpuid", path)
    # The repeats are further logical CPUs of the same dump: the first one is read.
    assert outcome["error"] is None, outcome
    assert int(str(outcome["maxrss"])) * 1024 < MEMORY_BOUND


@pytest.mark.parametrize(
    ("name", "line"),
    [
        ("one-line.txt", b"CPUID 0000000D: " + b"0" * (MAX_INPUT_BYTES - 32)),
        ("brackets.txt", b"CPUID 00000000: 00000000-00000000-00000000-00000000 "
         + b"[" * (MAX_INPUT_BYTES - 64)),
        ("spaces.txt", b"   0x" + b" " * (MAX_INPUT_BYTES - 16)),
        ("nested.json", b"[" * (MAX_INPUT_BYTES - 16)),
        ("string.json", b'{"leaf": "' + b"x" * (MAX_INPUT_BYTES - 32) + b'"}'),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
@pytest.mark.parametrize("reader", sorted(READERS))
def test_pathological_files_at_the_limit_end_in_bounded_memory(
    reader: str, name: str, line: bytes, tmp_path: Path
) -> None:
    """One 16 MiB line, 16 MiB of brackets or spaces: an answer, in bounded memory."""
    path = tmp_path / name
    path.write_bytes(line)
    outcome = _in_child(reader, path)
    assert outcome["error"] in (None, "InputError"), outcome
    assert int(str(outcome["maxrss"])) * 1024 < MEMORY_BOUND


# ----------------------------------------------------------------------------- the CLI


def _cli(*argv: str, guard: int = HANG_GUARD) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    try:
        return subprocess.run(
            [sys.executable, "-m", "xstate_check", *argv], capture_output=True, text=True,
            timeout=guard, env=env, check=False, stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"xstate-check {' '.join(argv)} blocked: no answer after {guard} s")


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "directory", "sparse-gigabyte"])
@pytest.mark.parametrize("role", ["source", "template"])
def test_cli_refuses_special_files_with_exit_2(
    role: str, kind: str, data_dir: Path, tmp_path: Path
) -> None:
    """`check FILE` and `check SRC --template FILE` on special files: exit 2, one message."""
    if kind == "fifo":
        special = tmp_path / "fifo"
        os.mkfifo(special)
    elif kind == "dev-zero":
        special = Path("/dev/zero")
    elif kind == "directory":
        special = tmp_path
    else:
        special = tmp_path / "huge.json"
        subprocess.run(["truncate", "-s", "1G", str(special)], check=True)
    source = data_dir / "cpuid-dumps/instlatx64/GenuineIntel00806F8_SapphireRapids_05_CPUID.txt"
    argv = ["check", str(special)]
    if role == "template":
        argv = ["check", str(source), "-t", str(special)]
    done = _cli(*argv, guard=FIFO_GUARD if kind == "fifo" else HANG_GUARD)
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert done.stderr.startswith(f"xstate-check: {special}")
    assert "Traceback" not in done.stderr
