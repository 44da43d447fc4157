"""Rule SQL conformance, the statement: paths and indexes, aliases, SELECT *, FROM, payload.

Each case is SQL + input → the exact output or the exact error. Cases marked
"EMQX <name>" restate the SQL, input and result of that case of EMQX's own
rule-engine suites (emqx_rule_engine_SUITE, emqx_rulesql_SUITE,
emqx_rule_engine_api_rule_test_SUITE).
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from rules.compiled import NO_MATCH
from rules.compiler import compile_sql
from rules.env import Env
from rules.tester import NoMatch, run_rule_test
from rules.values import UNDEFINED, RuleError
from tests.rule_support import COLUMNS, outputs


def run(sql: str, payload: Any = "{}", **context: Any) -> Any:
    """The rule tester's answer (a message_publish on t/a unless the context says otherwise)."""
    return run_rule_test(sql, {"payload": payload, **context})


# --- nested paths and indexes ------------------------------------------------------------------


PAYLOAD = {"a": {"b": {"c": 1}}, "l": [10, 20, 30], "m": {"k": 5, "a-b": 6}, "s": "abc", "n": 7, "i": 2}


@pytest.mark.parametrize(("expr", "expected"), [
    ("payload.a.b.c", 1),
    ("payload.a.b", {"c": 1}),
    ("payload.a.x.c", UNDEFINED),  # a missing step
    ("payload.n.x", UNDEFINED),  # a key of a number
    ("payload.l[1]", 10),  # 1-based
    ("payload.l[3]", 30),
    ("payload.l[-1]", 30),  # from the end
    ("payload.l[-3]", 10),
    ("payload.l[0]", UNDEFINED),
    ("payload.l[4]", UNDEFINED),  # out of range
    ("payload.l[-4]", UNDEFINED),
    ("payload.l[payload.i]", 20),  # an index computed per message
    ("payload.m[1]", UNDEFINED),  # an index into a map
    ("payload.s[1]", UNDEFINED),  # an index into a string
    ("payload.n[1]", UNDEFINED),
    ("payload.missing[1]", UNDEFINED),
    ("payload.m['k']", 5),  # a string index is a key
    ("payload.m['nope']", UNDEFINED),
    ("payload.m.'a-b'", 6),  # a quoted key (EMQX: pub_props.'User-Property')
    ("payload.l[2] + payload.m.k", 25),
])
def test_paths(expr, expected):
    assert run(f'SELECT {expr} AS v FROM "t/#"', PAYLOAD) == {"v": expected}


def test_a_path_goes_on_into_json_text():
    # EMQX t_sqlparse_nested_get: emqx_rule_maps decodes a JSON string on the way
    sql = 'SELECT payload AS p, p.a.b AS c FROM "t/#"'
    assert run(sql, '{"a": {"b": 0}}', topic="t/1") == {"p": '{"a": {"b": 0}}', "c": 0}
    assert run('SELECT payload.j.x AS x, payload.j[1] AS y FROM "t/#"', {"j": '{"x": 1}'}) == {
        "x": 1, "y": UNDEFINED}
    assert run('SELECT payload AS p, p.x AS x FROM "t/#"', "not json") == {"p": "not json", "x": UNDEFINED}


def test_index_into_a_selected_list():
    # EMQX t_sqlparse_array_index_1
    sql = 'SELECT json_decode(payload) AS p, p[1] AS a FROM "t/#"'
    assert run(sql, '[{"x": 1}]') == {"p": [{"x": 1}], "a": {"x": 1}}
    assert run(sql, '{"x": 1}') == {"p": {"x": 1}, "a": UNDEFINED}


