"""Migration groups: templates and profiles meant to host each other's snapshots.

A gate matrix may name groups::

    [[group]]
    name = "t2-pool"
    members = [
      { template = "T2.json", profiles = ["fc-skylake-6.1", "fc-cascade-lake-6.1"] },
      { template = "SPR_TO_T2_6.1.json", profiles = ["fc-sapphire-rapids-6.1"] },
    ]

A member is one profile (a host) with the template its guests boot under (none: the
profile's table as it is); a ``profiles`` list makes one member per profile. For every
ordered pair of members (A, B), the guest of A is restored on B: the ``restore`` rules
decide whether it can be, and ``group-view-equal`` reports where A's XSAVE-relevant guest
view differs from B's, at the line of A's template that could remove the difference.

Templates are looked up like the matrix's own patterns: relative to ``templates_dir``
under the matrix's folder.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Protocol

import attrs

from xstate_check.api import build_subject
from xstate_check.cpuid import CpuidSet
from xstate_check.engine import evaluate_rules
from xstate_check.errors import InputError, Location
from xstate_check.report import BaselineState, SubjectReport
from xstate_check.restore import restore_rules, restore_subject
from xstate_check.subject import Destination, Subject
from xstate_check.template import Template, load_template
from xstate_check.tomltext import checked_table

__all__ = ["GroupMember", "MigrationGroup", "group_reports", "load_groups"]

_GROUP_KEYS = ("name", "members")
_MEMBER_KEYS = ("template", "profiles")


class Profile(Protocol):
    """What a group needs of a gate profile: a name and a CPUID table."""

    @property
    def name(self) -> str:
        """Return the profile's name."""
        ...

    @property
    def cpuid(self) -> CpuidSet:
        """Return the profile's table."""
        ...


@attrs.frozen
class GroupMember:
    """One ``members`` entry: a template (or none) and the profile names or patterns."""

    template: str | None
    profiles: tuple[str, ...]


@attrs.frozen
class MigrationGroup:
    """A ``[[group]]`` of a matrix file: its name, members and where it is written."""

    name: str
    members: tuple[GroupMember, ...]
    location: Location


def _group_lines(text: str) -> list[int]:
    """Return the line of each ``[[group]]`` (in a pyproject.toml, its
    ``[[tool.xstate-check.group]]``) header, in order: the text is read once for all groups."""
    return [
        number for number, line in enumerate(text.splitlines(), 1)
        if line.strip().replace(" ", "").replace('"', "") in (
            "[[group]]", "[[tool.xstate-check.group]]")
    ]


def load_groups(raw: object, text: str, path: str, templates_root: Path) -> tuple[
    MigrationGroup, ...
]:
    """Return the ``[[group]]`` tables of a matrix document, checked.

    ``templates_root`` is where member templates are looked up (the matrix's folder joined
    with its ``templates_dir``). Wrong keys or types, a group with fewer than two member
    entries, and two groups of one name are InputErrors at the group's line.
    """
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise InputError(Location(path), "expected [[group]] tables")
    groups: list[MigrationGroup] = []
    names: set[str] = set()
    lines = _group_lines(text)
    for index, table in enumerate(raw):
        where = Location(path, lines[index] if index < len(lines) else 0)
        groups.append(_group(table, where, templates_root))
        if groups[-1].name in names:
            raise InputError(where, f"expected group names to be unique; {groups[-1].name!r} "
                             "is named twice")
        names.add(groups[-1].name)
    return tuple(groups)


def _group(table: object, where: Location, root: Path) -> MigrationGroup:
    if not isinstance(table, dict):
        raise InputError(where, "expected [[group]] as a table")
    for key in table:
        if key not in _GROUP_KEYS:
            raise InputError(where, f"expected only name and members in [[group]], found {key!r}")
    name = table.get("name")
    if not isinstance(name, str) or not name.strip():
        raise InputError(where, 'expected name = "a group name"')
    members = table.get("members")
    if not isinstance(members, list) or not members:
        raise InputError(where, "expected members = [{ template = \"T.json\", profiles = "
                         "[\"fc-skylake-6.1\"] }, …]")
    return MigrationGroup(name.strip(), tuple(_member(m, where, root) for m in members), where)


