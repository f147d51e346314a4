"""What a restore check of one pair costs, against one check of the guest.

Prints, from one run, the median time of:
- ``check``: building the guest subject (the Sapphire Rapids 6.1 profile, without a
  template, then after SPR_TO_T2_6.1 when ../shared/data is there) and evaluating the
  whole catalogue on it, as ``xstate_check.check`` does;
- ``restore``: building the same guest and restoring it on one destination (the Ice Lake
  6.1 profile), as ``xstate_check.restore`` does;
and their ratio (target: restore / check at most 1.0). Tables are loaded once beforehand:
both timings start from a CpuidSet in memory.

Usage: PYTHONPATH=src python bench/bench_restore.py [--repeat N] [--number N]
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from xstate_check.api import check
from xstate_check.engine import load_catalogue
from xstate_check.restore import restore
from xstate_check.sources.profiles import load_profile
from xstate_check.subject import Destination
from xstate_check.template import Template, load_template

TEMPLATE = (Path(__file__).resolve().parents[2] / "shared" / "data" / "firecracker"
            / "SPR_TO_T2_6.1.json")


def median_seconds(work: Callable[[], object], repeat: int, number: int) -> float:
    """Return the median over ``repeat`` rounds of the mean time of ``number`` calls."""
    rounds = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            work()
        rounds.append((time.perf_counter() - start) / number)
    return statistics.median(rounds)


def main() -> None:
    """Time check and restore on the same guest and print the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--number", type=int, default=200)
    args = parser.parse_args()

    load_catalogue()  # loaded once, as in a long-running caller
    guest = load_profile("fc-sapphire-rapids-6.1")
    destination = Destination("fc-ice-lake-6.1", load_profile("fc-ice-lake-6.1"))
    templates: list[Template | None] = [None]
    if TEMPLATE.is_file():
        templates.append(load_template(TEMPLATE))
    print("guest: fc-sapphire-rapids-6.1; destination: fc-ice-lake-6.1")
    for template in templates:
        # AMX state cannot go to Ice Lake; under the template it can.
        expected = 0 if template else 1
        assert restore(guest, [destination], template).exit_code() == expected
        check_time = median_seconds(functools.partial(check, guest, template),
                                    args.repeat, args.number)
        restore_time = median_seconds(functools.partial(restore, guest, [destination], template),
                                      args.repeat, args.number)
        print(f"template {'SPR_TO_T2_6.1' if template else '(none)'}: check (whole catalogue) "
              f"{check_time * 1e6:.1f} µs, restore (one destination) {restore_time * 1e6:.1f} "
              f"µs, restore / check {restore_time / check_time:.2f} (target <= 1.0)")

if __name__ == "__main__":
    main()
