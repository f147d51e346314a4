"""The extremes campaign: size and shape extremes per reader, each answered in bounds.

The generator of ``fuzz/mutate.py`` (``Extremes``) makes long lines, many lines or entries,
deep nesting, huge numbers and long strings from each reader's real seeds; the campaign of
``fuzz/run.py --extremes`` times every input and reads the peak memory after it. Here it
runs a few hundred inputs per reader (seed 0, so CI is reproducible; the fuzz command runs
100,000): no uncaught exception, lie or hang, every shape drawn, memory bounded. The hang
limit is a guard against a reader that never returns, not a speed target: timing figures
are printed by the fuzz command and bench/bench_hostile.py.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from fuzz.mutate import EXTREME_SHAPES  # noqa: E402
from fuzz.readers import READERS  # noqa: E402
from fuzz.run import extremes_for, fuzz  # noqa: E402

from xstate_check import limits  # noqa: E402
from xstate_check.errors import InputError  # noqa: E402
from xstate_check.sources.load import read_cpuid_text  # noqa: E402
from xstate_check.template import parse_template  # noqa: E402

#: Inputs per reader: 2,000 where CI runs the suite (CI=true), 300 in a developer's run;
#: XSTATE_CHECK_EXTREME_INPUTS chooses (the fuzz command runs 100,000).
CI_INPUTS = int(os.environ.get("XSTATE_CHECK_EXTREME_INPUTS",
                               "2000" if os.environ.get("CI") == "true" else "300"))
#: The largest input in CI: sizes are drawn log-uniformly from 64 bytes up to it.
CI_MAX_SIZE = 64 << 10
#: Resident memory the campaign may add at its peak (the 16 MiB JSON array took 2 GB).
MEMORY_BOUND = 200_000_000


@pytest.mark.parametrize("name", sorted(READERS))
def test_extremes_give_a_result_or_an_input_error_in_bounded_memory(
    name: str, data_dir: Path, tmp_path: Path
) -> None:
    """Every shape of extreme per reader: a result or an InputError, never more memory."""
    stats = fuzz(READERS[name], CI_INPUTS, seed=0, data_dir=data_dir, out_dir=tmp_path,
                 time_limit=120.0, extremes=True, max_size=CI_MAX_SIZE)
    assert stats.tried == CI_INPUTS
    assert stats.failed == 0, stats.describe()
    assert stats.results + stats.input_errors == CI_INPUTS
    assert set(stats.labels) == set(EXTREME_SHAPES)
    took, size, label, index = stats.slowest
    assert 0 <= index < CI_INPUTS and label in EXTREME_SHAPES and size > 0, stats.slowest
    assert took > 0, stats.slowest
    # What the campaign added to the process's memory at its peak (the peak is reset when
    # it begins): the test process itself may be large after other tests.
    assert stats.peak_memory > 0 and stats.base_memory > 0
    assert stats.peak_memory - stats.base_memory < MEMORY_BOUND, (
        f"{stats.reader}: {stats.peak_memory - stats.base_memory} bytes more at input "
        f"#{stats.peak_input}")


def _inputs(name: str, data_dir: Path, count: int, max_size: int) -> list[tuple[bytes, str]]:
    generator = extremes_for(READERS[name], data_dir, max_size)
    return [generator.make(generator.rng(0, index)) for index in range(count)]


def test_the_generator_makes_the_classes_found_by_hand(data_dir: Path) -> None:
    """The shapes that once took seconds to hours or gigabytes come out of the generator.

    A padded AIDA64 header line, more CPUID entries than the bound, a JSON array of more
    values than the bound, nesting past 128, and a number of thousands of digits.
    """
    aida = _inputs("aida64", data_dir, 400, 1 << 20)
    padded = re.compile(rb"^(?:Windows Version|Program Version|allcpu)[^\n]*\S {1000,}\S",
                        re.MULTILINE)
    assert any(padded.search(data) for data, _ in aida)
    rows = re.compile(rb"^CPUID [0-9A-F]{8}: ", re.MULTILINE)
    assert any(len(rows.findall(data)) > limits.MAX_ENTRIES for data, _ in aida)
    template = _inputs("template", data_dir, 400, 1 << 20)
    assert any(shape == "many-entries" and data.count(b",") > limits.MAX_JSON_VALUES
               for data, shape in template)
    assert any(data.count(b"[") > limits.MAX_DEPTH for data, _ in template)
    assert any(re.search(rb"\d{4301}", data) for data, _ in template)


def test_the_generated_classes_are_refused_at_their_bound(data_dir: Path) -> None:
    """Each class of extreme past a bound is an InputError naming the bound and a line."""
    seen: set[str] = set()
    for data, shape in _inputs("template", data_dir, 300, 1 << 20):
        if shape not in ("many-entries", "deep-nesting"):
            continue
        try:
            parse_template(data.decode("utf-8", "replace"), "x.json")
        except InputError as error:
            assert error.location.line >= 1
            for bound in ("50000 JSON values", "128 nested", "2048 cpuid modifiers"):
                if bound in error.expected:
                    seen.add(bound)
    assert {"50000 JSON values", "128 nested"} <= seen
    for data, _ in _inputs("aida64", data_dir, 400, 1 << 20):
        try:
            read_cpuid_text(data.decode("utf-8", "replace"), "x.txt")
        except InputError as error:
            if "2048 CPUID entries" in error.expected:
                assert error.location.line > limits.MAX_ENTRIES
                return
    pytest.fail("no aida64 extreme crossed the bound of CPUID entries")


def test_the_same_extreme_input_on_every_run(data_dir: Path) -> None:
    """Input I of campaign S is the same bytes each time: a failure replays from two numbers."""
    one = _inputs("jsonpos", data_dir, 30, 1 << 16)
    two = _inputs("jsonpos", data_dir, 30, 1 << 16)
    assert one == two
    assert len({data for data, _ in one}) == 30
