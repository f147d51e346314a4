"""Property and fuzz tests of every reader: a result or an InputError, never anything else.

The fuzz part runs the campaign of ``fuzz/run.py`` in-process on a few thousand mutated real
inputs per reader (seed 0, so CI is reproducible); the property part has hypothesis write
tables and templates in each format and checks that reading them gives back exactly what
was written (a reader must not return a partial answer as whole), and throw arbitrary text
at each reader. The full campaign (100,000 inputs per reader) is ``python fuzz/run.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from fuzz.mutate import Mutator  # noqa: E402
from fuzz.readers import READERS, Reader, render_cpuid_raw  # noqa: E402
from fuzz.run import fuzz, mutator_for  # noqa: E402

from xstate_check.cpuid import CpuidSet  # noqa: E402
from xstate_check.errors import InputError  # noqa: E402
from xstate_check.sources.load import read_cpuid_text  # noqa: E402
from xstate_check.sources.ownjson import read_cpuid_json, to_json_text  # noqa: E402
from xstate_check.template import parse_template  # noqa: E402

#: Inputs per reader in CI (the fuzz command runs 100,000): a few thousand each.
CI_INPUTS = int(os.environ.get("XSTATE_CHECK_FUZZ_INPUTS", "2000"))
PROPERTY = settings(
    deadline=None, derandomize=True, max_examples=150,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.mark.parametrize("name", sorted(READERS))
def test_mutated_real_inputs_give_a_result_or_an_input_error(
    name: str, data_dir: Path, tmp_path: Path
) -> None:
    """A few thousand mutated real files per reader: no uncaught exception, lie or hang."""
    reader = READERS[name]
    stats = fuzz(reader, CI_INPUTS, seed=0, data_dir=data_dir, out_dir=tmp_path,
                 time_limit=60.0)
    assert stats.tried == CI_INPUTS
    assert stats.failed == 0, stats.describe()
    # The campaign reaches both outcomes: mutants that still read, and many kinds of error.
    assert stats.results > 0
    assert len(stats.shapes) >= 5, sorted(stats.shapes)


# ----------------------------------------------------------------------------- tables

_U32 = st.integers(0, 0xFFFF_FFFF)
_LEAVES = st.one_of(
    st.integers(1, 0x24), st.integers(0x8000_0000, 0x8000_0028), _U32.filter(bool)
)
_SUBLEAVES = st.one_of(st.integers(0, 0x3F), _U32)


@st.composite
def cpuid_tables(draw: st.DrawFn) -> CpuidSet:
    """Draw a CPUID table: leaf 0 and up to 40 other entries of any value."""
    registers = st.tuples(_U32, _U32, _U32, _U32)
    rows = {(0, 0): draw(registers)}
    for _ in range(draw(st.integers(0, 40))):
        rows[(draw(_LEAVES), draw(_SUBLEAVES))] = draw(registers)
    return CpuidSet.from_rows(
        [(leaf, sub, *regs) for (leaf, sub), regs in rows.items()], "<hypothesis>"
    )


def _render_aida(table: CpuidSet) -> str:
    lines = ["------[ CPUID Registers / Logical CPU #0 ]------", ""]
    for leaf, sub, eax, ebx, ecx, edx in sorted(table.rows()):
        lines.append(f"CPUID {leaf:08X}: {eax:08X}-{ebx:08X}-{ecx:08X}-{edx:08X} [SL {sub:02X}]")
    return "\n".join(lines) + "\n"


@PROPERTY
@given(table=cpuid_tables())
def test_aida64_text_reads_back_exactly(table: CpuidSet) -> None:
    """Any table written as AIDA64 text reads back with every entry and value."""
    read = read_cpuid_text(_render_aida(table), "generated.txt")
    assert read.meta["format"] == "aida64"
    assert dict(read.entries) == dict(table.entries)


@PROPERTY
@given(table=cpuid_tables(), header=st.sampled_from(["CPU:", "CPU 0:"]))
def test_cpuid_raw_text_reads_back_exactly(table: CpuidSet, header: str) -> None:
    """Any table written as `cpuid -r` text reads back with every entry and value."""
    read = read_cpuid_text(render_cpuid_raw(table, header).decode(), "generated.txt")
    assert read.meta["format"] == "cpuid-raw"
    assert dict(read.entries) == dict(table.entries)


_META_TEXT = st.text(st.characters(codec="utf-8"), max_size=20)


@PROPERTY
@given(
    table=cpuid_tables(),
    flags=st.lists(st.integers(0, 7), max_size=5),
    meta=st.dictionaries(_META_TEXT.filter(lambda key: key not in ("role", "leaf_0xd_subleaves")),
                         _META_TEXT, max_size=4),
    role=st.sampled_from(["cpu", "guest"]),
    source=_META_TEXT,
)
def test_own_json_round_trip_is_exact_and_stable(
    table: CpuidSet, flags: list[int], meta: dict[str, str], role: str, source: str
) -> None:
    """to_json_text then read_cpuid_json gives the same table; a second round, the same bytes."""
    keys = sorted(table.entries)
    table = table.replace(
        flags=dict(zip(keys, flags, strict=False)), meta=meta, role=role, source=source
    )
    text = to_json_text(table)
    read = read_cpuid_json(text, "generated.json")
    assert dict(read.entries) == dict(table.entries)
    assert dict(read.flags) == dict(table.flags)
    assert read.source == source
    assert dict(read.meta) == {"format": "xstate-check-json", **meta}
    assert read.role == role
    again = to_json_text(read)
    assert to_json_text(read_cpuid_json(again, "again.json")) == again


# ----------------------------------------------------------------------------- templates

_REGISTERS = ("eax", "ebx", "ecx", "edx")


@st.composite
def templates(draw: st.DrawFn) -> tuple[str, dict[tuple[int, int, str], tuple[int, int]]]:
    """Draw a template's JSON text and the (filter, value) each register should end with."""
    expected: dict[tuple[int, int, str], tuple[int, int]] = {}
    leaves = []
    for _ in range(draw(st.integers(0, 6))):
        leaf, subleaf = draw(_U32), draw(st.integers(0, 0x20))
        modifiers = []
        for register in draw(st.lists(st.sampled_from(_REGISTERS), max_size=4)):
            filter_bits, value_bits = draw(_U32), draw(_U32)
            value_bits &= filter_bits
            chars = [
                ("1" if value_bits >> bit & 1 else "0") if filter_bits >> bit & 1 else "x"
                for bit in range(31, -1, -1)
            ]
            if draw(st.booleans()):
                # '_' separates anywhere but left of all 32 characters (Firecracker counts
                # that one toward the width: FIRECRACKER.md §1).
                chars.insert(draw(st.integers(1, 32)), "_")
            modifiers.append({"register": register, "bitmap": "0b" + "".join(chars)})
            old_filter, old_value = expected.get((leaf, subleaf, register), (0, 0))
            expected[(leaf, subleaf, register)] = (
                old_filter | filter_bits, (old_value & ~filter_bits) | value_bits
            )
        leaves.append({"leaf": hex(leaf), "subleaf": hex(subleaf),
                       "flags": draw(st.integers(0, 1)), "modifiers": modifiers})
    document = {"kvm_capabilities": [], "cpuid_modifiers": leaves, "msr_modifiers": []}
    return json.dumps(document, indent=draw(st.sampled_from([None, 2]))), expected