def test_unaliased_paths_keep_their_place_in_the_output():
    # EMQX t_sqlparse_array_index_1 and _3; t_json_payload_decoding
    assert run('SELECT payload.x[2] FROM "t/#"', {"x": [1, 3, 4]}) == {"payload": {"x": [3]}}
    assert run('SELECT payload.x[2].y FROM "t/#"', {"x": [1, {"y": 3}, 4]}) == {"payload": {"x": [{"y": 3}]}}
    assert run('SELECT payload.x[2].y AS b FROM "t/#"', {"x": [1, {"y": 3}, 4]}) == {"b": 3}
    assert run('SELECT payload.x[-2].y AS b FROM "t/#"', {"x": [1, {"y": 3}, 4]}) == {"b": 3}  # _index_2
    text = '{"x": [1,{"y": [1,2]},3]}'
    assert run('SELECT payload, payload.x[2].y FROM "t/#"', text) == {"payload": {"x": [1, {"y": [1, 2]}, 3]}}
    assert run('SELECT payload.x[2].y AS b FROM "t/#"', text) == {"b": [1, 2]}
    assert run('SELECT payload.x[2].y AS b.c FROM "t/#"', text) == {"b": {"c": [1, 2]}}
    sql = 'SELECT payload.measurement, payload.data_type, payload.value, payload.device_id FROM "some/topic"'
    data = {"measurement": "temp", "data_type": "FLOAT", "value": "32.12", "device_id": "devid"}
    assert run(sql, data, topic="some/topic") == {"payload": data}
    assert run('SELECT payload.a.b.c FROM "t/#"', PAYLOAD) == {"payload": {"a": {"b": {"c": 1}}}}
    assert run('SELECT clientid, payload.msg FROM "t/#"', {"msg": "hi"}) == {
        "clientid": "c_emqx", "payload": {"msg": "hi"}}


def test_aliases_with_indexes_put_into_lists():
    # EMQX t_sqlparse_array_index_4, t_sqlselect_as_put
    text = '{"x": [1,{"y": [1,2]},3]}'
    assert run('SELECT 0 AS payload.x[2].y FROM "t/#"', text) == {"payload": {"x": [{"y": 0}]}}
    assert run('SELECT payload.x, 0 AS payload.x[2].y FROM "t/#"', text) == {"payload": {"x": [1, {"y": 0}, 3]}}
    data = {"f1": "f1", "f2": "f2", "data": [{"name": "n1", "idx": 1}, {"name": "n2", "idx": 2}]}
    out = run('SELECT payload, \'STEVE\' AS payload.data[1].name FROM "t/#"', orjson.dumps(data).decode())
    assert out == {"payload": {"f1": "f1", "f2": "f2", "data": [{"name": "STEVE", "idx": 1}, {"name": "n2", "idx": 2}]}}
    # an index out of range puts nothing; -1 is the last item
    assert run('SELECT payload.l AS l, 0 AS l[9], 9 AS l[-1] FROM "t/#"', PAYLOAD) == {"l": [10, 20, 9]}


def test_aliases_append_and_prepend():
    # EMQX t_sqlparse_array_index_2, t_sqlparse_true_false, t_sqlparse_new_map: [0] prepends, [-0] appends
    sql = 'SELECT payload.x AS b, 1 AS c[-0], 2 AS c[-0], b AS c[0] FROM "t/#"'
    assert run(sql, {"x": 0}) == {"b": 0, "c": [0, 1, 2]}
    assert run('SELECT [] AS c, 1 AS c[-0], 2 AS c[-0], 0 AS c[0] FROM "t/#"', "") == {"c": [0, 1, 2]}
    sql = 'SELECT [payload.a, "topic", \'c\'] AS c, 1 AS c[-0], 2 AS c[-0], 0 AS c[0] FROM "t/#"'
    assert run(sql, '{"a":11}') == {"c": [0, 11, "t/a", "c", 1, 2]}
    sql = 'SELECT true AS a, false AS b, false AS x.y, true AS c[-0] FROM "t/#"'
    assert run(sql, "") == {"a": True, "b": False, "x": {"y": False}, "c": [True]}
    sql = 'SELECT map_new() AS a, map_new() AS b, map_new() AS x.y, map_new() AS c[-0] FROM "t/#"'
    assert run(sql, "") == {"a": {}, "b": {}, "x": {"y": {}}, "c": [{}]}


