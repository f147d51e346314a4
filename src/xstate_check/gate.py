"""The CI gate: every CPU template on every CPU profile it is meant for, in one report.

``run_gate(templates, profiles=…, matrix=…, changed_since=…, fail_on=…)`` checks each
template on each of its profiles as one subject (template applied to the profile's table)
and returns a ``GateResult``: a Report whose ``exit_code`` follows the gate's policy.

Which profiles a template runs on. A pair is *declared* or *inferred*:

1. **Declared**: the first ``[[template]]`` entry of the matrix file whose ``path`` pattern
   matches the template names its profiles; a profile named exactly on the command line
   (``--profiles profile:NAME`` or a CPUID file) is declared for every template. On a
   declared pair a template that modifies entries the profile lacks is the
   ``template-leaf-missing`` error, one per pair naming every missing entry: Firecracker
   refuses to boot there.
2. **Inferred** (``builtin``, ``profile:PATTERN`` with a wildcard, a folder of CPUID files):
   - never a bare-metal CPU profile of ``builtin`` (role ``cpu``: a CPU dump is not the
     table ``KVM_GET_SUPPORTED_CPUID`` gives a VMM); name one to use it;
   - never a profile of the other vendor, where the template's vendor can be inferred: it
     modifies a leaf only one vendor defines (AMD's extended leaves above 0x80000008;
     Intel's 0x12, 0x14, 0x19-0x1E, 0x20, 0x23, 0x24) or sets a bit only AMD defines (in
     0x80000001 ECX/EDX or 0x80000008 EBX); a template with no such trace runs on both
     (Firecracker applies a custom template on any host);
   - a template that modifies entries a profile lacks is *not for that host* (the kernel
     variant it was written for differs, e.g. ``SPR_TO_T2_6.1`` on a 5.10 host): one line in
     the report and one count in its summary, not a finding.

A template that runs on no profile at all is an InputError (exit 2) saying why: a gate that
checks nothing must not pass.

Regression mode (``changed_since=REV``) checks every template and compares each changed
one with its REV version on the same profiles (a file REV lacks counts as changed, and so
does every file of a repository without commits yet): each
finding is ``new`` or ``unchanged``, matched first by rule and message, then by rule alone
(a message that changed with an unrelated edit is still the same problem); every finding of
an unchanged template is ``unchanged``. ``fail_on="new"`` (the default there) fails only on
new findings, ``"any"`` on all.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import re
import subprocess
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import attrs

from xstate_check.cpuid import CpuidSet, copy_mapping
from xstate_check.engine import evaluate
from xstate_check.engine.runner import FindingsCache
from xstate_check.errors import InputError, Location, XstateCheckError
from xstate_check.limits import MAX_MATRIX_ENTRIES, MAX_MATRIX_FILES
from xstate_check.migration import MigrationGroup, group_reports, load_groups
from xstate_check.report import BaselineState, Finding, Report, SkippedPair, SubjectReport
from xstate_check.sources.load import load_cpuid
from xstate_check.sources.profiles import load_profile, match_profiles, profile_index
from xstate_check.subject import Role, Subject
from xstate_check.template import (
    FoldedTemplate,
    Template,
    fold_template,
    load_template,
    parse_template,
)
from xstate_check.textfile import read_text
from xstate_check.tomltext import checked_table, parse_toml

if TYPE_CHECKING:
    from concurrent.futures import Executor, Future

    from xstate_check.config import Settings
    from xstate_check.formats.stream import Tally

__all__ = [
    "AMD",
    "INTEL",
    "ChunkEncoder",
    "EncodedChunk",
    "FailOn",
    "GateChunk",
    "GateProfile",
    "GateResult",
    "GateRun",
    "GateWorkerError",
    "Matrix",
    "MatrixEntry",
    "SkippedPair",
    "TemplatePairs",
    "load_matrix",
    "matrix_of_table",
    "needs_fix",
    "pairs_for_template",
    "resolve_matrix_patterns",
    "resolve_profiles",
    "run_gate",
    "template_vendor",
    "with_fixes",
]

FailOn = Literal["new", "any"]
INTEL = "GenuineIntel"
AMD = "AuthenticAMD"
_VENDOR_WORDS = {"intel": INTEL, "amd": AMD, INTEL.lower(): INTEL, AMD.lower(): AMD}

# Leaves Intel CPUs have and AMD's do not (SGX, PT, Key Locker, hybrid, PCONFIG, LBR, AMX
# tiles and TMUL, PQE, AVX10), and the extended leaves beyond Intel's last (0x80000008).
_INTEL_ONLY_LEAVES = frozenset({0x12, 0x14, 0x19, 0x1A, 0x1B, 0x1C, 0x1D, 0x1E, 0x20, 0x23, 0x24})
_INTEL_LAST_EXTENDED_LEAF = 0x80000008
# Bits Intel's SDM leaves reserved where AMD's APM defines them: setting one is AMD-only.
# 0x80000001 ECX: Intel defines LAHF (0), LZCNT (5), PREFETCHW (8); EDX: SYSCALL (11),
# NX (20), Page1GB (26), RDTSCP (27), LM (29); 0x80000008 EBX: WBNOINVD (9).
_AMD_ONLY_BITS = {
    (0x80000001, 0, "ecx"): 0xFFFF_FFFF & ~((1 << 0) | (1 << 5) | (1 << 8)),
    (0x80000001, 0, "edx"): 0xFFFF_FFFF & ~((1 << 11) | (1 << 20) | (1 << 26) | (1 << 27)
                                            | (1 << 29)),
    (0x80000008, 0, "ebx"): 0xFFFF_FFFF & ~(1 << 9),
}


#: How a profile came into the gate: ``builtin`` (the bundled set: guest tables are paired
#: by inference, bare-metal ones not at all), ``chosen`` (a wildcard pattern or a folder:
#: paired by inference), ``declared`` (named exactly: every template runs on it).
ProfileOrigin = Literal["builtin", "chosen", "declared"]


@attrs.frozen
class GateProfile:
    """One CPU profile the gate checks templates on: a name, its CpuidSet, how it was named."""

    name: str
    cpuid: CpuidSet = attrs.field(eq=False)
    origin: ProfileOrigin = "declared"

    @property
    def vendor(self) -> str:
        """Return the profile's CPU vendor string (``GenuineIntel``, ``AuthenticAMD``)."""
        return self.cpuid.vendor

    @property
    def role(self) -> Role:
        """Return ``guest`` for a VMM's table (a Firecracker fingerprint), else ``cpu``."""
        return self.cpuid.role


