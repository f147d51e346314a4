"""The shipped catalogue, read and compiled once, then kept in a cache keyed by content.

Reading ``rules/*.toml`` means parsing TOML, checking every key and example, parsing every
expression: tens of milliseconds on a path that sits before a VM boots. The result, less
its closures (which are rebuilt from the stored parse trees in about a millisecond), is
kept in a pickle whose name is a BLAKE2 digest of everything that decides it: the rule files
and their folder, the package's source code, the package version and the Python version. A
changed rule or engine gives another key, so a cache is never stale, only absent.

How the files enter the key depends on where the package lives. Installed from a wheel, the
installer's RECORD (a SHA-256 of every file it wrote) stands for their content, and each
file's size and modification and change times (``os.stat``; the change time cannot be set
back) catch a later edit in place: one small read and a ``stat`` per file. In a checkout,
which has no RECORD, every file's bytes are read and hashed, as edits there are the rule.
The files are the rule files and every Python file of the package, not a list of those
thought to matter, which a new module of the engine would outgrow.

Where: ``$XSTATE_CHECK_CACHE_DIR`` when set (empty: no cache), else the package's own
``__pycache__`` (beside its bytecode), else ``$XDG_CACHE_HOME/xstate-check`` (``~/.cache``).
A folder that cannot be written (a read-only install) is passed over; a file that cannot be
read, is not owned by this user or root, is writable by others, or does not hold what its
key says is ignored and rebuilt. Loading never fails because of the cache.
"""

from __future__ import annotations

import contextlib
import functools
import os
import struct
import sys
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

try:  # the C unpickler alone: the pickle module's own imports cost 0.8 ms of every start
    from _pickle import loads as _loads
except ImportError:  # pragma: no cover - an interpreter without it
    from pickle import loads as _loads

from xstate_check.classcode import cache_folders, compiled_once, open_trusted, write_cache

if TYPE_CHECKING:
    from pathlib import Path

    from xstate_check.engine.catalogue import Catalogue, FixGroup
    from xstate_check.engine.examples import Example

__all__ = ["StoredExamples", "StoredFixes", "default_rules_dir", "load_catalogue"]

_T = TypeVar("_T")

# Plain strings, not pathlib: pathlib (with urllib.parse and ipaddress) costs several ms of a
# pre-boot check's start, and this module is on that path.
_PACKAGE = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
_FORMAT = b"xstate-check catalogue cache 6\n"
#: After the key: the sizes of the rules' pickle and of the examples' (and fixes') pickle
#: that follow.
_SIZES = struct.Struct("<QQ")


def _rules_dir() -> str:
    packaged = os.path.join(_PACKAGE, "rules")
    if os.path.isdir(packaged):
        return packaged
    return os.path.join(os.path.dirname(os.path.dirname(_PACKAGE)), "rules")


def default_rules_dir() -> Path:
    """Return where the shipped rules are: inside the installed package, else the repo's."""
    from pathlib import Path

    return Path(_rules_dir())


def _cache_dirs() -> list[str]:
    return cache_folders()


