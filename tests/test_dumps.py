"""CPUID dump readers: every real dump in ../shared/data, hand-read values, own JSON, bad input.

Values marked "by hand" were read from the named file with a text editor, or come from the
tables below, read by hand from the files.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from xstate_check.cpuid import CpuidSet, Registers
from xstate_check.errors import SNIPPET_WIDTH, InputError, clip_snippet
from xstate_check.sources.dumps import read_aida64, read_cpuid_raw, read_libcpuid
from xstate_check.sources.load import load_cpuid
from xstate_check.sources.ownjson import SCHEMA, read_cpuid_json, to_json_text

pytestmark = pytest.mark.shared

INSTLATX64 = "cpuid-dumps/instlatx64"
LIBCPUID = "cpuid-dumps/libcpuid"
SPR_05 = f"{INSTLATX64}/GenuineIntel00806F8_SapphireRapids_05_CPUID.txt"
SPR_06 = f"{INSTLATX64}/GenuineIntel00806F8_SapphireRapids_06_CPUID.txt"
GENOA = f"{INSTLATX64}/AuthenticAMD0A10F11_K19_Genoa_02_CPUID.txt"
ROME = f"{INSTLATX64}/AuthenticAMD0830F10_K17_Rome_CPUID.txt"
HASWELL_REPORT = f"{INSTLATX64}/GenuineIntel00306F2_HaswellEP_02_CPUID.txt"
ALDER_HYBRID = f"{INSTLATX64}/GenuineIntel0090672_AlderLake_01_LC_BC_CPUID.txt"
LOCAL_RAW = "cpuid-dumps/local/host-amd-epyc-raw.txt"
LOCAL_DECODED = "cpuid-dumps/local/host-amd-epyc-decoded.txt"
I3_NATIVE = f"{LIBCPUID}/intel-core-i3-4130-cpu.test"
RYZEN_NATIVE = f"{LIBCPUID}/amd-ryzen-7-8845hs-with-radeon-780m-graphics.test"

HAS_FIRECRACKER = importlib.util.find_spec("xstate_check.sources.firecracker") is not None

# The files under cpuid-dumps/ that are not dumps, and the start of the error each gives.
NOT_DUMPS = {
    "cpuid-dumps/SOURCES.md": ":1:1: expected a CPUID dump: AIDA64/InstLatx64 text",
    LOCAL_DECODED: ":2:1: expected raw lines of `cpuid -r`",
}
FOLDER_FORMATS = {"instlatx64": "aida64", "libcpuid": "libcpuid", "local": "cpuid-raw"}

# Read by hand from each file (CPU #0): signature, 0xD.0 EAX/EBX/ECX,
# 0xD.1 EAX/EBX/ECX (None: the native libcpuid format has no 0xD.1), OSXSAVE, AVX512F, AMX-TILE.
SUMMARY: dict[str, tuple[int, tuple[int, ...], tuple[int, ...] | None, int, int, int]] = {
    f"{INSTLATX64}/AuthenticAMD0830F10_K17_Rome_CPUID.txt":
        (0x00830F10, (0x207, 0x340, 0x380), (0xF, 0x340, 0x0), 1, 0, 0),
    f"{INSTLATX64}/AuthenticAMD0A00F11_K19_Milan_02_CPUID.txt":
        (0x00A00F11, (0x207, 0x340, 0x988), (0xF, 0x340, 0x1800), 1, 0, 0),
    f"{INSTLATX64}/AuthenticAMD0A10F11_K19_Genoa_02_CPUID.txt":
        (0x00A10F11, (0x2E7, 0x980, 0x988), (0xF, 0x990, 0x1800), 1, 1, 0),
    f"{INSTLATX64}/AuthenticAMD0A60F12_K19_Raphael_04_CPUID.txt":
        (0x00A60F12, (0x2E7, 0x980, 0x988), (0xF, 0x990, 0x1800), 1, 1, 0),
    f"{INSTLATX64}/AuthenticAMD0B00F21_K20_Turin_01_CPUID.txt":
        (0x00B00F21, (0x2E7, 0x980, 0x988), (0xF, 0x990, 0x1800), 1, 1, 0),
    f"{INSTLATX64}/AuthenticAMD0B40F40_K20_GraniteRidge_02_CPUID.txt":
        (0x00B40F40, (0x2E7, 0x980, 0x988), (0xF, 0x990, 0x1800), 1, 1, 0),
    f"{INSTLATX64}/GenuineIntel00306F2_HaswellEP_02_CPUID.txt":
        (0x000306F2, (0x7, 0x340, 0x340), (0x1, 0x0, 0x0), 1, 0, 0),
    f"{INSTLATX64}/GenuineIntel00406F1_BroadwellE_CPUID4.txt":
        (0x000406F1, (0x7, 0x340, 0x340), (0x1, 0x0, 0x0), 1, 0, 0),
    f"{INSTLATX64}/GenuineIntel0050654_SkylakeXeon_CPUID5.txt":
        (0x00050654, (0x2FF, 0xA80, 0xA88), (0xF, 0xA00, 0x100), 1, 1, 0),
    f"{INSTLATX64}/GenuineIntel0050657_CascadeLakeSP_CPUID1.txt":
        (0x00050657, (0x2FF, 0xA80, 0xA88), (0xF, 0xA80, 0x100), 1, 1, 0),
    f"{INSTLATX64}/GenuineIntel00606A6_ICX_CPUID3.txt":
        (0x000606A6, (0x2E7, 0xA80, 0xA88), (0xF, 0xA00, 0x100), 1, 1, 0),
    SPR_05: (0x000806F8, (0x602E7, 0x2B00, 0x2B00), (0x1F, 0x2A80, 0xDD00), 1, 1, 1),
    SPR_06: (0x000806F8, (0x602E7, 0x2B00, 0x2B00), (0x1F, 0x2A80, 0xDD00), 1, 1, 1),
    f"{INSTLATX64}/GenuineIntel0090672_AlderLake_01_BC_AVX512_CPUID.txt":
        (0x00090672, (0x2E7, 0xA80, 0xA88), (0xF, 0xA10, 0x19900), 1, 1, 0),
    ALDER_HYBRID: (0x00090672, (0x207, 0x340, 0xA88), (0xF, 0x3D0, 0x19900), 1, 0, 0),
    f"{INSTLATX64}/GenuineIntel00A06D1_GraniteRapids_03_CPUID.txt":
        (0x000A06D1, (0x602E7, 0x2B00, 0x2B00), (0x1F, 0x2A80, 0x1DD00), 1, 1, 1),
    f"{INSTLATX64}/GenuineIntel00B0671_RaptorLake_13_CPUID.txt":
        (0x000B0671, (0x207, 0x340, 0xA88), (0xF, 0x3D0, 0x19900), 1, 0, 0),
    f"{INSTLATX64}/GenuineIntel00C06F2_EmeraldRapids_01_CPUID.txt":
        (0x000C06F2, (0x602E7, 0x2B00, 0x2B00), (0x1F, 0x2A80, 0xDD00), 1, 1, 1),
    f"{INSTLATX64}/GenuineIntel00C06F2_EmeraldRapids_03_CPUID.txt":
        (0x000C06F2, (0x602E7, 0xA80, 0x2B00), (0x1F, 0xA10, 0xDD00), 1, 1, 1),
    f"{LIBCPUID}/12th-gen-intel-core-i9-12900k.test":
        (0x00090672, (0x207, 0x340, 0xA88), (0xF, 0x3D0, 0x19900), 1, 0, 0),
    RYZEN_NATIVE: (0x00A70F52, (0x2E7, 0x988, 0x988), None, 1, 1, 0),
    f"{LIBCPUID}/amd-ryzen-9-7900x-12-core-processor.test":
        (0x00A60F12, (0x2E7, 0x980, 0x988), (0xF, 0x990, 0x1800), 1, 1, 0),
    f"{LIBCPUID}/amd-ryzen-9-9950x-16-core-processor.test":
        (0x00B40F40, (0x2E7, 0x980, 0x988), (0xF, 0x990, 0x1800), 1, 1, 0),
    f"{LIBCPUID}/epyc-milan.test":
        (0x00A00F11, (0x207, 0x340, 0x988), (0xF, 0x350, 0x1800), 1, 0, 0),
    f"{LIBCPUID}/epyc-rome.test":
        (0x00830F10, (0x207, 0x340, 0x380), (0xF, 0x340, 0x0), 1, 0, 0),
    I3_NATIVE: (0x000306C3, (0x7, 0x340, 0x340), None, 1, 0, 0),
    f"{LIBCPUID}/intel-core-i7-1065g7-cpu.test":
        (0x000706E5, (0x2E7, 0xA80, 0xA88), (0xF, 0xA00, 0x2100), 1, 1, 0),
    f"{LIBCPUID}/intel-core-i7-4770-cpu.test":
        (0x000306C3, (0x7, 0x340, 0x340), (0x1, 0x0, 0x0), 1, 0, 0),
    f"{LIBCPUID}/intel-core-i7-5775c-cpu.test":
        (0x00040671, (0x7, 0x340, 0x340), (0x1, 0x0, 0x0), 1, 0, 0),
    f"{LIBCPUID}/intel-xeon-d-1718t-cpu.test":
        (0x000606C1, (0xE7, 0xA80, 0xA80), (0xF, 0x980, 0x0), 1, 1, 0),
    f"{LIBCPUID}/intel-xeon-platinum-8280-cpu.test":
        (0x00050657, (0x2FF, 0xA80, 0xA88), (0xF, 0xA80, 0x100), 1, 1, 0),
    LOCAL_RAW: (0x00A10F11, (0xE7, 0x980, 0x980), (0xF, 0x9A8, 0x1800), 1, 1, 0),
}

# The CPUID lines of these libcpuid files equal the InstLatx64 ones.
SAME_AS_INSTLATX64 = {
    "intel-xeon-w7-2475x.test": "GenuineIntel00806F8_SapphireRapids_05_CPUID.txt",
    "intel-xeon-w9-3475x.test": "GenuineIntel00806F8_SapphireRapids_06_CPUID.txt",
    "intel-xeon-platinum-8570.test": "GenuineIntel00C06F2_EmeraldRapids_03_CPUID.txt",
    "intel-xeon-gold-6154-cpu.test": "GenuineIntel0050654_SkylakeXeon_CPUID5.txt",
    "epyc-genoa.test": "AuthenticAMD0A10F11_K19_Genoa_02_CPUID.txt",
    "epyc-turin.test": "AuthenticAMD0B00F21_K20_Turin_01_CPUID.txt",
}


def dump_files(data_dir: Path) -> list[Path]:
    """Return every file under cpuid-dumps/, sorted."""
    return sorted(path for path in (data_dir / "cpuid-dumps").rglob("*") if path.is_file())


def fingerprint_files(data_dir: Path) -> list[Path]:
    """Return every Firecracker fingerprint, sorted."""
    return sorted((data_dir / "firecracker").glob("fingerprint_*.json"))


def read(data_dir: Path, name: str, **kwargs: int) -> CpuidSet:
    """Load one data file by its name under data/."""
    return load_cpuid(data_dir / name, **kwargs)


def test_every_dump_file_is_read(data_dir: Path) -> None:
    """Every file under cpuid-dumps/ reads as CPU #0 of its format, or is refused clearly."""
    files = dump_files(data_dir)
    assert len(files) == 19 + 18 + 2 + 1
    failures = []
    for path in files:
        name = path.relative_to(data_dir).as_posix()
        if name in NOT_DUMPS:
            with pytest.raises(InputError) as caught:
                load_cpuid(path)
            if not str(caught.value).startswith(str(path) + NOT_DUMPS[name]):
                failures.append(f"{name}: {caught.value}")
            continue
        try:
            cpuid = load_cpuid(path)
        except InputError as error:  # pragma: no cover - reported below
            failures.append(f"{name}: {error}")
            continue
        expected_format = FOLDER_FORMATS[path.parent.name]
        problems = [
            cpuid.meta.get("format") != expected_format and f"format {cpuid.meta}",
            cpuid.role != "cpu" and "role",
            cpuid.meta.get("cpu") != "0" and "cpu",
            cpuid.source != str(path) and "source",
            cpuid.vendor not in ("GenuineIntel", "AuthenticAMD") and f"vendor {cpuid.vendor!r}",
            len(cpuid) < 25 and f"only {len(cpuid)} entries",
            cpuid.get(0xD, 0).eax & 0x3 != 0x3 and "0xD.0 EAX lacks x87|SSE",
            not cpuid.brand and "no brand string",
        ]
        failures.extend(f"{name}: {problem}" for problem in problems if problem)
    assert failures == []


