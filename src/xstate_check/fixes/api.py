"""Where fixes are asked for: the library's ``fix()``, and a gate run's templates."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from xstate_check.cpuid import CpuidSet
from xstate_check.errors import check_argument
from xstate_check.fixes.engine import FixTarget, compute_fix
from xstate_check.fixes.model import Fix
from xstate_check.report import SubjectReport
from xstate_check.textfile import read_text

if TYPE_CHECKING:
    from xstate_check.gate import GateProfile, GateRun, Matrix

__all__ = ["fix", "fix_for_gate", "fix_in_pool", "fix_on_source", "targets_in_pool"]

Keep = Callable[[SubjectReport], SubjectReport]


def targets_in_pool(path: str, text: str, pool: Sequence[GateProfile],
                    grid: Matrix | None) -> list[FixTarget]:
    """Return the tables a template is checked on, paired as the gate pairs them."""
    from xstate_check.gate import pairs_for_template
    from xstate_check.template import parse_template

    pairs = pairs_for_template(parse_template(text, path), pool, grid)
    return [FixTarget(profile.name, profile.cpuid, declared)
            for profile, declared in pairs.checked]


def fix_in_pool(path: str, pool: Sequence[GateProfile], grid: Matrix | None = None, *,
                unsafe: bool = False, strict: bool = False, keep: Keep | None = None) -> Fix:
    """Return the fix of one template on the profiles of ``pool`` the gate pairs it with
    (``grid``: the run's matrix).

    ``keep`` applies the run's rule selection and severities (``config.subject_filter``).
    """
    text = read_text(path, byte_order_mark=False)
    return compute_fix(text, path, targets_in_pool(path, text, pool, grid), keep=keep,
                       strict=strict, unsafe=unsafe)


def fix_for_gate(run: GateRun, path: str, *, unsafe: bool = False, strict: bool = False,
                 keep: Keep | None = None) -> Fix:
    """Return the fix of one template of a gate run, on the profiles the run checks it on."""
    return fix_in_pool(path, run.pool, run.grid, unsafe=unsafe, strict=strict, keep=keep)


def fix_on_source(template: str, source: CpuidSet, *, unsafe: bool = False,
                  strict: bool = False, keep: Keep | None = None) -> Fix:
    """Return the fix of a template on one CPUID table (``check SOURCE --template T``)."""
    text = read_text(template, byte_order_mark=False)
    return compute_fix(text, template, [FixTarget(source.source, source, True)], keep=keep,
                       strict=strict, unsafe=unsafe)


def fix(
    template: str | os.PathLike[str],
    profiles: Sequence[str | os.PathLike[str] | CpuidSet] | None = None,
    *,
    matrix: str | os.PathLike[str] | None = None,
    unsafe: bool = False,
    strict: bool = False,
) -> Fix:
    """Return the smallest template change that removes its errors on its profiles.

    ``profiles`` are what ``gate`` takes (``builtin``, the default; ``profile:NAME``
    patterns; CPUID files or folders) or CpuidSets, each a declared pair; the template is
    paired with them as ``gate`` pairs it, with ``matrix`` if given. ``unsafe`` allows
    unsafe fixes; ``strict`` makes warnings targets too. Nothing is written: the result
    holds the new text (``Fix.text``) and the edits. Bad input is an InputError; arguments
    of another type are a TypeError.
    """
    from xstate_check.gate import GateProfile, load_matrix, resolve_profiles

    check_argument("fix", "template", template, (str, os.PathLike), "a template file path")
    check_argument("fix", "profiles", profiles, (list, tuple, type(None)),
                   "a list of profiles (builtin, profile:NAME, CPUID files, CpuidSets) or None")
    check_argument("fix", "matrix", matrix, (str, os.PathLike, type(None)),
                   "a matrix file path or None")
    check_argument("fix", "unsafe", unsafe, bool, "True or False")
    check_argument("fix", "strict", strict, bool, "True or False")
    specs: list[str] = []
    tables: list[GateProfile] = []
    for profile in profiles if profiles is not None else ["builtin"]:
        check_argument("fix", "profiles", profile, (str, os.PathLike, CpuidSet),
                       "profile names, CPUID file paths or CpuidSets")
        if isinstance(profile, CpuidSet):
            tables.append(GateProfile(profile.source, profile, "declared"))
        else:
            specs.append(os.fspath(profile))
    pool = [*(resolve_profiles(specs) if specs else []), *tables]
    path = os.fspath(template)
    text = read_text(path, byte_order_mark=False)
    grid = load_matrix(matrix) if matrix is not None else None
    return compute_fix(text, path, targets_in_pool(path, text, pool, grid), unsafe=unsafe,
                       strict=strict)
