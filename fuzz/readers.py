"""The readers the fuzz campaign drives, each with its real seeds and its follow-up checks.

A reader takes the path of a file holding one generated input (and the input's bytes) and
calls the library exactly as the command line would. Where it gets a result, it also uses
the result the way the rest of the program does (XSAVE layout, the project's own JSON, the
rules), and checks that writing and re-reading the result gives the same answer, so that a
reader that returns a partial or wrong table is caught as well as one that crashes.
"""

from __future__ import annotations

import json
import random
import re
import tomllib
from collections.abc import Callable
from functools import cache
from pathlib import Path

import attrs

from fuzz.mutate import (
    EXPRESSION_TOKENS,
    JSON_TOKENS,
    TEXT_TOKENS,
    TOML_TOKENS,
    read_seeds,
)
from xstate_check import jsonpos, textfile
from xstate_check.api import build_subject
from xstate_check.cpuid import CpuidSet
from xstate_check.engine import FAMILIES, Catalogue, evaluate, load_catalogue
from xstate_check.errors import InputError
from xstate_check.layout import XsaveLayout
from xstate_check.sources.load import load_cpuid
from xstate_check.sources.ownjson import read_cpuid_json, to_json_text
from xstate_check.sources.profiles import load_profile
from xstate_check.subject import Subject
from xstate_check.template import (
    Template,
    apply_template,
    format_bitmap,
    load_template,
    parse_template,
)

__all__ = [
    "READERS",
    "LateInputError",
    "Reader",
    "RoundTripError",
    "for_extremes",
    "render_cpuid_raw",
    "rules_dir",
    "template_to_json",
    "variant_of",
]

REPO = Path(__file__).resolve().parents[1]


class RoundTripError(AssertionError):
    """A reader's result did not survive a round trip: the reader told less than the truth."""


class LateInputError(AssertionError):
    """Using a table a reader accepted raised InputError: the reader let bad input through."""


def _follow_up(use: Callable[[], object]) -> None:
    """Run ``use`` on an accepted result; an InputError there is the reader's failure."""
    try:
        use()
    except InputError as error:
        raise LateInputError(f"InputError after a successful read: {error.expected}") from error


@attrs.frozen
class Reader:
    """One reader under test: how to make its seeds and how to call it on an input file.

    ``seeds`` maps ../shared/data to seed inputs; ``run`` reads the input file at ``path``
    (whose bytes are also given) with a variant number the campaign draws (a CPU number…).
    """

    name: str
    description: str
    suffix: str
    seeds: Callable[[Path], list[bytes]]
    run: Callable[[str, bytes, int], object]
    tokens: tuple[bytes, ...] = TEXT_TOKENS
    structure: str | None = None
    filename: Callable[[bytes], str] | None = None

    def file_name(self, data: bytes) -> str:
        """Return the name of the file an input is written to (some readers read the name)."""
        return self.filename(data) if self.filename else "input" + self.suffix


def rules_dir() -> Path:
    """Return the rules/ folder of this checkout."""
    return REPO / "rules"


# ----------------------------------------------------------------------------- seeds


def _dumps(data_dir: Path, pattern: str) -> list[Path]:
    return sorted((data_dir / "cpuid-dumps").glob(pattern))


def _firecracker(data_dir: Path, pattern: str) -> list[Path]:
    return sorted((data_dir / "firecracker").glob(pattern))


def _template_paths(data_dir: Path) -> list[Path]:
    return [
        path for path in _firecracker(data_dir, "*.json")
        if not path.name.startswith("fingerprint_") and path.name != "schema.json"
    ]


def render_cpuid_raw(cpuid: CpuidSet, header: str = "CPU:") -> bytes:
    """Write a CpuidSet as ``cpuid -r`` text (FORMATS.md §3c), to make more raw seeds."""
    rows = cpuid.rows()
    lines = [header]
    for leaf, sub, eax, ebx, ecx, edx in sorted(rows):
        lines.append(
            f"   0x{leaf:08x} 0x{sub:02x}: eax=0x{eax:08x} ebx=0x{ebx:08x} "
            f"ecx=0x{ecx:08x} edx=0x{edx:08x}"
        )
    return ("\n".join(lines) + "\n").encode()


