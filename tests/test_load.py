"""The source loader: format detection by content, keyword sources, and files it refuses."""

from __future__ import annotations

import importlib.util
import os
import random
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xstate_check import textfile
from xstate_check.cpuid import CpuidSet, Registers, Role
from xstate_check.errors import InputError
from xstate_check.limits import MAX_INPUT_BYTES
from xstate_check.sources.load import (
    FORMATS,
    detect_format,
    load_cpuid,
    read_cpuid_text,
    read_text,
)
from xstate_check.sources.ownjson import read_cpuid_json, to_json_text

SPR_05 = "cpuid-dumps/instlatx64/GenuineIntel00806F8_SapphireRapids_05_CPUID.txt"
EXPECTED_DUMP = (
    "expected a CPUID dump: AIDA64/InstLatx64 text, a libcpuid .test file, `cpuid -r` output, "
    "xstate-check CPUID JSON, a Firecracker fingerprint or a cpu-template-helper template dump"
)
X86_LINUX = os.uname().machine == "x86_64" and os.uname().sysname == "Linux"
HAS_FIRECRACKER = importlib.util.find_spec("xstate_check.sources.firecracker") is not None


def _kvm_usable() -> bool:
    try:
        os.close(os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC))
    except OSError:
        return False
    return X86_LINUX


@pytest.mark.shared
@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        (SPR_05, "aida64"),
        ("cpuid-dumps/instlatx64/GenuineIntel00306F2_HaswellEP_02_CPUID.txt", "aida64"),
        ("cpuid-dumps/libcpuid/intel-xeon-platinum-8280-cpu.test", "libcpuid"),
        ("cpuid-dumps/libcpuid/intel-core-i3-4130-cpu.test", "libcpuid"),
        ("cpuid-dumps/libcpuid/amd-ryzen-7-8845hs-with-radeon-780m-graphics.test", "libcpuid"),
        ("cpuid-dumps/local/host-amd-epyc-raw.txt", "cpuid-raw"),
        ("cpuid-dumps/SOURCES.md", "unknown"),
        ("firecracker/fingerprint_INTEL_SAPPHIRE_RAPIDS_6.1host.json", "firecracker-fingerprint"),
        ("firecracker/T2.json", "firecracker-dump"),
    ],
)
def test_detect_format_of_real_files(data_dir: Path, name: str, fmt: str) -> None:
    """Each real file is recognised from its content."""
    assert detect_format((data_dir / name).read_text()) == fmt
    assert fmt in (*FORMATS, "unknown")


@pytest.mark.shared
def test_detection_ignores_the_file_name(data_dir: Path, tmp_path: Path) -> None:
    """An AIDA dump named .json reads as AIDA; own JSON named .txt reads as JSON."""
    source = data_dir / SPR_05
    misnamed = tmp_path / "dump.json"
    misnamed.write_bytes(source.read_bytes())
    aida = load_cpuid(misnamed)
    assert aida.meta["format"] == "aida64"
    as_text = tmp_path / "table.txt"
    as_text.write_text(to_json_text(aida))
    assert detect_format(as_text.read_text()) == "xstate-check-json"
    assert load_cpuid(as_text).rows() == aida.rows()


@pytest.mark.shared
def test_fingerprint_through_loader(data_dir: Path) -> None:
    """A fingerprint loads through load_cpuid: SPR on a 6.1 host has AMX (FORMATS.md §4)."""
    if not HAS_FIRECRACKER:
        pytest.skip("xstate_check.sources.firecracker is not there yet")
    cpuid = load_cpuid(data_dir / "firecracker/fingerprint_INTEL_SAPPHIRE_RAPIDS_6.1host.json")
    assert cpuid.get(7, 0).edx == 0xAFC14410
    assert cpuid.get(0xD, 0)[:3] == (0x602E7, 0x240, 0x2B00)
    assert cpuid.get(0xD, 0x12) == Registers(0x2000, 0xB00, 0x6, 0)


@pytest.mark.shared
def test_cpu_selection_refused_for_single_table_formats(data_dir: Path, tmp_path: Path) -> None:
    """cpu= on own JSON (one table) is an error naming the file."""
    path = tmp_path / "one.json"
    path.write_text(to_json_text(load_cpuid(data_dir / SPR_05)))
    with pytest.raises(InputError) as caught:
        load_cpuid(path, cpu=1)
    assert str(caught.value) == (
        f"{path}: expected no CPU selection: a xstate-check-json file holds the CPUID table "
        "of one CPU"
    )


