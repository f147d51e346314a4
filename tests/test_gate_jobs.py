"""``gate --jobs N``: tasks, workers and the parent's merge (same bytes as one process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import X86_TEMPLATES
from test_fix_outputs import AMX_HALF, AVX512_TWO
from xstate_check.formats.stream import JsonWriter, Tally
from xstate_check.gate import _BATCH, GateRun, _batches, run_gate

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def no_children_left() -> Iterator[None]:
    """Every test here leaves this process without a child (no worker, no forkserver)."""
    yield
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO / "src"), "NO_COLOR": "1"}


def _process(*argv: str, cwd: Path | None = None) -> tuple[int, str, str]:
    """Run the command line as its own process (its workers are its children)."""
    done = subprocess.run([sys.executable, "-m", "xstate_check", *argv], capture_output=True,
                          text=True, env=_env(), check=False, timeout=600, cwd=cwd)
    return done.returncode, done.stdout, done.stderr


def _script(tmp_path: Path, text: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``text`` as a script file (a file: workers started afresh import it again)."""
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(text), encoding="utf-8")
    return subprocess.run([sys.executable, str(script), *args], capture_output=True,
                          text=True, env=_env(), check=False, timeout=600, cwd=tmp_path)


@pytest.mark.parametrize("count", [1, 2, 7, 47, 48, 600, 1001])
@pytest.mark.parametrize("workers", [2, 3, 8])
def test_tasks_cover_every_template_once_in_order_and_shrink(count: int, workers: int) -> None:
    """Tasks hold each template once, in order; none is larger than _BATCH, and they only
    shrink, down to single templates at the end (no worker left alone with a long task)."""
    paths = [f"t{index}.json" for index in range(count)]
    sizes = [len(batch) for batch in _batches(paths, workers)]
    assert [p for batch in _batches(paths, workers) for p in batch] == paths
    assert all(1 <= size <= _BATCH for size in sizes)
    assert sizes == sorted(sizes, reverse=True)
    assert sizes[-1] == 1
    if count >= 600:
        assert len(sizes) < count // 4  # far fewer tasks to send and merge than templates


def test_tallies_merged_count_as_one(templates: list[str]) -> None:
    """Counts made in workers and merged give the summary and exit codes of one tally."""
    result = run_gate(templates)
    whole = Tally("gate")
    parts = [Tally("gate") for _ in range(3)]
    for index, subject in enumerate(result.subjects):
        whole.add(subject)
        parts[index % 3].add(subject)
    for index, pair in enumerate(result.skipped):
        whole.skip(pair)
        parts[index % 2].skip(pair)
    merged = Tally("gate")
    for part in parts:
        merged.merge(part)
    assert merged.summary() == whole.summary() == result.summary()
    assert whole.not_for_host > 0 and whole.errors + whole.warnings > 0
    for strict in (False, True):
        assert merged.exit_code(strict) == whole.exit_code(strict)
    # One tally that saw a warning makes the merge fail under --strict, only then.
    warned = next(s for s in result.subjects if any(f.severity == "warning" for f in s.findings)
                  and not any(f.severity == "error" for f in s.findings))
    quiet, loud = Tally("gate"), Tally("gate")
    loud.add(warned)
    quiet.merge(loud)
    assert quiet.exit_code(strict=True) == 1 and quiet.exit_code() == 0
    assert Tally("gate").exit_code(strict=True) == 0


def test_encoded_json_is_what_the_writer_writes(templates: list[str]) -> None:
    """Subjects and pairs encoded ahead (as workers do) are the bytes written one by one."""
    import io

    result = run_gate(templates)
    one, ahead = io.StringIO(), io.StringIO()
    writer = JsonWriter(one, "gate")
    for subject in result.subjects:
        writer.subject(subject)
    for pair in result.skipped:
        writer.skipped(pair)
    writer.finish(Tally("gate"))
    encoded = JsonWriter(ahead, "gate")
    half = len(result.subjects) // 2
    for part in (result.subjects[:half], (), result.subjects[half:]):
        encoded.encoded(JsonWriter.encode(part))
    encoded.encoded_skipped(JsonWriter.encode_skipped(result.skipped[:1]))
    encoded.encoded_skipped(JsonWriter.encode_skipped(()))
    encoded.encoded_skipped(JsonWriter.encode_skipped(result.skipped[1:]))
    encoded.finish(Tally("gate"))
    assert ahead.getvalue() == one.getvalue()
    json.loads(one.getvalue())


