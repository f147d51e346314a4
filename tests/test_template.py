"""Firecracker CPU templates: the strict JSON reader, Firecracker's acceptance rules, apply."""

from __future__ import annotations

import json
import random
import re
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xstate_check import jsonpos, textfile
from xstate_check.cpuid import CpuidSet, Registers
from xstate_check.errors import InputError, Location
from xstate_check.limits import MAX_INPUT_BYTES
from xstate_check.sources.load import load_cpuid
from xstate_check.template import (
    Template,
    apply_template,
    load_template,
    parse_bitmap,
    parse_template,
    template_from_node,
)

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from fuzz.readers import template_to_json  # noqa: E402  (the fuzz harness's writer)

X86_TEMPLATES = [
    "T2", "T2S", "T2CL", "T2A", "C3",
    "SPR_TO_T2_5.10", "SPR_TO_T2_6.1", "GNR_TO_T2_5.10", "GNR_TO_T2_6.1",
]

# Which fingerprints each template is meant for (FIRECRACKER.md §2.2 and §3.1).
FAMILIES = {
    "T2": ["INTEL_SKYLAKE", "INTEL_CASCADELAKE", "INTEL_ICELAKE"],
    "C3": ["INTEL_SKYLAKE", "INTEL_CASCADELAKE", "INTEL_ICELAKE"],
    "T2S": ["INTEL_SKYLAKE", "INTEL_CASCADELAKE"],
    "T2CL": ["INTEL_CASCADELAKE", "INTEL_ICELAKE"],
    "T2A": ["AMD_MILAN"],
    "SPR_TO_T2_5.10": ["INTEL_SAPPHIRE_RAPIDS_5.10"],
    "SPR_TO_T2_6.1": ["INTEL_SAPPHIRE_RAPIDS_6.1", "INTEL_SAPPHIRE_RAPIDS_6.18"],
    "GNR_TO_T2_5.10": ["INTEL_GRANITE_RAPIDS_5.10"],
    "GNR_TO_T2_6.1": ["INTEL_GRANITE_RAPIDS_6.1", "INTEL_GRANITE_RAPIDS_6.18"],
}

# FIRECRACKER.md §3.1: (leaf, subleaf, register) -> (bits forced to 0, bits forced to 1).
T2_MASKS = {
    (0x7, 0, "ebx"): (0xFFEFD814, 0x200),
    (0x7, 0, "ecx"): (0x40415F5E, 0),
    (0x7, 0, "edx"): (0x0000011C, 0),
    (0xD, 0, "eax"): (0x2F8, 0),
    (0xD, 1, "eax"): (0xE, 0),
}
C3_MASKS = {
    (0x7, 0, "ebx"): (0xFFAFDD3C, 0),
    (0x7, 0, "ecx"): (0x4041481E, 0),
    (0x7, 0, "edx"): (0x0000000C, 0),
    (0xD, 0, "eax"): (0x2F8, 0),
    (0xD, 1, "eax"): (0xE, 0),
}
SPR_510_MASKS = {
    (0x7, 0, "ebx"): (0xFFEFD814, 0x200),
    (0x7, 0, "ecx"): (0x5B415F5E, 0),
    (0x7, 0, "edx"): (0x03C1411C, 0),
    (0x7, 1, "eax"): (0x30, 0),
    (0xD, 0, "eax"): (0x602F8, 0),
    (0xD, 1, "eax"): (0x1E, 0),
}
_ZEROED_61 = {
    (leaf, sub, reg): (0xFFFFFFFF, 0)
    for leaf, sub in ((0xD, 0x11), (0xD, 0x12), (0x1D, 0), (0x1D, 1), (0x1E, 0))
    for reg in ("eax", "ebx", "ecx", "edx")
}
GNR_510_MASKS = {
    **SPR_510_MASKS,
    (0x7, 1, "eax"): (0x200030, 0),
    (0x7, 1, "edx"): (0x84000, 0),
}
MASKS = {
    "T2": T2_MASKS, "T2S": T2_MASKS, "T2CL": T2_MASKS, "T2A": T2_MASKS, "C3": C3_MASKS,
    "SPR_TO_T2_5.10": SPR_510_MASKS,
    "SPR_TO_T2_6.1": {**SPR_510_MASKS, **_ZEROED_61},
    "GNR_TO_T2_5.10": GNR_510_MASKS,
    "GNR_TO_T2_6.1": {**GNR_510_MASKS, **_ZEROED_61, (0x7, 2, "edx"): (0x8, 0)},
}


def fc_dir(data_dir: Path) -> Path:
    """Return data/firecracker."""
    return data_dir / "firecracker"


def fingerprints_of(data_dir: Path, family: str) -> list[Path]:
    """Return the fingerprint files whose name starts with fingerprint_<family>_."""
    found = sorted(fc_dir(data_dir).glob(f"fingerprint_{family}*host.json"))
    assert found, family
    return found


def line_of(text: str, offset: int) -> int:
    """Return the 1-based line of a character offset."""
    return text.count("\n", 0, offset) + 1


def leaf_line(text: str, leaf: str, subleaf: str) -> int:
    """Return the line of the "leaf" value of the modifier for (leaf, subleaf) in a file."""
    match = re.search(rf'"leaf": "{leaf}",\s*"subleaf": "{subleaf}"', text)
    assert match, (leaf, subleaf)
    return line_of(text, match.start())


def template_text(cpuid: str = "", msr: str = "", caps: str = "") -> str:
    """Build a small template document from JSON fragments."""
    parts = []
    if cpuid:
        parts.append(f'"cpuid_modifiers": [{cpuid}]')
    if msr:
        parts.append(f'"msr_modifiers": [{msr}]')
    if caps:
        parts.append(f'"kvm_capabilities": [{caps}]')
    return "{" + ", ".join(parts) + "}"


def leaf_json(
    *,
    leaf: str = '"0x7"', subleaf: str = '"0x0"', flags: str = "1", bitmap: str = '"0b1"',
    register: str = '"eax"', extra: str = "",
) -> str:
    """Build one cpuid modifier as JSON, each field given as raw JSON text."""
    return (
        f'{{"leaf": {leaf}, "subleaf": {subleaf}, "flags": {flags}{extra}, '
        f'"modifiers": [{{"register": {register}, "bitmap": {bitmap}}}]}}'
    )