@attrs.frozen
class MatrixEntry:
    """One ``[[template]]`` of a matrix file: a template path pattern and where it runs."""

    path: str
    profiles: tuple[str, ...]
    vendor: str | None
    location: Location

    def matches(self, template: str, base: Path) -> bool:
        """Return whether the pattern matches a template path (relative to ``base``) or name."""
        candidates = {Path(template).name, Path(template).as_posix()}
        with contextlib.suppress(ValueError):
            candidates.add(Path(os.path.abspath(template)).relative_to(base).as_posix())
        return any(fnmatch.fnmatchcase(candidate, self.path) for candidate in candidates)


@attrs.frozen
class Matrix:
    """A matrix file: which profiles each template is checked on.

    ``folder`` is the matrix file's folder; ``templates_dir`` (relative to it) is where the
    ``path`` patterns are looked up when the gate is given no template.
    """

    path: str
    folder: Path
    entries: tuple[MatrixEntry, ...]
    templates_dir: str | None = None
    groups: tuple[MigrationGroup, ...] = ()

    def entry_for(self, template: str) -> MatrixEntry | None:
        """Return the first entry whose pattern matches ``template``, or None."""
        return next((e for e in self.entries if e.matches(template, self.folder)), None)

    def templates(self) -> list[str]:
        """Return the template files the patterns name under ``templates_dir``, in order."""
        return resolve_matrix_patterns(self)


@attrs.frozen
class GateResult(Report):
    """What a gate run found: a Report whose exit code follows the gate's policy.

    ``baseline`` is the revision compared with in regression mode (None otherwise);
    ``fail_on`` is ``new`` (only findings the change introduced fail) or ``any``. Being a
    Report, it renders in every format; ``report`` gives the plain Report.
    """

    kind: ClassVar[str] = "gate"
    fail_on: FailOn = "any"
    baseline: str | None = None

    @property
    def report(self) -> Report:
        """Return the subjects as a plain Report (whose exit code counts every finding)."""
        return Report(self.subjects, skipped=self.skipped)

    def summary(self) -> dict[str, int]:
        """Return the counts of subjects, findings by severity and pairs not for their host."""
        return {**super().summary(), "not_for_host": len(self.skipped)}

    def summary_text(self) -> str:
        """Return the summary line, with the pairs not checked when there are any."""
        text = super().summary_text()
        if self.skipped:
            count = len(self.skipped)
            text += f"; {count} template/profile pair{'' if count == 1 else 's'} not for " \
                    "their host"
        return text

    def to_json(self) -> dict[str, object]:
        """Return the report as JSON, with the pairs not checked before the summary."""
        out = super().to_json()
        summary = out.pop("summary")
        out["not_checked"] = [pair.to_json() for pair in self.skipped]
        out["summary"] = summary
        return out

    def failing(self, strict: bool = False) -> list[Finding]:
        """Return the findings that fail the gate: errors (and warnings when ``strict``)."""
        failing = []
        for subject in self.subjects:
            for finding in subject.findings:
                if not subject.counts(finding):
                    continue
                if finding.severity == "error" or (strict and finding.severity == "warning"):
                    failing.append(finding)
        return failing

    def exit_code(self, strict: bool = False) -> int:
        """Return 1 when a finding fails the gate (see ``failing``), else 0."""
        return 1 if self.failing(strict) else 0


# --------------------------------------------------------------------------- profiles


def resolve_profiles(specs: Sequence[str]) -> list[GateProfile]:
    """Return the profiles named by ``builtin``, ``profile:PATTERN`` and CPUID files/folders.

    A folder stands for every ``*.json`` file in it; a file is read by ``load_cpuid`` (any
    format it detects) and named by its stem. Two profiles of one name are an InputError.
    """
    chosen: dict[str, GateProfile] = {}
    rank = {"builtin": 0, "chosen": 1, "declared": 2}

    def add(name: str, cpuid: CpuidSet, where: str, origin: ProfileOrigin) -> None:
        known = chosen.get(name)
        if known is not None:
            if known.cpuid.source != cpuid.source:
                raise InputError(
                    Location(where),
                    f"expected profile names to be unique, but {name!r} is both "
                    f"{known.cpuid.source} and {cpuid.source}",
                )
            if rank[origin] <= rank[known.origin]:
                return
        chosen[name] = GateProfile(name, cpuid, origin)

    for spec in specs:
        if spec == "builtin":
            for info in profile_index():
                add(info.name, load_profile(info.name), spec, "builtin")
        elif spec.startswith("profile:"):
            pattern = spec.removeprefix("profile:")
            infos = match_profiles(pattern)
            if not infos:
                load_profile(pattern)  # raises the InputError that lists the known names
            origin: ProfileOrigin = "chosen" if _is_pattern(pattern) else "declared"
            for info in infos:
                add(info.name, load_profile(info.name), spec, origin)
        else:
            files = _profile_files(spec)
            origin = "chosen" if Path(spec).is_dir() else "declared"
            for path in files:
                add(Path(path).stem, load_cpuid(path), path, origin)
    if not chosen:
        raise InputError(Location("--profiles"), "expected at least one profile")
    return list(chosen.values())


def _is_pattern(text: str) -> bool:
    return any(char in text for char in "*?[")


def _profile_files(spec: str) -> list[str]:
    path = Path(spec)
    if path.is_dir():
        files = sorted(str(child) for child in path.glob("*.json") if child.is_file())
        if not files:
            raise InputError(Location(spec), "expected a folder holding CPUID *.json files")
        return files
    if not path.exists():
        raise InputError(
            Location(spec), "expected 'builtin', profile:NAME, or an existing CPUID file or folder"
        )
    return [spec]


# --------------------------------------------------------------------------- matrix


def resolve_matrix_patterns(matrix: Matrix) -> list[str]:
    """Return the template files a matrix's ``path`` patterns name, for a gate given none.

    Patterns are read below ``templates_dir`` (the matrix's folder by default; a folder the
    matrix's author names, as a command-line argument would) and cannot leave it: a pattern
    is relative, ``/``-separated, without ``.``, ``..`` or empty parts; ``*``, ``?`` and
    ``[…]`` match within one part, ``**`` as a whole part matches any number of folders and
    inside a part any characters (as in GitHub's path filters: ``cpu-templates/**.json``).
    Anything else is an InputError at the entry's line, as is a file that is a link leading
    out of the repository holding ``templates_dir`` (``templates_dir`` itself outside one):
    a pattern cannot make the gate read, and quote, files elsewhere. The folders are walked
    once, without following links, up to ``MAX_MATRIX_FILES`` entries.
    """
    root = Path(os.path.realpath(matrix.folder / (matrix.templates_dir or ".")))
    if not matrix.entries:
        return []
    if not root.is_dir():
        raise InputError(Location(matrix.path),
                         f"expected templates_dir to name a folder; {root} is not one")
    repository = _repository_of(root)
    listing: list[str] | None = None
    found: dict[str, None] = {}
    for entry in matrix.entries:
        pattern = _pattern_regex(entry)
        if pattern is None:
            hits = [entry.path] if (root / entry.path).is_file() else []
        else:
            if listing is None:
                listing = _walk(root, entry.location)
            hits = [relative for relative in listing if pattern.fullmatch(relative)]
        if not hits:
            raise InputError(
                entry.location,
                f"expected the pattern {entry.path!r} to name template files under {root}",
            )
        for relative in hits:
            if not _within(Path(os.path.realpath(root / relative)), repository):
                raise InputError(
                    entry.location,
                    f"expected template files inside the repository {repository}; "
                    f"{relative!r} links to a file outside it",
                )
            found.setdefault(os.path.relpath(root / relative))
    return list(found)


