"""Security: rule files, templates and dumps are data; nothing executes them; no network.

Each hostile rule file is loaded (and evaluated, if it loads) in a child process that
first warms every lazy import, then watches Python's audit events: code execution
(``exec``, ``compile``), process creation and sockets must never appear, a file the rule
tries to create must not exist, and the outcome must be an InputError (never a
MemoryError, a RecursionError or a hang). The child runs under a 1 GiB address-space limit,
so a rule that makes the engine allocate without bound fails as a MemoryError instead of
exhausting the machine.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from xstate_check import cli

REPO = Path(__file__).resolve().parents[1]
HANG_GUARD = 120
#: Audit events that mean code was run, a process started or the network was used.
WATCHED = (
    "exec", "compile", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
    "subprocess.Popen", "socket.", "ctypes.dlopen", "pickle.find_class", "marshal.loads",
    "urllib.Request", "builtins.input", "code.__new__", "function.__new__",
)

CHILD = textwrap.dedent(
    """
    import json, resource, sys
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
    from xstate_check.api import build_subject
    from xstate_check.engine import default_rules_dir, evaluate, load_catalogue
    from xstate_check.sources.profiles import load_profile

    subjects = [build_subject(load_profile("sapphire-rapids-w7-2475x")),
                build_subject(load_profile("zen4-genoa-epyc-9124"), role="guest")]
    # Every lazy import happens here, before the watch starts: the rule-file reader (the
    # shipped catalogue may come from its cache) and the typo hints.
    import difflib
    for subject in subjects:
        evaluate(subject, load_catalogue([default_rules_dir()]))
    watched = tuple(json.loads(sys.argv[2]))
    events = []
    sys.addaudithook(lambda event, _: events.append(event) if event.startswith(watched) else None)
    outcome = {"error": None, "expected": None, "line": None}
    try:
        catalogue = load_catalogue([sys.argv[1]])
        for subject in subjects:
            evaluate(subject, catalogue)
    except BaseException as error:
        outcome["error"] = type(error).__name__
        outcome["expected"] = getattr(error, "expected", str(error))[:300]
        outcome["line"] = getattr(getattr(error, "location", None), "line", None)
    outcome["events"] = sorted(set(events))
    print(json.dumps(outcome))
    """
)


def _rule_text(field: str, value: str, extra: str = "") -> str:
    """Return the first rule of rules/xcr0.toml with one field replaced (a TOML string)."""
    text = (REPO / "rules" / "xcr0.toml").read_text(encoding="utf-8")
    headers = [match.start() for match in re.finditer(r"(?m)^\[\[rule\]\]", text)]
    rule = text[: headers[1]]
    line = f"{field} = {json.dumps(value)}"
    rule, count = re.subn(rf"(?m)^{field} = .*$", lambda _: line, rule)
    if not count:
        rule = rule.replace("[[rule]]\n", f"[[rule]]\n{line}\n", 1)
    return rule.replace("[[rule.pass]]", extra + "[[rule.pass]]", 1)


def _load_in_child(tmp_path: Path, text: str) -> dict[str, object]:
    path = tmp_path / "xcr0.toml"
    path.write_text(text, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    try:
        done = subprocess.run(
            [sys.executable, "-c", CHILD, str(path), json.dumps(WATCHED)], capture_output=True,
            text=True, timeout=HANG_GUARD, env=env, check=False, cwd=tmp_path,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"loading the rule did not end within {HANG_GUARD} s")
    assert done.returncode == 0, done.stderr[-2000:]
    outcome: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return outcome


HOSTILE_CHECKS = {
    "import-system": "__import__('os').system('touch PWNED')",
    "dunder-attribute": "xcr0.__class__",
    "dunder-name": "__builtins__",
    "eval-call": "eval('1') == 1",
    "open-call": "open('PWNED') == 1",
    "lambda": "(lambda: 1) == 1",
    "subclasses": "().__class__.__base__.__subclasses__()",
    "comprehension": "[c for c in xcr0]",
    "getattr": "getattr(xcr0, '__class__')",
    "semicolon": "x87 in xcr0; __import__('os')",
    "power": "2**2**64 == xcr0",
    "backtick": "`touch PWNED`",
}


@pytest.mark.parametrize("check", sorted(HOSTILE_CHECKS))
def test_hostile_checks_are_input_errors_and_never_run(check: str, tmp_path: Path) -> None:
    """Python in a rule's check is an InputError with a line; nothing executes."""
    outcome = _load_in_child(tmp_path, _rule_text("check", HOSTILE_CHECKS[check]))
    assert outcome["error"] == "InputError", outcome
    assert outcome["line"], outcome
    assert outcome["events"] == []
    assert not (tmp_path / "PWNED").exists()