def test_list_literals():
    # EMQX t_sqlparse_array_index_5, t_sqlparse_array_with_expressions: unnamed, the value is there
    assert list(run('SELECT [1,2,3,4] FROM "t/#"', "").values()) == [[1, 2, 3, 4]]
    assert list(run('SELECT [21 + 21, abs(-abs(-2)), [1 + 1], 4] FROM "t/#"', "").values()) == [[42, 2, [2], 4]]


# --- aliases -------------------------------------------------------------------------------------


def test_aliases_are_visible_to_later_fields_and_where():
    # EMQX t_sqlselect_0
    payload = '{"cmd": {"info":"tt"}}'
    assert run('SELECT payload.cmd AS cmd FROM "t/#" WHERE cmd.info = \'tt\'', payload) == {
        "cmd": {"info": "tt"}}
    sql = 'SELECT payload.cmd AS cmd, cmd.info AS info FROM "t/#" WHERE cmd.info = \'tt\' and info = \'tt\''
    assert run(sql, payload) == {"cmd": {"info": "tt"}, "info": "tt"}
    sql = 'SELECT payload.cmd AS cmd, cmd.info AS meta.info FROM "t/#" WHERE cmd.info = \'tt\' and meta.info = \'tt\''
    assert run(sql, payload) == {"cmd": {"info": "tt"}, "meta": {"info": "tt"}}
    with pytest.raises(NoMatch):
        run('SELECT payload.cmd AS cmd FROM "t/#" WHERE cmd.info = \'xx\'', payload)


def test_an_alias_shadows_a_column_for_what_follows():
    assert run('SELECT 1 AS clientid, clientid AS c FROM "t/#"') == {"clientid": 1, "c": 1}
    assert run('SELECT clientid AS c, \'x\' AS clientid FROM "t/#" WHERE clientid = \'x\'') == {
        "c": "c_emqx", "clientid": "x"}


def test_path_aliases_build_nested_output():
    assert run('SELECT 1 AS a.b.c FROM "t/#"') == {"a": {"b": {"c": 1}}}
    assert run('SELECT 1 AS a.b, 2 AS a.c, clientid AS a.d.e FROM "t/#"') == {
        "a": {"b": 1, "c": 2, "d": {"e": "c_emqx"}}}


def test_last_write_wins():
    # EMQX t_json_payload_decoding
    sql = 'SELECT payload AS p, payload.f AS p.answer FROM "some/topic"'
    assert run(sql, {"f": 42, "keep": "that?"}, topic="some/topic") == {"p": {"answer": 42}}
    sql = 'SELECT payload AS p, payload.f AS p.jsonlike.f FROM "some/topic"'
    data = {"jsonlike": orjson.dumps({"a": 0}).decode(), "f": "huh"}
    assert run(sql, data, topic="some/topic") == {"p": {"jsonlike": {"f": "huh"}}}
    sql = 'SELECT payload AS p, 42 AS p, payload.measurement AS p.measurement, 51 AS p FROM "some/topic"'
    assert run(sql, {"measurement": "temp"}, topic="some/topic") == {"p": 51}
    sql = 'SELECT json_decode(payload) AS p, payload.a AS p.z FROM "some/topic"'
    assert run(sql, {"a": 1, "b": "2"}, topic="some/topic") == {"p": {"a": 1, "b": "2", "z": 1}}


