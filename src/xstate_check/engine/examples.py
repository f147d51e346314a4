"""Rule examples: small, readable changes to a few built-in CPUID tables.

A rule's ``[[rule.pass]]`` and ``[[rule.fail]]`` tables say which built-in table to start
from (``base``), what to change in it (``cpuid``), or what a template changes (``template``,
so that the table before it becomes the subject's base and each changed bit remembers a
template line), which entries a template wanted but the table lacked (``missing``), the
``role``, and the host facts (``host``). One generic test runs every example.

CPUID changes are ``"LEAF.SUBLEAF.REGISTER" = EDIT``: the new value (``"0x202e7"``), or bit
edits such as ``"-bit18"``, ``"+bit24 +bit25"``; ``"LEAF.SUBLEAF" = "absent"`` drops an entry.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping

import attrs

from xstate_check.cpuid import CpuidSet, Registers
from xstate_check.errors import Location, clip_quote
from xstate_check.hoststate import HostState
from xstate_check.subject import Destination, MissingEntry, Role, Subject

__all__ = [
    "BASES",
    "DEST_KEYS",
    "EXAMPLE_TEMPLATE",
    "HOST_KEYS",
    "DestExample",
    "Example",
    "ExampleError",
    "apply_edits",
    "base_table",
    "build_subject",
    "check_host_value",
    "describe",
    "parse_change",
    "parse_cpuid_number",
    "parse_edit",
    "parse_key",
]

#: The path findings of a template example point at.
EXAMPLE_TEMPLATE = "example-template.json"

# Rows (leaf, subleaf, eax, ebx, ecx, edx) copied from real data in ../shared/data.
# spr-guest: firecracker/fingerprint_INTEL_SAPPHIRE_RAPIDS_6.1host.json (a KVM guest table:
# 0xD.0/0xD.1 EBX are the reset values 0x240).
_SPR_GUEST = (
    (0x0, 0x0, 0x1F, 0x756E6547, 0x6C65746E, 0x49656E69),
    (0x1, 0x0, 0x806F8, 0x10800, 0xF7FA3203, 0xF8BFBFF),
    (0x7, 0x0, 0x2, 0xF1BF27EB, 0x1B415F4E, 0xAFC14410),
    (0x7, 0x1, 0x30, 0x0, 0x0, 0x0),
    (0x7, 0x2, 0x0, 0x0, 0x0, 0x17),
    (0xD, 0x0, 0x602E7, 0x240, 0x2B00, 0x0),
    (0xD, 0x1, 0x1F, 0x240, 0x0, 0x0),
    (0xD, 0x2, 0x100, 0x240, 0x0, 0x0),
    (0xD, 0x5, 0x40, 0x440, 0x0, 0x0),
    (0xD, 0x6, 0x200, 0x480, 0x0, 0x0),
    (0xD, 0x7, 0x400, 0x680, 0x0, 0x0),
    (0xD, 0x9, 0x8, 0xA80, 0x0, 0x0),
    (0xD, 0x11, 0x40, 0xAC0, 0x2, 0x0),
    (0xD, 0x12, 0x2000, 0xB00, 0x6, 0x0),
    (0x1D, 0x0, 0x1, 0x0, 0x0, 0x0),
    (0x1D, 0x1, 0x4002000, 0x80040, 0x10, 0x0),
    (0x1E, 0x0, 0x0, 0x4010, 0x0, 0x0),
    (0x80000000, 0x0, 0x80000008, 0x0, 0x0, 0x0),
    (0x80000001, 0x0, 0x0, 0x0, 0x121, 0x2C100800),
)
# spr-cpu: cpuid-dumps/instlatx64/GenuineIntel00806F8_SapphireRapids_05_CPUID.txt (Xeon
# w7-2475X as Linux saw it: XCR0 0x602e7 enabled, so EBX = ECX = 0x2b00).
_SPR_CPU = (
    (0x0, 0x0, 0x20, 0x756E6547, 0x6C65746E, 0x49656E69),
    (0x1, 0x0, 0x806F8, 0x800800, 0x7FFEFBFF, 0xBFEBFBFF),
    (0x7, 0x0, 0x2, 0xF3BFBFFB, 0xBB417FEE, 0xFFDD4430),
    (0x7, 0x1, 0x1C30, 0x0, 0x0, 0x0),
    (0x7, 0x2, 0x0, 0x0, 0x0, 0x17),
    (0xD, 0x0, 0x602E7, 0x2B00, 0x2B00, 0x0),
    (0xD, 0x1, 0x1F, 0x2A80, 0xDD00, 0x0),
    (0xD, 0x2, 0x100, 0x240, 0x0, 0x0),
    (0xD, 0x5, 0x40, 0x440, 0x0, 0x0),
    (0xD, 0x6, 0x200, 0x480, 0x0, 0x0),
    (0xD, 0x7, 0x400, 0x680, 0x0, 0x0),
    (0xD, 0x8, 0x80, 0x0, 0x1, 0x0),
    (0xD, 0x9, 0x8, 0xA80, 0x0, 0x0),
    (0xD, 0xA, 0x8, 0x0, 0x1, 0x0),
    (0xD, 0xB, 0x10, 0x0, 0x1, 0x0),
    (0xD, 0xC, 0x18, 0x0, 0x1, 0x0),
    (0xD, 0xE, 0x30, 0x0, 0x1, 0x0),
    (0xD, 0xF, 0x328, 0x0, 0x1, 0x0),
    (0xD, 0x11, 0x40, 0xAC0, 0x2, 0x0),
    (0xD, 0x12, 0x2000, 0xB00, 0x6, 0x0),
    (0x1D, 0x0, 0x1, 0x0, 0x0, 0x0),
    (0x1D, 0x1, 0x4002000, 0x80040, 0x10, 0x0),
    (0x1E, 0x0, 0x0, 0x4010, 0x0, 0x0),
    (0x80000000, 0x0, 0x80000008, 0x0, 0x0, 0x0),
    (0x80000001, 0x0, 0x0, 0x0, 0x121, 0x2C100000),
)
# skx-guest: firecracker/fingerprint_INTEL_SKYLAKE_6.1host.json (MPX enumerated: 0x2ff).
_SKX_GUEST = (
    (0x0, 0x0, 0x16, 0x756E6547, 0x6C65746E, 0x49656E69),
    (0x1, 0x0, 0x50654, 0x10800, 0xF7FA3203, 0xF8BFBFF),
    (0x7, 0x0, 0x0, 0xD19F6FFB, 0xC, 0xAC000400),
    (0xD, 0x0, 0x2FF, 0x240, 0xA88, 0x0),
    (0xD, 0x1, 0xF, 0x240, 0x0, 0x0),
    (0xD, 0x2, 0x100, 0x240, 0x0, 0x0),
    (0xD, 0x3, 0x40, 0x3C0, 0x0, 0x0),
    (0xD, 0x4, 0x40, 0x400, 0x0, 0x0),
    (0xD, 0x5, 0x40, 0x440, 0x0, 0x0),
    (0xD, 0x6, 0x200, 0x480, 0x0, 0x0),
    (0xD, 0x7, 0x400, 0x680, 0x0, 0x0),
    (0xD, 0x9, 0x8, 0xA80, 0x0, 0x0),
    (0x80000000, 0x0, 0x80000008, 0x0, 0x0, 0x0),
    (0x80000001, 0x0, 0x0, 0x0, 0x121, 0x2C100800),
)
# genoa-guest: firecracker/fingerprint_AMD_GENOA_6.18host.json (AMD layout, CET in XSS).
_GENOA_GUEST = (
    (0x0, 0x0, 0x10, 0x68747541, 0x444D4163, 0x69746E65),
    (0x1, 0x0, 0xA10F11, 0x10800, 0xF7FA3203, 0x78BFBFF),
    (0x7, 0x0, 0x1, 0xF1BF07AB, 0x415FCE, 0x9C000010),
    (0x7, 0x1, 0x20, 0x0, 0x0, 0x0),
    (0xD, 0x0, 0x2E7, 0x240, 0x988, 0x0),
    (0xD, 0x1, 0xF, 0x240, 0x1800, 0x0),
    (0xD, 0x2, 0x100, 0x240, 0x0, 0x0),
    (0xD, 0x5, 0x40, 0x340, 0x0, 0x0),
    (0xD, 0x6, 0x200, 0x380, 0x0, 0x0),
    (0xD, 0x7, 0x400, 0x580, 0x0, 0x0),
    (0xD, 0x9, 0x8, 0x980, 0x0, 0x0),
    (0xD, 0xB, 0x10, 0x0, 0x1, 0x0),
    (0xD, 0xC, 0x18, 0x0, 0x1, 0x0),
    (0x80000000, 0x0, 0x80000022, 0x68747541, 0x444D4163, 0x69746E65),
    (0x80000001, 0x0, 0xA10F11, 0x40000000, 0xC003F3, 0x2FD3FBFF),
)

#: name -> (rows, role, description)
BASES: dict[str, tuple[tuple[tuple[int, int, int, int, int, int], ...], Role, str]] = {
    "spr-guest": (_SPR_GUEST, "guest", "the Sapphire Rapids guest table of a 6.1 host "
                  "(Firecracker fingerprint)"),
    "spr-cpu": (_SPR_CPU, "cpu", "a Sapphire Rapids CPU as Linux saw it (Xeon w7-2475X)"),
    "skx-guest": (_SKX_GUEST, "guest", "the Skylake guest table of a 6.1 host (Firecracker "
                  "fingerprint)"),
    "genoa-guest": (_GENOA_GUEST, "guest", "the AMD Genoa guest table of a 6.18 host "
                    "(Firecracker fingerprint)"),
}

#: The host facts an example can give; masks are hex strings, ``kernel`` a release string,
#: ``permission_requested`` "true" or "false".
HOST_KEYS = (
    "kernel", "supported", "permitted", "guest_permitted", "xcr0", "kvm_guest_supported",
    "kvm_xcr0", "kvm_xcr0_permitted", "kvm_xss", "cpuid_xcr0", "permission_requested",
)

_KEY = re.compile(r"(0x[0-9a-fA-F]{1,8}|\d{1,10})\.(0x[0-9a-fA-F]{1,8}|\d{1,10})"
                  r"(?:\.(eax|ebx|ecx|edx))?")
_EDIT = re.compile(r"([+-])bit(\d{1,2})")


_HOST_MASK = re.compile(r"0x[0-9a-fA-F]{1,16}|0|[1-9][0-9]{0,19}")


def check_host_value(key: str, value: str) -> None:
    """Raise ExampleError unless ``value`` suits the host fact ``key``."""
    if key == "kernel":
        if not re.fullmatch(r"\d{1,3}\.\d{1,3}[\w.+-]{0,60}", value):
            raise ExampleError(f"kernel = a release such as \"6.1.0\", not {clip_quote(value)}")
    elif key == "permission_requested":
        if value not in ("true", "false"):
            raise ExampleError("permission_requested = \"true\" or \"false\"")
    elif not _HOST_MASK.fullmatch(value) or int(value, 0) >> 64:
        # XCR0, XSS and the permission masks are 64-bit.
        raise ExampleError(f"{key} = a 64-bit mask such as \"0x602e7\", not {clip_quote(value)}")


#: The keys of an example's ``dest`` table: where the guest's snapshot is restored.
#: ``base`` (default: the example's own base) and ``cpuid`` edits make the destination's
#: KVM table; ``host`` adds host facts there; ``peer`` edits that table into the guest view
#: of a guest booted at the destination (a migration group's other member).
DEST_KEYS = ("base", "cpuid", "host", "peer")


class ExampleError(ValueError):
    """Raised when an example's key or edit cannot be read; the message says what was expected."""