def _copies(templates: list[str], folder: Path, count: int) -> list[str]:
    """``count`` templates: copies of Firecracker's, each with its own brand index."""
    folder.mkdir()
    paths = []
    for index in range(count):
        document = json.loads(Path(templates[index % len(templates)]).read_text())
        for entry in document["cpuid_modifiers"]:
            if entry["leaf"] == "0x1":
                entry["modifiers"] = [m for m in entry["modifiers"] if m["register"] != "ebx"]
                entry["modifiers"].append({"register": "ebx",
                                           "bitmap": "0b" + "x" * 16 + format(index, "016b")})
        path = folder / f"t{index:03d}.json"
        path.write_text(json.dumps(document, indent=2), encoding="utf-8")
        paths.append(str(path))
    return paths


@pytest.mark.parametrize("fmt", ["json", "sarif", "junit", "text", "github", "markdown"])
def test_many_templates_give_the_same_bytes_in_every_format(
        templates: list[str], tmp_path: Path, fmt: str) -> None:
    """60 templates (more than the default's threshold) with 1, 2 and the default number of
    workers: the same output and exit code, in every format."""
    paths = _copies(templates, tmp_path / "t", 60)
    outputs = set()
    codes = set()
    for jobs in (["--jobs", "1"], ["--jobs", "2"], []):
        code, out, err = _process("gate", *paths, "-f", fmt, *jobs)
        assert code in (0, 1), err
        outputs.add(out if fmt != "junit" else _untimed(out))
        codes.add(code)
    assert len(outputs) == 1 and len(codes) == 1
    assert str(paths[-1]) in outputs.pop()


def _untimed(text: str) -> str:
    import re

    return re.sub(r'time="[0-9.]+"', 'time=""', text)


def test_rule_selection_is_applied_by_the_workers(templates: list[str], tmp_path: Path) -> None:
    """A configuration's rule selection and severities, applied where JSON is encoded (in
    the workers), give the bytes and counts of one process, and do change the report."""
    paths = _copies(templates, tmp_path / "t", 12)
    configured, bare = tmp_path / "configured", tmp_path / "bare"
    configured.mkdir()
    bare.mkdir()
    (configured / ".xstate-check.toml").write_text(
        'ignore = ["xsave-max-size-stale"]\n'
        '[severity]\n"avx512-subfeatures-require-f" = "error"\n', encoding="utf-8")
    runs = [_process("gate", *paths, "-f", "json", "--jobs", jobs, cwd=configured)
            for jobs in ("1", "2")]
    assert runs[0] == runs[1]
    plain = _process("gate", *paths, "-f", "json", "--jobs", "2", cwd=bare)
    assert '"xsave-max-size-stale"' in plain[1] and '"xsave-max-size-stale"' not in runs[0][1]
    assert json.loads(plain[1])["summary"]["errors"] < json.loads(runs[0][1])["summary"]["errors"]
    assert json.loads(runs[0][1])["summary"]["subjects"] > 12


def test_statistics_with_workers(templates: list[str], tmp_path: Path) -> None:
    """--statistics counts the same findings whether workers checked them or not."""
    paths = _copies(templates, tmp_path / "t", 12)
    one = _process("gate", *paths, "--statistics", "--jobs", "1")
    two = _process("gate", *paths, "--statistics", "--jobs", "2")
    assert one == two and "subjects" in one[1]


def test_fix_then_gate_with_workers(tmp_path: Path) -> None:
    """`gate --fix --jobs 2` rewrites the templates as `--jobs 1` does, and the report
    that follows (checked by workers) is the same bytes."""
    results = []
    for jobs in ("1", "2"):
        folder = tmp_path / f"jobs{jobs}"
        (folder / ".git").mkdir(parents=True)
        names = []
        for number in range(4):
            for stem, text in (("amx", AMX_HALF), ("avx", AVX512_TWO)):
                name = f"{stem}-{number}.json"
                (folder / name).write_text(text, encoding="utf-8")
                names.append(name)
        code, out, err = _process("gate", *names, "--fix", "-f", "json", "--jobs", jobs,
                                  cwd=folder)
        fixed = [(folder / name).read_text(encoding="utf-8") for name in names]
        results.append((code, out, err, fixed))
    assert results[0] == results[1]
    assert results[0][3][0] != AMX_HALF  # the fix did rewrite the template


