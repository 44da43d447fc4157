"""One generated Python function per rule: the closures of rules.compiler, inlined.

A closure per node costs a Python call per node per message; for the common
rule (a few payload paths, comparisons with constants, AND/OR) that call
overhead is most of the time. This module writes the rule as the source of
one function, `apply(env)`, and compiles it once. Node kinds it knows become
inline expressions; any other node (IN, `=~`, ...) calls the closure the
compiler already built for it, so the generated function always computes
exactly what the closures compute, in the same order, raising the same
errors. FOREACH rules keep the closures.

A rule that only reads (no `*`, no alias read back, no fallback closure, no
function that reads the input itself) gets a second function, `run(message)`,
that reads the bus message's headers and cached JSON directly: building the
per-message Env costs about as much as a whole simple rule. A path prefix
read more than once (`payload.Payload` for several fields) is kept in a
local for the message, unless a field writes its first name.

Inline expressions keep intermediate values in walrus temporaries, one
name per node (`_t3`), so evaluation order is Python's left to right, as in
the closures. Constants and helpers are bound into the function's globals
under generated names; nothing from the SQL text is ever pasted into the
source except through `repr()` of a str/int/float/bool/None.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlglot import exp

from engine.bus.message import _UNSET as MESSAGE_UNSET
from rules import functions
from rules.compiled import NO_MATCH, Apply, Closure, CompiledRule, Field, Run
from rules.env import _DECODED_UNSET, column, payload_json, put_path
from rules.paths import path_of, take_step
from rules.sql import literal_value
from rules.values import UNDEFINED, compare, same

_PLAIN = (str, int, float, bool, type(None))
_DECODED: Any = object()  # first step of a path key into the decoded payload (`payload` alone is the text)
_MISS: Any = object()


def _key(steps: list[str | int]) -> tuple[Any, ...]:
    return (_DECODED, *steps[1:]) if steps[0] == "payload" and len(steps) > 1 else tuple(steps)


class _Source:
    """The generated function's text and the names it is compiled with."""

    def __init__(self, closure_for: Callable[[exp.Expression], Closure], on_message: bool) -> None:
        self.closure_for = closure_for
        self.on_message = on_message  # the function takes the bus message, and there is no Env
        self.names: dict[str, Any] = {
            "U": UNDEFINED, "_UNSET": _DECODED_UNSET, "_step": take_step, "_compare": compare,
            "_put_path": put_path, "_same": same, "_NULLS": (None, UNDEFINED),
            "_dget": dict.get, "_MISS": _MISS, "_MESSAGE_UNSET": MESSAGE_UNSET,
            "_payload_json": payload_json, "_column": column, "_NO_MATCH": NO_MATCH,
        }
        self.counter = 0
        self.cached: dict[tuple[Any, ...], str] = {}  # path prefix -> the local holding it

    def temp(self) -> str:
        self.counter += 1
        return f"_t{self.counter}"

    def bind(self, value: Any) -> str:
        """A name for a value the function needs (a constant, a helper, a fallback closure)."""
        if type(value) in _PLAIN and (type(value) is not float or math.isfinite(value)):
            return repr(value)  # plain constants are written as literals (inf and nan have none)
        name = f"_k{len(self.names)}"
        self.names[name] = value
        return name

    # --- expressions: each returns Python source that evaluates the node for `env` ---------

    def expr(self, node: exp.Expression) -> str:
        to_source = _DISPATCH.get(type(node))
        return to_source(self, node) if to_source is not None else self.closure(node)

    def closure(self, node: exp.Expression) -> str:
        """A node with no inline form (IN, `=~`, ...): a call of the closure the compiler built."""
        return f"{self.bind(self.closure_for(node))}({self.env()})"

    def column(self, node: exp.Column | exp.Dot | exp.Bracket) -> str:
        steps = path_of(node)
        return self.path(steps) if steps is not None else self.closure(node)

    def literal(self, node: exp.Literal) -> str:
        return self.bind(literal_value(node))

    def boolean(self, node: exp.Boolean) -> str:
        return self.bind(bool(node.this))

    def null(self, node: exp.Null) -> str:
        return "None"

    def paren(self, node: exp.Paren) -> str:
        return self.expr(node.this)

    def logical_and(self, node: exp.And) -> str:
        return f"({self.truth(node.this)} is True and {self.truth(node.expression)} is True)"

    def logical_or(self, node: exp.Or) -> str:
        return f"({self.truth(node.this)} is True or {self.truth(node.expression)} is True)"

    def logical_not(self, node: exp.Not) -> str:
        t = self.temp()
        return f"((not {t}) if type({t} := {self.expr(node.this)}) is bool else False)"

    def is_null(self, node: exp.Is) -> str:
        if not isinstance(node.expression, exp.Null):
            return self.closure(node)
        return f"({self.expr(node.this)} in _NULLS)"

    def arithmetic(self, node: exp.Binary, op: str) -> str:
        fn = self.bind(functions.OPERATORS[op])
        return f"{fn}({self.expr(node.this)}, {self.expr(node.expression)})"

    def truth(self, node: exp.Expression) -> str:
        """`node` as the left of `is True` (a constant by name: `1 is True` is a SyntaxWarning)."""
        while isinstance(node, exp.Paren):
            node = node.this
        if isinstance(node, exp.Literal):
            name = f"_k{len(self.names)}"
            self.names[name] = literal_value(node)
            return name
        return self.expr(node)

    def env(self) -> str:
        if self.on_message:
            raise _NeedsEnv
        return "env"

    def path(self, steps: list[str | int]) -> str:
        """A static path, step by step; a prefix the plan keeps in a local is computed once."""
        key = _key(steps)
        value = self.first(key, steps[0])
        for i in range(1, len(key)):
            step = key[i]
            t = self.temp()
            if type(step) is str:
                value = f"({t}.get({step!r}, U) if type({t} := {value}) is dict else _step({t}, {step!r}))"
            else:
                value = f"_step({value}, {step!r})"
            value = self.kept(key[: i + 1], value)
        return value

    def first(self, key: tuple[Any, ...], first: str | int) -> str:
        t = self.temp()
        if key[0] is _DECODED and self.on_message:
            value = f"({t} if ({t} := message._decoded) is not _MESSAGE_UNSET else _payload_json(message))"
        elif key[0] is _DECODED:
            value = f"({t} if ({t} := env._decoded) is not _UNSET else env.payload_value())"
        elif self.on_message:
            # as Env.__missing__: the message's headers, then its other columns
            column = "message.topic" if first == "topic" else f"_column(message, {first!r})"
            value = f"({t} if ({t} := message.headers.get({first!r}, _MISS)) is not _MISS else {column})"
        else:
            # env[name] in its order: the env's own keys, the message's headers, then the lazy columns
            value = (f"({t} if ({t} := _dget(env, {first!r}, _MISS)) is not _MISS else {t} "
                     f"if ({t} := env.headers.get({first!r}, _MISS)) is not _MISS else env[{first!r}])")
        return self.kept(key[:1], value)

    def kept(self, key: tuple[Any, ...], value: str) -> str:
        """`value`, computed once per message when the plan keeps this prefix in a local.

        The local is tested on every read: the code that first computed it may sit in a
        branch that did not run (the right of an OR)."""
        local = self.cached.get(key)
        if local is None:
            return value
        return f"({local} if {local} is not _UNSET else ({local} := {value}))"

    def plan(self, nodes: list[exp.Expression], written: set[str]) -> None:
        """Keep in locals the path prefixes read more than once, unless a field writes their first name."""
        counts: dict[tuple[Any, ...], int] = {}
        for node in nodes:
            for sub in node.walk():
                if isinstance(sub, (exp.Column, exp.Dot, exp.Bracket)) and not isinstance(sub.parent, (exp.Dot, exp.Bracket)):
                    steps = path_of(sub)
                    if steps is None or steps[0] in written or (steps[0] == "payload" and "payload" in written):
                        continue
                    key = _key(steps)
                    for n in range(1, len(key) + 1):
                        counts[key[:n]] = counts.get(key[:n], 0) + 1
        for key, count in counts.items():
            if count > 1:
                self.cached[key] = f"_c{len(self.cached)}"

    def comparison(self, node: exp.Binary, op: str, py: str) -> str:
        a = self.temp()
        left = self.expr(node.this)
        right_node = node.expression
        if isinstance(right_node, exp.Literal):
            # `x > 10`: a value of the constant's own type compares directly, anything else the EMQX way
            value = literal_value(right_node)
            k, kind = self.bind(value), type(value).__name__
            return f"(({a} {py} {k}) if type({a} := {left}) is {kind} else _compare({op!r}, {a}, {k}))"
        b, t = self.temp(), self.temp()
        right = self.expr(right_node)
        return (f"(({a} {py} {b}) if ({t} := type({a} := {left})) is type({b} := {right}) "
                f"and ({t} is str or {t} is int or {t} is float) else _compare({op!r}, {a}, {b}))")

    def case(self, node: exp.Case) -> str:
        """`V1 if C1 else V2 if C2 else D`: the conditions in order, one value computed. With a
        subject (`CASE x WHEN ...`), each WHEN is a pattern match: equal and of the same type."""
        default = node.args.get("default")
        text = self.expr(default) if default is not None else "U"
        subject = self.temp() if node.this is not None else None
        branches = []
        for branch in node.args.get("ifs") or []:
            cond, value = branch.this, branch.args["true"]
            if subject is None:
                test = f"{self.truth(cond)} is True"
            elif isinstance(cond, exp.Literal) and cond.is_string:
                test = f"(type({subject}) is str and {subject} == {self.bind(cond.this)})"
            else:
                test = f"_same({subject}, {self.expr(cond)})"
            branches.append((test, self.expr(value)))
        for test, value in reversed(branches):
            text = f"({value} if {test} else {text})"
        if subject is None:
            return text
        # the subject first, once: the walrus sits in a test that is always true
        return f"({text} if ({subject} := {self.expr(node.this)}) is not _MISS else None)"

    def call(self, node: exp.Anonymous) -> str:
        """A function call with the argument count the compiler already checked (div/mod: the closure)."""
        name = str(node.this).lower()
        spec = functions.lookup(name)
        if spec is None or name in ("div", "mod"):
            return self.closure(node)
        args = [self.expr(a) for a in node.expressions]
        if spec.needs_input:
            args.insert(0, self.env())
        return f"{self.bind(spec.impl)}({', '.join(args)})"

    # --- the function ------------------------------------------------------------------------

    def function(self, rule: CompiledRule, fields: list[tuple[Field, exp.Expression]], where: exp.Expression | None,
                 ) -> str:
        lines = ["def run(message):" if self.on_message else "def apply(env):"]
        self.plan([node for _, node in fields] + ([where] if where is not None else []),
                  {f.path[0] for f, _ in fields if f.path is not None and f.visible})
        if self.cached:
            lines.append(f"    {' = '.join(self.cached.values())} = _UNSET")
        # a top-level AND is one test per operand, in order, as `a is True and b is True` would run
        conjuncts = _conjuncts(where) if where is not None else []
        check = [f"    if {self.truth(c)} is not True:\n        return _NO_MATCH" for c in conjuncts]
        if rule.where_first:
            lines += check
        simple = all(f.path is not None and len(f.path) == 1 and not f.visible for f, _ in fields)
        if simple and (rule.where_first or where is None):
            items = ", ".join(f"{f.path[0]!r}: {self.expr(node)}" for f, node in fields if f.path is not None)
            lines.append(f"    return [{{{items}}}]")
            return "\n".join(lines)
        lines.append("    out = {}")
        for f, node in fields:
            if f.path is None:
                lines.append(f"    out.update({self.env()}.materialize())")
                continue
            lines.append(f"    value = {self.expr(node)}")
            key = f.path[0]
            if f.visible:
                if len(f.path) == 1 and key != "payload":
                    lines.append(f"    {self.env()}[{key!r}] = value")
                else:
                    lines.append(f"    _put_path({self.env()}, {self.bind(f.path)}, value)")
            if len(f.path) == 1:
                lines.append(f"    out[{key!r}] = value")
            else:
                lines.append(f"    _put_path(out, {self.bind(f.path)}, value)")
        if not rule.where_first:
            lines += check
        lines.append("    return [out]")
        return "\n".join(lines)