@attrs.frozen
class Example:
    """One pass or fail example of a rule, as written in its TOML file."""

    base: str = "spr-guest"
    cpuid: tuple[tuple[str, str], ...] = ()
    template: tuple[tuple[str, str], ...] = ()
    flags: tuple[tuple[str, str], ...] = ()
    missing: tuple[str, ...] = ()
    host: tuple[tuple[str, str], ...] = ()
    role: Role | None = None
    note: str = ""
    location: Location | None = None
    dest: DestExample | None = None


@attrs.frozen
class DestExample:
    """An example's destination: a built-in table, edits, host facts, a peer's guest view."""

    base: str | None = None
    cpuid: tuple[tuple[str, str], ...] = ()
    host: tuple[tuple[str, str], ...] = ()
    peer: tuple[tuple[str, str], ...] | None = None


def parse_cpuid_number(text: str) -> int | None:
    """Return a leaf or subleaf written ``0x1d`` or ``29`` (leading zeros allowed), or None.

    None when the value does not fit in 32 bits: leaves and subleaves are 32-bit.
    """
    value = int(text, 16) if text.startswith("0x") else int(text, 10)
    return value if value <= 0xFFFF_FFFF else None


def parse_key(key: str) -> tuple[int, int, str | None]:
    """Return (leaf, subleaf, register or None) of ``"0xd.0.eax"`` / ``"0x1d.1"``."""
    match = _KEY.fullmatch(key.strip())
    if match is None:
        raise ExampleError(
            f"a CPUID key such as \"0xd.0.eax\" or \"0x1d.1\", not {clip_quote(key)}")
    leaf, subleaf = parse_cpuid_number(match.group(1)), parse_cpuid_number(match.group(2))
    if leaf is None or subleaf is None:
        raise ExampleError(f"a leaf and subleaf of at most 0xffffffff, not {clip_quote(key)}")
    return leaf, subleaf, match.group(3)