def _member(value: object, where: Location, root: Path) -> GroupMember:
    table = checked_table(value, where, _MEMBER_KEYS, not_a_table="expected each member as a "
                          "table { template, profiles }", unknown="expected only template and "
                          "profiles in a group member, found {key}")
    template = table.get("template")
    if template is not None:
        if not isinstance(template, str) or not template:
            raise InputError(where, 'expected template = "a template file"')
        template = str(root / template)
    profiles = table.get("profiles")
    if (not isinstance(profiles, list) or not profiles
            or not all(isinstance(p, str) and p for p in profiles)):
        raise InputError(where, "expected profiles as a non-empty list of profile names or "
                         "patterns")
    return GroupMember(template, tuple(profiles))


@attrs.frozen
class _Host:
    """One host of a group: a profile and the guest booted there under its template."""

    profile: str
    template: Template | None
    guest: Subject

    @property
    def label(self) -> str:
        """Return ``profile + template`` as reports name the member."""
        if self.template is None:
            return self.profile
        return f"{self.profile} + {Path(self.template.path).name}"


def _hosts(group: MigrationGroup, pool: Sequence[Profile],
           load: Callable[[str], Template]) -> list[_Host]:
    hosts: list[_Host] = []
    seen: set[tuple[str, str | None]] = set()
    for member in group.members:
        template = load(member.template) if member.template is not None else None
        for pattern in member.profiles:
            hits = [p for p in pool if fnmatch.fnmatchcase(p.name, pattern)]
            if not hits:
                raise InputError(group.location, f"expected the profile pattern {pattern!r} of "
                                 f"group {group.name!r} to match one of the profiles: "
                                 + ", ".join(p.name for p in pool))
            for profile in hits:
                key = (profile.name, member.template)
                if key in seen:
                    continue
                seen.add(key)
                guest = build_subject(profile.cpuid, template, name=profile.name, role="guest")
                hosts.append(_Host(profile.name, template, guest))
    if len(hosts) < 2:
        raise InputError(group.location, f"expected group {group.name!r} to have two members "
                         "or more (a member is one profile with its template)")
    return hosts


def _evaluate(subject: Subject) -> SubjectReport:
    findings = evaluate_rules(subject, restore_rules())
    return SubjectReport(name=subject.name, source=subject.cpuid.source,
                         template=subject.template, findings=tuple(findings))


def _pair(group: MigrationGroup, pool: Sequence[Profile], source: _Host,
          target: _Host) -> Subject:
    subject = restore_subject(source.guest, Destination(
        target.label, _profile_table(pool, target.profile), peer=target.guest.cpuid,
    ))
    return attrs.evolve(subject, name=f"group {group.name}: {source.label} -> {target.label}")


def _resolve(groups: Iterable[MigrationGroup], given: Sequence[str]) -> list[MigrationGroup]:
    """Return the groups to check, their member templates replaced by the files given.

    With no template files given, every group as written. Otherwise only the groups a given
    file is a member of (matched by file name, as the matrix's ``path`` patterns are), that
    member taking the given file.
    """
    if not given:
        return list(groups)
    by_name = {Path(path).name: path for path in given}
    chosen = []
    for group in groups:
        members = tuple(
            attrs.evolve(member, template=by_name.get(Path(member.template).name,
                                                      member.template))
            if member.template is not None else member
            for member in group.members
        )
        if any(m.template in given for m in members):
            chosen.append(attrs.evolve(group, members=members))
    return chosen


