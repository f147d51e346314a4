"""The bundled CPU profiles: ``profile:NAME``, the CI gate's fleet when no host is at hand.

A profile is a named ``CpuidSet`` of a real CPU model, stored in the package as the
project's own CPUID JSON (``xstate_check/profiles/NAME.json``, written by ``convert``'s
``to_json_text`` through ``tools/make_profiles.py``) and listed in ``profiles/index.json``
with where it came from: file, repository, commit, path and licence.

Two kinds:
- ``fc-…`` profiles (role ``guest``): the guest CPUID Firecracker hands KVM on a CPU model
  under a host kernel, read from Firecracker's ``cpu-template-helper fingerprint dump``
  baselines (no template). The table a template is applied to in production.
- bare-metal profiles (role ``cpu``): a recent CPU as its operating system saw it, read from
  public CPUID dumps. They show what a CPU offers before any hypervisor filters it.
"""

from __future__ import annotations

import fnmatch
import json
from functools import cache
from importlib import resources
from typing import Any, Literal

import attrs

from xstate_check.cpuid import CpuidSet
from xstate_check.errors import InputError, Location
from xstate_check.sources.ownjson import read_cpuid_json

__all__ = [
    "INDEX_SCHEMA",
    "ProfileInfo",
    "load_profile",
    "match_profiles",
    "profile_index",
    "render_profiles",
]

INDEX_SCHEMA = "xstate-check-profiles/1"
_PACKAGE = "xstate_check"
_FOLDER = "profiles"


@attrs.frozen
class ProfileInfo:
    """One bundled profile as the index lists it (the table itself is read on demand).

    ``source`` maps ``file`` (under shared/data), ``repository``, ``commit``, ``path`` and
    ``licence`` of the data the profile was converted from.
    """

    name: str
    file: str
    role: Literal["guest", "cpu"]
    vendor: str
    model: str
    kernel: str | None
    description: str
    source: dict[str, str]

    def to_json(self) -> dict[str, object]:
        """Return the index entry as a JSON object."""
        return {
            "name": self.name,
            "file": self.file,
            "role": self.role,
            "vendor": self.vendor,
            "model": self.model,
            "kernel": self.kernel,
            "description": self.description,
            "source": dict(self.source),
        }


def _read_resource(name: str) -> str:
    return resources.files(_PACKAGE).joinpath(_FOLDER, name).read_text(encoding="utf-8")


def _index_error(expected: str) -> InputError:
    return InputError(Location(f"{_PACKAGE}/{_FOLDER}/index.json"), expected)


@cache
def _index_document() -> dict[str, Any]:
    try:
        document = json.loads(_read_resource("index.json"))
    except (OSError, ValueError) as error:
        raise _index_error(f"the bundled profile index, readable JSON ({error})") from None
    if not isinstance(document, dict) or document.get("schema") != INDEX_SCHEMA:
        raise _index_error(f'the bundled profile index with "schema": "{INDEX_SCHEMA}"')
    return document


@cache
def profile_index() -> tuple[ProfileInfo, ...]:
    """Return every bundled profile, in the index's order (by kind, CPU, then kernel)."""
    entries = _index_document().get("profiles")
    if not isinstance(entries, list):
        raise _index_error('the bundled profile index with a "profiles" array')
    infos = []
    for entry in entries:
        try:
            infos.append(ProfileInfo(
                name=entry["name"], file=entry["file"], role=entry["role"],
                vendor=entry["vendor"], model=entry["model"], kernel=entry.get("kernel"),
                description=entry["description"], source=dict(entry["source"]),
            ))
        except (KeyError, TypeError) as error:
            raise _index_error(f"every profile entry complete (missing {error})") from None
    return tuple(infos)


def _by_name() -> dict[str, ProfileInfo]:
    return {info.name: info for info in profile_index()}


def match_profiles(pattern: str) -> list[ProfileInfo]:
    """Return the bundled profiles whose name matches a shell pattern (``fc-milan-*``)."""
    return [info for info in profile_index() if fnmatch.fnmatchcase(info.name, pattern)]


@cache
def load_profile(name: str) -> CpuidSet:
    """Return the bundled profile ``name`` as a CpuidSet whose source is ``profile:NAME``.

    ``meta`` keeps the facts of the data it was converted from (``format``,
    ``kernel_version`` …) and adds ``profile``, ``origin`` and ``licence``. An unknown name
    is an InputError listing the known ones.
    """
    info = _by_name().get(name)
    if info is None:
        known = ", ".join(sorted(_by_name()))
        raise InputError(
            Location(f"profile:{name}"),
            f"expected a bundled profile name (see `xstate-check profiles`), one of: {known}",
        )
    label = f"{_PACKAGE}/{_FOLDER}/{info.file}"
    cpuid = read_cpuid_json(_read_resource(info.file), label)
    meta = {
        **cpuid.meta,
        "profile": name,
        "origin": cpuid.source,
        "licence": info.source.get("licence", ""),
    }
    return cpuid.replace(source=f"profile:{name}", meta=meta, source_kind="profile")


def _origin(info: ProfileInfo) -> str:
    source = info.source
    commit = source.get("commit", "")[:12]
    return f"{source.get('repository', '?')}@{commit}:{source.get('path', '?')}"


def render_profiles(fmt: str = "text") -> str:
    """Return the bundled profiles as a table (``text``) or as the index JSON (``json``)."""
    infos = profile_index()
    if fmt == "json":
        document = {
            "schema": INDEX_SCHEMA,
            "profiles": [info.to_json() for info in infos],
            "notices": _index_document().get("notices", {}),
        }
        return json.dumps(document, indent=2) + "\n"
    if fmt != "text":
        raise InputError(Location("--format"), f"expected text or json for profiles, not {fmt}")
    width = max((len(info.name) for info in infos), default=4)
    lines = [f"{'NAME':<{width}}  ROLE   VENDOR        KERNEL  MODEL"]
    for info in infos:
        lines.append(
            f"{info.name:<{width}}  {info.role:<5}  {info.vendor:<12}  "
            f"{info.kernel or '-':<6}  {info.model}"
        )
        lines.append(f"{'':<{width}}  from {_origin(info)} ({info.source.get('licence', '?')})")
    lines.append("")
    lines.append(f"{len(infos)} profiles; use one as profile:NAME (check, decode, gate --profiles)")
    return "\n".join(lines) + "\n"
