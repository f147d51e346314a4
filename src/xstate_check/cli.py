"""The command line: ``xstate-check COMMAND …`` (also ``python -m xstate_check``).

Exit codes: 0 no error findings (nor warnings with ``--strict``); 1 error findings;
2 bad input or usage; 3 the environment cannot be probed; 4 an internal error (a bug).
Nothing below this module prints or exits.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import IO, TYPE_CHECKING, Any, NoReturn, TextIO, cast

from xstate_check.classcode import compiled_once

with compiled_once():  # Location's attrs methods from the cache, as on the pre-boot path
    from xstate_check.errors import InputError, Location, XstateCheckError, printable

if TYPE_CHECKING:
    from xstate_check.cpuid import CpuidSet

__all__ = ["main", "run"]

EXIT_OK, EXIT_FINDINGS, EXIT_INPUT, EXIT_PROBE, EXIT_INTERNAL = 0, 1, 2, 3, 4
#: The commands, so that a run builds the argparse subparser of its own command alone.
_COMMANDS = frozenset({"host", "check", "restore", "gate", "decode", "convert", "rules",
                       "explain", "facts", "profiles", "oracle"})


class _UsageError(Exception):
    """A command line argparse refused."""


class _Formatter(argparse.HelpFormatter):
    """argparse's help layout, told the terminal's width (as ``shutil.get_terminal_size``
    finds it) so that argparse does not import shutil, and its archive modules, on every
    start: ``add_argument`` makes a formatter."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: int | None = None) -> None:
        if width is None:
            width = _columns() - 2
        super().__init__(prog, indent_increment, max_help_position, width)


def _columns() -> int:
    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that raises instead of exiting, so main() owns the exit code."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise _UsageError(f"{self.prog}: {message}")


def _use_color(stream: TextIO | None, choice: str) -> bool:
    """Return whether to colour: an explicit --color wins, then NO_COLOR, then FORCE_COLOR.

    ``auto`` colours standard output (``stream``; None for an --output file, never coloured
    unless asked) on a terminal; NO_COLOR (no-color.org) and FORCE_COLOR (force-color.org)
    count when set to a non-empty value.
    """
    if choice != "auto":
        return choice == "always"
    if stream is None:
        return False
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    return stream.isatty()


def _emit(args: argparse.Namespace, text: str) -> None:
    if not text.endswith("\n"):
        text += "\n"
    out = args.output
    if out and out != "-":
        try:
            with open(out, "w", encoding="utf-8") as handle:
                handle.write(text)
        except OSError as error:
            raise InputError(
                Location(out), f"expected a writable output file; {error.strerror or error}"
            ) from None
    else:
        with _output(args) as stream:
            stream.write(text)


def _discard_stdout() -> None:
    """Point stdout at /dev/null, so that the exit's flush does not fail a second time."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _settings(args: argparse.Namespace) -> Any:
    """Return the run's Settings: the configuration file's, with the command line's on top."""
    from xstate_check.config import (
        Settings,
        check_selectors,
        find_config,
        load_config,
        parse_selectors,
        parse_severity,
    )
    from xstate_check.errors import Location

    cached = getattr(args, "_settings", None)
    if cached is not None:
        return cached
    path = args.config or find_config()
    settings = load_config(path) if path else Settings()
    select = parse_selectors(args.select or ())
    ignore = parse_selectors(args.ignore or ())
    severity = parse_severity(args.severity or (), Location("--severity"))
    check_selectors(select, Location("--select"))
    check_selectors(ignore, Location("--ignore"))
    check_selectors((s for s, _ in severity), Location("--severity"))
    settings = settings.merged(
        select=select,
        # The command line's ignores and overrides add to the file's (ruff's extend-ignore).
        ignore=settings.ignore + ignore,
        severity=settings.severity + severity,
        min_severity=args.min_severity,
        strict=True if args.strict else None,
    )
    args._settings = settings
    return settings


