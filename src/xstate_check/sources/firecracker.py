"""Firecracker JSON as a CPUID source: fingerprints and cpu-template-helper template dumps.

Both hold a guest CPU configuration in the custom CPU template format with every bit given
(``0b`` plus 32 characters of 0 and 1): a fingerprint (``cpu-template-helper fingerprint
dump``) wraps it in ``guest_cpu_config`` beside version facts; a template dump
(``cpu-template-helper template dump``) is the bare template. The table is what KVM_GET_CPUID2
returned for vCPU 0 after Firecracker's normalization, so it is a *guest* table: 0xD.0 and
0xD.1 EBX are the reset values (XCR0 = 1), which KVM recomputes when the guest writes XCR0.
"""

from __future__ import annotations

import os
import re

from xstate_check import jsonpos
from xstate_check.cpuid import REGISTERS, CpuidSet, Registers
from xstate_check.errors import InputError, Location, error_at
from xstate_check.jsonpos import Node
from xstate_check.template import Template, template_from_node

__all__ = ["read_firecracker"]

#: The version facts of a fingerprint, in Firecracker's field order; all are JSON strings.
FINGERPRINT_FACTS = (
    "firecracker_version",
    "kernel_version",
    "microcode_version",
    "bios_version",
    "bios_revision",
)
_FINGERPRINT_FIELDS = (*FINGERPRINT_FACTS, "guest_cpu_config")
_FULL = 0xFFFF_FFFF
_FILE_NAME = re.compile(r"fingerprint_(?P<cpu>.+?)_(?P<kernel>\d+\.\d+)host\.json")


def read_firecracker(text: str, path: str) -> CpuidSet:
    """Build the guest CpuidSet of a fingerprint or a cpu-template-helper template dump.

    Its role is ``guest``; ``meta`` holds ``format`` (``firecracker-fingerprint`` or
    ``firecracker-dump``), ``cpu`` and, for fingerprints, the version facts.
    """
    root = jsonpos.parse(text, path, allow_duplicates=True, lone_surrogates=True)
    members = root.object_items()
    meta: dict[str, str] = {}
    if "guest_cpu_config" in members:
        meta["format"] = "firecracker-fingerprint"
        _check_fingerprint_fields(root, text, path)
        for key in [*(root.keys or {}).values(), *root.duplicates]:
            _refuse_lone_surrogate(key, text, path)
        for name in FINGERPRINT_FACTS:
            if name in members:
                meta[name] = _fact(members[name], name, text, path)
        template = template_from_node(members["guest_cpu_config"], text, path)
    elif "cpuid_modifiers" in members:
        meta["format"] = "firecracker-dump"
        template = template_from_node(root, text, path)
    else:
        raise error_at(
            path, text, root.offset,
            "expected a Firecracker fingerprint (an object with guest_cpu_config) or a "
            "cpu-template-helper template dump (an object with cpuid_modifiers)",
            end=root.offset + 1,
        )
    entries, flags = _full_entries(template, text, path, root)
    cpuid = CpuidSet(entries, path, flags=flags, role="guest", source_kind="file")
    meta["cpu"] = _cpu_name(path, cpuid)
    return cpuid.replace(meta=meta)


def _check_fingerprint_fields(root: Node, text: str, path: str) -> None:
    """Refuse a repeated fingerprint field, as serde does; unknown fields are allowed."""
    for key in root.duplicates:
        if key.value in _FINGERPRINT_FIELDS:
            raise error_at(
                path, text, key.offset,
                f"expected {key.value!r} once in a fingerprint (Firecracker: duplicate field "
                f"`{key.value}`)",
                end=key.end,
            )


def _fact(node: Node, name: str, text: str, path: str) -> str:
    """Return one version fact, which must be a JSON string."""
    if node.kind != "string":
        raise error_at(
            path, text, node.offset,
            f"expected {name!r} as a string, found a JSON {node.kind} (Firecracker: invalid "
            "type, expected a string)",
            end=node.end,
        )
    _refuse_lone_surrogate(node, text, path)
    value: str = node.value
    return value


def _refuse_lone_surrogate(node: Node, text: str, path: str) -> None:
    """Refuse a lone surrogate in a string serde_json keeps (a key, a String field)."""
    if isinstance(node.value, str) and jsonpos.has_lone_surrogate(node.value):
        raise error_at(
            path, text, node.offset,
            "expected \\u escapes that pair surrogates (no lone surrogate) in a key or a string "
            "Firecracker reads (Firecracker: lone leading surrogate in hex escape)",
            end=node.end,
        )


def _full_entries(
    template: Template, text: str, path: str, root: Node
) -> tuple[dict[tuple[int, int], Registers], dict[tuple[int, int], int]]:
    """Turn fully specified modifiers into CPUID entries and their KVM flags."""
    entries: dict[tuple[int, int], Registers] = {}
    flags: dict[tuple[int, int], int] = {}
    where: dict[tuple[int, int], Location] = {}
    for leaf_modifier in template.cpuid_modifiers:
        key = (leaf_modifier.leaf, leaf_modifier.subleaf)
        label = f"CPUID entry ({leaf_modifier.leaf:#x}, {leaf_modifier.subleaf:#x})"
        if key in entries:
            first = where[key]
            raise _error_at_location(
                text, leaf_modifier.location,
                f"expected each CPUID entry once in a dump, but {label} is already at line "
                f"{first.line}",
            )
        values: dict[str, int] = {}
        for modifier in leaf_modifier.modifiers:
            if modifier.filter != _FULL:
                raise _error_at_location(
                    text, modifier.location,
                    f"expected a bitmap of all 32 bits, 0 or 1 only (a dump must give every "
                    f"bit), for {modifier.register} of {label}; a bitmap with x or fewer "
                    "characters belongs in a CPU template, which is passed with --template",
                )
            values[modifier.register] = modifier.value
        absent = [register for register in REGISTERS if register not in values]
        if absent:
            raise _error_at_location(
                text, leaf_modifier.location,
                f"expected all four registers eax, ebx, ecx, edx in {label} (a dump must give "
                f"every bit), but {', '.join(absent)} is absent",
            )
        entries[key] = Registers(**values)
        flags[key] = leaf_modifier.flags
        where[key] = leaf_modifier.location
    if not entries:
        raise error_at(
            path, text, root.offset,
            "expected at least one CPUID entry in cpuid_modifiers",
            end=root.offset + 1,
        )
    return entries, flags


def _error_at_location(text: str, location: Location, expected: str) -> InputError:
    """Return an InputError at a Location recorded while parsing ``text``."""
    # The offset where line ``location.line`` starts: the least offset with that many
    # newlines before it, found by halving (each count runs in C; no loop per line).
    low, high = 0, len(text)
    while low < high:
        middle = (low + high) // 2
        if text.count("\n", 0, middle) < location.line - 1:
            low = middle + 1
        else:
            high = middle
    offset = low + location.column - 1
    end = offset + 1
    if text.startswith('"', offset):
        closing = text.find('"', offset + 1)
        end = closing + 1 if closing > 0 else end
    return error_at(location.path, text, offset, expected, end=end)


def _cpu_name(path: str, cpuid: CpuidSet) -> str:
    """Name the CPU: from fingerprint_<CPU>_<kernel>host.json, else the brand string."""
    match = _FILE_NAME.fullmatch(os.path.basename(path))
    if match:
        return match.group("cpu")
    return cpuid.brand or f"{cpuid.vendor or 'unknown'} {cpuid.signature:#x}"