def test_every_fingerprint_is_read(data_dir: Path) -> None:
    """Every Firecracker fingerprint loads as a guest table with the reset 0xD EBX of 0x240."""
    if not HAS_FIRECRACKER:
        pytest.skip("xstate_check.sources.firecracker is not there yet")
    files = fingerprint_files(data_dir)
    assert len(files) == 24
    for path in files:
        cpuid = load_cpuid(path)
        assert cpuid.meta["format"] == "firecracker-fingerprint", path
        assert cpuid.role == "guest", path
        # KVM's table at vCPU creation has XCR0 = x87|SSE, 576 bytes.
        assert cpuid.get(0xD, 0).ebx == 0x240, path
        assert cpuid.vendor in ("GenuineIntel", "AuthenticAMD"), path


@pytest.mark.parametrize("name", sorted(SUMMARY))
def test_leaf_d_summary_matches_formats_table(data_dir: Path, name: str) -> None:
    """CPU #0 of each dump gives the signature, 0xD.0, 0xD.1 and feature bits of FORMATS §6."""
    signature, sub0, sub1, osxsave, avx512f, amx_tile = SUMMARY[name]
    cpuid = read(data_dir, name)
    assert cpuid.signature == signature
    assert cpuid.get(0xD, 0)[:3] == sub0
    if sub1 is None:
        assert not cpuid.has(0xD, 1)
        assert not cpuid.leaf_0xd_complete
    else:
        assert cpuid.get(0xD, 1)[:3] == sub1
        assert cpuid.leaf_0xd_complete
    assert (cpuid.feature("OSXSAVE"), cpuid.feature("AVX512F"), cpuid.feature("AMX_TILE")) == (
        bool(osxsave), bool(avx512f), bool(amx_tile)
    )