@PROPERTY
@given(drawn=templates())
def test_templates_read_back_every_bit(
    drawn: tuple[str, dict[tuple[int, int, str], tuple[int, int]]],
) -> None:
    """Any valid template reads as exactly the bits it pins (filter and value per register)."""
    text, expected = drawn
    template = parse_template(text, "generated.json")
    assert template.modified_bits() == expected


# ----------------------------------------------------------------------------- any text


def _text_readers() -> list[str]:
    return ["cpuid-source", "template"]


@settings(deadline=None, derandomize=True, max_examples=300)
@given(data=st.one_of(st.binary(max_size=400), st.text(max_size=400).map(str.encode)),
       name=st.sampled_from(["aida64", "libcpuid", "cpuid-raw", "fingerprint", "template",
                             "jsonpos"]))
def test_arbitrary_bytes_give_a_result_or_an_input_error(data: bytes, name: str) -> None:
    """Random bytes or text to a reader: a result, or an InputError naming the file."""
    reader = READERS[name]
    path = _scratch_file(data, reader.suffix)
    try:
        reader.run(path, data, 7)
    except InputError as error:
        assert error.location.path == path
        assert error.expected


@settings(deadline=None, derandomize=True, max_examples=300)
@given(seed=st.integers(0, 2**32), name=st.sampled_from(["aida64", "cpuid-raw", "libcpuid"]))
def test_any_dump_prefix_and_line_order_gives_a_result_or_an_input_error(
    seed: int, name: str, data_dir: Path
) -> None:
    """Hypothesis drives the mutator's choices: every mutant reads or is an InputError."""
    mutator = _mutators(name, data_dir)
    data = mutator.mutate(mutator.rng(seed, 0))
    path = _scratch_file(data, ".txt")
    try:
        READERS[name].run(path, data, seed)
    except InputError as error:
        assert error.location.path == path


