"""Rule verdicts pinned on the bundled profiles, against what KVM and Linux really do.

Each test builds its subjects the way a user does: a bundled ``profile:NAME`` table and a
Firecracker template file (written here), and compares the findings with an oracle written
from the kernel and KVM source the rule pages cite, not from the rules themselves:

- KVM's ``cpuid_entry2_find()`` (arch/x86/kvm/cpuid.c): a guest's CPUID(leaf, subleaf) gets
  the first entry of the leaf that lacks SIGNIFICANT_INDEX or whose index matches, with the
  entries in the (leaf, subleaf) order Firecracker hands them over; Firecracker's
  normalization sets the flag again on 0xB, the 0x1F copies of 0xB and AMD's 0x8000001D.
- Linux's AVX users (arch/x86/include/asm/xor_avx.h, lib/raid6/avx2.c, lib/raid6/avx512.c)
  test CPUID flags only, while ``fpu__init_system_xstate()`` drops xfeatures whose gate is
  clear and keeps the flags.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from xstate_check.api import build_subject
from xstate_check.cpuid import FEATURES, CpuidSet, Registers
from xstate_check.engine import evaluate, load_catalogue
from xstate_check.engine.runner import evaluate_rules
from xstate_check.facts import Facts
from xstate_check.sources.load import load_cpuid
from xstate_check.sources.profiles import profile_index
from xstate_check.subject import Subject

CATALOGUE = load_catalogue()
SHADOW = CATALOGUE.get("indexed-subleaf-flags")
CLEARED = CATALOGUE.get("indexed-leaf-flags-cleared")
AVX_RULE = CATALOGUE.get("linux-avx-state-missing")

GUEST_PROFILES = [info.name for info in profile_index() if info.role == "guest"]
ALL_PROFILES = [info.name for info in profile_index()]
AMX_GUESTS = ["fc-sapphire-rapids-6.1", "fc-sapphire-rapids-6.18", "fc-granite-rapids-6.1",
              "fc-granite-rapids-6.18"]


def _profile(name: str) -> CpuidSet:
    return load_cpuid(f"profile:{name}")


class _Templates:
    """Writes Firecracker templates into a temporary directory, one file each."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.count = 0

    def write(self, modifiers: list[dict[str, object]]) -> Path:
        """Write a template with these cpuid modifiers and return its path."""
        self.count += 1
        path = self.directory / f"t{self.count}.json"
        path.write_text(json.dumps({"cpuid_modifiers": modifiers}, indent=2))
        return path


@pytest.fixture
def templates(tmp_path: Path) -> _Templates:
    """Return a writer of template files under tmp_path."""
    return _Templates(tmp_path)


def _modifier(leaf: int, subleaf: int, flags: int,
              **registers: str) -> dict[str, object]:
    return {"leaf": hex(leaf), "subleaf": hex(subleaf), "flags": flags,
            "modifiers": [{"register": name, "bitmap": bitmap}
                          for name, bitmap in registers.items()]}


def _clear_bits(*bits: int) -> str:
    """Return a 32-bit Firecracker bitmap that clears ``bits`` and keeps the others."""
    chars = ["x"] * 32
    for bit in bits:
        chars[31 - bit] = "0"
    return "0b" + "".join(chars)


# --- flags 0: what KVM's lookup returns ------------------------------------------------------


def _kvm_lookup(entries: list[tuple[int, int, int, Registers]], leaf: int,
                subleaf: int) -> Registers | None:
    """cpuid_entry2_find(): the first entry of ``leaf`` without the flag or with the index."""
    for function, index, flags, regs in entries:
        if function == leaf and (not flags & 1 or index == subleaf):
            return regs
    return None


def _entries_as_kvm_gets_them(table: CpuidSet, flags: dict[tuple[int, int], int],
                              vendor: str) -> list[tuple[int, int, int, Registers]]:
    """The kvm_cpuid2 Firecracker builds: sorted entries, normalization's flags applied."""
    result = []
    for (leaf, subleaf), regs in sorted(table.entries.items()):
        value = flags.get((leaf, subleaf), table.flag(leaf, subleaf))
        if (leaf == 0xB or (leaf == 0x1F and vendor == "GenuineIntel"
                            and (0xB, subleaf) in table.entries)
                or (leaf == 0x8000001D and vendor == "AuthenticAMD" and regs.eax & 0x1F)):
            value = 1  # normalize.rs / intel/normalize.rs / amd/normalize.rs set it again
        result.append((leaf, subleaf, value, regs))
    return result