def test_sapphire_rapids_amx_values(data_dir: Path) -> None:
    """SPR w7-2475X: the AMX row, and the 0xD subleaves AIDA omits."""
    cpuid = read(data_dir, SPR_05)
    assert cpuid.get(0x7, 0).edx == 0xFFDD4430
    assert cpuid.get(0xD, 0) == Registers(0x602E7, 0x2B00, 0x2B00, 0)
    assert cpuid.get(0xD, 1) == Registers(0x1F, 0x2A80, 0xDD00, 0)
    assert cpuid.get(0xD, 0x11) == Registers(0x40, 0xAC0, 0x2, 0)
    assert cpuid.get(0xD, 0x12) == Registers(0x2000, 0xB00, 0x6, 0)
    assert cpuid.get(0x1D, 1) == Registers(0x04002000, 0x00080040, 0x10, 0)
    assert cpuid.get(0x1E, 0) == Registers(0, 0x4010, 0, 0)
    # All-zero subleaves are omitted by AIDA: MPX 3/4, 0x0D and 0x10 are absent (read as zero).
    assert cpuid.subleaves(0xD) == [0, 1, 2, 5, 6, 7, 8, 9, 10, 11, 12, 14, 15, 17, 18]
    assert not cpuid.has(0xD, 3)
    assert cpuid.get(0xD, 3) == Registers()
    # Leaf 0x80000006 has the unbalanced bracket "[L2: 2048 KB] / L3: 0 KB]".
    assert cpuid.get(0x80000006, 0) == Registers(0, 0, 0x08007040, 0)
    assert cpuid.brand == "Intel(R) Xeon(R) w7-2475X"


def test_duplicated_subleaf_tag_first_wins(data_dir: Path) -> None:
    """SPR w9-3475X tags leaf 0x1E "[SL 00] [SL 00]": one entry, subleaf 0 (line 3680)."""
    cpuid = read(data_dir, SPR_06)
    assert cpuid.subleaves(0x1E) == [0]
    assert cpuid.get(0x1E, 0) == Registers(0, 0x4010, 0, 0)


def test_genoa_amd_layout_offsets(data_dir: Path) -> None:
    """Genoa puts opmask at 0x340, ZMM_Hi256 at 0x380, Hi16_ZMM at 0x580, PKRU at 0x980."""
    cpuid = read(data_dir, GENOA)
    offsets = {sub: cpuid.get(0xD, sub).ebx for sub in (5, 6, 7, 9)}
    assert offsets == {5: 0x340, 6: 0x380, 7: 0x580, 9: 0x980}


def test_rome_untagged_leaf_7_is_subleaf_0(data_dir: Path) -> None:
    """Rome's leaf 7 line has no [SL] tag (line 11): it is subleaf 0, the only one."""
    cpuid = read(data_dir, ROME)
    assert cpuid.subleaves(7) == [0]
    assert cpuid.get(7, 0) == Registers(0, 0x219C91A9, 0x00400004, 0)
    assert cpuid.get(0xD, 9) == Registers(0x40, 0x340, 0, 0)  # Zen 2: PKRU 64 bytes at 0x340


