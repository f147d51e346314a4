"""The core model: xfeature table, CpuidSet, XsaveLayout and the size formulas."""

from __future__ import annotations

from pathlib import Path

import pytest

from xstate_check.cpuid import CpuidSet, Registers
from xstate_check.errors import InputError, Location
from xstate_check.layout import XsaveLayout
from xstate_check.xfeatures import XFEATURES, bits, by_name, format_mask


def mask_of(*names: str) -> int:
    """Return the xfeature mask of the named xfeatures."""
    return sum(by_name(name).mask for name in names)

# Leaf 0xD of the Xeon w7-2475X (Sapphire Rapids), read by hand from
# cpuid-dumps/instlatx64/GenuineIntel00806F8_SapphireRapids_05_CPUID.txt lines 24-38.
SPR_LEAF_D = [
    (0xD, 0x00, 0x000602E7, 0x00002B00, 0x00002B00, 0),
    (0xD, 0x01, 0x0000001F, 0x00002A80, 0x0000DD00, 0),
    (0xD, 0x02, 0x00000100, 0x00000240, 0x00000000, 0),
    (0xD, 0x05, 0x00000040, 0x00000440, 0x00000000, 0),
    (0xD, 0x06, 0x00000200, 0x00000480, 0x00000000, 0),
    (0xD, 0x07, 0x00000400, 0x00000680, 0x00000000, 0),
    (0xD, 0x08, 0x00000080, 0x00000000, 0x00000001, 0),
    (0xD, 0x09, 0x00000008, 0x00000A80, 0x00000000, 0),
    (0xD, 0x0A, 0x00000008, 0x00000000, 0x00000001, 0),
    (0xD, 0x0B, 0x00000010, 0x00000000, 0x00000001, 0),
    (0xD, 0x0C, 0x00000018, 0x00000000, 0x00000001, 0),
    (0xD, 0x0E, 0x00000030, 0x00000000, 0x00000001, 0),
    (0xD, 0x0F, 0x00000328, 0x00000000, 0x00000001, 0),
    (0xD, 0x11, 0x00000040, 0x00000AC0, 0x00000002, 0),
    (0xD, 0x12, 0x00002000, 0x00000B00, 0x00000006, 0),
]

# Leaf 0xD of the Genoa guest, fingerprint_AMD_GENOA_6.18host.json (FORMATS.md §5.3 offsets).
GENOA_GUEST_LEAF_D = [
    (0xD, 0x00, 0x000002E7, 0x00000240, 0x00000988, 0),
    (0xD, 0x01, 0x0000000F, 0x00000240, 0x00001800, 0),
    (0xD, 0x02, 0x00000100, 0x00000240, 0, 0),
    (0xD, 0x05, 0x00000040, 0x00000340, 0, 0),
    (0xD, 0x06, 0x00000200, 0x00000380, 0, 0),
    (0xD, 0x07, 0x00000400, 0x00000580, 0, 0),
    (0xD, 0x09, 0x00000008, 0x00000980, 0, 0),
    (0xD, 0x0B, 0x00000010, 0, 1, 0),
    (0xD, 0x0C, 0x00000018, 0, 1, 0),
]


def test_xfeature_table_matches_the_catalogue_masks() -> None:
    """The table's AVX-512, MPX and AMX groups are the catalogue's masks."""
    assert mask_of("opmask", "zmm_hi256", "hi16_zmm") == 0xE0
    assert mask_of("bndregs", "bndcsr") == 0x18
    assert mask_of("tilecfg", "tiledata") == 0x60000
    assert [x.name for x in XFEATURES.values() if x.dynamic] == ["tiledata"]
    assert by_name("TILEDATA").number == 18


def test_bits_and_format_mask() -> None:
    """Masks decompose into bit numbers and print with names."""
    assert list(bits(0x202E7)) == [0, 1, 2, 5, 6, 7, 9, 17]
    assert format_mask(0x3) == "0x3 (x87|sse)"
    assert format_mask(0) == "0x0 (none)"
    assert format_mask(1 << 40) == "0x10000000000 (bit40)"