def _multi_subleaf_entries(table: CpuidSet) -> Iterator[tuple[int, int]]:
    leaves = [leaf for leaf, _ in table.entries]
    for leaf, subleaf in table.entries:
        if leaves.count(leaf) > 1:
            yield leaf, subleaf


@pytest.mark.parametrize("profile", GUEST_PROFILES)
def test_flags_zero_is_an_error_exactly_where_it_hides_a_subleaf(
    profile: str, templates: _Templates
) -> None:
    """flags 0 on each entry of each leaf with subleaves: error iff KVM's lookup of a later
    subleaf returns other values than the table gives; info otherwise."""
    table = _profile(profile)
    checked = hidden_cases = 0
    for leaf, subleaf in _multi_subleaf_entries(table):
        path = templates.write([_modifier(leaf, subleaf, 0)])
        subject = build_subject(table, path)
        kvm = _entries_as_kvm_gets_them(table, {(leaf, subleaf): 0}, table.vendor)
        wrong = [other for (other_leaf, other), regs in table.entries.items()
                 if other_leaf == leaf and _kvm_lookup(kvm, leaf, other) != regs]
        errors = evaluate_rules(subject, [SHADOW])
        infos = evaluate_rules(subject, [CLEARED])
        where = f"{profile} flags 0 on {leaf:#x}.{subleaf:#x}"
        if wrong:
            hidden_cases += 1
            assert [f.severity for f in errors] == ["error"], where
            assert infos == [], where
            message = errors[0].message
            assert all(f"{other:#x}" in message for other in wrong), (where, message)
            assert errors[0].location is not None and errors[0].location.path == str(path)
        else:
            assert errors == [], where
            assert [f.severity for f in infos] == ["info"], where
        checked += 1
    assert checked >= 10 and hidden_cases >= 3, profile


def test_flags_zero_on_leaf_0xd_says_what_the_guest_does(templates: _Templates) -> None:
    """0xD.0 on an AMX table: XFD reads 0 (bit 4 of XCR0 0x602e7), TILECFG alone, XSETBV #GP.
    0xD.1, and 0xD.0 without AMX: other sizes, XSAVE disabled."""
    table = _profile("fc-sapphire-rapids-6.18")
    subject = build_subject(table, templates.write([_modifier(0xD, 0, 0)]))
    (finding,) = evaluate_rules(subject, [SHADOW])
    assert "as subleaf 0x0" in finding.message and "0x12" in finding.message
    assert "XFD (0xD.1 EAX[4]) reads as 0" in finding.message and "#GP" in finding.message
    subject = build_subject(table, templates.write([_modifier(0xD, 1, 0)]))
    (finding,) = evaluate_rules(subject, [SHADOW])
    assert "as subleaf 0x1" in finding.message and "disables XSAVE" in finding.message
    subject = build_subject(_profile("fc-cascade-lake-6.1"),
                            templates.write([_modifier(0xD, 0, 0)]))
    (finding,) = evaluate_rules(subject, [SHADOW])
    assert "disables XSAVE" in finding.message and "#GP" not in finding.message


def test_flags_zero_on_leaf_4_says_the_cache_walk_never_ends(templates: _Templates) -> None:
    """A flags-0 cache subleaf that is a real cache makes find_num_cache_leaves() spin."""
    table = _profile("fc-cascade-lake-6.1")
    subject = build_subject(table, templates.write([_modifier(0x4, 0, 0)]))
    (finding,) = evaluate_rules(subject, [SHADOW])
    assert "hangs at boot" in finding.message
    last = max(subleaf for leaf, subleaf in table.entries if leaf == 0x4)
    assert table.get(0x4, last).eax & 0x1F == 0  # KVM's table ends with a type-0 subleaf
    subject = build_subject(table, templates.write([_modifier(0x4, last, 0)]))
    assert evaluate_rules(subject, [SHADOW]) == []


def test_flags_zero_on_leaf_7_names_the_features_the_guest_loses(templates: _Templates) -> None:
    """7.1 read as 7.0 on Sapphire Rapids: the guest loses AVX_VNNI and AVX512_BF16."""
    subject = build_subject(_profile("fc-sapphire-rapids-6.1"),
                            templates.write([_modifier(0x7, 0, 0)]))
    (finding,) = evaluate_rules(subject, [SHADOW])
    assert "AVX_VNNI" in finding.message and "AVX512_BF16" in finding.message