def _read_bytes(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def _record(package: str, version: str) -> str | None:
    """Return the path of the installer's RECORD of ``package``, or None (a checkout)."""
    record = os.path.join(os.path.dirname(package), f"xstate_check-{version}.dist-info",
                          "RECORD")
    return record if os.path.isfile(record) else None


def _stat_digest(path: str) -> bytes:
    """Return what ``os.stat`` says of a file that changes when it is written or replaced."""
    info = os.stat(path)
    return f"{info.st_size} {info.st_mtime_ns} {info.st_ctime_ns}".encode()


def _sources(package: str, record: bytes | None) -> list[str]:
    """Return every Python file of the package: those RECORD lists when installed, else those
    found on disk. All of them, not those thought to matter: a module the loader comes to use
    could not then be left out of the key."""
    if record is not None:
        root, name = os.path.split(package)
        listed = (line.split(",", 1)[0] for line in record.decode("utf-8", "replace").splitlines())
        return sorted(os.path.join(root, path) for path in listed
                      if path.startswith(f"{name}/") and path.endswith(".py"))
    found: list[str] = []
    for folder, subfolders, names in os.walk(package):
        subfolders[:] = sorted(sub for sub in subfolders if sub != "__pycache__")
        found.extend(os.path.join(folder, name) for name in sorted(names) if name.endswith(".py"))
    return found


def _key(files: Sequence[str], package: str = _PACKAGE) -> bytes | None:
    """Return the BLAKE2 digest of what the compiled catalogue depends on (None if unreadable).

    That is the rule ``files`` and every Python file of ``package``: with the installer's
    RECORD beside it, known by RECORD's hashes and their ``stat``; without it (a checkout),
    by their bytes.
    """
    from xstate_check import __version__

    try:  # BLAKE2 is built in; hashlib would load OpenSSL first, a few ms on every start
        from _blake2 import blake2b
    except ImportError:  # pragma: no cover - an interpreter without it
        from hashlib import blake2b
    digest = blake2b(_FORMAT, digest_size=32)
    digest.update(f"{sys.version}\n{__version__}\n{package}\n".encode())
    try:
        record_path = _record(package, __version__)
        record = None if record_path is None else _read_bytes(record_path)
        if record is not None:
            digest.update(b"RECORD\0" + record + b"\0")
        identify = _read_bytes if record is None else _stat_digest
        for path in (*_sources(package, record), *files):
            digest.update(os.fsencode(path) + b"\0" + identify(path) + b"\0")
    except OSError:
        return None
    return digest.digest()


class _Shelf:
    """Every rule's pass and fail examples and ``[[rule.autofix]]`` groups as the cache keeps
    them, unpickled on first use.

    A run that only checks (a pre-boot check) never reads an example or a fix, so it neither
    unpickles them nor imports their module. Should the stored bytes not unpickle to what the
    rules need, they are read again from the rule files.
    """

    __slots__ = ("_data", "_files", "_items", "_rules")

    def __init__(self, data: bytes, files: tuple[str, ...], rules: int) -> None:
        self._data = data
        self._files = files
        self._rules = rules
        self._items: list[tuple[Any, ...]] | None = None

    def items(self) -> list[tuple[Any, ...]]:
        """Return the pass examples, fail examples and fixes of rule ``i`` at ``3 i``,
        ``3 i + 1`` and ``3 i + 2``."""
        if self._items is None:
            try:
                items = _loads(self._data)
                if not (isinstance(items, list) and len(items) == 3 * self._rules
                        and all(isinstance(group, tuple) for group in items)):
                    raise ValueError("not a list of example and fix groups")
            except Exception:  # damaged: the rule files have them
                catalogue = _load_files(self._files)
                items = [group for rule in catalogue.rules
                         for group in (rule.passes, rule.fails, rule.autofix)]
            self._items = items
        return self._items


class _Stored(Sequence[_T], Generic[_T]):
    """One group of a rule's stored items (examples or fixes), as loaded from the cache:
    read when first used."""

    __slots__ = ("_index", "_shelf")

    def __init__(self, shelf: _Shelf, index: int) -> None:
        self._shelf = shelf
        self._index = index

    def _examples(self) -> tuple[_T, ...]:
        return self._shelf.items()[self._index]

    @overload
    def __getitem__(self, index: int) -> _T: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[_T, ...]: ...

    def __getitem__(self, index: int | slice) -> _T | tuple[_T, ...]:
        return self._examples()[index]

    def __len__(self) -> int:
        return len(self._examples())

    def __iter__(self) -> Iterator[_T]:
        return iter(self._examples())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, _Stored):
            other = other._examples()
        if not isinstance(other, tuple):
            return NotImplemented
        return self._examples() == other

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return repr(self._examples())

    def __reduce__(self) -> tuple[type[tuple[_T, ...]], tuple[tuple[_T, ...]]]:
        return tuple, (self._examples(),)


if TYPE_CHECKING:
    _ExamplesBase = _Stored[Example]
    _FixesBase = _Stored[FixGroup]
else:  # the examples' and fixes' modules stay unimported until read
    _ExamplesBase = _FixesBase = _Stored


class StoredExamples(_ExamplesBase):
    """A rule's pass or fail examples, as loaded from the cache: read when first used."""

    __slots__ = ()


class StoredFixes(_FixesBase):
    """A rule's ``[[rule.autofix]]`` groups, as loaded from the cache: read when first used
    (only fixes and explanations read them)."""

    __slots__ = ()


def _read(path: str, key: bytes) -> tuple[list[dict[str, object]], bytes, dict[Any, Any]] | None:
    """Return the stored rules, examples and folded plan conditions when ``path`` is a
    trustworthy cache of ``key``."""
    try:
        handle = open_trusted(path)
        if handle is None:
            return None  # another user could have written code for pickle to run
        with handle:
            head = handle.read(len(_FORMAT) + len(key) + _SIZES.size)
            if head[:-_SIZES.size] != _FORMAT + key:
                return None
            rules_size, examples_size = _SIZES.unpack(head[-_SIZES.size:])
            data = handle.read()
            if len(data) != rules_size + examples_size:
                return None  # cut short (or longer): not what was written
            stored = _loads(data[:rules_size])
    except Exception:  # a broken cache is no cache: rebuild it
        return None
    if not (isinstance(stored, tuple) and len(stored) == 2 and isinstance(stored[0], list)
            and isinstance(stored[1], dict)):
        return None
    return stored[0], data[rules_size:], stored[1]


