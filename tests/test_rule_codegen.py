"""The generated rule functions (rules.codegen): same results as the closures, on an Env and on a bare message.

The conformance suites (test_rule_sql_*) already run every case through the
closures, the generated `apply` and the generated `run` (tests/rule_support);
these tests cover what is particular to generating code: which rules run on
the bare message, values kept in locals across branches that did not run,
laziness of the payload decode, and SQL text that must never become code.
"""

from __future__ import annotations

import orjson
import pytest

from engine.bus import Message
from rules.compiler import compile_sql
from rules.env import Env
from rules.values import RuleError
from tests.rule_support import outputs


def _message(payload: bytes | dict, topic: str = "ocpp/cp/CP1", **headers) -> Message:
    raw = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return Message(topic, raw, headers={"clientid": "CP1", **headers})


@pytest.mark.parametrize("sql", [
    """SELECT clientid, payload.Payload.connectorId AS c FROM "t" WHERE payload.Action = 'Boot' AND payload.Payload.status = 'Faulted'""",
    """SELECT upper(clientid) AS cid, payload.a + 1 AS n FROM "t" WHERE payload.x > 2 OR NOT payload.y""",
    """SELECT topic, qos, timestamp FROM "t" WHERE payload.a IS NOT NULL""",
    """SELECT CASE payload.a WHEN 'x' THEN 1 WHEN 2 THEN 2 ELSE 3 END AS c FROM "t" """,
    """SELECT CASE WHEN payload.a > 1 THEN 'big' END AS c FROM "t" """,
])
def test_rules_that_only_read_run_on_the_bare_message(sql):
    rule = compile_sql(sql, "r")
    assert rule.run is not rule.apply
    assert len(rule.sources) == 2 and rule.sources[1].startswith("def run(message):")


@pytest.mark.parametrize("sql", [
    """SELECT * FROM "t" """,
    """SELECT payload.a AS x, x + 1 AS y FROM "t" """,  # x is written into the input for y
    """SELECT clientid() AS c FROM "t" """,  # reads the input itself
    """SELECT payload.a IN (1, 2) AS c FROM "t" """,  # a closure, given the Env
])
def test_rules_that_need_the_env_run_through_it(sql):
    rule = compile_sql(sql, "r")
    assert len(rule.sources) == 1 and rule.sources[0].startswith("def apply(env):")
    message = _message({"a": 1})
    assert _without_id(rule.run(message)) == _without_id(rule.apply(Env.for_message(message)))


def test_foreach_rules_keep_the_closures():
    rule = compile_sql("""FOREACH payload.xs AS x DO x.v AS v FROM "t" """, "r")
    assert rule.sources == []
    assert rule.run(_message({"xs": [{"v": 1}, {"v": 2}]})) == [{"v": 1}, {"v": 2}]


@pytest.mark.parametrize(("a", "expected"), [("x", 1), (2, 2), (2.0, 3), ("2", 3), (None, 3)])
def test_case_with_a_subject_is_a_pattern_match(a, expected):
    sql = """SELECT CASE payload.a WHEN 'x' THEN 1 WHEN 2 THEN 2 ELSE 3 END AS c FROM "t" """
    assert outputs(sql, {"a": a}) == [{"c": expected}]  # 2.0 is not 2 here, though 2.0 = 2


def test_case_computes_the_subject_once_and_only_the_chosen_value():
    sql = """SELECT CASE uuid_v4() WHEN 'x' THEN 1 WHEN 'y' THEN 2 ELSE sqrt(payload.a) END AS c FROM "t" """
    assert outputs(sql, {"a": 4}) == [{"c": 2.0}]
    # the branches not chosen are not computed: sqrt('bad') would raise
    sql = """SELECT CASE WHEN payload.a = 1 THEN 'one' ELSE sqrt(payload.a) END AS c FROM "t" """
    assert outputs(sql, {"a": 1}) == [{"c": "one"}]


def test_a_value_first_read_in_a_branch_that_did_not_run_is_read_when_needed():
    # payload.a is kept in a local; its first reader is the right side of the OR, skipped here
    sql = """SELECT payload.a.c AS c FROM "t" WHERE clientid = 'CP1' OR payload.a.b = 2"""
    assert outputs(sql, {"a": {"b": 1, "c": 7}}) == [{"c": 7}]
    assert compile_sql(sql, "r").run(_message({"a": {"b": 1, "c": 7}})) == [{"c": 7}]
    assert outputs(sql, {"a": {"b": 2, "c": 8}}, clientid="CP2") == [{"c": 8}]


def test_the_payload_is_decoded_only_when_a_rule_reads_it():
    sql = """SELECT payload.a AS a FROM "t" WHERE topic = 'ocpp/cp/CP1' AND payload.a = 1"""
    rule = compile_sql(sql, "r")
    not_json = _message(b"not json", topic="elsewhere")
    assert rule.run(not_json) == ()  # WHERE fails on the topic first: no decode, no error
    with pytest.raises(RuleError, match="the payload is not JSON: b'not json'"):
        rule.run(_message(b"not json"))


def test_headers_come_before_the_message_columns_and_missing_ones_are_undefined():
    rule = compile_sql("""SELECT topic, clientid, username, nothing FROM "t" """, "r")
    message = _message({}, topic="a/b", username="u1")
    assert rule.run(message) == rule.apply(Env.for_message(message))
    out = rule.run(message)[0]
    assert (out["topic"], out["clientid"], out["username"]) == ("a/b", "CP1", "u1")
    assert "nothing" in out and out["nothing"] is not None  # undefined is kept as undefined


@pytest.mark.parametrize("text", ['say "hi"', "back\\slash", "new\nline", '"); import os; ("', "{__import__}"])
def test_sql_strings_are_data_never_code(text):
    rule = compile_sql(f"""SELECT '{text}' AS v, payload.x AS x FROM "t" WHERE payload.x = '{text}'""", "r")
    assert rule.run(_message({"x": text})) == [{"v": text, "x": text}]
    assert rule.run(_message({"x": "other"})) == ()


def test_constants_without_a_python_literal():
    rule = compile_sql("""SELECT 1e999 AS big, payload.x > 1e999 AS above FROM "t" """, "r")
    assert rule.run(_message({"x": 1})) == [{"big": float("inf"), "above": False}]


def test_names_with_quotes_are_data_never_code():
    rule = compile_sql("""SELECT "it's" AS v FROM "t" """, "r")  # a double-quoted name is a column
    assert rule.run(_message({}, **{"it's": 3})) == [{"v": 3}]


@pytest.mark.parametrize("sql", ["""SELECT payload.a / 0 AS n FROM "t" """, """SELECT sqrt(payload.a) AS n FROM "t" """])
def test_errors_are_the_closures_errors(sql):
    closures, generated = compile_sql(sql, "r", generate=False), compile_sql(sql, "r")
    message = _message({"a": "x"})
    with pytest.raises(RuleError) as expected:
        closures.apply(Env.for_message(message))
    with pytest.raises(RuleError) as got:
        generated.run(message)
    assert str(got.value) == str(expected.value)


def _without_id(result):
    return [{k: v for k, v in out.items() if k != "id"} for out in result]
