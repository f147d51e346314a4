#!/usr/bin/env python3
"""The fuzz command: feed every reader mutated real inputs and count what comes back.

    python fuzz/run.py [--inputs N] [--seed S] [--reader NAME]... [--jobs J] [--atheris]
    python fuzz/run.py --extremes [--max-size BYTES] [--inputs N] ...

For each reader it prints the inputs tried, how many gave a result and how many an
InputError, the distinct errors seen, and the failures, which must all be 0: uncaught
exceptions (anything but the project's InputError), round-trip mismatches (a result that
reads back differently, i.e. a reader that lied) and hangs (an input that took longer than
``--time-limit`` seconds). Each failing input is written to fuzz-out/ with its traceback and
the command that replays it. The exit status is 0 when every failure count is 0.

``--extremes`` feeds size and shape extremes instead (long lines, many lines or entries,
deep nesting, huge numbers, long strings, up to ``--max-size`` bytes): work that grows faster
than the input and memory that grows with it. Every campaign times each input and reports
the slowest one (its seconds, bytes, shape and number) and the peak memory of the process;
with ``--budget S`` an input taking more than S seconds per 16 MiB (and at least S/4) is
counted as slow, a failure like a hang.

Inputs are numbered: input I of campaign S is always the same bytes, so
``--seed S --reader NAME --replay I`` re-runs exactly one input. Readers run in parallel
worker processes; a worker stuck in C code is killed by a watchdog, its input counted as a
hang, and the campaign goes on from the next input.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import random
import re
import resource
import signal
import sys
import sysconfig
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from multiprocessing.connection import Connection
from pathlib import Path
from types import FrameType
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for _entry in (REPO / "src", REPO):
    if str(_entry) not in sys.path:
        sys.path.insert(0, str(_entry))

import attrs  # noqa: E402

from fuzz.mutate import TOML_TOKENS, Extremes, Mutator  # noqa: E402
from fuzz.readers import (  # noqa: E402
    READERS,
    LateInputError,
    Reader,
    RoundTripError,
    for_extremes,
    variant_of,
)
from xstate_check.errors import InputError  # noqa: E402

__all__ = ["Stats", "extremes_for", "fuzz", "main", "mutator_for", "replay"]

DEFAULT_DATA = REPO.parent / "shared" / "data"
DEFAULT_OUT = REPO / "fuzz-out"
#: Memory one input may map beyond what the process already has; an input that needs more
#: is a failure (MemoryError), and cannot exhaust the machine.
INPUT_MEMORY = 3 << 30
CHUNK = 250
REPRODUCERS_PER_KIND = 3

_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"|`[^`]*`|«[^»]*»")
_NUMBER = re.compile(r"\b0[xXbB][0-9A-Fa-f_]+\b|\b\d+\b")


class Hang(BaseException):
    """Raised by the per-input alarm when one input takes longer than the time limit."""


def error_shape(expected: str) -> str:
    """Return an error text with quoted excerpts and numbers blanked, to count kinds."""
    return _NUMBER.sub("N", _QUOTED.sub("'…'", expected))


@attrs.define
class Stats:
    """What one reader gave back over a campaign."""

    reader: str
    tried: int = 0
    results: int = 0
    input_errors: int = 0
    unlocated: int = 0
    uncaught: int = 0
    mismatches: int = 0
    hangs: int = 0
    slow: int = 0
    seconds: float = 0.0
    #: The slowest input: seconds, bytes, label (shape) and number.
    slowest: tuple[float, int, str, int] = (0.0, 0, "", -1)
    #: The process's peak resident memory (bytes) and the input that raised it most, and
    #: its resident memory when the campaign began (the peak is reset then, where Linux
    #: allows: /proc/self/clear_refs).
    peak_memory: int = 0
    peak_input: int = -1
    base_memory: int = 0
    labels: Counter[str] = attrs.field(factory=Counter)
    shapes: Counter[str] = attrs.field(factory=Counter)
    texts: set[str] = attrs.field(factory=set)
    failures: Counter[str] = attrs.field(factory=Counter)
    reproducers: list[str] = attrs.field(factory=list)

    @property
    def failed(self) -> int:
        """Return the number of inputs that crashed, lied, hung or were slow (must be 0)."""
        return self.uncaught + self.mismatches + self.hangs + self.slow

    def describe(self) -> str:
        """Return the failures in a few lines: counts by kind, then the reproducers."""
        lines = [f"{self.reader}: {self.failed} failing inputs of {self.tried}"]
        lines += [f"  {count} x {kind}" for kind, count in self.failures.most_common()]
        lines += [f"  reproducer: {path}" for path in self.reproducers]
        return "\n".join(lines)

    def merge(self, other: Stats) -> None:
        """Add another part of the same reader's campaign to this one."""
        for name in ("tried", "results", "input_errors", "unlocated", "uncaught",
                     "mismatches", "hangs", "slow", "seconds"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.slowest = max(self.slowest, other.slowest)
        if other.peak_memory > self.peak_memory:
            self.peak_memory, self.peak_input = other.peak_memory, other.peak_input
        self.base_memory = min(self.base_memory or other.base_memory, other.base_memory)
        self.labels.update(other.labels)
        self.shapes.update(other.shapes)
        self.texts |= other.texts
        self.failures.update(other.failures)
        self.reproducers += other.reproducers


def mutator_for(reader: Reader, data_dir: Path) -> Mutator:
    """Return the mutator of a reader, seeded from the real files under ``data_dir``."""
    return Mutator(reader.seeds(data_dir), tokens=reader.tokens, structure=reader.structure)


def extremes_for(reader: Reader, data_dir: Path, max_size: int) -> Extremes:
    """Return the extremes generator of a reader, seeded from the real files under ``data_dir``."""
    structure = "toml" if reader.tokens is TOML_TOKENS else reader.structure
    return Extremes(reader.seeds(data_dir), structure=structure, max_size=max_size)


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    raise Hang


@contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


_LIBRARY = (sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["purelib"])


@contextmanager
def _memory_limit(extra: int) -> Iterator[None]:
    """Cap the address space at its current size plus ``extra`` bytes, then restore it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm", encoding="ascii") as handle:
        current = int(handle.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    limit = current + extra if hard == resource.RLIM_INFINITY else min(hard, current + extra)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _signature(error: BaseException) -> str:
    """Return 'Type at file:line' of the innermost frame outside Python's library."""
    where = "?"
    for frame in traceback.extract_tb(error.__traceback__):
        if not frame.filename.startswith(_LIBRARY) or "xstate_check" in frame.filename:
            where = f"{Path(frame.filename).name}:{frame.lineno}"
    return f"{type(error).__name__} at {where}"


_saved: Counter[tuple[str, str]] = Counter()


def _save(out_dir: Path | None, reader: Reader, *, seed: int, index: int, data: bytes,
          kind: str, report: str, extremes: bool = False) -> list[str]:
    """Write a failing input and its log to out_dir (a few per kind); return what was written."""
    _saved[reader.name, kind] += 1
    if out_dir is None or _saved[reader.name, kind] > REPRODUCERS_PER_KIND:
        return []
    folder = out_dir / reader.name
    folder.mkdir(parents=True, exist_ok=True)
    stem = folder / f"seed{seed}-input{index}"
    stem.with_suffix(reader.suffix).write_bytes(data)
    replay = (f"python fuzz/run.py --reader {reader.name} --seed {seed} --replay {index}"
              + (" --extremes (with the campaign's --max-size)" if extremes else ""))
    stem.with_suffix(".log").write_text(f"{kind}\n{replay}\n\n{report}", encoding="utf-8")
    return [str(stem.with_suffix(reader.suffix))]


class SlowInputError(Exception):
    """An input that took longer than the campaign's budget for its size."""


def _peak_memory(field: str = "VmHWM:") -> int:
    """Return this process's peak resident memory in bytes (VmHWM: its own, not a parent's)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    return 0


def _reset_peak_memory() -> int:
    """Reset the peak resident memory to the current one, where Linux allows; return it."""
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w",
                                            encoding="ascii") as clear:
        clear.write("5")
    return _peak_memory("VmRSS:")


def try_one(reader: Reader, path: str, data: bytes, *, variant: int, stats: Stats,
            time_limit: float, index: int = -1, label: str = "",
            budget: float | None = None) -> tuple[str, BaseException] | None:
    """Run one input through a reader, count the outcome; return (kind, failure) if any.

    The input is timed (the slowest is kept in ``stats``) and the process's peak memory
    read after it; with a ``budget`` (seconds per 16 MiB), a slower input is a failure.
    """
    stats.tried += 1
    stats.labels[label] += 1
    with open(path, "wb") as handle:
        handle.write(data)
    outcome: BaseException | None = None
    began = time.perf_counter()
    try:
        with _time_limit(time_limit):
            reader.run(path, data, variant)
    except KeyboardInterrupt:
        raise
    except BaseException as error:  # classified below
        outcome = error
    took = time.perf_counter() - began
    stats.slowest = max(stats.slowest, (took, len(data), label, index))
    peak = _peak_memory()
    if peak > stats.peak_memory:
        stats.peak_memory, stats.peak_input = peak, index
    kind, failure = _classify(outcome, path, stats, time_limit)
    if failure is None and budget is not None and took > max(
        budget / 4, budget * len(data) / (16 << 20)
    ):
        stats.slow += 1
        kind = f"slow: over {budget} s per 16 MiB ({label})"
        failure = SlowInputError(f"{took:.2f} s for {len(data)} bytes ({label})")
    if failure is None:
        return None
    stats.failures[kind] += 1
    return kind, failure


def _classify(outcome: BaseException | None, path: str, stats: Stats,
              time_limit: float) -> tuple[str, BaseException | None]:
    """Count one outcome: a result, an InputError, or a failure (kind, exception)."""
    if outcome is None:
        stats.results += 1
        return "", None
    if isinstance(outcome, InputError):
        stats.input_errors += 1
        stats.shapes[error_shape(outcome.expected)] += 1
        if len(stats.texts) < 100_000:
            stats.texts.add(outcome.expected)
        if outcome.location.path != path or not outcome.location.line or not outcome.expected:
            stats.unlocated += 1
            stats.shapes[f"(without file and line) {error_shape(outcome.expected)}"] += 1
        return "", None
    if isinstance(outcome, Hang):
        stats.hangs += 1
        return f"hang over {time_limit} s", outcome
    if isinstance(outcome, RoundTripError):
        stats.mismatches += 1
        return f"mismatch: {outcome}", outcome
    stats.uncaught += 1
    if isinstance(outcome, LateInputError):
        return error_shape(str(outcome)), outcome
    return _signature(outcome), outcome


def fuzz(reader: Reader, inputs: int, *, seed: int = 0, data_dir: Path = DEFAULT_DATA,
         start: int = 0, skip: frozenset[int] = frozenset(), time_limit: float = 10.0,
         out_dir: Path | None = None, mutator: Mutator | Extremes | None = None,
         progress: Any = None, extremes: bool = False, max_size: int = 1 << 20,
         budget: float | None = None) -> Stats:
    """Run inputs ``start`` … ``inputs - 1`` of campaign ``seed`` through one reader.

    ``extremes`` draws size and shape extremes of at most ``max_size`` bytes instead of
    mutations; ``budget`` (seconds per 16 MiB) makes a slower input a failure.
    """
    generator = mutator or (extremes_for(reader, data_dir, max_size) if extremes
                            else mutator_for(reader, data_dir))
    if isinstance(generator, Extremes):
        reader = for_extremes(reader)
    stats = Stats(reader.name)
    stats.base_memory = _reset_peak_memory()
    began = time.perf_counter()
    with (tempfile.TemporaryDirectory(prefix="xstate-fuzz-", dir=_scratch()) as scratch,
          _memory_limit(INPUT_MEMORY)):
        for index in range(start, inputs):
            if index in skip:
                continue
            if progress is not None:
                progress.value = index
            data, label, variant = _make(generator, seed, index)
            path = os.path.join(scratch, reader.file_name(data))
            failure = try_one(reader, path, data, variant=variant, stats=stats,
                              time_limit=time_limit, index=index, label=label, budget=budget)
            if failure is not None:
                kind, error = failure
                stats.reproducers += _save(
                    out_dir, reader, seed=seed, index=index, data=data, kind=kind,
                    report="".join(traceback.format_exception(error)),
                    extremes=isinstance(generator, Extremes),
                )
    stats.seconds = time.perf_counter() - began
    return stats


def _make(generator: Mutator | Extremes, seed: int, index: int) -> tuple[bytes, str, int]:
    """Return input ``index`` of campaign ``seed``: its bytes, label and variant number."""
    rng = generator.rng(seed, index)
    if isinstance(generator, Extremes):
        data, label = generator.make(rng)
        return data, label, variant_of(rng)
    data = generator.mutate(rng)
    return data, "mutated", variant_of(rng)


def _scratch() -> str | None:
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


def replay(reader: Reader, *, seed: int, index: int, data_dir: Path, file: Path | None,
           extremes: bool = False, max_size: int = 1 << 20) -> int:
    """Run one input (numbered, or from a file) and show its outcome with any traceback."""
    if file is not None:
        data, variant = file.read_bytes(), 0
    else:
        generator = (extremes_for(reader, data_dir, max_size) if extremes
                     else mutator_for(reader, data_dir))
        data, _, variant = _make(generator, seed, index)
    if extremes:
        reader = for_extremes(reader)
    with tempfile.TemporaryDirectory(prefix="xstate-fuzz-") as scratch:
        path = os.path.join(scratch, reader.file_name(data))
        Path(path).write_bytes(data)
        print(f"{len(data)} bytes, variant {variant}, in {path}")
        try:
            reader.run(path, data, variant)
        except InputError as error:
            print(f"InputError: {error.render()}")
            return 0
        except Exception:
            traceback.print_exc()
            return 1
    print("a result")
    return 0


# ----------------------------------------------------------------------------- workers


def _worker(name: str, settings: dict[str, Any], conn: Connection, progress: Any) -> None:
    """Run one reader's inputs from ``settings["start"]`` on, sending each chunk's Stats."""
    inputs, seed, start, skip = (settings[key] for key in ("inputs", "seed", "start", "skip"))
    out_dir = Path(settings["out"])
    reader = READERS[name]
    generator: Mutator | Extremes = (
        extremes_for(reader, Path(settings["data"]), settings["max_size"])
        if settings["extremes"] else mutator_for(reader, Path(settings["data"]))
    )
    position = start
    while position < inputs:
        stop = min(inputs, position + CHUNK)
        part = fuzz(reader, stop, seed=seed, start=position, skip=skip,
                    time_limit=settings["time_limit"], out_dir=out_dir, mutator=generator,
                    progress=progress, budget=settings["budget"])
        conn.send((stop, part))
        position = stop
    conn.close()


@attrs.define
class _Campaign:
    """One reader's campaign across (re)started worker processes."""

    reader: Reader
    total: Stats
    committed: int = 0
    skip: set[int] = attrs.field(factory=set)
    process: Any = None
    conn: Connection | None = None
    progress: Any = None
    last_index: int = -1
    last_change: float = 0.0
    done: bool = False


def _start(context: Any, campaign: _Campaign, args: argparse.Namespace) -> None:
    receive, send = context.Pipe(duplex=False)
    campaign.progress = context.Value("q", campaign.committed)
    campaign.process = context.Process(
        target=_worker,
        args=(campaign.reader.name,
              {"inputs": args.inputs, "seed": args.seed, "data": str(args.data),
               "time_limit": args.time_limit, "out": str(args.out),
               "start": campaign.committed, "skip": frozenset(campaign.skip),
               "extremes": args.extremes, "max_size": args.max_size, "budget": args.budget},
              send, campaign.progress),
        daemon=True,
    )
    campaign.process.start()
    send.close()
    campaign.conn = receive
    campaign.last_index, campaign.last_change = -1, time.monotonic()


def _poll(campaign: _Campaign, args: argparse.Namespace, watchdog: float) -> bool:
    """Collect a worker's finished chunks; kill it when stuck. Return True when it stopped."""
    assert campaign.conn is not None
    try:
        while campaign.conn.poll():
            stop, part = campaign.conn.recv()
            campaign.total.merge(part)
            campaign.committed = stop
    except EOFError:
        pass
    if campaign.committed >= args.inputs:
        campaign.process.join()
        return True
    index = campaign.progress.value
    now = time.monotonic()
    if index != campaign.last_index:
        campaign.last_index, campaign.last_change = index, now
    alive = campaign.process.is_alive()
    if alive and now - campaign.last_change < watchdog:
        return False
    # Stuck in C code past the alarm, or killed (out of memory, a signal): count it, go on.
    if alive:
        campaign.process.kill()
    campaign.process.join()
    if campaign.conn.poll():
        return False  # a last chunk arrived while it ended; read it on the next poll
    what = ("hang (killed by the watchdog)" if alive
            else f"worker died (exit {campaign.process.exitcode})")
    lost = Stats(campaign.reader.name, tried=1)
    if alive:
        lost.hangs = 1
    else:
        lost.uncaught = 1
    lost.failures[what] += 1
    generator = (extremes_for(campaign.reader, args.data, args.max_size) if args.extremes
                 else mutator_for(campaign.reader, args.data))
    data, _, _ = _make(generator, args.seed, index)
    lost.reproducers += _save(args.out, campaign.reader, seed=args.seed, index=index, data=data,
                              kind=what, report=what + "\n", extremes=args.extremes)
    campaign.total.merge(lost)
    campaign.skip.add(index)
    return True


def _run_parallel(readers: Sequence[Reader], args: argparse.Namespace) -> list[Stats]:
    context = multiprocessing.get_context("fork")
    campaigns = [_Campaign(reader, Stats(reader.name)) for reader in readers]
    waiting = list(campaigns)
    running: list[_Campaign] = []
    watchdog = max(30.0, 3 * args.time_limit)
    while waiting or running:
        while waiting and len(running) < args.jobs:
            campaign = waiting.pop(0)
            _start(context, campaign, args)
            running.append(campaign)
        time.sleep(0.2)
        for campaign in list(running):
            if _poll(campaign, args, watchdog):
                running.remove(campaign)
                if campaign.committed < args.inputs and not args.stop_early:
                    # Restart after the input that hung or killed the worker.
                    waiting.insert(0, campaign)
                else:
                    campaign.done = True
                    print(f"  {campaign.reader.name}: {campaign.total.tried} inputs, "
                          f"{campaign.total.failed} failures, {campaign.total.seconds:.0f} s",
                          file=sys.stderr, flush=True)
    return [campaign.total for campaign in campaigns]


# ----------------------------------------------------------------------------- atheris


def _run_atheris(reader: Reader, args: argparse.Namespace) -> Stats:
    """Run one reader under atheris (coverage-guided), with this mutator as its custom one."""
    import atheris

    atheris.instrument_all()  # coverage of every function loaded: xstate_check included
    mutator = mutator_for(reader, args.data)
    stats = Stats(reader.name)
    scratch = tempfile.mkdtemp(prefix="xstate-fuzz-", dir=_scratch())
    corpus = Path(scratch) / "corpus"
    corpus.mkdir()
    for number, seed_bytes in enumerate(mutator.seeds):
        (corpus / f"seed{number}").write_bytes(seed_bytes)
    began = time.perf_counter()

    def test_one_input(data: bytes) -> None:
        variant = int.from_bytes(data[:2].ljust(2, b"\0"), "little")
        path = os.path.join(scratch, reader.file_name(data))
        failure = try_one(reader, path, data, variant=variant, stats=stats,
                          time_limit=args.time_limit)
        if failure is not None:
            kind, error = failure
            stats.reproducers += _save(
                args.out, reader, seed=args.seed, index=stats.tried, data=data, kind=kind,
                report="".join(traceback.format_exception(error)),
            )
        if stats.tried >= args.inputs:
            # libFuzzer ends the process without Python's exit handlers: report now.
            stats.seconds = time.perf_counter() - began
            _print_table([stats], args)
            sys.stdout.flush()
            os._exit(1 if stats.failed else 0)

    def custom_mutator(data: bytes, max_size: int, seed: int) -> bytes:
        rng = random.Random(seed)
        if rng.random() < 0.5:
            return bytes(atheris.Mutate(data, max_size))
        return mutator.mutate(rng, data)[:max_size]

    argv = [sys.argv[0], "-max_len=1048576", f"-seed={args.seed + 1}",
            f"-timeout={int(args.time_limit) + 1}", "-rss_limit_mb=3072", str(corpus)]
    atheris.Setup(argv, test_one_input, custom_mutator=custom_mutator)
    atheris.Fuzz()
    return stats  # not reached: atheris exits the process


# ----------------------------------------------------------------------------- output


def _print_table(results: Sequence[Stats], args: argparse.Namespace) -> None:
    header = ("reader", "inputs", "results", "input errors", "distinct errors",
              "distinct texts", "no line", "uncaught", "mismatches", "hangs", "slow", "seconds",
              "slowest input", "peak memory")
    rows = [header]
    for stats in results:
        took, size, label, index = stats.slowest
        rows.append((stats.reader, f"{stats.tried:,}", f"{stats.results:,}",
                     f"{stats.input_errors:,}", f"{len(stats.shapes):,}", f"{len(stats.texts):,}",
                     f"{stats.unlocated:,}", f"{stats.uncaught:,}", f"{stats.mismatches:,}",
                     f"{stats.hangs:,}", f"{stats.slow:,}", f"{stats.seconds:,.0f}",
                     f"{took:.2f} s, {size:,} B, {label or '?'} #{index}",
                     f"{stats.peak_memory / 1e6:,.0f} MB (#{stats.peak_input})"))
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    for number, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [cell.rjust(width) for cell, width in
                                              zip(row[1:], widths[1:], strict=True)]
        print(" | ".join(cells))
        if number == 0:
            print("-+-".join("-" * width for width in widths))
    for stats in results:
        for kind, count in stats.failures.most_common():
            print(f"FAILURE {stats.reader}: {count} x {kind}")
        for path in stats.reproducers:
            print(f"  reproducer: {path}")
        if args.errors:
            print(f"\n{stats.reader}: distinct errors (quoted text and numbers blanked)")
            for shape, count in sorted(stats.shapes.items()):
                print(f"  {count:8,}  {shape}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python fuzz/run.py",
        description="Fuzz every xstate-check reader with mutated real inputs.",
    )
    parser.add_argument("--inputs", type=int, default=100_000, metavar="N",
                        help="inputs per reader (default: 100000)")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="campaign seed")
    parser.add_argument("--reader", action="append", choices=sorted(READERS), metavar="NAME",
                        help=f"a reader to fuzz (repeatable; default all: {', '.join(READERS)})")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, metavar="J",
                        help="readers fuzzed at once, one process each (default: CPU count)")
    parser.add_argument("--time-limit", type=float, default=10.0, metavar="SECONDS",
                        help="one input taking longer is a hang (default: 10)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, metavar="DIR",
                        help="the real data the seeds come from (default: ../shared/data)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, metavar="DIR",
                        help="where failing inputs go (default: fuzz-out/)")
    parser.add_argument("--errors", action="store_true", help="list the distinct errors seen")
    parser.add_argument("--stop-early", action="store_true",
                        help="stop a reader at its first hang instead of going on")
    parser.add_argument("--atheris", action="store_true",
                        help="coverage-guided: run the reader under atheris (one reader)")
    parser.add_argument("--extremes", action="store_true",
                        help="size and shape extremes (long lines, many entries, deep nesting, "
                        "huge numbers) instead of mutations of real files")
    parser.add_argument("--max-size", type=int, default=4 << 20, metavar="BYTES",
                        help="the largest extreme input, drawn log-uniformly (default: 4 MiB)")
    parser.add_argument("--budget", type=float, default=None, metavar="SECONDS",
                        help="an input slower than SECONDS per 16 MiB (at least SECONDS/4) "
                        "is a failure (default: none; hangs only)")
    parser.add_argument("--replay", type=int, metavar="I", help="run input I alone and show it")
    parser.add_argument("--replay-file", type=Path, metavar="FILE",
                        help="run one saved input file alone and show it")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the fuzz command; exit 0 when no reader crashed, lied or hung."""
    args = _parser().parse_args(argv)
    if not (args.data / "cpuid-dumps").is_dir():
        print(f"fuzz: no real data at {args.data} (give --data DIR)", file=sys.stderr)
        return 2
    names = args.reader or list(READERS)
    readers = [READERS[name] for name in names]
    if args.replay is not None or args.replay_file is not None:
        if len(readers) != 1:
            print("fuzz: --replay needs one --reader", file=sys.stderr)
            return 2
        return replay(readers[0], seed=args.seed, index=args.replay or 0, data_dir=args.data,
                      file=args.replay_file, extremes=args.extremes, max_size=args.max_size)
    if args.atheris:
        if len(readers) != 1:
            print("fuzz: --atheris runs one --reader at a time", file=sys.stderr)
            return 2
        _run_atheris(readers[0], args)
        return 0
    began = time.perf_counter()
    print(f"fuzzing {', '.join(names)}: {args.inputs:,} inputs each, seed {args.seed}, "
          f"{args.jobs} jobs", file=sys.stderr, flush=True)
    results = _run_parallel(readers, args)
    print(f"\n$ python fuzz/run.py --inputs {args.inputs} --seed {args.seed}"
          + (f" --extremes --max-size {args.max_size}" if args.extremes else "")
          + (f" --budget {args.budget}" if args.budget is not None else "")
          + "".join(f" --reader {name}" for name in args.reader or ()))
    _print_table(results, args)
    print(f"\n{sum(s.tried for s in results):,} inputs in "
          f"{time.perf_counter() - began:,.0f} s; failures: {sum(s.failed for s in results)}")
    return 1 if any(stats.failed for stats in results) else 0


if __name__ == "__main__":
    sys.exit(main())