# one method per node kind, as sqlglot's generator; a kind not here runs as its closure
_DISPATCH: dict[type[exp.Expression], Callable[[_Source, Any], str]] = {
    exp.Column: _Source.column,
    exp.Dot: _Source.column,
    exp.Bracket: _Source.column,
    exp.Literal: _Source.literal,
    exp.Boolean: _Source.boolean,
    exp.Null: _Source.null,
    exp.Paren: _Source.paren,
    exp.EQ: lambda s, n: s.comparison(n, "=", "=="),
    exp.NEQ: lambda s, n: s.comparison(n, "!=", "!="),
    exp.GT: lambda s, n: s.comparison(n, ">", ">"),
    exp.GTE: lambda s, n: s.comparison(n, ">=", ">="),
    exp.LT: lambda s, n: s.comparison(n, "<", "<"),
    exp.LTE: lambda s, n: s.comparison(n, "<=", "<="),
    exp.And: _Source.logical_and,
    exp.Or: _Source.logical_or,
    exp.Not: _Source.logical_not,
    exp.Is: _Source.is_null,
    exp.Add: lambda s, n: s.arithmetic(n, "+"),
    exp.Sub: lambda s, n: s.arithmetic(n, "-"),
    exp.Mul: lambda s, n: s.arithmetic(n, "*"),
    exp.Div: lambda s, n: s.arithmetic(n, "/"),
    exp.IntDiv: lambda s, n: s.arithmetic(n, "div"),
    exp.Mod: lambda s, n: s.arithmetic(n, "mod"),
    exp.Case: _Source.case,
    exp.Anonymous: _Source.call,
}