def _load_source(args: argparse.Namespace) -> CpuidSet:
    """Return the CPUID table of ``args.source``; ``-`` reads stdin, bounded like a file."""
    from xstate_check.cpuid import STDIN_SOURCE
    from xstate_check.sources.load import load_cpuid, read_cpuid_text
    from xstate_check.textfile import MAX_INPUT_BYTES, decode_text

    if args.source != "-":
        return load_cpuid(args.source, cpu=args.cpu)
    name = STDIN_SOURCE
    data = sys.stdin.buffer.read(MAX_INPUT_BYTES + 1) if sys.stdin is not None else b""
    if len(data) > MAX_INPUT_BYTES:
        raise InputError(
            Location(name), f"expected at most {MAX_INPUT_BYTES} bytes (16 MiB); this is larger"
        )
    text = decode_text(data, name)
    if not text.strip():
        raise InputError(Location(name, 1), "expected a CPUID dump; found empty input")
    return read_cpuid_text(text, name, cpu=args.cpu).replace(source_kind="stdin")


def _report_exit(args: argparse.Namespace, report: object, epilogue: str | None = None) -> int:
    from xstate_check.config import apply_settings
    from xstate_check.formats import render, render_statistics
    from xstate_check.report import Report

    assert isinstance(report, Report)
    settings = _settings(args)
    report = apply_settings(report, settings)
    assert isinstance(report, Report)
    to_file = bool(args.output and args.output != "-")
    color = _use_color(None if to_file else sys.stdout, args.color)
    if args.statistics:
        text = render_statistics(report)
    else:
        text = render(report, args.format, color=color, quiet=args.quiet,
                      min_severity=settings.min_severity, strict=settings.strict,
                      fix_hint=not getattr(args, "fix", False))
    if epilogue and args.format == "text" and not args.statistics:
        text = text.rstrip("\n") + "\n" + epilogue
    elif epilogue and sys.stderr is not None:
        sys.stderr.write(epilogue + "\n")
    _emit(args, text)
    code = report.exit_code(strict=settings.strict)
    return 0 if args.exit_zero else code


def _fixing(args: argparse.Namespace, paths: Sequence[str],
            make: Callable[[str, bool], Any]) -> int | str:
    """Run ``--diff`` (the exit code) or ``--fix`` (the summary line for the report)."""
    from xstate_check.fixes.command import run_fixes

    settings = _settings(args)
    chunks: list[str] = []
    summary = run_fixes(paths, make, diff=args.diff, unsafe=args.unsafe_fixes,
                        strict=settings.strict, out=chunks.append)
    if not args.diff:
        return "" if args.quiet else str(summary.fixed_line())
    with _output(args) as out:
        out.write("".join(chunks))
    if sys.stderr is not None:
        sys.stderr.write(summary.diff_line() + "\n")
    return 1 if summary.changed() and not args.exit_zero else 0


def _fix_options(args: argparse.Namespace) -> Any:
    """Return what a fix needs of the run's settings: strict, and the rule selection."""
    from xstate_check.config import subject_filter

    settings = _settings(args)
    return {"strict": settings.strict, "keep": subject_filter(settings)}


def _cmd_check(args: argparse.Namespace) -> int:
    from xstate_check.api import build_subject
    from xstate_check.engine import evaluate
    from xstate_check.report import Report

    source = _load_source(args)
    epilogue = None
    if args.fix or args.diff:
        from xstate_check.fixes.api import fix_on_source

        if not args.template:
            raise _UsageError("xstate-check check: --fix and --diff need --template T (the "
                              "template to fix)")
        done = _fixing(args, [args.template], lambda path, unsafe: fix_on_source(
            path, source, unsafe=unsafe, **_fix_options(args)))
        if isinstance(done, int):
            return done
        epilogue = done
    subject = build_subject(source, args.template)
    report = Report((evaluate(subject),))
    if args.template and _shows_fixes(args):
        report = _with_fixes(args, report, args.template, source)
    return _report_exit(args, report, epilogue)


def _cmd_restore(args: argparse.Namespace) -> int:
    from xstate_check.restore import restore

    return _report_exit(args, restore(_load_source(args), args.on, args.template))


def _cmd_host(args: argparse.Namespace) -> int:
    from xstate_check.preboot import check_host

    report = check_host(
        args.template,
        vmm_requests_permission=args.vmm_requests_permission,
        request_permission=args.request_permission,
        kvm=args.kvm,
    )
    return _report_exit(args, report)