def test_cpu_selection(data_dir: Path) -> None:
    """cpu=1 reads the second block (APIC ID 1 in leaf 1 EBX); a missing CPU is an error."""
    path = data_dir / SPR_05
    first = load_cpuid(path)
    second = load_cpuid(path, cpu=1)
    assert first.get(1, 0).ebx == 0x00800800
    assert second.get(1, 0).ebx == 0x01800800
    assert second.meta["cpu"] == "1"
    assert first.get(0xD, 0x12) == second.get(0xD, 0x12)
    last = load_cpuid(path, cpu=39)
    assert last.meta["cpu"] == "39"
    with pytest.raises(InputError) as caught:
        load_cpuid(path, cpu=40)
    assert str(caught.value) == f"{path}: expected logical CPU 40; the dump holds CPUs 0-39"


def test_hybrid_alder_lake_core_types(data_dir: Path) -> None:
    """Alder Lake hybrid: CPU 0 is a P-core, CPU 16 an E-core; both report the same 0xD."""
    path = data_dir / ALDER_HYBRID
    p_core = load_cpuid(path)
    e_core = load_cpuid(path, cpu=16)
    assert p_core.meta["core_type"] == "Intel Core"
    assert e_core.meta["core_type"] == "Intel Atom"
    assert p_core.get(0x1A, 0).eax == 0x40000001  # line 104, "[Core: Golden Cove]"
    assert e_core.get(0x1A, 0).eax == 0x20000001  # "[Atom: Gracemont]"
    p_leaf_d = [row for row in p_core.rows() if row[0] == 0xD]
    assert p_leaf_d == [row for row in e_core.rows() if row[0] == 0xD]
    # FORMATS.md §5.1: room for AVX-512 (ECX 0xA88) though EAX has no AVX-512 bit.
    assert p_core.get(0xD, 0)[:3] == (0x207, 0x340, 0xA88)


def test_aida64_report_header_is_skipped(data_dir: Path) -> None:
    """The Haswell report header's "CPUID Manufacturer/CPU Name/Revision" lines are no registers."""
    cpuid = read(data_dir, HASWELL_REPORT)
    assert cpuid.get(0, 0).eax == 0xF
    assert cpuid.meta["os"] == "Microsoft Windows 11 Pro 10.0.28000.1764 (64-bit)"
    assert cpuid.meta["program"] == "AIDA64 Engineer v8.25.8226 Beta"
    assert cpuid.max_basic_leaf == 0xF


def test_affmask_headers(data_dir: Path) -> None:
    """Platinum 8280's "CPU#nnn AffMask" blocks: cpu=55 is the last (line 2698, APIC ID 0x3D)."""
    path = data_dir / LIBCPUID / "intel-xeon-platinum-8280-cpu.test"
    last = load_cpuid(path, cpu=55)
    assert last.meta["cpu"] == "55"
    assert last.get(1, 0).ebx == 0x3D400800
    assert load_cpuid(path).get(1, 0).ebx == 0x00400800


def test_libcpuid_stops_at_expected_results(data_dir: Path) -> None:
    """The 12900K .test: 24 CPU blocks, then the dashed decode block, which is not data."""
    path = data_dir / LIBCPUID / "12th-gen-intel-core-i9-12900k.test"
    assert load_cpuid(path, cpu=23).meta["cpu"] == "23"
    with pytest.raises(InputError, match="expected logical CPU 24; the dump holds CPUs 0-23"):
        load_cpuid(path, cpu=24)
    assert load_cpuid(path).meta["dialect"] == "aida64"


@pytest.mark.parametrize("libcpuid_name", sorted(SAME_AS_INSTLATX64))
def test_libcpuid_copies_equal_instlatx64(data_dir: Path, libcpuid_name: str) -> None:
    """libcpuid's copies of InstLatx64 dumps give the same table (FORMATS.md §3a)."""
    copy = read(data_dir, f"{LIBCPUID}/{libcpuid_name}")
    original = read(data_dir, f"{INSTLATX64}/{SAME_AS_INSTLATX64[libcpuid_name]}")
    assert copy.rows() == original.rows()
    assert copy.meta["format"] == "libcpuid"


def test_native_libcpuid_i3_4130(data_dir: Path) -> None:
    """i3-4130 native: basic_cpuid[13] is 0xD.0; the repeats past the max leaf are dropped."""
    cpuid = read(data_dir, I3_NATIVE)
    assert cpuid.meta["dialect"] == "native"
    assert cpuid.max_basic_leaf == 0xD
    assert cpuid.get(0xD, 0) == Registers(0x7, 0x340, 0x340, 0)  # line 14
    assert not cpuid.has(0xE)  # basic_cpuid[14] repeats leaf 0xD: not a real leaf
    assert not cpuid.has(0x80000009)  # ext_cpuid[9], past 0x80000008, likewise
    assert cpuid.get(0x80000008, 0).eax == 0x3027
    assert cpuid.get(4, 3) == Registers(0x1C03C163, 0x02C0003F, 0xFFF, 0x6)  # intel_fn4[3]
    assert cpuid.get(0xB, 1) == Registers(0x4, 0x4, 0x201, 0x1)  # intel_fn11[1]
    assert cpuid.brand == "Intel(R) Core(TM) i3-4130 CPU @ 3.40GHz"
    assert not cpuid.leaf_0xd_complete


