"""Every rule that declares a fix, on every bundled profile it applies to: a template breaks
the profile (one bit of the rule's own fix groups changed), the fix engine fixes it, and the
rule's finding is gone with nothing new in its place.

The cases are generated from the catalogue, so a rule that gains a ``[[rule.autofix]]``
table is tested here without a line more.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from xstate_check.engine import evaluate, load_catalogue
from xstate_check.engine.catalogue import Rule
from xstate_check.engine.runner import evaluate_rules
from xstate_check.facts import CONSTANTS
from xstate_check.fixes.engine import FixTarget, compute_fix
from xstate_check.gate import GateProfile, resolve_profiles
from xstate_check.hoststate import HostState
from xstate_check.subject import Subject
from xstate_check.template import apply_template, parse_template

CATALOGUE = load_catalogue()
FIXED_RULES = [rule.name for rule in CATALOGUE if rule.autofix]
_INDEX = {"eax": 0, "ebx": 1, "ecx": 2, "edx": 3}
PATH = "broken.json"
#: Breaks tried per profile, each in another register (every one of them, 5,683 cases,
#: passes too, in about 30 s).
BREAKS_PER_PROFILE = 3


def _profiles() -> list[GateProfile]:
    return list(resolve_profiles(["builtin"]))


PROFILES = _profiles()


def _breaks(rule: Rule, profile: GateProfile) -> Iterator[tuple[int, int, str, int, int]]:
    """Yield single-bit template pins (leaf, subleaf, register, bit, value) that may make the
    rule fail on the profile: a bit of a clear group's anchor (or of the group, without one)
    cleared where the profile has it, and a bit of the group set where it lacks it; a bit a
    restore group covers pinned to the other value (the lowest and highest bit of each
    register the profile has set, and of those it has clear); and the rule's own CPUID bits
    (``cpuid_bits``) flipped."""
    seen: set[tuple[int, int, str, int, int]] = set()
    for group in rule.autofix:
        if group.action == "clear":
            cleared, set_ = group.anchor or group.bits, group.bits
        else:
            cleared, set_ = group.bits, group.bits
        wide = group.action == "restore"
        for refs, pinned in ((cleared, 0), (set_, 1)):
            for leaf, subleaf, register, mask in refs:
                entry = profile.cpuid.entries.get((leaf, subleaf))
                if entry is None:
                    continue
                value = entry[_INDEX[register]]
                chosen = mask & value if pinned == 0 else mask & ~value
                bits = [bit for bit in range(32) if chosen >> bit & 1]
                for bit in (bits[:1] + bits[-1:] if wide else bits):
                    found = (leaf, subleaf, register, bit, pinned)
                    if found not in seen:
                        seen.add(found)
                        yield found
    for leaf, subleaf, register, mask in rule.cpuid_bits:
        entry = profile.cpuid.entries.get((leaf, subleaf))
        if entry is None:
            continue
        value = entry[_INDEX[register]]
        for bit in range(32):
            if mask >> bit & 1:
                found = (leaf, subleaf, register, bit, 0 if value >> bit & 1 else 1)
                if found not in seen:
                    seen.add(found)
                    yield found


def _host(rule: Rule, profile: GateProfile) -> HostState | None:
    """Return host facts for a rule that reads them: a host whose KVM offers the profile's
    table and whose VMM lacks the guest permission for dynamic xfeatures (None otherwise)."""
    if not any(name.startswith(("host.", "kvm.")) for name in rule.compiled.facts):
        return None
    entry = profile.cpuid.entries.get((0xD, 0))
    xcr0 = 0 if entry is None else entry[0] | entry[3] << 32
    dynamic = CONSTANTS["dynamic"]
    return HostState(kernel_release="6.1.0", supported=xcr0, permitted=xcr0 & ~dynamic,
                     guest_permitted=xcr0 & ~dynamic, kvm_available=True,
                     kvm_guest_supported=xcr0, kvm_cpuid=profile.cpuid)


EMPTY = '{\n  "cpuid_modifiers": []\n}\n'


def _template(profile: GateProfile, pin: tuple[int, int, str, int, int]) -> str:
    leaf, subleaf, register, bit, pinned = pin
    chars = ["x"] * 32
    chars[31 - bit] = str(pinned)
    return json.dumps({"cpuid_modifiers": [{
        "leaf": f"{leaf:#x}", "subleaf": f"{subleaf:#x}",
        "flags": profile.cpuid.flags.get((leaf, subleaf), 0),
        "modifiers": [{"register": register, "bitmap": "0b" + "".join(chars)}],
    }]}, indent=2) + "\n"


def _subject(text: str, profile: GateProfile, host: HostState | None) -> Subject:
    template = parse_template(text, PATH)
    applied = apply_template(template, profile.cpuid)
    return Subject.of(profile.name, profile.cpuid, template=PATH, guest=applied.cpuid,
                      missing=applied.missing, host=host)


def _problems(text: str, profile: GateProfile, host: HostState | None) -> set[str]:
    return {finding.name for finding in evaluate(_subject(text, profile, host)).findings
            if finding.severity in ("error", "warning")}


@pytest.mark.parametrize("name", FIXED_RULES)
def test_the_fix_removes_what_breaks_each_profile(name: str) -> None:
    """On each bundled profile the rule applies to, the first single-bit breaks that make
    it fail (in up to three registers) are fixed: the rule's findings are gone, no error or
    warning of another rule appears, and the fixed text is a template the reader accepts."""
    rule = CATALOGUE.get(name)
    strict = rule.severity == "warning"
    checked: list[str] = []
    for profile in PROFILES:
        host = _host(rule, profile)
        candidates: list[tuple[str, str, tuple[int, int, str] | None]] = (
            [(EMPTY, "no template change, host facts", None)] if host else [])
        candidates += [(_template(profile, pin), "{:#x}.{:#x}.{} bit {} = {}".format(*pin),
                        pin[:3]) for pin in _breaks(rule, profile)]
        registers: set[object] = set()
        for text, what, register in candidates:
            if register in registers or not evaluate_rules(_subject(text, profile, host),
                                                           [rule]):
                continue
            where = f"{profile.name}, {what}"
            before = _problems(text, profile, host)
            fix = compute_fix(text, PATH, [FixTarget(profile.name, profile.cpuid, host=host)],
                              strict=strict, unsafe=True)
            assert name in fix.fixed, f"{where}: {fix.unfixed}"
            assert fix.changed() and fix.edits, where
            after = _problems(fix.text, profile, host)
            assert name not in after, where
            assert after <= before, f"{where}: new {sorted(after - before)}"
            parse_template(fix.text, PATH)
            checked.append(profile.name)
            registers.add(register)
            if len(registers) == BREAKS_PER_PROFILE:
                break
    assert checked, f"{name}: no single template bit of its fix groups makes it fail on a " \
        "bundled profile"
