"""Determinism: the same input gives byte-identical output across runs and hash seeds.

Each command runs in three fresh interpreters, with PYTHONHASHSEED 0, 1 and random (so set
and dict orders that depend on string hashes would show), and its stdout must be the same
bytes every time, in every output format.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HASH_SEEDS = ("0", "1", "random")
SPR = "cpuid-dumps/instlatx64/GenuineIntel00806F8_SapphireRapids_05_CPUID.txt"
FINGERPRINT = "firecracker/fingerprint_INTEL_SAPPHIRE_RAPIDS_6.1host.json"


def _outputs(argv: list[str], cwd: Path) -> list[tuple[int, str]]:
    results = []
    for seed in HASH_SEEDS:
        done = subprocess.run(
            [sys.executable, "-m", "xstate_check", *argv], capture_output=True, text=True,
            env={**os.environ, "PYTHONPATH": str(REPO / "src"), "PYTHONHASHSEED": seed,
                 "NO_COLOR": "1"},
            timeout=300, check=False, cwd=cwd, stdin=subprocess.DEVNULL,
        )
        assert "Traceback" not in done.stderr, done.stderr
        results.append((done.returncode, done.stdout))
    return results


def _commands(data: Path) -> dict[str, list[str]]:
    dump, fingerprint = str(data / SPR), str(data / FINGERPRINT)
    t2, t2s = str(data / "firecracker/T2.json"), str(data / "firecracker/T2S.json")
    commands: dict[str, list[str]] = {}
    for fmt in ("text", "json", "sarif", "junit", "github"):
        commands[f"check-{fmt}"] = ["check", fingerprint, "-t", t2, "--format", fmt]
        commands[f"gate-{fmt}"] = ["gate", t2, t2s, "--format", fmt]
    for fmt in ("text", "json"):
        commands[f"decode-{fmt}"] = ["decode", dump, "-t", t2s, "--format", fmt]
        commands[f"rules-{fmt}"] = ["rules", "--format", fmt]
    commands["convert"] = ["convert", dump]
    commands["explain"] = ["explain", "amx-tile-pair"]
    return commands


@pytest.mark.parametrize("name", sorted(_commands(Path("."))))
def test_output_is_byte_identical_across_hash_seeds(
    name: str, data_dir: Path, tmp_path: Path
) -> None:
    """Three runs (PYTHONHASHSEED 0, 1, random): the same exit code and the same bytes."""
    outputs = _outputs(_commands(data_dir)[name], tmp_path)
    codes = {code for code, _ in outputs}
    assert len(codes) == 1 and codes <= {0, 1}, outputs[0]
    assert outputs[0][1], "nothing was written"
    if name.endswith("junit"):
        # JUnit's time attributes are measurements: everything else is byte-identical.
        outputs = [(code, re.sub(r' time="[0-9.]+"', "", text)) for code, text in outputs]
    assert outputs[1] == outputs[0]
    assert outputs[2] == outputs[0]