def test_native_libcpuid_logical_cpu_headers(data_dir: Path) -> None:
    """Ryzen 8845HS native: "Logical CPU #N" blocks; cpu=15 is the last, 0x8000001D kept."""
    path = data_dir / RYZEN_NATIVE
    last = load_cpuid(path, cpu=15)
    assert last.meta["cpu"] == "15"
    assert last.get(0xD, 0)[:3] == (0x2E7, 0x988, 0x988)
    # amd_fn8000001dh[2], line 80
    assert load_cpuid(path).get(0x8000001D, 2) == Registers(0x4143, 0x01C0003F, 0x7FF, 0x2)
    with pytest.raises(InputError, match="expected logical CPU 16; the dump holds CPUs 0-15"):
        load_cpuid(path, cpu=16)


def test_cpuid_raw_local_guest(data_dir: Path) -> None:
    """The local Firecracker guest: XCR0 0xE7 (no PKRU), 0xD.1 EBX 0x9A8, CET subleaves."""
    cpuid = read(data_dir, LOCAL_RAW)
    assert cpuid.get(0xD, 1) == Registers(0xF, 0x9A8, 0x1800, 0)
    assert cpuid.get(0xD, 0xB) == Registers(0x10, 0, 0x1, 0)
    assert not cpuid.feature("PKU")
    assert cpuid.get(0x40000000, 0).ebx == 0x4B4D564B  # "KVMK"
    assert cpuid.brand == "AMD EPYC"


def test_cpuid_raw_all_cpus(data_dir: Path) -> None:
    """`cpuid -r` without -1 has "CPU N:" blocks; cpu=N selects by N."""
    lines = (data_dir / LOCAL_RAW).read_text().splitlines()[1:]
    second = [line.replace("ebx=0x01020800", "ebx=0x03020800") for line in lines]
    text = "\n".join(["CPU 0:", *lines, "CPU 1:", *second]) + "\n"
    assert read_cpuid_raw(text, "all.txt").get(1, 0).ebx == 0x01020800
    assert read_cpuid_raw(text, "all.txt", cpu=1).get(1, 0).ebx == 0x03020800
    with pytest.raises(InputError, match="expected logical CPU 2; the dump holds CPUs 0, 1"):
        read_cpuid_raw(text, "all.txt", cpu=2)


def test_variant_c_untagged_repeats_are_subleaves(data_dir: Path) -> None:
    """Without headers or [SL] tags, the n-th repeat of a leaf is subleaf n; leaf 0 starts a CPU."""
    text = (data_dir / SPR_05).read_text()
    blocks = re.split(r"^------\[ CPUID Registers / Logical CPU #\d+ \]------$", text, flags=re.M)
    plain = "\n".join(
        re.sub(r" \[SL [0-9A-F]{2}\]", "", line)
        for block in blocks[1:3]
        for line in block.splitlines()
        if line.startswith("CPUID ")
    )
    first = read_aida64(plain, "plain.txt")
    tagged = read(data_dir, SPR_05)
    assert [first.get(4, sub) for sub in range(4)] == [tagged.get(4, sub) for sub in range(4)]
    assert [first.get(7, sub) for sub in range(3)] == [tagged.get(7, sub) for sub in range(3)]
    assert read_aida64(plain, "plain.txt", cpu=1).get(1, 0).ebx == 0x01800800


def test_crlf_and_byte_order_marks(data_dir: Path, tmp_path: Path) -> None:
    """CRLF line ends, a UTF-8 BOM and UTF-16 with a BOM give the same table."""
    original = read(data_dir, SPR_05)
    text = (data_dir / SPR_05).read_text().replace("\n", "\r\n")
    for name, data in (
        ("crlf-bom.txt", b"\xef\xbb\xbf" + text.encode()),
        ("utf16.txt", text.encode("utf-16")),
    ):
        (tmp_path / name).write_bytes(data)
        assert load_cpuid(tmp_path / name).rows() == original.rows(), name


# --------------------------------------------------------------------------- own JSON


def round_trip_sources(data_dir: Path) -> list[Path]:
    """Return every dump and fingerprint that reads."""
    dumps = [
        path for path in dump_files(data_dir)
        if path.relative_to(data_dir).as_posix() not in NOT_DUMPS
    ]
    return dumps + (fingerprint_files(data_dir) if HAS_FIRECRACKER else [])


def test_own_json_round_trip(data_dir: Path) -> None:
    """convert -> read gives equal entries, flags, meta, role and source, and the same text."""
    sources = round_trip_sources(data_dir)
    assert len(sources) >= 38
    for path in sources:
        cpuid = load_cpuid(path)
        text = to_json_text(cpuid)
        back = read_cpuid_json(text, "converted.json")
        assert back.rows() == cpuid.rows(), path
        assert dict(back.flags) == dict(cpuid.flags), path
        assert dict(back.meta) == dict(cpuid.meta), path
        assert back.source == cpuid.source, path
        assert to_json_text(back) == text, path


def test_own_json_keeps_flags_and_guest_role(data_dir: Path, tmp_path: Path) -> None:
    """Recorded KVM flags and role "guest" survive a file round trip through load_cpuid."""
    cpuid = read(data_dir, SPR_05)
    guest = cpuid.replace(
        flags={(0xD, 0): 1, (1, 0): 0}, role="guest"
    )
    target = tmp_path / "guest.txt"  # the name says nothing: detection reads the content
    target.write_text(to_json_text(guest))
    back = load_cpuid(target)
    assert dict(back.flags) == {(0xD, 0): 1, (1, 0): 0}
    assert back.role == "guest"
    assert back.meta["format"] == "aida64"
    assert '"flags": 1, "eax": "0x000602e7"' in target.read_text()


