"""What a compiled rule is, below both ways of making one.

A rule's fields and conditions are closures `f(env) -> value` (rules.compiler
makes one per SQL node); the rule itself is two callables, `apply(env)` and
`run(message)`, that the compiler sets. By default they run the closures, as
written here; rules.codegen may replace them with one generated function
that computes the same. Both import this module, neither the other's idea of
a rule.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from engine.bus.message import Message
from rules.env import Env, put_path
from rules.paths import json_or_undefined
from rules.values import UNDEFINED

Closure: TypeAlias = Callable[[Env], Any]
Outputs: TypeAlias = list[dict[str, Any]] | tuple[()]
Apply: TypeAlias = Callable[[Env], Outputs]
Run: TypeAlias = Callable[[Message], Outputs]

NO_MATCH: tuple[()] = ()  # WHERE was not true (falsy, like an empty output list)


@dataclass(slots=True)
class Field:
    path: list[Any] | None  # where the value goes; None for `*`
    fn: Closure | None
    visible: bool = True  # put into the input too: something after it reads that name


@dataclass(slots=True)
class CompiledRule:
    """`apply(env)`: the rule's outputs for one input; raises `RuleError`. Empty means no
    result: `NO_MATCH` when WHERE is not true, `[]` when a FOREACH has no items left.
    `run(message)`: the same for a bus message's columns (a generated rule may read the
    message directly)."""

    id: str
    sql: str
    topics: list[str]
    foreach: bool
    fields: list[Field]
    where: Closure | None
    where_first: bool  # WHERE reads no alias: test it before computing the fields
    apply: Apply
    run: Run
    do_fields: list[Field] = field(default_factory=list)
    incase: Closure | None = None
    collection_key: str = "item"
    sources: list[str] = field(default_factory=list)  # the generated functions' text, when there are some


def through_env(apply: Apply) -> Run:
    """`run` for an `apply` that needs the Env: the message's columns as one."""
    return lambda message: apply(Env.for_message(message))


def select_closures(fields: list[Field], where: Closure | None, where_first: bool) -> Apply:
    """`apply` for SELECT by its closures: fields left to right, WHERE before them when it reads no alias."""

    def apply(env: Env) -> Outputs:
        if where_first and where is not None and where(env) is not True:
            return NO_MATCH
        out: dict[str, Any] = {}
        _select(fields, env, out)
        if not where_first and where is not None and where(env) is not True:
            return NO_MATCH
        return [out]

    return apply


def foreach_closures(fields: list[Field], where: Closure | None, do_fields: list[Field], incase: Closure | None,
                     collection_key: str) -> Apply:
    """`apply` for FOREACH by its closures: one output per item of the last field's list."""

    def apply(env: Env) -> Outputs:
        *head, last = fields
        selected: dict[str, Any] = {}
        _select(head, env, selected)
        collection = last.fn(env) if last.fn else UNDEFINED
        if last.path is not None:
            put_path(env, last.path, collection)
        if where is not None and where(env) is not True:
            return NO_MATCH
        if type(collection) is str:
            collection = json_or_undefined(collection)  # `FOREACH payload` iterates a JSON array text
        if type(collection) is not list:
            return []
        outputs = []
        for item in collection:
            item_env = env.child({collection_key: item})
            if incase is not None and incase(item_env) is not True:
                continue
            if do_fields:
                out: dict[str, Any] = {}
                _select(do_fields, item_env, out)
                outputs.append(out)
            else:
                outputs.append(item_env.materialize())
        return outputs

    return apply


def _select(fields: list[Field], env: Env, out: dict[str, Any]) -> None:
    for f in fields:
        path = f.path
        if f.fn is None or path is None:  # `*` (a field has both or neither)
            out.update(env.materialize())
            continue
        value = f.fn(env)
        if f.visible:
            put_path(env, path, value)
        if len(path) == 1:
            out[path[0]] = value
        else:
            put_path(out, path, value)
