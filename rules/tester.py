"""The rule tester: run SQL against a context, without actions (EMQX's `POST /rule_test`).

`run_rule_test` returns the output (a dict; a list for FOREACH), raises
`NoMatch` when the rule selects nothing (412 NOT_MATCH), and raises
`RuleSyntaxError` or `RuleError` for SQL that does not compile or fails on
this context (400 BAD_REQUEST).
"""

from __future__ import annotations

import json
import time
from typing import Any

import orjson

from engine.bus.topic import matches
from rules.compiler import compile_sql
from rules.env import Env
from rules.values import RuleError

# EMQX's defaults for a tested message_publish
_PUBLISH_DEFAULTS: dict[str, Any] = {
    "clientid": "c_emqx",
    "username": "u_emqx",
    "payload": '{"msg": "hello"}',
    "topic": "t/a",
    "qos": 1,
    "flags": {"retain": False, "dup": False},
    "peerhost": "127.0.0.1",
    "proto_ver": "ocpp1.6",
    "node": "ocppgw@127.0.0.1",
}


def _json_text(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:  # an integer beyond 64 bits (found by the fuzzer): kept exact
        try:
            return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError, RecursionError) as exc:
            raise RuleError(f"context.payload cannot be encoded as JSON: {exc}") from None


def response_body(answer: Any) -> bytes:
    """The tester's answer as JSON; integers beyond 64 bits stay exact (as EMQX prints them)."""
    try:
        return orjson.dumps(answer, default=str)
    except orjson.JSONEncodeError:
        return json.dumps(answer, ensure_ascii=False, separators=(",", ":"), default=str).encode()


class NoMatch(Exception):
    """The rule selected nothing for this context."""


def run_rule_test(sql: str, context: dict[str, Any] | None = None) -> Any:
    context = dict(context or {})
    event_type = context.pop("event_type", "message_publish")
    if not isinstance(event_type, str):
        raise RuleError("context.event_type must be a string")
    rule = compile_sql(sql, "rule_test")
    now = int(time.time() * 1000)
    if event_type == "message_publish":
        columns = {**_PUBLISH_DEFAULTS, "timestamp": now, "publish_received_at": now, **context}
        columns.setdefault("event", "message.publish")
        if not isinstance(columns["topic"], str):
            raise RuleError("context.topic must be a string")
        topic = columns["topic"]
        if isinstance(columns["payload"], (dict, list)):
            columns["payload"] = _json_text(columns["payload"])
    else:
        columns = {"timestamp": now, "node": _PUBLISH_DEFAULTS["node"], **context}
        columns.setdefault("event", event_type.replace("_", ".", 1))
        topic = f"$events/{event_type}"
    if not any(matches(f, topic) for f in rule.topics):
        raise NoMatch(f"{topic} does not match FROM {', '.join(rule.topics)}")
    outputs = rule.apply(Env(columns))
    if isinstance(outputs, tuple):  # NO_MATCH, the only tuple a rule returns: WHERE was not true
        raise NoMatch("the rule selected nothing (WHERE is false)")
    return outputs if rule.foreach else outputs[0]  # a FOREACH with no items left gives []


def rule_test_response(body: Any) -> tuple[int, Any]:
    """`POST /api/v5/rule_test` as EMQX answers it: (200, output), (412, NOT_MATCH) or (400, BAD_REQUEST)."""
    from rules.sql import RuleSyntaxError

    def bad(message: str) -> tuple[int, Any]:
        return 400, {"code": "BAD_REQUEST", "message": message}

    if not isinstance(body, dict):
        return bad("the body must be a JSON object with sql and context")
    unknown = set(body) - {"sql", "context"}
    if unknown:
        return bad(f"unknown field: {sorted(unknown)[0]}")
    sql, context = body.get("sql"), body.get("context", {})
    if not isinstance(sql, str) or not sql.strip():
        return bad("sql: a non-empty string is required")
    if not isinstance(context, dict):
        return bad("context: must be an object")
    try:
        return 200, run_rule_test(sql, context)
    except NoMatch:
        return 412, {"code": "NOT_MATCH", "message": "SQL Not Match"}
    except (RuleSyntaxError, RuleError) as exc:
        return bad(str(exc))