def _cmd_gate(args: argparse.Namespace) -> int:
    from xstate_check.gate import GateRun, matrix_of_table

    if args.fail_on == "new" and not args.changed_since:
        raise _UsageError(
            "xstate-check gate: --fail-on new needs --changed-since REV (the revision whose "
            "findings are not new)"
        )
    settings = _settings(args)
    matrix = args.matrix or settings.matrix
    if matrix is None and settings.inline_matrix is not None:
        matrix = matrix_of_table(settings.inline_matrix, str(settings.path))
    profiles, templates = _split_profiles(
        args.profiles, getattr(args, "profiles_tail", []), bool(args.templates or matrix)
    )
    run = GateRun(
        [*args.templates, *templates],
        profiles=profiles,
        matrix=matrix,
        changed_since=args.changed_since,
        fail_on=args.fail_on,
        fixes=_shows_fixes(args) and settings,
    )
    epilogue = None
    if args.fix or args.diff:
        from xstate_check.fixes.api import fix_for_gate

        done = _fixing(args, run.paths, lambda path, unsafe: fix_for_gate(
            run, path, unsafe=unsafe, **_fix_options(args)))
        if isinstance(done, int):
            return done
        epilogue = done
    encoder = None
    if args.format == "json" and not args.statistics:
        from xstate_check.formats.stream import JsonWriter
        from xstate_check.gate import ChunkEncoder

        # Workers send their subjects encoded: the parent only writes them.
        encoder = ChunkEncoder(JsonWriter.encode, JsonWriter.encode_skipped, settings)
    return _stream_exit(args, "gate", run.items(args.jobs, encoder), epilogue)


def _shows_fixes(args: argparse.Namespace) -> bool:
    """Return whether the output shows fixes (every format but JUnit and --statistics)."""
    return not args.statistics and args.format != "junit"


def _with_fixes(args: argparse.Namespace, report: Any, template: str, source: CpuidSet) -> Any:
    """Return a check's report with each finding carrying the ways the template's fix
    removes it (as ``--fix`` computes it, and ``--fix --unsafe-fixes`` where needed)."""
    from xstate_check.gate import needs_fix
    from xstate_check.report import Report, attach_fixes

    if not needs_fix(report.subjects, _settings(args)):
        return report
    from xstate_check.fixes.api import fix_on_source

    safe = fix_on_source(template, source, **_fix_options(args))
    unsafe = None
    if safe.needs_unsafe():
        unsafe = fix_on_source(template, source, unsafe=True, **_fix_options(args))
    return Report(attach_fixes(report.subjects, safe, unsafe))


@contextlib.contextmanager
def _output(args: argparse.Namespace) -> Iterator[IO[str]]:
    """Yield where the output goes: ``--output FILE`` (replaced whole, only on success) or
    standard output (written as it comes)."""
    out = args.output
    if not out or out == "-":
        if sys.stdout is None:
            raise InputError(Location("<stdout>"), "expected an open standard output")
        try:
            yield sys.stdout
            sys.stdout.flush()
        except BrokenPipeError:
            raise
        except OSError as error:
            _discard_stdout()
            raise InputError(
                Location("<stdout>"), f"expected to write the output; {error.strerror or error}"
            ) from None
        return
    import stat
    import tempfile

    try:
        # A device, FIFO or socket (-o /dev/full, /dev/stderr) is written, never replaced;
        # so is a link, which must keep pointing where it did.
        special = os.path.islink(out) or not stat.S_ISREG(os.stat(out).st_mode)
    except OSError:
        special = False
    try:
        if special:
            with open(out, "w", encoding="utf-8") as direct:
                yield direct
            return
        folder = os.path.dirname(os.path.abspath(out))
        handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed or removed below
            "w", encoding="utf-8", dir=folder, prefix=".xstate-check-", delete=False)
        try:
            with handle:
                yield handle
            mask = os.umask(0)
            os.umask(mask)
            os.chmod(handle.name, 0o666 & ~mask)  # the mode open() would have given it
            os.replace(handle.name, out)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(handle.name)
            raise
    except BrokenPipeError:
        raise
    except OSError as error:
        raise InputError(
            Location(out), f"expected a writable output file; {error.strerror or error}"
        ) from None