def test_own_json_layout() -> None:
    """The written JSON: schema first, sorted entries, lower-case hex, meta without role."""
    cpuid = CpuidSet.from_rows(
        [(0xD, 1, 0xF, 0x9A8, 0x1800, 0), (0, 0, 0x1C, 1, 2, 3)],
        "mem", meta={"format": "cpuid-raw", "cpu": "0"},
    )
    assert to_json_text(cpuid) == (
        "{\n"
        f'  "schema": "{SCHEMA}",\n'
        '  "source": "mem",\n'
        '  "role": "cpu",\n'
        '  "meta": {\n'
        '    "cpu": "0",\n'
        '    "format": "cpuid-raw"\n'
        "  },\n"
        '  "entries": [\n'
        '    {"leaf": "0x00000000", "subleaf": "0x0", "eax": "0x0000001c", "ebx": "0x00000001", '
        '"ecx": "0x00000002", "edx": "0x00000003"},\n'
        '    {"leaf": "0x0000000d", "subleaf": "0x1", "eax": "0x0000000f", "ebx": "0x000009a8", '
        '"ecx": "0x00001800", "edx": "0x00000000"}\n'
        "  ]\n"
        "}\n"
    )


def test_own_json_defaults() -> None:
    """Only schema and entries are required; format defaults to xstate-check-json."""
    cpuid = read_cpuid_json(f'{{"schema": "{SCHEMA}", "entries": []}}', "min.json")
    assert len(cpuid) == 0
    assert cpuid.source == "min.json"
    assert dict(cpuid.meta) == {"format": "xstate-check-json"}
    assert (cpuid.role, cpuid.source_kind, cpuid.leaf_0xd_complete) == ("cpu", "file", True)


# --------------------------------------------------------------------------- malformed input

AIDA_BAD_HEX = (
    "------[ CPUID Registers / Logical CPU #0 ]------\n"
    "\n"
    "CPUID 00000000: 00000020-756E6547-6C65746E-49656E69 [GenuineIntel]\n"
    "CPUID 0000000D: 000602G7-00002B00-00002B00-00000000 [SL 00] [x87]\n"
)


def test_bad_hex_names_line_and_column(tmp_path: Path) -> None:
    """A non-hex digit in EAX: file, line 4, column of the G, and a caret under it."""
    path = tmp_path / "bad-hex.txt"
    path.write_text(AIDA_BAD_HEX)
    with pytest.raises(InputError) as caught:
        load_cpuid(path)
    assert str(caught.value) == (
        f"{path}:4:23: expected EAX as 8 hexadecimal digits\n"
        "    CPUID 0000000D: 000602G7-00002B00-00002B00-00000000 [SL 00] [x87]\n"
        "                    ~~~~~~^"
    )


def test_malformed_register_line(tmp_path: Path) -> None:
    """A register line with a short EBX: the column is that of the first wrong character."""
    path = tmp_path / "short.txt"
    path.write_text(AIDA_BAD_HEX.replace("000602G7-00002B00-00002B00-00000000", "000602E7-2B00"))
    with pytest.raises(InputError) as caught:
        load_cpuid(path)
    assert str(caught.value) == (
        f"{path}:4:30: expected EBX as 8 hexadecimal digits\n"
        "    CPUID 0000000D: 000602E7-2B00 [SL 00] [x87]\n"
        "                             ~~~~^"
    )


@pytest.mark.parametrize(
    ("text", "where", "expected"),
    [
        ("basic_cpuid[0]=0000000d 756e6547 6c65746e 49656e69\n"
         "basic_cpuid[13]=00000007 00000340 0000034\n", ":2:", "ECX as 8 hexadecimal digits"),
        ("basic_cpuid[0]=0000000d 756e6547 6c65746e 49656e69\n"
         "basic_cpuid[13]=00000007 00000340 00000340 00000000\n"
         "basic_cpuid[13]=00000007 00000340 00000341 00000000\n",
         ":3:1:", "basic_cpuid[13] is given twice"),
        ("CPU:\n   0x00000000 0x00: eax=0x0000001c ebx=0x68747541 ecx=0x444d4163\n",
         ":2:", '" edx=0x" after ECX'),
        ("CPU:\n   0x0000000d 0x00: eax=0x000000e7 ebx=0x00000980 ecx=0x00000980 edx=0x0\n",
         ":2:", "EDX as 8 hexadecimal digits"),
        ("CPUID 00000000: 00000020-756E6547-6C65746E-49656E69\n"
         "CPUID 00000001: 000806F8-00800800-7FFEFBFF-BFEBFBFF0\n", ":2:", "EDX as 8 hexadecimal"),
        ("CPUID 00000000: 00000020-756E6547-6C65746E-49656E69\n"
         "CPUID 0000000Z: 000806F8-00800800-7FFEFBFF-BFEBFBFF\n", ":2:", "the leaf as 8 hex"),
        ("CPUID 0000000D: 00000007-00000340-00000340-00000000 [SL 00]\n"
         "CPUID 0000000D: 00000007-00000340-00000380-00000000 [SL 00]\n",
         ":2:1:", "leaf 0xd subleaf 0x0 already has other values at line 1"),
    ],
)
def test_malformed_lines_of_each_format(
    tmp_path: Path, text: str, where: str, expected: str
) -> None:
    """Malformed lines of every text format name the file, the line and what was expected."""
    path = tmp_path / "dump.txt"
    path.write_text(text)
    with pytest.raises(InputError) as caught:
        load_cpuid(path)
    message = str(caught.value)
    assert message.startswith(f"{path}{where}")
    assert expected in message.splitlines()[0]


def own_json(data_dir: Path) -> str:
    """Return the own JSON of SPR w7-2475X CPU #0."""
    return to_json_text(read(data_dir, SPR_05))


def test_truncated_json(data_dir: Path, tmp_path: Path) -> None:
    """Truncated own JSON: the JSON error with its line and column."""
    path = tmp_path / "cut.json"
    path.write_text(own_json(data_dir)[:600])
    with pytest.raises(InputError) as caught:
        load_cpuid(path)
    assert re.match(rf"{re.escape(str(path))}:1\d:\d+: expected valid JSON: ", str(caught.value))


