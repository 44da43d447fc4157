"""republish's `mqtt_properties` and `user_properties` (EMQX 5): checked at rule load, carried end to end
to an MQTT 5 subscriber on a real mosquitto, a bad value at run time counted as a failed action."""

from __future__ import annotations

import asyncio
import logging

import aiomqtt
import httpx
import pytest
import websockets

from engine.bus import Bus, Message
from rules.actions import ActionConfigError, build_actions
from tests.ocpp_support import running_gateway, subscribed

pytestmark = pytest.mark.timeout(60)

AUTH = ("admin", "public")


def republish(**args) -> list:
    return build_actions([{"function": "republish", "args": {"topic": "t/out", **args}}], Bus(), "r1", None)


@pytest.mark.parametrize("args,needle", [
    ({"mqtt_properties": {"Topic-Alias": "1"}}, "unknown property 'Topic-Alias'"),
    ({"mqtt_properties": {"Message-Expiry-Interval": "soon"}}, "Message-Expiry-Interval must be an integer, not 'soon'"),
    ({"mqtt_properties": {"Message-Expiry-Interval": 2**32}}, "Message-Expiry-Interval must be 0 to 4294967295"),
    ({"mqtt_properties": {"Message-Expiry-Interval": -1}}, "Message-Expiry-Interval must be 0 to 4294967295"),
    ({"mqtt_properties": {"Payload-Format-Indicator": "2"}}, "Payload-Format-Indicator must be 0 (bytes) or 1"),
    ({"mqtt_properties": {"Response-Topic": "replies/#"}}, "Response-Topic 'replies/#': a topic name cannot contain"),
    ({"mqtt_properties": {"Content-Type": "text/plain\x01"}}, "cannot hold the character U+0001"),
    ({"mqtt_properties": {"Content-Type": "${unclosed"}}, "unclosed placeholder"),
    ({"mqtt_properties": "Content-Type"}, "mqtt_properties must be an object"),
    ({"user_properties": "a=b"}, "user_properties must be one ${placeholder} naming a map"),
    ({"user_properties": 5}, "user_properties must be a ${placeholder}"),
    ({"direct_dispatch": 3}, "direct_dispatch must be true, false or a ${placeholder}"),
])
def test_bad_arguments_are_a_rule_load_error(args, needle):
    with pytest.raises(ActionConfigError) as info:
        republish(**args)
    assert needle in str(info.value) and "republish" in str(info.value)


def test_constant_properties_are_checked_once_and_templates_per_message():
    bus = Bus()
    got: list[Message] = []
    bus.subscribe("#", got.append)
    [action] = build_actions([{"function": "republish", "args": {
        "topic": "t/${n}", "payload": "${n}",
        "mqtt_properties": {"Message-Expiry-Interval": "${ttl}", "Content-Type": "text/${kind}",
                            "Payload-Format-Indicator": 1, "Correlation-Data": "${n}"},
        "user_properties": "${pub_props.'User-Property'}"}}], bus, "r1", None)
    action.run({"n": 1, "ttl": 60, "kind": "plain", "pub_props": {"User-Property": {"a": "ü", "b": 2}}})
    action.run({"n": 2, "ttl": "30", "kind": "x"})  # no pub_props: no user properties
    action.run({"n": 3})  # a missing placeholder leaves its property out
    assert [m.properties for m in got] == [
        {"Payload-Format-Indicator": 1, "Message-Expiry-Interval": 60, "Content-Type": "text/plain",
         "Correlation-Data": b"1", "User-Property": [("a", "ü"), ("b", "2")]},
        {"Payload-Format-Indicator": 1, "Message-Expiry-Interval": 30, "Content-Type": "text/x",
         "Correlation-Data": b"2"},
        {"Payload-Format-Indicator": 1, "Content-Type": "text/undefined", "Correlation-Data": b"3"},
    ]
    with pytest.raises(Exception, match="Message-Expiry-Interval must be an integer, not 'soon'"):
        action.run({"n": 4, "ttl": "soon"})
    with pytest.raises(Exception, match="User-Property: expected a map"):
        action.run({"n": 5, "pub_props": {"User-Property": [1, 2]}})
    assert len(got) == 3


def test_direct_dispatch_is_accepted_with_one_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="ocppgw.rule"):
        republish(direct_dispatch=True)
        republish(direct_dispatch=False)
    lines = [r.getMessage() for r in caplog.records if "direct_dispatch" in r.getMessage()]
    assert lines == ["rule r1: republish: direct_dispatch has no effect here (the message still reaches the "
                     "other rules, as with direct_dispatch = false)"]


RULE = '''
rule_engine.rules.tagged {
  sql = """SELECT clientid, payload.UniqueId AS id, payload.Payload.ttl AS ttl, payload.Payload.props AS props
           FROM "ocpp/cp/+" WHERE payload.Action = 'DataTransfer'"""
  actions = [{
    function = republish
    args {
      topic = "tagged/${clientid}"
      payload = "${id}"
      qos = 1
      mqtt_properties {
        Payload-Format-Indicator = "1"
        Message-Expiry-Interval = "${ttl}"
        Content-Type = "application/json"
        Response-Topic = "ocpp/cs/${clientid}"
        Correlation-Data = "${id}"
      }
      user_properties = "${props}"
    }
  }]
}
'''


def frame(uid: str, ttl, props) -> str:
    import orjson

    return orjson.dumps([2, uid, "DataTransfer", {"vendorId": "V", "ttl": ttl, "props": props}]).decode()