HOSTILE_MESSAGES = {
    "format-attribute": "{0.__class__}",
    "fact-attribute": "XCR0 {xcr0.__class__.__mro__}",
    "item-globals": "{item.__init__.__globals__}",
    "call": "{__import__('os').system('touch PWNED')}",
    "conversion": "{xcr0!r}",
    "nested-format": "{xcr0:{xcr0}}",
    "index": "{xcr0[0]}",
    "unbalanced": "{xcr0",
}


@pytest.mark.parametrize("message", sorted(HOSTILE_MESSAGES))
def test_hostile_message_placeholders_are_input_errors(message: str, tmp_path: Path) -> None:
    """A message placeholder that is not a plain fact name (with a format) is an InputError."""
    outcome = _load_in_child(tmp_path, _rule_text("message", HOSTILE_MESSAGES[message]))
    assert outcome["error"] == "InputError", outcome
    assert outcome["events"] == []
    assert not (tmp_path / "PWNED").exists()


def test_braces_escaped_in_a_message_are_text(tmp_path: Path) -> None:
    """`{{` and `}}` in a message are literal braces: the rule loads and nothing runs."""
    outcome = _load_in_child(tmp_path, _rule_text("message", "{{0.__class__}} XCR0 {xcr0}"))
    assert outcome["error"] is None, outcome
    assert outcome["events"] == []


def test_a_let_bound_to_python_is_an_input_error(tmp_path: Path) -> None:
    """A `let` whose expression is Python (`__import__('os')`) is an InputError."""
    let = "[rule.let]\nos = \"__import__('os')\"\n\n"
    outcome = _load_in_child(tmp_path, _rule_text("check", "x87 in xcr0", let))
    assert outcome["error"] == "InputError", outcome
    assert outcome["events"] == []


@pytest.mark.parametrize("name", ["__class__", "__builtins__", "__import__"])
def test_dunder_let_names_are_only_names(name: str, tmp_path: Path) -> None:
    """A `let` named like a Python dunder is a plain name of the language: nothing runs."""
    let = f'[rule.let]\n{name} = "xcr0"\n\n'
    outcome = _load_in_child(tmp_path, _rule_text("check", f"{name} != 0", let))
    assert outcome["error"] in (None, "InputError"), outcome
    assert outcome["events"] == []


EXPENSIVE_CHECKS = {
    "shift-constant": "xcr0 == 1 << 99999999999",
    "shift-overflow": "xcr0 == 1 << 0xffffffffffffffffffff",
    "product-of-shifts": "xcr0 == (1 << 3000000000) * (1 << 3000000000)",
    "shift-at-runtime": "(xcr0 << 99999999999) == 0",
    "long-number": "xcr0 == " + "9" * 5000,
    "deep-parentheses": "(" * 5000 + "x87 in xcr0" + ")" * 5000,
    "deep-not": "not " * 20000 + "x87 in xcr0",
    "deep-minus": "xcr0 == " + "-" * 20000 + "1",
}


@pytest.mark.parametrize("check", sorted(EXPENSIVE_CHECKS))
def test_expensive_checks_end_in_input_error_or_a_result(check: str, tmp_path: Path) -> None:
    """Huge shifts and numbers, deep nesting: an InputError or a result, in bounded memory."""
    outcome = _load_in_child(tmp_path, _rule_text("check", EXPENSIVE_CHECKS[check]))
    assert outcome["error"] in (None, "InputError"), outcome
    assert outcome["events"] == []


# ----------------------------------------------------------------------------- templates, dumps

HOSTILE_TEMPLATE = {
    "cpuid_modifiers": [{
        "leaf": "__import__('os').system('touch PWNED')", "subleaf": "0x0", "flags": 0,
        "modifiers": [{"register": "eax", "bitmap": "{0.__class__}"}],
    }],
    "msr_modifiers": [],
}


