"""The bounds on every input, in one place (README "Limits" lists them for users).

Each bound is checked before the work that would exceed it, and exceeding one is an
``InputError`` (exit 2) naming the file, the line where the bound was crossed and the bound.
The largest real inputs are far below them: dumps of 31,000 lines and 92 CPUID entries,
Firecracker files of 2,241 JSON values, 68 cpuid modifiers and 272 register modifiers.
"""

from __future__ import annotations

__all__ = [
    "MAX_DEPTH",
    "MAX_DUMP_LINES",
    "MAX_ENTRIES",
    "MAX_INPUT_BYTES",
    "MAX_JSON_VALUES",
    "MAX_MATRIX_ENTRIES",
    "MAX_MATRIX_FILES",
    "MAX_MSR_MODIFIERS",
    "MAX_REGISTER_MODIFIERS",
    "MAX_TOML_BYTES",
]

#: Any input file (dump, JSON, template, rule file, matrix): bytes (16 MiB).
MAX_INPUT_BYTES = 16 * 1024 * 1024

#: Lines of a text dump (AIDA64/InstLatx64, libcpuid, ``cpuid -r``).
MAX_DUMP_LINES = 500_000

#: (leaf, subleaf) entries of one CPUID table, from any source; also cpuid modifiers of a
#: template (each names one entry).
MAX_ENTRIES = 2048

#: Register modifiers of a template, counted over all its cpuid modifiers.
MAX_REGISTER_MODIFIERS = 2 * MAX_ENTRIES

#: MSR modifiers of a template.
MAX_MSR_MODIFIERS = 2048

#: Values in one JSON file: strings (keys included), numbers, literals, arrays, objects.
MAX_JSON_VALUES = 50_000

#: Nested arrays and objects in one JSON document (serde_json's recursion limit).
MAX_DEPTH = 128

#: Bytes of a TOML file (rule files, gate matrices): 2 MiB.
MAX_TOML_BYTES = 2 * 1024 * 1024

#: ``[[template]]`` entries of a gate matrix.
MAX_MATRIX_ENTRIES = 1000

#: Files and folders a matrix's patterns may look at under its templates folder.
MAX_MATRIX_FILES = 10_000
