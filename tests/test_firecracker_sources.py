"""Firecracker fingerprints and cpu-template-helper template dumps as CPUID sources."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from xstate_check.errors import InputError
from xstate_check.sources.firecracker import read_firecracker
from xstate_check.sources.load import detect_format, load_cpuid

pytestmark = pytest.mark.shared

SPR_61 = "fingerprint_INTEL_SAPPHIRE_RAPIDS_6.1host.json"


def fc_dir(data_dir: Path) -> Path:
    """Return data/firecracker."""
    return data_dir / "firecracker"


def all_fingerprints(data_dir: Path) -> list[Path]:
    """Return every fingerprint file (current and historical)."""
    found = sorted(fc_dir(data_dir).glob("fingerprint_*.json"))
    assert len(found) == 24
    return found


def guest_config_text(data_dir: Path, name: str = SPR_61) -> str:
    """Return a fingerprint's guest_cpu_config alone, as `template dump` writes it."""
    text = (fc_dir(data_dir) / name).read_text()
    return json.dumps(json.loads(text)["guest_cpu_config"], indent=2)


def test_every_fingerprint_matches_an_independent_reading(data_dir: Path) -> None:
    """Each fingerprint's table equals its bitmaps read with the json module and int(…, 2)."""
    for path in all_fingerprints(data_dir):
        raw = json.loads(path.read_text())
        cpuid = load_cpuid(path)
        expected = {}
        for entry in raw["guest_cpu_config"]["cpuid_modifiers"]:
            regs = {m["register"]: int(m["bitmap"][2:], 2) for m in entry["modifiers"]}
            key = (int(entry["leaf"], 16), int(entry["subleaf"], 16))
            expected[key] = (regs["eax"], regs["ebx"], regs["ecx"], regs["edx"])
            assert cpuid.flags[key] == entry["flags"], (path, key)
        assert {key: tuple(regs) for key, regs in cpuid.entries.items()} == expected, path
        assert cpuid.source == str(path)
        assert cpuid.meta["format"] == "firecracker-fingerprint"
        assert cpuid.role == "guest"
        assert cpuid.meta["kernel_version"] == raw["kernel_version"]
        assert cpuid.meta["firecracker_version"] == raw["firecracker_version"]
        assert cpuid.meta["microcode_version"] == raw["microcode_version"]
        assert path.name == f"fingerprint_{cpuid.meta['cpu']}_" + path.name.rsplit("_", 1)[1]
        assert cpuid.vendor in ("GenuineIntel", "AuthenticAMD")


def test_sapphire_rapids_6_1_leaf_0xd(data_dir: Path) -> None:
    """SPR 6.1: 0xD.0 = 0x602e7/0x240/0x2b00, 0xD.0x12 = 0x2000/0xb00/6, flags 1."""
    # Expected values: FORMATS.md §4, the row for this very file.
    cpuid = load_cpuid(fc_dir(data_dir) / SPR_61)
    assert cpuid.get(0xD, 0)[:3] == (0x602E7, 0x240, 0x2B00)
    assert cpuid.get(0xD, 0x12)[:3] == (0x2000, 0xB00, 6)
    assert cpuid.get(0xD, 0x11)[:3] == (0x40, 0xAC0, 2)
    assert cpuid.get(0xD, 1).eax == 0x1F
    assert cpuid.get(7, 0).edx == 0xAFC14410
    for subleaf in cpuid.subleaves(0xD):
        assert cpuid.flags[(0xD, subleaf)] == 1
    assert cpuid.flags[(1, 0)] == 0
    assert cpuid.meta["kernel_version"] == "6.1.172-216.329.amzn2023.x86_64"
    assert cpuid.meta["cpu"] == "INTEL_SAPPHIRE_RAPIDS"


def test_sapphire_rapids_5_10_has_no_amx_state(data_dir: Path) -> None:
    """On a 5.10 host KVM lists no 0xD.0x11/0x12 and reports XCR0 0x2e7 (FORMATS.md §3d)."""
    cpuid = load_cpuid(fc_dir(data_dir) / "fingerprint_INTEL_SAPPHIRE_RAPIDS_5.10host.json")
    assert cpuid.get(0xD, 0).eax == 0x2E7
    assert not cpuid.has(0xD, 0x11)
    assert not cpuid.has(0xD, 0x12)
    assert cpuid.meta["kernel_version"].startswith("5.10.")


def test_template_dump_is_read_with_the_brand_as_cpu(data_dir: Path) -> None:
    """A bare `template dump` gives the same table as its fingerprint; cpu is the brand."""
    fingerprint = load_cpuid(fc_dir(data_dir) / SPR_61)
    dump = read_firecracker(guest_config_text(data_dir), "cpu_config.json")
    assert dump == fingerprint
    assert dict(dump.flags) == dict(fingerprint.flags)
    assert dump.meta["format"] == "firecracker-dump"
    assert dump.role == "guest"
    assert dump.meta["cpu"] == fingerprint.brand != ""
    assert "kernel_version" not in dump.meta