def parse_edit(edit: str) -> tuple[int | None, int, int]:
    """Return (new value or None, bits to set, bits to clear) of one register edit."""
    text = edit.strip()
    if re.fullmatch(r"0x[0-9a-fA-F_]{1,16}|0b[01_]{1,64}|\d{1,10}", text):
        try:
            value = int(text.replace("_", ""), 0)
        except ValueError:
            raise ExampleError(
                f"a register value such as \"0x202e7\", not {clip_quote(edit)}") from None
        if value >> 32:
            raise ExampleError(f"a 32-bit register value, not {clip_quote(edit)}")
        return value, 0, 0
    set_bits = clear_bits = 0
    parts = text.split()
    if not parts:
        raise ExampleError("a register value (\"0x202e7\") or bit edits (\"-bit18 +bit24\")")
    for part in parts:
        match = _EDIT.fullmatch(part)
        if match is None or int(match.group(2)) > 31:
            raise ExampleError(f"a register value (\"0x202e7\") or bit edits such as "
                               f"\"-bit18 +bit24\", not {clip_quote(part)}")
        bit = 1 << int(match.group(2))
        if match.group(1) == "+":
            set_bits |= bit
        else:
            clear_bits |= bit
    return None, set_bits, clear_bits


def parse_change(key: str, edit: str) -> tuple[int, int, str | None, int | None, int, int]:
    """Return (leaf, subleaf, register or None, new value or None, bits to set, bits to
    clear) of one CPUID change; a whole entry (no register) takes ``"absent"`` only.

    The rule loader validates examples with it, and ``apply_edits`` applies what it returns.
    """
    leaf, subleaf, register = parse_key(key)
    if register is None:
        if edit.strip() != "absent":
            raise ExampleError(f"\"absent\" for the whole entry {clip_quote(key)}, or a "
                               "register key")
        return leaf, subleaf, None, None, 0, 0
    return (leaf, subleaf, register, *parse_edit(edit))