def rejected(text: str) -> InputError:
    """Parse a template that must be rejected and return the error."""
    with pytest.raises(InputError) as caught:
        parse_template(text, "t.json")
    return caught.value


# --- jsonpos -----------------------------------------------------------------------------


def test_jsonpos_positions_of_nested_values() -> None:
    """Every object, array and scalar carries the 1-based line and column where it starts."""
    text = '{\n  "a": [1, {"b": "x"}],\n\t"c": null\n}'
    root = jsonpos.parse(text, "p.json")
    assert (root.line, root.column) == (1, 1)
    a = root.object_items()["a"]
    assert (a.line, a.column, a.kind) == (2, 8, "array")
    one, inner = a.array_items()
    assert (one.line, one.column, one.value) == (2, 9, 1)
    assert (inner.line, inner.column) == (2, 12)
    b = inner.object_items()["b"]
    assert (b.line, b.column, b.value) == (2, 18, "x")
    assert inner.keys is not None and (inner.keys["b"].line, inner.keys["b"].column) == (2, 13)
    c = root.object_items()["c"]
    assert (c.line, c.column, c.kind) == (3, 7, "null")
    assert root.value == {"a": [1, {"b": "x"}], "c": None}


@pytest.mark.shared
def test_jsonpos_values_match_the_json_module_on_all_firecracker_files(data_dir: Path) -> None:
    """The parser builds the same Python values as the json module for every real file."""
    files = sorted(fc_dir(data_dir).glob("*.json"))
    assert len(files) >= 37
    for path in files:
        text = path.read_text()
        assert jsonpos.parse(text, str(path)).value == json.loads(text), path


@pytest.mark.shared
def test_jsonpos_position_points_at_the_value_text(data_dir: Path) -> None:
    """The line and column of a string node point at its opening quote in the file."""
    path = fc_dir(data_dir) / "fingerprint_INTEL_SAPPHIRE_RAPIDS_6.1host.json"
    text = path.read_text()
    lines = text.split("\n")
    root = jsonpos.parse(text, str(path))
    config = root.object_items()["guest_cpu_config"].object_items()
    for leaf in config["cpuid_modifiers"].array_items():
        for modifier in leaf.object_items()["modifiers"].array_items():
            bitmap = modifier.object_items()["bitmap"]
            line = lines[bitmap.line - 1]
            assert line[bitmap.column - 1 :].startswith(f'"{bitmap.value}"')


def test_jsonpos_duplicate_key_is_rejected_with_both_places() -> None:
    """A repeated key fails at the repeat, naming where the first one is (serde does too)."""
    with pytest.raises(InputError) as caught:
        jsonpos.parse('{\n "a": 1,\n "a": 2\n}', "d.json")
    assert str(caught.value) == (
        "d.json:3:2: expected each key once in an object, but 'a' is already at line 2 "
        "column 2 (Firecracker: duplicate field `a`)\n"
        '     "a": 2\n'
        "     ~~^"
    )


def test_jsonpos_duplicates_listed_when_allowed() -> None:
    """With allow_duplicates the first value is kept and the repeated key node is listed."""
    root = jsonpos.parse('{"a": 1, "a": 2}', "d.json", allow_duplicates=True)
    assert root.value == {"a": 1}
    assert [(key.value, key.column) for key in root.duplicates] == [("a", 10)]


@pytest.mark.parametrize(
    ("text", "line", "column", "expected"),
    [
        ('{"a": [1, 2', 1, 12, "expected ',' or ']' in the array, found the end of the file"),
        ('{"a": 1', 1, 8, "expected ',' or '}' in the object, found the end of the file"),
        ("[1, 2,]", 1, 7, "expected another value after ','"),
        ('{"a": 1,\n}', 2, 1, "expected another \"key\" after ','"),
        ("{} x", 1, 4, "expected the end of the JSON document, found 'x'"),
        ("{}\n\n[]", 3, 1, "expected the end of the JSON document"),
        ("[NaN]", 1, 2, "found NaN (not a JSON number)"),
        ("[Infinity]", 1, 2, "found Infinity"),
        ("[01]", 1, 3, "no leading zero"),
        ("[1.]", 1, 3, "expected a JSON number"),
        ("[.5]", 1, 2, "expected a JSON value"),
        ("[+1]", 1, 2, "expected a JSON value"),
        ('["\\q"]', 1, 3, "expected a JSON escape"),
        ('["\\u12"]', 1, 3, "expected a JSON escape"),
        ('["a\tb"]', 1, 4, "no raw control character"),
        ('["\\ud800"]', 1, 2, "no lone surrogate"),
        ('["abc', 1, 6, "to close the string that starts at line 1 column 2"),
        ("\ufeff{}", 1, 1, "byte-order mark"),
        ("", 1, 1, "expected a JSON value, found the end of the file"),
        ("{'a': 1}", 1, 2, 'expected a "key" string in double quotes'),
        ('{"a" 1}', 1, 6, "expected ':' after the key 'a'"),
        ("[true false]", 1, 7, "expected ',' or ']'"),
        ("[tru]", 1, 2, "expected a JSON value"),
        ("// c\n{}", 1, 1, "expected a JSON value"),
    ],
)
def test_jsonpos_syntax_errors(text: str, line: int, column: int, expected: str) -> None:
    """Each syntax error is an InputError at the right line and column saying what was due."""
    with pytest.raises(InputError) as caught:
        jsonpos.parse(text, "s.json")
    error = caught.value
    assert (error.location.path, error.location.line, error.location.column) == (
        "s.json", line, column,
    )
    assert expected in error.expected
    assert error.snippet is not None


def test_jsonpos_nesting_limit_is_serde_jsons() -> None:
    """128 nested arrays parse; 129 are refused as serde_json refuses them."""
    assert jsonpos.parse("[" * 128 + "]" * 128, "n.json").value is not None
    with pytest.raises(InputError, match="at most 128 nested"):
        jsonpos.parse("[" * 129 + "]" * 129, "n.json")


def test_jsonpos_numbers_and_escapes() -> None:
    """Integers stay int (u64 range), fractions and exponents are float, escapes decode."""
    root = jsonpos.parse(
        '[0, -1, 18446744073709551615, 18446744073709551616, 1.0, 1e2, "\\u00e9\\ud83d\\ude00\\n"]',
        "n.json",
    )
    assert root.value == [0, -1, 2**64 - 1, float(2**64), 1.0, 100.0, "\u00e9\U0001F600\n"]
    assert [type(v) for v in root.value[:5]] == [int, int, int, float, float]


