"""Regenerate the bundled CPU profiles (src/xstate_check/profiles/) from ../shared/data.

Each profile is read with the project's own readers (``load_cpuid``) and written with the
project's own ``to_json_text``: exactly what ``xstate-check convert`` writes. Its ``source``
names the data file (relative to shared/data); ``index.json`` adds the origin repository,
commit and path from that folder's SOURCES.md, and the licence.

    python tools/make_profiles.py [--data ../shared/data] [--check]

``--check`` writes nothing and exits 1 when a bundled file differs from what it would write.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from xstate_check.sources.load import load_cpuid  # noqa: E402 (after the path is set)
from xstate_check.sources.ownjson import to_json_text  # noqa: E402
from xstate_check.sources.profiles import INDEX_SCHEMA  # noqa: E402

OUT = REPO / "src" / "xstate_check" / "profiles"

# Fingerprint file token -> (profile slug, model as people name it).
FINGERPRINT_CPUS = {
    "INTEL_SKYLAKE": ("skylake", "Intel Xeon Skylake-SP (EC2 metal)"),
    "INTEL_CASCADELAKE": ("cascade-lake", "Intel Xeon Cascade Lake (EC2 metal)"),
    "INTEL_ICELAKE": ("ice-lake", "Intel Xeon Ice Lake-SP (EC2 metal)"),
    "INTEL_SAPPHIRE_RAPIDS": ("sapphire-rapids", "Intel Xeon Sapphire Rapids (EC2 metal)"),
    "INTEL_GRANITE_RAPIDS": ("granite-rapids", "Intel Xeon Granite Rapids (EC2 metal)"),
    "AMD_MILAN": ("milan", "AMD EPYC Milan, Zen 3 (EC2 metal)"),
    "AMD_GENOA": ("genoa", "AMD EPYC Genoa, Zen 4 (EC2 metal)"),
}
_FINGERPRINT_NAME = re.compile(r"fingerprint_(?P<cpu>[A-Z_]+?)_(?P<kernel>\d+\.\d+)host\.json")

# Bare-metal profiles: name, file under cpuid-dumps/, model. Only data whose source grants a
# licence to redistribute it is bundled (``BUNDLED_LICENCES``): libcpuid's BSD-2-Clause test
# files, never the InstLatx64 dumps, which state no licence (they stay test inputs read from
# ../shared). So no bare-metal Granite Rapids: its only dump is InstLatx64's (Xeon 658X);
# Granite Rapids is covered by the fc-granite-rapids-* guest profiles. Not libcpuid's Xeon
# Platinum 8280: its dumper printed 0xD subleaf 9 (PKRU) as zeros while 0xD.0 enumerates PKRU,
# an artefact that every template would inherit (the gate reports it, rightly).
BARE_METAL = (
    ("skylake-xeon-gold-6154", "libcpuid/intel-xeon-gold-6154-cpu.test",
     "Intel Xeon Gold 6154 (Skylake-SP)"),
    ("sapphire-rapids-w7-2475x", "libcpuid/intel-xeon-w7-2475x.test",
     "Intel Xeon w7-2475X (Sapphire Rapids-WS), AMX"),
    ("emerald-rapids-platinum-8570", "libcpuid/intel-xeon-platinum-8570.test",
     "Intel Xeon Platinum 8570 (Emerald Rapids-SP), AMX supported, not enabled in XCR0"),
    ("zen3-milan-epyc-7713", "libcpuid/epyc-milan.test", "AMD EPYC 7713 (Zen 3, Milan)"),
    ("zen4-genoa-epyc-9124", "libcpuid/epyc-genoa.test", "AMD EPYC 9124 (Zen 4, Genoa)"),
    ("zen5-turin-epyc-9655", "libcpuid/epyc-turin.test", "AMD EPYC 9655 (Zen 5, Turin)"),
)

_LICENCES = {
    "firecracker": "Apache-2.0",
    "libcpuid": "BSD-2-Clause",
    "instlatx64": "none stated",
}
#: The licences under which a source may be converted into a bundled profile.
BUNDLED_LICENCES = frozenset({"Apache-2.0", "BSD-2-Clause"})
_COMMIT = re.compile(r"\b[0-9a-f]{40}\b")


def _table_rows(lines: Sequence[str]) -> Iterator[list[str]]:
    for line in lines:
        if line.startswith("|") and not set(line) <= set("|- "):
            yield [cell.strip().strip("`") for cell in line.strip().strip("|").split("|")]


def read_firecracker_sources(data: Path) -> dict[str, dict[str, str]]:
    """Return file -> origin from firecracker/SOURCES.md (repo, commit, original path)."""
    lines = (data / "firecracker" / "SOURCES.md").read_text(encoding="utf-8").splitlines()
    origins = {}
    for cells in _table_rows(lines):
        if len(cells) >= 6 and _COMMIT.fullmatch(cells[4]):
            origins[f"firecracker/{cells[0]}"] = {
                "repository": cells[3], "commit": cells[4], "path": cells[5],
                "licence": _LICENCES["firecracker"],
            }
    return origins


def read_dump_sources(data: Path) -> dict[str, dict[str, str]]:
    """Return file -> origin from cpuid-dumps/SOURCES.md, section by section."""
    lines = (data / "cpuid-dumps" / "SOURCES.md").read_text(encoding="utf-8").splitlines()
    origins: dict[str, dict[str, str]] = {}
    folder = repository = None
    for line in lines:
        heading = re.match(r"### (\w+)/", line)
        if heading:
            folder, repository = heading.group(1), None
            continue
        found = re.match(r"Repository: github\.com/(\S+?) ", line)
        if found:
            repository = found.group(1)
            continue
        if folder in _LICENCES and repository and line.startswith("|"):
            cells = next(_table_rows([line]), [])
            commit = next((c for c in cells if _COMMIT.search(c)), None)
            if len(cells) >= 3 and commit and "/" in cells[1]:
                origins[f"cpuid-dumps/{folder}/{cells[0]}"] = {
                    "repository": repository,
                    "commit": _COMMIT.search(commit).group(0),  # type: ignore[union-attr]
                    "path": cells[1],
                    "licence": _LICENCES[folder],
                }
    return origins


def _fingerprints(data: Path) -> Iterator[tuple[str, str, str, str | None]]:
    """Yield (name, data file, model, kernel) for every fingerprint, by CPU then kernel."""
    found = []
    for path in (data / "firecracker").glob("fingerprint_*host.json"):
        match = _FINGERPRINT_NAME.fullmatch(path.name)
        if match is None or match.group("cpu") not in FINGERPRINT_CPUS:
            raise SystemExit(f"{path}: a fingerprint of an unknown CPU; add it to FINGERPRINT_CPUS")
        kernel = match.group("kernel")
        order = list(FINGERPRINT_CPUS).index(match.group("cpu"))
        found.append((order, tuple(int(x) for x in kernel.split(".")), path.name, kernel,
                      match.group("cpu")))
    for _order, _version, file_name, kernel, cpu in sorted(found):
        slug, model = FINGERPRINT_CPUS[cpu]
        yield f"fc-{slug}-{kernel}", f"firecracker/{file_name}", model, kernel


def build(data: Path) -> dict[str, str]:
    """Return every file of the profiles folder: name -> text."""
    origins = {**read_firecracker_sources(data), **read_dump_sources(data)}
    files: dict[str, str] = {}
    index = []
    kinds = [(*item, "guest") for item in _fingerprints(data)]
    kinds += [(name, f"cpuid-dumps/{file}", model, None, "cpu") for name, file, model in BARE_METAL]
    for name, data_file, model, kernel, role in kinds:
        if data_file not in origins:
            raise SystemExit(f"{data_file}: not listed in its SOURCES.md")
        if origins[data_file]["licence"] not in BUNDLED_LICENCES:
            raise SystemExit(
                f"{data_file}: its source grants no licence to redistribute it "
                f"({origins[data_file]['licence']}); bundle a licensed copy or leave it out"
            )
        cpuid = load_cpuid(data / data_file)
        if cpuid.role != role:
            raise SystemExit(f"{data_file}: read as role {cpuid.role}, not {role}")
        meta = {**cpuid.meta, "profile": name, "model": model}
        cpuid = cpuid.replace(source=data_file, meta=meta)
        files[f"{name}.json"] = to_json_text(cpuid)
        if role == "guest":
            description = f"Firecracker guest CPUID (no template) on {model}, host kernel {kernel}"
        else:
            description = f"bare metal: {model}, CPU 0 as its OS saw it"
        index.append({
            "name": name,
            "file": f"{name}.json",
            "role": role,
            "vendor": cpuid.vendor,
            "model": model,
            "kernel": kernel,
            "description": description,
            "source": {"file": data_file, **origins[data_file]},
        })
    document = {
        "schema": INDEX_SCHEMA,
        "generated_by": "tools/make_profiles.py from shared/data with xstate-check's readers",
        "profiles": index,
        "notices": _notices(data),
    }
    files["index.json"] = json.dumps(document, indent=2, ensure_ascii=True) + "\n"
    return files


def _notices(data: Path) -> dict[str, str]:
    """Return the attribution each licence asks to keep with redistributed data."""
    dumps = (data / "cpuid-dumps" / "SOURCES.md").read_text(encoding="utf-8")
    block = []
    for line in dumps[dumps.index("    Copyright 2008"):].splitlines():
        if line and not line.startswith("    "):
            break  # the indented licence block ends at the first line that is not indented
        block.append(line.removeprefix("    "))
    bsd_text = "\n".join(block).rstrip()
    return {
        "firecracker": "Firecracker, Copyright 2017-2020 Amazon.com, Inc. or its affiliates. "
        "All Rights Reserved. SPDX-License-Identifier: Apache-2.0. The fc-* profiles are "
        "converted from its cpu-template-helper fingerprints.",
        "libcpuid": "The libcpuid-sourced profiles are converted from libcpuid test data "
        "(BSD-2-Clause):\n" + bsd_text,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Write (or with --check, compare) the bundled profiles; return the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--check", action="store_true", help="compare, write nothing")
    args = parser.parse_args(argv)
    files = build(args.data)
    stale = [
        name for name, text in files.items()
        if not (OUT / name).is_file() or (OUT / name).read_text(encoding="utf-8") != text
    ]
    extra = sorted(p.name for p in OUT.glob("*.json") if p.name not in files)
    if args.check:
        for name in stale + extra:
            print(f"{OUT / name}: out of date")
        return 1 if stale or extra else 0
    OUT.mkdir(parents=True, exist_ok=True)
    for name in extra:
        (OUT / name).unlink()
    for name, text in files.items():
        (OUT / name).write_text(text, encoding="utf-8")
    print(f"wrote {len(files) - 1} profiles and index.json to {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
