"""Shared fixtures: where ../shared is, and the real data in it."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


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
