"""Read ``rules/*.toml``: check every key, parse every expression, compile every rule.

Any problem is an ``InputError`` naming the file, line and column, with the line drawn and a
caret under the bad span; positions come from the raw text, since ``tomllib`` keeps none.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, NoReturn

import attrs

from xstate_check.engine import examples
from xstate_check.engine.catalogue import (
    FAMILIES,
    Catalogue,
    CompiledRule,
    FixGroup,
    MessagePart,
    Rule,
)
from xstate_check.engine.compiler import (
    Evaluator,
    attributes_read,
    compile_expression,
    compile_rule,
    constant_value,
    names_read,
    offending_quantifiers,
)
from xstate_check.engine.nodes import Binary, Call, Name, Node
from xstate_check.engine.parser import Resolved, parse_expression
from xstate_check.engine.plan import quick_condition
from xstate_check.engine.shipped import default_rules_dir, load_catalogue
from xstate_check.engine.tokenizer import KEYWORDS, RuleSyntaxError
from xstate_check.errors import InputError, LineIndex, Location, clip_quote, error_at
from xstate_check.facts import (
    ATTRIBUTES,
    CONSTANTS,
    FACTS,
    FUNCTIONS,
    ITEM_FIELDS,
    BitRef,
    Kind,
    language_type,
    needs_of,
)
from xstate_check.facts.components import attribute_needs
from xstate_check.facts.enumeration import DEFINED
from xstate_check.report import SEVERITIES
from xstate_check.textfile import read_text
from xstate_check.tomltext import parse_toml

__all__ = [
    "FILE_KEYS",
    "RULE_KEYS",
    "default_rules_dir",
    "language_names",
    "load_catalogue",
    "load_rule_files",
    "load_rule_text",
]

FILE_KEYS = ("family", "description", "rule")
RULE_REQUIRED = ("id", "name", "severity", "summary", "check", "message", "consequence", "fix",
                 "references", "pass", "fail")
RULE_OPTIONAL = ("applies", "each", "let", "cpuid_bits", "explanation", "autofix", "defines")
RULE_KEYS = RULE_REQUIRED + RULE_OPTIONAL
EXAMPLE_KEYS = ("base", "role", "cpuid", "template", "flags", "missing", "host", "note", "dest")
FIX_KEYS = ("applicability", "clear", "also", "anchor", "restore", "summary")
MESSAGE_FORMATS: dict[str, Kind] = {
    "mask": "mask", "size": "size", "hex": "int", "dec": "str", "sizes": "sizes",
    "version": "version", "bool": "bool", "str": "str",
}

_RULE_HEADER = re.compile(r"(?m)^[ \t]*\[\[[ \t]*rule[ \t]*\]\]")
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_ID = re.compile(r"XS(\d\d)(\d\d)")
_NAME = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
_LET_NAME = re.compile(r"[a-z_][a-z0-9_]*")
_BITS = re.compile(r"(0x[0-9a-fA-F]{1,8}|\d{1,10})\.(0x[0-9a-fA-F]{1,8}|\d{1,10})"
                   r"\.(eax|ebx|ecx|edx)(?::(\d{1,2})(?:-(\d{1,2}))?)?")
#: A fix's bits: ``LEAF.SUBLEAF[-SUBLEAF].REGISTER[:BITS]``, BITS a comma-separated list of
#: ``N`` or ``N-M``; or a CPUID feature by name (``AMX_TILE``).
_FIX_BITS = re.compile(r"(0x[0-9a-fA-F]{1,8}|\d{1,10})\.(0x[0-9a-fA-F]{1,8}|\d{1,10})"
                       r"(?:-(0x[0-9a-fA-F]{1,8}|\d{1,10}))?\.(eax|ebx|ecx|edx)"
                       r"(?::(\d{1,2}(?:-\d{1,2})?(?:,\d{1,2}(?:-\d{1,2})?)*))?")
_FEATURE_NAME = re.compile(r"[A-Z][A-Z0-9_]*")
#: At most this many subleaves in one fix spec (0xd.2-19 is 18).
_MAX_FIX_SUBLEAVES = 64
_TYPE_KINDS: dict[str, Kind] = {"int": "mask", "bool": "bool", "str": "str",
                                "version": "version", "list:int": "sizes"}


class _Source:
    """The raw text of one rule file, to turn offsets into lines, columns and drawings."""

    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.text = text
        self.headers = [match.start() for match in _RULE_HEADER.finditer(text)]
        # Lines of rules and examples are asked in file order: the text is counted once.
        self.lines = LineIndex(text)

    def line(self, offset: int) -> int:
        """Return the 1-based line of ``offset``."""
        return self.lines.position(offset)[0]

    def fail(self, offset: int, expected: str, length: int = 1) -> NoReturn:
        """Raise InputError at ``offset`` with a caret under ``length`` characters."""
        raise error_at(self.path, self.text, offset, expected, end=offset + length)

    def block(self, index: int) -> tuple[int, int]:
        """Return the text span of the ``index``-th ``[[rule]]`` table (the file if unsure)."""
        if index >= len(self.headers):
            return 0, len(self.text)
        end = self.headers[index + 1] if index + 1 < len(self.headers) else len(self.text)
        return self.headers[index], end

    def key(self, span: tuple[int, int], key: str, after: int | None = None) -> int | None:
        """Return the offset of ``key =`` within ``span`` (from ``after``), or None."""
        if len(key) > 256:
            # No rule key is this long; compiling a pattern of it would cost seconds.
            found = self.text.find(key, after if after is not None else span[0], span[1])
            return None if found < 0 else found
        name = re.escape(key)
        spellings = f"{name}|\"{name}\"|'{name}'"
        pattern = re.compile(r"(?m)(?:^|[{,])[ \t]*(?:" + spellings + r")[ \t]*=")
        match = pattern.search(self.text, after if after is not None else span[0], span[1])
        if match is None:
            return None
        return match.end() - len(match.group().lstrip("{, \t"))

    def value(self, span: tuple[int, int], key: str, content: str,
              after: int | None = None) -> tuple[int, bool]:
        """Return (offset, exact) where the string value of ``key`` begins.

        ``exact`` says the raw text there equals ``content``, so that offsets inside the value
        map to the file one for one.
        """
        key_at = self.key(span, key, after)
        if key_at is None:
            return span[0], False
        position = self.text.index("=", key_at) + 1
        while position < len(self.text) and self.text[position] in " \t":
            position += 1
        for quote in ('"""', "'''", '"', "'"):
            if self.text.startswith(quote, position):
                start = position + len(quote)
                if len(quote) == 3 and self.text.startswith("\n", start):
                    start += 1
                exact = self.text[start:start + len(content)] == content
                return (start, True) if exact else (position, False)
        return position, False