def test_decimal_leaf_in_own_json(data_dir: Path, tmp_path: Path) -> None:
    """A decimal leaf ("13") is refused at its line, as in Firecracker templates."""
    text = own_json(data_dir).replace('"leaf": "0x0000000d", "subleaf": "0x1"',
                                      '"leaf": "13", "subleaf": "0x1"')
    path = tmp_path / "decimal.json"
    path.write_text(text)
    line = next(i for i, row in enumerate(text.splitlines(), 1) if '"leaf": "13"' in row)
    with pytest.raises(InputError) as caught:
        load_cpuid(path)
    assert str(caught.value).splitlines()[:2] == [
        f'{path}:{line}:14: expected "leaf" as a string of "0x" and 1 to 8 hexadecimal digits '
        'such as "0x0000000d"; found a string "13"',
        '        {"leaf": "13", "subleaf": "0x1", "eax": "0x0000001f", "ebx": "0x00002a80", '
        '"ecx": "0x0000dd00", "edx": "0x00000000"}…',  # lines are cut to 120 characters
    ]


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('"role": "cpu",', '"role": "cpu", "colour": "red",',
         'expected one of the keys "schema", "source", "role", "meta", "entries"; found "colour"'),
        ('"subleaf": "0x12",', '"subleaf": "0x12", "mask": "0x1",',
         'expected one of the entry keys "leaf", "subleaf", "flags", "eax", "ebx", "ecx", "edx";'
         ' found "mask"'),
        ('"subleaf": "0x12",', '"subleaf": "0x12", "flags": -1,',
         'expected "flags" as an integer from 0 to 4294967295; found -1'),
        ('"subleaf": "0x12",', '"subleaf": "0x11",',
         "expected each leaf and subleaf once; leaf 0xd subleaf 0x11 is already at line"),
        # Entries that are not well formed are read again field by field, in this order:
        # not an object, an unknown key, a missing key, a value that is not "0x" hex.
        ('{"leaf": "0x0000000d", "subleaf": "0x1",',
         '"0xd", {"leaf": "0x0000000d", "subleaf": "0x1",',
         "expected an entry object; found a string"),
        ('"subleaf": "0x1", "eax": "0x0000001f"', '"subleaf": "0x1", "flags": 0',
         'expected the entry keys "eax"'),
        ('"subleaf": "0x1", "eax": "0x0000001f"', '"subleaf": "0x1", "eax": "0x00000001f"',
         'expected "eax" as a string of "0x" and 1 to 8 hexadecimal digits such as '
         '"0x0000000d"; found a string "0x00000001f"'),
        ('"subleaf": "0x1", "eax": "0x0000001f"', '"subleaf": "0x1", "eax": "0X0000001F"',
         'expected "eax" as a string of "0x"'),
        ('"subleaf": "0x1", "eax": "0x0000001f"', '"subleaf": "0x1", "eax": 31',
         'expected "eax" as a string of "0x" and 1 to 8 hexadecimal digits such as '
         '"0x0000000d"; found a number 31'),
        ('"role": "cpu"', '"role": "host"', 'expected "role" to be "cpu" or "guest"; found "host"'),
        (f'"schema": "{SCHEMA}"', '"schema": "xstate-check/1"',
         f'expected "schema": "{SCHEMA}"; found "xstate-check/1"'),
        ('"cpu": "0"', '"cpu": 0', 'expected "meta"."cpu" as a string; found a number'),
        ('"cpu": "0"', '"cpu": "0", "cpu": "1"', 'expected each key once in an object'),
    ],
)
def test_own_json_schema_errors(
    data_dir: Path, tmp_path: Path, old: str, new: str, expected: str
) -> None:
    """Unknown keys, bad types and repeats in own JSON are errors at the offending line."""
    text = own_json(data_dir)
    assert old in text
    changed = text.replace(old, new, 1)
    path = tmp_path / "changed.json"
    path.write_text(changed)
    line = max(i for i, row in enumerate(changed.splitlines(), 1) if new in row)
    with pytest.raises(InputError) as caught:
        load_cpuid(path)
    first = str(caught.value).splitlines()[0]
    assert first.startswith(f"{path}:{line}:")
    assert expected in first


def test_long_malformed_line_gives_a_short_message(tmp_path: Path) -> None:
    """A malformed register line of 100 000 characters: the snippet is cut around the error."""
    path = tmp_path / "long.txt"
    path.write_text("CPUID 0000000D: " + "0" * 100_000 + "\n")
    with pytest.raises(InputError) as caught:
        load_cpuid(path)
    first, snippet, marker = str(caught.value).splitlines()
    assert first == f"{path}:1:25: expected EAX as 8 hexadecimal digits"
    assert len(snippet) <= 4 + 122
    assert snippet.endswith("0…")
    assert marker.endswith("^")


# --------------------------------------------------------------------------- numbers out of range
# Found by `python fuzz/run.py` (fuzz-out/aida64, libcpuid, cpuid-raw): a decimal number of
# thousands of digits made int() raise ValueError; a subleaf of 2**64-1 was accepted and then
# refused by the own-JSON reader; CPUs 0 and a huge number made the "the dump holds" message
# build the whole range between them.

LEAF_0 = "CPUID 00000000: 0000000D-756E6547-6C65746E-49656E69\n"
NATIVE_LEAF_0 = "basic_cpuid[0]=0000000d 756e6547 6c65746e 49656e69\n"
RAW_LEAF_0 = "   0x00000000 0x00: eax=0x0000000d ebx=0x756e6547 ecx=0x6c65746e edx=0x49656e69\n"
NINES = "9" * 5000


