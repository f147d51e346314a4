"""The fix engine: the smallest template change that removes a template's error findings.

For one template and the tables it is checked on, the engine applies the ``[[rule.autofix]]``
groups of the rules that fail, one rule at a time in id order, and re-checks every table
after each: a group is kept only when its rule's findings are gone on every table and no
table has an error or warning of a rule it did not have before (a rule whose new finding
another group fixes is fixed too, up to a bound). A ``clear`` group is tried with its
``also`` bits, then without them; a ``restore`` group drops only the pins that change the
table. Then every kept change that is not needed is dropped again (a clear group whole, a
restored pin one by one), so that what remains is needed. The change is made in the text
(``textedit``) and read back with the project's template reader every time, so what is
checked is what is written.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

import attrs

from xstate_check.cpuid import CpuidSet
from xstate_check.engine.catalogue import Catalogue, FixGroup, Rule
from xstate_check.errors import InputError
from xstate_check.facts import BitRef
from xstate_check.fixes.model import Applicability, Fix, Unfixed, UnfixedReason
from xstate_check.fixes.textedit import BitChange, RegisterKey, Why, apply_edits, edit_text
from xstate_check.hoststate import HostState
from xstate_check.report import Finding, SubjectReport
from xstate_check.subject import Subject
from xstate_check.template import Template, apply_template, parse_template

__all__ = ["FixTarget", "compute_fix"]

_REGISTER_INDEX = {"eax": 0, "ebx": 1, "ecx": 2, "edx": 3}
#: Rounds of fixing the findings a fix brings, before giving up on it.
_SETTLE_ROUNDS = 4

Keep = Callable[[SubjectReport], SubjectReport]
#: (table index, rule name) pairs with an error or warning.
Known = set[tuple[int, str]]


@attrs.frozen
class FixTarget:
    """One table a template is checked on: a gate's profile or a check's source.

    ``declared``: a pair named by the user, where a modified entry the table lacks is a
    finding; on an inferred one it means the template is not for that host.
    """

    name: str
    cpuid: CpuidSet = attrs.field(eq=False)
    declared: bool = True
    host: HostState | None = attrs.field(default=None, eq=False)


@attrs.frozen
class _Unit:
    """One change the engine may make: a whole clear group, or one restored pin."""

    rule: str
    applicability: Applicability
    changes: tuple[tuple[RegisterKey, BitChange], ...]


@attrs.frozen
class _State:
    """The findings of one version of the template, per table (None: the pairing broke)."""

    template: Template
    findings: tuple[tuple[Finding, ...], ...]
    guests: tuple[CpuidSet, ...]


class _Run:
    """One template's fix: its tables, settings and the findings of each version."""

    def __init__(self, text: str, path: str, targets: Sequence[FixTarget], catalogue: Catalogue,
                 *, keep: Keep | None, strict: bool, unsafe: bool) -> None:
        from xstate_check.engine import evaluate

        self.text = text
        self.path = path
        self.targets = list(targets)
        self.catalogue = catalogue
        self.keep = keep
        self.strict = strict
        self.unsafe = unsafe
        self.evaluate = evaluate
        self.template = parse_template(text, path)
        self.states: dict[str, _State | None] = {}
        pins = self.template.modified_bits()
        #: The bits the template as written pins to 0, per register.
        self.zeros = {key: filter_bits & ~value for key, (filter_bits, value) in pins.items()}
        self.flags = _entry_flags(self.targets)

    # --- checking --------------------------------------------------------------------------

    def check(self, text: str) -> _State | None:
        """Return the findings of a version of the template, or None where it no longer
        reads, or no longer applies to a table it applied to (an inferred host it would not
        boot on)."""
        if text in self.states:
            return self.states[text]
        try:
            template = parse_template(text, self.path)
        except InputError:
            self.states[text] = None
            return None
        findings: list[tuple[Finding, ...]] = []
        guests: list[CpuidSet] = []
        for target in self.targets:
            applied = apply_template(template, target.cpuid)
            if applied.missing and not target.declared:
                self.states[text] = None
                return None
            subject = Subject.of(target.name, target.cpuid, host=target.host,
                                 template=self.path, guest=applied.cpuid,
                                 missing=applied.missing)
            report = self.evaluate(subject, self.catalogue)
            if self.keep is not None:
                report = self.keep(report)
            findings.append(report.findings)
            guests.append(applied.cpuid)
        state = _State(template, tuple(findings), tuple(guests))
        self.states[text] = state
        return state

    def failing(self, finding: Finding) -> bool:
        """Return whether a finding fails the run (an error; a warning too when strict)."""
        return finding.severity == "error" or (self.strict and finding.severity == "warning")

    def problems(self, state: _State) -> Counter[tuple[int, str]]:
        """Return the errors and warnings of a state, counted per (table, rule)."""
        return Counter((index, finding.name) for index, findings in enumerate(state.findings)
                       for finding in findings if finding.severity in ("error", "warning"))

    def count(self, state: _State) -> int:
        """Return the number of findings that fail the run, over every table."""
        return sum(self.failing(finding) for findings in state.findings for finding in findings)

    def failing_rules(self, state: _State) -> set[str]:
        """Return the names of the rules that fail the run on some table."""
        return {finding.name for findings in state.findings for finding in findings
                if self.failing(finding)}

    def failing_on(self, state: _State, rule: str) -> list[int]:
        """Return the indices of the tables where ``rule`` fails the run."""
        return [index for index, findings in enumerate(state.findings)
                if any(f.name == rule and self.failing(f) for f in findings)]

    # --- what a group changes --------------------------------------------------------------

    def register(self, state: _State, index: int, key: RegisterKey) -> int:
        """Return a register's value in the guest table of one target."""
        entry = state.guests[index].entries.get((key[0], key[1]))
        return 0 if entry is None else entry[_REGISTER_INDEX[key[2]]]

    def started(self, group: FixGroup) -> bool:
        """Return whether the template as written already clears a bit of the group."""
        return any(self.zeros.get((leaf, subleaf, register), 0) & mask
                   for leaf, subleaf, register, mask in (*group.bits, *group.also, *group.anchor))

    def applicability(self, group: FixGroup) -> Applicability:
        """Return how safe a group is for this template (see FixGroup)."""
        if group.applicability == "unsafe":
            return "unsafe"
        if group.action == "clear" and not self.started(group):
            return "unsafe"
        return "safe"

    def clear_units(self, rule: Rule, group: FixGroup, state: _State,
                    applicability: Applicability) -> list[_Unit]:
        """Return the clear group's variants (with its ``also`` bits, then without them) as
        units, leaving out empty and repeated ones."""
        where = self.failing_on(state, rule.name)
        if group.anchor:
            where = [index for index in where
                     if any(self.register(state, index, (leaf, subleaf, register)) & mask != mask
                            for leaf, subleaf, register, mask in group.anchor)]
        units: list[_Unit] = []
        for refs in ((*group.bits, *group.also), group.bits):
            masks: dict[RegisterKey, int] = {}
            for leaf, subleaf, register, mask in refs:
                key = (leaf, subleaf, register)
                for index in where:
                    masks[key] = masks.get(key, 0) | self.register(state, index, key) & mask
            changes = tuple((key, BitChange(clear=mask)) for key, mask in sorted(masks.items())
                            if mask)
            unit = _Unit(rule.name, applicability, changes)
            if changes and unit not in units:
                units.append(unit)
        return units

    def restore_units(self, rule: Rule, group: FixGroup, state: _State,
                      applicability: Applicability) -> list[_Unit]:
        """Return one unit per template pin of the group that changes a table where the
        rule fails; the variant is all of them."""
        pins = state.template.modified_bits()
        where = self.failing_on(state, rule.name)
        bits: list[tuple[RegisterKey, int]] = []
        for leaf, subleaf, register, mask in _merged(group.bits):
            key = (leaf, subleaf, register)
            filter_bits, value = pins.get(key, (0, 0))
            pinned = filter_bits & mask
            if not pinned:
                continue
            differs = 0
            for index in where:
                entry = self.targets[index].cpuid.entries.get((leaf, subleaf))
                if entry is not None:
                    differs |= (value ^ entry[_REGISTER_INDEX[register]]) & pinned
            bits.extend((key, 1 << bit) for bit in range(32) if differs >> bit & 1)
        if not bits:
            return []
        merged: dict[RegisterKey, int] = {}
        for key, mask in bits:
            merged[key] = merged.get(key, 0) | mask
        return [_Unit(rule.name, applicability,
                      tuple((key, BitChange(unpin=mask)) for key, mask in merged.items()))]

    # --- text ------------------------------------------------------------------------------

    def text_of(self, units: Sequence[_Unit]) -> str:
        """Return the template text with the units' changes made."""
        changes, why = _combine(units)
        return apply_edits(self.text, edit_text(self.text, self.path, changes, why, self.flags))

    def state_of(self, units: Sequence[_Unit]) -> _State | None:
        """Return the findings of the template with the units' changes made."""
        return self.check(self.text_of(units))


