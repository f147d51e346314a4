"""Every rule's verdict on the bundled profiles, the rule examples and the real inputs stays as
recorded in tests/data/verdicts-*.txt (``python tools/record_verdicts.py`` re-records them; a
commit that changes a verdict says why)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from conftest import REPO


def _tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("record_verdicts",
                                                  REPO / "tools" / "record_verdicts.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("record_verdicts", module)
    spec.loader.exec_module(module)
    return module


record = _tool()


def _assert_same(path: Path, fresh: str) -> None:
    recorded = path.read_text(encoding="utf-8")
    if fresh != recorded:
        old, new = recorded.splitlines(), fresh.splitlines()
        pairs = enumerate(zip(old, new, strict=False))
        first = next((i for i, (was, now) in pairs if was != now), min(len(old), len(new)))
        pytest.fail(f"{path.name} differs from a fresh run at line {first + 1}:\n"
                    f"recorded: {old[first] if first < len(old) else '<end>'}\n"
                    f"fresh:    {new[first] if first < len(new) else '<end>'}\n"
                    "re-record with tools/record_verdicts.py and say why in the commit")


def test_bundled_profiles_and_examples_verdicts_are_as_recorded() -> None:
    """The catalogue on every bundled profile and rule example gives the recorded findings."""
    _assert_same(record.BUNDLED, record.render(record.bundled_lines()))


def test_real_inputs_verdicts_are_as_recorded(data_dir: Path) -> None:
    """The gate on Firecracker's x86 templates and ``check`` on every dump give the recorded
    findings."""
    _assert_same(record.REAL, record.render(record.real_lines(data_dir.resolve())))


def test_record_covers_every_profile_rule_and_template(data_dir: Path) -> None:
    """The golden files hold a subject for each bundled profile, each example of each rule,
    each x86 template and each dump: nothing silently dropped from the record."""
    bundled = record.BUNDLED.read_text(encoding="utf-8")
    real = record.REAL.read_text(encoding="utf-8")
    from xstate_check.engine import load_catalogue
    from xstate_check.sources.profiles import profile_index
    for info in profile_index():
        assert f"# profile:{info.name}\n" in bundled
    for rule in load_catalogue():
        assert f"# {rule.id} pass 0\n" in bundled and f"# {rule.id} fail 0\n" in bundled
    for name in record.FIRECRACKER_X86:
        assert f"$DATA/firecracker/{name}.json on " in real
    for path in record._dumps(data_dir.resolve()):
        assert f"# check {path.relative_to(data_dir.resolve())}\n" in real
