"""What the pre-boot path imports: only what a check needs, in a fresh interpreter.

A pre-boot check sits before a VM boots, so its imports are its start-up time. Modules that
only a cache rebuild, another command or another format needs must stay out of it; these
tests run ``preboot()`` and ``xstate-check host --format json`` in fresh interpreters (the
second run, once the compiled catalogue is cached) and name what was imported.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

#: Never on the pre-boot path: path and archive machinery, hashing through OpenSSL,
#: pickle.py (its C unpickler is enough), the ctypes package (its C core is enough: see
#: system.libc), subprocesses, TOML, and the modules that only read rule files, templates
#: or other sources, or render other commands and formats.
FORBIDDEN = frozenset({
    "pathlib", "urllib", "urllib.parse", "ipaddress", "importlib.resources",
    "importlib.metadata", "zipfile", "shutil", "tempfile", "hashlib", "subprocess",
    "tomllib", "email", "pickle", "ctypes", "ctypes._endian",
    "xstate_check.engine.loader", "xstate_check.engine.examples",
    "xstate_check.engine.tokenizer", "xstate_check.tomltext", "xstate_check.textfile",
    "xstate_check.template", "xstate_check.api", "xstate_check.gate",
    "xstate_check.migration", "xstate_check.restore", "xstate_check.oracle",
    "xstate_check.explain", "xstate_check.jsonpos", "xstate_check.sources.load",
    "xstate_check.sources.dumps", "xstate_check.sources.profiles",
    "xstate_check.sources.firecracker", "xstate_check.sources.ownjson",
    "xstate_check.facts.vocabulary", "xstate_check.system.isolated",
    "xstate_check.system.vcpu", "xstate_check.system.protocol", "xstate_check.sources", "mmap",
    "xstate_check.reportparts", "xstate_check.subjectparts", "xstate_check.engine.parser",
})
#: Never in ``preboot()``, which prints nothing and parses no command line.
FORBIDDEN_IN_PREBOOT = FORBIDDEN | {"argparse", "json", "xstate_check.cli",
                                    "xstate_check.config", "xstate_check.formats"}
#: Never in ``host --format json``: the other formats and commands.
FORBIDDEN_IN_HOST = FORBIDDEN | {
    "xstate_check.formats.text", "xstate_check.formats.sarif", "xstate_check.formats.junit",
    "xstate_check.formats.markdown", "xstate_check.formats.github",
    "xstate_check.formats.decode",
}

KVM_USABLE = os.access("/dev/kvm", os.R_OK | os.W_OK)

# What the interpreter imported before the code ran (``site`` and the .pth files of the
# environment) is left out: the check did not import it.
PREBOOT = f"""
import sys
started = set(sys.modules)
import xstate_check
try:
    xstate_check.preboot(kvm={KVM_USABLE})
except xstate_check.XstateCheckError as error:
    print(type(error).__name__, file=sys.stderr)
imported = sorted(set(sys.modules) - started)
print(__import__("json").dumps(imported))
"""

HOST = f"""
import sys
started = set(sys.modules)
from xstate_check.cli import main
code = main(["host", "--format", "json", "-o", sys.argv[1]{'' if KVM_USABLE else ', "--no-kvm"'}])
imported = sorted(set(sys.modules) - started)
print(code, __import__("json").dumps(imported))
"""

pytestmark = pytest.mark.skipif(
    sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"),
    reason="the pre-boot path probes an x86-64 Linux host",
)


def _modules(code: str, tmp_path: Path, *args: str) -> list[str]:
    """Run ``code`` twice in fresh interpreters sharing a cache; return the second's modules
    (its last line of output, a JSON list)."""
    env = {**os.environ, "XSTATE_CHECK_CACHE_DIR": str(tmp_path / "cache")}
    for _ in range(2):
        done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True,
                              text=True, env=env, cwd=tmp_path, check=False)
        assert done.returncode == 0, done.stderr
    last = done.stdout.strip().splitlines()[-1]
    modules: list[str] = json.loads(last.partition(" ")[2] if last[0] != "[" else last)
    return modules


def test_preboot_imports_only_what_a_check_needs(tmp_path: Path) -> None:
    """A fresh interpreter's preboot() (catalogue cached) imports none of FORBIDDEN_IN_PREBOOT."""
    modules = _modules(PREBOOT, tmp_path)
    assert "xstate_check.preboot" in modules and "xstate_check.engine.runner" in modules
    assert sorted(FORBIDDEN_IN_PREBOOT.intersection(modules)) == []


def test_host_command_imports_only_its_own_format(tmp_path: Path) -> None:
    """``xstate-check host --format json -o FILE`` imports none of FORBIDDEN_IN_HOST."""
    out = tmp_path / "host.json"
    modules = _modules(HOST, tmp_path, str(out))
    assert "xstate_check.cli" in modules and "json" in modules
    assert json.loads(out.read_text())["schema"] == "xstate-check/1"
    assert sorted(FORBIDDEN_IN_HOST.intersection(modules)) == []


# Every compile() of the pre-boot path, less the modules' own source (a checkout has no
# bytecode): what attrs writes for a class, a typing.NamedTuple field's annotation, and
# collections.namedtuple's __new__ (which both make it, compiled from `lambda _cls, ...`).
COMPILED = f"""
import sys
import attrs, collections, typing  # what they compile for themselves is not the check's
compiled = []

def watch(event, args):
    if event == "compile" and not str(args[1]).endswith(".py"):
        source = args[0].decode() if isinstance(args[0], bytes) else str(args[0])
        compiled.append(source.strip().splitlines()[0] if source.strip() else "")

sys.addaudithook(watch)
import xstate_check
xstate_check.preboot(kvm={KVM_USABLE})
print(__import__("json").dumps(compiled))
"""


def test_a_warm_start_compiles_no_method_and_no_annotation(tmp_path: Path) -> None:
    """Once the caches are written, a fresh interpreter's preboot() compiles no attrs method
    (classcode's cache has them) and no field annotation (the record classes are
    records.NamedTuple's): only collections.namedtuple's one-line __new__ per record class."""
    compiled = _modules(COMPILED, tmp_path)
    assert compiled, "the check makes record classes: namedtuple compiles their __new__"
    assert [line for line in compiled if not line.startswith("lambda _cls")] == []


def test_a_cache_miss_reads_the_rule_files(tmp_path: Path) -> None:
    """Without a cache the same call compiles the rule files: the loader is imported then, so
    the tests above would see it had a cached catalogue not been used."""
    env = {**os.environ, "XSTATE_CHECK_CACHE_DIR": ""}
    done = subprocess.run([sys.executable, "-c", PREBOOT], capture_output=True, text=True,
                          env=env, cwd=tmp_path, check=False)
    assert done.returncode == 0, done.stderr
    modules = json.loads(done.stdout.strip().splitlines()[-1])
    assert "xstate_check.engine.loader" in modules