@pytest.mark.shared
def test_jsonpos_every_truncation_of_a_template_is_rejected(data_dir: Path) -> None:
    """Cutting a real template anywhere before its end gives an InputError, never a crash."""
    text = (fc_dir(data_dir) / "T2.json").read_text().rstrip()
    for cut in range(len(text)):
        with pytest.raises(InputError):
            jsonpos.parse(text[:cut], "cut.json")


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(_JSON, st.sampled_from([None, 1, 2]), st.booleans())
def test_jsonpos_round_trips_what_json_dumps_writes(
    value: object, indent: int | None, ascii_only: bool
) -> None:
    """Any document the json module writes parses back to the same value."""
    text = json.dumps(value, indent=indent, ensure_ascii=ascii_only)
    assert jsonpos.parse(text, "h.json").value == value


@given(st.text(max_size=40))
def test_jsonpos_never_crashes_on_garbage(text: str) -> None:
    """Arbitrary text either parses or raises InputError; nothing else escapes."""
    try:
        jsonpos.parse(text, "g.json")
    except InputError as error:
        assert error.location.line >= 1


def test_read_text_limits_and_errors(tmp_path: Path) -> None:
    """Unreadable, oversized and non-UTF-8 files are InputErrors naming the file."""
    with pytest.raises(InputError, match="expected an existing file"):
        textfile.read_text(tmp_path / "absent.json")
    big = tmp_path / "big.json"
    with big.open("wb") as handle:
        handle.truncate(MAX_INPUT_BYTES + 1)
    with pytest.raises(InputError, match=r"at most 16777216 bytes \(16 MiB\)"):
        textfile.read_text(big)
    bad = tmp_path / "bad.json"
    bad.write_bytes(b'{\n  "a": "\xff"\n}')
    with pytest.raises(InputError) as caught:
        textfile.read_text(bad)
    assert caught.value.location == Location(str(bad), 2, 9)


# --- the shipped templates -----------------------------------------------------------------


@pytest.mark.shared
@pytest.mark.parametrize("name", X86_TEMPLATES)
def test_every_x86_template_parses(data_dir: Path, name: str) -> None:
    """Each of Firecracker's x86 templates is accepted, with its modifiers in file order."""
    path = fc_dir(data_dir) / f"{name}.json"
    template = load_template(path)
    raw = json.loads(path.read_text())
    assert template.path == str(path)
    assert len(template.cpuid_modifiers) == len(raw["cpuid_modifiers"])
    assert len(template.msr_modifiers) == len(raw.get("msr_modifiers", []))
    for parsed, source in zip(template.cpuid_modifiers, raw["cpuid_modifiers"], strict=True):
        assert parsed.leaf == int(source["leaf"], 16)
        assert parsed.subleaf == int(source["subleaf"], 16)
        assert parsed.flags == source["flags"]
        assert [m.register for m in parsed.modifiers] == [
            m["register"] for m in source["modifiers"]
        ]


@pytest.mark.shared
@pytest.mark.parametrize(
    ("name", "key", "wording"),
    [
        ("V1N1", '"reg_modifiers"', "aarch64 templates are not x86 templates"),
        ("AARCH64_WITH_SVE_AND_PAC", '"vcpu_features"', "aarch64 templates are not x86"),
        ("malformed_x86_cpu_template", '"leaf"', "ParseIntError { kind: InvalidDigit }"),
    ],
)
def test_non_x86_and_malformed_templates_are_rejected(
    data_dir: Path, name: str, key: str, wording: str
) -> None:
    """The aarch64 and malformed templates fail with a message naming file, line and cause."""
    path = fc_dir(data_dir) / f"{name}.json"
    text = path.read_text()
    line = line_of(text, text.index(key))
    with pytest.raises(InputError) as caught:
        load_template(path)
    error = caught.value
    assert error.location.path == str(path)
    assert error.location.line == line
    assert f"{path}:{line}:" in str(error)
    assert wording in str(error)
    assert "\n" not in error.expected


@pytest.mark.shared
@pytest.mark.parametrize("name", X86_TEMPLATES)
def test_templates_apply_to_their_cpu_family(data_dir: Path, name: str) -> None:
    """Each template fits its family: no missing entry, §3.1's masks hold, no entry added."""
    template = load_template(fc_dir(data_dir) / f"{name}.json")
    for family in FAMILIES[name]:
        for path in fingerprints_of(data_dir, family):
            base = load_cpuid(path)
            applied = apply_template(template, base)
            assert applied.missing == (), path
            guest = applied.cpuid
            assert set(guest.entries) == set(base.entries)
            for (leaf, sub, register), (clear, setbits) in MASKS[name].items():
                value = guest.register(leaf, sub, register)
                assert value & clear == 0, (path, hex(leaf), sub, register, hex(value))
                assert value & setbits == setbits, (path, hex(leaf), sub, register)
            # The T2 family never touches 0xD.0 ECX/EDX (FIRECRACKER.md §3.1 notes).
            assert guest.get(0xD, 0).ecx == base.get(0xD, 0).ecx
            assert guest.get(0xD, 0).edx == base.get(0xD, 0).edx
            assert guest.source == base.source
            assert guest.meta["template"] == template.path
            assert guest.meta["kernel_version"] == base.meta["kernel_version"]


@pytest.mark.shared
def test_t2_on_cascade_lake_values_and_provenance(data_dir: Path) -> None:
    """T2 on Cascade Lake leaves XCR0 = x87|SSE|AVX and every cleared bit points at its line."""
    template_path = fc_dir(data_dir) / "T2.json"
    text = template_path.read_text()
    base = load_cpuid(fc_dir(data_dir) / "fingerprint_INTEL_CASCADELAKE_6.1host.json")
    guest = apply_template(load_template(template_path), base).cpuid
    assert base.get(0xD, 0).eax == 0x2FF  # FIRECRACKER.md §3.2
    assert guest.get(0xD, 0).eax & 0x2F8 == 0
    assert guest.get(0xD, 0).eax == 0x7
    # The 0xD.0 EAX bitmap is the first "bitmap" after the leaf 0xd subleaf 0x0 line.
    start = text.index('"subleaf": "0x0"', text.index('"leaf": "0xd"'))
    bitmap_offset = text.index('"bitmap"', start)
    bitmap_line = line_of(text, bitmap_offset)
    where = guest.provenance[(0xD, 0, "eax", 5)]
    assert where.path == str(template_path)
    assert where.line == bitmap_line
    assert text.split("\n")[where.line - 1][where.column - 1 :].startswith('"0bx')
    assert (0xD, 0, "eax", 0) not in guest.provenance  # bit 0 is x in T2
    assert guest.flag(0xD, 0) == 1


