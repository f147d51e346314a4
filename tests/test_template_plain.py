"""The plain template reader (C JSON, values located by their keys) and the thorough one
(the positioned tree) read every text alike: the plain one answers or leaves the text to
the other, never answers otherwise."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from xstate_check import jsonpos
from xstate_check.errors import InputError
from xstate_check.template import Template, _plain_template, parse_template, template_from_node

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "firecracker"

#: Pieces a mutation inserts: JSON syntax, escapes, keys the reader locates, a surrogate.
_PIECES = [*'{}[],:"\\ \n0123456789abcdefx_-+!.eE', "leaf", '"leaf"', '"bitmap"',
           '"bitmap": "0b1",', "\\u0061", '"flags": 1,', "0x", "0b", "\ud800", "é", "-0",
           "NaN", '"extra": {"leaf": "0x1"},']


def _thorough(text: str) -> Template | None:
    """Return the positioned reader's Template, or None where it refuses the text."""
    try:
        root = jsonpos.parse(text, "t.json", allow_duplicates=True, lone_surrogates=True)
        return template_from_node(root, text, "t.json")
    except InputError:
        return None


def _texts() -> list[str]:
    paths = sorted((REPO / "examples").rglob("*.json"))
    if SHARED.is_dir():
        paths += sorted(SHARED.glob("*.json"))
    return [path.read_text(encoding="utf-8") for path in paths]


def _reshaped(text: str, chooser: random.Random) -> str:
    """Return the document with keys reordered, MSR modifiers added, another indent."""
    document = json.loads(text)
    if not isinstance(document, dict):
        return text
    for leaf in document.get("cpuid_modifiers", []):
        items = list(leaf.items())
        chooser.shuffle(items)
        leaf.clear()
        leaf.update(items)
    if chooser.random() < 0.5:
        document["msr_modifiers"] = [
            {"addr": f"{0x10A + index:#x}", "bitmap": "0b" + "x" * 60 + f"{index:04b}"}
            for index in range(chooser.randrange(4))]
    if chooser.random() < 0.3:
        document["kvm_capabilities"] = chooser.sample(["171", "!56", "0", "+7"], 2)
    items = list(document.items())
    chooser.shuffle(items)
    return json.dumps(dict(items), indent=chooser.choice([None, 1, 2, 4]))


@pytest.mark.parametrize("seed", range(4))
def test_plain_reader_answers_as_the_thorough_one(seed: int) -> None:
    """On real templates reshaped and mutated, the plain answer equals the thorough one
    (locations included), and every text the thorough reader refuses is left to it."""
    chooser = random.Random(seed)
    texts = _texts()
    answered = 0
    for _ in range(1500):
        text = chooser.choice(texts)
        if chooser.random() < 0.4:
            text = _reshaped(text, chooser)
        for _ in range(chooser.randrange(3)):
            at = chooser.randrange(len(text) + 1)
            if chooser.random() < 0.5:
                text = text[:at] + chooser.choice(_PIECES) + text[at:]
            else:
                text = text[:at] + text[at + chooser.randrange(1, 4):]
        plain = _plain_template(text, "t.json")
        if plain is None:
            continue
        answered += 1
        assert plain == _thorough(text), text
    assert answered > 100


def test_every_real_template_is_read_plainly_and_alike() -> None:
    """Firecracker's valid x86 templates and the examples take the plain way, with the
    same answer."""
    for text in _texts():
        document = json.loads(text)
        expected = _thorough(text)
        if expected is None or "cpuid_modifiers" not in document:
            continue  # a malformed or aarch64 template, a fingerprint
        plain = _plain_template(text, "t.json")
        assert plain is not None and plain == expected
        assert parse_template(text, "t.json") == plain


@pytest.mark.parametrize("text", [
    '{"cpuid_modifiers": [{"leaf": "0x1", "subleaf": "0x0", "flags": 0, "modifiers": [], '
    '"leaf": "0x2"}]}',
    '{"cpuid_modifiers": [{"leaf": "0x1", "subleaf": "0x0", "flags": -0, "modifiers": []}]}',
    '{"cpuid_modifiers": [{"le\\u0061f": "0x1", "subleaf": "0x0", "flags": 0, '
    '"modifiers": []}]}',
    '{"cpuid_modifiers": [{"leaf": "0x1", "subleaf": "0x0", "flags": 0, "modifiers": [], '
    '"note": {"leaf": "0x9"}}]}',
    '{"cpuid_modifiers": [{"leaf": "0x100000000", "subleaf": "0x0", "flags": 0, '
    '"modifiers": []}]}',
    '{"cpuid_modifiers": [{"leaf": "0x1", "subleaf": "0x0", "flags": 1.0, "modifiers": []}]}',
    '{"cpuid_modifiers": [{"leaf": "0x1", "subleaf": "0x0", "flags": 0, "modifiers": '
    '[{"register": "eax", "register": "ebx", "bitmap": "0b1"}]}]}',
    '{"cpuid_modifiers": [{"leaf": "0x1", "subleaf": "0x0", "flags": 0, "modifiers": '
    '[{"register": "eax", "bitmap": "0b1"}]}], "cpuid_modifiers": []}',
    '{"cpuid_modifiers": [{"leaf": "0x1", "subleaf": "0x0", "flags": 0, "modifiers": '
    '[{"register": "eax", "bitmap": "0b1:"}]}]}',
    '{"cpuid_modifiers": [], "vcpu_features": []}',
    '{"kvm_capabilities": ["!x"]}',
    '{"cpuid_modifiers": [{"leaf": "0x1", "subleaf": "0x0", "flags": 0, "modifiers": '
    '[{"register": "Eax", "bitmap": "0b1"}]}]}',
])
def test_what_is_not_plain_is_left_to_the_thorough_reader(text: str) -> None:
    """A repeated key, -0, an escape, an unknown key, a value out of range, of the wrong
    type or form:
    the plain reader leaves the text, and what is read (or refused) is the thorough way's."""
    assert _plain_template(text, "t.json") is None
    expected = _thorough(text)
    if expected is None:
        with pytest.raises(InputError):
            parse_template(text, "t.json")
    else:
        assert parse_template(text, "t.json") == expected
