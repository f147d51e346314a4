"""The catalogue on real data: no false errors, the AMX oops caught, every rule able to fire.

Inputs are the real dumps and Firecracker fingerprints and templates in ../shared/data
(the ``data_dir`` fixture); values quoted in comments were read from those files.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xstate_check.api import build_subject
from xstate_check.cpuid import CpuidSet
from xstate_check.engine import evaluate, load_catalogue
from xstate_check.engine.catalogue import Catalogue
from xstate_check.engine.examples import apply_edits
from xstate_check.engine.runner import evaluate_rules
from xstate_check.errors import Location
from xstate_check.hoststate import HostState
from xstate_check.report import Finding
from xstate_check.sources.load import load_cpuid
from xstate_check.subject import Subject

pytestmark = pytest.mark.shared

CATALOGUE = load_catalogue()
XCR0_FAMILY = CATALOGUE.family("xcr0")

#: Firecracker's templates and the hosts they were written for: the CPU models its static
#: templates accept, and the host kernels of the _5.10 and _6.1 custom templates.
TEMPLATE_HOSTS = {
    "T2": ("SKYLAKE", "CASCADELAKE", "ICELAKE"),
    "C3": ("SKYLAKE", "CASCADELAKE", "ICELAKE"),
    "T2S": ("SKYLAKE", "CASCADELAKE"),
    "T2CL": ("CASCADELAKE", "ICELAKE"),
    "T2A": ("MILAN",),
}
CUSTOM_TEMPLATE_HOSTS = {
    "SPR_TO_T2_5.10": ("INTEL_SAPPHIRE_RAPIDS_5.10",),
    "SPR_TO_T2_6.1": ("INTEL_SAPPHIRE_RAPIDS_6.1", "INTEL_SAPPHIRE_RAPIDS_6.18"),
    "GNR_TO_T2_5.10": ("INTEL_GRANITE_RAPIDS_5.10",),
    "GNR_TO_T2_6.1": ("INTEL_GRANITE_RAPIDS_6.1", "INTEL_GRANITE_RAPIDS_6.18"),
}


def _real_sources(data_dir: Path) -> Iterator[Path]:
    for path in sorted((data_dir / "cpuid-dumps").glob("*/*")):
        if path.suffix in (".txt", ".test") and "decoded" not in path.name:
            yield path
    yield from sorted((data_dir / "firecracker").glob("fingerprint_*.json"))


def _fingerprint(data_dir: Path, name: str) -> CpuidSet:
    return load_cpuid(data_dir / "firecracker" / f"fingerprint_{name}host.json")


def _errors(subject: Subject) -> list[Finding]:
    return [finding for finding in evaluate(subject).findings if finding.severity == "error"]


def test_no_errors_on_real_dumps_and_fingerprints(data_dir: Path) -> None:
    """No real CPU dump or Firecracker fingerprint gives an error finding."""
    sources = list(_real_sources(data_dir))
    assert len(sources) >= 50
    problems = {str(path.name): [f"{f.name}: {f.message}" for f in _errors(
        build_subject(load_cpuid(path)))] for path in sources}
    assert {name: found for name, found in problems.items() if found} == {}


def test_real_dump_quirks_are_not_warnings(data_dir: Path) -> None:
    """OS-dependent EBX, Alder Lake's large ECX, AMD layouts, MPX and XSS offsets pass."""
    quirky = [
        "instlatx64/GenuineIntel0090672_AlderLake_01_LC_BC_CPUID.txt",   # EAX 0x207, ECX 0xA88
        "instlatx64/GenuineIntel00C06F2_EmeraldRapids_03_CPUID.txt",     # AMX on, EBX 0xA80
        "instlatx64/AuthenticAMD0A10F11_K19_Genoa_02_CPUID.txt",         # EBX 0x980, ECX 0x988
        "instlatx64/AuthenticAMD0830F10_K17_Rome_CPUID.txt",             # PKRU 64 B at 0x340
        "instlatx64/GenuineIntel0050657_CascadeLakeSP_CPUID1.txt",      # MPX 0x2FF
        "libcpuid/intel-xeon-platinum-8280-cpu.test",                    # all-zero SL 09 row
        "libcpuid/amd-ryzen-7-8845hs-with-radeon-780m-graphics.test",    # no 0xD subleaves
        "local/host-amd-epyc-raw.txt",                                   # KVM guest, no PKU
    ]
    for name in quirky:
        findings = evaluate(build_subject(load_cpuid(data_dir / "cpuid-dumps" / name))).findings
        assert [f.name for f in findings if f.severity != "info"] == [], name