@pytest.mark.shared
@pytest.mark.parametrize(
    ("name", "fingerprint", "entry"),
    [
        ("SPR_TO_T2_6.1", "INTEL_SAPPHIRE_RAPIDS_5.10", (0xD, 0x11)),
        ("GNR_TO_T2_6.1", "INTEL_GRANITE_RAPIDS_5.10", (0x7, 0x2)),
    ],
)
def test_6_1_templates_on_5_10_hosts_report_missing_entries(
    data_dir: Path, name: str, fingerprint: str, entry: tuple[int, int]
) -> None:
    """A _6.1 template on a 5.10 fingerprint names the entry KVM lacks and the template line."""
    leaf, subleaf = entry
    key = (f"{leaf:#x}", f"{subleaf:#x}")
    template_path = fc_dir(data_dir) / f"{name}.json"
    text = template_path.read_text()
    (base_path,) = fingerprints_of(data_dir, fingerprint)
    base = load_cpuid(base_path)
    assert not base.has(leaf, subleaf)
    applied = apply_template(load_template(template_path), base)
    missing = {(entry.leaf, entry.subleaf): entry for entry in applied.missing}
    assert (leaf, subleaf) in missing
    location = missing[(leaf, subleaf)].location
    assert location is not None
    assert location.path == str(template_path)
    assert location.line == leaf_line(text, *key)
    assert set(applied.cpuid.entries) == set(base.entries)


@pytest.mark.shared
def test_template_flags_overwrite_the_entry_flags(data_dir: Path) -> None:
    """SPR_TO_T2_6.1 writes flags 0 on 0x1E although KVM reported 1 (FIRECRACKER.md §1.2)."""
    base = load_cpuid(fc_dir(data_dir) / "fingerprint_INTEL_SAPPHIRE_RAPIDS_6.1host.json")
    assert base.flags[(0x1E, 0)] == 1
    template = load_template(fc_dir(data_dir) / "SPR_TO_T2_6.1.json")
    guest = apply_template(template, base).cpuid
    assert guest.flags[(0x1E, 0)] == 0
    assert guest.flags[(0xD, 0x12)] == 1


# --- Firecracker's acceptance rules (FIRECRACKER.md §7) --------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ('"0x7"', 7), ('"0x0007"', 7), ('"0x1f"', 0x1F), ('"0x1F"', 0x1F), ('"0b101"', 5),
        ('"0x+1"', 1), ('"0b+1"', 1), ('"0xffffffff"', 0xFFFFFFFF), ('"0x80000001"', 0x80000001),
        ('"0x\\u0031"', 1),
    ],
)
def test_leaf_strings_accepted(text: str, value: int) -> None:
    """leaf/subleaf/addr: lowercase 0x or 0b, digits of either case, one + allowed, u32."""
    template = parse_template(
        template_text(leaf_json(leaf=text, subleaf=text), f'{{"addr": {text}, "bitmap": ""}}'),
        "t.json",
    )
    assert template.cpuid_modifiers[0].leaf == value
    assert template.cpuid_modifiers[0].subleaf == value
    assert template.msr_modifiers[0].addr == value


@pytest.mark.parametrize(
    ("text", "wording"),
    [
        ('"0X1"', "No supported number system prefix found in value [0X1]"),
        ('"13"', "No supported number system prefix found in value [13]. Make sure to prefix"),
        ('" 0x1"', "No supported number system prefix"),
        ('""', "No supported number system prefix"),
        ('"0x"', "ParseIntError { kind: Empty }"),
        ('"0x+"', "ParseIntError { kind: InvalidDigit }"),
        ('"0x-1"', "ParseIntError { kind: InvalidDigit }"),
        ('"0x1_0"', "ParseIntError { kind: InvalidDigit }"),
        ('"0x1 "', "ParseIntError { kind: InvalidDigit }"),
        ('"0b12"', "ParseIntError { kind: InvalidDigit }"),
        ('"0x\u0661"', "ParseIntError { kind: InvalidDigit }"),
        ('"0x100000000"', "ParseIntError { kind: PosOverflow }"),
        ("13", "invalid type: integer `13`, expected a string"),
        ("null", "invalid type: null, expected a string"),
    ],
)
def test_leaf_strings_rejected(text: str, wording: str) -> None:
    """Anything else is refused with Firecracker's message, at the value's line and column."""
    error = rejected(template_text(leaf_json(subleaf=text)))
    assert wording in error.expected
    assert error.location == Location("t.json", 1, 1 + template_text(leaf_json(subleaf=text))
                                      .index(text, 40))
    assert error.expected.startswith("expected ")


@pytest.mark.parametrize("flags", ["0", "1", "4294967295", "7"])
def test_flags_accepted(flags: str) -> None:
    """flags is any JSON integer from 0 to 2**32-1."""
    template = parse_template(template_text(leaf_json(flags=flags)), "t.json")
    assert template.cpuid_modifiers[0].flags == int(flags)


@pytest.mark.parametrize(
    ("flags", "wording"),
    [
        ("true", "invalid type: boolean `true`, expected u32"),
        ("1.0", "invalid type: floating point `1.0`, expected u32"),
        ("1e0", "invalid type: floating point `1.0`, expected u32"),
        ("-1", "invalid value: integer `-1`, expected u32"),
        ("4294967296", "invalid value: integer `4294967296`, expected u32"),
        ('"1"', 'invalid type: string "1", expected u32'),
        ("null", "invalid type: null, expected u32"),
        # serde_json reads -0 as the float -0.0 (de.rs parse_number: "or on `-0`").
        ("-0", "invalid type: floating point `-0.0`, expected u32"),
    ],
)
def test_flags_rejected(flags: str, wording: str) -> None:
    """A bool, float, negative, too large or quoted flags value is refused."""
    assert wording in rejected(template_text(leaf_json(flags=flags))).expected