UNGUARDED = """
    import sys
    from xstate_check.gate import run_gate

    result = run_gate(sys.argv[1:], jobs=2)
    assert result == run_gate(sys.argv[1:], jobs=1)
    print(len(result.subjects))
"""


def test_a_script_without_the_main_guard_works_from_one_thread(
        templates: list[str], tmp_path: Path) -> None:
    """Workers forked from a single-threaded caller never run its script again."""
    done = _script(tmp_path, UNGUARDED, *templates)
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout) > len(templates)


UNGUARDED_THREADED = """
    import sys, threading
    from xstate_check.gate import GateWorkerError, run_gate

    stop = threading.Event()
    threading.Thread(target=stop.wait, daemon=True).start()
    try:
        run_gate(sys.argv[1:], jobs=2)
    except GateWorkerError as error:
        print("GateWorkerError:", error)
    finally:
        stop.set()
"""


def test_a_script_without_the_main_guard_gets_a_clear_error_from_threads(
        templates: list[str], tmp_path: Path) -> None:
    """From a caller with threads, workers are started afresh and import the script again:
    without the guard that fails, and the gate says why (not a bare BrokenProcessPool)."""
    done = _script(tmp_path, UNGUARDED_THREADED, *templates)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("GateWorkerError:"), done.stdout
    assert "if __name__ ==" in done.stdout


KILLED = """
    import os, sys
    import xstate_check.gate as gate
    from xstate_check.cli import main

    parent = os.getpid()
    check = gate.GateRun.check

    def dying(self, path):
        if os.getpid() != parent:
            os._exit(9)  # a worker killed
        return check(self, path)

    gate.GateRun.check = dying
    sys.exit(main(sys.argv[1:]))
"""


def test_a_worker_that_dies_is_a_clear_error_and_no_output(
        templates: list[str], tmp_path: Path) -> None:
    """A worker ending before it answers is exit 3 with one message saying what happened;
    the --output file is not written."""
    target = tmp_path / "out.json"
    done = _script(tmp_path, KILLED, "gate", *templates, "-f", "json", "-o", str(target),
                   "--jobs", "2")
    assert done.returncode == 3, done.stderr[-2000:]
    assert "worker process ended" in done.stderr and "--jobs 1" in done.stderr
    assert "Traceback" not in done.stderr
    assert not target.exists() and done.stdout == ""


def test_gate_run_pickles_as_its_recipe(templates: list[str]) -> None:
    """A GateRun sent to a worker started afresh carries its set-up, not its tables; the
    worker resolves the same profiles and checks templates the same."""
    import pickle

    run = GateRun(templates[:3], fixes=True)
    data = pickle.dumps(run)
    assert len(data) < 20_000
    copy = pickle.loads(data)
    assert [p.name for p in copy.pool] == [p.name for p in run.pool]
    assert copy.cache is not run.cache and copy.fixes == run.fixes
    assert copy.check(templates[1]) == run.check(templates[1])


THREADED_ENCODED = """
    import io, sys, threading
    from xstate_check.formats.stream import JsonWriter, Tally
    from xstate_check.gate import ChunkEncoder, EncodedChunk, GateRun

    def write(jobs, encoder):
        out, tally = io.StringIO(), Tally("gate")
        writer = JsonWriter(out, "gate")
        encoded = 0
        for item in GateRun(sys.argv[1:]).items(jobs, encoder):
            if isinstance(item, EncodedChunk):
                encoded += 1
                item.write_to(writer, tally)
                continue
            for subject in item[0]:
                tally.add(subject)
                writer.subject(subject)
            for pair in item[1]:
                tally.skip(pair)
                writer.skipped(pair)
        writer.finish(tally)
        return out.getvalue(), encoded

    if __name__ == "__main__":
        stop = threading.Event()
        threading.Thread(target=stop.wait, daemon=True).start()
        try:
            encoder = ChunkEncoder(JsonWriter.encode, JsonWriter.encode_skipped)
            parallel, encoded = write(2, encoder)
        finally:
            stop.set()
        alone, none = write(1, encoder)
        assert encoded > 0 and none == 0, (encoded, none)
        assert parallel == alone
        sys.stdout.write(parallel)
"""