@pytest.mark.parametrize("template", sorted(TEMPLATE_HOSTS))
def test_static_templates_on_their_hosts_give_no_error(data_dir: Path, template: str) -> None:
    """T2, C3, T2S, T2CL and T2A on every fingerprint of their hosts give no error."""
    checked = 0
    for cpu in TEMPLATE_HOSTS[template]:
        for fingerprint in sorted((data_dir / "firecracker").glob(f"fingerprint_*_{cpu}_*")):
            subject = build_subject(load_cpuid(fingerprint),
                                    data_dir / "firecracker" / f"{template}.json")
            assert _errors(subject) == [], fingerprint.name
            checked += 1
    assert checked >= 3


@pytest.mark.parametrize("template", sorted(CUSTOM_TEMPLATE_HOSTS))
def test_custom_templates_on_their_hosts_give_no_error(data_dir: Path, template: str) -> None:
    """SPR_TO_T2 and GNR_TO_T2 on the kernels they were written for give no error."""
    for host in CUSTOM_TEMPLATE_HOSTS[template]:
        subject = build_subject(_fingerprint(data_dir, host),
                                data_dir / "firecracker" / f"{template}.json")
        assert _errors(subject) == [], host


def test_official_templates_leave_only_harmless_leftovers(data_dir: Path) -> None:
    """Stale ECX, stale subleaves and 0x1E flags after SPR_TO_T2_6.1 are info, not more."""
    subject = build_subject(_fingerprint(data_dir, "INTEL_SAPPHIRE_RAPIDS_6.1"),
                            data_dir / "firecracker" / "SPR_TO_T2_6.1.json")
    findings = evaluate(subject).findings
    assert {f.name for f in findings} == {
        "xsave-max-size-stale", "stale-component-subleaf", "indexed-leaf-flags-cleared"}
    assert all(f.severity == "info" for f in findings)


def test_half_enabled_amx_oops_is_caught(data_dir: Path) -> None:
    """SPR 6.1 with 0xD.0 EAX = 0x202e7 (the PR #5065 oops) gives amx-tile-pair, #GP at boot."""
    table = _fingerprint(data_dir, "INTEL_SAPPHIRE_RAPIDS_6.1").with_registers(0xD, 0, eax=0x202E7)
    errors = _errors(build_subject(table))
    assert [(f.rule, f.name) for f in errors] == [("XS0108", "amx-tile-pair")]
    assert "XSETBV raises #GP at guest boot" in errors[0].consequence
    assert "0x202e7" in errors[0].message and "tilecfg" in errors[0].message