def group_reports(
    groups: Iterable[MigrationGroup],
    pool: Sequence[Profile],
    *,
    given: Sequence[str] = (),
    policy: str = "any",
    changed_since: str | None = None,
) -> list[SubjectReport]:
    """Return one subject report per ordered pair of members of each group.

    ``given`` are the template files the gate was run on (see ``_resolve``). The subject is
    named ``group NAME: A -> B``; its details say the group, both members and whether B can
    restore A's snapshot. With ``changed_since`` (the gate's regression mode) each finding
    is marked ``new`` or ``unchanged`` against the pair as it was with the changed members'
    templates at that revision, as the gate marks its own pairs; only the templates under
    test (``given``, else every member's) are compared with the revision.
    """
    groups = _resolve(groups, given)
    old: dict[str, object] = {}
    if changed_since:
        under_test = [m.template for g in groups for m in g.members
                      if m.template is not None and (not given or m.template in given)]
        old = _old_templates(under_test, changed_since)
    reports: list[SubjectReport] = []
    for group in groups:
        hosts = _hosts(group, pool, load_template)
        before: list[_Host | None] | None = None
        if changed_since and any(old.get(h.template.path, _SAME) is not _SAME
                                 for h in hosts if h.template is not None):
            before = _old_hosts(hosts, old)
        for index, source in enumerate(hosts):
            for other, target in enumerate(hosts):
                if other == index:
                    continue
                report = _evaluate(_pair(group, pool, source, target))
                details: dict[str, object] = {
                    "group": group.name, "profile": source.profile,
                    "destination": target.label, "fail_on": policy,
                    "restorable": not any(f.severity == "error" for f in report.findings),
                }
                findings = report.findings
                if changed_since:
                    old_pair = None if before is None else (before[index], before[other])
                    states = _states(report, old_pair, group=group, pool=pool)
                    details["baseline"] = changed_since
                    findings = tuple(attrs.evolve(finding, baseline_state=state)
                                     for finding, state in zip(findings, states, strict=True))
                reports.append(attrs.evolve(report, findings=findings, details=details))
    return reports


#: An unchanged template in regression mode.
_SAME = object()


def _old_templates(paths: list[str], rev: str) -> dict[str, object]:
    """Return, per template path, _SAME, its old Template, or None (absent then)."""
    from xstate_check.gate import _baselines  # the gate's git reading, shared
    from xstate_check.template import parse_template

    result: dict[str, object] = {}
    for path, baseline in _baselines(list(dict.fromkeys(paths)), rev).items():
        if not baseline.changed:
            result[path] = _SAME
        elif baseline.old_text is None:
            result[path] = None
        else:
            try:
                result[path] = parse_template(baseline.old_text, path)
            except InputError:
                result[path] = None
    return result


def _old_hosts(hosts: list[_Host], old: dict[str, object]) -> list[_Host | None]:
    """Return the hosts as they were (None where the member's template did not exist)."""
    result: list[_Host | None] = []
    for host in hosts:
        if host.template is None or old.get(host.template.path, _SAME) is _SAME:
            result.append(host)
            continue
        template = old.get(host.template.path)
        if not isinstance(template, Template):
            result.append(None)
            continue
        guest = build_subject(host.guest.base or host.guest.cpuid, template, name=host.profile,
                              role="guest")
        result.append(_Host(host.profile, template, guest))
    return result


def _states(report: SubjectReport, old_pair: tuple[_Host | None, _Host | None] | None, *,
            group: MigrationGroup, pool: Sequence[Profile]) -> list[BaselineState]:
    """Mark a pair's findings against the pair at the revision (None: nothing changed)."""
    from xstate_check.gate import _baseline_states  # the gate's matching of old findings

    if old_pair is None:
        return ["unchanged"] * len(report.findings)
    source, target = old_pair
    if source is None or target is None:
        return ["new"] * len(report.findings)
    old = _evaluate(_pair(group, pool, source, target))
    return _baseline_states(report.findings, old.findings)


def _profile_table(pool: Sequence[Profile], name: str) -> CpuidSet:
    return next(p.cpuid for p in pool if p.name == name)