@pytest.mark.parametrize("register", ["eax", "ebx", "ecx", "edx"])
def test_registers_accepted(register: str) -> None:
    """The four lowercase register names are accepted."""
    template = parse_template(template_text(leaf_json(register=f'"{register}"')), "t.json")
    assert template.cpuid_modifiers[0].modifiers[0].register == register


@pytest.mark.parametrize("register", ['"EAX"', '"eax "', '"rax"', '""', "0"])
def test_registers_rejected(register: str) -> None:
    """Any other register name is refused with Firecracker's wording."""
    error = rejected(template_text(leaf_json(register=register)))
    if register == "0":
        assert "invalid type: integer `0`, expected a string" in error.expected
    else:
        assert "Invalid CPUID register. Must be one of [eax, ebx, ecx, edx]" in error.expected


@pytest.mark.parametrize(
    ("bitmap", "width", "filter_bits", "value_bits"),
    [
        ("0b1", 32, 0b1, 0b1),
        ("0b10x", 32, 0b110, 0b100),
        ("10x", 32, 0b110, 0b100),
        ("0x1", 32, 0b101, 0b001),  # not hex: the characters 0, x, 1
        ("", 32, 0, 0),
        ("0b", 32, 0, 0),
        ("0b1_0", 32, 0b11, 0b10),
        ("0b____", 32, 0, 0),
        ("0b" + "1" * 32, 32, 0xFFFFFFFF, 0xFFFFFFFF),
        ("0b" + "0" * 32 + "_", 32, 0xFFFFFFFF, 0),  # a trailing _ is fine
        ("0b" + "0" * 16 + "_" + "1" * 16, 32, 0xFFFFFFFF, 0xFFFF),
        ("0b" + "x" * 32, 32, 0, 0),
        ("0b" + "1" * 64, 64, 2**64 - 1, 2**64 - 1),
        ("0b" + "1" * 20, 64, 2**20 - 1, 2**20 - 1),
    ],
)
def test_bitmaps_accepted(bitmap: str, width: int, filter_bits: int, value_bits: int) -> None:
    """Bitmaps: optional 0b, 0/1/x read from the right, _ skipped, short ones are high-x."""
    assert parse_bitmap(bitmap, width) == (filter_bits, value_bits)
    if width == 32:
        template = parse_template(template_text(leaf_json(bitmap=json.dumps(bitmap))), "t.json")
        modifier = template.cpuid_modifiers[0].modifiers[0]
        assert (modifier.filter, modifier.value) == (filter_bits, value_bits)
    else:
        template = parse_template(
            template_text(msr=f'{{"addr": "0x10a", "bitmap": {json.dumps(bitmap)}}}'), "t.json"
        )
        assert (template.msr_modifiers[0].filter, template.msr_modifiers[0].value) == (
            filter_bits, value_bits,
        )


@pytest.mark.parametrize(
    ("bitmap", "wording"),
    [
        ("0bX", "as a bitmap - unknown character: 88"),
        ("0b2", "unknown character: 50"),
        ("0b0b1", "unknown character: 98"),
        ("0b1 ", "unknown character: 32"),
        ("0b1\u03fd", "unknown character: 189"),
        ("0b" + "1" * 33, "as a bitmap - string is too long"),
        ("0b_" + "1" * 32, "string is too long"),  # the quirk: a _ after the width is full
        ("X_" + "1" * 32, "string is too long"),  # the length check comes first
    ],
)
def test_bitmaps_rejected(bitmap: str, wording: str) -> None:
    """Upper-case X, other characters and more than 32 bits are refused like Firecracker."""
    error = rejected(template_text(leaf_json(bitmap=json.dumps(bitmap))))
    assert wording in error.expected
    assert f"Failed to parse string [{json.dumps(bitmap, ensure_ascii=False)[1:-1]}]" in (
        error.expected
    )


def test_msr_bitmap_of_65_bits_rejected() -> None:
    """MSR bitmaps are 64 bits wide."""
    text = template_text(msr='{"addr": "0x10a", "bitmap": "0b' + "0" * 65 + '"}')
    assert "string is too long" in rejected(text).expected


@pytest.mark.parametrize(
    ("capability", "normalized"),
    [("56", "56"), ("!56", "!56"), ("+5", "5"), ("!+5", "!5"), ("0", "0"),
     ("4294967295", "4294967295"), ("007", "7")],
)
def test_kvm_capabilities_accepted(capability: str, normalized: str) -> None:
    """kvm_capabilities: decimal u32, optionally after !, one + allowed."""
    template = parse_template(template_text(caps=json.dumps(capability)), "t.json")
    assert template.kvm_capabilities == (normalized,)


@pytest.mark.parametrize(
    ("capability", "wording"),
    [
        ('""', "can not convert to numeric: cannot parse integer from empty string"),
        ('"!"', "cannot parse integer from empty string"),
        ('"!!1"', "invalid digit found in string"),
        ('"-1"', "invalid digit found in string"),
        ('"0x1"', "invalid digit found in string"),
        ('" 1"', "invalid digit found in string"),
        ('"4294967296"', "number too large to fit in target type"),
        ("56", "invalid type: integer `56`, expected a string"),
    ],
)
def test_kvm_capabilities_rejected(capability: str, wording: str) -> None:
    """Anything but !?+?[0-9]+ fitting u32 is refused."""
    assert wording in rejected(template_text(caps=capability)).expected


def test_empty_object_is_a_valid_template() -> None:
    """{} is a template that does nothing."""
    template = parse_template("{}", "e.json")
    assert template == Template("e.json")
    assert template.modified_bits() == {}


def test_unknown_nested_keys_are_ignored() -> None:
    """Unknown keys inside modifiers are ignored (serde without deny_unknown_fields)."""
    text = template_text(
        leaf_json(extra=', "comment": 1, "comment": [2], "x": {"deep": [null]}'),
        '{"addr": "0x10a", "bitmap": "", "note": "msr"}',
    )
    template = parse_template(text, "t.json")
    assert template.cpuid_modifiers[0].leaf == 7
    assert template.msr_modifiers[0].addr == 0x10A