def test_dump_with_x_bits_is_refused_at_the_bitmap(data_dir: Path) -> None:
    """A bitmap with x in a dump is an error at that bitmap's line: a dump gives every bit."""
    text = guest_config_text(data_dir)
    target = '"bitmap": "0b00000000000001100000001011100111"'  # 0xD.0 EAX, 0x602e7
    assert target in text
    text = text.replace(target, '"bitmap": "0bx0000000000001100000001011100111"')
    with pytest.raises(InputError) as caught:
        read_firecracker(text, "cpu_config.json")
    error = caught.value
    assert error.location.line == text.count("\n", 0, text.index('"0bx')) + 1
    assert "a dump must give every bit" in error.expected
    assert "eax of CPUID entry (0xd, 0x0)" in error.expected


def test_template_passed_as_a_source_is_refused(data_dir: Path) -> None:
    """A real CPU template is not a CPUID table; the message points to --template."""
    path = fc_dir(data_dir) / "T2.json"
    with pytest.raises(InputError, match="--template") as caught:
        load_cpuid(path)
    assert caught.value.location.line == 10  # the first bitmap of T2.json, read by hand


@pytest.mark.parametrize(
    ("mutation", "wording"),
    [
        (lambda d: d["cpuid_modifiers"][0]["modifiers"].pop(), "edx is absent"),
        (lambda d: d["cpuid_modifiers"].append(d["cpuid_modifiers"][0]), "already at line"),
        (lambda d: d.update(cpuid_modifiers=[]), "at least one CPUID entry"),
        (lambda d: d.update(reg_modifiers=[]), "aarch64 templates are not x86 templates"),
    ],
)
def test_malformed_dumps_are_refused(
    data_dir: Path, mutation: Callable[[dict[str, Any]], object], wording: str
) -> None:
    """A register missing, an entry twice, no entries or a foreign key are InputErrors."""
    document = json.loads(guest_config_text(data_dir))
    mutation(document)
    with pytest.raises(InputError, match=wording):
        read_firecracker(json.dumps(document, indent=2), "bad.json")


def test_fingerprint_fields(data_dir: Path) -> None:
    """Unknown fingerprint keys are allowed; a repeated known key or a non-string fact is not."""
    text = (fc_dir(data_dir) / SPR_61).read_text()
    first = '{\n  "firecracker_version"'
    extra = text.replace(first, '{\n  "note": [1],\n  "firecracker_version"', 1)
    assert read_firecracker(extra, "x.json").get(0xD, 0).eax == 0x602E7
    twice = text.replace(first, '{\n  "kernel_version": "a",\n  "firecracker_version"', 1)
    with pytest.raises(InputError, match="duplicate field `kernel_version`") as caught:
        read_firecracker(twice, "x.json")
    assert caught.value.location.line == 4  # the file's own kernel_version, now the repeat
    number = text.replace('"bios_version": "1.0"', '"bios_version": 1.0')
    with pytest.raises(InputError, match="'bios_version' as a string") as caught:
        read_firecracker(number, "x.json")
    assert caught.value.location.line == 5


@pytest.mark.parametrize(
    "text", ["[]", "{}", '{"kvm_capabilities": []}', '"guest_cpu_config"', "3"]
)
def test_json_that_is_not_firecracker_is_refused(text: str) -> None:
    """JSON without guest_cpu_config or cpuid_modifiers is refused, naming both shapes."""
    with pytest.raises(InputError, match="Firecracker fingerprint") as caught:
        read_firecracker(text, "other.json")
    assert caught.value.location.line == 1


def test_syntax_error_in_a_fingerprint_names_its_line(data_dir: Path) -> None:
    """A truncated fingerprint is an InputError at its last line, not a traceback."""
    text = (fc_dir(data_dir) / SPR_61).read_text()
    cut = text[: len(text) // 2]
    with pytest.raises(InputError, match="found the end of the file") as caught:
        read_firecracker(cut, "cut.json")
    assert caught.value.location.line == cut.rstrip().count("\n") + 1


def test_firecracker_files_are_detected(data_dir: Path) -> None:
    """Detection: fingerprints, dumps and templates are Firecracker's; CPUID dumps and other
    JSON are not."""
    for path in all_fingerprints(data_dir):
        assert detect_format(path.read_text()) == "firecracker-fingerprint", path
    assert detect_format(guest_config_text(data_dir)) == "firecracker-dump"
    assert detect_format((fc_dir(data_dir) / "T2.json").read_text()) == "firecracker-dump"
    vm_config = fc_dir(data_dir) / "vm_config_cpu_template_C3.json"
    assert not detect_format(vm_config.read_text()).startswith("firecracker")
    assert not detect_format('["cpuid_modifiers"]').startswith("firecracker")
    others = [p for p in (data_dir / "cpuid-dumps").rglob("*") if p.is_file()]
    assert others
    for path in others:
        assert not detect_format(path.read_text(errors="replace")).startswith("firecracker"), path


def test_a_missing_firecracker_file_is_named(tmp_path: Path) -> None:
    """A file that cannot be read is an InputError naming it."""
    with pytest.raises(InputError) as caught:
        load_cpuid(tmp_path / "gone.json")
    assert caught.value.location.path == str(tmp_path / "gone.json")