class _RuleReader:
    """Checks and compiles one ``[[rule]]`` table."""

    def __init__(self, source: _Source, index: int, table: Mapping[str, Any], family: str):
        self.source = source
        self.index = index
        self.table = table
        self.family = family
        self.span = source.block(index)

    # --- errors ---------------------------------------------------------------------------

    def fail_key(self, key: str, expected: str, after: int | None = None) -> NoReturn:
        at = self.source.key(self.span, key, after)
        if at is None:
            self.source.fail(self.span[0], expected, len("[[rule]]"))
        self.source.fail(at, expected, len(key))

    def fail_in(self, key: str, content: str, span: tuple[int, int], expected: str,
                after: int | None = None) -> NoReturn:
        start, exact = self.source.value(self.span, key, content, after)
        if exact:
            self.source.fail(start + span[0], expected, span[1] - span[0])
        self.fail_key(key, expected, after)

    # --- plain fields ---------------------------------------------------------------------

    def text(self, key: str, required: bool = True) -> str:
        value = self.table.get(key)
        if value is None and not required:
            return ""
        if not isinstance(value, str) or not value.strip():
            self.fail_key(key, f"{key} = a non-empty string")
        return value.strip()

    def strings(self, key: str) -> tuple[str, ...]:
        value = self.table.get(key, [])
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            self.fail_key(key, f"{key} = a list of strings")
        return tuple(value)

    def location(self) -> Location:
        offset = self.span[0]
        return Location(self.source.path, self.source.line(offset), 1)

    # --- expressions ----------------------------------------------------------------------

    def parse(self, key: str, content: str, names: Mapping[str, Resolved],
              after: int | None = None) -> Node:
        def resolve(name: str) -> Resolved:
            return names[name]

        try:
            return parse_expression(content, resolve, names)
        except RuleSyntaxError as error:
            self.fail_in(key, content, error.span, error.message, after)

    def read(self) -> Rule:
        unknown = [key for key in self.table if key not in RULE_KEYS]
        if unknown:
            self.fail_key(unknown[0], f"one of the rule keys ({', '.join(RULE_KEYS)}), not "
                          f"{clip_quote(unknown[0])}")
        for key in RULE_REQUIRED:
            if key not in self.table:
                self.source.fail(self.span[0], f"the rule key {key!r}", len("[[rule]]"))
        rule_id = self.text("id")
        match = _ID.fullmatch(rule_id)
        if match is None:
            self.fail_in("id", rule_id, (0, len(rule_id)), "an id such as \"XS0108\"")
        if int(match.group(1)) != FAMILIES[self.family]:
            self.fail_in("id", rule_id, (0, len(rule_id)), f"an id XS{FAMILIES[self.family]:02d}nn "
                         f"for the {self.family} family")
        name = self.text("name")
        if _NAME.fullmatch(name) is None:
            self.fail_in("name", name, (0, len(name)), "a lower-case name with dashes, such as "
                         "\"amx-tile-pair\"")
        severity = self.text("severity")
        if severity not in SEVERITIES:
            self.fail_in("severity", severity, (0, len(severity)),
                         f"a severity: {', '.join(SEVERITIES)}")
        names = self.names()
        each = self.table.get("each")
        if each is not None:
            if not isinstance(each, str) or FACTS.get(each) is None or FACTS[each].kind != "items":
                lists = ", ".join(n for n, spec in FACTS.items() if spec.kind == "items")
                self.fail_key("each", f"each = the name of a list fact ({lists})")
            names.update({f"item.{field}": Resolved("item", language_type(kind))
                          for field, kind in ITEM_FIELDS.items()})
        lets, let_nodes, let_kinds = self.lets(names)
        check_text = self.text("check")
        check = self.parse("check", check_text, names)
        if check.type != "bool":
            self.fail_in("check", check_text, check.span, "a condition (true when the subject "
                         "passes)")
        applies_text = self.table.get("applies")
        node: Node = check
        if applies_text is not None:
            applies_text = self.text("applies")
            applies = self.parse("applies", applies_text, names)
            if applies.type != "bool":
                self.fail_in("applies", applies_text, applies.span, "a condition")
            node = Binary("=>", applies, check, "bool", check.span)
        constant, value = constant_value(node)
        if constant:
            expected = "a check that reads some fact (this one is always " \
                       f"{'true' if value else 'false'})"
            if not (each is not None and value is False):
                self.fail_in("check", check_text, (0, len(check_text)), expected)
        defines = self.defines(check_text, check)
        message_text = self.text("message")
        _, compiled = self.compiled(node, tuple(zip(lets, let_nodes, strict=True)),
                                    let_kinds=let_kinds, each=each, names=names,
                                    message_text=message_text)
        return Rule(
            id=rule_id,
            name=name,
            family=self.family,
            severity=severity,
            summary=self.text("summary"),
            check=check_text,
            applies=applies_text,
            each=each,
            lets=tuple((key, text) for key, text in self.table.get("let", {}).items()),
            message=message_text,
            consequence=self.text("consequence"),
            fix=self.text("fix"),
            explanation=self.text("explanation", required=False),
            references=self.strings("references"),
            cpuid_bits=self.cpuid_bits(),
            passes=self.read_examples("pass"),
            fails=self.read_examples("fail"),
            location=self.location(),
            autofix=self.fix_groups(),
            compiled=attrs.evolve(compiled, definition=check if defines else None),
            defines=defines,
        )

    def defines(self, check_text: str, check: Node) -> str | None:
        """Return the function whose meaning this rule's check is part of (``defines``)."""
        defines = self.table.get("defines")
        if defines is None:
            return None
        if not isinstance(defines, str) or defines not in DEFINED:
            self.fail_key("defines", f"defines = one of {', '.join(map(repr, DEFINED))}")
        argument = DEFINED[defines]
        facts, functions, lets = names_read(check)
        if facts - {argument} or functions or lets or attributes_read(check):
            self.fail_in("check", check_text, (0, len(check_text)),
                         f"a check that reads {argument} alone, which {defines}'s argument "
                         "stands for")
        return defines

    def compiled(self, node: Node, let_sources: tuple[tuple[str, Node], ...], *,
                 let_kinds: dict[str, Kind], each: str | None, names: Mapping[str, Resolved],
                 message_text: str) -> tuple[tuple[MessagePart, ...], CompiledRule]:
        """Return the rule's message parts and its compiled form (``node``: the check with
        ``applies`` folded in)."""
        facts, functions, _ = names_read(node)
        attributes = attributes_read(node)
        for _, let_node in let_sources:
            more_facts, more_functions, _ = names_read(let_node)
            facts |= more_facts
            functions |= more_functions
        bound = {quantifier.var for quantifier in offending_quantifiers(node)}
        message = self.message(message_text, names, let_kinds, bound)
        test, lets, offenders = compile_rule(node, let_sources)
        return message, CompiledRule(
            test=test,
            each=each,
            lets=lets,
            let_kinds=let_kinds,
            message=message,
            facts=frozenset(facts),
            functions=frozenset(functions),
            needs=needs_of(facts, functions) | attribute_needs(attributes),
            source=(node, let_sources),
            quick=None if each is not None else (quick_condition(node),),
            offenders=offenders,
            attributes=frozenset(attributes),
        )

    def names(self) -> dict[str, Resolved]:
        return language_names()

    def lets(self, names: dict[str, Resolved]) -> tuple[
        dict[str, Evaluator], list[Node], dict[str, Kind]
    ]:
        table = self.table.get("let", {})
        if not isinstance(table, dict):
            self.fail_key("let", "let = a table of name = \"expression\"")
        lets: dict[str, Evaluator] = {}
        nodes: list[Node] = []
        kinds: dict[str, Kind] = {}
        header = re.compile(r"(?m)^[ \t]*\[[ \t]*rule\.let[ \t]*\]")
        found = header.search(self.source.text, self.span[0], self.span[1])
        after = found.end() if found else self.source.key(self.span, "let")
        for name, text in table.items():
            if _LET_NAME.fullmatch(name) is None or name in names or name in KEYWORDS:
                self.fail_key(name, "a new lower-case name for this let, not "
                              f"{clip_quote(name)}", after)
            if not isinstance(text, str):
                self.fail_key(name, f"{name} = \"an expression\"", after)
            node = self.parse(name, text, names, after)
            if node.type == "items" or (node.type.startswith("list:") and node.type != "list:int"):
                self.fail_in(name, text, node.span, "a number, mask, condition or string", after)
            lets[name] = compile_expression(node, lets)
            nodes.append(node)
            kinds[name] = _node_kind(node)
            names[name] = Resolved("let", node.type)
        return lets, nodes, kinds

    def message(self, text: str, names: Mapping[str, Resolved], let_kinds: Mapping[str, Kind],
                bound: Collection[str]) -> tuple[MessagePart, ...]:
        """Return a message's parts; ``bound`` are the variables of the check's ``all``
        quantifiers, whose offending components ``{c}`` and ``{c.name}`` show."""
        parts: list[MessagePart] = []
        position = 0
        for match in _PLACEHOLDER.finditer(text):
            parts.append(text[position:match.start()])
            position = match.end()
            token = match.group()
            if token in ("{{", "}}"):
                parts.append(token[0])
                continue
            if match.group(1) is None:
                self.fail_in("message", text, (match.start(), match.end()),
                             "'{name}' or '{name:format}'; write '{{' or '}}' for a brace")
            name, _, fmt = match.group(1).strip().partition(":")
            meaning = names.get(name)
            var, _, attribute = name.partition(".")
            if var in bound and (not attribute or attribute in ATTRIBUTES):
                if fmt and fmt not in MESSAGE_FORMATS:
                    self.fail_in("message", text, (match.start() + 1, match.end() - 1),
                                 f"a format among {', '.join(MESSAGE_FORMATS)}")
                parts.append((name, MESSAGE_FORMATS[fmt] if fmt else
                              ATTRIBUTES[attribute].kind if attribute else "mask"))
                continue
            if meaning is None or meaning.role in ("constant", "function"):
                self.fail_in("message", text, (match.start() + 1, match.end() - 1),
                             "a fact, let, item field or variable of the check's 'all' to "
                             f"show, not {clip_quote(name)}")
            if fmt and fmt not in MESSAGE_FORMATS:
                self.fail_in("message", text, (match.start() + 1, match.end() - 1),
                             f"a format among {', '.join(MESSAGE_FORMATS)}")
            if fmt:
                kind = MESSAGE_FORMATS[fmt]
            elif meaning.role == "let":
                kind = let_kinds[name]
            elif meaning.role == "item":
                kind = ITEM_FIELDS.get(name.removeprefix("item."), "int")
            else:
                kind = FACTS[name].kind
            parts.append((name, kind))
        parts.append(text[position:])
        return tuple(part for part in parts if part != "")

    def cpuid_bits(self) -> tuple[BitRef, ...]:
        refs: list[BitRef] = []
        for text in self.strings("cpuid_bits"):
            match = _BITS.fullmatch(text)
            if match is None:
                self.fail_in("cpuid_bits", text, (0, len(text)),
                             "CPUID bits such as \"0xd.0.eax:17-18\" or \"0x7.0.edx:24\"")
            low = int(match.group(4)) if match.group(4) else 0
            high = int(match.group(5)) if match.group(5) else (low if match.group(4) else 31)
            if high > 31 or low > high:
                self.fail_in("cpuid_bits", text, (0, len(text)), "bit numbers 0 to 31, low-high")
            leaf = examples.parse_cpuid_number(match.group(1))
            subleaf = examples.parse_cpuid_number(match.group(2))
            if leaf is None or subleaf is None:
                self.fail_in("cpuid_bits", text, (0, len(text)),
                             "a leaf and subleaf of at most 0xffffffff")
            mask = ((1 << (high - low + 1)) - 1) << low
            refs.append((leaf, subleaf, match.group(3), mask))
        return tuple(refs)

    def fix_groups(self) -> tuple[FixGroup, ...]:
        value = self.table.get("autofix")
        if value is None:
            return ()
        if not isinstance(value, list) or not value or not all(isinstance(v, dict) for v in value):
            self.fail_key("autofix", "[[rule.autofix]] tables (applicability, clear or restore, "
                          "summary)")
        groups: list[FixGroup] = []
        after = self.span[0]
        header = re.compile(r"(?m)^[ \t]*\[\[[ \t]*rule\.autofix[ \t]*\]\]")
        for table in value:
            match = header.search(self.source.text, after, self.span[1])
            at = match.start() if match else self.span[0]
            after = match.end() if match else after
            groups.append(self.fix_group(table, at))
        return tuple(groups)

    def fix_group(self, table: Mapping[str, Any], at: int) -> FixGroup:
        region = (at, self.span[1])

        def fail(field: str, expected: str) -> NoReturn:
            where = self.source.key(region, field)
            self.source.fail(where if where is not None else at, expected,
                             len(field) if where is not None else len("[[rule.autofix]]"))

        def fail_value(field: str, text: str, expected: str) -> NoReturn:
            key_at = self.source.key(region, field)
            if key_at is not None:
                found = self.source.text.find(f'"{text}"', key_at, region[1])
                if found >= 0:
                    self.source.fail(found + 1, expected, max(1, len(text)))
            fail(field, expected)

        for field in table:
            if field not in FIX_KEYS:
                fail(field, f"one of the autofix keys ({', '.join(FIX_KEYS)}), not "
                     f"{clip_quote(field)}")
        applicability = table.get("applicability")
        if applicability not in ("safe", "unsafe"):
            fail("applicability", 'applicability = "safe" (completes what the template '
                 'started) or "unsafe" (removes a feature the template did not touch)')
        summary = table.get("summary")
        if not isinstance(summary, str) or not summary.strip():
            fail("summary", 'summary = "a sentence saying what the fix changes"')
        if ("clear" in table) == ("restore" in table):
            fail("restore" if "restore" in table else "clear",
                 'exactly one of clear = [bits cleared together] or restore = [bits whose '
                 'template pins are dropped]')
        action: Literal["clear", "restore"] = "clear" if "clear" in table else "restore"
        for field in ("also", "anchor"):
            if field in table and action != "clear":
                fail(field, f"{field} only with clear")

        def specs(field: str) -> tuple[tuple[str, ...], tuple[BitRef, ...]]:
            items = table.get(field)
            if (not isinstance(items, list) or not items
                    or not all(isinstance(item, str) for item in items)):
                fail(field, f'{field} = ["0xd.0.eax:17-18", "AMX_TILE", …] (a non-empty list '
                     "of CPUID bits or feature names)")
            refs: list[BitRef] = []
            for item in items:
                parsed = _fix_bits(item)
                if isinstance(parsed, str):
                    fail_value(field, item, parsed)
                refs.extend(parsed)
            return tuple(items), tuple(refs)

        bit_specs, bits = specs(action)
        also_specs, also = specs("also") if "also" in table else ((), ())
        anchor_specs, anchor = specs("anchor") if "anchor" in table else ((), ())
        return FixGroup(action=action, applicability=applicability, bits=bits, also=also,
                        anchor=anchor, summary=" ".join(summary.split()), specs=bit_specs,
                        also_specs=also_specs, anchor_specs=anchor_specs)

    def read_examples(self, key: str) -> tuple[examples.Example, ...]:
        value = self.table.get(key)
        if not isinstance(value, list) or not value or not all(isinstance(v, dict) for v in value):
            self.fail_key(key, f"at least one [[rule.{key}]] example table")
        found: list[examples.Example] = []
        after = self.span[0]
        header = re.compile(rf"(?m)^[ \t]*\[\[[ \t]*rule\.{key}[ \t]*\]\]")
        for number, table in enumerate(value):
            match = header.search(self.source.text, after, self.span[1])
            at = match.start() if match else self.span[0]
            after = match.end() if match else after
            found.append(self.example(key, number, table, at))
        return tuple(found)

    def example(self, key: str, number: int, table: Mapping[str, Any],
                at: int) -> examples.Example:
        region = (at, self.span[1])

        def fail(field: str, expected: str) -> NoReturn:
            where = self.source.key(region, field)
            self.source.fail(where if where is not None else at, expected,
                             len(field) if where is not None else 1)

        for field in table:
            if field not in EXAMPLE_KEYS:
                fail(field, f"one of the example keys ({', '.join(EXAMPLE_KEYS)}), not "
                     f"{clip_quote(field)}")
        base = table.get("base", "spr-guest")
        # Type before lookup: base = {…} or […] is unhashable.
        if not isinstance(base, str) or base not in examples.BASES:
            fail("base", f"base = one of {', '.join(examples.BASES)}")
        role = table.get("role")
        if role not in (None, "guest", "cpu"):
            fail("role", "role = \"guest\" or \"cpu\"")

        def pairs(field: str, within: Mapping[str, Any] = table) -> tuple[tuple[str, str], ...]:
            if field not in within:
                return ()
            value = within[field]
            if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
                fail(field, f"{field} = {{ \"0xd.0.eax\" = \"0x202e7\", … }}")
            for cpuid_key, edit in value.items():
                try:
                    examples.parse_change(cpuid_key, edit)
                except examples.ExampleError as error:
                    fail(field, str(error))
            return tuple(value.items())

        host = self.host_pairs(table, fail)
        dest = self.dest_example(table, fail, pairs) if "dest" in table else None
        missing = table.get("missing", [])
        if not isinstance(missing, list) or not all(isinstance(m, str) for m in missing):
            fail("missing", "missing = [\"0xd.0x11\", …]")
        for entry in missing:
            try:
                _, _, register = examples.parse_key(entry)
            except examples.ExampleError as error:
                fail("missing", str(error))
            if register is not None:
                fail("missing", f"missing = [\"LEAF.SUBLEAF\", …], not {clip_quote(entry)}")
        note = table.get("note", "")
        if not isinstance(note, str):
            fail("note", "note = \"a sentence\"")
        line = self.source.line(at)
        return examples.Example(
            base=base,
            role=role,
            cpuid=pairs("cpuid"),
            template=pairs("template"),
            flags=self.flag_pairs(table, fail),
            missing=tuple(missing),
            host=host,
            note=note.strip(),
            location=Location(self.source.path, line, 1),
            dest=dest,
        )


    @staticmethod
    def host_pairs(within: Mapping[str, Any],
                   fail: Callable[[str, str], NoReturn]) -> tuple[tuple[str, str], ...]:
        """Return an example's ``host = { … }`` facts, checked."""
        if "host" not in within:
            return ()
        host = within["host"]
        if not isinstance(host, dict):
            fail("host", "host = { guest_permitted = \"0x2e7\", … }")
        for host_key, host_value in host.items():
            if host_key not in examples.HOST_KEYS:
                fail("host", f"host facts among {', '.join(examples.HOST_KEYS)}, not "
                     f"{clip_quote(host_key)}")
            if not isinstance(host_value, str):
                fail("host", f"{host_key} = \"a string\" (masks in hex)")
            try:
                examples.check_host_value(host_key, host_value)
            except examples.ExampleError as error:
                fail("host", str(error))
        return tuple((k, str(v)) for k, v in host.items())

    @staticmethod
    def dest_example(
        table: Mapping[str, Any],
        fail: Callable[[str, str], NoReturn],
        pairs: Callable[[str, Mapping[str, Any]], tuple[tuple[str, str], ...]],
    ) -> examples.DestExample:
        """Return an example's ``dest = { base, cpuid, host, peer }`` table, checked."""
        spec = table["dest"]
        if not isinstance(spec, dict):
            fail("dest", "dest = { base = \"spr-guest\", cpuid = { … }, host = { … }, "
                 "peer = { … } }")
        for field in spec:
            if field not in examples.DEST_KEYS:
                fail("dest", f"one of the dest keys ({', '.join(examples.DEST_KEYS)}), not "
                     f"{clip_quote(field)}")
        base = spec.get("base")
        if base is not None and (not isinstance(base, str) or base not in examples.BASES):
            fail("dest", f"dest base = one of {', '.join(examples.BASES)}")
        return examples.DestExample(
            base=base, cpuid=pairs("cpuid", spec), host=_RuleReader.host_pairs(spec, fail),
            peer=pairs("peer", spec) if "peer" in spec else None,
        )

    @staticmethod
    def flag_pairs(table: Mapping[str, Any],
                   fail: Callable[[str, str], NoReturn]) -> tuple[tuple[str, str], ...]:
        """Return an example's ``flags = { "0x1e.0" = "0" }`` edits, checked."""
        if "flags" not in table:
            return ()
        value = table["flags"]
        if not isinstance(value, dict):
            fail("flags", "flags = { \"0x1e.0\" = \"0\" }")
        for key, flags in value.items():
            try:
                _, _, register = examples.parse_key(key)
                # KVM's per-entry flags are a u32.
                valid = (register is None and isinstance(flags, str)
                         and re.fullmatch(r"\d{1,10}", flags) is not None
                         and int(flags) <= 0xFFFF_FFFF)
            except examples.ExampleError:
                valid = False
            if not valid:
                fail("flags", f"flags = {{ \"LEAF.SUBLEAF\" = \"FLAGS\" }}, not {clip_quote(key)}")
        return tuple(value.items())


