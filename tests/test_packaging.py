"""The distributions: what the wheel and the sdist hold, built for real with ``python -m build``.

The wheel holds the package, its rules, profiles and ``py.typed``, and LICENSE/NOTICE in its
dist-info, and nothing the tests alone need; the sdist holds everything the README's test
command reads (tests, examples, fuzz, tools, bench, the pre-commit hooks, the CI script).
Needs ``build`` and ``hatchling`` (the ``dev`` extra installs both); skips without them.
"""

from __future__ import annotations

import email.parser
import importlib.util
import os
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from xstate_check.sources.profiles import profile_index

REPO = Path(__file__).resolve().parents[1]
#: What the sdist ships beside pyproject.toml (the tests, linters and benchmarks read them).
SDIST_TREES = ("src", "rules", "tests", "bench", "fuzz", "tools", "examples", "docs", ".ci")
SDIST_FILES = (".pre-commit-hooks.yaml", ".gitignore", "README.md", "CHANGELOG.md", "LICENSE",
               "NOTICE", "pyproject.toml")
#: Caches and build output that must never be shipped (names of files or folders).
_LITTER = {"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".hypothesis",
           ".venv", "dist", "build", "fuzz-out"}
_TEST_ONLY = ("tests/", "bench/", "fuzz/", "tools/", "examples/", "docs/", ".ci/")


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Build the sdist, then the wheel from that sdist, as ``python -m build`` does."""
    for module in ("build", "hatchling"):
        if importlib.util.find_spec(module) is None:
            if os.environ.get("CI"):  # CI installs the dev extra: a missing tool is a failure
                pytest.fail(f"CI lacks `{module}`: the dev extra must install it")
            pytest.skip(f"needs `{module}` (pip install -e '.[dev]')")
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(REPO)],
        capture_output=True, text=True, check=False, timeout=600,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    (sdist,) = out.glob("xstate_check-*.tar.gz")
    (wheel,) = out.glob("xstate_check-*-py3-none-any.whl")
    return sdist, wheel


def _tree_files() -> Iterator[str]:
    """Yield the files of the source tree the sdist must ship, relative to the repository."""
    for name in SDIST_FILES:
        assert (REPO / name).is_file(), name
        yield name
    for top in SDIST_TREES:
        for path in sorted((REPO / top).rglob("*")):
            relative = path.relative_to(REPO)
            if path.is_file() and not _LITTER & set(relative.parts) and path.suffix != ".pyc":
                yield relative.as_posix()


def _wheel_names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        return set(archive.namelist())


def _wheel_metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        return email.parser.Parser().parsestr(archive.read(name).decode("utf-8"))


def test_wheel_holds_the_package_rules_profiles_and_types(dists: tuple[Path, Path]) -> None:
    """Every module, every rule file, every profile and py.typed are in the wheel."""
    names = _wheel_names(dists[1])
    package = REPO / "src" / "xstate_check"
    modules = {
        f"xstate_check/{path.relative_to(package).as_posix()}"
        for path in package.rglob("*.py") if "__pycache__" not in path.parts
    }
    assert modules and modules == {name for name in names if name.endswith(".py")}
    rules = sorted((REPO / "rules").glob("*.toml"))
    assert len(rules) >= 6
    for path in rules:
        assert f"xstate_check/rules/{path.name}" in names, path.name
    assert "xstate_check/profiles/index.json" in names
    for info in profile_index():
        assert f"xstate_check/profiles/{info.file}" in names, info.name
    assert {n for n in names if n.startswith("xstate_check/profiles/")} == {
        "xstate_check/profiles/index.json",
        *(f"xstate_check/profiles/{info.file}" for info in profile_index()),
    }
    assert "xstate_check/py.typed" in names


def test_wheel_carries_licence_files_and_metadata(dists: tuple[Path, Path]) -> None:
    """LICENSE and NOTICE sit in the dist-info, byte for byte; METADATA names the licence."""
    wheel = dists[1]
    with zipfile.ZipFile(wheel) as archive:
        for name in ("LICENSE", "NOTICE"):
            (member,) = [n for n in archive.namelist() if n.endswith(f".dist-info/licenses/{name}")]
            assert archive.read(member) == (REPO / name).read_bytes(), name
        (entry_points,) = [n for n in archive.namelist() if n.endswith("entry_points.txt")]
        scripts = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))[
            "project"]["scripts"]
        assert scripts and set(scripts) == {"xstate-check"}
        text = archive.read(entry_points).decode()
        for name, target in scripts.items():
            assert f"{name} = {target}" in text, name
    metadata = _wheel_metadata(wheel)
    assert metadata["License-Expression"] == "Apache-2.0"
    assert sorted(metadata.get_all("License-File") or []) == ["LICENSE", "NOTICE"]
    assert metadata["Requires-Python"] == ">=3.11"
    classifiers = set(metadata.get_all("Classifier") or [])
    for version in ("3.11", "3.12", "3.13"):
        assert f"Programming Language :: Python :: {version}" in classifiers
    assert any(c.startswith("Development Status :: ") for c in classifiers)
    dev = [r for r in metadata.get_all("Requires-Dist") or [] if "extra == 'dev'" in r]
    assert any(r.startswith("hatchling") for r in dev) and any(r.startswith("build") for r in dev)


def test_wheel_holds_nothing_test_only(dists: tuple[Path, Path]) -> None:
    """Only the package and its dist-info: no tests, test doubles, benchmarks, fuzzers, tools."""
    names = _wheel_names(dists[1])
    for name in names:
        top = name.split("/", 1)[0]
        assert top == "xstate_check" or top.endswith(".dist-info"), name
        inner = name.split("/", 1)[1] if "/" in name else name
        assert not inner.startswith(_TEST_ONLY), name
        assert Path(name).name != "conftest.py" and not Path(name).name.startswith("test_"), name
        assert "fake" not in Path(name).name, name  # test doubles live under tests/
        assert not _LITTER & set(Path(name).parts), name


def test_sdist_ships_what_the_tests_and_linters_read(dists: tuple[Path, Path]) -> None:
    """The sdist holds every file of the shipped trees and nothing else (no caches, no venv)."""
    with tarfile.open(dists[0]) as archive:
        members = [m.name.split("/", 1)[1] for m in archive.getmembers() if m.isfile()]
    shipped = set(members)
    assert len(shipped) == len(members)
    expected = set(_tree_files())
    assert expected - shipped == set()
    assert shipped - expected == {"PKG-INFO"}
    for needed in ("tests/conftest.py", "examples/firecracker-matrix.toml", "fuzz/run.py",
                   "tools/make_profiles.py", ".pre-commit-hooks.yaml", ".ci/run",
                   "tests/fakehost.py", "docs/restore-pairs.md",
                   "rules/README.md", "LICENSE", "NOTICE"):
        assert needed in shipped, needed