def test_sapphire_rapids_standard_and_compacted_sizes() -> None:
    """SPR XCR0 0x602e7 is 11008 bytes standard; with XSS 0x1800, 10752 compacted."""
    layout = XsaveLayout.from_cpuid(CpuidSet.from_rows(SPR_LEAF_D))
    assert layout.xcr0_supported == 0x602E7
    assert layout.standard_size(0x602E7) == 11008 == layout.size_max
    assert layout.compacted_size(0x602E7 | 0x1800) == 10752


def test_sapphire_rapids_amx_components() -> None:
    """TILECFG is 64 bytes at 2752; TILEDATA 8192 bytes at 2816, aligned, with XFD."""
    layout = XsaveLayout.from_cpuid(CpuidSet.from_rows(SPR_LEAF_D))
    tilecfg, tiledata = layout.components[17], layout.components[18]
    assert (tilecfg.size, tilecfg.offset, tilecfg.aligned, tilecfg.xfd) == (64, 2752, True, False)
    assert (tiledata.size, tiledata.offset, tiledata.aligned, tiledata.xfd) == (
        8192, 2816, True, True,
    )
    assert [n for n, c in layout.components.items() if c.xfd and not c.supervisor] == [18]
    assert layout.components[8].supervisor


def test_genoa_guest_standard_size() -> None:
    """The Genoa guest's XCR0 0x2e7 gives 2440 bytes with AMD's offsets (opmask at 832)."""
    layout = XsaveLayout.from_cpuid(CpuidSet.from_rows(GENOA_GUEST_LEAF_D))
    assert layout.standard_size(0x2E7) == 2440 == layout.size_max
    assert layout.components[5].offset == 832


def test_compacted_size_aligns_only_flagged_components() -> None:
    """Compaction rounds up to 64 only before components whose ECX bit 1 is set."""
    layout = XsaveLayout.from_cpuid(CpuidSet.from_rows(SPR_LEAF_D))
    offsets = layout.compacted_offsets(0x602E7)
    # PKRU (8 bytes) ends at an offset that is not a multiple of 64; TILECFG is aligned.
    assert (offsets[9] + 8) % 64 != 0
    assert offsets[17] == (offsets[9] + 8 + 63) // 64 * 64
    assert offsets[17] % 64 == 0
    assert layout.compacted_size(0x602E7) == offsets[18] + 8192


def test_cpuidset_reads_absent_entries_as_zero() -> None:
    """An entry the table lacks reads as zero registers, and `has` tells it apart."""
    cpuid = CpuidSet.from_rows(SPR_LEAF_D)
    assert cpuid.get(0xD, 3) == Registers()
    assert not cpuid.has(0xD, 3)
    assert cpuid.has(0xD, 0x12)
    assert cpuid.subleaves(0xD)[:3] == [0, 1, 2]


def test_cpuidset_named_features_and_vendor() -> None:
    """Named feature bits read the right register bit; the vendor string decodes."""
    rows = [
        (0, 0, 0x20, 0x756E6547, 0x6C65746E, 0x49656E69),
        (7, 0, 0x2, 0xF3BFBFFB, 0xBB417FEE, 0xFFDD4430),
        *SPR_LEAF_D,
    ]
    cpuid = CpuidSet.from_rows(rows)
    assert cpuid.vendor == "GenuineIntel"
    assert cpuid.feature("AMX_TILE") and cpuid.feature("AVX512F") and cpuid.feature("XFD")
    assert not cpuid.feature("AVX")  # leaf 1 is absent from this table
    changed = cpuid.with_registers(7, 0, edx=0)
    assert not changed.feature("AMX_TILE")
    assert cpuid.feature("AMX_TILE"), "the original is immutable"


def test_cpuidset_equality_is_by_entries() -> None:
    """Two tables with the same entries are equal whatever their source names."""
    assert CpuidSet.from_rows(SPR_LEAF_D, "a") == CpuidSet.from_rows(SPR_LEAF_D, "b")
    assert CpuidSet.from_rows(SPR_LEAF_D) != CpuidSet.from_rows(SPR_LEAF_D[:3])


