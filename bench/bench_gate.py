"""The CI gate as users run it: the installed command, JSON written to a file.

Measured in one run, runs interleaved, medians, as ratios:

1. the marginal cost per template x profile subject: ``xstate-check gate`` on 20, 200 and
   600 distinct templates (Firecracker's nine x86 templates, each copy with its own number
   in leaf 0x1 EBX bits 0-15, so that no two templates give one guest table: no reuse to
   lean on) on the bundled profiles, ``--format json -o FILE --jobs 1``; (600 - 20) over
   the subjects between them, in wall and in CPU time (target: at most 100 µs per
   subject). Findings are reused only for equal guest tables: here the pairs of one
   template with two bundled profiles whose tables are equal (Sky Lake and Cascade Lake on
   5.10 and 6.1), which the bench counts and prints;
2. the peak memory (maximum resident set) at 600 templates against 20, in JSON and SARIF
   (target: at most 1.5x);
3. ``--jobs 2`` against ``--jobs 1`` on 600 templates, wall time, output compared byte for
   byte (target: at most 0.65x, identical);
4. Firecracker's own nine templates, where pairs giving one guest table reuse its findings.

Run: ``python bench/bench_gate.py [--repeat 5] [--python PY] [--data ../shared/data]``;
``--python`` names an interpreter with xstate-check installed (default: a virtual
environment made here with ``pip install``).
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path

from _common import REPO, installed_python, run_timed

TEMPLATES = ("T2", "T2S", "T2CL", "C3", "T2A", "SPR_TO_T2_5.10", "SPR_TO_T2_6.1",
             "GNR_TO_T2_5.10", "GNR_TO_T2_6.1")
SIZES = (20, 200, 600)


def make_templates(source: Path, folder: Path, count: int) -> list[str]:
    """Write ``count`` distinct templates: Firecracker's, each with its own brand index."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        document = json.loads((source / f"{TEMPLATES[index % len(TEMPLATES)]}.json").read_text())
        # Leaf 0x1 EBX bits 0-15 (brand index, CLFLUSH line size): no rule reads them, and
        # each copy sets them to its own number.
        bitmap = "0b" + "x" * 16 + format(index, "016b")
        for entry in document["cpuid_modifiers"]:
            if entry["leaf"] == "0x1":
                entry["modifiers"] = [m for m in entry["modifiers"] if m["register"] != "ebx"]
                entry["modifiers"].append({"register": "ebx", "bitmap": bitmap})
                break
        path = folder / f"t{index:04d}.json"
        path.write_text(json.dumps(document, indent=2))
        paths.append(str(path))
    return paths


#: GNU time reports the peak resident set of the process it starts. A process started from
#: this one would report this one's as its own: Linux carries the high-water mark of the
#: address space it replaces at exec (vfork shares it) into the new program's.
TIME = shutil.which("time") if Path("/usr/bin/time").exists() else None
PEAK = "xstate-check-bench-peak-kib"


