"""How long the oracle takes on this machine's /dev/kvm (prints figures; asserts nothing).

    PYTHONPATH=src python bench/bench_oracle.py [--runs N]

Target: one run_oracle() under 5 ms (median); every subset of this host's XCR0 bits in a
few seconds.
"""

from __future__ import annotations

import argparse
import compileall
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from xstate_check import oracle
from xstate_check.errors import ProbeError
from xstate_check.system.kvm import kvm_cpuid


def _median_ms(action: Callable[[], object], runs: int) -> float:
    action()  # warm up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def _fork_only() -> None:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)


def _subsets(mask: int) -> list[int]:
    found = [0]
    for bit in (1 << n for n in range(64) if mask >> n & 1):
        found += [subset | bit for subset in found]
    return sorted(found)


def _timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def main() -> int:
    """Print the figures; 0 also where /dev/kvm is not usable (the reason is printed)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200, help="runs per median (default 200)")
    args = parser.parse_args()
    # Bytecode compiled first, as an installed wheel has it (the child imports the modules).
    compileall.compile_dir(str(Path(__file__).resolve().parents[1] / "src"), quiet=1)
    try:
        host = kvm_cpuid()
    except ProbeError as error:
        print(f"skipped: {error}")
        return 0
    first = oracle.run_oracle(host)
    supported = first.kvm_supported_xcr0 or 0
    values = _subsets(supported)

    single = _median_ms(lambda: oracle.run_oracle(host), args.runs)
    fork = _median_ms(_fork_only, args.runs)
    print(f"run_oracle (child, VM, vCPU, one XSETBV), median of {args.runs}: {single:.2f} ms"
          f"  (target < 5 ms; a bare fork+wait here: {fork:.2f} ms, ratio {single / fork:.1f}x)")

    many = _timed(lambda: oracle.run_many(host, values))
    print(f"run_many, all {len(values)} subsets of {supported:#x} in one vCPU: "
          f"{many * 1000:.1f} ms ({many / len(values) * 1e6:.0f} us per XSETBV)")

    subjects = [host.with_registers(0xD, 0, eax=m & 0xFFFFFFFF, edx=m >> 32) for m in values]
    each = _timed(lambda: oracle.run_subjects(subjects))
    print(f"run_subjects, {len(values)} subjects (one VM each, one child): "
          f"{each * 1000:.1f} ms ({each / len(values) * 1000:.2f} ms per VM)")

    matrix = _timed(lambda: [oracle.run_many(subject, values) for subject in subjects])
    print(f"every enumeration x every XCR0 ({len(values)}x{len(values)} runs, one child per "
          f"enumeration): {matrix:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