@pytest.mark.parametrize(
    ("text", "line", "wording"),
    [
        ('{\n"cpuid_modifiers": [],\n"cpuid_modifiers": []}', 3,
         "duplicate field `cpuid_modifiers`"),
        ('{"cpuid_modifiers": [\n{"leaf": "0x1", "subleaf": "0x0", "flags": 0, "modifiers": [],\n'
         '"leaf": "0x2"}]}', 3, "duplicate field `leaf`"),
        ('{"cpuid_modifiers": [{"leaf": "0x1", "subleaf": "0x0", "flags": 0, "modifiers": [\n'
         '{"register": "eax", "bitmap": "1", "bitmap": "0"}]}]}', 2, "duplicate field `bitmap`"),
        ('{\n"msr_modifier": []}', 2,
         "unknown field `msr_modifier`, expected one of `kvm_capabilities`, `cpuid_modifiers`, "
         "`msr_modifiers`"),
        ('{\n  "reg_modifiers": []}', 2, "aarch64 templates are not x86 templates"),
        ('{"cpuid_modifiers": null}', 1, "invalid type: null, expected a sequence"),
        ('{"cpuid_modifiers": {}}', 1, "invalid type: map, expected a sequence"),
        ('{"cpuid_modifiers": [\n "0x1"]}', 2,
         'invalid type: string "0x1", expected struct CpuidLeafModifier'),
        ('{"cpuid_modifiers": [\n{"leaf": "0x1", "subleaf": "0x0", "modifiers": []}]}', 2,
         "missing field `flags`"),
        ('{"cpuid_modifiers": [\n{"leaf": "0x1", "subleaf": "0x0", "flags": 0}]}', 2,
         "missing field `modifiers`"),
        ('{"cpuid_modifiers": [{"leaf": "0x1", "subleaf": "0x0", "flags": 0, "modifiers": '
         '[\n{"bitmap": "1"}]}]}', 2, "missing field `register`"),
        ('{"msr_modifiers": [\n{"bitmap": "1"}]}', 2, "missing field `addr`"),
        ("[]", 1, "invalid type: sequence, expected struct CustomCpuTemplate"),
    ],
)
def test_structure_errors(text: str, line: int, wording: str) -> None:
    """Repeated fields, unknown top-level keys, wrong types and missing fields are refused."""
    error = rejected(text)
    assert error.location.line == line
    assert wording in error.expected


@pytest.mark.shared
@pytest.mark.parametrize(
    ("name", "wording"),
    [
        ("fingerprint_INTEL_ICELAKE_6.1host", "looks like a Firecracker fingerprint"),
        ("vm_config_cpu_template_C3", "looks like a Firecracker VM configuration"),
    ],
)
def test_other_firecracker_files_passed_as_template(
    data_dir: Path, name: str, wording: str
) -> None:
    """A fingerprint or a VM config given as a template is refused with a hint at line 2."""
    with pytest.raises(InputError, match=wording) as caught:
        load_template(fc_dir(data_dir) / f"{name}.json")
    assert caught.value.location.line == 2


def test_error_message_is_rendered_with_caret() -> None:
    """The whole message: location, expectation, Firecracker's words, the line, a caret."""
    text = (
        '{"cpuid_modifiers": [\n'
        '  {"leaf": "13", "subleaf": "0x0", "flags": 0, "modifiers": []}]}'
    )
    assert str(rejected(text)) == (
        't.json:2:12: expected "leaf" as a string with a lowercase 0x or 0b prefix such as '
        '"0x7", found "13" (Firecracker: No supported number system prefix found in value '
        "[13]. Make sure to prefix the number with '0x' for hexadecimal numbers or '0b' for "
        "binary numbers.)\n"
        '      {"leaf": "13", "subleaf": "0x0", "flags": 0, "modifiers": []}]}\n'
        "               ~~~^"
    )


def test_load_template_file_errors(tmp_path: Path) -> None:
    """A missing file and a JSON syntax error both become InputErrors naming the file."""
    with pytest.raises(InputError) as caught:
        load_template(tmp_path / "nope.json")
    assert caught.value.location.path == str(tmp_path / "nope.json")
    broken = tmp_path / "broken.json"
    broken.write_text('{"cpuid_modifiers": [\n')
    with pytest.raises(InputError) as caught:
        load_template(broken)
    assert caught.value.location.line == 1
    assert "end of the file" in caught.value.expected


