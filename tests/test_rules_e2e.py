"""Rules in a running gateway: real charge points, a real broker, rules answering and routing."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import orjson
import pytest
import websockets
from ocpp import v16

from engine.bus import Message
from engine.node import NodeError
from tests.ocpp_support import Backend, eventually, running_gateway

pytestmark = pytest.mark.timeout(60)

BOOT_ACCEPT = '''
rule_engine.rules.boot_accept {
  sql = """SELECT payload.UniqueId AS id, now_rfc3339() AS Payload.currentTime, 300 AS Payload.interval,
                  'Accepted' AS Payload.status
           FROM "ocpp/cp/+"
           WHERE payload.Action = 'BootNotification'"""
  actions = [{
    function = republish
    args {
      topic = "ocpp/cs/${clientid}"
      payload = """{"MessageTypeId": 3, "UniqueId": "${id}", "Payload": ${Payload}}"""
    }
  }]
}
'''


async def test_a_rule_accepts_every_boot_with_no_backend(tmp_path, mosquitto):
    # the topic template reads clientid from the output, so select it too
    conf = BOOT_ACCEPT.replace("SELECT payload.UniqueId AS id,", "SELECT clientid, payload.UniqueId AS id,")
    async with running_gateway(tmp_path, mosquitto.port, conf) as gw:
        async with websockets.connect(gw.url("AUTO1"), subprotocols=["ocpp1.6"]) as ws:
            cp = v16.ChargePoint("AUTO1", ws)
            task = asyncio.create_task(cp.start())
            result = await asyncio.wait_for(
                cp.call(v16.call.BootNotification(charge_point_model="M", charge_point_vendor="V")), 10)
            assert result.status == "Accepted" and result.interval == 300
            assert result.current_time.endswith("+00:00") or result.current_time.endswith("Z")
            assert gw.ctx.sessions["AUTO1"].keepalive == 300
            task.cancel()
        metrics = gw.node.rules.rules["boot_accept"].metrics
        assert (metrics.matched, metrics.passed, metrics.actions_success) == (1, 1, 1)


async def test_foreach_republishes_one_message_per_sample(tmp_path, mosquitto):
    conf = '''
    rule_engine.rules.samples {
      sql = """FOREACH payload.Payload.meterValue[1].sampledValue AS s
               DO clientid, s.value AS value, s.measurand AS measurand
               INCASE s.measurand != 'Temperature'
               FROM "ocpp/cp/+" WHERE payload.Action = 'MeterValues'"""
      actions = [{function = republish, args { topic = "meter/${clientid}/${measurand}", qos = 1 }}]
    }
    '''
    async with running_gateway(tmp_path, mosquitto.port, conf) as gw:
        backend = Backend(mosquitto.port, "meter/#")
        async with websockets.connect(gw.url("MV1"), subprotocols=["ocpp1.6"]) as ws:
            samples = [{"value": "1500", "measurand": "Energy.Active.Import.Register"},
                       {"value": "21.5", "measurand": "Temperature"},
                       {"value": "7.2", "measurand": "Power.Active.Import"}]
            frame = [2, "m1", "MeterValues", {"connectorId": 1, "meterValue": [
                {"timestamp": "2026-01-01T00:00:00Z", "sampledValue": samples}]}]
            await ws.send(orjson.dumps(frame).decode())
            got = [await backend.next(), await backend.next()]
            await backend.nothing()
        assert got == [
            ("meter/MV1/Energy.Active.Import.Register",
             {"clientid": "MV1", "value": "1500", "measurand": "Energy.Active.Import.Register"}),
            ("meter/MV1/Power.Active.Import", {"clientid": "MV1", "value": "7.2", "measurand": "Power.Active.Import"}),
        ]
        metrics = gw.node.rules.rules["samples"].metrics
        assert (metrics.passed, metrics.actions_total, metrics.actions_success) == (1, 2, 2)
        backend.close()


async def test_rule_on_client_disconnected_sees_the_reason(tmp_path, mosquitto):
    conf = '''
    gateway.ocpp.idle_timeout = 300ms
    rule_engine.rules.offline {
      sql = """SELECT clientid, reason, proto_ver FROM "$events/client_disconnected" """
      actions = [{function = republish, args { topic = "alerts/offline/${clientid}" }}]
    }
    '''
    async with running_gateway(tmp_path, mosquitto.port, conf) as gw:
        backend = Backend(mosquitto.port, "alerts/#")
        async with websockets.connect(gw.url("GONE"), subprotocols=["ocpp1.6"]) as ws:
            with contextlib.suppress(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 5)
        topic, body = await backend.next()
        assert topic == "alerts/offline/GONE"
        assert body == {"clientid": "GONE", "reason": "idle_timeout", "proto_ver": "ocpp1.6"}
        async with websockets.connect(gw.url("BYE"), subprotocols=["ocpp2.0.1"]):
            pass
        assert await backend.next() == ("alerts/offline/BYE", {"clientid": "BYE", "reason": "normal", "proto_ver": "ocpp2.0.1"})
        backend.close()


async def test_loop_guard_other_rules_and_failing_actions(tmp_path, mosquitto, caplog):
    conf = '''
    rule_engine.rules {
      echo {
        sql = """SELECT payload.n AS n FROM "loop/#" """
        actions = [
          {function = republish, args { topic = "loop/again", payload = "${n}" }},
          {function = republish, args { topic = "bad/${n}" }},
          {function = console}
        ]
      }
      watcher { sql = """SELECT topic FROM "loop/again" """, actions = [] }
      broken { sql = """SELECT payload.n * 2 AS m FROM "loop/#" """, actions = [] }
      picky { sql = """SELECT 1 AS one FROM "loop/start" WHERE payload.n = 'nope'""", actions = [] }
    }
    '''
    async with running_gateway(tmp_path, mosquitto.port, conf) as gw:
        rules = gw.node.rules.rules
        with caplog.at_level(logging.INFO):
            gw.node.bus.publish(Message("loop/start", b'{"n": "+"}', origin="test"))
        echo = rules["echo"].metrics
        # its own republish on loop/again is not fed back to it; the other rule sees it
        assert echo.matched == 1 and echo.passed == 1
        assert rules["watcher"].metrics.matched == 1
        # "bad/+" is not a topic name: that action fails, the others still run
        assert (echo.actions_total, echo.actions_success, echo.actions_failed) == (3, 2, 1)
        assert "rule echo action republish failed" in caplog.text and "bad/+" in caplog.text
        assert 'rule echo output: {"n":"+"}' in caplog.text
        # "+" * 2 is an error for that message only, and the republished "+" is not JSON: two failures
        broken = rules["broken"].metrics
        assert broken.matched == 2 and broken.failed_exception == 2 and broken.failed == 2
        assert caplog.text.count("rule broken failed on") == 1  # a second failure within 10 s is not logged again
        picky = rules["picky"].metrics
        assert (picky.matched, picky.failed_no_result, picky.failed, picky.passed) == (1, 1, 1, 0)


async def test_bad_rules_stop_the_start_with_every_error(tmp_path, mosquitto):
    conf = '''
    rule_engine.rules {
      syntax { sql = "SELECT a b c FROM \\"t/#\\"" }
      function { sql = "SELECT frobnicate(a) FROM \\"t/#\\"" }
      arity { sql = "SELECT upper(a, b) FROM \\"t/#\\"" }
      nofrom { sql = "SELECT a" }
      action { sql = "SELECT a FROM \\"t\\"", actions = ["http:nowhere"] }
      good { sql = "SELECT a FROM \\"t\\"" }
    }
    '''
    with pytest.raises(NodeError) as info:
        async with running_gateway(tmp_path, mosquitto.port, conf):
            pass
    message = str(info.value)
    assert "rule syntax: line 1, column 12: Invalid expression / Unexpected token near 'c'" in message
    assert "rule function: line 1, column 8: unknown function frobnicate()" in message
    assert "rule arity: line 1, column 8: upper() takes 1 argument, not 2" in message
    assert "rule nofrom: line 1, column 9: FROM is missing" in message
    assert "rule action: actions[0]: unknown action 'http:nowhere' (no actions.http.nowhere)" in message
    assert "good" not in message


@pytest.mark.parametrize(
    "entry,expected",
    [
        ('"console"', "actions[0]: 'console' is not \"type:name\""),
        ("{function = explode}", "actions[0]: function must be republish or console, not 'explode'"),
        ("{function = republish}", "actions[0]: republish: args.topic is required"),
        ('{function = republish, args { topic = "a", qos = 3 }}', "republish: qos must be 0, 1, 2"),
        ('{function = republish, args { topic = "a", colour = red }}', "republish: unknown argument 'colour'"),
        ('{function = republish, args { topic = "a/${" }}', "republish: unclosed placeholder"),
        ("{function = console, extra = 1}", "actions[0]: unknown key 'extra'"),
        ("42", "actions[0]: expected \"type:name\""),
    ],
)
async def test_bad_action_entries(tmp_path, mosquitto, entry, expected):
    conf = f'rule_engine.rules.r {{ sql = "SELECT a FROM \\"t\\"", actions = [{entry}] }}\n'
    with pytest.raises(NodeError) as info:
        async with running_gateway(tmp_path, mosquitto.port, conf):
            pass
    assert f"rule r: {expected}" in str(info.value) or expected in str(info.value)


async def test_disabled_rule_does_not_run(tmp_path, mosquitto):
    conf = 'rule_engine.rules.off { sql = "SELECT * FROM \\"t/#\\"", enable = false }\n'
    async with running_gateway(tmp_path, mosquitto.port, conf) as gw:
        gw.node.bus.publish(Message("t/1", b"{}", origin="test"))
        assert gw.node.rules.rules["off"].metrics.matched == 0


async def test_rules_see_messages_from_the_broker(tmp_path, mosquitto):
    conf = '''
    mqtt.subscriptions = ["backend/commands/#"]
    rule_engine.rules.relay {
      sql = """SELECT payload.cid AS cid, payload.cmd AS cmd FROM "backend/commands/#" """
      actions = [{function = republish, args { topic = "relayed/${cid}", payload = "${cmd}" }}]
    }
    '''
    async with running_gateway(tmp_path, mosquitto.port, conf) as gw:
        await eventually(lambda: "backend/commands/#" in gw.node.bridge._on_broker)
        backend = Backend(mosquitto.port, "relayed/#")
        backend.publish("backend/commands/x", {"cid": "CP5", "cmd": {"reset": True}})
        assert await backend.next() == ("relayed/CP5", {"reset": True})
        backend.close()
