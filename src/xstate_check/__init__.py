"""xstate-check: is a guest's CPUID/XCR0 (XSAVE) configuration consistent, before it boots?

The public API is imported lazily so that ``import xstate_check`` stays cheap on a VM's boot
path; each name below loads its module on first use.
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False  # typing stays unimported: a child process imports this package first

__version__ = "0.1.0.dev0"

__all__ = [
    "CpuidSet",
    "Finding",
    "Fix",
    "HostState",
    "InputError",
    "PrebootError",
    "ProbeError",
    "Report",
    "Template",
    "XsaveLayout",
    "XstateCheckError",
    "check",
    "check_host",
    "fix",
    "load_cpuid",
    "load_template",
    "preboot",
    "restore",
]

_LAZY = {
    "CpuidSet": "xstate_check.cpuid",
    "Finding": "xstate_check.report",
    "Fix": "xstate_check.fixes.model",
    "HostState": "xstate_check.hoststate",
    "InputError": "xstate_check.errors",
    "PrebootError": "xstate_check.preboot",
    "ProbeError": "xstate_check.errors",
    "Report": "xstate_check.report",
    "Template": "xstate_check.template",
    "XsaveLayout": "xstate_check.layout",
    "XstateCheckError": "xstate_check.errors",
    "check": "xstate_check.api",
    "check_host": "xstate_check.preboot",
    "fix": "xstate_check.fixes.api",
    "load_cpuid": "xstate_check.sources.load",
    "load_template": "xstate_check.template",
    "preboot": "xstate_check.preboot",
    "restore": "xstate_check.restore",
}

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from xstate_check.api import check
    from xstate_check.cpuid import CpuidSet
    from xstate_check.errors import InputError, ProbeError, XstateCheckError
    from xstate_check.fixes.api import fix
    from xstate_check.fixes.model import Fix
    from xstate_check.hoststate import HostState
    from xstate_check.layout import XsaveLayout
    from xstate_check.preboot import PrebootError, check_host, preboot
    from xstate_check.report import Finding, Report
    from xstate_check.restore import restore
    from xstate_check.sources.load import load_cpuid
    from xstate_check.template import Template, load_template


def lazy_attributes(package: str, modules: dict[str, str],
                    namespace: dict[str, Any]) -> Callable[[str], Any]:
    """Return a package's ``__getattr__``: each name of ``modules`` loads its module at first use.

    The value is kept in ``namespace`` (the package's globals), so a name is looked up once.
    """

    def load(name: str) -> Any:
        module = modules.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    return load


__getattr__ = lazy_attributes(__name__, _LAZY, globals())


def __dir__() -> list[str]:
    return sorted(__all__)
