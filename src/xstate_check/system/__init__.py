"""Where ``HostState`` comes from: one System protocol, arch_prctl, XGETBV, /dev/kvm, children.

- ``abi``: every number the kernel's ABI fixes (system call, arch_prctl options, KVM
  ioctls, capabilities, structure layouts), each with the header it comes from.
- ``calls``: the ``System`` protocol and ``RealSystem``, this machine's instructions,
  system calls and ioctls; the arch_prctl helpers and what their errnos mean.
- ``kvm``: the one reader of /dev/kvm's facts, used by the probe and the oracle.
- ``isolated``: ``run_isolated``, a fresh interpreter that runs one task with a time limit.
- ``probe``: the host probe, ``probe() -> HostState``.

The modules the child process imports (``abi``, ``calls``, ``kvm``, ``isolated``) use the
standard library only, so a child starts in a few milliseconds.
"""