def test_half_enabled_amx_points_at_the_template_line(data_dir: Path, tmp_path: Path) -> None:
    """A template that clears only TILEDATA is blamed at its 0xD.0 EAX modifier's line."""
    template = tmp_path / "half-amx.json"
    text = json.dumps({"cpuid_modifiers": [
        {"leaf": "0x7", "subleaf": "0x0", "flags": 1,
         "modifiers": [{"register": "ebx", "bitmap": "0bxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}]},
        {"leaf": "0xd", "subleaf": "0x0", "flags": 1,
         "modifiers": [{"register": "eax", "bitmap": "0bxxxxxxxxxxxxx0xxxxxxxxxxxxxxxxxx"}]},
    ]}, indent=2)
    template.write_text(text)
    subject = build_subject(_fingerprint(data_dir, "INTEL_SAPPHIRE_RAPIDS_6.1"), template)
    (finding,) = [f for f in evaluate(subject).findings if f.name == "amx-tile-pair"]
    assert finding.location is not None
    assert finding.location.path == str(template)
    line = text.splitlines()[finding.location.line - 1]
    assert '"0bxxxxxxxxxxxxx0xxxxxxxxxxxxxxxxxx"' in line


def test_template_leaf_missing_once_per_pair_at_the_first_line(data_dir: Path) -> None:
    """SPR_TO_T2_6.1 on a 5.10 host: one error naming every entry 5.10 lacks, at the first."""
    path = data_dir / "firecracker" / "SPR_TO_T2_6.1.json"
    subject = build_subject(_fingerprint(data_dir, "INTEL_SAPPHIRE_RAPIDS_5.10"), path)
    (finding,) = [f for f in _errors(subject) if f.name == "template-leaf-missing"]
    lines = path.read_text().splitlines()
    assert finding.location is not None and finding.location.path == str(path)
    line = lines[finding.location.line - 1] + lines[finding.location.line]
    assert line.replace(" ", "") == '"leaf":"0xd","subleaf":"0x11",'
    # 5.10 KVM has no 0xD.0x11/0xD.0x12 and no 0x1D.1 (Firecracker's SPR_TO_T2_5.10 exists
    # for that reason).
    for entry in ("0xd.0x11", "0xd.0x12", "0x1d.0x1"):
        assert entry in finding.message
    assert {f.name for f in _errors(subject)} == {"template-leaf-missing"}


def test_t2_on_sapphire_rapids_warns(data_dir: Path) -> None:
    """T2 (made for Skylake..Ice Lake) on SPR 6.1 keeps XFD without XSAVES: a warning."""
    subject = build_subject(_fingerprint(data_dir, "INTEL_SAPPHIRE_RAPIDS_6.1"),
                            data_dir / "firecracker" / "T2.json")
    findings = evaluate(subject).findings
    assert "xfd-requires-xsaves" in {f.name for f in findings if f.severity == "warning"}
    assert _errors(subject) == []


def test_report_is_byte_identical(data_dir: Path) -> None:
    """The same input gives byte-identical JSON, whatever order the rules run in."""
    from xstate_check.report import Report

    subject = build_subject(_fingerprint(data_dir, "INTEL_SAPPHIRE_RAPIDS_5.10"),
                            data_dir / "firecracker" / "SPR_TO_T2_6.1.json")
    reversed_catalogue = Catalogue(tuple(reversed(CATALOGUE.rules)))
    first = Report((evaluate(subject),)).to_json_text()
    second = Report((evaluate(subject, reversed_catalogue),)).to_json_text()
    assert first == second


# --- every rule can fire on real data -------------------------------------------------------

SPR61 = "INTEL_SAPPHIRE_RAPIDS_6.1"
SPR618 = "INTEL_SAPPHIRE_RAPIDS_6.18"
SPR510 = "INTEL_SAPPHIRE_RAPIDS_5.10"
SKX = "INTEL_SKYLAKE_6.1"
GENOA = "AMD_GENOA_6.18"
SPR_DUMP = "instlatx64/GenuineIntel00806F8_SapphireRapids_05_CPUID.txt"

#: A consistent host for the SPR 6.1 guest: masks as a 6.1 SPR host reports them after the
#: VMM requested the guest permission; CPUID from the w7-2475X dump, KVM's from the
#: fingerprint. Mutations change one field.
HOST_OK: dict[str, object] = {  # KVM's CPUID: the guest's own fingerprint unless changed
    "supported": 0x602E7, "permitted": 0x202E7, "guest_permitted": 0x602E7,
    "xcr0": 0x602E7, "kvm_guest_supported": 0x602E7,
}

#: rule name -> (table, mutation). Tables are fingerprints (names above) or dumps (paths);
#: a mutation gives CPUID edits of the table ("cpuid"), template edits ("template",
#: recorded with template lines), KVM flags set by a template ("flags"), a real template
#: file ("template_file"), or host fields ("host"; "kvm" is the fingerprint whose CPUID
#: KVM_GET_SUPPORTED_CPUID returns, "kvm_cpuid" edits of it).
MUTATIONS: dict[str, tuple[str, dict[str, object]]] = {
    "x87-required": (SPR61, {"cpuid": {"0xd.0.eax": "-bit0"}}),
    "avx-requires-sse": (SPR61, {"cpuid": {"0xd.0.eax": "-bit1"}}),
    "mpx-pair": (SKX, {"cpuid": {"0xd.0.eax": "-bit3"}}),
    "avx512-triple": (SPR61, {"cpuid": {"0xd.0.eax": "-bit6"}}),
    "xcr0-supervisor-bits": (SPR61, {"cpuid": {"0xd.0.eax": "+bit8"}}),
    "xcr0-unknown-bits": (SPR61, {"cpuid": {"0xd.0.eax": "+bit25"}}),
    "apx-excludes-mpx": (SKX, {"cpuid": {"0xd.0.eax": "+bit19"}}),
    "amx-tile-pair": (SPR61, {"cpuid": {"0xd.0.eax": "0x202e7"}}),
    "xsave-size-consistent": (SPR_DUMP, {"cpuid": {"0xd.0.ebx": "0x2000"}}),
    "xsave-max-size-covers": (SPR61, {"cpuid": {"0xd.0.ecx": "0xa88"}}),
    "xsave-max-size-stale": (SPR61, {"template": {"0xd.0.eax": "-bit17 -bit18",
                                                  "0x7.0.edx": "-bit22 -bit24 -bit25"}}),
    "compacted-size-nonzero": (SPR_DUMP, {"cpuid": {"0xd.1.ebx": "0x0"}}),
    "compacted-size-consistent": (SPR_DUMP, {"cpuid": {"0xd.1.ebx": "0x100"}}),
    "layout-no-overlap": (SPR61, {"cpuid": {"0xd.9.ebx": "0x700"}}),
    "layout-offsets-ordered": (SPR61, {"cpuid": {"0xd.6.ebx": "0x880", "0xd.7.ebx": "0x480"}}),
    "component-subleaf-missing": (SPR61, {"template": {"0xd.18.eax": "0x0"}}),
    "component-kind-matches": (SPR61, {"cpuid": {"0xd.17.ecx": "0x3"}}),
    "xss-user-bits": (SPR618, {"cpuid": {"0xd.1.ecx": "+bit2"}}),
    "component-reserved-flags": (SPR61, {"cpuid": {"0xd.18.ecx": "0x16"}}),
    "xfd-flag-without-xfd": (SPR61, {"cpuid": {"0xd.1.eax": "-bit4"}}),
    "stale-component-subleaf": (SKX, {"template": {"0xd.0.eax": "-bit9",
                                                   "0x7.0.ecx": "-bit3"}}),
    "component-size-architectural": (SPR61, {"cpuid": {"0xd.2.eax": "0x80"}}),
    "feature-xstate-match": (SPR61, {"cpuid": {"0xd.0.eax": "0x2e7"}}),
    "xstate-without-feature": (SPR61, {"cpuid": {"0x7.0.ecx": "-bit3"}}),
    "xss-requires-xsaves": (SPR618, {"template": {"0xd.1.eax": "-bit3"}}),
    "xsave-extensions-require-xsave": (SPR61, {"cpuid": {"0x1.0.ecx": "-bit26"}}),
    "xstate-features-require-xsave": (SPR61, {"cpuid": {"0x1.0.ecx": "-bit26"}}),
    "avx-dependents-require-avx": (SPR61, {"cpuid": {"0x1.0.ecx": "-bit28"}}),
    "avx512-subfeatures-require-f": (SPR61, {"cpuid": {"0x7.0.ebx": "-bit16"}}),
    "xfd-requires-xsaves": (SPR61, {"template": {"0xd.1.eax": "-bit1 -bit2 -bit3"}}),
    "amx-tile-info-consistent": (SPR61, {"cpuid": {"0x1d.1.ebx": "0x40040"}}),
    "amx-subfeatures-require-tile": (SPR61, {"cpuid": {"0x7.0.edx": "-bit24"}}),
    "shstk-requires-xsaves": (SPR618, {"cpuid": {"0xd.1.eax": "-bit3"}}),
    "enqcmd-requires-xsaves": (SPR_DUMP, {"cpuid": {"0xd.1.eax": "-bit3"}}),
    "template-leaf-missing": (SPR510, {"template_file": "SPR_TO_T2_6.1.json"}),
    # A 5.10 host: no AMX in KVM, and no arch_prctl or device attribute to ask (EINVAL).
    "guest-within-kvm-supported": (SPR61, {"host": {"kvm": SPR510, "kvm_guest_supported": None,
                                                    "supported": None, "permitted": None,
                                                    "guest_permitted": None}}),
    "dynamic-needs-guest-permission": (SPR61, {"host": {"guest_permitted": 0x202E7}}),
    "kvm-half-enabled-amx": (SPR61, {"host": {"kvm_cpuid": {"0xd.0.eax": "0x202e7"}}}),
    "kvm-mpx-on-amd": (GENOA, {"cpuid": {"0xd.0.eax": "+bit3 +bit4"}}),
    "kvm-apx-unsupported": (SPR61, {"cpuid": {"0xd.0.eax": "+bit19"}}),
    "guest-layout-matches-host": (SPR61, {"template": {"0xd.9.ebx": "0xa90"}}),
    "xss-within-kvm-supported": (SPR618, {"host": {"kvm": SPR61}}),
    "template-sets-unsupported-bits": (SPR510, {"template": {"0xd.0.eax": "+bit17 +bit18"}}),
    "indexed-subleaf-flags": (SPR61, {"flags": {(0xD, 1): 0}}),
    "indexed-leaf-flags-cleared": (SPR61, {"template_file": "SPR_TO_T2_6.1.json"}),
    "amx-requires-xfd": (SPR61, {"cpuid": {"0xd.1.eax": "-bit4"}}),
    "linux-gated-xcr0-valid": (SPR61, {"cpuid": {"0x1.0.ecx": "-bit28"}}),
    "linux-fp-sse-required": (SPR61, {"cpuid": {"0x1.0.edx": "-bit25"}}),
    "linux-xsave-needs-leaf-0xd": (SPR61, {"cpuid": {"0x0.0.eax": "0xb"}}),
    "linux-init-fpstate-fits": (SPR61, {"cpuid": {"0xd.9.eax": "0x1000"}}),
    "linux-avx-state-missing": (SPR61, {"template": {"0xd.0.eax": "-bit5 -bit6 -bit7"}}),
    "host-supported-within-cpuid": (SPR61, {"host": {"supported": 0x2602E7,
                                                     "permitted": 0x2E7,
                                                     "guest_permitted": 0x2E7,
                                                     "kvm_guest_supported": 0x2E7}}),
    "host-permitted-within-supported": (SPR61, {"host": {"permitted": 0x6602E7}}),
    "host-guest-permitted-within-supported": (SPR61, {"host": {"guest_permitted": 0x6602E7}}),
    "host-kvm-within-supported": (SPR61, {"host": {"supported": 0x2E7,
                                                   "permitted": 0x2E7,
                                                   "guest_permitted": 0x2E7}}),
    "host-xcr0-within-cpuid": (SPR61, {"host": {"xcr0": 0x6602E7}}),
    "host-dynamic-not-permitted": (SPR61, {"host": {"guest_permitted": 0x202E7}}),
}


def _table(data_dir: Path, name: str) -> CpuidSet:
    if "/" in name:
        return load_cpuid(data_dir / "cpuid-dumps" / name)
    return _fingerprint(data_dir, name)


def _host(data_dir: Path, table_name: str, changes: dict[str, object]) -> HostState:
    fields = dict(HOST_OK)
    kvm = _table(data_dir, str(changes.get("kvm", table_name)))
    if "kvm_cpuid" in changes:
        edits = changes["kvm_cpuid"]
        assert isinstance(edits, dict)
        kvm = apply_edits(kvm, tuple(edits.items()))
    fields.update({k: v for k, v in changes.items() if k not in ("kvm", "kvm_cpuid")})
    return HostState(kernel_release="6.1.172", host_cpuid=_table(data_dir, SPR_DUMP),
                     kvm_available=True, kvm_cpuid=kvm, **fields)  # type: ignore[arg-type]


def _mutated(data_dir: Path, table_name: str, mutation: dict[str, object] | None) -> Subject:
    table = _table(data_dir, table_name)
    mutation = mutation or {}
    host_changes = mutation.get("host")
    host = None
    if isinstance(host_changes, dict):
        host = _host(data_dir, table_name, host_changes)
    if "template_file" in mutation:
        subject = build_subject(table, data_dir / "firecracker" / str(mutation["template_file"]))
        return Subject(subject.name, subject.cpuid, role="guest", host=host,
                       template=subject.template, base=subject.base,
                       missing_entries=subject.missing_entries)
    cpuid_edits = mutation.get("cpuid", {})
    template_edits = mutation.get("template", {})
    flags = mutation.get("flags", {})
    assert isinstance(cpuid_edits, dict) and isinstance(template_edits, dict)
    assert isinstance(flags, dict)
    table = apply_edits(table, tuple(cpuid_edits.items()))
    if not template_edits and not flags:
        return build_subject(table, host=host)
    where = Location("mutation.json", 1)
    guest = apply_edits(table, tuple(template_edits.items()), where)
    if flags:
        new_flags = dict(guest.flags)
        provenance = dict(guest.provenance)
        for (leaf, subleaf), value in flags.items():
            new_flags[(leaf, subleaf)] = value
            provenance[(leaf, subleaf, "eax", 0)] = Location("mutation.json", 9)
        guest = guest.replace(flags=new_flags, provenance=provenance)
    return Subject("mutated", guest, role="guest", host=host, template="mutation.json",
                   base=table, missing_entries=())


def test_every_rule_has_a_mutation() -> None:
    """Each rule of the catalogue has a mutation of real data in MUTATIONS."""
    # The restore family's mutations (two tables each) are in test_restore.py.
    assert set(MUTATIONS) == {rule.name for rule in CATALOGUE if rule.family != "restore"}


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_rule_fires_on_mutated_real_data(data_dir: Path, name: str) -> None:
    """The rule does not fire on the real table (and consistent host) and fires once mutated."""
    table_name, mutation = MUTATIONS[name]
    rule = CATALOGUE.get(name)
    clean: dict[str, object] = {"host": {}} if "host" in mutation else {}
    before = _mutated(data_dir, table_name, clean)
    after = _mutated(data_dir, table_name, mutation)
    if "template_file" not in mutation:
        assert evaluate_rules(before, [rule]) == [], f"{name} fires on unmutated {table_name}"
    findings = evaluate_rules(after, [rule])
    assert findings, f"{name} does not fire on {table_name} with {mutation}"
    assert all(f.rule == rule.id for f in findings)


def test_mutation_is_blamed_on_its_template_line(data_dir: Path) -> None:
    """A mutation made as a template points its finding at the template's line."""
    subject = _mutated(data_dir, SPR61, {"template": {"0x7.0.edx": "-bit0",
                                                      "0xd.18.eax": "0x0"}})
    (finding,) = evaluate_rules(subject, [CATALOGUE.get("component-subleaf-missing")])
    assert finding.location == Location("mutation.json", 2)


# --- the xcr0 family against XSETBV's rules ---------------------------------------------------

SUPERVISOR = (1 << 8) | (0x1F << 10) | (1 << 15) | (1 << 16)


def _xsetbv_faults(mask: int) -> bool:
    """Whether XSETBV(mask) raises #GP under KVM, from SDM §13.3 and __kvm_set_xcr()."""
    bit = [bool(mask >> n & 1) for n in range(64)]
    return (
        not bit[0]                                             # x87 is mandatory
        or (bit[2] and not bit[1])                             # YMM needs SSE
        or bit[3] != bit[4]                                    # BNDREGS with BNDCSR
        or (any(bit[5:8]) and not (all(bit[5:8]) and bit[2]))  # AVX-512 triple on YMM
        or bit[17] != bit[18]                                  # TILECFG with TILEDATA
        or bool(mask & SUPERVISOR) or bit[63]                  # never in XCR0
        or any(bit[20:63])                                     # no such component
        or (bit[19] and (bit[3] or bit[4]))                    # APX over MPX
    )


_USEFUL_BITS = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 17, 18, 19, 23, 63]


@st.composite
def _masks(draw: st.DrawFn) -> int:
    chosen = draw(st.lists(st.sampled_from(_USEFUL_BITS), unique=True))
    return sum(1 << bit for bit in chosen)


@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mask=_masks())
def test_xcr0_family_errs_exactly_when_xsetbv_faults(data_dir: Path, mask: int) -> None:
    """On a guest whose 0xD.0 EDX:EAX is M, the xcr0 family errs iff XSETBV(M) #GPs."""
    table = _fingerprint(data_dir, SPR61).with_registers(
        0xD, 0, eax=mask & 0xFFFF_FFFF, edx=mask >> 32)
    errors = [f for f in evaluate_rules(build_subject(table), XCR0_FAMILY)
              if f.severity == "error"]
    assert bool(errors) == _xsetbv_faults(mask), [f.name for f in errors]


# --- the plan's shortcuts change nothing ------------------------------------------------------


def _naive(subject: Subject, rules: Catalogue) -> list[tuple[str, str]]:
    """Evaluate every rule's full test in turn, without the plan's quick conditions."""
    return sorted((f.rule, f.name) for f in evaluate_rules(subject, rules, planned=False))


def _found(subject: Subject) -> list[tuple[str, str]]:
    return sorted((f.rule, f.name) for f in evaluate_rules(subject, CATALOGUE))


def test_plan_agrees_with_naive_evaluation_on_mutations(data_dir: Path) -> None:
    """On every mutated table, plan evaluation finds exactly what rule-by-rule evaluation does."""
    for name, (table_name, mutation) in MUTATIONS.items():
        subject = _mutated(data_dir, table_name, mutation)
        assert _found(subject) == _naive(subject, CATALOGUE), name


_EDIT_KEYS = ["0xd.0.eax", "0xd.1.eax", "0xd.1.ecx", "0x7.0.ebx", "0x7.0.ecx", "0x7.0.edx",
              "0x1.0.ecx", "0xd.0.ecx", "0xd.9.ebx", "0xd.18.ecx"]


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(st.tuples(st.sampled_from(_EDIT_KEYS), st.integers(0, 31),
                                st.booleans()), max_size=6),
       role=st.sampled_from(["guest", "cpu"]))
def test_plan_agrees_with_naive_evaluation_on_random_edits(
    data_dir: Path, edits: list[tuple[str, int, bool]], role: str
) -> None:
    """Random bit flips of a real table: plan and rule-by-rule evaluation find the same."""
    pairs = tuple((key, f"{'+' if on else '-'}bit{bit}") for key, bit, on in edits)
    table = apply_edits(_fingerprint(data_dir, SPR618), pairs)
    subject = Subject("random", table, role="guest" if role == "guest" else "cpu")
    assert _found(subject) == _naive(subject, CATALOGUE)