def test_firecracker_templates_flags_are_quiet(data_dir: Path) -> None:
    """SPR_TO_T2_6.1 and GNR_TO_T2_6.1 set flags 0 on 0x1E.0 alone: info, never an error."""
    for template, profiles in (("SPR_TO_T2_6.1", AMX_GUESTS[:2]),
                               ("GNR_TO_T2_6.1", AMX_GUESTS[2:])):
        for profile in profiles:
            subject = build_subject(_profile(profile),
                                    data_dir / "firecracker" / f"{template}.json")
            assert evaluate_rules(subject, [SHADOW]) == [], (template, profile)
            (info,) = evaluate_rules(subject, [CLEARED])
            assert "0x1e" in info.message and info.severity == "info"


# --- AVX, AVX2 and AVX-512 without their state -------------------------------------------


def _has(table: CpuidSet, *names: str) -> bool:
    return all(table.feature(name) for name in names)


def _kernel_avx_user_faults(table: CpuidSet, xcr0: int, xsave: bool) -> bool:
    """Whether a Linux guest's XOR or RAID-6 code runs AVX instructions XCR0 does not enable.

    xor_avx.h: AVX && OSXSAVE (set by Linux with XSAVE) uses YMM. raid6_have_avx2(): AVX2 &&
    AVX uses YMM. raid6_have_avx512(): AVX2, AVX, AVX512F, BW, VL, DQ use opmask and ZMM.
    Linux enables YMM only with AVX set and the AVX-512 state only with AVX512F set.
    """
    ymm = xsave and bool(xcr0 & 0x4) and table.feature("AVX")
    zmm = ymm and xcr0 & 0xE0 == 0xE0 and table.feature("AVX512F")
    return bool(
        (_has(table, "AVX") and xsave and not ymm)
        or (_has(table, "AVX2", "AVX") and not ymm)
        or (_has(table, "AVX2", "AVX", "AVX512F", "AVX512BW", "AVX512VL", "AVX512DQ")
            and not zmm))


def _avx_mutations(table: CpuidSet) -> Iterator[tuple[str, list[dict[str, object]]]]:
    """Template edits that take state away from AVX, AVX2 or AVX-512, or clear them all."""
    if table.feature("AVX512F"):
        yield "AVX-512 state masked", [_modifier(0xD, 0, 1, eax=_clear_bits(5, 6, 7))]
        yield "AVX-512 masked with AVX512F and its extensions", [
            _modifier(0xD, 0, 1, eax=_clear_bits(5, 6, 7)),
            _modifier(0x7, 0, 1, ebx=_clear_bits(16, 17, 21, 26, 27, 28, 30, 31),
                      ecx=_clear_bits(1, 6, 11, 12, 14), edx=_clear_bits(2, 3, 8, 23))]
    if table.feature("AVX"):
        yield "YMM and AVX-512 state masked", [_modifier(0xD, 0, 1, eax=_clear_bits(2, 5, 6, 7))]
        yield "AVX, AVX2, AVX-512 and their state masked", [
            _modifier(0xD, 0, 1, eax=_clear_bits(2, 5, 6, 7)),
            _modifier(0x1, 0, 0, ecx=_clear_bits(28, 12, 29)),
            _modifier(0x7, 0, 1, ebx=_clear_bits(5, 16, 17, 21, 26, 27, 28, 30, 31),
                      ecx=_clear_bits(1, 6, 9, 10, 11, 12, 14), edx=_clear_bits(2, 3, 8, 23))]
    if table.feature("XSAVE"):
        yield "XSAVE cleared", [_modifier(0x1, 0, 0, ecx=_clear_bits(26, 27))]


@pytest.mark.parametrize("profile", ALL_PROFILES)
def test_avx_without_state_is_an_error_exactly_where_the_kernel_faults(
    profile: str, templates: _Templates
) -> None:
    """Every AVX/AVX2/AVX-512 flag left without its state where a kernel user would run it
    is an error; clearing the flags with their state is not."""
    table = _profile(profile)
    assert evaluate_rules(build_subject(table), [AVX_RULE]) == []
    seen = set()
    for label, modifiers in _avx_mutations(table):
        subject = build_subject(table, templates.write(modifiers))
        guest = subject.cpuid
        faults = _kernel_avx_user_faults(guest, guest.xcr0_supported, guest.feature("XSAVE"))
        findings = evaluate_rules(subject, [AVX_RULE])
        assert bool(findings) == faults, (profile, label)
        assert all(f.severity == "error" for f in findings)
        seen.add(faults)
    if table.feature("AVX2"):
        assert seen == {True, False}, profile


