"""What the benches that time installed commands share: the virtual environment they install
the project into, and how they time one process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

REPO = Path(__file__).resolve().parents[1]


def installed_python(folder: Path) -> Path:
    """Make a virtual environment in ``folder`` with the project installed; return its python."""
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
    python = folder / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", str(REPO)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return python


class Timed(NamedTuple):
    """One finished process: wall and CPU (user + system, its children's included) seconds,
    exit code, standard error (when kept) and peak resident set in KiB (ru_maxrss)."""

    wall: float
    cpu: float
    code: int
    stderr: str
    maxrss_kib: int


def run_timed(args: list[str], *, keep_stderr: bool = False) -> Timed:
    """Run ``args`` with standard output discarded; return how long it took and what it used."""
    start = time.perf_counter()
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE if keep_stderr else subprocess.DEVNULL)
    error = ""
    if process.stderr is not None:
        error = process.stderr.read().decode(errors="replace")
        process.stderr.close()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    return Timed(wall, usage.ru_utime + usage.ru_stime, os.waitstatus_to_exitcode(status), error,
                 usage.ru_maxrss)