class _NeedsEnv(Exception):
    """The rule reads or writes the Env itself: no function on the bare message."""


def _conjuncts(node: exp.Expression) -> list[exp.Expression]:
    if isinstance(node, exp.And):
        return _conjuncts(node.this) + _conjuncts(node.expression)
    if isinstance(node, exp.Paren):
        inner = _conjuncts(node.this)
        return inner if len(inner) > 1 else [node]
    return [node]


@dataclass(slots=True)
class Generated:
    apply: Apply
    run: Run | None  # None: the rule needs the Env (run it through one)
    sources: list[str]  # the functions' text, for tests and debugging


def generate(rule: CompiledRule, field_nodes: list[exp.Expression], where: exp.Expression | None,
             closure_for: Callable[[exp.Expression], Closure]) -> Generated | None:
    """For a rule without FOREACH: `apply(env)`, `run(message)` when the rule can run on the bare
    message (it reads only payload paths and columns, writes no alias back, calls nothing that
    reads the input itself), and the sources of both. None when Python cannot compile the text."""
    pairs = [(f, node.this if isinstance(node, exp.Alias) else node) for f, node in zip(rule.fields, field_nodes)]
    functions_: list[Any] = []
    sources: list[str] = []
    for on_message in (False, True):
        source = _Source(closure_for, on_message)
        try:
            text = source.function(rule, pairs, where)
        except _NeedsEnv:
            functions_.append(None)
            continue
        namespace = dict(source.names)
        try:
            code = compile(text, f"<rule {rule.id or '?'}>", "exec")
        except (SyntaxError, RecursionError, MemoryError):
            # Python's parser nests at most 200 parentheses ("too many nested parentheses"):
            # a rule that deep runs as the closures, which compute the same
            return None
        exec(code, namespace)  # noqa: S102 - our own generated text
        functions_.append(namespace["run" if on_message else "apply"])
        sources.append(text)
    return Generated(functions_[0], functions_[1], sources)
