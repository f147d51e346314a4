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
        del compiled["test"], compiled["lets"], compiled["offenders"]
        out.append({**record, **compiled})
    return out


def _catalogue_files(cache_dir: Path) -> list[Path]:
    """Return the catalogue's cache files (a start may also keep attrs's class code there)."""
    return sorted(cache_dir.glob("catalogue-*"))


def test_second_load_comes_from_the_cache_and_equals_the_first(
        cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A load writes one cache file; the next load reads it, not the TOML, with equal rules."""
    first = _fresh()
    assert len(_catalogue_files(cache_dir)) == 1
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
    (cached,) = _catalogue_files(cache_dir)
    data = cached.read_bytes()
    if damage == "garbage":
        cached.write_bytes(data[:70] + b"\x80not a pickle")
    elif damage == "truncated":
        cached.write_bytes(data[: len(data) // 2])
    else:
        cached.chmod(0o664)
    before = cached.stat().st_mtime_ns, cached.stat().st_size
    assert _fields(_fresh()) == expected
    (rewritten,) = _catalogue_files(cache_dir)
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
    assert shipped._cache_dirs() == []


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


def _installed_copy(site: Path, *, record: bool = True) -> Path:
    """Copy the package and its rules into ``site`` as an installer lays them out."""
    package = site / "xstate_check"
    shutil.copytree(Path(shipped._PACKAGE), package,
                    ignore=shutil.ignore_patterns("__pycache__", "rules"))
    shutil.copytree(shipped.default_rules_dir(), package / "rules")
    if record:
        from xstate_check import __version__

        info = site / f"xstate_check-{__version__}.dist-info"
        info.mkdir()
        lines = [f"{path.relative_to(site).as_posix()},sha256=stand-in,{path.stat().st_size}"
                 for path in sorted(package.rglob("*")) if path.is_file()]
        (info / "RECORD").write_text("\n".join(lines) + "\n")
    return package


def _same_size_edit(path: Path) -> None:
    """Change one letter of ``path``, keeping its size and its modification time."""
    before = path.stat()
    text = path.read_text(encoding="utf-8")
    index = text.index("without x87")
    path.write_text(text[:index] + "WITHOUT" + text[index + 7:], encoding="utf-8")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size
    assert path.stat().st_mtime_ns == before.st_mtime_ns


@pytest.mark.parametrize("record", [True, False], ids=["installed", "checkout"])
def test_an_edit_keeping_size_and_mtime_is_another_key(tmp_path: Path, record: bool) -> None:
    """Installed (RECORD, stat) or not (content), a rule edited in place gets another key,
    even when the edit keeps the file's size and modification time."""
    package = _installed_copy(tmp_path, record=record)
    assert (shipped._record(str(package), "0.1.0.dev0") is not None) == record
    files = shipped._rule_files([str(package / "rules")])
    key = shipped._key(files, str(package))
    assert key is not None and shipped._key(files, str(package)) == key
    _same_size_edit(package / "rules" / "xcr0.toml")
    assert shipped._key(files, str(package)) not in (key, None)


@pytest.mark.parametrize("record", [True, False], ids=["installed", "checkout"])
@pytest.mark.parametrize("module", ["engine/quantify.py", "formats/text.py", "new.py"])
def test_every_module_of_the_package_is_in_the_key(tmp_path: Path, record: bool,
                                                    module: str) -> None:
    """Any Python file of the package, not only those the loader uses today, is in the key:
    an edited engine module or format, installed or not, and a module added to a checkout."""
    package = _installed_copy(tmp_path, record=record)
    files = shipped._rule_files([str(package / "rules")])
    key = shipped._key(files, str(package))
    path = package / module
    if path.exists():
        before = path.stat()
        path.write_bytes(path.read_bytes().replace(b"\n", b"\r", 1))
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
        assert path.stat().st_size == before.st_size
        assert shipped._key(files, str(package)) not in (key, None)
    else:  # a file RECORD does not list is no module of the wheel's; on disk it is
        path.write_text("VALUE = 1\n")
        assert (shipped._key(files, str(package)) == key) == record


def test_an_installed_key_reads_no_source_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Installed, the key reads RECORD alone: the sources and rules are only stat()ed."""
    package = _installed_copy(tmp_path)
    files = shipped._rule_files([str(package / "rules")])
    read: list[str] = []
    real = shipped._read_bytes

    def reading(path: str) -> bytes:
        read.append(path)
        return real(path)

    monkeypatch.setattr(shipped, "_read_bytes", reading)
    assert shipped._key(files, str(package)) is not None
    assert [os.path.basename(path) for path in read] == ["RECORD"]


def test_an_installed_catalogue_follows_an_edited_rule(tmp_path: Path) -> None:
    """End to end in fresh interpreters: a cached installed catalogue is not used once one of
    its rule files was edited in place (size and modification time kept)."""
    import subprocess
    import sys

    site = tmp_path / "site"
    package = _installed_copy(site)
    show = ("from xstate_check.engine import load_catalogue, shipped\n"
            "print(load_catalogue().get('x87-required').message)\n"
            "print(sorted(name for name in __import__('os').listdir(shipped._cache_dirs()[0])\n"
            "             if name.startswith('catalogue-')))\n")
    env = {**os.environ, "PYTHONPATH": str(site),
           "XSTATE_CHECK_CACHE_DIR": str(tmp_path / "cache")}

    def run() -> list[str]:
        done = subprocess.run([sys.executable, "-c", show], env=env, capture_output=True,
                              text=True, check=True, cwd=tmp_path)
        return done.stdout.splitlines()

    first, cached, again = run(), run(), None
    assert "without x87" in first[0] and cached == first
    _same_size_edit(package / "rules" / "xcr0.toml")
    again = run()
    assert "WITHOUT x87" in again[0]
    assert again[1] != first[1]  # another cache file, the old one dropped


def test_examples_are_read_from_the_cache_when_first_used(cache_dir: Path) -> None:
    """A cached catalogue's examples equal the rule files' and survive a round of pickling."""
    import pickle

    first = _fresh()
    second = _fresh()
    for fresh, cached in zip(first.rules, second.rules, strict=True):
        assert isinstance(cached.passes, shipped.StoredExamples)
        assert cached.passes == fresh.passes and cached.fails == fresh.fails
        assert list(cached.fails) == list(fresh.fails) and len(cached.fails) == len(fresh.fails)
        assert cached.fails[0] == fresh.fails[0] and cached.fails[:1] == fresh.fails[:1]
        assert pickle.loads(pickle.dumps(cached.passes)) == fresh.passes


def test_damaged_examples_are_read_again_from_the_rule_files(cache_dir: Path) -> None:
    """Examples whose stored bytes no longer unpickle come from the rule files instead."""
    expected = [(rule.passes, rule.fails) for rule in _fresh().rules]
    (cached,) = _catalogue_files(cache_dir)
    data = bytearray(cached.read_bytes())
    data[-40:] = b"\xff" * 40  # the examples' pickle comes last
    cached.write_bytes(bytes(data))
    catalogue = _fresh()
    assert all(isinstance(rule.fails, shipped.StoredExamples) for rule in catalogue.rules)
    assert [(rule.passes, rule.fails) for rule in catalogue.rules] == expected


def _folds(catalogue: Catalogue) -> list[tuple[object, ...]]:
    return [(name, zero, small, passing, [step[-1].id for step in steps])
            for name, zero, small, passing, steps in catalogue.plan.groups]


def test_a_cached_catalogue_finds_its_plan_folded(
        cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The values a plan group's conditions let pass (folded over up to 2 ** 14 candidates)
    are kept with the cache: loaded from it, the plan is the same and nothing is folded."""
    from xstate_check.engine import plan

    folded: list[object] = []
    real = plan._passing

    def counting(conditions: tuple[tuple[int, frozenset[int]], ...],
                 small_mask: int) -> frozenset[int]:
        folded.append(conditions)
        return real(conditions, small_mask)

    monkeypatch.setattr(plan, "PASSING", {})
    monkeypatch.setattr(plan, "_passing", counting)
    first = _fresh()
    assert folded and any(passing is not None for _, _, _, passing, _ in first.plan.groups)
    folded.clear()
    monkeypatch.setattr(plan, "PASSING", {})
    second = _fresh()
    assert folded == []
    assert _folds(second) == _folds(first)
    monkeypatch.setattr(plan, "PASSING", {})
    assert _folds(Catalogue(first.rules, first.paths)) == _folds(first)
    assert folded  # folded afresh, the same plan