def _write(key: bytes, records: list[dict[str, object]], examples: list[object],
           passing: dict[Any, Any]) -> None:
    """Keep ``records``, ``examples`` and ``passing`` in the first cache folder that can be
    written; drop older caches."""
    import pickle

    name = f"catalogue-{key.hex()[:32]}.pickle"
    rules = pickle.dumps((records, passing), protocol=pickle.HIGHEST_PROTOCOL)
    stored = pickle.dumps(examples, protocol=pickle.HIGHEST_PROTOCOL)
    data = _FORMAT + key + _SIZES.pack(len(rules), len(stored)) + rules + stored
    folder = write_cache(_cache_dirs(), name, data)
    if folder is None:
        return
    with contextlib.suppress(OSError):
        for old in os.listdir(folder):
            if old.startswith("catalogue-") and old.endswith(".pickle") and old != name:
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(folder, old))


def _records(catalogue: Catalogue) -> tuple[list[dict[str, object]], list[object],
                                            dict[Any, Any]]:
    """Return the catalogue as plain data: every rule field, the compiled ones less closures
    (with the plan's quick conditions, which the loader works out); apart from them the
    examples and fixes (pass, fail and autofix of each rule in turn), and the passing values
    its plan folded (the entries of ``plan.PASSING`` its groups hold)."""
    import attrs

    from xstate_check.engine.plan import PASSING

    held = {id(group[3]) for group in catalogue.plan.groups if group[3] is not None}
    passing = {conditions: values for conditions, values in PASSING.items()
               if id(values) in held}

    records: list[dict[str, object]] = []
    examples: list[object] = []
    for rule in catalogue.rules:
        record = attrs.asdict(rule, recurse=False)
        examples.extend((tuple(record.pop("passes")), tuple(record.pop("fails")),
                         tuple(record.pop("autofix"))))
        compiled = attrs.asdict(rule.compiled, recurse=False)
        del compiled["test"], compiled["lets"], compiled["offenders"]
        record["compiled"] = compiled
        records.append(record)
    return records, examples, passing


def _rebuild(records: list[dict[str, object]], examples: bytes, passing: dict[Any, Any],
             paths: tuple[str, ...]) -> Catalogue:
    """Return the catalogue of stored records, compiling each rule's closures again; its plan
    finds the groups' passing values folded already."""
    from xstate_check.engine.catalogue import Catalogue, CompiledRule, Rule
    from xstate_check.engine.compiler import compile_rule
    from xstate_check.engine.plan import PASSING

    PASSING.update(passing)

    shelf = _Shelf(examples, paths, len(records))
    rules = []
    for index, record in enumerate(records):
        compiled = dict(record.pop("compiled"))  # type: ignore[call-overload]
        node, let_nodes = compiled["source"]
        test, lets, offenders = compile_rule(node, let_nodes)
        compiled_rule = CompiledRule(test=test, lets=lets, offenders=offenders, **compiled)
        rules.append(Rule(compiled=compiled_rule, passes=StoredExamples(shelf, 3 * index),
                          fails=StoredExamples(shelf, 3 * index + 1),
                          autofix=StoredFixes(shelf, 3 * index + 2),
                          **record))  # type: ignore[arg-type]
    return Catalogue(tuple(rules), paths)


def _rule_files(paths: Sequence[str | os.PathLike[str]]) -> list[str]:
    files: list[str] = []
    for entry in paths:
        path = os.fspath(entry)
        if os.path.isdir(path):
            files.extend(sorted(os.path.join(path, name) for name in os.listdir(path)
                                if name.endswith(".toml")
                                and os.path.isfile(os.path.join(path, name))))
        else:
            files.append(path)
    return files


def _load_files(files: Sequence[str]) -> Catalogue:
    from pathlib import Path

    from xstate_check.engine.loader import load_rule_files

    return load_rule_files([Path(path) for path in files])


@functools.cache
def _default_catalogue() -> Catalogue:
    # The modules it imports (the plan's; the loader's on a cache miss) take their classes'
    # attrs methods from the class-code cache, as the pre-boot path's others, and the
    # garbage collector is paused: thousands of objects are made that all live on.
    with compiled_once():
        return _load_default()


def _load_default() -> Catalogue:
    files = _rule_files([_rules_dir()])
    key = _key(files)
    if key is not None:
        name = f"catalogue-{key.hex()[:32]}.pickle"
        for folder in _cache_dirs():
            stored = _read(os.path.join(folder, name), key)
            if stored is not None:
                try:
                    return _rebuild(*stored, tuple(files))
                except Exception:  # a cache of another shape: rebuild it
                    continue
    catalogue = _load_files(files)
    if key is not None:
        # The cache is an optimisation, never a failure.
        with contextlib.suppress(Exception):
            _write(key, *_records(catalogue))
    return catalogue


def load_catalogue(paths: Sequence[str | os.PathLike[str]] | None = None) -> Catalogue:
    """Return the catalogue: the shipped rules (loaded once), or the rule files in ``paths``.

    ``paths`` may name TOML files and directories of them. A malformed rule raises
    ``InputError`` naming the file and line, with a caret under the bad span.
    """
    if paths is None:
        return _default_catalogue()
    return _load_files(_rule_files(paths))