def test_putting_into_the_payload():
    # EMQX t_sqlparse_payload_as (emqx#3866)
    sql = ('SELECT payload, map_get(\'engineWorkTime\', payload.params, -1) AS payload.params.engineWorkTime, '
           'map_get(\'hydOilTem\', payload.params, -1) AS payload.params.hydOilTem FROM "t/#"')
    payload = '{ "msgId": 1002, "params": { "convertTemp": 20, "engineSpeed": 42, "hydOilTem": 30 } }'
    params = {"convertTemp": 20, "engineSpeed": 42, "engineWorkTime": -1, "hydOilTem": 30}
    assert run(sql, payload) == {"payload": {"msgId": 1002, "params": params}}
    payload = '{ "msgId": 1002, "params": { "convertTemp": 20, "engineSpeed": 42 } }'
    params = {"convertTemp": 20, "engineSpeed": 42, "engineWorkTime": -1, "hydOilTem": -1}
    assert run(sql, payload) == {"payload": {"msgId": 1002, "params": params}}
    # the message's own payload does not change: a later rule sees it as it came
    assert outputs('SELECT 1 AS payload.x, payload.x AS y FROM "t/#"', {"x": 0}) == [{"payload": {"x": 1}, "y": 1}]


def test_as_is_optional():
    out = run('SELECT clientid c, payload.msg m, 1 + 1 two FROM "t/#"', {"msg": "hello"})
    assert out == {"c": "c_emqx", "m": "hello", "two": 2}


def test_a_selected_string_constant_is_named_by_its_value():
    assert run('SELECT \'hello\', \'a b\', 1 AS n FROM "t/#"') == {"hello": "hello", "a b": "a b", "n": 1}


def test_unnamed_expressions_are_kept():
    out = run('SELECT 1 + 1, upper(clientid), payload.l[payload.i] FROM "t/#"', PAYLOAD)
    assert list(out.values()) == [2, "C_EMQX", 20]


# --- SELECT * ------------------------------------------------------------------------------------


def test_select_star_is_every_column():
    cols = {**COLUMNS, "payload": '{"cmd": {"info":"tt"}}'}
    assert outputs('SELECT * FROM "t/#" WHERE payload.cmd.info = \'tt\'', cols["payload"]) == [cols]
    assert outputs('SELECT * FROM "t/#" WHERE payload.cmd.info = \'xx\'', cols["payload"]) is NO_MATCH


def test_select_star_with_fields():
    cols = {**COLUMNS, "payload": "{}"}
    assert outputs('SELECT *, 1 AS x FROM "t/#"') == [{**cols, "x": 1}]
    assert outputs('SELECT 1 AS clientid, * FROM "t/#"') == [{**cols, "clientid": 1}]
    assert outputs('SELECT clientid AS c, * FROM "t/#"') == [{**cols, "c": "CP1"}]
    # EMQX t_match_atom_and_binary
    rule = compile_sql('SELECT connected_at AS ts, * FROM "$events/client_connected" WHERE username = \'emqx2\'', "r1")
    event = {"clientid": "c2", "username": "emqx2", "connected_at": 1700000000001, "event": "client.connected"}
    assert rule.apply(Env(event)) == [{"ts": 1700000000001, **event}]
    assert rule.apply(Env({**event, "username": "emqx1"})) is NO_MATCH


def test_select_star_from_the_tester():
    # EMQX t_sqlselect_0: SELECT * keeps the payload as its text
    out = run('SELECT * FROM "t/#" WHERE payload.cmd.info = \'tt\'', '{"cmd": {"info":"tt"}}')
    assert out["payload"] == '{"cmd": {"info":"tt"}}' and out["topic"] == "t/a" and out["clientid"] == "c_emqx"


# --- FROM ----------------------------------------------------------------------------------------


def test_from_takes_several_filters_in_both_quote_styles():
    rule = compile_sql('SELECT * FROM "t/1", \'t/+/x\' , "$events/client_connected",\'c/#\'', "r1")
    assert rule.topics == ["t/1", "t/+/x", "$events/client_connected", "c/#"]
    assert compile_sql('SELECT * FROM "foo \'bar\' bazz", \'bar"foo"\'', "r1").topics == ["foo 'bar' bazz", 'bar"foo"']