def test_avx_rule_pins_the_three_kernel_users(templates: _Templates) -> None:
    """On Sapphire Rapids: AVX-512 state gone, YMM gone and XSAVE gone are each an error."""
    table = _profile("fc-sapphire-rapids-6.1")
    for eax_bits, ecx_bits in (((5, 6, 7), ()), ((2, 5, 6, 7), ()), ((), (26, 27))):
        modifiers = []
        if eax_bits:
            modifiers.append(_modifier(0xD, 0, 1, eax=_clear_bits(*eax_bits)))
        if ecx_bits:
            modifiers.append(_modifier(0x1, 0, 0, ecx=_clear_bits(*ecx_bits)))
        (finding,) = evaluate_rules(build_subject(table, templates.write(modifiers)),
                                    [AVX_RULE])
        assert finding.rule == "XS0506" and finding.severity == "error"
        assert "#UD" in finding.consequence


# --- single-bit mutations of the guest profiles ------------------------------------------------

#: Feature bits whose loss breaks a Linux guest, and why (when the profile has what it needs).
#: FPU, SSE: fpu__init_system_xstate() finds no FP/SSE and disables XSAVE. XSAVE:
#: raid6_have_avx2() still runs AVX2 code (#UD). AVX with AVX-512 state: Linux drops YMM
#: and keeps AVX-512, an XCR0 XSETBV refuses. XFD with AMX state: Linux drops TILEDATA and
#: keeps TILECFG, an XCR0 XSETBV refuses.
_BREAKING_FEATURES: dict[str, Callable[[CpuidSet], set[str]]] = {
    "FPU": lambda t: {"linux-fp-sse-required"},
    "SSE": lambda t: {"linux-fp-sse-required"},
    "XSAVE": lambda t: {"linux-avx-state-missing"} if _has(t, "AVX", "AVX2") else set(),
    "AVX": lambda t: ({"linux-gated-xcr0-valid"}
                      if _has(t, "AVX512F") and t.xcr0_supported & 0xE0 else set()),
    "XFD": lambda t: {"amx-requires-xfd"} if t.xcr0_supported & 0x60000 else set(),
}

#: XCR0 bits whose loss breaks a guest: x87 and SSE (XSETBV refuses, Linux disables XSAVE),
#: YMM under AVX-512 (XSETBV refuses) and under AVX (the kernel's AVX users fault), half of
#: MPX, AVX-512 or AMX (XSETBV refuses), and AVX-512 under AVX512F (raid6_pq faults).
_BREAKING_XFEATURES: dict[int, Callable[[CpuidSet], set[str]]] = {
    0: lambda t: {"x87-required"},
    1: lambda t: {"avx-requires-sse", "linux-fp-sse-required"},
    2: lambda t: ({"avx512-triple"} if t.xcr0_supported & 0xE0 else set())
    | ({"linux-avx-state-missing"} if _has(t, "AVX") else set()),
    3: lambda t: {"mpx-pair"},
    4: lambda t: {"mpx-pair"},
    5: lambda t: {"avx512-triple", "linux-avx-state-missing"},
    6: lambda t: {"avx512-triple", "linux-avx-state-missing"},
    7: lambda t: {"avx512-triple", "linux-avx-state-missing"},
    17: lambda t: {"amx-tile-pair"},
    18: lambda t: {"amx-tile-pair"},
}


def _nothing(table: CpuidSet) -> set[str]:
    """Nothing breaks: the kernel source shows no failure for this change."""
    return set()


def _error_names(subject: Subject) -> set[str]:
    return {f.name for f in evaluate(subject).findings if f.severity == "error"}


@pytest.mark.parametrize("profile", GUEST_PROFILES)
def test_single_feature_bit_cleared_errs_only_where_linux_breaks(
    profile: str, templates: _Templates
) -> None:
    """Clear each set feature bit of leaves 1, 7 and 0xD.1 alone: errors only where the
    kernel source says the guest breaks, and exactly those."""
    table = _profile(profile)
    assert _error_names(build_subject(table)) == set()
    cleared = 0
    for name, where in FEATURES.items():
        if where.leaf not in (0x1, 0x7, 0xD) or not table.feature(name):
            continue
        if name in ("OSXSAVE", "OSPKE", "HYPERVISOR"):
            continue  # runtime bits KVM sets itself
        if name in ("FXSR", "SSE2", "LM"):
            continue  # an x86-64 kernel refuses to boot without them (required-features.h)
        flags = 0 if where.leaf == 0x1 else 1
        path = templates.write([_modifier(where.leaf, where.subleaf, flags,
                                          **{where.register: _clear_bits(where.bit)})])
        expected = _BREAKING_FEATURES.get(name, _nothing)(table)
        assert _error_names(build_subject(table, path)) == expected, (profile, name)
        cleared += 1
    assert cleared >= 10


