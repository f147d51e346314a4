"""This host and its KVM as CPUID sources (``check host``, ``check kvm``).

The probe lives in the system layer (``system.probe``); this module keeps its import path.
"""

from __future__ import annotations

from xstate_check.system.probe import host_cpuid, kvm_cpuid, permitted_kvm_cpuid, probe

__all__ = ["host_cpuid", "kvm_cpuid", "permitted_kvm_cpuid", "probe"]