class Run:
    """One timed process: wall seconds, CPU seconds (its own and its workers'), peak KiB."""

    def __init__(self, args: list[str]) -> None:
        if TIME is not None:
            args = [TIME, "-f", f"{PEAK} %M", *args]
        timed = run_timed(args, keep_stderr=True)
        if timed.code not in (0, 1):
            raise SystemExit(f"{' '.join(args[:5])} … exited {timed.code}: "
                             f"{timed.stderr[-500:]}")
        self.wall, self.cpu = timed.wall, timed.cpu
        peaks = [line.split()[-1] for line in timed.stderr.splitlines() if line.startswith(PEAK)]
        self.peak_kib = int(peaks[-1]) if peaks else timed.maxrss_kib


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per figure (median)")
    parser.add_argument("--python", type=Path, help="an interpreter with xstate-check installed")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    options = parser.parse_args()
    source = options.data / "firecracker"
    if not source.is_dir():
        print(f"{source} is absent: Firecracker's templates are needed")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        python = options.python or installed_python(folder / "venv")
        command = str(python.parent / "xstate-check")
        sets = {size: make_templates(source, folder / f"t{size}", size) for size in SIZES}
        print(f"load: {os.getloadavg()[0]:.2f} (1 min), {os.cpu_count()} CPUs")

        def gate(size: int, fmt: str = "json", jobs: int = 1, out: str = "out") -> list[str]:
            return [command, "gate", *sets[size], "--format", fmt, "-o",
                    str(folder / f"{out}.{fmt}"), "--jobs", str(jobs)]

        subjects = {}
        for size in SIZES:
            Run(gate(size))  # warm: the catalogue cache, the page cache
            summary = json.loads((folder / "out.json").read_text())["summary"]
            subjects[size] = summary["subjects"]

        # 1 and 2: sizes interleaved, JSON and SARIF.
        runs: dict[tuple[int, str], list[Run]] = {}
        for _ in range(options.repeat):
            for size in SIZES:
                for fmt in ("json", "sarif"):
                    runs.setdefault((size, fmt), []).append(Run(gate(size, fmt)))
        wall = {key: statistics.median(r.wall for r in value) for key, value in runs.items()}
        cpu = {key: statistics.median(r.cpu for r in value) for key, value in runs.items()}
        peak = {key: statistics.median(r.peak_kib for r in value) for key, value in runs.items()}
        for size in SIZES:
            print(f"{size:4d} templates, {subjects[size]:6d} subjects: JSON "
                  f"{wall[size, 'json'] * 1e3:7.0f} ms wall, {cpu[size, 'json'] * 1e3:7.0f} ms "
                  f"CPU, peak {peak[size, 'json'] / 1024:5.1f} MiB; SARIF peak "
                  f"{peak[size, 'sarif'] / 1024:5.1f} MiB")
        between = subjects[600] - subjects[20]
        for label, figures in (("wall", wall), ("CPU", cpu)):
            for fmt in ("json", "sarif"):
                marginal = (figures[600, fmt] - figures[20, fmt]) / between * 1e6
                print(f"marginal cost ({label}, {fmt}): {marginal:.0f} µs per subject "
                      "(target <= 100)")
        for fmt in ("json", "sarif"):
            print(f"peak memory 600 / 20 templates ({fmt}): "
                  f"{peak[600, fmt] / peak[20, fmt]:.2f}x (target <= 1.5)")

        # What the findings cache served: subjects whose guest table equals one seen before.
        counted = subprocess.run(
            [str(python), "-c", "import sys; from xstate_check.gate import GateRun; "
             "run = GateRun(sys.argv[1:]); result = run.result(jobs=1); "
             "print(len(result.subjects), run.cache.hits)", *sets[600]],
            capture_output=True, text=True, check=True).stdout.split()
        print(f"600 templates: findings reused for {counted[1]} of {counted[0]} subjects (equal "
              "guest tables, from bundled profiles with equal tables)")

        # 3. --jobs 2 against --jobs 1 on 600 templates.
        one, two = [], []
        for _ in range(options.repeat):
            one.append(Run(gate(600, jobs=1, out="one")))
            two.append(Run(gate(600, jobs=2, out="two")))
        same = filecmp.cmp(folder / "one.json", folder / "two.json", shallow=False)
        one_s = statistics.median(r.wall for r in one)
        two_s = statistics.median(r.wall for r in two)
        print(f"600 templates --jobs 1: {one_s * 1e3:.0f} ms; --jobs 2: {two_s * 1e3:.0f} ms; "
              f"ratio {two_s / one_s:.2f} (target <= 0.65); output identical: {same}")
        # CPU, workers included (forked workers are the command's children): what the
        # workers add to the work, whatever the load; and each round's ratio, for the spread.
        rounds = sorted(b.wall / a.wall for a, b in zip(one, two, strict=True))
        print(f"  CPU --jobs 1: {statistics.median(r.cpu for r in one) * 1e3:.0f} ms; "
              f"--jobs 2: {statistics.median(r.cpu for r in two) * 1e3:.0f} ms; ratio by "
              f"round {', '.join(f'{r:.2f}' for r in rounds)}; load {os.getloadavg()[0]:.2f}")

        # 4. Firecracker's nine templates, where equal guest tables reuse their findings.
        nine = [str(source / f"{name}.json") for name in TEMPLATES]
        fc = [Run([command, "gate", *nine, "-f", "json", "-o", str(folder / "fc.json"),
                   "--jobs", "1"]) for _ in range(options.repeat)]
        count = json.loads((folder / "fc.json").read_text())["summary"]["subjects"]
        print(f"Firecracker's nine templates: {count} subjects, "
              f"{statistics.median(r.wall for r in fc) * 1e3:.0f} ms wall, "
              f"{statistics.median(r.cpu for r in fc) * 1e3:.0f} ms CPU")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