def _repository_of(folder: Path) -> Path:
    """Return the git work tree holding ``folder`` (a ``.git`` beside it), else ``folder``."""
    for candidate in (folder, *folder.parents):
        if os.path.lexists(candidate / ".git"):
            return candidate
    return folder


def _within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


_GLOB_CHARS = frozenset("*?[")


def _pattern_regex(entry: MatrixEntry) -> re.Pattern[str] | None:
    """Return the regex of a matrix pattern (None for a plain path); InputError if invalid."""
    pattern = entry.path

    def invalid(why: str) -> InputError:
        return InputError(entry.location, f"expected a relative file pattern such as "
                          f'"cpu-templates/**/*.json" in path; {pattern!r} {why}')

    if "\0" in pattern:
        raise invalid("holds a NUL character")
    if pattern.startswith("/"):
        raise invalid("is absolute")
    parts = pattern.split("/")
    for part in parts:
        if part in ("", ".", ".."):
            raise invalid(f"has a part {part!r} (empty, . and .. are not allowed)")
    if not _GLOB_CHARS.intersection(pattern):
        return None
    regex = ""
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        if part == "**":
            regex += ".*" if last else "(?:[^/]+/)*"
            continue
        regex += _part_regex(part, invalid) + ("" if last else "/")
    return re.compile(regex, re.S)


def _part_regex(part: str, invalid: Callable[[str], InputError]) -> str:
    """Translate one part of a pattern: * ? […] within the part, ** across folders."""
    out: list[str] = []
    index = 0
    while index < len(part):
        char = part[index]
        if char == "*":
            rest = part[index:]
            stars = len(rest) - len(rest.lstrip("*"))
            out.append(".*" if stars > 1 else "[^/]*")
            index += stars
            continue
        if char == "?":
            out.append("[^/]")
        elif char == "[":
            close = part.find("]", index + 2)
            if close < 0:
                raise invalid("has a '[' without its ']'")
            body = part[index + 1:close]
            negate = body.startswith("!")
            # Every character of the set is literal but the range dash.
            body = "".join(c if c == "-" else re.escape(c) for c in body[negate:])
            out.append(f"[{'^/' if negate else ''}{body}]")
            index = close
        else:
            out.append(re.escape(char))
        index += 1
    return "".join(out)


def _walk(root: Path, where: Location) -> list[str]:
    """Return the files below ``root`` (relative, ``/``-separated), links not followed."""
    files: list[str] = []
    seen = 0
    for folder, folders, names in os.walk(root):
        folders[:] = sorted(name for name in folders if name != ".git")
        seen += len(folders) + len(names)
        if seen > MAX_MATRIX_FILES:
            raise InputError(
                where, f"expected at most {MAX_MATRIX_FILES} files and folders under {root} "
                "for the matrix's patterns (xstate-check's limit)",
            )
        relative = os.path.relpath(folder, root)
        prefix = "" if relative == "." else relative.replace(os.sep, "/") + "/"
        files.extend(prefix + name for name in sorted(names))
    return files


_ENTRY_KEYS = ("path", "profiles", "vendor")
_TOP_KEYS = ("templates_dir", "template", "group")


def _entry_lines(text: str) -> list[int]:
    """Return the 1-based lines of the ``[[template]]`` headers, in order.

    In a pyproject.toml the header is ``[[tool.xstate-check.template]]``.
    """
    lines = []
    for number, line in enumerate(text.splitlines(), 1):
        compact = line.strip().replace(" ", "").replace('"', "")
        if compact in ("[[template]]", "[[tool.xstate-check.template]]"):
            lines.append(number)
    return lines


def load_matrix(path: str | os.PathLike[str]) -> Matrix:
    """Read a matrix file (TOML): ``[[template]]`` entries of ``path`` and ``profiles``/``vendor``.

    ``path`` is a shell pattern matched against the template's name, its path as given, and
    its path relative to the matrix's folder; ``profiles`` lists profile names or patterns
    (``fc-cascade-lake-*``); ``vendor`` (``intel``/``amd``) keeps only that vendor's profiles.
    Unknown keys, wrong types and an entry with neither are InputErrors with the line.
    """
    name = os.fspath(path)
    # Bounded, regular files only (a FIFO must not hang the gate); any TOML failure is input.
    text = read_text(name)
    return matrix_of_table(parse_toml(text, name), name, text)


def matrix_of_table(document: Mapping[str, Any], name: str, text: str | None = None) -> Matrix:
    """Return the Matrix of a parsed matrix document (a matrix file, or a configuration's).

    ``name`` is the file it came from (its folder is the patterns' base); ``text``, where
    given, places each entry's errors on its line.
    """
    if text is None:
        from xstate_check.textfile import read_text as read

        try:
            text = read(name)
        except InputError:
            text = ""
    for key in document:
        if key not in _TOP_KEYS:
            raise InputError(
                Location(name),
                f"expected only templates_dir, [[template]] and [[group]] tables, found {key!r}",
            )
    templates_dir = document.get("templates_dir")
    if templates_dir is not None and not isinstance(templates_dir, str):
        raise InputError(Location(name), "expected templates_dir as a string (a folder)")
    folder = Path(os.path.abspath(name)).parent
    groups = load_groups(document.get("group"), text, name, folder / (templates_dir or "."))
    raw = document.get("template", [])
    if not isinstance(raw, list) or not (raw or groups):
        raise InputError(Location(name), "expected one or more [[template]] or [[group]] tables")
    lines = _entry_lines(text)
    if len(raw) > MAX_MATRIX_ENTRIES:
        line = lines[MAX_MATRIX_ENTRIES] if len(lines) > MAX_MATRIX_ENTRIES else 0
        raise InputError(Location(name, line), f"expected at most {MAX_MATRIX_ENTRIES} "
                         "[[template]] tables (xstate-check's limit)")
    entries = []
    for index, table in enumerate(raw):
        where = Location(name, lines[index] if index < len(lines) else 0)
        entries.append(_matrix_entry(table, where))
    return Matrix(name, folder, tuple(entries), templates_dir, groups)