@pytest.mark.parametrize(("topic", "matched"), [("t3/a", True), ("t3/a/b", True), ("t1", True), ("t2", False)])
def test_from_matches_any_of_its_filters(topic, matched):
    # EMQX t_sqlselect_01 / t_sqlselect_02
    sql = 'SELECT json_decode(payload) AS p, payload FROM "t3/#", "t1" WHERE p.x = 1'
    if matched:
        assert run(sql, '{"x":1}', topic=topic) == {"p": {"x": 1}, "payload": '{"x":1}'}
        with pytest.raises(NoMatch, match="WHERE is false"):
            run(sql, '{"x":2}', topic=topic)
    else:
        with pytest.raises(NoMatch, match="does not match FROM"):
            run(sql, '{"x":1}', topic=topic)


def test_from_with_both_quote_styles():
    # EMQX t_sqlparse_both_string_types_in_from
    sql = 'SELECT clientid, topic AS tp FROM \'t/tt\', "$events/client_connected"'
    assert run_rule_test(sql, {"clientid": "abc", "topic": "t/tt"}) == {"clientid": "abc", "tp": "t/tt"}
    sql = 'FOREACH payload.sensors FROM \'t/#\', "$events/client_connected"'
    assert outputs(sql, {"sensors": 1}) == []


# --- events ----------------------------------------------------------------------------------------


def test_event_rules():
    # EMQX t_sqlparse_event_1, _2, _3
    assert run_rule_test('SELECT topic AS tp FROM "$events/session_subscribed"',
                         {"event_type": "session_subscribed", "topic": "t/tt"}) == {"tp": "t/tt"}
    assert run_rule_test('SELECT clientid FROM "$events/client_connected"',
                         {"event_type": "client_connected", "clientid": "abc"}) == {"clientid": "abc"}
    assert run_rule_test('SELECT clientid, topic AS tp FROM "t/tt", "$events/client_connected"',
                         {"clientid": "abc", "topic": "t/tt"}) == {"clientid": "abc", "tp": "t/tt"}


def test_event_columns():
    # EMQX t_ctx_pub, t_ctx_sub, t_ctx_connack, t_ctx_droped (emqx_rule_engine_api_rule_test_SUITE)
    ctx = {"clientid": "c_emqx", "event_type": "message_publish", "payload": '{"msg": "hello"}', "qos": 1,
           "topic": "t/a", "username": "u_emqx"}
    sql = 'SELECT payload.msg AS msg, clientid, username, payload, topic, qos FROM "t/#"'
    assert run_rule_test(sql, ctx) == {"msg": "hello", "clientid": "c_emqx", "username": "u_emqx",
                                       "payload": '{"msg": "hello"}', "topic": "t/a", "qos": 1}
    ctx = {"clientid": "c_emqx", "event_type": "session_subscribed", "qos": 1, "topic": "t/a", "username": "u_emqx"}
    sql = 'SELECT clientid, username, topic, qos FROM "$events/session_subscribed"'
    assert run_rule_test(sql, ctx) == {"clientid": "c_emqx", "username": "u_emqx", "topic": "t/a", "qos": 1}
    ctx = {"clientid": "c_emqx", "event_type": "client_connack", "reason_code": "success", "username": "u_emqx",
           "node": "gw1"}
    sql = 'SELECT clientid, username, reason_code, node FROM "$events/client_connack"'
    assert run_rule_test(sql, ctx) == {"clientid": "c_emqx", "username": "u_emqx", "reason_code": "success",
                                       "node": "gw1"}
    ctx = {"clientid": "c_emqx", "event_type": "message_dropped", "reason": "no_subscribers", "qos": 1,
           "topic": "t/a", "timestamp": 1700000000000, "node": "gw1"}
    sql = 'SELECT reason, topic, qos, node, timestamp FROM "$events/message_dropped"'
    assert run_rule_test(sql, ctx) == {"reason": "no_subscribers", "topic": "t/a", "qos": 1, "node": "gw1",
                                       "timestamp": 1700000000000}