def _stream_exit(args: argparse.Namespace, kind: str,
                 chunks: Iterable[tuple[Sequence[Any], Sequence[Any]] | Any],
                 epilogue: str | None = None) -> int:
    """Write a report subject by subject as it is made; return the exit code."""
    from xstate_check.config import subject_filter
    from xstate_check.formats.stream import StatisticsWriter, Tally, Writer, make_writer

    settings = _settings(args)
    keep = subject_filter(settings)
    color = _use_color(sys.stdout, args.color) and not (args.output and args.output != "-")
    tally = Tally(kind)
    with _output(args) as out:
        writer: Writer = StatisticsWriter(out) if args.statistics else make_writer(
            args.format, out, kind=kind, color=color, quiet=args.quiet,
            min_severity=settings.min_severity, strict=settings.strict,
            fix_hint=not getattr(args, "fix", False))
        for chunk in chunks:
            if not isinstance(chunk, tuple):  # encoded by a gate's worker (EncodedChunk)
                chunk.write_to(writer, tally)
                continue
            subjects, skipped = chunk
            for made in subjects:
                subject = made if keep is None else keep(made)
                tally.add(subject)
                writer.subject(subject)
            for pair in skipped:
                tally.skip(pair)
                writer.skipped(pair)
        writer.finish(tally)
        if epilogue and args.format == "text" and not args.statistics:
            out.write(epilogue + "\n")
    if epilogue and not (args.format == "text" and not args.statistics) and sys.stderr:
        sys.stderr.write(epilogue + "\n")
    code = tally.exit_code(strict=settings.strict)
    return 0 if args.exit_zero else code


def _jobs(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number of processes (1 or more), got "
                                         f"{text!r}")
    return value


class _ProfilesOption(argparse.Action):
    """``--profiles P[,P…]``, repeatable; values after the first are sorted out later.

    The first value of each occurrence is a comma-separated list of profiles. Further values
    (``--profiles A B T.json``, the older form) are kept apart in ``profiles_tail``:
    ``_split_profiles`` keeps those that can only be profiles and gives back the templates.
    """

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: str | Sequence[object] | None, option_string: str | None = None) -> None:
        first, *rest = [str(value) for value in values or ()]
        known = getattr(namespace, self.dest)
        chosen = [] if known is self.default else list(known)
        setattr(namespace, self.dest, [*chosen, *_comma_list(first)])
        namespace.profiles_tail = [*getattr(namespace, "profiles_tail", []), *rest]


def _comma_list(value: str) -> list[str]:
    """Split ``A,B`` into profiles, unless the whole value names an existing file or folder."""
    if os.path.exists(value):
        return [value]
    return [part for part in value.split(",") if part]


def _split_profiles(profiles: Sequence[str], tail: Sequence[str],
                    others: bool) -> tuple[list[str], list[str]]:
    """Return (profiles, templates) from --profiles' first values and the values after them.

    A later value is a profile when only a profile can be it: ``builtin``, ``profile:…``, a
    folder, or a file that is not a template; a template that is no CPUID table is a template
    (``gate --profiles builtin T2.json`` checks T2.json). A file that is both (a fully set
    cpu-template-helper dump) stays a profile, unless nothing else (``others``) would be
    checked.
    """
    from xstate_check.sources.load import load_cpuid
    from xstate_check.template import load_template

    chosen, templates, either = list(profiles), [], []
    for value in tail:
        if value == "builtin" or value.startswith("profile:") or os.path.isdir(value):
            chosen.extend(_comma_list(value))
            continue
        try:
            load_template(value)
        except InputError:
            chosen.append(value)  # not a template: resolve_profiles reads it or says why
            continue
        try:
            load_cpuid(value)
        except InputError:
            templates.append(value)
        else:
            either.append(value)
    if templates or others:
        return chosen + either, templates
    return chosen, either


def _cmd_decode(args: argparse.Namespace) -> int:
    from xstate_check.api import build_subject
    from xstate_check.formats.decode import decode_json, decode_text
    from xstate_check.layout import XsaveLayout

    subject = build_subject(_load_source(args), args.template)
    layout = XsaveLayout.from_cpuid(subject.cpuid)
    title = subject.name + (f" + template {subject.template}" if subject.template else "")
    if args.format == "json":
        _emit(args, decode_json(subject.cpuid, layout, title=title))
    elif args.format == "text":
        _emit(args, decode_text(subject.cpuid, layout, title=title))
    else:
        raise _UsageError(f"xstate-check decode: writes text or json, not {args.format}")
    for entry in subject.missing_entries:
        where = f" ({printable(str(entry.location))})" if entry.location else ""
        sys.stderr.write(
            f"xstate-check: the template modifies CPUID leaf {entry.leaf:#x} subleaf "
            f"{entry.subleaf:#x}, which the source lacks{where}; Firecracker refuses to boot\n"
        )
    return EXIT_FINDINGS if subject.missing_entries else EXIT_OK