def _matrix_entry(value: object, where: Location) -> MatrixEntry:
    table = checked_table(value, where, _ENTRY_KEYS, not_a_table="expected [[template]] as a "
                          "table", unknown="expected only path, profiles and vendor in "
                          "[[template]], found {key}")
    pattern = table.get("path")
    if not isinstance(pattern, str) or not pattern:
        raise InputError(where, 'expected path = "a template file name or pattern"')
    profiles = table.get("profiles", [])
    if not isinstance(profiles, list) or not all(isinstance(p, str) and p for p in profiles):
        raise InputError(where, "expected profiles as a list of profile names or patterns")
    vendor = table.get("vendor")
    if vendor is not None:
        if not isinstance(vendor, str) or vendor.lower() not in _VENDOR_WORDS:
            raise InputError(where, f'expected vendor = "intel" or "amd", found {vendor!r}')
        vendor = _VENDOR_WORDS[vendor.lower()]
    if not profiles and vendor is None:
        raise InputError(where, "expected profiles, vendor, or both in [[template]]")
    return MatrixEntry(pattern, tuple(profiles), vendor, where)


# --------------------------------------------------------------------------- pairs


def template_vendor(template: Template, folded: FoldedTemplate | None = None) -> str | None:
    """Return the vendor a template can only be meant for (``GenuineIntel``/``AuthenticAMD``).

    None when nothing in it ties it to one vendor, or it points to both. ``folded`` is the
    template folded (``fold_template``), if the caller has it.
    """
    folded = folded if folded is not None else fold_template(template)
    vendors: set[str] = set()
    for leaf, _subleaf in folded.keys:
        if leaf in _INTEL_ONLY_LEAVES:
            vendors.add(INTEL)
        elif _INTEL_LAST_EXTENDED_LEAF < leaf <= 0x8000FFFF:
            vendors.add(AMD)
    # The bits a template sets in the end are its folded masks' ``put``.
    masks = folded.masks
    for (leaf, subleaf, register), amd_only in _AMD_ONLY_BITS.items():
        found = masks.get((leaf, subleaf))
        if found is not None and found[1][_REGISTER_INDEX[register]] & amd_only:
            vendors.add(AMD)
    return vendors.pop() if len(vendors) == 1 else None


_REGISTER_INDEX = {"eax": 0, "ebx": 1, "ecx": 2, "edx": 3}


def _select(entry: MatrixEntry, profiles: Sequence[GateProfile]) -> list[GateProfile]:
    chosen = list(profiles)
    if entry.profiles:
        chosen = []
        for pattern in entry.profiles:
            hits = [p for p in profiles if fnmatch.fnmatchcase(p.name, pattern)]
            if not hits:
                raise InputError(
                    entry.location,
                    f"expected the profile pattern {pattern!r} to match one of the profiles: "
                    + ", ".join(p.name for p in profiles),
                )
            chosen.extend(p for p in hits if p not in chosen)
    if entry.vendor is not None:
        chosen = [p for p in chosen if p.vendor == entry.vendor]
    return chosen


@attrs.frozen
class _Pairs:
    """The profiles one template runs on: declared ones, and inferred ones."""

    declared: tuple[GateProfile, ...]
    inferred: tuple[GateProfile, ...]
    #: Why a profile of the pool was not paired by inference (for the nothing-checked error).
    passed_over: tuple[str, ...]


def _pairs_for(template: Template, pool: Sequence[GateProfile], matrix: Matrix | None,
               folded: FoldedTemplate) -> _Pairs:
    entry = matrix.entry_for(template.path) if matrix is not None else None
    if entry is not None:
        return _Pairs(tuple(_select(entry, pool)), (), ())
    vendor = template_vendor(template, folded)
    declared: list[GateProfile] = []
    inferred: list[GateProfile] = []
    bare_metal: list[str] = []
    other_vendor: list[str] = []
    for profile in pool:
        origin = profile.origin
        if origin == "declared":
            declared.append(profile)
        elif origin == "builtin" and profile.cpuid.role == "cpu":
            bare_metal.append(profile.name)
        elif vendor is not None and profile.cpuid.vendor != vendor:
            other_vendor.append(profile.name)
        else:
            inferred.append(profile)
    passed_over = []
    if other_vendor:
        passed_over.append(
            f"{len(other_vendor)} of another vendor than the template's ({vendor})"
        )
    if bare_metal:
        passed_over.append(
            f"{len(bare_metal)} bare-metal CPU table{'' if len(bare_metal) == 1 else 's'} "
            "(name one with --profiles profile:NAME to check it)"
        )
    return _Pairs(tuple(declared), tuple(inferred), tuple(passed_over))


def _not_for_host(template: Template, profile: GateProfile,
                  missing: Iterable[tuple[int, int]],
                  names: dict[tuple[int, int], str]) -> SkippedPair:
    """Return the pair of ``template`` and a ``profile`` lacking the ``missing`` entries
    (``names`` keeps each entry's written name, for the template's other pairs)."""
    written = []
    for key in missing:
        name = names.get(key)
        if name is None:
            name = names[key] = f"{key[0]:#x}.{key[1]:#x}"
        written.append(name)
    entries = ", ".join(written)
    return SkippedPair(
        str(template.path), profile.name,
        f"not for this host: the template modifies CPUID {entries} (leaf.subleaf), which "
        f"{profile.name} lacks",
        entries,
    )


def _nothing_checked(template: Template, pairs: _Pairs, skipped: Sequence[SkippedPair],
                     pool: Sequence[GateProfile]) -> InputError:
    """Return the error for a template that no profile of the pool checked, saying why."""
    reasons = list(pairs.passed_over)
    if skipped:
        lacking = ", ".join(pair.profile for pair in skipped)
        reasons.append(f"{len(skipped)} lacking entries the template modifies ({lacking})")
    why = "; ".join(reasons) if reasons else "the matrix names none of them"
    return InputError(
        Location(str(template.path)),
        f"expected at least one profile to check this template on, but none of the "
        f"{len(pool)} profiles fits: {why}. Name its hosts in a --matrix file or with "
        "--profiles profile:NAME",
    )


@attrs.frozen
class TemplatePairs:
    """The profiles the gate checks one template on, and the pairs not for their host."""

    #: Each profile checked, declared pairs first, with whether its pair is declared.
    checked: tuple[tuple[GateProfile, bool], ...]
    not_for_host: tuple[SkippedPair, ...]


