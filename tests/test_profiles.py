"""The bundled CPU profiles: what they hold, where they come from, how they are listed."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from xstate_check.errors import InputError
from xstate_check.sources.load import load_cpuid
from xstate_check.sources.profiles import (
    INDEX_SCHEMA,
    load_profile,
    match_profiles,
    profile_index,
    render_profiles,
)

REPO = Path(__file__).resolve().parents[1]
NAMES = [info.name for info in profile_index()]


def _make_profiles() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_profiles", REPO / "tools/make_profiles.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_fingerprint_in_shared_data_is_a_profile(data_dir: Path) -> None:
    """Each Firecracker fingerprint (CPU model x host kernel) has a guest profile naming it."""
    sources = {
        info.source["file"]: info for info in profile_index() if info.role == "guest"
    }
    fingerprints = sorted((data_dir / "firecracker").glob("fingerprint_*host.json"))
    assert len(fingerprints) >= 24  # SOURCES.md lists 24
    for path in fingerprints:
        info = sources[f"firecracker/{path.name}"]
        kernel = re.search(r"_(\d+\.\d+)host", path.name).group(1)  # type: ignore[union-attr]
        assert info.kernel == kernel
        assert info.name.startswith("fc-") and info.name.endswith(f"-{kernel}")


def test_fleet_covers_the_cpu_models_and_kernels_of_the_issue() -> None:
    """Skylake to Genoa and kernels 4.14 to 6.18 are all there, plus recent bare-metal CPUs.

    Granite Rapids is there as Firecracker guests only: its one bare-metal dump (InstLatx64)
    states no licence, so it is not bundled.
    """
    for cpu in ("skylake", "cascade-lake", "ice-lake", "sapphire-rapids", "granite-rapids",
                "milan", "genoa"):
        assert match_profiles(f"fc-{cpu}-*"), cpu
    kernels = {info.kernel for info in profile_index() if info.role == "guest"}
    assert {"4.14", "5.10", "6.1", "6.18"} <= kernels
    bare = {info.name for info in profile_index() if info.role == "cpu"}
    for prefix in ("skylake-", "sapphire-rapids-", "emerald-rapids-", "zen3-", "zen4-", "zen5-"):
        assert any(name.startswith(prefix) for name in bare), prefix


def test_every_profile_comes_from_licensed_data() -> None:
    """Each bundled profile's source grants a licence (Apache-2.0, BSD-2-Clause); none is
    InstLatx64's, whose dumps state none."""
    for info in profile_index():
        assert info.source["licence"] in ("Apache-2.0", "BSD-2-Clause"), info.name
        assert not info.source["file"].startswith("cpuid-dumps/instlatx64/"), info.name
        assert info.source["repository"] in (
            "firecracker-microvm/firecracker", "anrieff/libcpuid"), info.name