def test_missing_file(tmp_path: Path) -> None:
    """A missing file: the path and what was expected."""
    path = tmp_path / "nope.txt"
    with pytest.raises(InputError) as caught:
        load_cpuid(path)
    assert str(caught.value) == f"{path}: expected an existing file; no such file"


def test_directory(tmp_path: Path) -> None:
    """A directory is refused, naming it."""
    with pytest.raises(InputError) as caught:
        load_cpuid(tmp_path)
    assert str(caught.value) == f"{tmp_path}: expected a regular file; found a directory"


def test_empty_file(tmp_path: Path) -> None:
    """An empty (or blank) file: line 1, and what a dump would have been."""
    for content in ("", "\n  \n"):
        path = tmp_path / "empty.txt"
        path.write_text(content)
        with pytest.raises(InputError) as caught:
            load_cpuid(path)
        assert str(caught.value) == f"{path}:1: {EXPECTED_DUMP}; found an empty file"


def test_binary_garbage(tmp_path: Path) -> None:
    """Random bytes, and bytes that are not UTF-8, are refused at their line and column."""
    path = tmp_path / "garbage.bin"
    data = b"\n" + random.Random(7).randbytes(4096)
    path.write_bytes(data)
    with pytest.raises(InputError) as caught:
        load_cpuid(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:")
    assert "expected text; found binary data (a NUL byte)" in message or "expected UTF-8" in message
    path.write_bytes(b"CPUID 00000000: 0000\xff")
    with pytest.raises(InputError) as caught:
        load_cpuid(path)
    assert str(caught.value) == (
        f"{path}:1:21: expected UTF-8 text; byte 0xff is not valid UTF-8 here"
    )
    path.write_bytes(b"line one\nline\0two")
    with pytest.raises(InputError) as caught:
        load_cpuid(path)
    assert str(caught.value) == f"{path}:2:5: expected text; found binary data (a NUL byte)"


def test_text_of_no_known_format(tmp_path: Path) -> None:
    """Text that is no dump points at its first non-blank line."""
    path = tmp_path / "notes.txt"
    path.write_text("\n  hello world\n")
    with pytest.raises(InputError) as caught:
        load_cpuid(path)
    assert str(caught.value) == (
        f"{path}:2:3: {EXPECTED_DUMP}\n      hello world\n      ~~~~~~~~~~^"
    )


def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    """A FIFO with no writer is refused at once (opened non-blocking), not waited on."""
    path = tmp_path / "pipe"
    os.mkfifo(path)
    with pytest.raises(InputError) as caught:
        load_cpuid(path)
    assert str(caught.value) == f"{path}: expected a regular file; found a FIFO"


def test_character_device_is_refused() -> None:
    """/dev/zero is refused before a byte is read."""
    with pytest.raises(InputError) as caught:
        load_cpuid("/dev/zero")
    assert str(caught.value) == "/dev/zero: expected a regular file; found a character device"


def test_file_over_the_limit(tmp_path: Path) -> None:
    """A (sparse) file of the limit plus one byte is refused; one of the limit is read."""
    path = tmp_path / "huge.txt"
    with path.open("wb") as handle:
        handle.truncate(MAX_INPUT_BYTES + 1)
    with pytest.raises(InputError) as caught:
        read_text(path)
    assert str(caught.value) == (
        f"{path}: expected a file of at most 16777216 bytes (16 MiB); this one is larger"
    )


def test_read_stops_at_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """A file whose size stat cannot tell (procfs reports 0) is still cut at limit + 1 bytes."""
    monkeypatch.setattr(textfile, "MAX_INPUT_BYTES", 64)
    assert os.stat("/proc/self/status").st_size == 0
    with pytest.raises(InputError, match="expected a file of at most 64 bytes"):
        read_text("/proc/self/status")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file(tmp_path: Path) -> None:
    """A file without read permission is refused, naming it."""
    path = tmp_path / "secret.txt"
    path.write_text("CPU:\n")
    path.chmod(0)
    with pytest.raises(InputError) as caught:
        load_cpuid(path)
    assert str(caught.value) == f"{path}: expected a readable file; permission denied"


def test_keywords_and_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Path is always a file; the string "./host" too; cpu= with a keyword is an error."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match=r"^host: expected an existing file; no such file$"):
        load_cpuid(Path("host"))
    with pytest.raises(InputError, match=r"^\./host: expected an existing file"):
        load_cpuid("./host")
    for keyword in ("host", "kvm", "profile:x"):
        with pytest.raises(InputError) as caught:
            load_cpuid(keyword, cpu=0)
        assert str(caught.value) == (
            f"{keyword}: expected no CPU selection: cpu applies to dump files of several CPUs"
        )


def test_unknown_profile() -> None:
    """profile:NAME of no bundled profile, and an empty name, are InputErrors naming the source."""
    with pytest.raises(InputError) as caught:
        load_cpuid("profile:")
    assert str(caught.value) == (
        "profile:: expected the name of a bundled profile; unknown profile ''"
    )
    with pytest.raises(InputError, match=r"^profile:no-such-cpu: expected"):
        load_cpuid("profile:no-such-cpu")


@pytest.mark.skipif(not X86_LINUX, reason="needs Linux on x86-64")
def test_host_keyword_reads_this_cpu() -> None:
    """"host" gives this CPU's table: leaf 0 and 0xD.0 as the CPUID instruction returns them."""
    import cpuid_native

    cpuid = load_cpuid("host")
    for leaf in (0, 0xD):
        assert cpuid.get(leaf, 0) == Registers(*cpuid_native.get_cpuid_count(leaf, 0)[1:])
    assert cpuid.role == "cpu"


@pytest.mark.kvm
@pytest.mark.skipif(not _kvm_usable(), reason="needs a usable /dev/kvm")
def test_kvm_keyword_reads_supported_cpuid() -> None:
    """"kvm" gives KVM_GET_SUPPORTED_CPUID: a table with leaf 0 and 0xD."""
    cpuid = load_cpuid("kvm")
    assert cpuid.has(0, 0)
    assert cpuid.has(0xD, 0)
    assert cpuid.get(0xD, 0).eax & 0x3 == 0x3


def test_read_cpuid_text_of_memory() -> None:
    """read_cpuid_text reads a string as a file would be, naming the given path in errors."""
    text = "CPU:\n   0x0000000d 0x01: eax=0x0000000f ebx=0x000009a8 ecx=0x00001800 edx=0x00000000\n"
    cpuid = read_cpuid_text(text, "<stdin>")
    assert cpuid.get(0xD, 1).ebx == 0x9A8
    with pytest.raises(InputError, match=r"^<stdin>:2:"):
        read_cpuid_text(text.replace("0x000009a8", "0x9a8"), "<stdin>")


FRAGMENTS = [
    "CPUID ", "0000000D", "00000000", ": ", "-", " [SL 01]", " [SL", "]", "\n", "\r\n",
    "------[ CPUID Registers / Logical CPU #1 ]------", "CPU#001 AffMask: 0x2", "CPU:", "CPU 1:",
    "   0x0000000d 0x01: eax=0x0000000f ebx=0x000009a8 ecx=0x00001800 edx=0x00000000",
    "basic_cpuid[0]=0000000d 756e6547 6c65746e 49656e69", "ext_cpuid[1]=", "-" * 80,
    '{"schema": "xstate-check-cpuid/1", "entries": [', '{"leaf": "0xd", "subleaf": "0x0"',
    ', "eax": "0x1", "ebx": "0x0", "ecx": "0x0", "edx": "0x0"}', "]}", '"', "{", "[", "G", " ",
]


@given(
    pieces=st.lists(st.sampled_from(FRAGMENTS), max_size=40),
    cpu=st.none() | st.integers(min_value=-1, max_value=3),
)
def test_any_text_is_read_or_refused_with_input_error(pieces: list[str], cpu: int | None) -> None:
    """Text made of format fragments either reads or raises InputError naming the path."""
    text = "".join(pieces)
    try:
        cpuid = read_cpuid_text(text, "fuzz.txt", cpu=cpu)
    except InputError as error:
        assert str(error).startswith("fuzz.txt")
    else:
        assert cpuid.meta["format"] in FORMATS


@given(
    rows=st.dictionaries(
        st.tuples(st.integers(0, 0xFFFFFFFF), st.integers(0, 0xFFFFFFFF)),
        st.tuples(*(st.integers(0, 0xFFFFFFFF) for _ in range(4))),
        max_size=20,
    ),
    flag_keys=st.sets(st.integers(0, 19), max_size=5),
    meta=st.dictionaries(st.text(max_size=8).filter(lambda key: key != "role"),
                         st.text(max_size=12), max_size=4),
    role=st.sampled_from(["cpu", "guest"]),
    source=st.text(max_size=20),
)
def test_own_json_round_trips_any_table(
    rows: dict[tuple[int, int], tuple[int, int, int, int]],
    flag_keys: set[int],
    meta: dict[str, str],
    role: Role,
    source: str,
) -> None:
    """Any table, flags, meta, role and source survive to_json_text -> read_cpuid_json."""
    keys = sorted(rows)
    flags = {keys[i]: i for i in flag_keys if i < len(keys)}
    cpuid = CpuidSet({key: Registers(*regs) for key, regs in rows.items()}, source,
                     flags=flags, meta=meta, role=role)
    back = read_cpuid_json(to_json_text(cpuid), "any.json")
    assert back.rows() == cpuid.rows()
    assert dict(back.flags) == flags
    assert back.source == source
    assert dict(back.meta) == {"format": "xstate-check-json", **meta}
    assert back.role == role


def test_long_first_line_of_unknown_text_gives_a_short_message(tmp_path: Path) -> None:
    """Text of no known format whose first line is 1 MiB: the line is cut in the message."""
    path = tmp_path / "long.txt"
    path.write_text("  " + "z" * (1 << 20) + "\n")
    with pytest.raises(InputError) as caught:
        load_cpuid(path)
    first, snippet, marker = str(caught.value).splitlines()
    assert first == f"{path}:1:3: {EXPECTED_DUMP}"
    assert snippet == "    " + "  " + "z" * 118 + "…"
    assert marker == "    " + "  " + "~" * 117 + "^"


def test_long_key_of_own_json_gives_a_short_message() -> None:
    """An unknown own-JSON key of 1 MiB is quoted cut short, and so is its line."""
    text = '{"schema": "xstate-check-cpuid/1", "' + "k" * (1 << 20) + '": 1, "entries": []}'
    with pytest.raises(InputError) as caught:
        read_cpuid_text(text, "own.json")
    message = str(caught.value)
    assert message.startswith('own.json:1:36: expected one of the keys "schema", "source", "role"')
    assert len(message) < 500


# Lines whose numbers are past what their field holds (found by fuzz/run.py).
HUGE_NUMBERS = [
    "------[ CPUID Registers / Logical CPU #" + "9" * 5000 + " ]------",
    "------[ CPUID Registers / Logical CPU #99999999999 ]------",
    "CPU#" + "9" * 4400 + " AffMask: 0x2", "CPU 4294967296:", "CPU " + "9" * 4301 + ":",
    "_____ Logical CPU #" + "9" * 5000 + " _____",
    "intel_fn4[18446744073709551615]=00000001 00000002 00000003 00000004",
    "intel_fn4[4294967295]=00000001 00000002 00000003 00000004",
    "basic_cpuid[" + "9" * 5000 + "]=00000001 00000002 00000003 00000004",
    "ext_cpuid[2147483647]=00000001 00000002 00000003 00000004",
    "CPUID 0000000D: 00000007-00000340-00000340-00000000 [SL FFFFFFFF]",
    "   0xffffffff 0xffffffff: eax=0x0000000f ebx=0x000009a8 ecx=0x00001800 edx=0x00000000",
]


@given(
    pieces=st.lists(st.sampled_from(FRAGMENTS + HUGE_NUMBERS), max_size=30),
    cpu=st.none() | st.sampled_from([0, 1, 5, 4294967295]),
)
def test_accepted_dumps_hold_32_bit_values_only(pieces: list[str], cpu: int | None) -> None:
    """Text with huge numbers reads to 32-bit leaves, subleaves and registers, or is refused."""
    text = "\n".join(pieces)
    try:
        cpuid = read_cpuid_text(text, "fuzz.txt", cpu=cpu)
    except InputError as error:
        assert str(error).startswith("fuzz.txt")
        assert len(str(error)) < 1000
        return
    for row in cpuid.rows():
        assert all(0 <= value <= 0xFFFF_FFFF for value in row), row
    again = read_cpuid_json(to_json_text(cpuid), "again.json")
    assert dict(again.entries) == dict(cpuid.entries)
