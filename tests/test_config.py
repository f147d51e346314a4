"""Rule selection, severities and the configuration file, through the command line."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CARELESS = {"cpuid_modifiers": [{
    "leaf": "0xd", "subleaf": "0x0", "flags": 1,
    "modifiers": [{"register": "eax", "bitmap": "0bxxxxxxxxxxxxx0xxxxxxxxxxxxxxxxxx"}],
}]}


def _run(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "xstate_check", *argv], capture_output=True, text=True,
        env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin", "NO_COLOR": "1"},
        timeout=300, check=False, cwd=cwd, stdin=subprocess.DEVNULL,
    )


@pytest.fixture
def fleet(tmp_path: Path, data_dir: Path) -> Path:
    """A repository of Firecracker's SPR template and a careless one masking TILEDATA only."""
    (tmp_path / ".git").mkdir()
    templates = tmp_path / "cpu-templates"
    templates.mkdir()
    (templates / "SPR_TO_T2_6.1.json").write_bytes(
        (data_dir / "firecracker" / "SPR_TO_T2_6.1.json").read_bytes())
    (templates / "careless.json").write_text(json.dumps(CARELESS, indent=2), encoding="utf-8")
    return tmp_path


def _gate(fleet: Path, *options: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    templates = sorted(str(p) for p in (fleet / "cpu-templates").glob("*.json"))
    return _run("gate", *templates, "--profiles", "profile:fc-sapphire-rapids-*", *options,
                cwd=cwd or fleet)


def _rules(done: subprocess.CompletedProcess[str]) -> set[str]:
    document = json.loads(done.stdout)
    return {f["name"] for s in document["subjects"] for f in s["findings"]}


def test_ignore_select_and_the_configuration_file(fleet: Path) -> None:
    """--ignore, --select and ignore = [...] in pyproject.toml do what ruff users expect."""
    plain = _gate(fleet, "--format", "json")
    assert plain.returncode == 1 and "amx-tile-pair" in _rules(plain)
    ignored = _gate(fleet, "--format", "json", "--ignore", "amx-tile-pair")
    assert ignored.returncode == 0 and "amx-tile-pair" not in _rules(ignored)
    assert _rules(ignored)  # the other rules still run
    selected = _gate(fleet, "--format", "json", "--select", "XS0108")
    assert selected.returncode == 1 and _rules(selected) == {"amx-tile-pair"}
    (fleet / "pyproject.toml").write_text(
        '[project]\nname = "fleet"\n\n[tool.xstate-check]\nignore = ["amx-tile-pair"]\n',
        encoding="utf-8")
    configured = _gate(fleet, "--format", "json")
    assert configured.returncode == 0 and "amx-tile-pair" not in _rules(configured)


def test_severity_overrides_per_file_ignores_and_exit_zero(fleet: Path) -> None:
    """--severity lowers a rule; per-file-ignores silence it for one template; --exit-zero."""
    lowered = _gate(fleet, "--format", "json", "--severity", "amx-tile-pair=warning")
    assert lowered.returncode == 0
    assert _gate(fleet, "--severity", "amx-tile-pair=warning", "--strict").returncode == 1
    (fleet / ".xstate-check.toml").write_text(
        '[per-file-ignores]\n"cpu-templates/careless.json" = ["XS01"]\n', encoding="utf-8")
    assert _gate(fleet).returncode == 0
    (fleet / ".xstate-check.toml").unlink()
    assert _gate(fleet, "--exit-zero").returncode == 0


def test_unknown_keys_and_selectors_are_input_errors(fleet: Path) -> None:
    """A misspelt key is exit 2 naming the file and line; so is a selector naming no rule."""
    (fleet / ".xstate-check.toml").write_text('select = ["xcr0"]\nignroe = ["x"]\n',
                                              encoding="utf-8")
    done = _gate(fleet)
    assert done.returncode == 2 and ".xstate-check.toml:2" in done.stderr
    assert "ignroe" in done.stderr and "Traceback" not in done.stderr
    (fleet / ".xstate-check.toml").unlink()
    done = _gate(fleet, "--select", "no-such-rule")
    assert done.returncode == 2 and "no-such-rule" in done.stderr


def test_sarif_is_one_result_per_problem_with_repo_relative_paths(fleet: Path) -> None:
    """From a subfolder, URIs are relative to the repository root; no line is repeated."""
    sub = fleet / "cpu-templates"
    done = _gate(fleet, "--format", "sarif", cwd=sub)
    run = json.loads(done.stdout)["runs"][0]
    uris = {r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
            for r in run["results"]}
    assert uris <= {"cpu-templates/careless.json", "cpu-templates/SPR_TO_T2_6.1.json"}
    keys = [(r["ruleId"], r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
             r["locations"][0]["physicalLocation"]["region"]["startLine"])
            for r in run["results"]]
    assert len(keys) == len(set(keys))
    assert all(r["level"] != "note" for r in run["results"])
    tile = next(r for r in run["results"] if "careless" in str(r["locations"]))
    assert len(tile["properties"]["profiles"]) == 2  # SPR 6.1 and 6.18, one result
    github = _gate(fleet, "--format", "github", cwd=sub).stdout.splitlines()
    assert all(line.startswith("::") for line in github)
    assert any("file=cpu-templates/careless.json" in line for line in github)


@pytest.mark.parametrize("options", [(), ("--strict",), ("--ignore", "amx-tile-pair"),
                                     ("--ignore", "amx-tile-pair", "--strict")], ids=str)
def test_junit_failures_follow_the_exit_code(fleet: Path, options: tuple[str, ...]) -> None:
    """JUnit failures are non-zero exactly when the exit code is 1; classnames lose .json."""
    done = _gate(fleet, "--format", "junit", *options)
    root = ET.fromstring(done.stdout)
    assert (root.get("failures") != "0") == (done.returncode == 1)
    for case in root.iter("testcase"):
        assert not (case.get("classname") or "").endswith("json")
        assert float(case.get("time") or "nan") >= 0


def test_markdown_renders_the_matrix(fleet: Path) -> None:
    """--format markdown: a table of templates x profiles with the worst severity per cell."""
    done = _gate(fleet, "--format", "markdown")
    lines = done.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| template |"))
    columns = [c.strip() for c in lines[header].strip("|").split("|")]
    rows = {}
    for line in lines[header + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = dict(zip(columns[1:], cells[1:], strict=True))
    careless = rows["cpu-templates/careless.json"]
    assert careless["fc-sapphire-rapids-6.1"] == "**error**"
    assert rows["cpu-templates/SPR\\_TO\\_T2\\_6.1.json"]["fc-sapphire-rapids-5.10"] == \
        "not for host"
    assert "### XS0108 amx-tile-pair" in done.stdout


def test_statistics_and_quiet(fleet: Path) -> None:
    """--statistics counts findings per rule; -q prints the findings alone."""
    stats = _gate(fleet, "--statistics").stdout.splitlines()
    assert any("XS0108  amx-tile-pair  (error)" in line for line in stats)
    quiet = _gate(fleet, "-q").stdout.splitlines()
    assert quiet and all("XS" in line for line in quiet)