def test_make_profiles_refuses_a_source_without_licence(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The converter refuses to bundle a dump whose source states no licence (InstLatx64)."""
    module = _make_profiles()
    monkeypatch.setattr(module, "BARE_METAL", (
        *module.BARE_METAL,
        ("granite-rapids-xeon-658x", "instlatx64/GenuineIntel00A06D1_GraniteRapids_03_CPUID.txt",
         "Intel Xeon 658X (Granite Rapids)"),
    ))
    with pytest.raises(SystemExit, match=r"GraniteRapids_03_CPUID\.txt: its source grants no "
                       r"licence to redistribute it \(none stated\)"):
        module.build(data_dir)


def test_notice_names_every_bundled_source_and_licence() -> None:
    """NOTICE names each repository profiles come from, with its licence and attribution."""
    notice = (REPO / "NOTICE").read_text(encoding="utf-8")
    licences = {info.source["repository"]: info.source["licence"] for info in profile_index()}
    for repository, licence in licences.items():
        assert f"github.com/{repository}" in notice, repository
        assert licence in notice, licence
    words = " ".join(notice.split())
    for info in profile_index():
        family = re.sub(r"-\d+\.\d+$", "-*", info.name)
        assert info.name in words or family in words, info.name
        assert info.source["commit"] in words, info.name
    assert "Copyright 2008  Veselin Georgiev" in notice  # BSD-2-Clause, condition 1
    assert "Amazon.com, Inc. or its affiliates" in notice  # Firecracker's NOTICE
    license_text = (REPO / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    assert "END OF TERMS AND CONDITIONS" in license_text


def test_names_are_short_stable_lowercase() -> None:
    """Profile names are lowercase words, digits, dots and dashes, unique."""
    assert len(NAMES) == len(set(NAMES))
    for name in NAMES:
        assert re.fullmatch(r"[a-z0-9][a-z0-9.-]*", name), name
        assert len(name) <= 40


@pytest.mark.parametrize("name", NAMES)
def test_profile_equals_its_source_read_by_the_project(name: str, data_dir: Path) -> None:
    """Every bundled profile is exactly its source file as load_cpuid reads it."""
    info = next(info for info in profile_index() if info.name == name)
    bundled = load_profile(name)
    original = load_cpuid(data_dir / info.source["file"])
    assert dict(bundled.entries) == dict(original.entries)
    assert dict(bundled.flags) == dict(original.flags)
    assert bundled.vendor == info.vendor == original.vendor
    assert bundled.role == info.role == original.role
    assert bundled.source == f"profile:{name}"
    assert bundled.meta["origin"] == info.source["file"]


def test_index_names_origin_commit_and_licence(data_dir: Path) -> None:
    """Each profile names a data file that exists, its repository, a 40-hex commit, a licence."""
    for info in profile_index():
        source = info.source
        assert (data_dir / source["file"]).is_file()
        assert re.fullmatch(r"[0-9a-f]{40}", source["commit"])
        assert "/" in source["repository"] and source["path"] and source["licence"]
        listing = data_dir / source["file"].split("/")[0] / "SOURCES.md"
        assert source["commit"] in listing.read_text(encoding="utf-8")


def test_bundled_files_are_what_make_profiles_writes(data_dir: Path) -> None:
    """tools/make_profiles.py regenerates the bundled folder byte for byte (nothing stale)."""
    files = _make_profiles().build(data_dir)
    folder = REPO / "src/xstate_check/profiles"
    assert sorted(files) == sorted(path.name for path in folder.glob("*.json"))
    for name, text in files.items():
        assert (folder / name).read_text(encoding="utf-8") == text, name


def test_amx_values_of_sapphire_rapids_profiles() -> None:
    """Leaf 0xD of SPR guest (6.1 host) and bare-metal w7-2475X: values read by hand."""
    guest = load_profile("fc-sapphire-rapids-6.1")
    assert guest.get(0xD, 0) == (0x602E7, 0x240, 0x2B00, 0)
    assert guest.get(0xD, 18)[:3] == (0x2000, 0xB00, 6)
    assert guest.role == "guest"
    assert guest.meta["kernel_version"].startswith("6.1.")
    metal = load_profile("sapphire-rapids-w7-2475x")
    assert metal.get(0xD, 0) == (0x602E7, 0x2B00, 0x2B00, 0)
    assert metal.get(0xD, 1)[:3] == (0x1F, 0x2A80, 0xDD00)
    assert metal.role == "cpu"


def test_kernel_changes_what_a_profile_holds() -> None:
    """SPR on a 5.10 host shows no AMX and no 0xD.0x11 entry; on 6.1 it has both."""
    old = load_profile("fc-sapphire-rapids-5.10")
    assert old.get(0xD, 0).eax == 0x2E7
    assert not old.has(0xD, 0x11)
    assert load_profile("fc-sapphire-rapids-6.1").has(0xD, 0x11)


def test_profile_source_keyword_goes_through_load_cpuid() -> None:
    """load_cpuid('profile:NAME') returns the bundled table."""
    assert load_cpuid("profile:fc-milan-4.14") == load_profile("fc-milan-4.14")
    assert load_cpuid("profile:fc-milan-4.14").vendor == "AuthenticAMD"


def test_unknown_profile_is_an_input_error_listing_names() -> None:
    """An unknown profile name is an InputError that lists the bundled names."""
    with pytest.raises(InputError) as caught:
        load_profile("fc-pentium-2.6")
    message = str(caught.value)
    assert message.startswith("profile:fc-pentium-2.6: expected a bundled profile name")
    assert "fc-genoa-6.18" in message


def test_match_profiles_uses_shell_patterns() -> None:
    """fc-milan-* matches the four Milan kernels, in index order."""
    assert [info.kernel for info in match_profiles("fc-milan-*")] == ["4.14", "5.10", "6.1", "6.18"]
    assert match_profiles("nothing-*") == []


def test_render_profiles_text_lists_every_profile_and_origin() -> None:
    """The text listing has a line per profile and the repository it came from."""
    text = render_profiles("text")
    for info in profile_index():
        assert re.search(rf"^{re.escape(info.name)}\s+{info.role}\s", text, re.M)
    assert "firecracker-microvm/firecracker@" in text
    assert text.rstrip().endswith("use one as profile:NAME (check, decode, gate --profiles)")


def test_render_profiles_json_is_the_index() -> None:
    """The JSON listing carries the schema, every profile and the licence notices."""
    document = json.loads(render_profiles("json"))
    assert document["schema"] == INDEX_SCHEMA
    assert [entry["name"] for entry in document["profiles"]] == NAMES
    assert "BSD" in document["notices"]["libcpuid"]
    with pytest.raises(InputError, match="expected text or json"):
        render_profiles("sarif")


def test_profiles_command_lists_them() -> None:
    """`xstate-check profiles --format json` prints the index."""
    done = subprocess.run(
        [sys.executable, "-m", "xstate_check", "profiles", "--format", "json"],
        capture_output=True, text=True, check=False, cwd=REPO,
        env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)["profiles"]) == len(NAMES)
