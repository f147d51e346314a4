"""The gate streamed subject by subject, and checked by worker processes (``--jobs``)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from xstate_check import cli
from xstate_check.cli import main
from xstate_check.errors import Location
from xstate_check.formats import FORMATS, render
from xstate_check.gate import GateRun, run_gate
from xstate_check.template import apply_template, fold_template, load_template

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def no_children_left() -> Iterator[None]:
    """Every test here leaves this process without a child (no worker, no forkserver)."""
    yield
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _process(*argv: str, cwd: Path | None = None) -> tuple[int, str, str]:
    """Run the command line as its own process: worker processes (and multiprocessing's
    forkserver) then belong to it, not to the test run."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run([sys.executable, "-m", "xstate_check", *argv], capture_output=True,
                          text=True, env=env, check=False, timeout=600, cwd=cwd)
    return done.returncode, done.stdout, done.stderr


def _untimed(text: str) -> str:
    """JUnit's times are the seconds the rules took: the one thing that differs by run."""
    return re.sub(r'time="[0-9.]+"', 'time=""', text)


@pytest.mark.parametrize("fmt", FORMATS)
def test_streamed_output_equals_the_collected_report(
        templates: list[str], fmt: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The command line writes subject by subject what render() makes of the whole report."""
    code, out, _ = _run(capsys, "gate", *templates, "--format", fmt, "--jobs", "1")
    result = run_gate(templates)
    assert _untimed(out) == _untimed(render(result, fmt))
    assert code == result.exit_code()


@pytest.mark.parametrize("fmt", ["json", "sarif", "junit", "text"])
def test_jobs_give_the_same_bytes_as_one_process(templates: list[str], fmt: str) -> None:
    """--jobs 3 splits the templates among workers and merges them back in order."""
    one = _process("gate", *templates, "--format", fmt, "--jobs", "1")
    three = _process("gate", *templates, "--format", fmt, "--jobs", "3")
    assert _untimed(three[1]) == _untimed(one[1])
    assert three[0] == one[0]
    assert '"subjects": 0' not in one[1]


THREADED = textwrap.dedent("""
    import sys, threading
    from xstate_check.gate import run_gate

    stop = threading.Event()
    worker = threading.Thread(target=stop.wait)
    worker.start()
    try:
        parallel = run_gate(sys.argv[1:], jobs=2)
    finally:
        stop.set()
        worker.join()
    assert parallel == run_gate(sys.argv[1:], jobs=1)
    print(len(parallel.subjects))
""")


def test_jobs_from_a_threaded_caller(templates: list[str]) -> None:
    """A caller with threads gets the same result: workers are not forked from it."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run([sys.executable, "-c", THREADED, *templates], capture_output=True,
                          text=True, env=env, check=False, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout) > len(templates)


def test_a_bad_template_fails_the_same_with_jobs_and_leaves_no_output_file(
        templates: list[str], tmp_path: Path) -> None:
    """A broken template among good ones is exit 2 naming it, however many workers; the
    --output file is not written (a partial report never passes for a whole one)."""
    broken = tmp_path / "broken.json"
    broken.write_text('{"cpuid_modifiers": [{"leaf": "0x1"}]}\n', encoding="utf-8")
    chosen = [*templates[:4], str(broken), *templates[4:]]
    target = tmp_path / "out.json"
    results = []
    for jobs in ("1", "2"):
        code, out, err = _process("gate", *chosen, "-f", "json", "-o", str(target),
                                  "--jobs", jobs)
        results.append((code, err))
        assert code == 2 and "broken.json" in err and out == ""
        assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.json"]
    assert results[0] == results[1]


