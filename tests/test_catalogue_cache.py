"""The compiled catalogue cache: used when valid, rebuilt when not, never wrong."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from xstate_check.engine import examples, loader, shipped
from xstate_check.engine.catalogue import Catalogue
from xstate_check.engine.runner import evaluate_rules


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    folder = tmp_path / "cache"
    monkeypatch.setenv("XSTATE_CHECK_CACHE_DIR", str(folder))
    shipped._default_catalogue.cache_clear()
    yield folder
    shipped._default_catalogue.cache_clear()


def _fresh() -> Catalogue:
    shipped._default_catalogue.cache_clear()
    return shipped.load_catalogue()


def _forbid_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: object, **_kwargs: object) -> Catalogue:
        raise AssertionError("the rule files were read although a valid cache exists")

    monkeypatch.setattr(loader, "load_rule_files", refuse)


def _fields(catalogue: Catalogue) -> list[dict[str, object]]:
    out = []
    for rule in catalogue.rules:
        record = attrs.asdict(rule, recurse=False)
        compiled = attrs.asdict(record.pop("compiled"), recurse=False)
        del compiled["test"], compiled["lets"]
        out.append({**record, **compiled})
    return out


def test_second_load_comes_from_the_cache_and_equals_the_first(
        cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A load writes one cache file; the next load reads it, not the TOML, with equal rules."""
    first = _fresh()
    assert [p.name.startswith("catalogue-") for p in cache_dir.iterdir()] == [True]
    _forbid_reading(monkeypatch)
    second = _fresh()
    assert second is not first
    assert _fields(second) == _fields(first)
    # The rebuilt closures decide every example as the freshly compiled ones do.
    for rule in first.rules:
        for example in (*rule.passes, *rule.fails):
            subject = examples.build_subject(example)
            fresh = [(f.rule, f.message) for f in evaluate_rules(subject, first)]
            cached = [(f.rule, f.message) for f in evaluate_rules(subject, second)]
            assert cached == fresh


@pytest.mark.parametrize("damage", ["garbage", "truncated", "group-writable"])
def test_a_damaged_or_untrusted_cache_is_rebuilt(
        cache_dir: Path, damage: str) -> None:
    """A cache file that is garbage, cut short or writable by others is not used."""
    expected = _fields(_fresh())
    (cached,) = cache_dir.iterdir()
    data = cached.read_bytes()
    if damage == "garbage":
        cached.write_bytes(data[:70] + b"\x80not a pickle")
    elif damage == "truncated":
        cached.write_bytes(data[: len(data) // 2])
    else:
        cached.chmod(0o664)
    before = cached.stat().st_mtime_ns, cached.stat().st_size
    assert _fields(_fresh()) == expected
    (rewritten,) = cache_dir.iterdir()
    assert (rewritten.stat().st_mtime_ns, rewritten.stat().st_size) != before or damage == \
        "group-writable"
    assert rewritten.stat().st_mode & 0o022 == 0


def test_an_unwritable_cache_folder_is_passed_over(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cache folder that cannot be created (a read-only install) costs nothing but time."""
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("XSTATE_CHECK_CACHE_DIR", str(blocker / "cache"))
    try:
        assert len(_fresh()) > 0
    finally:
        shipped._default_catalogue.cache_clear()
    assert blocker.read_text() == "not a folder"


def test_an_empty_cache_setting_turns_the_cache_off(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """XSTATE_CHECK_CACHE_DIR= (empty) names no folder at all."""
    monkeypatch.setenv("XSTATE_CHECK_CACHE_DIR", "")
    assert shipped.cache_dirs() == []


def test_the_key_follows_the_rule_files_content(tmp_path: Path) -> None:
    """Another byte in a rule file, or another folder, is another key: never a stale cache."""
    rules = tmp_path / "rules"
    shutil.copytree(shipped.default_rules_dir(), rules)
    files = sorted(str(path) for path in rules.glob("*.toml"))
    key = shipped._key(files)
    assert key is not None and shipped._key(files) == key
    with open(files[0], "a", encoding="utf-8") as handle:
        handle.write("\n")
    assert shipped._key(files) not in (key, None)
    moved = tmp_path / "moved"
    os.rename(rules, moved)
    assert shipped._key(sorted(str(p) for p in moved.glob("*.toml"))) not in (key, None)