def _cmd_convert(args: argparse.Namespace) -> int:
    from xstate_check.api import build_subject
    from xstate_check.sources.ownjson import to_json_text

    if args.format not in ("text", "json"):
        raise _UsageError(
            f"xstate-check convert: writes xstate-check's CPUID JSON (--format json), "
            f"not {args.format}"
        )
    subject = build_subject(_load_source(args), args.template)
    _emit(args, to_json_text(subject.cpuid))
    return EXIT_OK


def _cmd_rules(args: argparse.Namespace) -> int:
    from xstate_check.explain import render_catalogue

    _emit(args, render_catalogue(fmt=args.format))
    return EXIT_OK


def _cmd_explain(args: argparse.Namespace) -> int:
    from xstate_check.explain import render_rule

    _emit(args, render_rule(args.rule, fmt=args.format))
    return EXIT_OK


def _cmd_facts(args: argparse.Namespace) -> int:
    from xstate_check.facts.vocabulary import render_vocabulary

    _emit(args, render_vocabulary(fmt=args.format))
    return EXIT_OK


def _cmd_profiles(args: argparse.Namespace) -> int:
    from xstate_check.sources.profiles import render_profiles

    _emit(args, render_profiles(fmt=args.format))
    return EXIT_OK


def _cmd_oracle(args: argparse.Namespace) -> int:
    from xstate_check.api import build_subject
    from xstate_check.oracle import exit_code, render_text, run_oracle, to_json_text

    if args.format not in ("text", "json"):
        raise _UsageError(f"xstate-check oracle: writes text or json, not {args.format}")
    subject = build_subject(_load_source(args), args.template)
    result = run_oracle(
        subject.cpuid, xcr0=args.xcr0, request_permission=args.request_permission
    )
    _emit(args, to_json_text([result]) if args.format == "json" else render_text(result))
    return exit_code([result])