@pytest.mark.parametrize("profile", GUEST_PROFILES)
def test_single_xfeature_bit_cleared_errs_only_where_linux_breaks(
    profile: str, templates: _Templates
) -> None:
    """Clear each enumerated XCR0 bit of 0xD.0 EAX alone: errors only where XSETBV refuses
    the result or a kernel AVX user faults (PKRU alone is harmless)."""
    table = _profile(profile)
    for bit in range(32):
        if not table.xcr0_supported >> bit & 1:
            continue
        path = templates.write([_modifier(0xD, 0, 1, eax=_clear_bits(bit))])
        expected = _BREAKING_XFEATURES.get(bit, _nothing)(table)
        assert _error_names(build_subject(table, path)) == expected, (profile, bit)


# --- the default XSAVE buffer Linux sizes ---------------------------------------------------


def _default_size(table: CpuidSet, template: Path | None = None) -> int:
    value = Facts(build_subject(table, template))["linux_default_size"]
    assert isinstance(value, int)
    return value


def test_default_buffer_is_compacted_with_xsavec_alone(templates: _Templates) -> None:
    """SPR 6.1 without XSAVES but with XSAVEC: compacted, as X86_FEATURE_XCOMPACTED says.

    By hand (SDM compacted format): 576 + YMM 256 + opmask 64 + ZMM_Hi256 512 + Hi16_ZMM 1024
    + PKRU 8 = 2440, TILECFG 64-byte aligned at 2496: 2560. Standard would end TILECFG at
    0xac0 + 0x40 = 2816.
    """
    table = _profile("fc-sapphire-rapids-6.1")
    path = templates.write([_modifier(0xD, 1, 1, eax=_clear_bits(3))])
    assert _default_size(table, path) == 2560
    path = templates.write([_modifier(0xD, 1, 1, eax=_clear_bits(1, 3))])
    assert _default_size(table, path) == 2816


def test_default_buffer_counts_cet_user_state_but_not_cet_supervisor() -> None:
    """Genoa 6.18 with XSAVES and SHSTK: 2440 bytes of user state + CET_U 16 = 2456; CET_S
    (24 more) is guest-only state the kernel never keeps for itself."""
    table = _profile("fc-genoa-6.18")
    assert table.feature("SHSTK") and table.xss_supported == 0x1800
    assert _default_size(table) == 2456


def test_flags_zero_in_a_guest_table_without_template_is_an_error() -> None:
    """A guest table whose own 0xD.1 entry lacks SIGNIFICANT_INDEX (a VMM that built it so)
    is an error too, and Firecracker's normalization is not assumed without a template."""
    table = _profile("fc-genoa-6.18")
    flags = dict(table.flags)
    flags[(0xD, 1)] = 0
    flags[(0xB, 0)] = 0
    shadowed = table.replace(flags=flags)
    found = evaluate_rules(Subject("vmm table", shadowed, role="guest"), [SHADOW])
    assert sorted((f.message.split()[2], f.severity) for f in found) == [
        ("0xb", "error"), ("0xd", "error")]
    assert evaluate_rules(Subject("cpu", shadowed, role="cpu"), [SHADOW]) == []


def test_supervisor_bit_in_xcr0_names_where_each_guest_faults(templates: _Templates) -> None:
    """CET_U enumerated in 0xD.0: XSETBV #GP for a guest that writes it, WRMSR IA32_XSS for
    Linux, which merges the 0xD.0 and 0xD.1 masks."""
    subject = build_subject(_profile("fc-sapphire-rapids-6.1"),
                            templates.write([_modifier(0xD, 0, 1, eax="0b1" + "x" * 11)]))
    (finding,) = [f for f in evaluate(subject).findings if f.name == "xcr0-supervisor-bits"]
    assert finding.severity == "error" and "cet_u" in finding.message
    assert "XSETBV" in finding.consequence and "WRMSR IA32_XSS" in finding.consequence
