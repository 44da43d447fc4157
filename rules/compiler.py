"""Rule SQL trees → Python closures, once per rule.

Each sqlglot node kind has one small function that returns a closure
`f(env) -> value`; per message only the closures run. Semantics are EMQX's:
fields left to right, each alias visible to the fields after it and to WHERE,
`undefined` for what is missing, loose comparisons (rules.values), FOREACH
producing one output per item.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from typing import Any

from sqlglot import exp
from sqlglot.errors import ErrorLevel

from engine.bus.topic import matches as topic_matches
from rules import codegen, functions, limits
from rules.compiled import Closure, CompiledRule, Field, foreach_closures, select_closures, through_env
from rules.depth import TOO_DEEP, room_to_recurse
from rules.env import _DECODED_UNSET as _UNSET
from rules.env import Env
from rules.paths import path_of, take_step
from rules.sql import ParsedRule, RuleSyntaxError, literal_value, parse_rule
from rules.values import UNDEFINED, RuleError, compare, same

_FAST_OPS = {"=": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


def compile_sql(sql: str, rule_id: str = "", generate: bool = True) -> CompiledRule:
    """Parse and compile; raise `RuleSyntaxError` naming the rule and position.

    With `generate` (the default) a rule without FOREACH runs as one generated function
    (rules.codegen); without it, as the closures alone (the tests compare the two)."""
    with room_to_recurse():
        parsed = parse_rule(sql, rule_id)
        try:
            return _Compiler(parsed, rule_id, generate).rule()
        except RuleSyntaxError as exc:
            exc.rule_id = rule_id
            raise
        except RecursionError:  # a backstop: parse_rule has checked the depth
            limits.count("sql_depth")
            raise RuleSyntaxError(TOO_DEEP, rule_id=rule_id) from None


class _Compiler:
    def __init__(self, parsed: ParsedRule, rule_id: str, generate: bool) -> None:
        self.parsed = parsed
        self.generate = generate
        self.rule_id = rule_id
        self.aliases: set[str] = set()

    def fail(self, message: str, node: exp.Expression | None = None) -> RuleSyntaxError:
        line, col = self._locate(node)
        return RuleSyntaxError(message, line, col, self.rule_id)

    def _locate(self, node: exp.Expression | None) -> tuple[int, int]:
        """Best position for a node: where its first token starts, else where its name appears."""
        if node is None:
            return 0, 0
        starts = [sub.meta["start"] for sub in node.walk() if "start" in (getattr(sub, "meta", None) or {})]
        if starts:
            sql, start = self.parsed.sql, min(starts)
            return sql.count("\n", 0, start) + 1, start - (sql.rfind("\n", 0, start) + 1) + 1
        name = node.name if isinstance(node, exp.Anonymous) else None
        if name:
            found = re.search(rf"\b{re.escape(name)}\s*\(", self.parsed.sql)
            if found:
                sql = self.parsed.sql
                return sql.count("\n", 0, found.start()) + 1, found.start() - (sql.rfind("\n", 0, found.start()) + 1) + 1
        return 0, 0

    def rule(self) -> CompiledRule:
        p = self.parsed
        fields = [self.field(node) for node in p.fields]
        collection_key = "item"
        if p.foreach:
            last = fields[-1]
            if last.fn is None:
                raise self.fail("FOREACH needs an expression for its list, not *")  # (sql.py says where)
            alias = p.fields[-1]
            collection_key = last.path[0] if isinstance(alias, exp.Alias) and last.path is not None else "item"
            if not isinstance(alias, exp.Alias) and path_of(alias) is None:
                # `FOREACH payload.xs` keeps the list at its path (EMQX's outputs show it there);
                # `FOREACH json_decode(payload)` has no name to keep it under
                fields[-1] = Field(None, last.fn)
        where = self.expr(p.where) if p.where is not None else None
        # the collection key is visible to DO and INCASE
        self.aliases.add(collection_key)
        do_fields = [self.field(node) for node in p.do_fields]
        incase = self.expr(p.incase) if p.incase is not None else None
        defined = {f.path[0] for f in fields if f.path}
        _mark_visible(fields, p.fields, [p.where, p.incase, *p.do_fields])
        _mark_visible(do_fields, p.do_fields, [])
        where_first = not p.foreach and p.where is not None and not any(_may_read(p.where, n) for n in defined)
        if p.foreach:
            apply = foreach_closures(fields, where, do_fields, incase, collection_key)
        else:
            apply = select_closures(fields, where, where_first)
        rule = CompiledRule(
            id=self.rule_id, sql=p.sql, topics=p.topics, foreach=p.foreach, fields=fields, where=where,
            where_first=where_first, apply=apply, run=through_env(apply),
            do_fields=do_fields, incase=incase, collection_key=collection_key,
        )
        if self.generate and not p.foreach:
            generated = codegen.generate(rule, p.fields, p.where, self.expr)
            if generated is not None:  # else the closures stay: Python could not compile the text
                rule.apply = generated.apply
                rule.run = generated.run or through_env(generated.apply)
                rule.sources = generated.sources
        return rule

    # --- fields --------------------------------------------------------------------------

    def field(self, node: exp.Expression) -> Field:
        if isinstance(node, exp.Star):
            return Field(None, None)
        if isinstance(node, exp.Alias):
            name = node.alias
            alias_path = self.parsed.path_aliases.get(name, [name])
            self.aliases.add(alias_path[0])
            return Field(alias_path, self.expr(node.this))
        fn = self.expr(node)
        path = path_of(node)  # `SELECT payload.x[2]` puts the value at that path, as EMQX
        if path is None:
            if isinstance(node, exp.Literal) and node.is_string:
                path = [node.this]  # EMQX names a selected string constant by its value
            else:
                path = [node.sql(dialect="mysql", unsupported_level=ErrorLevel.IGNORE)]
        return Field(path, fn)

    # --- expressions ------------------------------------------------------------------------

    def expr(self, node: exp.Expression) -> Closure:
        handler = _HANDLERS.get(type(node))
        if handler is None:
            raise self.fail(f"{node.sql()!r} is not supported in rule SQL", node)
        return handler(self, node)

    def path(self, node: exp.Expression) -> Closure:
        steps = path_of(node, dynamic=True)
        if steps is None:
            raise self.fail(f"cannot read {node.sql()!r} as a path", node)
        compiled = [self.expr(s) if isinstance(s, exp.Expression) else s for s in steps]
        return _path_getter(compiled)

    def literal(self, node: exp.Literal) -> Closure:
        value = literal_value(node)
        return lambda env: value

    def constant(self, value: Any) -> Closure:
        return lambda env: value

    def binary(self, node: exp.Binary, op: str) -> Closure:
        return _operator(op, self.expr(node.this), self.expr(node.expression))

    def comparison(self, node: exp.Binary, op: str) -> Closure:
        left, right = self.expr(node.this), self.expr(node.expression)
        const = node.expression
        if op in ("=", "!=") and isinstance(const, exp.Literal) and const.is_string:
            # `x = 'text'`, the common filter: a string compares directly, anything else the EMQX way
            text = const.this
            if op == "=":
                return lambda env: (v == text) if type(v := left(env)) is str else compare("=", v, text)
            return lambda env: (v != text) if type(v := left(env)) is str else compare("!=", v, text)
        fast = _FAST_OPS[op]

        def cmp(env: Env) -> Any:
            a, b = left(env), right(env)
            t = type(a)
            if t is type(b) and (t is str or t is int or t is float):
                return fast(a, b)  # same simple kind: no coercion to decide
            return compare(op, a, b)

        return cmp

    def topic_match(self, node: exp.RegexpLike) -> Closure:
        left, right = self.expr(node.this), self.expr(node.expression)

        def match(env: Env) -> Any:
            topic, topic_filter = left(env), right(env)
            if topic is UNDEFINED or topic_filter is UNDEFINED:
                return False
            if type(topic) is not str or type(topic_filter) is not str:
                raise RuleError(f"=~ compares a topic with a topic filter, got {topic!r} and {topic_filter!r}")
            return topic_matches(topic_filter, topic)

        return match

    def logical_and(self, node: exp.And) -> Closure:
        left, right = self.expr(node.this), self.expr(node.expression)
        return lambda env: left(env) is True and right(env) is True

    def logical_or(self, node: exp.Or) -> Closure:
        left, right = self.expr(node.this), self.expr(node.expression)
        return lambda env: left(env) is True or right(env) is True

    def logical_not(self, node: exp.Not) -> Closure:
        inner = self.expr(node.this)

        def negate(env: Env) -> Any:
            value = inner(env)
            return (not value) if type(value) is bool else False

        return negate

    def membership(self, node: exp.In) -> Closure:
        if node.args.get("query") is not None or node.args.get("unnest") is not None:
            raise self.fail("IN takes a list of values", node)
        value = self.expr(node.this)
        options = [self.expr(o) for o in node.expressions]

        def member(env: Env) -> bool:
            v = value(env)
            return any(same(v, o(env)) for o in options)  # lists:member: 1 is not in (1.0)

        return member

    def is_null(self, node: exp.Is) -> Closure:
        if not isinstance(node.expression, exp.Null):
            raise self.fail("IS is only supported as IS NULL / IS NOT NULL", node)
        inner = self.expr(node.this)
        return lambda env: inner(env) in (None, UNDEFINED)

    def negative(self, node: exp.Neg) -> Closure:
        inner = self.expr(node.this)
        return lambda env: functions.negate(inner(env))

    def case(self, node: exp.Case) -> Closure:
        on = self.expr(node.this) if node.this is not None else None
        branches = [(self.expr(b.this), self.expr(b.args["true"])) for b in node.args.get("ifs") or []]
        default = self.expr(node.args["default"]) if node.args.get("default") is not None else None

        def searched(env: Env) -> Any:
            for cond, value in branches:
                if cond(env) is True:
                    return value(env)
            return default(env) if default else UNDEFINED

        if on is None:
            return searched

        def switch(env: Env) -> Any:
            subject = on(env)
            for cond, value in branches:
                if same(subject, cond(env)):  # a pattern match in EMQX: 1.0 does not match WHEN 1
                    return value(env)
            return default(env) if default else UNDEFINED

        return switch

    def array(self, node: exp.Array) -> Closure:
        items = [self.expr(i) for i in node.expressions]
        return lambda env: [i(env) for i in items]

    def call(self, node: exp.Anonymous) -> Closure:
        name = str(node.this).lower()
        if name in ("div", "mod"):
            # EMQX's operators are functions too: mod(3, 2) is 3 mod 2
            if len(node.expressions) != 2:
                raise self.fail(f"{name}() takes 2 arguments, not {len(node.expressions)}", node)
            return _operator(name, *[self.expr(a) for a in node.expressions])
        spec = functions.lookup(name)
        if spec is None:
            raise self.fail(f"unknown function {node.this}()", node)
        args = [self.expr(a) for a in node.expressions]
        n = len(args)
        if n < spec.min_args or (spec.max_args is not None and n > spec.max_args):
            expected = str(spec.min_args) if spec.max_args == spec.min_args else (
                f"at least {spec.min_args}" if spec.max_args is None else f"{spec.min_args} to {spec.max_args}")
            raise self.fail(f"{name}() takes {expected} argument{'s' if expected != '1' else ''}, not {n}", node)
        impl = spec.impl
        if spec.needs_input:
            return lambda env: impl(env, *[a(env) for a in args])
        if n == 0:
            return lambda env: impl()
        if n == 1:
            a0 = args[0]
            return lambda env: impl(a0(env))
        if n == 2:
            a0, a1 = args
            return lambda env: impl(a0(env), a1(env))
        return lambda env: impl(*[a(env) for a in args])


def _operator(op: str, left: Closure, right: Closure) -> Closure:
    fn = functions.OPERATORS[op]
    return lambda env: fn(left(env), right(env))


def _mark_visible(fields: list[Field], nodes: list[exp.Expression], also: list[exp.Expression | None]) -> None:
    """Put an alias into the input only when something after it may read it: a column of that
    name, a later `*`, or a function that reads the input itself (clientid(), payload(), ...).
    The outputs are the same as always putting it; the copies are saved."""
    for i, f in enumerate(fields):
        if f.path is None:
            continue
        later = [n for n in nodes[i + 1 :]] + [n for n in also if n is not None]
        f.visible = any(_may_read(n, f.path[0]) for n in later)


def _may_read(node: exp.Expression, name: str) -> bool:
    for sub in node.walk():
        if isinstance(sub, exp.Star):
            return True
        if isinstance(sub, exp.Column) and sub.parts and sub.parts[0].name == name:
            return True
        if isinstance(sub, exp.Anonymous):
            spec = functions.lookup(str(sub.this))
            if spec is None or spec.needs_input:
                return True
    return False


def _path_getter(steps: list[Any]) -> Closure:
    first, rest = steps[0], steps[1:]
    if first == "payload" and rest:
        # (rules without FOREACH inline their paths: rules.codegen)
        def get_payload(env: Env) -> Any:
            value = env._decoded
            if value is _UNSET:
                value = env.payload_value()
            for step in rest:
                value = take_step(value, step(env) if callable(step) else step)
            return value

        return get_payload
    if not rest:
        return lambda env: env[first]
    if len(rest) == 1 and not callable(rest[0]):
        only = rest[0]
        return lambda env: take_step(env[first], only)

    def get(env: Env) -> Any:
        value = env[first]
        for step in rest:
            value = take_step(value, step(env) if callable(step) else step)
        return value

    return get


_HANDLERS: dict[type, Callable[[_Compiler, Any], Closure]] = {
    exp.Column: _Compiler.path,
    exp.Dot: _Compiler.path,
    exp.Bracket: _Compiler.path,
    exp.Literal: _Compiler.literal,
    exp.Boolean: lambda c, n: c.constant(bool(n.this)),
    exp.Null: lambda c, n: c.constant(None),
    exp.Paren: lambda c, n: c.expr(n.this),
    exp.Neg: _Compiler.negative,
    exp.Add: lambda c, n: c.binary(n, "+"),
    exp.Sub: lambda c, n: c.binary(n, "-"),
    exp.Mul: lambda c, n: c.binary(n, "*"),
    exp.Div: lambda c, n: c.binary(n, "/"),
    exp.IntDiv: lambda c, n: c.binary(n, "div"),
    exp.Mod: lambda c, n: c.binary(n, "mod"),
    exp.EQ: lambda c, n: c.comparison(n, "="),
    exp.NEQ: lambda c, n: c.comparison(n, "!="),
    exp.GT: lambda c, n: c.comparison(n, ">"),
    exp.GTE: lambda c, n: c.comparison(n, ">="),
    exp.LT: lambda c, n: c.comparison(n, "<"),
    exp.LTE: lambda c, n: c.comparison(n, "<="),
    exp.RegexpLike: _Compiler.topic_match,
    exp.And: _Compiler.logical_and,
    exp.Or: _Compiler.logical_or,
    exp.Not: _Compiler.logical_not,
    exp.In: _Compiler.membership,
    exp.Is: _Compiler.is_null,
    exp.Case: _Compiler.case,
    exp.Array: _Compiler.array,
    exp.Anonymous: _Compiler.call,
}