def test_workers_started_afresh_send_encoded_chunks_too(
        templates: list[str], tmp_path: Path) -> None:
    """From a caller with threads (workers from the forkserver, the gate rebuilt from its
    recipe), JSON encoded by the workers is the bytes one process writes."""
    done = _script(tmp_path, THREADED_ENCODED, *templates)
    assert done.returncode == 0, done.stderr[-2000:]
    one = _process("gate", *templates, "-f", "json", "--jobs", "1", cwd=tmp_path)
    assert done.stdout == one[1]


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c",
                    "user.email=t@example.invalid", "-c", "commit.gpgsign=false", *args],
                   capture_output=True, text=True, check=True)


def test_regression_mode_and_a_matrix_with_groups_with_workers(
        data_dir: Path, tmp_path: Path) -> None:
    """--changed-since (each template's old text read before the workers start) and a
    matrix with a migration group (its subjects made after the templates'): the same bytes
    with workers as without, new findings among them."""
    import shutil

    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    source = data_dir / "firecracker"
    if not source.is_dir():
        pytest.skip(f"{source} is absent")
    root = tmp_path / "fleet"
    root.mkdir()
    for name in X86_TEMPLATES:
        shutil.copy(source / f"{name}.json", root / f"{name}.json")
    matrix = (REPO / "examples" / "firecracker-matrix.toml").read_text(encoding="utf-8")
    (root / "matrix.toml").write_text(
        matrix.replace('templates_dir = "../../shared/data/firecracker"', ""), encoding="utf-8")
    _git(root, "init", "-q")
    _git(root, "add", ".")
    _git(root, "commit", "-q", "-m", "templates")
    # TILEDATA masked and TILECFG kept: new amx-tile-pair errors on the SPR hosts.
    spr = root / "SPR_TO_T2_6.1.json"
    text = spr.read_text(encoding="utf-8")
    old, new = '"0bxxxxxxxxxxxxx00xxxxxxx0x00000xxx"', '"0bxxxxxxxxxxxxx0xxxxxxxx0x00000xxx"'
    assert old in text
    spr.write_text(text.replace(old, new, 1), encoding="utf-8")
    for fmt in ("json", "sarif"):
        runs = [_process("gate", "--matrix", "matrix.toml", "--changed-since", "HEAD", "-f", fmt,
                         "--jobs", jobs, cwd=root) for jobs in ("1", "2")]
        assert runs[0] == runs[1], fmt
        assert runs[0][0] == 1
        if fmt == "json":
            report = json.loads(runs[0][1])
    states = {f.get("baseline_state") for s in report["subjects"] for f in s["findings"]}
    assert {"new", "unchanged"} <= states
    assert any("group" in json.dumps(s) and "t2-pool" in json.dumps(s)
               for s in report["subjects"])


def test_workers_are_forked_only_from_a_single_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """A thread alive in the process means a fresh start (forkserver, or spawn where there
    is no forkserver); one thread alone on Linux means fork."""
    import multiprocessing
    import threading

    from xstate_check.gate import _start_method

    if sys.platform == "linux" and len(os.listdir("/proc/self/task")) == 1:
        assert _start_method() == "fork"
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        assert _start_method() == "forkserver"
        monkeypatch.setattr(multiprocessing, "get_all_start_methods", lambda: ["spawn"])
        assert _start_method() == "spawn"
    finally:
        stop.set()
        thread.join()


SKEWED = """
    import os, sys, time
    import xstate_check.gate as gate
    from xstate_check.cli import main

    parent = os.getpid()
    check = gate.GateRun.check

    def uneven(self, path):
        if os.getpid() != parent and os.getpid() % 2:
            time.sleep(0.01)  # one worker of two slower than the other
        return check(self, path)

    gate.GateRun.check = uneven
    sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_uneven_workers_still_give_the_order_of_one_process(
        templates: list[str], tmp_path: Path, fmt: str) -> None:
    """Tasks go to whichever worker is free and answers come back out of turn; the output
    is still in the order given, the same bytes as one process."""
    paths = _copies(templates, tmp_path / "t", 70)
    one = _process("gate", *paths, "-f", fmt, "--jobs", "1")
    done = _script(tmp_path, SKEWED, "gate", *paths, "-f", fmt, "--jobs", "2")
    assert (done.returncode, done.stdout, done.stderr) == one
