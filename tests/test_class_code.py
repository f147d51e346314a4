"""The attrs methods of the pre-boot path's classes, compiled once and kept on disk.

Each test runs fresh interpreters that import the pre-boot path with a cache folder of their
own, counting the attrs sources the interpreter really compiled.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Counts the package's attrs sources compiled; then checks the classes behave: equality,
# hashing with the number of this process's __hash__ source, repr.
PROBE = """
import builtins, json, linecache, sys
compiled, own = [], []
real = builtins.compile
def counting(source, filename, *args, **kwargs):
    if str(filename).startswith("<attrs generated methods xstate_check."):
        compiled.append(filename)
    elif str(filename).startswith("<attrs generated"):
        own.append(filename)  # attrs's own classes, made as it imports
    return real(source, filename, *args, **kwargs)
builtins.compile = counting
import xstate_check.preboot
builtins.compile = real
import attr._make
from xstate_check.errors import Location
one, two = Location("a.json", 3, 4), Location("a.json", 3, 4)
source = "".join(linecache.cache["<attrs generated methods xstate_check.errors.Location>"][2])
number = int(source[source.index("return hash((") + len("return hash(("):].split(",")[0])
print(json.dumps({
    "compiled": len(compiled),
    "own": len(own),
    "equal": one == two and hash(one) == hash(two) and one != Location("a.json", 3, 5),
    "number": number in Location.__hash__.__code__.co_consts,
    "repr": repr(one),
    "patched": "compile" in vars(attr._make),
}))
"""


def _run(folder: Path | str, seed: str = "1") -> dict[str, object]:
    env = {**os.environ, "XSTATE_CHECK_CACHE_DIR": str(folder), "PYTHONHASHSEED": seed}
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                          env=env, check=False)
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["equal"] and result["number"] and not result["patched"]
    assert result["repr"] == "Location(path='a.json', line=3, column=4)"
    return result


def _cache_file(folder: Path) -> Path:
    found = list(folder.glob("classcode-*.marshal"))
    assert len(found) == 1
    return found[0]


def test_a_second_start_compiles_no_attrs_method(tmp_path: Path) -> None:
    """The first start compiles the classes' methods and keeps them; the next compiles none,
    and its classes compare, hash and print as attrs makes them."""
    assert int(str(_run(tmp_path)["compiled"])) >= 10
    assert _cache_file(tmp_path).stat().st_size > 0
    assert _run(tmp_path)["compiled"] == 0


def test_attrs_own_classes_come_from_the_file_too(tmp_path: Path) -> None:
    """attrs's own classes (Attribute, Factory, its validators), made as attrs imports on the
    pre-boot path, are compiled on the first start and taken from the file on the next."""
    assert int(str(_run(tmp_path)["own"])) >= 10
    assert _run(tmp_path)["own"] == 0
    assert _run(tmp_path, seed="2")["own"] == 0  # Attribute's __hash__ holds this process's


def test_the_hash_number_is_this_processs(tmp_path: Path) -> None:
    """attrs's __hash__ holds a number of the per-process string hash: a start with another
    hash seed takes the stored code with its own number (the PROBE checks it)."""
    _run(tmp_path, seed="1")
    assert _run(tmp_path, seed="2")["compiled"] == 0
    assert _run(tmp_path, seed="random")["compiled"] == 0


def test_a_file_others_may_write_is_not_used(tmp_path: Path) -> None:
    """Code objects are run: a file writable by group or others is ignored (compiled again)."""
    _run(tmp_path)
    _cache_file(tmp_path).chmod(0o666)
    assert int(str(_run(tmp_path)["compiled"])) >= 10


@pytest.mark.parametrize("damage", ["header", "body", "empty"])
def test_a_damaged_file_is_compiled_again(tmp_path: Path, damage: str) -> None:
    """Another interpreter's header, bytes that do not unmarshal, or an empty file: the
    classes are compiled as attrs does, and the file is written again."""
    _run(tmp_path)
    path = _cache_file(tmp_path)
    data = path.read_bytes()
    damaged = {"header": b"xstate-check class code 1\n0.0\0" + data[data.index(b"\0") + 1:],
               "body": data[:data.index(b"\0") + 1] + b"\xff" * 64, "empty": b""}[damage]
    path.write_bytes(damaged)
    assert int(str(_run(tmp_path)["compiled"])) >= 10
    assert _run(tmp_path)["compiled"] == 0


def test_an_empty_cache_setting_keeps_nothing() -> None:
    """``XSTATE_CHECK_CACHE_DIR`` empty turns the cache off: every start compiles."""
    assert int(str(_run("")["compiled"])) >= 10
    assert int(str(_run("")["compiled"])) >= 10
