"""Shared fixtures: where ../shared is, and the real data in it."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
#: Firecracker's nine x86 templates (../shared/data/firecracker/NAME.json).
X86_TEMPLATES = ("T2", "T2S", "T2CL", "C3", "T2A", "SPR_TO_T2_5.10", "SPR_TO_T2_6.1",
                 "GNR_TO_T2_5.10", "GNR_TO_T2_6.1")


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """Return ../shared beside the repository; skip the test where it is absent."""
    if not (SHARED / "data").is_dir():
        pytest.skip(f"{SHARED} is absent: real dumps and templates are not available here")
    return SHARED


@pytest.fixture(scope="session")
def data_dir(shared_dir: Path) -> Path:
    """Return ../shared/data."""
    return shared_dir / "data"


@pytest.fixture
def templates(data_dir: Path) -> list[str]:
    """Firecracker's nine x86 templates."""
    folder = data_dir / "firecracker"
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent")
    return [str(folder / f"{name}.json") for name in X86_TEMPLATES]
