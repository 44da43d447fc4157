"""Rule SQL conformance, FOREACH: one output per item, DO, INCASE, WHERE before the items.

Each case is SQL + input → the exact outputs or the exact error. Cases marked
"EMQX <name>" restate the SQL, input and result of that case of EMQX's
emqx_rule_engine_SUITE. A FOREACH that yields nothing is checked on the
compiled rule itself (an empty list of outputs).
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from rules.compiled import NO_MATCH
from rules.tester import NoMatch, run_rule_test
from rules.values import UNDEFINED, RuleError
from tests.rule_support import COLUMNS, outputs


def run(sql: str, payload: Any, **context: Any) -> Any:
    return run_rule_test(sql, {"payload": payload, **context})


def test_foreach_with_and_without_as():
    # EMQX t_sqlparse_foreach_1: without DO, an output is every column plus the item
    text = '{"sensors": [1, 2]}'
    cols = {**COLUMNS, "payload": text}
    assert outputs('FOREACH payload.sensors AS s FROM "t/#"', text) == [{**cols, "s": 1}, {**cols, "s": 2}]
    # without AS the item is `item`, and the list stays at its path, as EMQX shows it
    cols = {**COLUMNS, "payload": {"sensors": [1, 2]}}
    assert outputs('FOREACH payload.sensors FROM "t/#"', text) == [{**cols, "item": 1}, {**cols, "item": 2}]
    text = '{"sensors": [{"cmd":"1"}, {"cmd":"2","name":"ct"}]}'
    out = outputs('FOREACH payload.sensors FROM "t/#"', text, clientid="c_a")
    assert [(o["item"], o["clientid"]) for o in out] == [({"cmd": "1"}, "c_a"), ({"cmd": "2", "name": "ct"}, "c_a")]


def test_foreach_do():
    # EMQX t_sqlparse_foreach_2
    text = '{"sensors": [{"cmd":"1"}, {"cmd":"2"}]}'
    expected = [{"msg_type": "1"}, {"msg_type": "2"}]
    assert run('FOREACH payload.sensors AS s DO s.cmd AS msg_type FROM "t/#"', text) == expected
    assert run('FOREACH payload.sensors DO item.cmd AS msg_type FROM "t/#"', text) == expected
    out = run('FOREACH payload.sensors DO item AS item FROM "t/#"', '{"sensors": [1, 2]}')
    assert out == [{"item": 1}, {"item": 2}]


def test_foreach_incase():
    # EMQX t_sqlparse_foreach_3
    text = '{"sensors": [{"cmd":1}, {"cmd":2}, {"cmd":3}]}'
    cols = {**COLUMNS, "payload": text}
    assert outputs('FOREACH payload.sensors AS s INCASE s.cmd != 1 FROM "t/#"', text) == [
        {**cols, "s": {"cmd": 2}}, {**cols, "s": {"cmd": 3}}]
    out = outputs('FOREACH payload.sensors INCASE item.cmd != 1 FROM "t/#"', text)
    assert [o["item"] for o in out] == [{"cmd": 2}, {"cmd": 3}]


def test_foreach_do_incase():
    # EMQX t_sqlparse_foreach_4
    sql = 'FOREACH payload.sensors AS s DO s.cmd AS msg_type, s.name AS name INCASE is_not_null(s.cmd) FROM "t/#"'
    assert run(sql, '{"sensors": [{"cmd":"1"}, {"cmd":"2"}]}') == [
        {"msg_type": "1", "name": UNDEFINED}, {"msg_type": "2", "name": UNDEFINED}]
    assert run(sql, '{"sensors": [{"cmd":"1", "name":"n1"}, {"cmd":"2"}, {"name":"n3"}]}') == [
        {"msg_type": "1", "name": "n1"}, {"msg_type": "2", "name": UNDEFINED}]
    assert outputs(sql, '{"sensors": [1, 2]}') == []


@pytest.mark.parametrize("payload", [
    '{"sensors": 1}',  # EMQX t_sqlparse_foreach_5
    '{"sensors": []}',
    '{"sensors": {"a": 1}}',
    '{"sensors": "abc"}',
    "{}",
])
def test_foreach_over_no_list_gives_no_output(payload):
    assert outputs('FOREACH payload.sensors AS s DO s.cmd AS msg_type, s.name AS name FROM "t/#"', payload) == []
    assert outputs('FOREACH payload.sensors FROM "t/#"', payload) == []
    # EMQX t_sqlparse_both_string_types_in_from
    assert outputs('FOREACH payload.sensors FROM \'t/#\', "$events/client_connected"', payload) == []


def test_foreach_a_function_result():
    # EMQX t_sqlparse_foreach_6
    sql = 'FOREACH json_decode(payload) DO item.id AS zid, timestamp AS t FROM "t/#"'
    assert run(sql, '[{"id": 5},{"id": 15}]', timestamp=1700000000000) == [
        {"zid": 5, "t": 1700000000000}, {"zid": 15, "t": 1700000000000}]
    # nothing is named after json_decode(payload): the outputs are the columns and the item
    cols = {**COLUMNS, "payload": "[1]"}
    assert outputs('FOREACH json_decode(payload) FROM "t/#"', "[1]") == [{**cols, "item": 1}]


CASCADE = ('FOREACH json_decode(payload) AS p, p.sensors AS s, s.collection AS c, c.info AS info '
           'DO info.cmd AS msg_type, info.name AS name INCASE is_not_null(info.cmd) FROM "t/#" WHERE s.page = ')


def test_foreach_cascaded_aliases_and_where():
    # EMQX t_sqlparse_foreach_7
    text = '{"sensors": {"page": 2, "collection": {"info":[{"name":"cmd1", "cmd":"1"}, {"cmd":"2"}]} } }'
    assert run(CASCADE + "'2'", text) == [{"msg_type": "1", "name": "cmd1"}, {"msg_type": "2", "name": UNDEFINED}]
    with pytest.raises(NoMatch, match="WHERE is false"):
        run(CASCADE + "'3'", text)
    assert outputs(CASCADE + "'3'", text) is NO_MATCH


def test_foreach_do_sees_the_foreach_aliases():
    # EMQX t_sqlparse_foreach_8
    text = '{"sensors": {"page": 2, "collection": {"info":["haha", {"name":"cmd1", "cmd":"1"}]} } }'
    coll = {"info": ["haha", {"name": "cmd1", "cmd": "1"}]}
    sql = ('FOREACH json_decode(payload) AS p, p.sensors AS s, s.collection AS c, c.info AS info '
           'DO info.cmd AS msg_type, info.name AS name, s, c INCASE is_map(info) FROM "t/#" WHERE s.page = \'2\'')
    assert run(sql, text) == [{"msg_type": "1", "name": "cmd1", "s": {"page": 2, "collection": coll}, "c": coll}]
    sql = ('FOREACH json_decode(payload) AS p, p.sensors AS s, s.collection AS c, sublist(2, 1, c.info) AS info '
           'DO info.cmd AS msg_type, info.name AS name FROM "t/#" WHERE s.page = \'2\'')
    assert run(sql, text) == [{"msg_type": "1", "name": "cmd1"}]


def test_foreach_over_the_payload_text():
    # EMQX t_sqlparse_foreach_9 and _10: FOREACH payload iterates the JSON array it holds
    text = orjson.dumps([{"ts": 1451649600512, "values": {"respiratoryrate": 20, "heartrate": 130}}]).decode()
    assert run('FOREACH json_decode(payload) AS p DO p.ts AS ts FROM "t/#"', text) == [{"ts": 1451649600512}]
    assert run('FOREACH payload AS p DO p.ts AS ts FROM "t/#"', text) == [{"ts": 1451649600512}]
    assert run('FOREACH payload AS item DO item.data AS next_data FROM "t/#"',
               '[{"data": "value1"}, {"data": "value2"}]') == [{"next_data": "value1"}, {"next_data": "value2"}]
    assert outputs('FOREACH payload AS p DO p AS v FROM "t/#"', "not json") == []
    assert outputs('FOREACH payload AS p DO p AS v FROM "t/#"', '{"a": 1}') == []


def test_one_output_per_item():
    text = '{"xs": [5, 1, 4, 2, 3]}'
    assert run('FOREACH payload.xs AS x DO x AS v FROM "t/#"', text) == [
        {"v": 5}, {"v": 1}, {"v": 4}, {"v": 2}, {"v": 3}]
    assert run('FOREACH payload.xs AS x DO x AS v INCASE x > 2 FROM "t/#"', text) == [{"v": 5}, {"v": 4}, {"v": 3}]
    assert run('FOREACH payload.xs AS x DO x AS v INCASE x > 2 AND x < 5 FROM "t/#"', text) == [{"v": 4}, {"v": 3}]
    assert outputs('FOREACH payload.xs AS x DO x AS v INCASE x > 9 FROM "t/#"', text) == []
    # only true passes INCASE
    assert run('FOREACH payload.xs AS x DO x AS v INCASE x FROM "t/#"', '{"xs": [true, 1, "true", false]}') == [
        {"v": True}]


def test_foreach_do_fields():
    text = '{"xs": [{"id": 1, "v": 10}, {"id": 2, "v": 20}]}'
    sql = 'FOREACH payload.xs AS x DO x.id AS id, x.v * 2 AS d, d + 1 AS e, clientid, x.v AS out.v FROM "t/#"'
    assert run(sql, text) == [{"id": 1, "d": 20, "e": 21, "clientid": "c_emqx", "out": {"v": 10}},
                              {"id": 2, "d": 40, "e": 41, "clientid": "c_emqx", "out": {"v": 20}}]
    assert run('FOREACH payload.xs DO * FROM "t/#"', '{"xs": [1]}')[0]["item"] == 1


def test_foreach_where_comes_before_the_items():
    sql = 'FOREACH payload.xs AS x DO 1 / x AS v FROM "t/#" WHERE payload.ok = true'
    assert outputs(sql, '{"xs": [0], "ok": false}') is NO_MATCH  # WHERE false: DO never runs
    with pytest.raises(RuleError, match="^operator /: "):
        outputs(sql, '{"xs": [0], "ok": true}')
    sql = 'FOREACH payload.xs AS x INCASE 1 / x > 0 FROM "t/#" WHERE payload.ok = true'
    assert outputs(sql, '{"xs": [0], "ok": false}') is NO_MATCH
    with pytest.raises(RuleError, match="^operator /: "):
        outputs(sql, '{"xs": [0], "ok": true}')
    # WHERE sees the FOREACH aliases: the collection's is the whole list
    sql = 'FOREACH payload.xs AS x DO x AS v FROM "t/#" WHERE x = payload.xs AND clientid = \'CP1\''
    assert outputs(sql, '{"xs": [1, 2]}') == [{"v": 1}, {"v": 2}]


def test_foreach_of_an_ocpp_meter_values_message():
    sql = ('FOREACH payload.Payload.meterValue AS mv DO clientid AS cp, mv.timestamp AS ts, '
           'mv.sampledValue[1].value AS v FROM "ocpp/cp/+" WHERE payload.Action = \'MeterValues\'')
    payload = {"Action": "MeterValues", "Payload": {"connectorId": 1, "meterValue": [
        {"timestamp": "2024-01-01T00:00:00Z", "sampledValue": [{"value": "10"}]},
        {"timestamp": "2024-01-01T00:01:00Z", "sampledValue": [{"value": "12"}, {"value": "3"}]},
    ]}}
    assert run(sql, payload, topic="ocpp/cp/CP7", clientid="CP7") == [
        {"cp": "CP7", "ts": "2024-01-01T00:00:00Z", "v": "10"}, {"cp": "CP7", "ts": "2024-01-01T00:01:00Z", "v": "12"}]
