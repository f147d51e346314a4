"""The shipped catalogue, read and compiled once, then kept in a cache keyed by content.

Reading ``rules/*.toml`` means parsing TOML, checking every key and example, parsing every
expression: tens of milliseconds on a path that sits before a VM boots. The result, less
its closures (which are rebuilt from the stored parse trees in well under a millisecond),
is kept in a pickle whose name is a BLAKE2 digest of everything that decides it: the rule files'
bytes and folder, the engine's and facts' source code, the package version and the Python
version. A changed rule or engine gives another key, so a cache is never stale, only absent.

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
import pickle
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

    from xstate_check.engine.catalogue import Catalogue

__all__ = ["cache_dirs", "default_rules_dir", "load_catalogue"]

# Plain strings, not pathlib: pathlib (with urllib.parse and ipaddress) costs several ms of a
# pre-boot check's start, and this module is on that path.
_PACKAGE = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
_FORMAT = b"xstate-check catalogue cache 1\n"
#: The source files whose code decides what a compiled catalogue holds: the engine, the
#: facts (kinds, needs, constants) and the package modules whose definitions they use.
_CODE = ("engine/catalogue.py", "engine/compiler.py", "engine/examples.py",
         "engine/loader.py", "engine/parser.py", "engine/shipped.py", "engine/tokenizer.py",
         "facts/__init__.py", "facts/registry.py", "facts/enumeration.py", "facts/layout.py",
         "facts/linux.py", "facts/template.py", "facts/host.py", "facts/restore.py",
         "xfeatures.py", "cpuid.py", "layout.py", "hoststate.py", "subject.py", "report.py",
         "errors.py", "tomltext.py", "textfile.py")


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
    chosen = os.environ.get("XSTATE_CHECK_CACHE_DIR")
    if chosen is not None:
        return [chosen] if chosen else []
    user = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return [os.path.join(_PACKAGE, "__pycache__"), os.path.join(user, "xstate-check")]


def cache_dirs() -> list[Path]:
    """Return the folders the compiled catalogue may be kept in, in the order tried."""
    from pathlib import Path

    return [Path(folder) for folder in _cache_dirs()]


def _read_bytes(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def _key(files: Sequence[str]) -> bytes | None:
    """Return the BLAKE2 digest of what the compiled catalogue depends on (None if unreadable)."""
    from xstate_check import __version__

    try:  # BLAKE2 is built in; hashlib would load OpenSSL first, a few ms on every start
        from _blake2 import blake2b
    except ImportError:  # pragma: no cover - an interpreter without it
        from hashlib import blake2b
    digest = blake2b(_FORMAT, digest_size=32)
    digest.update(f"{sys.version}\n{__version__}\n".encode())
    try:
        for name in _CODE:
            digest.update(name.encode() + b"\0" + _read_bytes(os.path.join(_PACKAGE, name))
                          + b"\0")
        for path in files:
            digest.update(os.fsencode(path) + b"\0" + _read_bytes(path) + b"\0")
    except OSError:
        return None
    return digest.digest()


def _read(path: str, key: bytes) -> list[dict[str, object]] | None:
    """Return the stored rules when ``path`` is a trustworthy cache of ``key``, else None."""
    try:
        with open(path, "rb") as handle:
            info = os.fstat(handle.fileno())
            if info.st_uid not in (0, os.geteuid()) or info.st_mode & 0o022:
                return None  # another user could have written code for pickle to run
            if handle.read(len(_FORMAT) + len(key)) != _FORMAT + key:
                return None
            stored = pickle.load(handle)
    except Exception:  # a broken cache is no cache: rebuild it
        return None
    return stored if isinstance(stored, list) else None


def _write(key: bytes, records: list[dict[str, object]]) -> None:
    """Keep ``records`` in the first cache folder that can be written; drop older caches."""
    name = f"catalogue-{key.hex()[:32]}.pickle"
    data = _FORMAT + key + pickle.dumps(records, protocol=pickle.HIGHEST_PROTOCOL)
    for folder in _cache_dirs():
        temporary = os.path.join(folder, f".{name}.{os.getpid()}")
        try:
            os.makedirs(folder, exist_ok=True)
            with open(temporary, "xb") as handle:
                handle.write(data)
            os.replace(temporary, os.path.join(folder, name))
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            continue
        with contextlib.suppress(OSError):
            for old in os.listdir(folder):
                if old.startswith("catalogue-") and old.endswith(".pickle") and old != name:
                    with contextlib.suppress(OSError):
                        os.unlink(os.path.join(folder, old))
        return


def _records(catalogue: Catalogue) -> list[dict[str, object]]:
    """Return the catalogue as plain data: every rule field, the compiled ones less closures."""
    import attrs

    records = []
    for rule in catalogue.rules:
        record = attrs.asdict(rule, recurse=False)
        compiled = attrs.asdict(rule.compiled, recurse=False)
        del compiled["test"], compiled["lets"]
        record["compiled"] = compiled
        records.append(record)
    return records


def _rebuild(records: list[dict[str, object]], paths: tuple[str, ...]) -> Catalogue:
    """Return the catalogue of stored records, compiling each rule's closures again."""
    from xstate_check.engine.catalogue import Catalogue, CompiledRule, Rule
    from xstate_check.engine.compiler import Evaluator, compile_expression

    rules = []
    for record in records:
        compiled = dict(record.pop("compiled"))  # type: ignore[call-overload]
        node, let_nodes = compiled["source"]
        lets: dict[str, Evaluator] = {}
        for name, let_node in let_nodes:
            lets[name] = compile_expression(let_node, lets)
        compiled_rule = CompiledRule(test=compile_expression(node, lets), lets=lets, **compiled)
        rules.append(Rule(compiled=compiled_rule, **record))  # type: ignore[arg-type]
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
    files = _rule_files([_rules_dir()])
    key = _key(files)
    if key is not None:
        name = f"catalogue-{key.hex()[:32]}.pickle"
        for folder in _cache_dirs():
            stored = _read(os.path.join(folder, name), key)
            if stored is not None:
                try:
                    return _rebuild(stored, tuple(files))
                except Exception:  # a cache of another shape: rebuild it
                    continue
    catalogue = _load_files(files)
    if key is not None:
        # The cache is an optimisation, never a failure.
        with contextlib.suppress(Exception):
            _write(key, _records(catalogue))
    return catalogue


def load_catalogue(paths: Sequence[str | os.PathLike[str]] | None = None) -> Catalogue:
    """Return the catalogue: the shipped rules (loaded once), or the rule files in ``paths``.

    ``paths`` may name TOML files and directories of them. A malformed rule raises
    ``InputError`` naming the file and line, with a caret under the bad span.
    """
    if paths is None:
        return _default_catalogue()
    return _load_files(_rule_files(paths))