async def test_an_mqtt5_subscriber_sees_the_properties(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port, RULE) as gw, \
            aiomqtt.Client("127.0.0.1", mosquitto.port, protocol=aiomqtt.ProtocolVersion.V5) as sub:
        await sub.subscribe("tagged/#", qos=1)
        async with websockets.connect(gw.url("CP1"), subprotocols=["ocpp1.6"]) as ws:
            await subscribed(gw, "CP1")
            await ws.send(frame("u1", 120, {"site": "Zürich", "bay": 3}))
            await ws.send(frame("u2", "soon", {}))  # not an expiry: the action fails, nothing is sent
            await ws.send(frame("u3", 60, "not a map"))  # not a map: the same
            await ws.send(frame("u4", None, None))  # null: those properties are left out
            got = []
            async with asyncio.timeout(10):
                async for m in sub.messages:
                    got.append(m)
                    if len(got) == 2:
                        break
        first, last = got
        assert first.topic.value == "tagged/CP1" and first.payload == b"u1"
        p = first.properties
        assert (p.PayloadFormatIndicator, p.ContentType, p.ResponseTopic, p.CorrelationData) == \
            (1, "application/json", "ocpp/cs/CP1", b"u1")
        assert 110 <= p.MessageExpiryInterval <= 120  # the broker counts down what is left of it
        assert p.UserProperty == [("site", "Zürich"), ("bay", "3")]
        # the two bad ones did not reach the broker (nor cost the bridge its connection): u4 is next
        assert last.payload == b"u4"
        q = last.properties
        assert not hasattr(q, "MessageExpiryInterval") and not hasattr(q, "UserProperty")
        assert (q.PayloadFormatIndicator, q.CorrelationData) == (1, b"u4")
        metrics = gw.node.rules.rules["tagged"].metrics.as_dict()
        assert (metrics["actions.success"], metrics["actions.failed"]) == (2, 2)
        assert gw.node.bridge.reconnects == 0


async def test_a_bad_property_through_the_rules_api_is_a_400(tmp_path, mosquitto):
    body = {"sql": 'SELECT * FROM "t/#"', "actions": [{"function": "republish", "args": {
        "topic": "out", "mqtt_properties": {"Message-Expiry-Interval": "1h"}}}]}
    async with running_gateway(tmp_path, mosquitto.port) as gw, \
            httpx.AsyncClient(base_url=gw.admin_url, auth=AUTH) as api:
        r = await api.post("/rules", json=body)
        assert r.status_code == 400, r.text
        assert "Message-Expiry-Interval must be an integer, not '1h'" in r.json()["message"]
        assert gw.node.rules.rules == {}


async def test_mqtt_311_warns_at_rule_load_and_still_delivers(tmp_path, mosquitto, caplog):
    with caplog.at_level(logging.WARNING, logger="ocppgw.rule"):
        async with running_gateway(tmp_path, mosquitto.port, RULE + "\nmqtt.proto_ver = v4\n") as gw, \
                aiomqtt.Client("127.0.0.1", mosquitto.port, protocol=aiomqtt.ProtocolVersion.V5) as sub:
            await sub.subscribe("tagged/#", qos=1)
            async with websockets.connect(gw.url("CP1"), subprotocols=["ocpp1.6"]) as ws:
                await subscribed(gw, "CP1")
                await ws.send(frame("u1", 120, {"site": "x"}))
                async with asyncio.timeout(10):
                    m = await anext(aiter(sub.messages))
    assert m.payload == b"u1"
    assert not hasattr(m.properties, "UserProperty") and not hasattr(m.properties, "ContentType")
    warnings = [r.getMessage() for r in caplog.records if "mqtt_properties" in r.getMessage()]
    assert warnings == ["rule tagged: republish: mqtt_properties and user_properties do not reach MQTT "
                        "subscribers: mqtt.proto_ver = v4 (MQTT 3.1.1 has no properties)"]


async def test_embedded_broker_reason():
    from connectors.mqtt.setup import properties_dropped
    from engine.config.schema import MqttSettings

    assert properties_dropped(MqttSettings()) == "the embedded broker speaks MQTT 3.1.1 only"
    assert properties_dropped(MqttSettings(server="mqtt://127.0.0.1:1883")) == ""


async def test_publish_size_counts_the_properties():
    # the bridge compares publish_size with an MQTT 5 broker's Maximum Packet Size before sending:
    # it must be the size of the packet publish writes, properties included
    from connectors.mqtt.client import MqttClient

    class Transport:
        def __init__(self) -> None:
            self.data = b""

        def write(self, data: bytes) -> None:
            self.data += data

        def is_closing(self) -> bool:
            return False

    props = {"Payload-Format-Indicator": 1, "Message-Expiry-Interval": 7, "Content-Type": "text/plain",
             "Response-Topic": "r/ü", "Correlation-Data": b"\x00\x01", "User-Property": [("k", "v" * 200)]}
    for v5, qos, properties in [(True, 1, props), (True, 0, props), (True, 1, None), (False, 1, props)]:
        client = MqttClient(lambda *a: None, v5=v5)
        client.connection_made(Transport())  # type: ignore[arg-type]
        client.publish("t/size", b"x" * 100, qos, False, "token" if qos else None, properties)
        client._flush()
        assert len(client.transport.data) == client.publish_size("t/size", b"x" * 100, qos, properties)
        assert (b"v" * 200 in client.transport.data) == (v5 and properties is not None)