def pairs_for_template(template: Template, pool: Sequence[GateProfile],
                       matrix: Matrix | None,
                       folded: FoldedTemplate | None = None) -> TemplatePairs:
    """Return the profiles of ``pool`` the gate checks ``template`` on (InputError if none).

    An inferred pair whose profile lacks an entry the template modifies is not checked but
    listed as not for its host; ``folded`` is the template folded, if the caller has it.
    """
    folded = folded if folded is not None else fold_template(template)
    pairs = _pairs_for(template, pool, matrix, folded)
    checked = [(profile, True) for profile in pairs.declared]
    not_for: list[SkippedPair] = []
    keys = folded.keys
    names: dict[tuple[int, int], str] = {}
    for profile in pairs.inferred:
        have = profile.cpuid.entries
        if have.keys() >= keys:
            checked.append((profile, False))
        else:
            missing = [key for key, _ in folded.entries if key not in have]
            not_for.append(_not_for_host(template, profile, missing, names))
    if not checked:
        raise _nothing_checked(template, pairs, not_for, pool)
    return TemplatePairs(tuple(checked), tuple(not_for))


# --------------------------------------------------------------------------- git


def _git(root: str, *args: str, where: str) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(
            ["git", "-C", root, *args], capture_output=True, check=False, timeout=60
        )
    except (OSError, subprocess.SubprocessError) as error:
        raise InputError(
            Location(where), f"expected git to run, to compare with a revision ({error})"
        ) from None


@attrs.frozen
class _Baseline:
    """A template file's state at the revision: changed or not, and its old text."""

    changed: bool
    old_text: str | None


def _baselines(paths: Sequence[str], rev: str) -> dict[str, _Baseline]:
    """Return, for each template path, whether it changed since ``rev`` and its old text."""
    by_root: dict[str, list[tuple[str, str]]] = {}
    for path in paths:
        folder = os.path.dirname(os.path.abspath(path))
        top = _git(folder, "rev-parse", "--show-toplevel", where=path)
        if top.returncode != 0:
            raise InputError(
                Location(path), "expected a file inside a git work tree (for --changed-since)"
            )
        root = top.stdout.decode("utf-8", "surrogateescape").strip()
        try:
            relative = Path(os.path.realpath(path)).relative_to(os.path.realpath(root)).as_posix()
        except ValueError:
            raise InputError(
                Location(path), f"expected a file of the git work tree {root} (for "
                "--changed-since); this one is a link to a file outside it",
            ) from None
        by_root.setdefault(root, []).append((path, relative))
    result: dict[str, _Baseline] = {}
    for root, members in by_root.items():
        verify = _git(root, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}",
                      where=members[0][0])
        if verify.returncode != 0:
            if _has_no_commits(root, members[0][0]):
                # Nothing committed yet (a new repository): every template is a change.
                result.update((path, _Baseline(True, None)) for path, _ in members)
                continue
            raise InputError(
                Location("--changed-since"),
                f"expected a git revision (commit, branch or tag) of {root}, found {rev!r}",
            )
        relatives = [relative for _, relative in members]
        diff = _git(root, "diff", "--name-only", "--no-renames", rev, "--", *relatives,
                    where=members[0][0])
        listed = _git(root, "ls-tree", "-r", "--name-only", rev, "--", *relatives,
                      where=members[0][0])
        changed = set(diff.stdout.decode("utf-8", "surrogateescape").splitlines())
        existing = set(listed.stdout.decode("utf-8", "surrogateescape").splitlines())
        for path, relative in members:
            if relative not in existing:
                result[path] = _Baseline(True, None)
            elif relative not in changed:
                result[path] = _Baseline(False, None)
            else:
                shown = _git(root, "show", f"{rev}:{relative}", where=path)
                old = shown.stdout.decode("utf-8", "replace") if shown.returncode == 0 else None
                result[path] = _Baseline(True, old)
    return result


def _has_no_commits(root: str, where: str) -> bool:
    """Return whether the repository at ``root`` has no commit yet on any branch or tag."""
    found = _git(root, "rev-list", "-n", "1", "--all", where=where)
    return found.returncode == 0 and not found.stdout.strip()


def _baseline_states(new: Sequence[Finding], old: Iterable[Finding]) -> list[BaselineState]:
    """Mark each new finding ``unchanged`` if the old version had it, else ``new``."""
    old = list(old)
    exact = Counter((f.rule, f.message) for f in old)
    by_rule = Counter(f.rule for f in old)
    states: list[BaselineState] = [None] * len(new)
    for index, finding in enumerate(new):
        key = (finding.rule, finding.message)
        if exact[key] > 0:
            exact[key] -= 1
            by_rule[finding.rule] -= 1
            states[index] = "unchanged"
    for index, finding in enumerate(new):
        if states[index] is None and by_rule[finding.rule] > 0:
            by_rule[finding.rule] -= 1
            states[index] = "unchanged"
    return [state or "new" for state in states]


# --------------------------------------------------------------------------- the gate


def _subject(template: Template, profile: GateProfile,
             folded: FoldedTemplate | None = None) -> Subject:
    """Return one pair's subject, named by its profile (its template is beside it).

    As ``build_subject`` makes it; ``folded`` is the template, folded once for all pairs.
    """
    base = profile.cpuid
    guest, missing = (folded or fold_template(template)).apply(base, template.path)
    return Subject(profile.name, guest, "guest", None, str(template.path), base, missing)


def _same_guest(one: Subject, other: Subject) -> bool:
    """Return whether two subjects give the rules the same table, so the same findings.

    Rules read the guest table, its KVM flags and the entries the template lacked; the
    template lines (provenance) only place the findings.
    """
    return (
        one.cpuid == other.cpuid
        and copy_mapping(one.cpuid.flags) == copy_mapping(other.cpuid.flags)
        and [(m.leaf, m.subleaf) for m in one.missing_entries]
        == [(m.leaf, m.subleaf) for m in other.missing_entries]
    )


def _regression_states(report: SubjectReport, subject: Subject, old: Template | None,
                       profile: GateProfile) -> list[BaselineState]:
    """Mark the findings of ``report`` against the old template's on the same profile."""
    if old is None:
        return ["new"] * len(report.findings)
    before = _subject(old, profile)
    if _same_guest(before, subject):
        # The change does not reach this profile's guest (a leaf it lacks, a bit it already
        # had): every finding was there before, at most on another line.
        return ["unchanged"] * len(report.findings)
    return _baseline_states(report.findings, evaluate(before).findings)