@pytest.mark.parametrize(
    ("header", "reader", "column"),
    [
        (f"------[ CPUID Registers / Logical CPU #{NINES} ]------\n{LEAF_0}", read_aida64, 40),
        (f"------[ Logical CPU #{NINES} ]------\n{LEAF_0}", read_aida64, 22),
        (f"CPU#{NINES} AffMask: 0x0000000000000001\n{LEAF_0}", read_aida64, 5),
        (f"_________________ Logical CPU #{NINES} _________________\n{NATIVE_LEAF_0}",
         read_libcpuid, 32),
        (f"CPU {NINES}:\n{RAW_LEAF_0}", read_cpuid_raw, 5),
    ],
)
def test_cpu_number_of_thousands_of_digits_is_an_input_error(
    header: str, reader: Callable[[str, str], CpuidSet], column: int
) -> None:
    """A CPU block header with a 5000-digit number is an InputError at its line and column."""
    with pytest.raises(InputError) as caught:
        reader(header, "dump.txt")
    first, snippet, marker = str(caught.value).splitlines()
    assert first == (
        f"dump.txt:1:{column}: expected a logical CPU number from 0 to 4294967295; "
        "found a number of 5000 digits"
    )
    assert len(snippet) <= 4 + SNIPPET_WIDTH + 2
    assert marker.index("~") == 4 + column - 1  # the caret starts under the first digit


def test_largest_cpu_number_is_read() -> None:
    """Logical CPU 4294967295 (the largest 32-bit number) is a CPU like any other."""
    text = f"CPU 0:\n{RAW_LEAF_0}CPU 4294967295:\n{RAW_LEAF_0.replace('0d', '0e', 1)}"
    cpuid = read_cpuid_raw(text, "raw.txt", cpu=4294967295)
    assert cpuid.meta["cpu"] == "4294967295"
    assert cpuid.get(0, 0).eax == 0xE
    with pytest.raises(InputError, match="found 4294967296\n"):
        read_cpuid_raw(text.replace("4294967295", "4294967296"), "raw.txt")


@pytest.mark.parametrize(
    ("line", "column", "expected"),
    [
        (f"basic_cpuid[{NINES}]=00000000 00000000 00000000 00000000", 13,
         "the leaf index N of basic_cpuid[N] from 0 to 2147483647; found a number of 5000 digits"),
        (f"ext_cpuid[{NINES}]=00000000 00000000 00000000 00000000", 11,
         "the leaf index N of ext_cpuid[N] from 0 to 2147483647; found a number of 5000 digits"),
        ("ext_cpuid[2147483648]=00000000 00000000 00000000 00000000", 11,
         "the leaf index N of ext_cpuid[N] from 0 to 2147483647; found 2147483648"),
        (f"intel_fn4[{NINES}]=00000000 00000000 00000000 00000000", 11,
         "the subleaf index N of intel_fn4[N] from 0 to 4294967295; found a number of 5000 digits"),
        ("intel_fn4[18446744073709551615]=00000000 00000000 00000000 00000000", 11,
         "the subleaf index N of intel_fn4[N] from 0 to 4294967295; found a number of 20 digits"),
        ("intel_fn11[4294967296]=00000000 00000000 00000002 00000000", 12,
         "the subleaf index N of intel_fn11[N] from 0 to 4294967295; found 4294967296"),
    ],
)
def test_native_libcpuid_index_out_of_range(line: str, column: int, expected: str) -> None:
    """A native libcpuid index past its 32-bit leaf or subleaf range names line and column."""
    with pytest.raises(InputError) as caught:
        read_libcpuid(f"{NATIVE_LEAF_0}{line}\n", "native.test")
    first, snippet, _ = str(caught.value).splitlines()
    assert first == f"native.test:2:{column}: expected {expected}"
    assert len(snippet) <= 4 + SNIPPET_WIDTH + 2


def test_native_libcpuid_largest_subleaf_round_trips() -> None:
    """intel_fn4[4294967295] is subleaf 0xffffffff, which the own JSON writes and reads back."""
    text = f"{NATIVE_LEAF_0}intel_fn4[0004294967295]=00000001 00000002 00000003 00000004\n"
    cpuid = read_libcpuid(text, "native.test")
    assert cpuid.get(4, 0xFFFF_FFFF) == Registers(1, 2, 3, 4)
    again = read_cpuid_json(to_json_text(cpuid), "again.json")
    assert dict(again.entries) == dict(cpuid.entries)


@pytest.mark.parametrize(
    ("numbers", "held"),
    [
        ((0, 4294967295), "CPUs 0, 4294967295"),
        ((0, 1, 2, 3), "CPUs 0-3"),
        ((0, 2, 3), "CPUs 0, 2, 3"),
        ((7,), "CPU 7"),
    ],
)
def test_missing_cpu_names_the_cpus_present(numbers: tuple[int, ...], held: str) -> None:
    """cpu=5 of a dump without CPU 5 lists the CPUs it holds, however far apart they are."""
    text = "".join(f"------[ CPUID Registers / Logical CPU #{n} ]------\n{LEAF_0}" for n in numbers)
    with pytest.raises(InputError) as caught:
        read_aida64(text, "dump.txt", cpu=5)
    assert str(caught.value) == f"dump.txt: expected logical CPU 5; the dump holds {held}"


@pytest.mark.parametrize(
    ("line", "start", "end", "snippet", "span"),
    [
        ("short line", 2, 4, "short line", (2, 4)),
        ("short line", 20, 30, "short line", (10, 11)),  # the caret stays by the line
        ("a" * 100 + "X" + "b" * 1000, 100, 101,
         "…" + "a" * 40 + "X" + "b" * 79 + "…", (41, 42)),
        ("a" * 1000 + "X", 1000, 1001, "…" + "a" * 119 + "X", (120, 121)),
    ],
)
def test_clip_snippet_keeps_the_caret_on_the_same_character(
    line: str, start: int, end: int, snippet: str, span: tuple[int, int]
) -> None:
    """clip_snippet cuts long lines to SNIPPET_WIDTH around the span, moving the span along."""
    assert clip_snippet(line, start, end) == (snippet, span)
    clipped, (low, _) = clip_snippet(line, start, end)
    if start < len(line):
        assert clipped[low] == line[start]
