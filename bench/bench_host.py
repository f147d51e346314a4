"""Speed and cost of the host check on this machine; prints figures, asserts nothing.

Measures, in one run:

1. the CPUID instructions the host probe executes for leaf 0xD, against the budget
   2 + (number of enumerated components): no blind scan of 64 subleaves;
2. the wall time of ``system.probe.probe()`` against issuing the very same CPUID, XGETBV,
   arch_prctl and ioctl calls back to back (target: at most 1.5x);
3. ``xstate-check host --format json`` against a bare interpreter start (target: at most
   100 ms more);
4. ``import xstate_check`` with ``python -X importtime`` (target: at most 30 ms).

Run: ``PYTHONPATH=src python bench/bench_host.py [--repeat N] [--check]``; ``--check``
exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import compileall
import ctypes
import fcntl
import mmap
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import cpuid_native

from xstate_check.cpuid import Registers
from xstate_check.system import abi as kvmabi
from xstate_check.system import probe as hostsource
from xstate_check.system.abi import SYS_ARCH_PRCTL
from xstate_check.system.calls import KVM_DEVICE, RealSystem, Uname
from xstate_check.system.isolated import ChildRun
from xstate_check.xfeatures import bits

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"

Operation = tuple[Any, ...]

# Times the phases of ``xstate-check host --format json`` in one fresh interpreter.
PHASES = """
import time
t0 = time.perf_counter()
import xstate_check.cli
t1 = time.perf_counter()
import xstate_check.preboot as preboot
from xstate_check.formats import render
from xstate_check.sources.host import probe
t2 = time.perf_counter()
state = probe()
t3 = time.perf_counter()
report = preboot._evaluate(preboot.host_subjects(state))
t4 = time.perf_counter()
render(report, "json", color=False)
t5 = time.perf_counter()
names = ("import cli", "import preboot+engine+sources", "probe", "subjects+rules", "render")
times = (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)
print(", ".join(f"{name} {1e3 * value:.1f}" for name, value in zip(names, times)))
"""


class Recording:
    """A RealSystem that records every operation it issues, in order."""

    def __init__(self) -> None:
        self.inner = RealSystem()
        self.operations: list[Operation] = []

    def uname(self) -> Uname:
        self.operations.append(("uname",))
        return self.inner.uname()

    def cpuid(self, leaf: int, subleaf: int) -> Registers:
        self.operations.append(("cpuid", leaf, subleaf))
        return self.inner.cpuid(leaf, subleaf)

    def xgetbv(self, index: int) -> int:
        self.operations.append(("xgetbv", index))
        return self.inner.xgetbv(index)

    def arch_prctl_get(self, option: int) -> int:
        self.operations.append(("arch_prctl_get", option))
        return self.inner.arch_prctl_get(option)

    def arch_prctl(self, option: int, arg: int) -> int:
        self.operations.append(("arch_prctl", option, arg))
        return self.inner.arch_prctl(option, arg)

    def open_kvm(self, path: str | None = None) -> int:
        self.operations.append(("open", path or KVM_DEVICE))
        return self.inner.open_kvm(path)

    def ioctl(self, fd: int, request: int, arg: int | bytearray = 0) -> int:
        self.operations.append(
            ("ioctl", request, len(arg) if isinstance(arg, bytearray) else None, arg)
        )
        return self.inner.ioctl(fd, request, arg)

    def close(self, fd: int) -> None:
        self.operations.append(("close",))
        self.inner.close(fd)

    def map_vcpu(self, fd: int, size: int) -> mmap.mmap:
        self.operations.append(("map_vcpu",))
        return self.inner.map_vcpu(fd, size)

    def guest_memory(self, size: int) -> tuple[mmap.mmap, int]:
        self.operations.append(("guest_memory",))
        return self.inner.guest_memory(size)

    def run_isolated(self, func: Callable[..., None], *args: object, timeout: float) -> ChildRun:
        self.operations.append(("child",))
        return self.inner.run_isolated(func, *args, timeout=timeout)


def replayer(operations: list[Operation]) -> Callable[[], None]:
    """Return a function issuing the recorded operations back to back, with no model around."""
    libc = ctypes.CDLL(None, use_errno=True)
    syscall = libc.syscall
    syscall.restype = ctypes.c_long
    value = ctypes.c_uint64(0)
    steps: list[Callable[[], object]] = []
    fd_box = [-1]

    def do_open(path: str) -> None:
        fd_box[0] = os.open(path, os.O_RDWR | os.O_CLOEXEC)

    def do_ioctl(request: int, arg: int | bytes) -> None:
        if isinstance(arg, bytes):
            fcntl.ioctl(fd_box[0], request, bytearray(arg), True)
        else:
            fcntl.ioctl(fd_box[0], request, arg)

    def do_close() -> None:
        os.close(fd_box[0])

    for op in operations:
        kind = op[0]
        if kind == "uname":
            steps.append(os.uname)
        elif kind == "cpuid":
            steps.append(partial(cpuid_native.get_cpuid_count, op[1], op[2]))
        elif kind == "xgetbv":
            steps.append(partial(cpuid_native.xgetbv, op[1]))
        elif kind == "arch_prctl_get":
            steps.append(partial(
                syscall, ctypes.c_long(SYS_ARCH_PRCTL), ctypes.c_long(op[1]), ctypes.byref(value)
            ))
        elif kind == "open":
            steps.append(partial(do_open, op[1]))
        elif kind == "ioctl":
            request, size, arg = op[1], op[2], op[3]
            if size is None:
                steps.append(partial(do_ioctl, request, arg))
            elif request == kvmabi.KVM_GET_DEVICE_ATTR:
                attr = kvmabi.DEVICE_ATTR.pack(0, 0, 0, ctypes.addressof(value))
                steps.append(partial(do_ioctl, request, attr))
            else:  # kvm_cpuid2: the header (nent) as recorded, then room for the entries
                steps.append(partial(do_ioctl, request, bytes(arg[:8]) + bytes(size - 8)))
        elif kind == "close":
            steps.append(do_close)
        else:
            raise SystemExit(f"cannot replay {kind}")

    def run() -> None:
        for step in steps:
            step()

    return run


def best(function: Callable[[], object], repeat: int) -> float:
    """Return the median wall time of ``function`` over ``repeat`` runs, in seconds."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def command_time(args: list[str], repeat: int) -> float:
    """Return the median wall time of running ``args`` as a process, in seconds."""
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(args, env=env, capture_output=True, check=False)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def import_time_us() -> int:
    """Return the cumulative import time of ``xstate_check`` in microseconds (-X importtime)."""
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import xstate_check"],
        env=env, capture_output=True, text=True, check=True,
    )
    for line in result.stderr.splitlines():
        parts = [part.strip() for part in line.split("|")]
        if len(parts) == 3 and parts[2] == "xstate_check":
            return int(parts[1])
    raise SystemExit("xstate_check not found in -X importtime output")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=30, help="runs per timing (median)")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    options = parser.parse_args()
    missed: list[str] = []
    # Measure the package as installed: pip compiles bytecode at install time, while a
    # checkout run with PYTHONDONTWRITEBYTECODE=1 would compile every module at each start.
    compileall.compile_dir(str(SRC), quiet=1)

    # 1. CPUID instructions for leaf 0xD.
    recording = Recording()
    state = hostsource.probe(recording)
    assert state.host_cpuid is not None
    sub0, sub1 = state.host_cpuid.get(0xD, 0), state.host_cpuid.get(0xD, 1)
    components = [
        n for n in bits((sub0.edx << 32 | sub0.eax) | (sub1.edx << 32 | sub1.ecx)) if n >= 2
    ]
    leaf_0xd = sum(1 for op in recording.operations if op[:2] == ("cpuid", 0xD))
    total_cpuid = sum(1 for op in recording.operations if op[0] == "cpuid")
    budget = 2 + len(components)
    print(f"leaf 0xD CPUID instructions: {leaf_0xd} (budget 2 + {len(components)} = {budget}); "
          f"all CPUID instructions: {total_cpuid}; operations: {len(recording.operations)}")
    if leaf_0xd > budget:
        missed.append("leaf 0xD CPUID count")

    # 2. probe() against the same calls back to back.
    if any(op[0] == "child" for op in recording.operations):
        print("note: this host starts a child for the permitted view; the replay leaves it out")
    real = RealSystem()
    replay = replayer([op for op in recording.operations if op[0] != "child"])
    replay()  # warm up
    hostsource.probe(real)
    probe_s = best(lambda: hostsource.probe(real), options.repeat)
    replay_s = best(replay, options.repeat)
    ratio = probe_s / replay_s
    print(f"probe(): {probe_s * 1e3:.3f} ms; same calls back to back: {replay_s * 1e3:.3f} ms; "
          f"ratio {ratio:.2f} (target <= 1.5)")
    if ratio > 1.5:
        missed.append("probe/replay ratio")

    # 3. The host command against a bare interpreter.
    runs = max(5, options.repeat // 3)
    host_command = [sys.executable, "-m", "xstate_check", "host", "--format", "json"]
    first = subprocess.run(
        host_command, env={**os.environ, "PYTHONPATH": str(SRC)}, capture_output=True,
        text=True, check=False,
    )
    if first.returncode not in (0, 1):
        print(f"xstate-check host exited {first.returncode}: {first.stderr.strip()}")
        missed.append("host command failed")
    bare = command_time([sys.executable, "-c", "pass"], runs)
    command = command_time(host_command, runs)
    extra_ms = (command - bare) * 1e3
    print(f"xstate-check host --format json: {command * 1e3:.1f} ms; bare interpreter: "
          f"{bare * 1e3:.1f} ms; extra {extra_ms:.1f} ms (target <= 100)")
    if extra_ms > 100:
        missed.append("host command time")

    # Where the command's time goes, measured inside one fresh interpreter.
    phases = subprocess.run(
        [sys.executable, "-c", PHASES], env={**os.environ, "PYTHONPATH": str(SRC)},
        capture_output=True, text=True, check=False,
    )
    print("  phases in a fresh process (ms): " + (phases.stdout.strip() or phases.stderr.strip()))

    # 4. import xstate_check.
    imports = sorted(import_time_us() for _ in range(5))[2]
    print(f"import xstate_check: {imports / 1e3:.1f} ms (-X importtime, median of 5; "
          "target <= 30)")
    if imports > 30_000:
        missed.append("import time")

    if missed:
        print("missed: " + ", ".join(missed))
    return 1 if missed and options.check else 0


if __name__ == "__main__":
    raise SystemExit(main())