def _aida_seeds(data_dir: Path) -> list[bytes]:
    return read_seeds(_dumps(data_dir, "instlatx64/*.txt"), trim=True)


def _libcpuid_seeds(data_dir: Path) -> list[bytes]:
    return read_seeds(_dumps(data_dir, "libcpuid/*.test"), trim=True)


def _raw_seeds(data_dir: Path) -> list[bytes]:

    seeds = read_seeds(_dumps(data_dir, "local/*.txt"), trim=True)
    # The one real `cpuid -r` file, plus the other real dumps written in that format.
    for index, path in enumerate(_dumps(data_dir, "instlatx64/*.txt")[:8]):
        header = "CPU:" if index % 2 else f"CPU {index}:"
        seeds.append(render_cpuid_raw(load_cpuid(str(path)), header))
    return seeds


def _fingerprint_seeds(data_dir: Path) -> list[bytes]:
    return read_seeds(_firecracker(data_dir, "fingerprint_*.json"))


def _template_seeds(data_dir: Path) -> list[bytes]:
    return read_seeds(_template_paths(data_dir))


def _ownjson_seeds(data_dir: Path) -> list[bytes]:

    paths = [
        *_dumps(data_dir, "instlatx64/*SapphireRapids_05*"),
        *_dumps(data_dir, "instlatx64/*Rome*"),
        *_dumps(data_dir, "instlatx64/*HaswellEP*"),
        *_dumps(data_dir, "libcpuid/intel-core-i3-4130*"),
        *_dumps(data_dir, "local/host-amd-epyc-raw.txt"),
        *_firecracker(data_dir, "fingerprint_INTEL_SAPPHIRE_RAPIDS_6.1host.json"),
        *_firecracker(data_dir, "fingerprint_AMD_GENOA_5.10host.json"),
    ]
    return [to_json_text(load_cpuid(str(path))).encode() for path in paths]


def _json_seeds(data_dir: Path) -> list[bytes]:
    fingerprints = _fingerprint_seeds(data_dir)[:6]
    return [*_template_seeds(data_dir), *fingerprints, *_ownjson_seeds(data_dir)]


def _rule_file_seeds(data_dir: Path) -> list[bytes]:
    return read_seeds(sorted(rules_dir().glob("*.toml")))


def _expression_seeds(data_dir: Path) -> list[bytes]:

    seeds = []
    for path in sorted(rules_dir().glob("*.toml")):
        document = tomllib.loads(path.read_text(encoding="utf-8"))
        for rule in _rule_tables(document):
            for key in ("check", "applies"):
                value = rule.get(key)
                if isinstance(value, str):
                    seeds.append(value.encode())
            lets = rule.get("let")
            if isinstance(lets, dict):
                seeds.extend(value.encode() for value in lets.values() if isinstance(value, str))
    return seeds


def _rule_tables(document: dict[str, object]) -> list[dict[str, object]]:
    tables: list[dict[str, object]] = []
    for value in document.values():
        if isinstance(value, list):
            tables.extend(item for item in value if isinstance(item, dict))
        elif isinstance(value, dict):
            tables.append(value)
    return tables


# ----------------------------------------------------------------------------- follow-ups


@cache
def _base_cpuid() -> CpuidSet:
    """A fixed CPUID table to apply generated templates to (every leaf a template touches)."""
    rows = [(leaf, sub, 0x1234_5678, 0x9ABC_DEF0, 0x0F0F_0F0F, 0xF0F0_F0F0)
            for leaf in (*range(0x20), *range(0x8000_0000, 0x8000_0020))
            for sub in range(4)]
    rows += [(0xD, sub, sub, sub, sub, sub) for sub in range(4, 64)]
    return CpuidSet.from_rows(rows, "<fuzz base>")


def _use_cpuid(result: CpuidSet) -> None:
    """Use a CpuidSet as the program does, and check its own-JSON round trip is exact."""
    XsaveLayout.from_cpuid(result)
    text = to_json_text(result)
    again = read_cpuid_json(text, "<round trip>")
    expected_meta = {"format": "xstate-check-json", **result.meta}
    if (
        dict(again.entries) != dict(result.entries)
        or dict(again.flags) != dict(result.flags)
        or dict(again.meta) != expected_meta
        or again.source != result.source
        or (again.role, again.leaf_0xd_complete) != (result.role, result.leaf_0xd_complete)
    ):
        raise RoundTripError("the project's JSON of this result reads back as another table")
    if to_json_text(again) != text:
        raise RoundTripError("the project's JSON of this result is not stable when re-written")
    evaluate(build_subject(result))