_MUTATORS: dict[str, Mutator] = {}


def _mutators(name: str, data_dir: Path) -> Mutator:
    if name not in _MUTATORS:
        _MUTATORS[name] = mutator_for(READERS[name], data_dir)
    return _MUTATORS[name]


_SCRATCH: list[Path] = []


def _scratch_file(data: bytes, suffix: str) -> str:
    """Write ``data`` to this test run's scratch file and return its path."""
    if not _SCRATCH:
        _SCRATCH.append(Path(tempfile.mkdtemp(prefix="xstate-fuzz-test-")))
    path = _SCRATCH[0] / f"input{suffix}"
    path.write_bytes(data)
    return str(path)


# ----------------------------------------------------------------------------- the harness


def test_mutator_inputs_do_not_depend_on_the_hash_seed(data_dir: Path) -> None:
    """Input I of campaign S is the same bytes under any PYTHONHASHSEED (reproducible runs)."""
    code = (
        "import hashlib, sys\n"
        f"sys.path[:0] = [{str(REPO)!r}, {str(REPO / 'src')!r}]\n"
        "from pathlib import Path\n"
        "from fuzz.run import READERS, mutator_for\n"
        "digest = hashlib.sha256()\n"
        "for name in ('aida64', 'template'):\n"
        f"    mutator = mutator_for(READERS[name], Path({str(data_dir)!r}))\n"
        "    for index in range(200):\n"
        "        digest.update(mutator.input(3, index))\n"
        "print(digest.hexdigest())\n"
    )
    digests = {
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout
        for seed in ("0", "1", "12345")
    }
    assert len(digests) == 1


def test_mutations_stay_close_to_the_seeds(data_dir: Path) -> None:
    """Most mutants differ from their seed yet keep its size: the fuzzer is not just noise."""
    mutator = mutator_for(READERS["aida64"], data_dir)
    inputs = [mutator.input(0, index) for index in range(500)]
    changed = sum(data not in mutator.seeds for data in inputs)
    assert changed > 450
    assert len({hashlib.sha256(data).digest() for data in inputs}) > 450


def _crashing(path: str, data: bytes, variant: int) -> object:
    if variant % 2:
        raise KeyError("boom")
    raise InputError(path, "expected nothing in particular")


def _sleeping(path: str, data: bytes, variant: int) -> object:
    time.sleep(60)
    return None


def test_the_harness_counts_uncaught_exceptions_and_saves_reproducers(
    data_dir: Path, tmp_path: Path
) -> None:
    """A reader raising KeyError is counted as uncaught, with its input written to disk."""
    reader = Reader("crashing", "raises", ".txt", READERS["aida64"].seeds, _crashing)
    stats = fuzz(reader, 40, seed=1, data_dir=data_dir, out_dir=tmp_path)
    assert stats.tried == 40
    assert stats.uncaught + stats.input_errors == 40
    assert stats.uncaught > 0 and stats.input_errors > 0
    assert all(kind.startswith("KeyError at test_fuzz_readers.py:") for kind in stats.failures)
    saved = sorted((tmp_path / "crashing").glob("*.txt"))
    assert saved and len(saved) <= 3
    assert "--reader crashing --seed 1 --replay" in saved[0].with_suffix(".log").read_text()


def test_the_harness_counts_hangs(data_dir: Path) -> None:
    """An input that outlasts the per-input limit is a hang, and the campaign goes on."""
    reader = Reader("sleeping", "sleeps", ".txt", READERS["aida64"].seeds, _sleeping)
    stats = fuzz(reader, 2, seed=0, data_dir=data_dir, time_limit=0.01)
    assert (stats.tried, stats.hangs, stats.results) == (2, 2, 0)


def test_the_fuzz_command_prints_its_table(data_dir: Path, tmp_path: Path) -> None:
    """`python fuzz/run.py` runs, prints a row per reader and exits 0 when nothing failed."""
    done = subprocess.run(
        [sys.executable, str(REPO / "fuzz" / "run.py"), "--inputs", "30", "--reader",
         "template", "--reader", "cpuid-raw", "--jobs", "2", "--data", str(data_dir),
         "--out", str(tmp_path)],
        capture_output=True, text=True, check=False, timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rows = {line.split("|")[0].strip(): line for line in done.stdout.splitlines() if "|" in line}
    assert {"reader", "template", "cpuid-raw"} <= set(rows)
    assert "uncaught" in rows["reader"] and "distinct errors" in rows["reader"]
    cells = [cell.strip() for cell in rows["template"].split("|")]
    assert cells[1] == "30"  # inputs tried