def test_templates_and_dumps_are_read_as_data(tmp_path: Path, data_dir: Path) -> None:
    """A template and a dump holding Python, shell and format strings: errors or data only."""
    template = tmp_path / "template.json"
    template.write_text(json.dumps(HOSTILE_TEMPLATE), encoding="utf-8")
    dump = tmp_path / "dump.txt"
    real = (data_dir / "cpuid-dumps/instlatx64/GenuineIntel00806F8_SapphireRapids_05_CPUID.txt")
    lines = real.read_text(encoding="utf-8").splitlines()
    lines[3] += " [$(touch PWNED)] [{0.__class__}] [__import__('os').system('touch PWNED')]"
    dump.write_text("\n".join(lines) + "\n", encoding="utf-8")
    code = textwrap.dedent(
        """
        import json, sys
        from xstate_check import cli
        cli.main(["rules"])  # warm every lazy import
        cli.main(["check", sys.argv[1], "--format", "json"])
        watched = tuple(json.loads(sys.argv[3]))
        events = []
        sys.addaudithook(lambda e, a: events.append(e) if e.startswith(watched) else None)
        codes = [cli.main(["check", sys.argv[1], "--format", "json", "-o", "out.json"]),
                 cli.main(["check", sys.argv[1], "-t", sys.argv[2]])]
        print(json.dumps({"codes": codes, "events": sorted(set(events))}))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(dump), str(template), json.dumps(WATCHED)],
        capture_output=True, text=True, timeout=HANG_GUARD, check=False, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
    )
    outcome = json.loads(done.stdout.splitlines()[-1])
    assert outcome["codes"][0] in (0, 1)  # the dump is read: its notes are decoration
    assert outcome["codes"][1] == 2  # the template's leaf is not a number
    assert outcome["events"] == []
    assert not (tmp_path / "PWNED").exists()
    assert "template.json:4" in done.stderr or "template.json:1" in done.stderr


# ----------------------------------------------------------------------------- network


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Make every way to reach the network fail the test, and record each attempt."""
    attempts: list[str] = []

    def refuse(name: str) -> object:
        def blocked(*args: object, **kwargs: object) -> object:
            attempts.append(f"{name}{args[1:] if name.startswith('socket.socket') else args}")
            raise AssertionError(f"network access attempted: {name}")
        return blocked

    for name in ("connect", "connect_ex", "sendto", "bind"):
        monkeypatch.setattr(socket.socket, name, refuse(f"socket.socket.{name}"))
    for name in ("create_connection", "getaddrinfo", "gethostbyname", "gethostbyname_ex",
                 "create_server"):
        monkeypatch.setattr(socket, name, refuse(f"socket.{name}"))
    yield attempts
    assert attempts == [], f"network access attempted: {attempts}"


def _pipeline(data_dir: Path, out: Path) -> Iterator[list[str]]:
    dump = str(data_dir / "cpuid-dumps/instlatx64/GenuineIntel00806F8_SapphireRapids_05_CPUID.txt")
    template = str(data_dir / "firecracker/T2S.json")
    fingerprint = str(data_dir / "firecracker/fingerprint_INTEL_SAPPHIRE_RAPIDS_6.1host.json")
    for fmt in ("text", "json", "sarif", "junit", "github"):
        yield ["check", dump, "-t", template, "--format", fmt, "-o", str(out)]
    yield ["check", fingerprint, "--format", "json", "-o", str(out)]
    yield ["decode", dump, "-t", template, "--format", "json", "-o", str(out)]
    yield ["convert", dump, "-o", str(out)]
    yield ["gate", template, "--format", "json", "-o", str(out)]
    yield ["rules", "--format", "json", "-o", str(out)]
    yield ["explain", "amx-tile-pair", "-o", str(out)]
    yield ["profiles", "-o", str(out)]
    yield ["host", "--no-kvm", "--format", "json", "-o", str(out)]


def test_the_whole_pipeline_never_touches_the_network(
    no_network: list[str], data_dir: Path, tmp_path: Path
) -> None:
    """check, decode, convert, gate, rules, explain, profiles, host: no socket is used."""
    for argv in _pipeline(data_dir, tmp_path / "out"):
        # Exit codes are pinned in test_cli_exits.py; here only the network matters.
        assert isinstance(cli.main(argv), int)
    assert no_network == []