def _run_dump(path: str, data: bytes, variant: int) -> object:
    # Mostly the default CPU; sometimes another one, present or not.
    cpu = {0: 0, 1: 1, 2: 4096}.get(variant % 20)
    result = load_cpuid(path, cpu=cpu)
    _follow_up(lambda: _use_cpuid(result))
    return result


def _run_cpuid_json(path: str, data: bytes, variant: int) -> object:
    result = load_cpuid(path)
    _follow_up(lambda: _use_cpuid(result))
    return result


def template_to_json(template: Template) -> str:
    """Write a template as Firecracker's serializer does (cpu-template-helper dump style).

    Field order is Firecracker's; leaf, subleaf and addr are lowercase ``0x`` hex; bitmaps
    are ``0b`` plus 32 (CPUID) or 64 (MSR) characters; ``kvm_capabilities`` always appears.
    """
    document = {
        "kvm_capabilities": list(template.kvm_capabilities),
        "cpuid_modifiers": [
            {
                "leaf": f"{modifier.leaf:#x}",
                "subleaf": f"{modifier.subleaf:#x}",
                "flags": modifier.flags,
                "modifiers": [
                    {
                        "register": register.register,
                        "bitmap": format_bitmap(register.filter, register.value, 32),
                    }
                    for register in modifier.modifiers
                ],
            }
            for modifier in template.cpuid_modifiers
        ],
        "msr_modifiers": [
            {"addr": f"{msr.addr:#x}", "bitmap": format_bitmap(msr.filter, msr.value, 64)}
            for msr in template.msr_modifiers
        ],
    }
    return json.dumps(document, indent=2)


def _run_template(path: str, data: bytes, variant: int) -> object:
    template = load_template(path)

    def use() -> None:
        applied = apply_template(template, _base_cpuid())
        text = template_to_json(template)
        again = parse_template(text, "<round trip>")
        if template_to_json(again) != text or again.modified_bits() != template.modified_bits():
            raise RoundTripError("the template written back reads as another template")
        if variant % 4 == 0:
            evaluate(build_subject(applied.cpuid))

    _follow_up(use)
    return template


def _has_duplicates(node: jsonpos.Node) -> bool:
    """Return whether any object in a jsonpos tree had a repeated key."""
    if node.duplicates:
        return True
    children = node.items.values() if isinstance(node.items, dict) else node.items or ()
    return any(_has_duplicates(child) for child in children)


def _serde_int(literal: str) -> int | float:
    if len(literal) <= 40 and -(2**63) <= int(literal) < 2**64:
        return int(literal)
    return float(literal)


def _run_jsonpos(path: str, data: bytes, variant: int) -> object:
    text = textfile.read_text(path)
    node = jsonpos.parse(text, path, allow_duplicates=bool(variant % 2))
    # Strict JSON that this parser accepts is JSON that Python's own reader reads alike,
    # integers beyond 64 bits becoming floats as in serde_json.
    if not _has_duplicates(node) and json.loads(text, parse_int=_serde_int) != node.value:
        raise RoundTripError("jsonpos and json.loads read different values")
    return node


_FAMILY_LINE = re.compile(rb'^family\s*=\s*"([a-z0-9-]+)"', re.MULTILINE)


def _rule_file_name(data: bytes) -> str:
    """Name the input after the family it declares: the loader wants file name == family."""
    match = _FAMILY_LINE.search(data)
    family = match.group(1).decode() if match else "xcr0"
    return f"{family if family in FAMILIES else 'xcr0'}.toml"


@cache
def _subjects() -> tuple[Subject, ...]:
    """Tables a loaded rule is evaluated on: odd values, an AMX CPU, an AMD guest."""
    return (
        build_subject(_base_cpuid(), role="guest"),
        build_subject(load_profile("sapphire-rapids-w7-2475x"), role="cpu"),
        build_subject(load_profile("zen4-genoa-epyc-9124"), role="guest"),
    )