def _mask(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a mask such as 0x602e7, got {text!r}") from None
    if not 0 <= value < 1 << 64:
        raise argparse.ArgumentTypeError(f"expected a 64-bit mask, got {text!r}")
    return value


class _Unused:
    """Stands for the subparser of a command not asked for: what is added to it is dropped
    unmade (argparse would check each option and make a help formatter for it)."""

    def add_argument(self, *args: object, **kwargs: object) -> None:
        """Drop an option."""

    def add_mutually_exclusive_group(self, **kwargs: object) -> _Unused:
        """Return this: the group's options are dropped too."""
        return self


_UNUSED = cast("argparse.ArgumentParser", _Unused())


def _build_parser(only: str | None = None) -> _Parser:  # noqa: PLR0915
    """Return the parser; with ``only``, that command's subparser alone is built (the rest
    cost start-up time on every run and are only needed for help and usage errors)."""
    common = _Parser(add_help=False)
    common.add_argument(
        "--format", "-f", default="text",
        choices=("text", "json", "sarif", "junit", "github", "markdown"),
        help="output format (default: text)",
    )
    common.add_argument("--output", "-o", metavar="FILE", help="write the output to FILE")
    common.add_argument(
        "--strict", action="store_true", help="exit 1 on warnings too, not only on errors"
    )
    common.add_argument(
        "--select", action="append", metavar="RULES",
        help="only these rules: ids, id prefixes (XS01), names, families or ALL, "
        "comma-separated",
    )
    common.add_argument(
        "--ignore", action="append", metavar="RULES", help="leave out these rules (as --select)"
    )
    common.add_argument(
        "--severity", action="append", metavar="RULE=LEVEL",
        help="report RULE at LEVEL (error, warning, info): --severity XS0303=info",
    )
    common.add_argument("--exit-zero", action="store_true",
                        help="exit 0 even when findings fail the run")
    common.add_argument("--quiet", "-q", action="store_true",
                        help="print the findings only: no details, no summary")
    common.add_argument("--statistics", action="store_true",
                        help="print the number of findings per rule instead of the findings")
    common.add_argument(
        "--min-severity", choices=("error", "warning", "info"), default=None,
        help="the least severity shown (default: info; warning for sarif and github)",
    )
    common.add_argument(
        "--config", metavar="FILE",
        help="the configuration file (default: the nearest pyproject.toml with "
        "[tool.xstate-check], or .xstate-check.toml)",
    )
    common.add_argument(
        "--color", choices=("auto", "always", "never"), default="auto",
        help="colour the text format (auto: on a terminal or under FORCE_COLOR, never under "
        "NO_COLOR; always and never win over both)",
    )
    source = _Parser(add_help=False)
    source.add_argument(
        "source",
        help="a dump or JSON file, - (standard input), profile:NAME, 'host' (this CPU) or 'kvm'",
    )
    source.add_argument("--template", "-t", metavar="T", help="a Firecracker CPU template")
    source.add_argument(
        "--cpu", type=int, metavar="N", help="the logical CPU of a multi-CPU dump (default 0)"
    )

    parser = _Parser(
        prog="xstate-check",
        description="Check a guest's CPUID/XCR0 (XSAVE) configuration before a KVM VM boots.",
    )
    from xstate_check import __version__

    parser.add_argument("--version", action="version", version=f"xstate-check {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    def add(name: str, run: Callable[[argparse.Namespace], int], text: str,
            parents: Sequence[_Parser] = ()) -> argparse.ArgumentParser:
        if only is not None and name != only:
            return _UNUSED  # not asked for: its options are not even made
        sub = commands.add_parser(name, help=text, description=text, parents=[common, *parents])
        sub.set_defaults(run=run)
        return sub

    host = add("host", _cmd_host, "check this machine: syscall masks, CPUID, KVM's CPUID")
    host.add_argument("--template", "-t", metavar="T", help="a Firecracker CPU template")
    host.add_argument(
        "--request-permission", action="store_true",
        help="ask for guest AMX permission first, as Firecracker does (changes this process)",
    )
    host.add_argument(
        "--vmm-requests-permission", action=argparse.BooleanOptionalAction, default=True,
        help="whether the VMM requests guest permission (ARCH_REQ_XCOMP_GUEST_PERM) before "
        "reading KVM's CPUID, as Firecracker, QEMU and Cloud Hypervisor do; that view "
        "decides, the other is shown as information (default: it does)",
    )
    kvm = host.add_mutually_exclusive_group()
    kvm.add_argument("--kvm", dest="kvm", action="store_true", default=True,
                     help="require a usable /dev/kvm, exit 3 without one (the default)")
    kvm.add_argument("--no-kvm", dest="kvm", action="store_false",
                     help="do not open /dev/kvm: check the CPU and syscall masks only")

    fixes = _Parser(add_help=False)
    if only in (None, "check", "gate"):
        fixes.add_argument("--fix", action="store_true",
                           help="rewrite the templates with the rules' safe fixes, then "
                           "report what is left")
        fixes.add_argument("--diff", action="store_true",
                           help="print the fixes as unified diffs and write nothing (exit 1 "
                           "when there is something to change)")
        fixes.add_argument("--unsafe-fixes", action="store_true",
                           help="with --fix or --diff: unsafe fixes too (they remove a "
                           "feature the template did not touch, or give back one it removed)")

    add("check", _cmd_check, "check a CPUID source, after an optional template",
        [source, fixes])

    restore = add("restore", _cmd_restore, "can a guest that booted on SOURCE be snapshotted "
                  "and restored on each DEST", [source])
    restore.add_argument(
        "--on", nargs="+", required=True, metavar="DEST",
        help="where the snapshot is restored: profile:NAME, a dump file, or 'kvm' (this host)",
    )

    gate = add("gate", _cmd_gate, "check templates on every matching CPU profile (the CI gate)",
               [fixes])
    gate.add_argument(
        "templates", nargs="*", metavar="TEMPLATE",
        help="template files (may be left out when --matrix names them)",
    )
    gate.add_argument(
        "--profiles", nargs="+", action=_ProfilesOption, default=["builtin"], metavar="P",
        help="'builtin', profile:NAME, or CPUID files/folders, comma-separated or repeated "
        "(default: builtin)",
    )
    gate.add_argument(
        "--matrix", metavar="FILE", help="a TOML file naming the template x profile pairs"
    )
    gate.add_argument(
        "--changed-since", metavar="REV", help="check only the templates changed since REV"
    )
    gate.add_argument(
        "--jobs", "-j", type=_jobs, default=None, metavar="N",
        help="check templates in N worker processes (default: the usable cores, for 48 "
        "templates or more; 1: none); the output is the same whatever N",
    )
    gate.add_argument(
        "--fail-on", choices=("new", "any"), default=None,
        help="with --changed-since: fail on the findings the change introduced (new, the "
        "default) or on all of them (any)",
    )

    add("decode", _cmd_decode, "show the XSAVE layout: components, sizes, offsets, flags",
        [source])
    add("convert", _cmd_convert, "write a source as xstate-check's own CPUID JSON", [source])
    add("rules", _cmd_rules, "list the rule catalogue")
    explain = add("explain", _cmd_explain, "show one rule's page")
    explain.add_argument("rule", metavar="ID|NAME", help="a rule id (XS0108) or name")
    add("facts", _cmd_facts, "list the names rules read: facts, functions, constants")
    add("profiles", _cmd_profiles, "list the bundled CPU profiles (profile:NAME)")
    oracle = add("oracle", _cmd_oracle,
                 "run the guest's XSETBV for real in a throwaway KVM vCPU", [source])
    oracle.add_argument("--xcr0", type=_mask, metavar="MASK",
                        help="the XCR0 to try (default: what the source enumerates)")
    oracle.add_argument(
        "--request-permission", action="store_true",
        help="ask for guest AMX permission in the throwaway child first, as a VMM would",
    )
    return parser


def _format_asked(argv: Sequence[str]) -> str:
    """Return the --format named in ``argv`` (for errors met before it is parsed)."""
    fmt = "text"
    for index, word in enumerate(argv):
        if word in ("--format", "-f") and index + 1 < len(argv):
            fmt = argv[index + 1]
        elif word.startswith("--format="):
            fmt = word.partition("=")[2]
        elif word.startswith("-f") and len(word) > 2:
            fmt = word[2:]
    return fmt


def _complain(argv: Sequence[str], text: str, error: InputError | None = None) -> None:
    """Write one error message on stderr: escaped, and as a workflow command for github."""
    if sys.stderr is None:  # closed when the process started: the exit code says it
        return
    if _format_asked(argv) == "github":
        from xstate_check.formats.github import render_github_error

        sys.stderr.write(render_github_error(text, error))
    else:
        sys.stderr.write(f"{text}\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: sys.argv[1:]); return the exit code."""
    words = list(sys.argv[1:] if argv is None else argv)
    try:
        command = next((a for a in words if not a.startswith("-")), None)
        args = _build_parser(command if command in _COMMANDS else None).parse_args(words)
        return int(args.run(args))
    except _UsageError as error:
        _complain(words, printable(str(error)))
        return EXIT_INPUT
    except InputError as error:
        _complain(words, f"xstate-check: {error.render()}", error)
        return EXIT_INPUT
    except XstateCheckError as error:
        _complain(words, f"xstate-check: {printable(str(error))}")
        return error.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`| head`); stay quiet, as other Unix tools do.
        sys.stderr.close()
        return EXIT_OK
    except OSError as error:
        _complain(words, f"xstate-check: {printable(str(error))}")
        return EXIT_INPUT
    except Exception as error:
        _complain(
            words,
            printable(f"xstate-check: internal error: {type(error).__name__}: {error}")
            + "\nThis is a bug in xstate-check; please report it with the command that caused it.",
        )
        return EXIT_INTERNAL


def run() -> NoReturn:
    """Run the command line and end the process at once (the ``xstate-check`` script).

    Output is flushed, then the process exits without the interpreter's teardown, which
    frees every module and object one by one: milliseconds on a pre-boot path, for nothing.
    The cyclic garbage collector runs after 100,000 new objects instead of 700: loading
    modules makes many objects and few cycles.
    """
    gc.set_threshold(100_000, 50, 50)
    code = main()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing more to say
            if stream is not None:  # closed when the process started (``>&-``)
                stream.flush()
    os._exit(code)