def _fix_bits(text: str) -> list[BitRef] | str:
    """Return the bits of one fix spec, or what was expected instead."""
    from xstate_check.cpuid import FEATURES

    expected = ('CPUID bits such as "0xd.0.eax:17-18", "0x7.0.edx:22,24-25" or '
                '"0xd.2-19.eax", or a CPUID feature name such as "AMX_TILE"')
    if _FEATURE_NAME.fullmatch(text):
        feature = FEATURES.get(text)
        if feature is None:
            close = difflib.get_close_matches(text, FEATURES, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            return f"a CPUID feature `xstate-check facts` names, not {clip_quote(text)}{hint}"
        return [(feature.leaf, feature.subleaf, feature.register, 1 << feature.bit)]
    match = _FIX_BITS.fullmatch(text)
    if match is None:
        return expected
    leaf = examples.parse_cpuid_number(match.group(1))
    first = examples.parse_cpuid_number(match.group(2))
    last = examples.parse_cpuid_number(match.group(3)) if match.group(3) else first
    if leaf is None or first is None or last is None:
        return "a leaf and subleaves of at most 0xffffffff"
    if last < first or last - first >= _MAX_FIX_SUBLEAVES:
        return f"a subleaf range low-high of at most {_MAX_FIX_SUBLEAVES} subleaves"
    mask = 0
    for part in (match.group(5) or "0-31").split(","):
        low_text, _, high_text = part.partition("-")
        low = int(low_text)
        high = int(high_text) if high_text else low
        if high > 31 or low > high:
            return "bit numbers 0 to 31, low-high"
        mask |= ((1 << (high - low + 1)) - 1) << low
    return [(leaf, subleaf, match.group(4), mask) for subleaf in range(first, last + 1)]


def language_names() -> dict[str, Resolved]:
    """Return every name a rule expression may use: facts, xfeature constants, functions."""
    return dict(_language_names())


@functools.cache
def _language_names() -> dict[str, Resolved]:
    names: dict[str, Resolved] = {}
    for name, spec in FACTS.items():
        if spec.kind != "items":
            names[name] = Resolved("fact", language_type(spec.kind))
    for name, value in CONSTANTS.items():
        names[name] = Resolved("constant", "int", value=value)
    for name, function in FUNCTIONS.items():
        names[name] = Resolved("function", language_type(function.kind),
                               tuple(language_type(kind) for kind in function.args))
    return names


def _node_kind(node: Node) -> Kind:
    """Return how a let's value is shown: as its fact or function is, else by its type."""
    if isinstance(node, Call):
        return FUNCTIONS[node.name].kind
    if isinstance(node, Name) and node.role == "fact":
        return FACTS[node.name].kind
    return _TYPE_KINDS.get(node.type, "str")


def load_rule_text(text: str, path: str) -> list[Rule]:
    """Read one rule file's text; its name (without ``.toml``) must be its family."""
    source = _Source(path, text)
    data = parse_toml(text, path)
    whole = (0, len(text))
    for key in data:
        if key not in FILE_KEYS:
            at = source.key(whole, key)
            source.fail(at or 0, f"one of the top-level keys ({', '.join(FILE_KEYS)}), not "
                        f"{clip_quote(key)}", len(key))
    family = data.get("family")
    stem = Path(path).stem
    # Type first: a family given as a table or an array is unhashable.
    if not isinstance(family, str) or family not in FAMILIES:
        at = source.key(whole, "family")
        source.fail(at or 0, f"family = one of {', '.join(FAMILIES)}", 6)
    if family != stem:
        at = source.key(whole, "family")
        source.fail(at or 0, f"family = {stem!r}, the file's name", 6)
    rules = data.get("rule", [])
    if not isinstance(rules, list) or not rules or not all(isinstance(t, dict) for t in rules):
        at = source.key(whole, "rule")
        source.fail(at or 0, "at least one [[rule]] table (and nothing but tables)",
                    4 if at is not None else 1)
    return [_RuleReader(source, index, table, family).read() for index, table in enumerate(rules)]


def load_rule_files(paths: Sequence[Path], read: Callable[[Path], str] | None = None) -> Catalogue:
    """Load rule files into one catalogue; ids and names must be unique across files."""
    rules: list[Rule] = []
    seen: dict[str, Rule] = {}
    for path in paths:
        # Regular files of bounded size only: a FIFO or /dev/zero must not hang the loader.
        text = read(path) if read else read_text(path)
        for rule in load_rule_text(text, str(path)):
            for key in (rule.id, rule.name):
                if key in seen:
                    other = seen[key]
                    raise InputError(rule.location, f"a unique rule id and name: {key} is also "
                                     f"the rule at {other.location}")
                seen[key] = rule
            rules.append(rule)
    if not rules:
        raise InputError(Location(", ".join(str(p) for p in paths) or "rules/"),
                         "at least one rule file")
    rules.sort(key=lambda rule: rule.id)
    return Catalogue(tuple(rules), tuple(str(path) for path in paths))
