"""The rule tester, as a function and through `ocpp-gateway rule-test`."""

from __future__ import annotations

import json
import subprocess

import pytest

from rules.sql import RuleSyntaxError
from rules.tester import NoMatch, run_rule_test
from rules.values import RuleError
from tests.gateway import BIN


def test_defaults_and_context():
    assert run_rule_test('SELECT clientid, payload.msg AS m FROM "t/#"') == {"clientid": "c_emqx", "m": "hello"}
    out = run_rule_test('SELECT * FROM "ocpp/cp/+"', {"topic": "ocpp/cp/CP1", "payload": {"a": 1}})
    assert out["topic"] == "ocpp/cp/CP1" and out["payload"] == '{"a":1}'


def test_topic_must_match_from():
    with pytest.raises(NoMatch, match="does not match FROM"):
        run_rule_test('SELECT 1 AS x FROM "a/b"', {"topic": "c/d"})


def test_where_false_is_no_match():
    with pytest.raises(NoMatch, match="WHERE is false"):
        run_rule_test('SELECT 1 AS x FROM "t/#" WHERE payload.msg = \'bye\'')


def test_events():
    out = run_rule_test('SELECT clientid, reason FROM "$events/client_disconnected"',
                        {"event_type": "client_disconnected", "clientid": "CP1", "reason": "takenover"})
    assert out == {"clientid": "CP1", "reason": "takenover"}
    with pytest.raises(NoMatch):
        run_rule_test('SELECT * FROM "t/#"', {"event_type": "client_connected"})


def test_foreach_gives_a_list():
    out = run_rule_test('FOREACH payload.xs AS x DO x.v AS v FROM "t/#"', {"payload": '{"xs": [{"v": 1}, {"v": 2}]}'})
    assert out == [{"v": 1}, {"v": 2}]


def test_errors():
    with pytest.raises(RuleSyntaxError, match="rule rule_test: line 1, column 8: unknown function nope"):
        run_rule_test('SELECT nope() FROM "t/#"')
    with pytest.raises(RuleError, match="not JSON"):
        run_rule_test('SELECT payload.x FROM "t/#"', {"payload": "{broken"})
    with pytest.raises(RuleError, match="event_type must be a string"):
        run_rule_test('SELECT 1 AS x FROM "t/#"', {"event_type": 5})
    with pytest.raises(RuleError, match="topic must be a string"):
        run_rule_test('SELECT 1 AS x FROM "t/#"', {"topic": ["t"]})


def cli(*args):
    return subprocess.run([BIN, "rule-test", *args], capture_output=True, text=True, timeout=60)


def test_cli():
    out = cli('SELECT payload.a AS a FROM "t/#"', "--context", '{"payload": "{\\"a\\": [1, 2]}"}')
    assert out.returncode == 0 and json.loads(out.stdout) == {"a": [1, 2]}
    out = cli('SELECT 1 AS x FROM "x/#"')
    assert out.returncode == 1 and out.stderr.startswith("NOT_MATCH:")
    out = cli('SELECT a b c FROM "t"')
    assert out.returncode == 2 and out.stderr.strip() == "error: rule rule_test: line 1, column 12: Invalid expression / Unexpected token near 'c'"
    for bad in ("{not json", "[1]"):
        out = cli('SELECT 1 AS x FROM "t/#"', "--context", bad)
        assert out.returncode == 2 and "--context" in out.stderr and "Traceback" not in out.stderr


def test_every_rule_example_in_the_docs_loads(tmp_path):
    """docs/rules.md's HOCON examples are real configs whose rules compile."""
    import re
    from pathlib import Path

    from engine.bus import Bus
    from engine.config import load_settings
    from rules.runtime import RuleEngine

    text = (Path(__file__).resolve().parent.parent / "docs" / "rules.md").read_text()
    blocks = [b for b in re.findall(r"```hocon\n(.*?)```", text, re.S) if "rule_engine.rules" in b]
    assert len(blocks) >= 4
    for i, block in enumerate(blocks):
        path = tmp_path / f"example{i}.conf"
        path.write_text(block)
        settings = load_settings(path, {})
        compiled = RuleEngine(Bus()).compile(settings.rule_engine.rules)
        assert compiled, block


def test_foreach_with_no_items_left_is_an_empty_list_not_a_mismatch():
    sql = 'FOREACH payload.xs AS x INCASE x > 5 FROM "t/#" WHERE payload.ok = true'
    assert run_rule_test(sql, {"payload": '{"ok": true, "xs": [1, 2]}'}) == []
    assert run_rule_test(sql, {"payload": '{"ok": true, "xs": "not a list"}'}) == []
    with pytest.raises(NoMatch):
        run_rule_test(sql, {"payload": '{"ok": false, "xs": [9]}'})


@pytest.mark.parametrize(
    "body,status,answer",
    [
        ({"sql": 'SELECT payload.msg AS m FROM "t/#"', "context": {}}, 200, {"m": "hello"}),
        ({"sql": 'SELECT 1 AS x FROM "t/#" WHERE payload.msg = \'no\''}, 412, {"code": "NOT_MATCH", "message": "SQL Not Match"}),
        ({"sql": "SELECT", "context": {}}, 400, "BAD_REQUEST"),
        ({"sql": 'SELECT payload.x FROM "t/#"', "context": {"payload": "{"}}, 400, "BAD_REQUEST"),
        ({"context": {}}, 400, "sql: a non-empty string is required"),
        ({"sql": 5}, 400, "sql: a non-empty string is required"),
        ({"sql": 'SELECT 1 AS x FROM "t/#"', "context": []}, 400, "context: must be an object"),
        ({"sql": 'SELECT 1 AS x FROM "t/#"', "ctx": {}}, 400, "unknown field: ctx"),
        ([], 400, "the body must be a JSON object"),
    ],
)
def test_rule_test_response_as_the_api_answers(body, status, answer):
    from rules.tester import rule_test_response

    got_status, got = rule_test_response(body)
    assert got_status == status
    if isinstance(answer, dict):
        assert got == answer
    else:
        assert got["code"] == "BAD_REQUEST" and answer in (got["message"] if answer != "BAD_REQUEST" else "BAD_REQUEST")


def test_a_rejected_rule_set_leaves_the_running_rules_alone():
    from engine.bus import Bus, Message
    from engine.config.schema import RuleSettings
    from rules.runtime import RuleEngine, RuleLoadError

    bus = Bus()
    engine = RuleEngine(bus)
    seen = []
    bus.subscribe("out/#", seen.append)
    good = {"r": RuleSettings(sql='SELECT payload.n AS n FROM "in/#"',
                              actions=[{"function": "republish", "args": {"topic": "out/${n}"}}])}
    engine.load(good)
    with pytest.raises(RuleLoadError) as info:
        engine.load({"r": RuleSettings(sql="SELECT nope( FROM"), "s": RuleSettings(sql='SELECT a FROM "x"')})
    assert info.value.errors and info.value.errors[0].startswith("rule r: line 1, column")
    bus.publish(Message("in/1", b'{"n": 7}', origin="test"))
    assert [m.topic for m in seen] == ["out/7"] and list(engine.rules) == ["r"]
    assert engine.rules["r"].metrics.matched == 1
