"""The plan (quick conditions, folded groups, three passes) changes no verdict: the catalogue
run with and without it gives the same findings, byte for byte, on every bundled profile and
every rule example."""

from __future__ import annotations

import json

import pytest

from xstate_check.api import build_subject as build_subject_of
from xstate_check.api import check
from xstate_check.engine import load_catalogue
from xstate_check.engine.examples import build_subject
from xstate_check.engine.plan import Plan
from xstate_check.engine.runner import evaluate_rules
from xstate_check.facts import FACTS, NEEDS
from xstate_check.report import Finding
from xstate_check.sources.profiles import profile_index
from xstate_check.subject import Subject

CATALOGUE = load_catalogue()


def _json(findings: list[Finding]) -> str:
    ordered = sorted(findings, key=Finding.sort_key)
    return json.dumps([finding.to_json() for finding in ordered], sort_keys=True)


def _same_with_and_without_plan(subject: Subject) -> list[Finding]:
    planned = evaluate_rules(subject, CATALOGUE)
    plain = evaluate_rules(subject, CATALOGUE, planned=False)
    assert _json(planned) == _json(plain), subject.name
    return planned


@pytest.mark.parametrize("name", [info.name for info in profile_index()])
def test_plan_changes_no_verdict_on_bundled_profiles(name: str) -> None:
    """Every bundled profile: the same findings with and without the plan, and as ``check``
    reports them."""
    findings = _same_with_and_without_plan(build_subject_of(f"profile:{name}"))
    assert _json(findings) == _json(list(check(f"profile:{name}").subjects[0].findings))


def test_plan_changes_no_verdict_on_rule_examples() -> None:
    """Every pass and fail example of every rule: the same findings with and without it."""
    failing = 0
    for rule in CATALOGUE:
        for example in (*rule.passes, *rule.fails):
            failing += bool(_same_with_and_without_plan(build_subject(example)))
    assert failing  # the examples do exercise failing rules


def test_plan_takes_shortcuts() -> None:
    """The plan does fold rules into groups (else there would be nothing to compare)."""
    plan = Plan.of(CATALOGUE.rules)
    assert plan.groups and any(all_pass is not None for *_, all_pass, _ in plan.groups)
    grouped = sum(len(steps) for *_, steps in plan.groups)
    assert grouped + len(plan.walking) == len(CATALOGUE)


def test_plan_for_a_subject_leaves_out_what_it_cannot_answer() -> None:
    """The plan for a subject lacking some NEEDS bits keeps exactly the rules whose facts it
    can answer (an ``each`` rule's list fact included), in the plan's order, once per bits."""
    plan = Plan.of(CATALOGUE.rules)
    order = [rule.id for *_, steps in plan.groups for *_, rule in steps]
    for lacking in (0, NEEDS["host"] | NEEDS["reference"] | NEEDS["destination"], -1):
        groups, walking = plan.for_lacking(lacking)
        assert plan.for_lacking(lacking) is plan.for_lacking(lacking)
        kept = [rule.id for *_, steps in groups for *_, rule in steps]
        assert kept == [rule_id for rule_id in order
                        if not CATALOGUE.get(rule_id).compiled.needs & lacking]
        for _, rule, each in walking:
            assert each == rule.each
            assert not (rule.compiled.needs | FACTS[each].needs) & lacking
    assert len(plan.for_lacking(0)[1]) == len(plan.walking)
    assert len(plan.for_lacking(NEEDS["destination"])[1]) < len(plan.walking)


def test_rules_left_out_for_a_role_give_no_finding_on_its_subjects() -> None:
    """A rule whose check is ``A => B`` with A false for a role (``role == "cpu" and …`` on a
    guest) is left out of that role's plan: run alone on every bundled profile of the
    role, and on one relabelled to it, it gives no finding; the others stay in."""
    from xstate_check.engine.loader import language_names
    from xstate_check.engine.parser import parse_expression
    from xstate_check.engine.plan import _role_decides, passes_for_role
    from xstate_check.engine.runner import run_rules
    from xstate_check.facts import Facts
    from xstate_check.sources.profiles import load_profile

    names = language_names()

    def decided(text: str, role: str) -> bool | None:
        return _role_decides(parse_expression(text, names.__getitem__, names), role)

    assert decided('role == "cpu" and xcr0 != 0', "guest") is False
    assert decided('role == "cpu" and xcr0 != 0', "cpu") is None
    assert decided('not (role != "guest") or xcr0 != 0', "guest") is True
    assert decided('role == "cpu" or role == "guest"', "guest") is True
    assert decided('role == "cpu" or xcr0 != 0', "guest") is None
    left_out = {role: [rule for rule in CATALOGUE if passes_for_role(rule, role)]
                for role in ("guest", "cpu")}
    assert left_out["guest"] and left_out["cpu"]
    assert not any(passes_for_role(rule, None) for rule in CATALOGUE)
    for info in profile_index():
        table = load_profile(info.name)
        for role in ("guest", "cpu"):
            subject = Subject.of(table.source, table.replace(role=role))
            assert subject.role == role
            findings: list[Finding] = []
            run_rules(Facts(subject), left_out[role], findings, None)
            assert findings == [], (info.name, role, [f.rule for f in findings])
            kept = CATALOGUE.plan.for_subject(0, role)
            kept_ids = {rule.id for *_, steps in kept[0] for *_, rule in steps}
            assert not kept_ids & {rule.id for rule in left_out[role]}
