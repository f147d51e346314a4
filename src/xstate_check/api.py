"""The library's one-call check of a CPUID table, with an optional template and host."""

from __future__ import annotations

import os
from pathlib import Path

from xstate_check.cpuid import CpuidSet
from xstate_check.errors import check_argument
from xstate_check.hoststate import HostState
from xstate_check.report import Report
from xstate_check.subject import Role, Subject
from xstate_check.template import Template

__all__ = ["build_subject", "check"]


def build_subject(
    cpuid: CpuidSet | str | Path,
    template: Template | str | Path | None = None,
    host: HostState | None = None,
    *,
    name: str | None = None,
    role: Role | None = None,
) -> Subject:
    """Return the subject for a CPUID table (or a source to load), a template and a host."""
    from xstate_check.sources.load import load_cpuid
    from xstate_check.template import apply_template, load_template

    check_argument("check", "cpuid", cpuid, (CpuidSet, str, os.PathLike),
                   "a CpuidSet or a source (a file path, 'host', 'kvm', 'profile:NAME')")
    check_argument("check", "template", template, (Template, str, os.PathLike, type(None)),
                   "a Template, a template file path or None")
    check_argument("check", "host", host, (HostState, type(None)), "a HostState or None")
    base = cpuid if isinstance(cpuid, CpuidSet) else load_cpuid(cpuid)
    if template is None:
        return Subject.of(name or base.source, base, role=role, host=host)
    loaded = template if isinstance(template, Template) else load_template(template)
    applied = apply_template(loaded, base)
    return Subject.of(name or base.source, base, host=host, template=str(loaded.path),
                      guest=applied.cpuid, missing=applied.missing)


def check(
    cpuid: CpuidSet | str | Path,
    template: Template | str | Path | None = None,
    host: HostState | None = None,
) -> Report:
    """Check one CPUID table (or source), after an optional template, against the rules.

    Bad input is an InputError (a subclass of ValueError); arguments of another type are a
    TypeError.
    """
    from xstate_check.engine import evaluate

    subject = build_subject(cpuid, template, host)
    return Report((evaluate(subject),))
