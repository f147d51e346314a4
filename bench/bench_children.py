"""What an isolated child costs on this machine (prints figures; asserts nothing).

    PYTHONPATH=src python bench/bench_children.py [--runs N]

Measures, medians of N runs:

1. a bare interpreter start (``python -I -S -c pass``), the floor of any fresh child;
2. ``run_isolated`` of a task that sends one empty message: posix_spawn, the child's
   imports (``system.isolated`` and its standard-library modules), the request,
   the pipe, the reaping;
3. the pre-boot path's child on an AMX host: ``permitted_kvm_cpuid()``, which requests
   guest permission in the child and reads KVM_GET_SUPPORTED_CPUID there (this machine has
   no AMX, so the request is pretended and the KVM read is real);
4. a bare ``os.fork()`` + ``waitpid`` of this process, what the forked children cost.

Each figure is the median wall time and the children's CPU time (user + system, from
``getrusage(RUSAGE_CHILDREN)``) per run; the CPU time holds when other work shares the
machine. Bytecode is compiled first, as an installed wheel has it. The module imports only
the standard library and the system layer at its top: each child imports it too.
"""

from __future__ import annotations

import os
import resource
import sys
import time
from collections.abc import Callable

from xstate_check.system.abi import ARCH_GET_XCOMP_SUPP, ARCH_REQ_XCOMP_GUEST_PERM
from xstate_check.system.calls import RealSystem
from xstate_check.system.isolated import run_isolated
from xstate_check.system.protocol import System

TILEDATA = 1 << 18


class PretendAmx(RealSystem):
    """This machine, with TILEDATA claimed by the kernel and the guest permission granted."""

    def arch_prctl_get(self, option: int) -> int:
        value = super().arch_prctl_get(option)
        return value | TILEDATA if option == ARCH_GET_XCOMP_SUPP else value

    def arch_prctl(self, option: int, arg: int) -> int:
        if option == ARCH_REQ_XCOMP_GUEST_PERM and arg == 18:
            return 0
        return super().arch_prctl(option, arg)


def send_nothing(system: System, send: Callable[[bytes], None]) -> None:
    """Send one empty message."""
    send(b"")


def median_ms(action: Callable[[], object], runs: int) -> str:
    """Return the median wall time and the children's CPU time per run of ``action``."""
    import statistics

    action()
    times = []
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    for _ in range(runs):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) / runs
    return f"{statistics.median(times) * 1000:.1f} ms wall, {cpu * 1000:.1f} ms child CPU"


def fork_and_wait() -> None:
    """Fork this process and reap the child."""
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)


def main() -> int:
    """Print the figures."""
    import argparse
    import compileall
    import subprocess
    from pathlib import Path

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="runs per median (default 30)")
    args = parser.parse_args()
    compileall.compile_dir(str(Path(__file__).resolve().parents[1] / "src"), quiet=1)
    bare = median_ms(
        lambda: subprocess.run([sys.executable, "-I", "-S", "-c", "pass"], check=True),
        args.runs,
    )
    print(f"bare interpreter (-I -S -c pass): {bare}")
    empty = median_ms(lambda: run_isolated(send_nothing, RealSystem(), timeout=10), args.runs)
    print(f"run_isolated, one empty message: {empty}")
    if os.access("/dev/kvm", os.R_OK | os.W_OK):
        from xstate_check.system.probe import permitted_kvm_cpuid

        system = PretendAmx()
        view = median_ms(lambda: permitted_kvm_cpuid(system), args.runs)
        print(f"permitted_kvm_cpuid() (the pre-boot child on an AMX host): {view}")
    else:
        print("permitted_kvm_cpuid(): skipped, /dev/kvm is not usable")
    fork = median_ms(fork_and_wait, args.runs)
    print(f"bare fork + waitpid of this process: {fork}")
    return 0


if __name__ == "__main__":
    # Run as the importable module ``bench_children``: a child imports the classes and
    # the task by that name (a ``__main__`` of this script means nothing in the child).
    import bench_children

    sys.exit(bench_children.main())