def apply_edits(
    cpuid: CpuidSet, edits: tuple[tuple[str, str], ...], location: Location | None = None
) -> CpuidSet:
    """Return ``cpuid`` changed by ``edits``; with ``location``, record each changed bit's line."""
    entries = dict(cpuid.entries)
    provenance = dict(cpuid.provenance)
    for index, (key, edit) in enumerate(edits):
        leaf, subleaf, register, value, set_bits, clear_bits = parse_change(key, edit)
        if register is None:
            entries.pop((leaf, subleaf), None)
            continue
        regs = entries.get((leaf, subleaf), Registers())
        old = getattr(regs, register)
        new = value if value is not None else (old | set_bits) & ~clear_bits
        entries[(leaf, subleaf)] = regs._replace(**{register: new})
        if location is not None:
            line = attrs.evolve(location, line=location.line + index)
            touched = (0xFFFF_FFFF if value is not None else set_bits | clear_bits)
            for bit in range(32):
                if touched >> bit & 1:
                    provenance[(leaf, subleaf, register, bit)] = line
    return attrs.evolve(cpuid, entries=entries, provenance=provenance)


@functools.cache
def base_table(name: str) -> CpuidSet:
    """Return the built-in table ``name`` (a key of ``BASES``)."""
    rows, role, _ = BASES[name]
    table = CpuidSet.from_rows(rows, f"example:{name}", role=role, source_kind="example")
    # Record KVM's flags as a fingerprint does: SIGNIFICANT_INDEX on indexed leaves.
    return table.replace(flags={key: table.flag(*key) for key in table.entries})


def _mask(text: str) -> int:
    return int(text, 0)


def _host(base: CpuidSet, host: Mapping[str, str]) -> HostState:
    def table(xcr0: str | None, xss: str | None) -> CpuidSet:
        result = base
        if xcr0 is not None:
            result = result.with_registers(0xD, 0, eax=_mask(xcr0) & 0xFFFF_FFFF,
                                           edx=_mask(xcr0) >> 32)
        if xss is not None:
            result = result.with_registers(0xD, 1, ecx=_mask(xss) & 0xFFFF_FFFF,
                                           edx=_mask(xss) >> 32)
        return result.replace(source="kvm", source_kind="kvm")

    def mask(key: str) -> int | None:
        return _mask(host[key]) if key in host else None

    kvm_cpuid = table(host["kvm_xcr0"], host.get("kvm_xss")) if "kvm_xcr0" in host else None
    permitted_cpuid = (table(host["kvm_xcr0_permitted"], host.get("kvm_xss"))
                       if "kvm_xcr0_permitted" in host else None)
    host_cpuid = table(host["cpuid_xcr0"], None) if "cpuid_xcr0" in host else None
    return HostState(
        kernel_release=host.get("kernel", "6.1.0"),
        host_cpuid=host_cpuid,
        xcr0=mask("xcr0"),
        supported=mask("supported"),
        permitted=mask("permitted"),
        guest_permitted=mask("guest_permitted"),
        kvm_available=kvm_cpuid is not None or permitted_cpuid is not None,
        kvm_guest_supported=mask("kvm_guest_supported"),
        kvm_cpuid=kvm_cpuid,
        kvm_cpuid_permitted=permitted_cpuid,
        permission_requested=host.get("permission_requested", "false") == "true",
    )