def _evaluate_catalogue(catalogue: Catalogue) -> None:
    for subject in _subjects():
        evaluate(subject, catalogue)


def _run_rule_file(path: str, data: bytes, variant: int) -> object:
    catalogue = load_catalogue([path])
    _follow_up(lambda: _evaluate_catalogue(catalogue))
    return catalogue


@cache
def _expression_wrapper() -> tuple[str, str]:
    """Return the first rule of rules/xcr0.toml, split around its check expression."""
    text = (rules_dir() / "xcr0.toml").read_text(encoding="utf-8")
    headers = [match.start() for match in re.finditer(r"(?m)^\[\[rule\]\]", text)]
    first = text[: headers[1]] if len(headers) > 1 else text
    match = re.search(r"(?m)^check = .*$", first)
    assert match is not None, "rules/xcr0.toml has no check line"
    return first[: match.start()] + "check = ", first[match.end():]


def _run_expression(path: str, data: bytes, variant: int) -> object:
    # The expression becomes the check of a real rule (a TOML string escapes any text).
    head, tail = _expression_wrapper()
    expression = data.decode("utf-8", "replace")
    Path(path).write_text(head + json.dumps(expression) + tail, encoding="utf-8")
    catalogue = load_catalogue([path])
    _follow_up(lambda: _evaluate_catalogue(catalogue))
    return catalogue


READERS: dict[str, Reader] = {
    reader.name: reader
    for reader in (
        Reader("aida64", "AIDA64/InstLatx64 CPUID text", ".txt", _aida_seeds, _run_dump),
        Reader("libcpuid", "libcpuid .test files", ".test", _libcpuid_seeds, _run_dump),
        Reader("cpuid-raw", "Todd Allen's cpuid -r", ".txt", _raw_seeds, _run_dump),
        Reader("fingerprint", "Firecracker fingerprints as a CPUID source", ".json",
               _fingerprint_seeds, _run_cpuid_json, JSON_TOKENS, "json"),
        Reader("ownjson", "xstate-check's own CPUID JSON", ".json", _ownjson_seeds,
               _run_cpuid_json, JSON_TOKENS, "json"),
        Reader("template", "Firecracker CPU templates", ".json", _template_seeds, _run_template,
               JSON_TOKENS, "json"),
        Reader("jsonpos", "the strict JSON parser with positions", ".json", _json_seeds,
               _run_jsonpos, JSON_TOKENS, "json"),
        Reader("rule-file", "TOML rule files", ".toml", _rule_file_seeds, _run_rule_file,
               TOML_TOKENS, None, _rule_file_name),
        Reader("expression", "the rule language (as a rule's check)", ".toml",
               _expression_seeds, _run_expression, EXPRESSION_TOKENS, "expression",
               lambda data: "xcr0.toml"),
    )
}


def _read_cpuid(path: str, data: bytes, variant: int) -> object:
    result = load_cpuid(path)
    XsaveLayout.from_cpuid(result)
    return result


def _read_template(path: str, data: bytes, variant: int) -> object:
    return apply_template(load_template(path), _base_cpuid())


def _read_json(path: str, data: bytes, variant: int) -> object:
    return jsonpos.parse(textfile.read_text(path), path, allow_duplicates=bool(variant % 2))


#: What the extremes campaign runs per reader: the read itself and what the command line
#: does right after it (a layout, a template applied), without the round trips and rule
#: runs of the mutation campaign, which are bounded by the table read and cost the most.
_EXTREME_RUNS: dict[str, Callable[[str, bytes, int], object]] = {
    "aida64": _read_cpuid, "libcpuid": _read_cpuid, "cpuid-raw": _read_cpuid,
    "fingerprint": _read_cpuid, "ownjson": _read_cpuid, "template": _read_template,
    "jsonpos": _read_json,
}


def for_extremes(reader: Reader) -> Reader:
    """Return the reader as the extremes campaign runs it (see ``_EXTREME_RUNS``)."""
    run = _EXTREME_RUNS.get(reader.name)
    return attrs.evolve(reader, run=run) if run is not None else reader


def variant_of(rng: random.Random) -> int:
    """Return the variant number of one input (a CPU choice, a parser option…)."""
    return rng.randrange(1 << 16)