def _table_key(profile: GateProfile, subject: Subject, folded: FoldedTemplate) -> Hashable:
    """Return what decides a pair's findings: the profile's table, the entries the template
    changed in it with their flags, their values (the rest is the profile's), and what it
    lacked (a key of three parts where it lacked nothing, four otherwise).

    Profiles whose tables are equal (entries, flags, role, leaf 0xD completeness: all the
    rules read of them) share one number: a template gives them equal guest tables.
    """
    number = profile.cpuid.derived("gate_table_number", _table_number)
    missing = subject.missing_entries
    entries = subject.cpuid.entries
    if not missing:  # every entry the template modifies is there, with the template's flags
        return number, folded.written, folded.read(entries)
    flags = subject.cpuid.flags
    present = [key for key, _ in folded.entries if key in entries]
    return (number, tuple((key, flags.get(key)) for key in present),
            tuple(entries[key] for key in present),
            tuple((m.leaf, m.subleaf) for m in missing))


#: Each distinct profile table content seen, numbered (see ``_table_key``).
_TABLE_NUMBERS: dict[Hashable, int] = {}


def _table_number(table: CpuidSet) -> int:
    """Return the number of the table's content, the same for every equal table."""
    content = (tuple(table.entries.items()), tuple(sorted(table.flags.items())), table.role,
               table.leaf_0xd_complete)
    return _TABLE_NUMBERS.setdefault(content, len(_TABLE_NUMBERS))


#: Per profile and policy (by identity, kept with the profile): the details of its subjects,
#: one read-only mapping shared by the pairs of every template on it.
_DETAILS: dict[tuple[int, str], tuple[GateProfile, Mapping[str, object]]] = {}


def _details(profile: GateProfile, policy: FailOn) -> Mapping[str, object]:
    """Return the details of a subject on ``profile`` (its name, its vendor, the policy)."""
    found = _DETAILS.get((id(profile), policy))
    if found is None or found[0] is not profile:
        if len(_DETAILS) >= 4096:
            _DETAILS.clear()
        found = _DETAILS[id(profile), policy] = (profile, {
            "profile": profile.name, "vendor": profile.vendor, "fail_on": policy})
    return found[1]


#: One template's part of a gate: its subjects, then the pairs not for their host.
GateChunk = tuple[tuple[SubjectReport, ...], tuple[SkippedPair, ...]]


def _check_template(path: str, pool: Sequence[GateProfile], grid: Matrix | None, *,
                    policy: FailOn, changed_since: str | None,
                    baseline: _Baseline | None, cache: FindingsCache) -> GateChunk:
    """Check one template on each of its profiles (the gate's unit of work).

    ``cache`` holds the findings of the guest tables this run has seen.
    """
    template = load_template(path)
    old: Template | None = None
    if baseline is not None and baseline.old_text is not None:
        try:
            old = parse_template(baseline.old_text, template.path)
        except InputError:
            old = None  # a version that did not parse has no findings to keep
    folded = fold_template(template)
    pairs = pairs_for_template(template, pool, grid, folded)
    subjects: list[SubjectReport] = []
    for profile, _declared in pairs.checked:
        subject = _subject(template, profile, folded)
        details = _details(profile, policy)
        report = cache.evaluate(subject, _table_key(profile, subject, folded), details)
        if not changed_since:
            subjects.append(report)
            continue
        findings = report.findings
        if baseline is not None and not baseline.changed:
            states: list[BaselineState] = ["unchanged"] * len(findings)
        else:
            states = _regression_states(report, subject, old, profile)
        findings = tuple(attrs.evolve(finding, baseline_state=state)
                         for finding, state in zip(findings, states, strict=True))
        subjects.append(attrs.evolve(report, findings=findings,
                                     details={**details, "baseline": changed_since}))
    return tuple(subjects), pairs.not_for_host


#: Below this many templates a gate left to choose its workers runs in one process:
#: starting workers costs more than they save.
PARALLEL_FROM = 48
#: The most templates in one task sent to a worker, and tasks running or queued per worker
#: (the parent writes the output in order; what it holds is twice that many tasks' results
#: at most). Tasks shrink towards the end (see ``_batches``), so that no worker is left
#: alone with a long one.
_BATCH = 16
_AHEAD = 2