def _merged(refs: Sequence[BitRef]) -> list[BitRef]:
    """Merge bit references of one register into one mask each, in first-seen order."""
    masks: dict[RegisterKey, int] = {}
    for leaf, subleaf, register, mask in refs:
        key = (leaf, subleaf, register)
        masks[key] = masks.get(key, 0) | mask
    return [(*key, mask) for key, mask in masks.items()]


def _combine(units: Sequence[_Unit]) -> tuple[dict[RegisterKey, BitChange],
                                              dict[RegisterKey, dict[int, Why]]]:
    """Fold units into one change per register, and say per bit which rules want it."""
    changes: dict[RegisterKey, BitChange] = {}
    why: dict[RegisterKey, dict[int, Why]] = {}
    for unit in units:
        for key, change in unit.changes:
            old = changes.get(key, BitChange())
            changes[key] = BitChange(clear=old.clear | change.clear,
                                     unpin=old.unpin | change.unpin)
            reasons = why.setdefault(key, {})
            for bit in range(32):
                if (change.clear | change.unpin) >> bit & 1:
                    known = reasons.get(bit)
                    rules = (*known.rules, unit.rule) if known else (unit.rule,)
                    unsafe = unit.applicability == "unsafe" or (
                        known is not None and known.applicability == "unsafe")
                    reasons[bit] = Why(tuple(dict.fromkeys(rules)),
                                       "unsafe" if unsafe else "safe")
    # A bit both cleared and unpinned is cleared.
    return {key: BitChange(change.clear, change.unpin & ~change.clear)
            for key, change in changes.items()}, why


