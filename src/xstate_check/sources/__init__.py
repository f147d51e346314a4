"""Where CPUID tables and xfeature masks come from: dumps, profiles, this host, KVM."""
