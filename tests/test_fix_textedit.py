"""Template text edits: the pins change as asked, every other character stays, the result
is a template Firecracker accepts, whatever the file's shape."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import pytest

from xstate_check.fixes.textedit import BitChange, RegisterKey, Why, apply_edits, edit_text
from xstate_check.template import parse_template

WHY = Why(("amx-tile-pair",), "safe")
FLAGS = {(7, 0): 1, (0xD, 0): 1, (0xD, 1): 1, (1, 0): 0}


def _edit(text: str, changes: dict[RegisterKey, BitChange]) -> str:
    why = {key: dict.fromkeys(range(32), WHY) for key in changes}
    edits = edit_text(text, "t.json", changes, why, FLAGS)
    for edit in edits:
        assert text[edit.start:edit.end] == edit.original
    spans = [(edit.start, edit.end) for edit in edits]
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans)), "overlap"
    return apply_edits(text, edits)


def _expected(text: str, changes: dict[RegisterKey, BitChange]) -> dict[RegisterKey,
                                                                        tuple[int, int]]:
    pins = dict(parse_template(text, "t.json").modified_bits())
    for key, change in changes.items():
        filter_bits, value = pins.get(key, (0, 0))
        if key not in pins and not change.clear:
            continue
        pins[key] = ((filter_bits & ~change.unpin) | change.clear,
                     value & ~change.unpin & ~change.clear)
    return pins


def test_clear_changes_one_character_of_the_bitmap() -> None:
    """Clearing bit 17 where bit 18 is already 0 replaces exactly that character."""
    text = ('{\n  "cpuid_modifiers": [\n    {"leaf": "0xd", "subleaf": "0x0", "flags": 1,\n'
            '     "modifiers": [{"register": "eax",\n'
            '                    "bitmap": "0bxxxxxxxxxxxxx0xxxxxxxxxxxxxxxxxx"}]}\n  ]\n}\n')
    changes = {(0xD, 0, "eax"): BitChange(clear=1 << 17)}
    why = {(0xD, 0, "eax"): {17: WHY}}
    (edit,) = edit_text(text, "t.json", changes, why, FLAGS)
    assert (edit.original, edit.replacement) == ("x", "0")
    assert edit.end == edit.start + 1 and edit.end_column == edit.column + 1
    assert text.splitlines()[edit.line - 1][edit.column - 1] == "x"
    assert edit.rules == ("amx-tile-pair",) and edit.applicability == "safe"
    assert (edit.leaf, edit.subleaf, edit.register) == (0xD, 0, "eax")


def test_crlf_compact_and_separators_are_kept() -> None:
    """A CRLF file keeps CRLF; '_' separators stay; a short bitmap grows on the left."""
    text = ('{"cpuid_modifiers": [{"leaf": "0x7", "subleaf": "0x0", "flags": 1, "modifiers": '
            '[{"register": "ebx", "bitmap": "0b1111_0000"}]}]}\r\n')
    changes = {(7, 0, "ebx"): BitChange(clear=(1 << 6) | (1 << 12))}
    after = _edit(text, changes)
    assert after.endswith("}]}]}\r\n")
    assert '"bitmap": "0b0xxxx1011_0000"' in after
    assert dict(parse_template(after, "t.json").modified_bits()) == _expected(text, changes)


def test_unpin_drops_the_pin_in_every_modifier_that_holds_it() -> None:
    """A bit pinned by two modifiers is dropped from both (the earlier would come back)."""
    text = json.dumps({"cpuid_modifiers": [
        {"leaf": "0xd", "subleaf": "0x1", "flags": 1,
         "modifiers": [{"register": "eax", "bitmap": "0bxxxxxxxxxxxxxxxxxxxxxxxxxxx0xxxx"}]},
        {"leaf": "0xd", "subleaf": "0x1", "flags": 1,
         "modifiers": [{"register": "eax", "bitmap": "0bxxxxxxxxxxxxxxxxxxxxxxxxxxx0x0xx"}]},
    ]}, indent=4)
    changes = {(0xD, 1, "eax"): BitChange(unpin=1 << 4)}
    after = _edit(text, changes)
    assert after.count("0bxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx") == 1
    assert "0bxxxxxxxxxxxxxxxxxxxxxxxxxxxxx0xx" in after
    assert dict(parse_template(after, "t.json").modified_bits()) == _expected(text, changes)


def test_clear_goes_in_the_last_modifier_of_the_register() -> None:
    """Where two modifiers hold a register, the bit is cleared in the one applied last."""
    text = json.dumps({"cpuid_modifiers": [
        {"leaf": "0x7", "subleaf": "0x0", "flags": 1,
         "modifiers": [{"register": "edx", "bitmap": "0bxxxxxx1xxxxxxxxxxxxxxxxxxxxxxxxx"},
                       {"register": "edx", "bitmap": "0bxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}]},
    ]}, indent=2)
    after = _edit(text, {(7, 0, "edx"): BitChange(clear=1 << 25)})
    assert '"0bxxxxxx1xxxxxxxxxxxxxxxxxxxxxxxxx"' in after
    assert '"0bxxxxxx0xxxxxxxxxxxxxxxxxxxxxxxxx"' in after
    assert parse_template(after, "t.json").modified_bits()[(7, 0, "edx")] == (1 << 25, 0)


def test_a_missing_register_and_entry_are_inserted_in_order() -> None:
    """A register the entry lacks goes in register order, a new entry in (leaf, subleaf)
    order; both copy their neighbours' layout, and the other keys stay where they were."""
    text = json.dumps({"kvm_capabilities": ["!56"], "cpuid_modifiers": [
        {"leaf": "0x1", "subleaf": "0x0", "flags": 0,
         "modifiers": [{"register": "ecx", "bitmap": "0bxxx0xxxxxxxxxxxxxxxxxxxxxxxxxxxx"}]},
        {"leaf": "0xd", "subleaf": "0x0", "flags": 1,
         "modifiers": [{"register": "ebx", "bitmap": "0bxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"},
                       {"register": "edx", "bitmap": "0bxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}]},
    ], "msr_modifiers": []}, indent=2) + "\n"
    changes = {(0xD, 0, "eax"): BitChange(clear=0x60000),
               (7, 0, "edx"): BitChange(clear=1 << 24)}
    after = _edit(text, changes)
    template = parse_template(after, "t.json")
    assert [(m.leaf, m.subleaf) for m in template.cpuid_modifiers] == [(1, 0), (7, 0), (0xD, 0)]
    assert [r.register for r in template.cpuid_modifiers[2].modifiers] == ["eax", "ebx", "edx"]
    assert template.cpuid_modifiers[1].flags == 1
    assert dict(template.modified_bits()) == _expected(text, changes)
    assert json.loads(after).keys() == json.loads(text).keys()
    # Same indentation as a formatter would give: the shape is the neighbours'.
    assert json.dumps(json.loads(after), indent=2) + "\n" == after


@pytest.mark.parametrize("text", [
    "{}\n",
    '{\n  "kvm_capabilities": []\n}\n',
    '{\n  "cpuid_modifiers": []\n}\n',
])
def test_the_first_modifiers_of_an_empty_template(text: str) -> None:
    """A template without cpuid modifiers gets them, indented like the file."""
    changes = {(0xD, 0, "eax"): BitChange(clear=0x60000),
               (7, 0, "edx"): BitChange(clear=1 << 24)}
    after = _edit(text, changes)
    template = parse_template(after, "t.json")
    assert [(m.leaf, m.subleaf) for m in template.cpuid_modifiers] == [(7, 0), (0xD, 0)]
    assert dict(template.modified_bits()) == _expected(text, changes)
    assert json.dumps(json.loads(after), indent=2) + "\n" == after


def test_an_escaped_bitmap_is_rewritten_whole() -> None:
    """A bitmap written with escapes (\\u0078 is x) is replaced by its plain form."""
    text = ('{"cpuid_modifiers": [{"leaf": "0xd", "subleaf": "0x0", "flags": 1, "modifiers": '
            '[{"register": "eax", "bitmap": "0b\\u0078\\u0078"}]}]}')
    after = _edit(text, {(0xD, 0, "eax"): BitChange(clear=1)})
    assert '"0bxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx0"' in after


def test_random_changes_on_real_templates(data_dir: Path) -> None:
    """On Firecracker's templates, random clears and unpins give exactly the asked pins, and
    the text outside the edits is untouched (checked by reading it back)."""
    rng = random.Random(16)
    names = ("T2", "C3", "T2A", "SPR_TO_T2_6.1", "GNR_TO_T2_6.1")
    keys: list[RegisterKey] = [(leaf, sub, reg) for leaf, sub in ((1, 0), (7, 0), (7, 1),
                                                                  (0xD, 0), (0xD, 1))
                               for reg in ("eax", "ebx", "ecx", "edx")]
    for name in names:
        text = (data_dir / "firecracker" / f"{name}.json").read_text()
        for _ in range(40):
            changes: dict[RegisterKey, BitChange] = {}
            for key in rng.sample(keys, 3):
                clear = rng.getrandbits(32) & rng.getrandbits(32)
                unpin = rng.getrandbits(32) & ~clear
                changes[key] = BitChange(clear=clear, unpin=unpin & 0xFFFF_FFFF)
            after = _edit(text, changes)
            assert dict(parse_template(after, "t.json").modified_bits()) == _expected(
                text, changes)