def _entry_flags(targets: Sequence[FixTarget]) -> dict[tuple[int, int], int]:
    """Return the KVM flags each entry has on most tables (for a new cpuid modifier): as
    recorded, else as KVM gives them (a CPU dump records none)."""
    votes: dict[tuple[int, int], Counter[int]] = {}
    for target in targets:
        for key in target.cpuid.entries:
            votes.setdefault(key, Counter())[target.cpuid.flag(*key)] += 1
    return {key: counter.most_common(1)[0][0] for key, counter in votes.items()}


_REASONS: dict[UnfixedReason, str] = {
    "no-fix": "its rule declares no template fix",
    "unsafe-only": "only an unsafe fix exists (--unsafe-fixes applies it)",
    "new-finding": "every fix its rule declares would bring a new error or warning, or "
                   "modify an entry one of the template's hosts lacks",
    "not-template": "the template does not cause it: no bit the template sets or clears "
                    "would change it",
}


def compute_fix(text: str, path: str, targets: Sequence[FixTarget],
                catalogue: Catalogue | None = None, *, keep: Keep | None = None,
                strict: bool = False, unsafe: bool = False) -> Fix:
    """Return the fix of one template's text on its tables (see the module docstring).

    ``keep`` applies the run's rule selection and severities to each table's findings;
    ``strict`` makes warnings targets too; ``unsafe`` allows unsafe fixes.
    """
    from xstate_check.engine.shipped import load_catalogue

    run = _Run(text, path, targets, catalogue or load_catalogue(), keep=keep, strict=strict,
               unsafe=unsafe)
    names = tuple(target.name for target in run.targets)
    start = run.check(text)
    if start is None:  # the template itself does not fit its tables: nothing to compare
        return Fix(path, text, text, profiles=names)
    goals = sorted(run.failing_rules(start), key=lambda name: run.catalogue.get(name).id)
    if not goals:
        return Fix(path, text, text, profiles=names)
    found = run.count(start)
    before = run.problems(start)
    #: The (table, rule) pairs with an error or warning before the fix: any other is new.
    known = set(before)
    units: list[_Unit] = []
    state = start
    reasons: dict[str, UnfixedReason] = {}
    for name in goals:
        if not run.failing_on(state, name):
            continue
        outcome = _fix_rule(run, name, units, state, known)
        if isinstance(outcome, str):
            reasons[name] = outcome
            continue
        units, state = outcome
    units = _minimize(run, units, goals, known)
    final = run.state_of(units) if units else start
    assert final is not None
    left = run.failing_rules(final)
    fixed = tuple(name for name in goals if name not in left)
    unfixed = tuple(
        Unfixed(name, reasons.get(name, "new-finding"),
                f"{name}: not fixed, {_REASONS[reasons.get(name, 'new-finding')]}",
                tuple(names[index] for index in run.failing_on(final, name)))
        for name in goals if name in left)
    if not units:
        return Fix(path, text, text, fixed=(), unfixed=unfixed, profiles=names, found=found,
                   remaining=found)
    changes, why = _combine(units)
    edits = tuple(edit_text(text, path, changes, why, run.flags))
    return Fix(path, text, apply_edits(text, list(edits)), edits=edits, fixed=fixed,
               unfixed=unfixed, profiles=names, found=found, remaining=run.count(final))


