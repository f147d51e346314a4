"""Where ``HostState`` comes from: one System protocol, arch_prctl, XGETBV, /dev/kvm, children.

- ``protocol``: the ``System`` protocol, what the probe and the oracle ask of a machine.
- ``abi``: every number the kernel's ABI fixes (system call, arch_prctl options, KVM
  ioctls, capabilities, structure layouts), each with the header it comes from.
- ``calls``: ``RealSystem``, this machine's instructions, system calls and ioctls; the
  arch_prctl helpers and what their errnos mean.
- ``kvm``: the one reader of /dev/kvm's facts, used by the probe and the oracle.
- ``isolated``: ``run_isolated``, a fresh interpreter that runs one task with a time limit.
- ``vcpu``: the oracle's child side, a throwaway VM whose vCPU runs the guest's XSETBV.
- ``probe``: the host probe, ``probe() -> HostState``.

What a child imports (``abi``, ``calls``, ``kvm``, ``isolated``, ``vcpu``) uses the standard
library only, not even ``typing``, so a child costs little more than an interpreter start.
"""
