"""Settings: which rules run, at which severity, on which templates; from the command line
and a configuration file.

The configuration file is the ``[tool.xstate-check]`` table of the nearest ``pyproject.toml``
that has one, or an ``.xstate-check.toml`` (its top level), whichever is met first walking
up from the working folder; ``--config FILE`` names one. Keys (the command line wins):

- ``select``, ``ignore``: rule selectors, as ruff takes them: a rule id (``XS0108``), an id
  prefix (``XS01``), a rule name (``amx-tile-pair``), a family (``xcr0``) or ``ALL``;
- ``severity``: a table of selector = ``"error"|"warning"|"info"`` overrides;
- ``per-file-ignores``: a table of template path pattern = [selectors], the patterns
  matched against the template's path relative to the file's folder, and its name (a
  Firecracker template, strict JSON, cannot carry inline comments);
- ``min-severity``: the least severity SARIF and GitHub output show (default ``warning``);
- ``strict``: warnings fail too;
- ``matrix``: a matrix file (relative to the configuration file) declaring the gate's pairs;
  or ``templates-dir``, ``[[tool.xstate-check.template]]`` and ``[[tool.xstate-check.group]]``
  (migration groups) tables, as in a matrix file.

Unknown keys and wrong types are InputErrors naming the file and line.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs

from xstate_check.errors import InputError, Location, line_column
from xstate_check.report import SEVERITIES, Finding, Report, Severity, SubjectReport

__all__ = ["CONFIG_FILE", "Selector", "Settings", "apply_settings", "find_config", "load_config",
           "subject_filter"]

CONFIG_FILE = ".xstate-check.toml"
_KEYS = ("select", "ignore", "severity", "per-file-ignores", "min-severity", "strict",
         "matrix", "templates-dir", "template", "group")


@attrs.frozen
class Selector:
    """One rule selector as written (``XS01``, ``amx-tile-pair``, ``xcr0``, ``ALL``)."""

    text: str

    def matches(self, rule: str, name: str, family: str) -> bool:
        """Return whether this selector names the rule ``rule`` (id), ``name``, ``family``."""
        text = self.text
        if text == "ALL":
            return True
        upper = text.upper()
        return upper == rule.upper() or text in (name, family) or (
            upper.startswith("XS") and rule.upper().startswith(upper)
        )


@attrs.frozen
class Settings:
    """What to report and how: rule selection, severities, per-template ignores."""

    select: tuple[Selector, ...] = ()
    ignore: tuple[Selector, ...] = ()
    severity: tuple[tuple[Selector, Severity], ...] = ()
    per_file_ignores: tuple[tuple[str, tuple[Selector, ...]], ...] = ()
    min_severity: Severity | None = None
    strict: bool = False
    #: The configuration file read (None: none), and its folder, which patterns are relative to.
    path: str | None = None
    root: str | None = None
    #: The gate's declared pairs: a matrix file, or the inline ``template`` tables.
    matrix: str | None = None
    inline_matrix: Mapping[str, Any] | None = None

    def merged(self, **changes: Any) -> Settings:
        """Return these settings with the given fields replaced where the value is set."""
        return attrs.evolve(self, **{k: v for k, v in changes.items() if v not in (None, ())})


def _catalogue_rules() -> list[tuple[str, str, str]]:
    from xstate_check.engine import load_catalogue

    return [(str(rule.id), rule.name, rule.family) for rule in load_catalogue().rules]


def check_selectors(selectors: Iterable[Selector], where: Location) -> None:
    """Raise InputError for a selector that names no rule of the catalogue."""
    rules = _catalogue_rules()
    for selector in selectors:
        if not any(selector.matches(*rule) for rule in rules):
            raise InputError(
                where,
                f"expected a rule selector (an id such as XS0108, an id prefix such as XS01, "
                f"a rule name, a family or ALL), found {selector.text!r}",
            )


def parse_selectors(values: Iterable[str]) -> tuple[Selector, ...]:
    """Return the selectors of comma-separated command-line values."""
    return tuple(Selector(part.strip()) for value in values for part in value.split(",")
                 if part.strip())


def parse_severity(
    values: Iterable[str], where: Location
) -> tuple[tuple[Selector, Severity], ...]:
    """Return ``RULE=LEVEL`` overrides; a malformed one is an InputError."""
    out: list[tuple[Selector, Severity]] = []
    for value in values:
        for part in value.split(","):
            rule, _, level = part.partition("=")
            if not rule.strip() or level.strip() not in SEVERITIES:
                raise InputError(
                    where, f"expected RULE=error|warning|info, found {part.strip()!r}"
                )
            out.append((Selector(rule.strip()), _severity(level.strip())))
    return tuple(out)


def _severity(text: str) -> Severity:
    for level in SEVERITIES:
        if level == text:
            return level
    raise ValueError(text)


# --------------------------------------------------------------------------- the file


def find_config(start: str | os.PathLike[str] | None = None) -> str | None:
    """Return the nearest configuration file from ``start`` (default: cwd) upward, or None."""
    # Plain strings: pathlib would cost the pre-boot command several ms of imports.
    folder = os.path.abspath(start if start is not None else os.getcwd())
    while True:
        own = os.path.join(folder, CONFIG_FILE)
        if os.path.isfile(own):
            return own
        pyproject = os.path.join(folder, "pyproject.toml")
        if os.path.isfile(pyproject) and _has_tool_table(pyproject):
            return pyproject
        parent = os.path.dirname(folder)
        if parent == folder:
            return None
        folder = parent


def _has_tool_table(path: str) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            text = handle.read(1 << 20)
    except OSError:
        return False
    return re.search(r'^\s*\[\s*tool\s*\.\s*(?:"xstate-check"|xstate-check)\s*[\].]', text,
                     re.M) is not None


def _line_of_key(text: str, key: str, after: int = 0) -> int:
    pattern = re.compile(rf'^\s*"?{re.escape(key)}"?\s*=', re.M)
    match = pattern.search(text, after)
    return line_column(text, match.start())[0] if match else 0


def load_config(path: str | os.PathLike[str]) -> Settings:
    """Read the settings of a configuration file (``pyproject.toml`` or ``.xstate-check.toml``)."""
    from xstate_check.textfile import read_text
    from xstate_check.tomltext import checked_table, parse_toml

    name = os.fspath(path)
    text = read_text(name)
    document = parse_toml(text, name)
    table: Any = document
    start = 0
    if os.path.basename(name) == "pyproject.toml":
        table = document.get("tool", {}).get("xstate-check")
        if table is None:
            raise InputError(Location(name), "expected a [tool.xstate-check] table")
        header = re.search(r'^\s*\[\s*tool\s*\.\s*"?xstate-check"?\s*\]', text, re.M)
        start = header.start() if header else 0

    def where(key: str) -> Location:
        return Location(name, _line_of_key(text, key, start))

    table = checked_table(table, Location(name), _KEYS, key_at=where,
                          not_a_table="expected [tool.xstate-check] to be a table",
                          unknown=f"expected one of the keys {', '.join(_KEYS)}, found {{key}}")

    def selectors(key: str, value: object) -> tuple[Selector, ...]:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise InputError(where(key), f"expected {key} as a list of rule selectors")
        found = tuple(Selector(v) for v in value)
        check_selectors(found, where(key))
        return found

    root = os.path.dirname(os.path.abspath(name))
    settings = Settings(path=name, root=root)
    settings = _rule_settings(settings, table, where, selectors)
    return _gate_settings(settings, table, where, root)


def _rule_settings(settings: Settings, table: Mapping[str, Any],
                   where: Callable[[str], Location],
                   selectors: Callable[[str, object], tuple[Selector, ...]]) -> Settings:
    if "select" in table:
        settings = attrs.evolve(settings, select=selectors("select", table["select"]))
    if "ignore" in table:
        settings = attrs.evolve(settings, ignore=selectors("ignore", table["ignore"]))
    if "severity" in table:
        levels = table["severity"]
        if not isinstance(levels, dict) or not all(v in SEVERITIES for v in levels.values()):
            raise InputError(where("severity"),
                             'expected severity as a table of RULE = "error|warning|info"')
        pairs = tuple((Selector(k), _severity(v)) for k, v in levels.items())
        check_selectors((s for s, _ in pairs), where("severity"))
        settings = attrs.evolve(settings, severity=pairs)
    if "per-file-ignores" in table:
        files = table["per-file-ignores"]
        if not isinstance(files, dict):
            raise InputError(where("per-file-ignores"),
                             "expected per-file-ignores as a table of PATTERN = [selectors]")
        settings = attrs.evolve(settings, per_file_ignores=tuple(
            (pattern, selectors("per-file-ignores", value)) for pattern, value in files.items()
        ))
    if "min-severity" in table:
        level = table["min-severity"]
        if level not in SEVERITIES:
            raise InputError(where("min-severity"),
                             'expected min-severity = "error", "warning" or "info"')
        settings = attrs.evolve(settings, min_severity=level)
    if "strict" in table:
        if not isinstance(table["strict"], bool):
            raise InputError(where("strict"), "expected strict = true or false")
        settings = attrs.evolve(settings, strict=table["strict"])
    return settings


def _gate_settings(settings: Settings, table: Mapping[str, Any],
                   where: Callable[[str], Location], root: str) -> Settings:
    if "matrix" in table:
        if not isinstance(table["matrix"], str) or "template" in table or "group" in table:
            raise InputError(where("matrix"), 'expected matrix = "a matrix file" (or inline '
                             "[[template]] and [[group]] tables, not both)")
        settings = attrs.evolve(settings, matrix=os.path.join(root, table["matrix"]))
    if "template" in table or "group" in table:
        inline = {key: table[key] for key in ("template", "group") if key in table}
        if "templates-dir" in table:
            inline["templates_dir"] = table["templates-dir"]
        settings = attrs.evolve(settings, inline_matrix=inline)
    return settings


# --------------------------------------------------------------------------- applying


def _ignored_for(template: str | None, settings: Settings) -> tuple[Selector, ...]:
    if template is None or not settings.per_file_ignores:
        return ()
    root = settings.root or os.getcwd()
    absolute = os.path.abspath(template)
    names = {os.path.basename(absolute), template}
    relative = os.path.relpath(absolute, root)
    if not relative.startswith(".."):
        names.add(relative.replace(os.sep, "/"))
    found: list[Selector] = []
    for pattern, selectors in settings.per_file_ignores:
        if any(fnmatch.fnmatchcase(name, pattern) for name in names):
            found.extend(selectors)
    return tuple(found)


def _family_of() -> dict[str, str]:
    return {rule: family for rule, _, family in _catalogue_rules()}


def _keep(finding: Finding, family: str, settings: Settings,
          ignored: Sequence[Selector]) -> Finding | None:
    key = (finding.rule, finding.name, family)
    if settings.select and not any(s.matches(*key) for s in settings.select):
        return None
    if any(s.matches(*key) for s in (*settings.ignore, *ignored)):
        return None
    for selector, level in settings.severity:
        if selector.matches(*key) and level != finding.severity:
            finding = attrs.evolve(finding, severity=level)
    return finding


def subject_filter(settings: Settings) -> Callable[[SubjectReport], SubjectReport] | None:
    """Return what ``apply_settings`` does to one subject (None when it changes nothing)."""
    if not (settings.select or settings.ignore or settings.severity or settings.per_file_ignores):
        return None
    families = _family_of()

    def keep(subject: SubjectReport) -> SubjectReport:
        ignored = _ignored_for(subject.template, settings)
        kept = [_keep(f, families.get(f.rule, ""), settings, ignored) for f in subject.findings]
        return attrs.evolve(subject, findings=tuple(f for f in kept if f is not None))

    return keep


def apply_settings(report: Report, settings: Settings) -> Report:
    """Return ``report`` with only the selected findings, at their configured severity."""
    keep = subject_filter(settings)
    if keep is None:
        return report
    return attrs.evolve(report, subjects=tuple(keep(subject) for subject in report.subjects))
