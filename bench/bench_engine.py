"""How fast the rules engine evaluates: the whole catalogue, and the xcr0 family by hand.

Prints, from one run:
- the median time to evaluate the whole catalogue on one subject (target: at most 100 µs);
- the median time of the xcr0 family through the engine and of the same eight checks
  written by hand in Python, and their ratio (target: the engine within 2x);
- beside each, the fastest round, which a loaded machine disturbs least.

The subject is the Sapphire Rapids 6.1 Firecracker fingerprint from ../shared/data when it
is there (else the built-in copy of its leaves); the hand-written checks build the same
findings, and the script checks that both agree before timing them.

Usage: PYTHONPATH=src python bench/bench_engine.py [--repeat N] [--number N]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from xstate_check.cpuid import CpuidSet
from xstate_check.engine import evaluate, load_catalogue
from xstate_check.engine.examples import base_table
from xstate_check.engine.runner import evaluate_rules
from xstate_check.report import Finding
from xstate_check.subject import Subject
from xstate_check.xfeatures import format_mask

FINGERPRINT = (Path(__file__).resolve().parents[2] / "shared" / "data" / "firecracker"
               / "fingerprint_INTEL_SAPPHIRE_RAPIDS_6.1host.json")
SUPERVISOR = (1 << 8) | (0x1F << 10) | (1 << 15) | (1 << 16)
KNOWN = (1 << 20) - 1
BIT63 = 1 << 63


def load_subject() -> tuple[Subject, str]:
    """Return the benchmark subject and where its table came from."""
    if FINGERPRINT.is_file():
        from xstate_check.sources.load import load_cpuid

        return Subject("spr-6.1", load_cpuid(FINGERPRINT), role="guest"), str(FINGERPRINT)
    return Subject("spr-6.1", base_table("spr-guest"), role="guest"), "built-in spr-guest"


def make_hand_xcr0() -> Callable[[Subject], list[Finding]]:
    """Return the xcr0 family written by hand: same checks, same findings, no engine."""
    catalogue = load_catalogue()
    text = {rule.name: (rule.id, rule.severity, rule.consequence, rule.fix) for rule in catalogue}

    def finding(name: str, message: str) -> Finding:
        rule_id, severity, consequence, fix = text[name]
        return Finding(rule_id, name, severity, message, consequence, fix, None)

    def hand_xcr0(subject: Subject) -> list[Finding]:
        regs = subject.cpuid.get(0xD, 0)
        xcr0 = regs.edx << 32 | regs.eax
        found: list[Finding] = []
        if not xcr0 & 1 and (xcr0 or subject.cpuid.get(1).ecx >> 26 & 1):
            found.append(finding("x87-required", f"CPUID.(0xD,0) enumerates XCR0 "
                                 f"{format_mask(xcr0)} without x87 (bit 0)"))
        if xcr0 & 0x6 == 0x4:
            found.append(finding("avx-requires-sse", f"CPUID.(0xD,0) enumerates YMM without "
                                 f"SSE: XCR0 {format_mask(xcr0)}"))
        if xcr0 & 0x18 not in (0, 0x18):
            found.append(finding("mpx-pair", f"CPUID.(0xD,0) enumerates half of MPX "
                                 f"({format_mask(xcr0 & 0x18)}): XCR0 {format_mask(xcr0)}"))
        if xcr0 & 0xE0 and xcr0 & 0xE4 != 0xE4:
            found.append(finding("avx512-triple", f"CPUID.(0xD,0) enumerates "
                                 f"{format_mask(xcr0 & 0xE0)} of the AVX-512 state (opmask, "
                                 f"ZMM_Hi256, Hi16_ZMM need each other and YMM): XCR0 "
                                 f"{format_mask(xcr0)}"))
        if xcr0 & (SUPERVISOR | BIT63):
            found.append(finding("xcr0-supervisor-bits", f"CPUID.(0xD,0) enumerates "
                                 f"{format_mask(xcr0 & (SUPERVISOR | BIT63))} in XCR0, which "
                                 f"only IA32_XSS may hold: XCR0 {format_mask(xcr0)}"))
        if xcr0 & ~(KNOWN | BIT63) and subject.role == "guest":
            found.append(finding("xcr0-unknown-bits", f"the guest's CPUID.(0xD,0) enumerates "
                                 f"XCR0 bits no known xfeature has: "
                                 f"{format_mask(xcr0 & ~(KNOWN | BIT63))}"))
        if xcr0 >> 19 & 1 and xcr0 & 0x18:
            found.append(finding("apx-excludes-mpx", f"CPUID.(0xD,0) enumerates APX and MPX "
                                 f"together: XCR0 {format_mask(xcr0)}"))
        if xcr0 & 0x60000 not in (0, 0x60000):
            found.append(finding("amx-tile-pair", f"CPUID.(0xD,0) enumerates "
                                 f"{format_mask(xcr0 & 0x60000)} without its AMX partner: "
                                 f"XCR0 {format_mask(xcr0)}"))
        return found

    return hand_xcr0


def agree(hand: Callable[[Subject], list[Finding]], subject: Subject) -> None:
    """Check that the hand-written and engine findings are the same, on many XCR0 values."""
    family = load_catalogue().family("xcr0")
    for xcr0 in (0x602E7, 0x202E7, 0x402E7, 0x2FF, 0x2EF, 0x67, 0x5, 0x2, 0x0, 0x80207,
                 0x8021F, 0x1 | 1 << 11, 0x3 | 1 << 40, 0x3 | BIT63):
        table: CpuidSet = subject.cpuid.with_registers(0xD, 0, eax=xcr0 & 0xFFFF_FFFF,
                                                      edx=xcr0 >> 32)
        probe = Subject("probe", table.replace(source="<bench>"), role="guest")
        engine = sorted((f.rule, f.message) for f in evaluate_rules(probe, family))
        by_hand = sorted((f.rule, f.message) for f in hand(probe))
        assert engine == by_hand, (hex(xcr0), engine, by_hand)


def per_call(function: Callable[[], object], number: int) -> float:
    """Return the mean time of one call, in µs, over ``number`` calls."""
    start = time.perf_counter_ns()
    for _ in range(number):
        function()
    return (time.perf_counter_ns() - start) / number / 1000


def main() -> None:
    """Measure and print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=31, help="timed rounds (median taken)")
    parser.add_argument("--number", type=int, default=2000, help="calls per round")
    args = parser.parse_args()

    started = time.perf_counter()
    catalogue = load_catalogue()
    load_ms = (time.perf_counter() - started) * 1000
    subject, origin = load_subject()
    family = catalogue.family("xcr0")
    hand = make_hand_xcr0()
    agree(hand, subject)

    whole: list[float] = []
    engine_xcr0: list[float] = []
    hand_xcr0: list[float] = []
    for _ in range(args.repeat):  # interleaved, so that both see the same machine load
        whole.append(per_call(lambda: evaluate(subject, catalogue), args.number // 10))
        engine_xcr0.append(per_call(lambda: evaluate_rules(subject, family), args.number))
        hand_xcr0.append(per_call(lambda: hand(subject), args.number))

    full = statistics.median(whole)
    engine = statistics.median(engine_xcr0)
    by_hand = statistics.median(hand_xcr0)
    ratio = engine / by_hand
    # The fastest round is the one the rest of the machine disturbed least: on a loaded
    # machine it is the figure to compare across runs.
    best_ratio = min(engine_xcr0) / min(hand_xcr0)
    print(f"subject: {origin}")
    print(f"catalogue: {len(catalogue)} rules, first load {load_ms:.1f} ms")
    print(f"whole catalogue, one subject: median {full:.1f} µs, fastest round "
          f"{min(whole):.1f} µs  (target <= 100 µs: {'met' if full <= 100 else 'MISSED'})")
    print(f"xcr0 family ({len(family)} rules) through the engine: median {engine:.2f} µs, "
          f"fastest {min(engine_xcr0):.2f}")
    print(f"xcr0 family written by hand in Python:       median {by_hand:.2f} µs, "
          f"fastest {min(hand_xcr0):.2f}")
    print(f"engine / hand: {ratio:.2f}x  (target <= 2x: {'met' if ratio <= 2 else 'MISSED'})")
    print(f"engine / hand, fastest rounds: {best_ratio:.2f}x")


if __name__ == "__main__":
    main()
