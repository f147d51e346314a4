"""The decode and convert commands, on real dumps, through the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from xstate_check.cli import main

SPR = "cpuid-dumps/instlatx64/GenuineIntel00806F8_SapphireRapids_05_CPUID.txt"
GENOA = "cpuid-dumps/instlatx64/AuthenticAMD0A10F11_K19_Genoa_02_CPUID.txt"


def _row(text: str, name: str) -> list[str]:
    for line in text.splitlines():
        fields = line.split()
        if len(fields) > 2 and fields[1] == name:
            return fields
    raise AssertionError(f"no row for {name} in:\n{text}")


def test_decode_sapphire_rapids_shows_the_amx_components(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """decode shows TILECFG 64 bytes at 2752 and TILEDATA 8192 at 2816 with the XFD flag."""
    assert main(["decode", str(data_dir / SPR)]) == 0
    out = capsys.readouterr().out
    assert _row(out, "tilecfg")[2:4] == ["64", "2752"]
    tiledata = _row(out, "tiledata")
    assert tiledata[2:4] == ["8192", "2816"]
    assert "xfd" in tiledata[5].split(",")
    assert "xfd" not in _row(out, "tilecfg")[5]


def test_decode_genoa_shows_amd_opmask_offset(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """decode on a Genoa dump shows the opmask component at AMD's offset 832."""
    assert main(["decode", str(data_dir / GENOA)]) == 0
    assert _row(capsys.readouterr().out, "opmask")[2:4] == ["64", "832"]


def test_decode_json_carries_sizes_and_components(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """decode --format json gives the masks, computed sizes and every component."""
    assert main(["decode", "--format", "json", str(data_dir / SPR)]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["xcr0_supported"] == "0x602e7"
    assert document["sizes"]["computed_standard"] == 11008
    by_name = {row["name"]: row for row in document["components"]}
    assert by_name["tiledata"]["flags"] == ["align64", "xfd"]
    assert by_name["cet_u"]["offset"] is None


def test_decode_rejects_machine_formats(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """decode writes text or JSON only; asking for SARIF is a usage error (exit 2)."""
    assert main(["decode", "--format", "sarif", str(data_dir / SPR)]) == 2
    assert "text or json" in capsys.readouterr().err


def test_convert_round_trips_through_check(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """convert writes JSON that decodes to the same layout as the dump it came from."""
    converted = tmp_path / "spr.json"
    assert main(["convert", str(data_dir / SPR), "--output", str(converted)]) == 0
    assert main(["decode", "--format", "json", str(data_dir / SPR)]) == 0
    from_dump = json.loads(capsys.readouterr().out)
    assert main(["decode", "--format", "json", str(converted)]) == 0
    from_json = json.loads(capsys.readouterr().out)
    assert from_dump["components"] == from_json["components"]
    assert from_dump["sizes"] == from_json["sizes"]


def test_missing_file_is_exit_2_with_one_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing source gives exit code 2 and one line naming the file, no traceback."""
    missing = tmp_path / "nope.txt"
    assert main(["decode", str(missing)]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