def test_output_file_is_replaced_whole(
        templates: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--output FILE holds the report once the run ends, and nothing else is left behind."""
    target = tmp_path / "report.sarif"
    target.write_text("old", encoding="utf-8")
    code, out, _ = _run(capsys, "gate", *templates[:2], "-f", "sarif", "-o", str(target))
    assert out == "" and code in (0, 1)
    assert target.read_text(encoding="utf-8") == render(run_gate(templates[:2]), "sarif")
    assert [p.name for p in tmp_path.iterdir()] == ["report.sarif"]


def test_jobs_must_be_a_positive_number(capsys: pytest.CaptureFixture[str]) -> None:
    """--jobs 0 is a usage error."""
    code, _, err = _run(capsys, "gate", "t.json", "--jobs", "0")
    assert code == 2 and "--jobs" in err


def test_gate_run_yields_one_chunk_per_template(templates: list[str]) -> None:
    """Each template is one chunk, in the order given: what the output streams by."""
    run = GateRun(templates[:3])
    chunks = list(run.chunks(1))
    assert len(chunks) == 3
    for path, (subjects, skipped) in zip(templates[:3], chunks, strict=True):
        assert {s.template for s in subjects} == {path}
        assert all(pair.template == path for pair in skipped)


def test_folded_template_steps_apply_as_the_modifiers_do(templates: list[str]) -> None:
    """A template applied from its masks folded once equals it applied modifier by modifier."""
    from xstate_check.cpuid import Registers
    from xstate_check.sources.profiles import load_profile

    base = load_profile("fc-sapphire-rapids-6.1")
    for path in templates:
        template = load_template(path)
        applied = apply_template(template, base, fold_template(template))
        entries = dict(base.entries)
        for leaf_modifier in template.cpuid_modifiers:
            key = (leaf_modifier.leaf, leaf_modifier.subleaf)
            if key not in entries:
                continue
            values = entries[key]._asdict()
            for modifier in leaf_modifier.modifiers:
                old = values[modifier.register]
                values[modifier.register] = (old & ~modifier.filter & 0xFFFF_FFFF) \
                    | modifier.value
            entries[key] = Registers(**values)
        assert dict(applied.cpuid.entries) == entries
        assert list(applied.cpuid.entries) == sorted(entries)
        # The template lines' pins, folded once, are those applied modifier by modifier.
        pins: dict[tuple[int, int, str], list[tuple[int, Location]]] = {}
        for leaf_modifier in template.cpuid_modifiers:
            key = (leaf_modifier.leaf, leaf_modifier.subleaf)
            if key not in base.entries:
                continue
            pins.setdefault((*key, "flags"), []).append((0, leaf_modifier.location))
            for modifier in leaf_modifier.modifiers:
                if modifier.filter:
                    pins.setdefault((*key, modifier.register), []).append(
                        (modifier.filter, modifier.location))
        provenance = applied.cpuid.provenance
        assert sorted(provenance.register_keys()) == sorted(pins)
        for register_key, applied_pins in pins.items():
            owners = {where: mask for mask, where in provenance.pins(*register_key)}
            for bit in range(32):
                last = [where for mask, where in applied_pins if mask >> bit & 1]
                if last:
                    assert owners.get(last[-1], 0) >> bit & 1, (register_key, bit)


def test_only_the_command_asked_for_is_built(capsys: pytest.CaptureFixture[str]) -> None:
    """A run builds its own subparser; help and unknown commands still list them all."""
    parser = cli._build_parser("host")
    commands = next(a for a in parser._actions if a.dest == "command")
    assert list(commands.choices or ()) == ["host"]
    full = cli._build_parser()
    every = next(a for a in full._actions if a.dest == "command")
    assert set(every.choices) == cli._COMMANDS  # type: ignore[arg-type]
    code, _, err = _run(capsys, "nosuch")
    assert code == 2 and "gate" in err and "restore" in err


def test_worker_setup_copes_with_profile_folders(
        templates: list[str], tmp_path: Path) -> None:
    """Workers resolve the same profiles from the same specs (here a folder of CPUID files)."""
    folder = tmp_path / "profiles"
    folder.mkdir()
    source = Path(__file__).resolve().parents[1] / "src" / "xstate_check" / "profiles"
    for name in ("fc-sapphire-rapids-6.1", "fc-ice-lake-6.1", "fc-milan-6.1"):
        shutil.copy(source / f"{name}.json", folder / f"{name}.json")
    specs = [str(folder)]
    chosen = templates[:5]  # T2, T2S, T2CL, C3 (Intel), T2A (AMD)
    one = _process("gate", *chosen, "--profiles", *specs, "-f", "json", "--jobs", "1")
    two = _process("gate", *chosen, "--profiles", *specs, "-f", "json", "--jobs", "2")
    assert two == one and one[0] in (0, 1) and '"subjects": 0' not in one[1]


def test_findings_reused_for_a_same_table_are_placed_at_each_templates_lines(
        templates: list[str], tmp_path: Path) -> None:
    """Two templates giving one guest table share its findings, each at its own lines."""
    from xstate_check.api import build_subject
    from xstate_check.engine import evaluate
    original = Path(templates[0])
    copy = tmp_path / "moved.json"
    # The same modifiers two lines lower: the same guest tables, other locations.
    copy.write_text("\n\n" + original.read_text(encoding="utf-8"), encoding="utf-8")
    alone = GateRun([str(original)])
    alone.result(jobs=1)  # its hits: profiles whose tables are equal (Sky Lake 5.10 and 6.1)
    run = GateRun([str(original), str(copy)])
    result = run.result(jobs=1)
    assert run.cache.hits == len(result.subjects) // 2 + alone.cache.hits
    for subject in result.subjects:
        assert subject.template is not None and subject.details["profile"]
        fresh = evaluate(build_subject(f"profile:{subject.details['profile']}",
                                       subject.template, name=subject.name))
        assert subject.findings == fresh.findings
    moved = [s for s in result.subjects if s.template == str(copy)]
    assert any(f.location is not None and f.location.path == str(copy)
               for s in moved for f in s.findings)


@pytest.mark.parametrize("seed", range(5))
def test_bounds_fast_path_sees_the_nesting_the_token_scan_sees(seed: int) -> None:
    """The bracket-only nesting count agrees with the token scan on random JSON-ish text."""
    import random

    from xstate_check import jsonpos

    chooser = random.Random(seed)
    for _ in range(400):
        text = "".join(chooser.choice('[]{}"\\ab,: ') for _ in range(chooser.randrange(60)))
        depth = deepest = 0
        for match in jsonpos._TOKEN.finditer(text):
            char = text[match.start()]
            if char in "]}":
                depth = max(0, depth - 1)
            elif char in "[{":
                depth += 1
                deepest = max(deepest, depth)
        assert jsonpos._nesting(text) == deepest, text


def test_output_to_a_device_or_link_is_written_in_place(
        templates: list[str], tmp_path: Path) -> None:
    """-o /dev/stdout writes to the stream; a link keeps pointing where it did; a new file
    gets the mode open() would give it."""
    code, out, _ = _process("gate", templates[0], "-f", "json", "-o", "/dev/stdout")
    assert code in (0, 1) and '"summary"' in out
    assert os.path.islink("/dev/stdout") or not os.path.exists("/dev/stdout")
    target = tmp_path / "real.json"
    target.write_text("old", encoding="utf-8")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    code, _, _ = _process("gate", templates[0], "-f", "json", "-o", str(link))
    assert link.is_symlink() and '"summary"' in target.read_text(encoding="utf-8")
    fresh = tmp_path / "fresh.json"
    _process("gate", templates[0], "-f", "json", "-o", str(fresh))
    mask = os.umask(0)
    os.umask(mask)
    assert fresh.stat().st_mode & 0o777 == 0o666 & ~mask
