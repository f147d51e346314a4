"""Time hostile inputs of up to 16 MiB through the command line (target: 2 s, 200 MB each).

Usage: python bench/bench_hostile.py [--case NAME]... [--size BYTES] [--timeout S] [--json]

Each case writes one input shaped to hit a reader's worst path (long padded lines, many
lines, many entries or modifiers, deep nesting, huge numbers, hostile matrix patterns),
runs ``xstate-check check``/``decode``/``gate`` on it in a fresh process and prints the
wall time, the CPU time (the wall time on a busy machine is mostly waiting), the peak
resident memory (the child's ``ru_maxrss``) and the exit code. Every exit code must be 0, 1
or 2; a case over 2 s of wall time or 200 MB is marked ``SLOW``/``BIG``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MIB = 1 << 20
LIMIT = 16 * MIB
TARGET_SECONDS = 2.0
TARGET_BYTES = 200 * 1000 * 1000

_AIDA_ROW = "CPUID {leaf:08X}: 00000001-00000002-00000003-00000004 [SL {sub:02X}]\n"
_AIDA_HEAD = "------[ CPUID Registers / Logical CPU #0 ]------\n" + "".join(
    _AIDA_ROW.format(leaf=leaf, sub=0) for leaf in (0, 1, 7, 0xD)
)
_TEMPLATE_LEAF = (
    '{"leaf": "0x1", "subleaf": "0x0", "flags": 0, "modifiers": ['
    '{"register": "ecx", "bitmap": "0bxxx1xxxxxxxxxxxxxxxxxxxxxxxxxxxx"}]}'
)
_REGISTER = '{"register": "ecx", "bitmap": "0bxxx1xxxxxxxxxxxxxxxxxxxxxxxxxxxx"}'
_FULL_LEAF = '{"leaf": "0x0", "subleaf": "0x0", "flags": 0, "modifiers": [' + ", ".join(
    f'{{"register": "{register}", "bitmap": "0b{"0" * 31}1"}}'
    for register in ("eax", "ebx", "ecx", "edx")) + "]}"
# A leaf modifier of leaf 0xD subleaf 0 touching its four registers (29 JSON values): 1,024
# of them are the 4,096 register modifiers a template may hold.
_TEMPLATE_AT_BOUND = (
    '{"leaf": "0xd", "subleaf": "0x0", "flags": 1, "modifiers": [' + ", ".join(
        f'{{"register": "{register}", "bitmap": "0bxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx1x"}}'
        for register in ("eax", "ebx", "ecx", "edx")) + "]}"
)


def _fill(head: str, unit: str, tail: str, size: int) -> str:
    """Return head + unit repeated to about ``size`` characters + tail."""
    count = max(1, (size - len(head) - len(tail)) // max(1, len(unit)))
    return head + unit * count + tail


def _joined(head: str, unit: str, sep: str, tail: str, size: int) -> str:
    count = max(1, (size - len(head) - len(tail)) // (len(unit) + len(sep)))
    return head + sep.join([unit] * count) + tail


# Each case: (command, file suffix, builder of the text from a size).
Case = tuple[str, str, Callable[[int], str]]

CASES: dict[str, Case] = {
    "aida-windows-version-spaces": (
        "check", ".txt", lambda n: _fill("Windows Version: a", " ", "b\n" + _AIDA_HEAD, n)),
    "aida-allcpu-spaces": (
        "check", ".txt", lambda n: _fill(_AIDA_HEAD + "allcpu: a: b", " ", "c\n", n)),
    "aida-blank-lines": ("check", ".txt", lambda n: _fill(_AIDA_HEAD, "\n", "", n)),
    "aida-untagged-repeats": (
        "check", ".txt",
        lambda n: _fill(_AIDA_HEAD, "CPUID 00000004: 00000001-00000002-00000003-00000004\n",
                        "", n)),
    "aida-many-cpu-headers": (
        "decode", ".txt", lambda n: _fill(_AIDA_HEAD, "CPU#001 AffMask: 0x1\n", "", n)),
    "cpuid-raw-many-subleaves": (
        "check", ".txt",
        lambda n: "CPU:\n" + "".join(
            f"   0x00000004 0x{sub:08x}: eax=0x00000001 ebx=0x00000002 ecx=0x00000003 "
            "edx=0x00000004\n" for sub in range(n // 90))),
    "libcpuid-many-indexes": (
        "check", ".test",
        lambda n: "basic_cpuid[0]=0000000d 756e6547 6c65746e 49656e69\n" + "".join(
            f"intel_fn4[{index}]=00000001 00000002 00000003 00000004\n"
            for index in range(n // 55))),
    "unknown-format-blank-lines": ("check", ".txt", lambda n: _fill("", "\n", "x\n", n)),
    "json-zeros-as-dump": ("check", ".json", lambda n: _joined("[", "0", ",", "]", n)),
    "json-empty-arrays-as-dump": ("check", ".json", lambda n: _joined("[", "[]", ",", "]", n)),
    "json-nesting-as-dump": ("check", ".json", lambda n: "[" * (n - 1)),
    "json-long-number-as-dump": (
        "check", ".json",
        lambda n: _fill('{"schema": "xstate-check-cpuid/1", "entries": [{"flags": ', "9",
                        "}]}", n)),
    "ownjson-many-entries": (
        "check", ".json",
        lambda n: '{"schema": "xstate-check-cpuid/1", "entries": [' + ",\n".join(
            f'{{"leaf": "0x4", "subleaf": "{sub:#x}", "eax": "0x1", "ebx": "0x2", '
            '"ecx": "0x3", "edx": "0x4"}' for sub in range(n // 100)) + "]}"),
    "json-zeros-as-template": (
        "template", ".json", lambda n: _joined("[", "0", ",", "]", n)),
    "json-zeros-in-template": (
        "template", ".json", lambda n: _joined('{"cpuid_modifiers": [', "0", ",", "]}", n)),
    "template-many-leaf-modifiers": (
        "template", ".json",
        lambda n: _joined('{"cpuid_modifiers": [', _TEMPLATE_LEAF, ",\n", "]}", n)),
    "template-many-register-modifiers": (
        "template", ".json",
        lambda n: _joined('{"cpuid_modifiers": [{"leaf": "0x1", "subleaf": "0x0", "flags": 0,'
                          ' "modifiers": [', _REGISTER, ",\n", "]}]}", n)),
    "template-long-ignored-string": (
        "template", ".json",
        lambda n: _fill('{"cpuid_modifiers": [{"leaf": "0x1", "subleaf": "0x0", "flags": 0, '
                        '"modifiers": [], "note": "', "x", '"}]}', n)),
    "gate-template-many-leaf-modifiers": (
        "gate", ".json",
        lambda n: _joined('{"cpuid_modifiers": [', _TEMPLATE_LEAF, ",\n", "]}", n)),
    "template-at-the-bounds": (
        "template", ".json",
        lambda n: _joined('{"cpuid_modifiers": [', _TEMPLATE_AT_BOUND, ",\n", "]}",
                          min(n, 1024 * (len(_TEMPLATE_AT_BOUND) + 2)))),
    "gate-template-at-the-bounds": (
        "gate", ".json",
        lambda n: _joined('{"cpuid_modifiers": [', _TEMPLATE_AT_BOUND, ",\n", "]}",
                          min(n, 1024 * (len(_TEMPLATE_AT_BOUND) + 2)))),
    "aida-entries-at-the-bound": (
        "check", ".txt",
        lambda n: _AIDA_HEAD + "".join(
            f"CPUID 4000{index:04X}: 00000001-00000002-00000003-00000004\n"
            for index in range(2044))),
    "ownjson-entries-at-the-bound": (
        "decode", ".json",
        lambda n: '{"schema": "xstate-check-cpuid/1", "entries": [' + ",\n".join(
            f'{{"leaf": "0xd", "subleaf": "{sub:#x}", "eax": "0x1", "ebx": "0x2", '
            '"ecx": "0x3", "edx": "0x4"}' for sub in range(2048)) + "]}"),
    "cpuid-raw-lines-at-the-bound": (
        "check", ".txt",
        lambda n: "CPU:\n   0x00000000 0x00: eax=0x0000000d ebx=0x756e6547 ecx=0x6c65746e "
                  "edx=0x49656e69\n" + " \n" * 499_990),
    "template-blank-lines": (
        "template", ".json", lambda n: _fill('{"cpuid_modifiers": [', "\n", "]}", n)),
    "fingerprint-repeat-after-blank-lines": (
        "check", ".json",
        lambda n: _fill('{"guest_cpu_config": {"cpuid_modifiers": [' + _FULL_LEAF + ",", "\n",
                        _FULL_LEAF + "]}}", n)),
    "gate-matrix-many-entries": (
        "matrix", ".toml",
        lambda n: _fill("", '[[template]]\npath = "x.json"\nvendor = "intel"\n', "", n)),
    "gate-matrix-nesting": ("matrix", ".toml", lambda n: _fill("x = ", "[", "", n)),
}

_TEMPLATE_BASE = "profile:fc-sapphire-rapids-6.1"
# The command line in a fresh interpreter that reports its own peak resident memory last
# (VmHWM starts again at exec; ru_maxrss would carry this process's).
_CHILD = (
    "import sys\n"
    "from xstate_check.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "sys.stdout.flush()\n"
    "status = open('/proc/self/status').read()\n"
    "print('VmHWM', status.split('VmHWM:')[1].split()[0], file=sys.stderr)\n"
    "raise SystemExit(code)\n"
)


def _argv(command: str, path: str, scratch: str) -> list[str]:
    if command == "template":
        return ["check", _TEMPLATE_BASE, "--template", path]
    if command == "gate":
        return ["gate", path]
    if command == "matrix":
        template = os.path.join(scratch, "x.json")
        Path(template).write_text('{"cpuid_modifiers": []}', encoding="utf-8")
        return ["gate", template, "--matrix", path]
    return [command, path]


def run_case(name: str, size: int, scratch: str, timeout: float = 60.0) -> dict[str, object]:
    """Write case ``name`` at ``size`` bytes, run it once; return its figures."""
    command, suffix, build = CASES[name]
    text = build(size)
    data = text.encode("utf-8")[:LIMIT]
    size = len(data)
    path = os.path.join(scratch, "input" + suffix)
    Path(path).write_bytes(data)
    argv = [sys.executable, "-c", _CHILD, *_argv(command, path, scratch)]
    del text, data  # the parent stays small
    # The caller's PYTHONPATH wins (to time another checkout), else this checkout's src.
    env = {**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH") or str(REPO / "src")}
    began = time.perf_counter()
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    assert process.stderr is not None
    os.set_blocking(process.stderr.fileno(), False)
    chunks: list[bytes] = []
    killed = False
    while True:
        chunks.append(process.stderr.read() or b"")
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        if not killed and time.perf_counter() - began > timeout:
            process.kill()
            killed = True
        time.sleep(0.02)
    seconds = time.perf_counter() - began
    process.returncode = os.waitstatus_to_exitcode(status)
    chunks.append(process.stderr.read() or b"")
    stderr = b"".join(chunks)
    message = stderr.decode("utf-8", "replace").strip().splitlines()
    peak = 0
    if message and message[-1].startswith("VmHWM "):
        peak = int(message.pop().split()[1]) * 1024
    if killed:
        message = [f"killed after {timeout:.0f} s"]
    return {
        "case": name, "command": " ".join(argv[3:4]), "bytes": size,
        "seconds": round(seconds, 2), "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),
        "peak_mb": round((peak or usage.ru_maxrss * 1024) / 1e6),
        "exit": process.returncode, "message": message[0][:110] if message else "",
    }


def main(argv: list[str] | None = None) -> int:
    """Run the cases; exit 1 when one exits outside 0-2 or misses the time/memory target."""
    parser = argparse.ArgumentParser(prog="python bench/bench_hostile.py")
    parser.add_argument("--case", action="append", choices=sorted(CASES), metavar="NAME")
    parser.add_argument("--size", type=int, default=LIMIT, help="bytes per input (16 MiB)")
    parser.add_argument("--list", action="store_true", help="list the cases")
    parser.add_argument("--json", action="store_true", help="print JSON lines")
    parser.add_argument("--timeout", type=float, default=60.0, help="kill a case after (60 s)")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(CASES))
        return 0
    failed = 0
    with tempfile.TemporaryDirectory(prefix="xstate-hostile-") as scratch:
        for name in args.case or list(CASES):
            row = run_case(name, args.size, scratch, args.timeout)
            verdict = []
            if row["exit"] not in (0, 1, 2):
                verdict.append("EXIT")
            if float(str(row["seconds"])) > TARGET_SECONDS:
                verdict.append("SLOW")
            if int(str(row["peak_mb"])) * 1e6 > TARGET_BYTES:
                verdict.append("BIG")
            failed += bool(verdict)
            row["verdict"] = " ".join(verdict) or "ok"
            if args.json:
                print(json.dumps(row), flush=True)
            else:
                print(f"{row['case']:36} {row['bytes']:>9} B {row['seconds']:>6} s "
                      f"(cpu {row['cpu_seconds']:>5} s) {row['peak_mb']:>5} MB exit {row['exit']} "
                      f"{row['verdict']:9} {str(row['message'])[:70]}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