def usable_cores() -> int:
    """Return the number of CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _batches(paths: Sequence[str], workers: int) -> Iterator[list[str]]:
    """Split ``paths`` into tasks: a quarter of each worker's share of what is left, at
    most ``_BATCH`` and at least one template (few tasks to send and merge, a short tail)."""
    start = 0
    while start < len(paths):
        size = max(1, min(_BATCH, (len(paths) - start) // (workers * 4)))
        yield list(paths[start:start + size])
        start += size


def _start_method() -> str:
    """Return how workers start: ``fork`` from a process with one thread (Linux), which
    hands them the catalogue, profiles and everything warmed so far for free; else
    ``forkserver`` (a fresh single-threaded server forks them: a thread of the caller may
    hold a lock a forked child would wait on forever), or ``spawn`` where there is none."""
    import multiprocessing
    import sys

    if sys.platform == "linux":
        try:
            if len(os.listdir("/proc/self/task")) == 1:
                return "fork"
        except OSError:
            pass
    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


class GateWorkerError(XstateCheckError):
    """A gate's worker process ended before answering (killed, or out of memory), or
    could not start (a calling script re-run as each worker's ``__main__``)."""

    exit_code = 3


@attrs.frozen
class ChunkEncoder:
    """How workers send templates' results ready-written, so that the parent only writes.

    ``subjects`` and ``skipped`` encode subjects and pairs not checked as the writer's
    ``encoded`` and ``encoded_skipped`` take them (``JsonWriter``'s); ``settings`` selects
    and rates findings first, as the command line does (``config.subject_filter``). Only
    for a format whose writer writes each subject whatever the others (JSON).
    """

    subjects: Callable[[Iterable[SubjectReport]], str]
    skipped: Callable[[Iterable[SkippedPair]], str]
    settings: Settings | None = None


@attrs.frozen
class EncodedChunk:
    """Templates' subjects and pairs not checked, encoded by a worker (``ChunkEncoder``),
    and their counts; ``write_to`` hands them to the writer and the tally."""

    subjects: str
    skipped: str
    tally: Tally

    def write_to(self, writer: Any, tally: Tally) -> None:
        """Write the encoded subjects, keep the pairs not checked, add the counts."""
        tally.merge(self.tally)
        writer.encoded(self.subjects)
        writer.encoded_skipped(self.skipped)


class GateRun:
    """A gate, set up (matrix, profiles, revisions read) and ready to run template by template.

    ``chunks(jobs)`` yields each template's GateChunk in the order given, then the migration
    groups' subjects; with ``jobs`` > 1 the templates are checked by that many worker
    processes and merged back in order, so the output is the same bytes as with one.
    ``result()`` collects the chunks in a GateResult. Input errors of the set-up are raised
    here; a template's own, when its turn comes.

    Workers are forked from this process when it has a single thread (Linux), after it has
    checked the first template itself: they start with the catalogue, the profiles and
    every cache warm, and import nothing. Otherwise (a caller with threads, another
    system) multiprocessing's forkserver (``spawn`` where there is none) starts them, and
    each imports the calling script again as its ``__main__``: such a script needs the
    ``if __name__ == "__main__":`` guard, and without it the gate raises GateWorkerError.
    """

    def __init__(
        self,
        templates: Sequence[str | os.PathLike[str]] = (),
        *,
        profiles: Sequence[str] | None = None,
        matrix: str | os.PathLike[str] | Matrix | None = None,
        changed_since: str | None = None,
        fail_on: FailOn | None = None,
        fixes: bool | Settings = False,
    ) -> None:
        grid = matrix if isinstance(matrix, Matrix) or matrix is None else load_matrix(matrix)
        paths = [os.fspath(path) for path in templates]
        self.given = list(paths)
        if not paths:
            if grid is None:
                raise InputError(Location("gate"), "expected template files or a --matrix file")
            paths = grid.templates()
        self.grid = grid
        self.paths = list(dict.fromkeys(paths))
        self.policy: FailOn = fail_on or ("new" if changed_since else "any")
        self.changed_since = changed_since
        self.specs = list(profiles) if profiles else ["builtin"]
        self.pool = resolve_profiles(self.specs)
        self.baselines = _baselines(self.paths, changed_since) if changed_since else {}
        #: The findings of the guest tables this run has seen (see FindingsCache).
        self.cache = FindingsCache()
        #: The settings each template's fix is computed under (rule selection, severities,
        #: strict: as ``--fix`` computes it); None: findings carry no edits (``with_fixes``).
        self.fixes = _fix_settings(fixes)

    def __getstate__(self) -> dict[str, Any]:
        """Return the gate as a worker started afresh rebuilds it: without the profiles'
        tables (named by ``specs``) and the findings seen."""
        return {key: value for key, value in vars(self).items() if key not in ("pool", "cache")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Rebuild a pickled gate: the profiles resolved again, the catalogue loaded."""
        from xstate_check.engine import load_catalogue

        load_catalogue()
        self.__dict__.update(state)
        self.pool = resolve_profiles(self.specs)
        self.cache = FindingsCache()

    def check(self, path: str) -> GateChunk:
        """Check one template (in this process)."""
        chunk = _check_template(path, self.pool, self.grid, policy=self.policy,
                                changed_since=self.changed_since,
                                baseline=self.baselines.get(path), cache=self.cache)
        if self.fixes is None:
            return chunk
        return with_fixes(chunk, self.pool, self.grid, self.fixes)

    def chunks(self, jobs: int | None = 1) -> Iterator[GateChunk]:
        """Yield each template's chunk, in order, then the migration groups' (see class)."""
        for item in self.items(jobs):
            assert not isinstance(item, EncodedChunk)  # no encoder, no such item
            yield item

    def items(self, jobs: int | None = 1,
              encoder: ChunkEncoder | None = None) -> Iterator[GateChunk | EncodedChunk]:
        """Yield the chunks as ``chunks`` does; with an ``encoder``, workers' templates come
        as EncodedChunks, each for one or more templates, still in order."""
        workers = usable_cores() if jobs is None else jobs
        if jobs is None and len(self.paths) < PARALLEL_FROM:
            workers = 1
        workers = min(workers, max(1, len(self.paths) // 2))
        if workers > 1:
            yield from self._parallel(workers, encoder)
        else:
            for path in self.paths:
                yield self.check(path)
        if self.grid is not None and self.grid.groups:
            yield tuple(group_reports(self.grid.groups, self.pool, given=self.given,
                                      policy=self.policy,
                                      changed_since=self.changed_since)), ()

    def _parallel(self, workers: int,
                  encoder: ChunkEncoder | None) -> Iterator[GateChunk | EncodedChunk]:
        import gc
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor
        from concurrent.futures.process import BrokenProcessPool

        paths = self.paths
        if _start_method() == "fork":
            # The first template here: what the first check warms (rules, the profiles'
            # memos, modules imported on first use) is then every worker's from the start.
            yield self.check(paths[0])
            paths = paths[1:]
        method = _start_method()  # the reader of the first chunk may have started a thread
        context = multiprocessing.get_context(method)
        # Objects frozen out of the collector are not written by the workers' collections, so
        # the memory they share with this process stays shared (unless the caller froze
        # objects of its own: those stay as the caller left them).
        freeze = method == "fork" and gc.get_freeze_count() == 0
        if freeze:
            gc.freeze()
        if method == "forkserver":
            # The server imports the gate once for all its workers.
            context.set_forkserver_preload(["xstate_check.gate"])
        try:
            # A forked worker takes this gate as it is; a started one gets it pickled (its
            # recipe: see __getstate__).
            with ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_adopt,
                                     initargs=(self,)) as executor:
                try:
                    yield from self._merged(executor, paths, workers, encoder,
                                            unfreeze=freeze)
                except BaseException:
                    # An error to report, or the reader stopped: the tasks not started are
                    # dropped, not waited for.
                    executor.shutdown(cancel_futures=True)
                    raise
        except BrokenProcessPool:
            raise GateWorkerError(_broken_pool_message(method)) from None
        finally:
            if freeze:
                gc.unfreeze()

    def _merged(self, executor: Executor, paths: Sequence[str], workers: int,
                encoder: ChunkEncoder | None, *,
                unfreeze: bool) -> Iterator[GateChunk | EncodedChunk]:
        """Send ``paths`` to the workers in tasks and yield their answers in order.

        A new task goes out whenever one finishes, whichever it is: a worker that got less
        of the machine's time (a busy CI runner) does not hold the others up. Answers that
        arrive ahead of their turn wait here, at most ``_AHEAD`` tasks per worker more than
        are running.
        """
        import gc
        from collections import deque
        from concurrent.futures import FIRST_COMPLETED, wait

        running, held = workers * _AHEAD, workers * _AHEAD * 2
        pending: deque[tuple[list[str], Future[_WorkerAnswer]]] = deque()
        queue = _batches(paths, workers)
        exhausted = False
        while True:
            busy = [future for _, future in pending if not future.done()]
            while not exhausted and len(busy) < running and len(pending) < held:
                batch = next(queue, None)
                if batch is None:
                    exhausted = True
                    break
                future = executor.submit(_worker_check, batch, encoder)
                if unfreeze and not pending:
                    gc.unfreeze()  # the workers were forked as the first task went
                pending.append((batch, future))
                busy.append(future)
            if not pending:
                return
            batch, future = pending[0]
            if not future.done():
                wait(busy, return_when=FIRST_COMPLETED)
                continue
            pending.popleft()
            done, failed = future.result()
            yield from done
            # A template a worker could not check is checked here again, so that its
            # error is raised as with one process, in its turn.
            for path in batch[failed:]:
                yield self.check(path)

    def result(self, jobs: int | None = 1) -> GateResult:
        """Run the gate and collect every chunk into a GateResult."""
        subjects: list[SubjectReport] = []
        skipped: list[SkippedPair] = []
        for checked, not_for in self.chunks(jobs):
            subjects.extend(checked)
            skipped.extend(not_for)
        return GateResult(subjects, skipped=tuple(skipped), fail_on=self.policy,
                          baseline=self.changed_since)


def _broken_pool_message(method: str) -> str:
    """Return why a gate's worker pool broke, and what to do."""
    text = ("a gate worker process ended before answering (killed by a signal, or out of "
            "memory?); run with --jobs 1 (jobs=1) to check in one process")
    if method != "fork":
        text += (f". Workers started by multiprocessing's {method} (from a process with "
                 "threads, or off Linux) import the calling script again as their __main__: "
                 "a script calling run_gate with jobs above 1 there must do its work under "
                 "'if __name__ == \"__main__\":'")
    return text


#: A worker's answer to one task: what it checked (in order), and how many of the task's
#: templates that covers (the rest, from the first it could not check, the parent checks).
_WorkerAnswer = tuple[list[GateChunk | EncodedChunk], int]

_WORKER: dict[str, GateRun] = {}


def _worker_adopt(run: GateRun) -> None:
    """Take the parent's gate as this worker's (forked: as the parent had it, everything
    loaded; started afresh: rebuilt from its recipe)."""
    _WORKER["run"] = run


def _worker_check(paths: list[str], encoder: ChunkEncoder | None = None) -> _WorkerAnswer:
    """Check templates in a worker, up to the first whose input is bad (the parent checks
    that one again and reports it); with an ``encoder``, send them encoded."""
    from xstate_check.errors import XstateCheckError

    run = _WORKER["run"]
    chunks: list[GateChunk] = []
    for path in paths:
        try:
            chunks.append(run.check(path))
        except XstateCheckError:
            break
    if encoder is None or not chunks:
        return list(chunks), len(chunks)
    return [_encoded(chunks, encoder)], len(chunks)


def _encoded(chunks: Sequence[GateChunk], encoder: ChunkEncoder) -> EncodedChunk:
    """Return templates' chunks as one EncodedChunk (subjects filtered, counted, encoded)."""
    from xstate_check.config import subject_filter
    from xstate_check.formats.stream import Tally

    keep = subject_filter(encoder.settings) if encoder.settings is not None else None
    tally = Tally("gate")
    subjects: list[SubjectReport] = []
    skipped: list[SkippedPair] = []
    for made, not_for in chunks:
        for subject in made:
            kept = subject if keep is None else keep(subject)
            tally.add(kept)
            subjects.append(kept)
        for pair in not_for:
            tally.skip(pair)
            skipped.append(pair)
    return EncodedChunk(encoder.subjects(subjects), encoder.skipped(skipped), tally)


def _fix_settings(fixes: bool | Settings) -> Settings | None:
    """Return the settings fixes are computed under: None for no fixes, defaults for True."""
    if fixes is True:
        from xstate_check.config import Settings

        return Settings()
    return fixes or None


def with_fixes(chunk: GateChunk, pool: Sequence[GateProfile], grid: Matrix | None,
               settings: Settings) -> GateChunk:
    """Return one template's chunk with each finding carrying the edits that fix it.

    The template's fix is computed on the profiles the gate checks it on, under
    ``settings``, as ``--fix`` computes it (and again with unsafe fixes where only those
    fix a rule, as ``--fix --unsafe-fixes`` does), and only where a finding fails and its
    rule declares a fix: a clean template costs nothing.
    """
    subjects, skipped = chunk
    path = subjects[0].template if subjects else None
    if path is None or not needs_fix(subjects, settings):
        return chunk
    from xstate_check.config import subject_filter
    from xstate_check.fixes.api import targets_in_pool
    from xstate_check.fixes.engine import compute_fix
    from xstate_check.report import attach_fixes

    text = read_text(path, byte_order_mark=False)
    # The tables the template was checked on, in the gate's order (declared pairs first).
    targets = targets_in_pool(path, text, pool, grid)
    keep = subject_filter(settings)
    safe = compute_fix(text, path, targets, keep=keep, strict=settings.strict)
    unsafe = None
    if safe.needs_unsafe():
        unsafe = compute_fix(text, path, targets, keep=keep, strict=settings.strict,
                             unsafe=True)
    return attach_fixes(subjects, safe, unsafe), skipped


def needs_fix(subjects: Iterable[SubjectReport], settings: Settings) -> bool:
    """Return whether a finding of ``subjects`` fails (an error; a warning too when strict),
    under ``settings``' rule selection and severities, and its rule declares a fix."""
    from xstate_check.config import subject_filter
    from xstate_check.engine import load_catalogue

    keep = subject_filter(settings)
    failing = ("error", "warning") if settings.strict else ("error",)
    fixable = {rule.name for rule in load_catalogue().rules if rule.autofix}
    for subject in subjects:
        kept = keep(subject) if keep is not None else subject
        if any(finding.severity in failing and finding.name in fixable
               for finding in kept.findings):
            return True
    return False


def run_gate(
    templates: Sequence[str | os.PathLike[str]] = (),
    *,
    profiles: Sequence[str] | None = None,
    matrix: str | os.PathLike[str] | Matrix | None = None,
    changed_since: str | None = None,
    fail_on: FailOn | None = None,
    jobs: int | None = 1,
    fixes: bool | Settings = False,
) -> GateResult:
    """Check each template on each of its profiles; one subject per template x profile pair.

    ``profiles`` holds ``builtin`` (the default), ``profile:NAME`` patterns and CPUID
    files or folders. With no template, a matrix's own ``path`` patterns name them.
    ``changed_since`` turns on regression mode (see the module docstring); ``fail_on``
    defaults to ``new`` there and is ``any`` otherwise. ``jobs``: worker processes (None:
    the usable cores, for large gates); the result is the same whatever their number.
    From a caller with threads, workers (forkserver) import its ``__main__`` again: such a
    script must guard its work with ``if __name__ == "__main__":`` (GateWorkerError
    otherwise; see GateRun).
    ``fixes``: each finding carries the edits of its template's fix (``Finding.edits``),
    computed under the given Settings' rule selection and severities (True: the defaults).
    """
    return GateRun(templates, profiles=profiles, matrix=matrix, changed_since=changed_since,
                   fail_on=fail_on, fixes=fixes).result(jobs)