@pytest.mark.parametrize(
    ("mark", "encoding"),
    [(b"\xef\xbb\xbf", "utf-8"), (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be")],
    ids=["utf-8", "utf-16-le", "utf-16-be"],
)
def test_a_byte_order_mark_is_refused_as_firecracker_refuses_it(
    tmp_path: Path, mark: bytes, encoding: str
) -> None:
    """serde_json reads a BOM as a character that is not JSON: the template is refused."""
    path = tmp_path / "bom.json"
    path.write_bytes(mark + template_text(leaf_json()).encode(encoding))
    with pytest.raises(InputError) as caught:
        load_template(path)
    assert caught.value.location == Location(str(path), 1, 1)
    assert "without a byte-order mark" in caught.value.expected
    assert "Firecracker: expected value at line 1 column 1" in caught.value.expected
    path.write_bytes(template_text(leaf_json()).encode("utf-8"))
    assert load_template(path).cpuid_modifiers[0].leaf == 7


@pytest.mark.parametrize(
    "text",
    [
        # Fields Firecracker ignores are skipped by serde_json's ignore_str, which does not
        # look at what a \u escape stands for (read.rs: ignore_escape).
        template_text(leaf_json(extra=', "note": "\\ud800"')),
        template_text(leaf_json(extra=', "note": {"\\udfff": ["\\ud800\\ud800"]}')),
        template_text(leaf_json()).replace('"bitmap"', '"note": "\\udc00", "bitmap"'),
        # A pair is one character anywhere.
        template_text(leaf_json(extra=', "note\\ud83d\\ude00": "\\ud83d\\ude00"')),
    ],
    ids=["ignored-value", "ignored-nested-key", "ignored-in-register-modifier", "pair"],
)
def test_lone_surrogates_in_fields_firecracker_ignores_are_accepted(text: str) -> None:
    """A lone surrogate escape where serde_json ignores the value: the template is valid."""
    assert parse_template(text, "t.json").cpuid_modifiers[0].leaf == 7


@pytest.mark.parametrize(
    "text",
    [
        # Keys are always parsed (read.rs: parse_str, validate = true), ignored or not.
        template_text(leaf_json(extra=', "note\\ud800": 1')),
        template_text(leaf_json(register='"e\\ud800"')),
        template_text(leaf_json(bitmap='"0b1\\udc00"')),
        template_text(leaf_json(leaf='"0x7\\ud800\\u0041"')),
        template_text(caps='"\\ud800"'),
        '{"\\ud800": []}',
    ],
    ids=["ignored-key", "register", "bitmap", "leaf", "capability", "top-level-key"],
)
def test_lone_surrogates_in_strings_firecracker_reads_are_refused(text: str) -> None:
    """A lone surrogate in a key or a String field: refused with serde_json's reason."""
    error = rejected(text)
    assert "lone leading surrogate in hex escape" in error.expected
    assert error.location.line == 1


def test_fingerprint_lone_surrogates_follow_the_same_rule(data_dir: Path, tmp_path: Path) -> None:
    """In a fingerprint: allowed in an unknown field's value, refused in a version string."""
    document = json.loads((fc_dir(data_dir) / "fingerprint_AMD_GENOA_6.1host.json").read_text())
    path = tmp_path / "fingerprint.json"
    path.write_text(json.dumps({**document, "comment": "\ud800"}), encoding="utf-8")
    assert load_cpuid(path).meta["format"] == "firecracker-fingerprint"
    path.write_text(json.dumps({**document, "kernel_version": "6.1\ud800"}), encoding="utf-8")
    with pytest.raises(InputError, match="lone leading surrogate"):
        load_cpuid(path)


# --- applying ---------------------------------------------------------------------------------


def base_set() -> CpuidSet:
    """A small base table with leaf 7.0 all ones and 0xD.0."""
    return CpuidSet.from_rows(
        [(0x7, 0, 0xFFFFFFFF, 0xFFFFFFFF, 0, 0), (0xD, 0, 0x2E7, 0x240, 0xA88, 0)],
        "base", flags={(0x7, 0): 1}, meta={"kernel_version": "6.1"},
    )


def test_apply_in_order_with_short_bitmaps_and_later_provenance() -> None:
    """Modifiers apply in order, short bitmaps keep high bits, the last pin owns provenance."""
    text = (
        '{"cpuid_modifiers": [{"leaf": "0x7", "subleaf": "0x0", "flags": 0, "modifiers": [\n'
        '  {"register": "eax", "bitmap": "0b00"},\n'
        '  {"register": "eax", "bitmap": "0b1x"},\n'
        '  {"register": "ecx", "bitmap": "0b1"}]}]}'
    )
    applied = apply_template(parse_template(text, "o.json"), base_set())
    guest = applied.cpuid
    assert applied.missing == ()
    assert guest.get(7, 0).eax == 0xFFFFFFFE  # bit 0 cleared by line 2, bit 1 set by line 3
    assert guest.get(7, 0).ecx == 1
    assert guest.get(7, 0).ebx == 0xFFFFFFFF
    assert guest.provenance[(7, 0, "eax", 0)] == Location("o.json", 2, 33)
    assert guest.provenance[(7, 0, "eax", 1)] == Location("o.json", 3, 33)
    assert guest.provenance[(7, 0, "ecx", 0)] == Location("o.json", 4, 33)
    assert (7, 0, "eax", 2) not in guest.provenance
    assert guest.flag(7, 0) == 0
    assert guest.meta == {"kernel_version": "6.1", "template": "o.json"}
    assert guest.source == "base"
    assert parse_template(text, "o.json").modified_bits() == {
        (7, 0, "eax"): (0b11, 0b10), (7, 0, "ecx"): (0b1, 0b1),
    }


def test_apply_records_missing_entries_and_adds_nothing() -> None:
    """A modifier for an entry the base lacks is reported once and skipped; others apply."""
    text = template_text(
        ", ".join([
            leaf_json(leaf='"0xd"', subleaf='"0x11"', bitmap='"0"'),
            leaf_json(leaf='"0xd"', subleaf='"0x11"', bitmap='"0"'),
            leaf_json(leaf='"0xd"', subleaf='"0x0"', bitmap='"0b0000"', register='"eax"'),
        ])
    )
    applied = apply_template(parse_template(text, "m.json"), base_set())
    assert [(m.leaf, m.subleaf) for m in applied.missing] == [(0xD, 0x11)]
    location = applied.missing[0].location
    assert location is not None and location.column == text.index('"0xd"') + 1
    assert set(applied.cpuid.entries) == {(7, 0), (0xD, 0)}
    assert applied.cpuid.get(0xD, 0).eax == 0x2E0


def _applied_one_by_one(template: Template, base: CpuidSet) -> tuple[
        dict[tuple[int, int], Registers], dict[tuple[int, int], int],
        dict[tuple[int, int, str, int], Location], list[tuple[int, int]]]:
    """Apply ``template`` as Firecracker does, modifier by modifier, bit by bit: the entries,
    the flags, each bit's last line (after the base's own) and the entries the base lacks."""
    entries = dict(base.entries)
    flags = dict(base.flags)
    owners = dict(base.provenance)
    missing: list[tuple[int, int]] = []
    names = ("eax", "ebx", "ecx", "edx")
    for leaf_modifier in template.cpuid_modifiers:
        key = (leaf_modifier.leaf, leaf_modifier.subleaf)
        if key not in entries:
            if key not in missing:
                missing.append(key)
            continue
        flags[key] = leaf_modifier.flags
        values = list(entries[key])
        for modifier in leaf_modifier.modifiers:
            index = names.index(modifier.register)
            values[index] = (values[index] & ~modifier.filter) | modifier.value
            for bit in range(32):
                if modifier.filter >> bit & 1:
                    owners[(*key, modifier.register, bit)] = modifier.location
        entries[key] = Registers(*values)
    return entries, flags, owners, missing


def test_apply_answers_as_modifier_by_modifier() -> None:
    """Random templates on random bases (entries missing, flags missing or other, pins of
    their own): the folded masks give the entries, flags, bit owners and missing entries of
    applying each modifier in turn, and the guest shares its base's flags exactly when
    they are unchanged."""
    chooser = random.Random(7)
    keys = [(0x1, 0), (0x7, 0), (0x7, 1), (0xD, 0), (0xD, 1), (0xD, 2), (0x80000001, 0)]
    checked = shared = 0
    for _ in range(400):
        held = [key for key in keys if chooser.random() < 0.85]
        rows = [(leaf, subleaf, chooser.getrandbits(32), chooser.getrandbits(32),
                 chooser.getrandbits(32), chooser.getrandbits(32)) for leaf, subleaf in held]
        flags = {key: chooser.choice([0, 1]) for key in held if chooser.random() < 0.8}
        pins = {}
        if chooser.random() < 0.3 and held:
            leaf, subleaf = chooser.choice(held)
            pins[(leaf, subleaf, "ebx", chooser.randrange(32))] = Location("b.json", 9, 1)
        base = CpuidSet.from_rows(rows, "base", flags=flags, provenance=pins)
        leaves = []
        for _ in range(chooser.randrange(6)):
            leaf, subleaf = chooser.choice(keys)
            leaves.append({"leaf": hex(leaf), "subleaf": hex(subleaf),
                           "flags": chooser.choice([0, 1]), "modifiers": [
                               {"register": chooser.choice(["eax", "ebx", "ecx", "edx"]),
                                "bitmap": "0b" + "".join(chooser.choice("01xxx")
                                                         for _ in range(chooser.randrange(33)))}
                               for _ in range(chooser.randrange(4))]})
        template = parse_template(json.dumps({"cpuid_modifiers": leaves}, indent=1), "r.json")
        entries, flags_after, owners, missing = _applied_one_by_one(template, base)
        applied = apply_template(template, base)
        guest = applied.cpuid
        assert dict(guest.entries) == entries
        assert dict(guest.flags) == flags_after
        assert dict(guest.provenance) == owners
        assert [(m.leaf, m.subleaf) for m in applied.missing] == missing
        assert (guest.shared("flags") is base) == (flags_after == dict(base.flags))
        assert all(isinstance(value, Registers) for value in guest.entries.values())
        checked += 1
        shared += guest.shared("flags") is base
    assert checked == 400 and 0 < shared < 400


# --- writing --------------------------------------------------------------------------------


@pytest.mark.shared
@pytest.mark.parametrize("name", X86_TEMPLATES)
def test_template_to_json_round_trips(data_dir: Path, name: str) -> None:
    """Writing a template and reading it back gives the same modifiers, in dump style."""
    template = load_template(fc_dir(data_dir) / f"{name}.json")
    text = template_to_json(template)
    again = parse_template(text, "again.json")
    assert again.modified_bits() == template.modified_bits()
    assert [(m.addr, m.filter, m.value) for m in again.msr_modifiers] == [
        (m.addr, m.filter, m.value) for m in template.msr_modifiers
    ]
    raw = json.loads(text)
    assert list(raw) == ["kvm_capabilities", "cpuid_modifiers", "msr_modifiers"]
    for modifier in raw["cpuid_modifiers"]:
        assert re.fullmatch(r"0x[0-9a-f]+", modifier["leaf"])
        assert re.fullmatch(r"0x[0-9a-f]+", modifier["subleaf"])
        for register in modifier["modifiers"]:
            assert re.fullmatch(r"0b[01x]{32}", register["bitmap"])
    for msr in raw["msr_modifiers"]:
        assert re.fullmatch(r"0b[01x]{64}", msr["bitmap"])


@pytest.mark.shared
def test_template_to_json_writes_a_fingerprint_config_byte_for_byte(data_dir: Path) -> None:
    """The writer reproduces cpu-template-helper's own output for guest_cpu_config."""
    path = fc_dir(data_dir) / "fingerprint_INTEL_SAPPHIRE_RAPIDS_6.1host.json"
    text = path.read_text()
    expected = json.dumps(json.loads(text)["guest_cpu_config"], indent=2)
    root = jsonpos.parse(text, str(path))
    template = template_from_node(root.object_items()["guest_cpu_config"], text, str(path))
    assert template_to_json(template) == expected
    # And the serde pretty layout really is the fingerprint's own text, indented once.
    assert "\n".join("  " + line for line in expected.split("\n"))[2:] in text


def test_kvm_capabilities_always_written() -> None:
    """An empty template is written with all three keys and an empty capability list."""
    assert json.loads(template_to_json(Template("e.json"))) == {
        "kvm_capabilities": [], "cpuid_modifiers": [], "msr_modifiers": [],
    }


def test_apply_result_keeps_registers_type() -> None:
    """Applied entries are Registers tuples like every other CpuidSet entry."""
    guest = apply_template(parse_template(template_text(leaf_json()), "t.json"), base_set()).cpuid
    assert isinstance(guest.get(7, 0), Registers)


# --- long lines --------------------------------------------------------------------------


def test_jsonpos_error_on_a_long_line_is_cut_around_the_caret() -> None:
    """A syntax error in the middle of a 2 MiB line: the line is cut, the caret stays on it."""
    text = '{"kvm_capabilities": ["' + "1" * (1 << 20) + '" "2", "' + "3" * (1 << 20) + '"]}'
    error = rejected(text)
    column = text.index('"2"')
    assert error.location == Location("t.json", 1, column + 1)
    assert error.snippet is not None and error.span is not None
    assert len(error.snippet) <= 122
    assert error.snippet[error.span[0]] == '"'
    assert error.snippet.startswith("…") and error.snippet.endswith("…")
    assert len(str(error)) < 600


@pytest.mark.parametrize(
    ("fragment", "found"),
    [
        (leaf_json(leaf='"' + "y" * 100_000 + '"'), '"' + "y" * 100 + '…"'),
        (leaf_json(subleaf='"0x' + "1" * 100_000 + '"'), '"0x' + "1" * 98 + '…"'),
        (leaf_json(register='"' + "r" * 100_000 + '"'), '"' + "r" * 100 + '…"'),
        (leaf_json(bitmap='"0b' + "1" * 100_000 + '"'), '"0b' + "1" * 98 + '…"'),
    ],
)
def test_long_values_are_quoted_cut_short(fragment: str, found: str) -> None:
    """A 100 000-character leaf, subleaf, register or bitmap is quoted to 100 characters."""
    error = rejected(template_text(fragment))
    assert found in error.expected
    assert len(str(error)) < 1200
