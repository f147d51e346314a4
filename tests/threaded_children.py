"""preboot() and the oracle from many threads at once: a script ``test_isolated`` starts.

Run as ``python -W error tests/threaded_children.py THREADS [--ignore-sigchld]`` with the
project's ``src`` on PYTHONPATH. Each thread runs ``preboot()`` on this machine, ``preboot()``
on ``PretendAmx`` (whose permitted view is learnt in a child) and the oracle on KVM's own
CPUID; every answer is compared with the one the same calls gave before the threads
started. Prints one JSON object: the errors (a warning is one under ``-W error``), whether
every answer matched, the view ``PretendAmx``'s child returned, the oracle's answer, how
many times the process forked (``os.register_at_fork``: Python 3.12.1 drops its fork
warning under ``-W error`` instead of raising it, so the forks are counted directly), the
descriptors before and after, and whether a child process was left.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading

from fakehost import PretendAmx
from xstate_check.errors import XstateCheckError
from xstate_check.oracle import run_oracle, to_json
from xstate_check.preboot import PrebootError, preboot
from xstate_check.system.calls import RealSystem
from xstate_check.system.kvm import kvm_cpuid
from xstate_check.system.probe import probe
from xstate_check.system.protocol import System


def _preboot(system: System) -> object:
    """Return what preboot() says: its findings, or the error it raised."""
    try:
        return preboot(system=system).to_json()
    except PrebootError as error:
        return error.report.to_json()
    except XstateCheckError as error:
        return f"{type(error).__name__}: {error}"


def _answers() -> dict[str, object]:
    permitted = probe(PretendAmx()).kvm_cpuid_permitted
    return {
        "preboot": _preboot(RealSystem()),
        "preboot-amx": _preboot(PretendAmx()),
        "amx-view": None if permitted is None else permitted.meta.get("view"),
        "oracle": to_json(run_oracle(kvm_cpuid())),
    }


def main() -> None:
    """Run the calls once, then from THREADS threads at once, and print the summary."""
    threads = int(sys.argv[1])
    # This process and its children on one CPU: KVM_GET_SUPPORTED_CPUID under kvm-pvm
    # reports the APIC ID of the CPU it runs on (leaf 1 EBX, leaf 0xB EDX), which would
    # make two correct answers differ.
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    forks: list[int] = []
    os.register_at_fork(before=lambda: forks.append(threading.get_ident()))
    reference = _answers()
    if "--ignore-sigchld" in sys.argv:
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    before = sorted(os.listdir("/proc/self/fd"))
    answers: list[dict[str, object]] = []
    errors: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(threads)

    def work() -> None:
        try:
            start.wait()
            answer = _answers()
        except BaseException as error:  # a warning under -W error lands here too
            with lock:
                errors.append(f"{type(error).__name__}: {error}")
        else:
            with lock:
                answers.append(answer)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    after = sorted(os.listdir("/proc/self/fd"))
    try:
        os.waitpid(-1, os.WNOHANG)
        children_left = True
    except ChildProcessError:
        children_left = False
    print(json.dumps({
        "errors": errors,
        "answers": len(answers),
        "matched": all(answer == reference for answer in answers),
        "amx_view": reference["amx-view"],
        "oracle": reference["oracle"],
        "forks": len(forks),
        "fds_before": before,
        "fds_after": after,
        "children_left": children_left,
    }))


if __name__ == "__main__":
    main()