def _fix_rule(run: _Run, name: str, units: list[_Unit], state: _State,
              known: Known) -> tuple[list[_Unit], _State] | UnfixedReason:
    """Return the units and state with ``name`` fixed, or why it cannot be."""
    rule = run.catalogue.get(name)
    if not rule.autofix:
        return "no-fix"
    reason: UnfixedReason | None = None
    for group in rule.autofix:
        applicability = run.applicability(group)
        candidates = (run.clear_units(rule, group, state, applicability)
                      if group.action == "clear"
                      else run.restore_units(rule, group, state, applicability))
        if not candidates:
            continue
        if applicability == "unsafe" and not run.unsafe:
            reason = reason or "unsafe-only"
            continue
        for unit in candidates:
            settled = _settle(run, [*units, unit], known)
            if settled is None:
                reason = "new-finding" if reason in (None, "not-template") else reason
                continue
            trial, trial_state = settled
            # The rule is fixed, and no rule fails that did not fail before (one an earlier
            # fix removed included).
            if run.failing_rules(trial_state) <= run.failing_rules(state) - {name}:
                return trial, trial_state
            reason = reason or "new-finding"
    return reason or "not-template"


def _settle(run: _Run, units: list[_Unit], known: Known) -> tuple[list[_Unit], _State] | None:
    """Return the units, with fixes for the rules they make newly fail, and their state; None
    when a new error or warning stays (or the template no longer fits a table)."""
    for _ in range(_SETTLE_ROUNDS):
        state = run.state_of(units)
        if state is None:
            return None
        new = sorted({rule for _, rule in set(run.problems(state)) - known},
                     key=lambda name: run.catalogue.get(name).id)
        if not new:
            return units, state
        added = False
        for name in new:
            for group in run.catalogue.get(name).autofix:
                applicability = run.applicability(group)
                if applicability == "unsafe" and not run.unsafe:
                    continue
                candidates = _units_for_new(run, name, group, state, applicability)
                if candidates:
                    units = [*units, candidates[0]]
                    added = True
                    break
        if not added:
            return None
    return None


def _units_for_new(run: _Run, name: str, group: FixGroup, state: _State,
                   applicability: Applicability) -> list[_Unit]:
    """Return the units of a group for a rule a fix made newly fail: its new findings may
    be warnings, so they count as failing here whatever ``strict`` says."""
    strict = run.strict
    run.strict = True
    try:
        rule = run.catalogue.get(name)
        if group.action == "clear":
            return run.clear_units(rule, group, state, applicability)
        return run.restore_units(rule, group, state, applicability)
    finally:
        run.strict = strict


def _minimize(run: _Run, units: list[_Unit], goals: Sequence[str],
              known: Known) -> list[_Unit]:
    """Drop every change whose removal keeps the same rules fixed and brings nothing new:
    whole clear groups; the restored pins of a register that set bits, or those that clear
    bits, together; then each restored pin alone."""
    pins = run.template.modified_bits()

    def by_direction(unit: _Unit) -> list[_Unit]:
        if not any(change.unpin for _, change in unit.changes):
            return [unit]
        parts: list[_Unit] = []
        for key, change in unit.changes:
            value = pins.get(key, (0, 0))[1]
            for mask in (change.unpin & value, change.unpin & ~value):
                if mask:
                    parts.append(_Unit(unit.rule, unit.applicability,
                                       ((key, BitChange(unpin=mask)),)))
        return parts

    def by_bit(unit: _Unit) -> list[_Unit]:
        return [_Unit(unit.rule, unit.applicability, ((key, BitChange(unpin=1 << bit)),))
                for key, change in unit.changes for bit in range(32)
                if change.unpin >> bit & 1] or [unit]

    for split in (by_direction, by_bit):
        parts = [part for unit in units for part in split(unit)]
        if len(parts) > 1:
            units = _drop_unneeded(run, parts, goals, known)
    return units


def _drop_unneeded(run: _Run, units: list[_Unit], goals: Sequence[str],
                   known: Known) -> list[_Unit]:
    """Return ``units`` without each one whose removal changes nothing that matters."""
    state = run.state_of(units)
    if state is None:
        return units
    fixed = {name for name in goals if not run.failing_on(state, name)}
    kept = list(units)
    for unit in reversed(units):
        trial = [other for other in kept if other is not unit]
        trial_state = run.state_of(trial) if trial else run.check(run.text)
        if trial_state is None:
            continue
        if set(run.problems(trial_state)) - known:
            continue
        if all(not run.failing_on(trial_state, name) for name in fixed):
            kept = trial
    return kept