def test_event_rules_see_the_event_name_and_filter_in_where():
    sql = 'SELECT clientid, event FROM "$events/client_disconnected" WHERE reason = \'keepalive_timeout\''
    ctx = {"event_type": "client_disconnected", "clientid": "CP1", "reason": "keepalive_timeout"}
    assert run_rule_test(sql, ctx) == {"clientid": "CP1", "event": "client.disconnected"}
    with pytest.raises(NoMatch, match="WHERE is false"):
        run_rule_test(sql, {**ctx, "reason": "normal"})
    with pytest.raises(NoMatch, match="does not match FROM"):
        run_rule_test(sql, {**ctx, "event_type": "client_connected"})
    with pytest.raises(NoMatch, match="does not match FROM"):
        run_rule_test('SELECT * FROM "$events/client_connected"', {"topic": "t/a"})
    with pytest.raises(NoMatch, match="does not match FROM"):
        run_rule_test('SELECT * FROM "#"', {"event_type": "client_connected"})  # '#' never matches $events


# --- the payload ------------------------------------------------------------------------------------


def test_a_payload_that_is_not_json():
    with pytest.raises(RuleError) as err:
        run('SELECT payload.x AS x FROM "t/#"', "not json")
    assert str(err.value) == "the payload is not JSON: 'not json'"
    with pytest.raises(RuleError, match="^the payload is not JSON: "):
        run('SELECT 1 AS x FROM "t/#" WHERE payload.x = 1', "{broken")
    # EMQX t_sqlparse_invalid_json (the range `a[1..4]` is not in the dialect: an index instead)
    with pytest.raises(RuleError, match="^the payload is not JSON: "):
        run('SELECT payload.a[1] AS c FROM "t/#"', '{"x":[0,1,2,3,}')
    with pytest.raises(RuleError, match="^the payload is not JSON: "):
        run('FOREACH payload.sensors DO item.cmd AS msg_type FROM "t/#"', '{"sensors": [{"cmd":"1"} {"cmd":}]}')
    # not reading into it, the payload is just text (EMQX t_sqlparse_select_matadata_1)
    assert run('SELECT payload FROM "t/#"', "abc") == {"payload": "abc"}
    assert run('SELECT payload AS p FROM "t/#" WHERE payload = \'abc\'', "abc") == {"p": "abc"}


def test_payload_that_is_json_but_not_an_object():
    assert run('SELECT payload.x AS x, payload[2] AS y FROM "t/#"', "[1, 2]") == {"x": UNDEFINED, "y": 2}
    assert run('SELECT payload.x AS x FROM "t/#"', "5") == {"x": UNDEFINED}


def test_rules_never_change_the_message_they_read():
    from engine.bus.message import Message

    message = Message("ocpp/cp/CP1", b'{"a": {"b": 1}, "l": [1, 2]}', headers={"clientid": "CP1"})
    sql = ('SELECT payload.a.b, 2 AS payload.a.b, 3 AS payload.l[1], 4 AS payload.l[-0], 5 AS payload.n, '
           'payload AS p FROM "ocpp/#"')
    out = compile_sql(sql, "r1").apply(Env.for_message(message))
    # the output is built on its own: it had no payload.l, so l[1] starts a list there
    assert out == [{"payload": {"a": {"b": 2}, "l": [3, 4], "n": 5}, "p": {"a": {"b": 2}, "l": [3, 2, 4], "n": 5}}]
    assert message.json() == {"a": {"b": 1}, "l": [1, 2]}
    assert compile_sql('SELECT payload.a.b AS b, payload.l AS l FROM "ocpp/#"', "r2").apply(
        Env.for_message(message)) == [{"b": 1, "l": [1, 2]}]


def test_aliases_are_seen_by_functions_that_read_the_input():
    # clientid() reads the input, so the alias before it must be in the input
    assert outputs("SELECT 'x' AS clientid, clientid() AS c FROM \"t/#\"") == [{"clientid": "x", "c": "x"}]
    assert outputs("SELECT 'x' AS clientid FROM \"t/#\" WHERE clientid() = 'x'") == [{"clientid": "x"}]