def test_input_error_draws_a_caret_under_the_span() -> None:
    """An InputError names the place and draws ~~^ under the offending span."""
    error = InputError(
        Location("rules/xcr0.toml", 12, 9), "expected an xfeature name",
        snippet='check = "tilecfg == tiledat"', span=(20, 27),
    )
    assert str(error) == (
        "rules/xcr0.toml:12:9: expected an xfeature name\n"
        '    check = "tilecfg == tiledat"\n'
        "                        ~~~~~~^"
    )
    assert isinstance(error, ValueError)


@pytest.mark.parametrize(
    ("location", "text"),
    [(Location("a.json"), "a.json"), (Location("a.json", 3), "a.json:3"),
     (Location("a.json", 3, 7), "a.json:3:7")],
)
def test_location_renders_only_what_it_knows(location: Location, text: str) -> None:
    """A location prints path, then line and column only where they are known."""
    assert str(location) == text


def test_rule_facts_and_layout_compute_the_same_sizes(data_dir: Path) -> None:
    """The rules' std_size() and compacted_size() give XsaveLayout's sizes on every real table."""
    from xstate_check.engine.compiler import compile_expression
    from xstate_check.engine.loader import language_names
    from xstate_check.engine.parser import parse_expression
    from xstate_check.facts import Facts
    from xstate_check.sources.load import load_cpuid
    from xstate_check.subject import Subject

    names = language_names()

    paths = [*sorted((data_dir / "cpuid-dumps").glob("*/*.t*")),
             *sorted((data_dir / "firecracker").glob("fingerprint_*.json"))]
    checked = 0
    for path in paths:
        try:
            cpuid = load_cpuid(path)
        except InputError:
            continue  # SOURCES.md and the decoded (not raw) cpuid view
        if not cpuid.leaf_0xd_complete:
            continue  # the rules read no sizes from it
        layout, facts = XsaveLayout.from_cpuid(cpuid), Facts(Subject("t", cpuid))
        for mask in (layout.xcr0_supported, layout.xcr0_supported | layout.xss_supported,
                     layout.xcr0_supported & 0x2E7):
            for function, expected in (("std_size", layout.standard_size(mask)),
                                       ("compacted_size", layout.compacted_size(mask))):
                node = parse_expression(f"{function}({mask:#x})", names.__getitem__, names)
                assert compile_expression(node)(facts) == expected, path
        checked += 1
    assert checked >= 50


def test_xfeature_table_columns_name_real_feature_bits_and_give_the_groups() -> None:
    """Every gate and feature the table names is a CPUID bit; the group masks derive from it."""
    from xstate_check.cpuid import FEATURES
    from xstate_check.xfeatures import (
        AVX512_MASK,
        LINUX_GATES,
        MPX_MASK,
        SUPERVISOR_MASK,
        XTILE_MASK,
    )

    for feature in XFEATURES.values():
        assert feature.gate is None or feature.gate in FEATURES, feature.name
        assert feature.feature is None or feature.feature in FEATURES, feature.name
    assert (MPX_MASK, AVX512_MASK, XTILE_MASK) == (0x18, 0xE0, 0x60000)
    supervisor = mask_of("pt", "pasid", "cet_u", "cet_s", "hdc", "uintr", "lbr", "hwp")
    assert supervisor == SUPERVISOR_MASK
    # xsave_cpuid_features[] for user state, with PKU deciding for PKRU (see the table).
    assert LINUX_GATES == {0: "FPU", 1: "SSE", 2: "AVX", 3: "MPX", 4: "MPX", 5: "AVX512F",
                           6: "AVX512F", 7: "AVX512F", 9: "PKU", 17: "AMX_TILE",
                           18: "AMX_TILE", 19: "APX"}
    announced = {name: sum(x.mask for x in XFEATURES.values() if x.feature == name)
                 for name in ("AMX_TILE", "AVX512F")}
    assert announced == {"AMX_TILE": XTILE_MASK, "AVX512F": AVX512_MASK}