def _destination(example: Example) -> Destination | None:
    spec = example.dest
    if spec is None:
        return None
    base = spec.base or example.base
    table = apply_edits(base_table(base), spec.cpuid).replace(source=f"example:{base}-dest")
    host = _host(table, dict(spec.host)) if spec.host else None
    peer = apply_edits(table, spec.peer) if spec.peer is not None else None
    return Destination(f"the destination ({base})", table, host=host, peer=peer)


def build_subject(example: Example, name: str = "example") -> Subject:
    """Return the subject an example describes."""
    subject = _build_subject(example, name)
    destination = _destination(example)
    return attrs.evolve(subject, destination=destination) if destination else subject


def _build_subject(example: Example, name: str) -> Subject:
    default_role = BASES[example.base][1]
    table = apply_edits(base_table(example.base), example.cpuid)
    role: Role = example.role or default_role
    host = _host(table, dict(example.host)) if example.host else None
    if not example.template and not example.missing and not example.flags:
        return Subject.of(name, table, role=role, host=host)
    where = Location(EXAMPLE_TEMPLATE, 1)
    guest = apply_edits(table, example.template, where)
    if example.flags:
        flags = dict(guest.flags)
        provenance = dict(guest.provenance)
        for index, (key, value) in enumerate(example.flags):
            leaf, subleaf, _ = parse_key(key)
            flags[(leaf, subleaf)] = int(value)
            line = Location(EXAMPLE_TEMPLATE, 50 + index)
            for bit in range(32):
                provenance.setdefault((leaf, subleaf, "eax", bit), line)
        guest = guest.replace(flags=flags, provenance=provenance)
    missing = []
    for index, key in enumerate(example.missing):
        leaf, subleaf, _ = parse_key(key)
        missing.append(MissingEntry(leaf, subleaf, Location(EXAMPLE_TEMPLATE, 100 + index)))
    return Subject.of(name, table, host=host, template=EXAMPLE_TEMPLATE, guest=guest,
                      missing=tuple(missing))


def _entry_name(leaf: int, subleaf: int) -> str:
    return f"0x{leaf:X}.{subleaf if subleaf < 10 else hex(subleaf)}"


def _edits_text(edits: tuple[tuple[str, str], ...]) -> str:
    parts = []
    for key, edit in edits:
        leaf, subleaf, register = parse_key(key)
        where = _entry_name(leaf, subleaf)
        if register is None:
            parts.append(f"{where} {edit.strip()}")
        elif edit.strip().startswith(("+", "-")):
            parts.append(f"{where} {register.upper()} {edit.strip()}")
        else:
            parts.append(f"{where} {register.upper()} = {edit.strip()}")
    return ", ".join(parts)


def describe(example: Example) -> str:
    """Return a one-paragraph account of an example for a rule's explain page."""
    text = f"On {BASES[example.base][2]}"
    if example.role:
        text += f", as a {example.role} table"
    if example.cpuid:
        text += f", with {_edits_text(example.cpuid)}"
    if example.template:
        text += f", after a template that changes {_edits_text(example.template)}"
    if example.flags:
        flags = ", ".join(f"{key} = {value}" for key, value in example.flags)
        text += f", after a template that sets the KVM flags of {flags}"
    if example.missing:
        text += f", after a template that modifies {', '.join(example.missing)}, which the " \
                "table lacks"
    if example.host:
        facts = ", ".join(f"{key} {value}" for key, value in example.host)
        text += f"; host: {facts}"
    if example.dest is not None:
        dest = example.dest
        where = BASES[dest.base or example.base][2]
        text += f"; restored on {where}"
        if dest.cpuid:
            text += f" with {_edits_text(dest.cpuid)}"
        if dest.host:
            text += " (host: " + ", ".join(f"{k} {v}" for k, v in dest.host) + ")"
        if dest.peer is not None:
            text += (f", whose own guests see {_edits_text(dest.peer)}" if dest.peer
                     else ", whose own guests see the same table")
    text += "."
    if example.note:
        text += f" {example.note}"
    return text
