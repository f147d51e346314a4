"""The CI gate's marginal cost per template x profile subject (target: at most 200 µs).

Measured in one run: a one-subject gate (one template, one profile) against a full gate
(Firecracker's nine x86 templates on every bundled profile of their vendor). The marginal
cost is (full - one) / (subjects - 1): what one more pair adds, the start-up (catalogue,
profiles, process) left out. Both gates run warm, as in CI, where they run once per
process but the one-off loading is the same for both. Regression mode (``--changed-since``)
is measured the same way on a temporary git repository holding one changed template.

    python bench/bench_gate.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from xstate_check.gate import GateResult, run_gate  # noqa: E402 (after the path is set)

TARGET_US = 200.0
TEMPLATES = ("T2", "T2S", "T2CL", "C3", "T2A", "SPR_TO_T2_5.10", "SPR_TO_T2_6.1",
             "GNR_TO_T2_5.10", "GNR_TO_T2_6.1")


def _timed(run: Callable[[], GateResult], repeat: int) -> tuple[float, int]:
    """Return the fastest of ``repeat`` runs (least disturbed by other load) and the subjects."""
    subjects = len(run().report.subjects)  # warm-up: catalogue, profiles, templates
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times), subjects


def _marginal(label: str, one: Callable[[], GateResult], full: Callable[[], GateResult],
              repeat: int) -> float:
    one_s, one_n = _timed(one, repeat)
    full_s, full_n = _timed(full, repeat)
    per_subject_us = (full_s - one_s) / (full_n - one_n) * 1e6
    print(f"{label}: one-subject gate {one_s * 1e3:.2f} ms ({one_n} subject); "
          f"full gate {full_s * 1e3:.2f} ms ({full_n} subjects)")
    print(f"{label}: marginal cost {per_subject_us:.0f} µs per subject "
          f"(target <= {TARGET_US:.0f} µs: {'met' if per_subject_us <= TARGET_US else 'MISSED'})")
    return per_subject_us


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=b", "-c",
                    "user.email=b@example.invalid", "-c", "commit.gpgsign=false", *args],
                   check=True, capture_output=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Print the gate's marginal cost per subject, plain and in regression mode."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    args = parser.parse_args(argv)
    folder = args.data / "firecracker"
    if not folder.is_dir():
        print(f"{folder} is absent: Firecracker's templates are needed")
        return 0
    paths = [str(folder / f"{name}.json") for name in TEMPLATES]
    _marginal(
        "gate",
        lambda: run_gate(paths[:1], profiles=["profile:fc-skylake-5.10"]),
        lambda: run_gate(paths),
        args.repeat,
    )
    if shutil.which("git") is None:
        print("git is absent: regression mode not measured")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp)
        for path in paths:
            shutil.copy(path, repo)
        _git(repo, "init", "-q")
        _git(repo, "add", ".")
        _git(repo, "commit", "-q", "-m", "templates")
        changed = repo / "T2.json"
        changed.write_text(changed.read_text().replace(
            "0bxxxxxxxxxxxxxxxxxxxxxx0x00000xxx", "0bxxxxxxxxxxxxx0xxxxxxxx0x00000xxx"))
        _marginal(
            "gate --changed-since",
            lambda: run_gate([str(changed)], profiles=["profile:fc-skylake-5.10"],
                             changed_since="HEAD"),
            lambda: run_gate([str(changed)], changed_since="HEAD"),
            args.repeat,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
