"""MQTT 5 PUBLISH properties on messages that come FROM the broker: parsed by our client, carried on
the bus message, read by rules as `pub_props` (EMQX's shape), usable in republish templates; topic
aliases the broker sets are resolved; malformed property blocks close the connection with the
reason code MQTT 5 names (counted, one log line) and the bridge reconnects and keeps serving."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct

import aiomqtt
import orjson
import pytest
import websockets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from connectors.mqtt import BridgeOptions, MqttBridge
from connectors.mqtt.client import TOPIC_ALIAS_MAXIMUM, MqttClient
from connectors.mqtt.properties import (
    MalformedPacket,
    parse_publish_properties,
    publish_properties,
    read_varint,
    write_varint,
)
from engine.bus import Bus, Message
from rules.env import Env
from tests.ocpp_support import eventually, recv_json, running_gateway, subscribed
from tests.servers import free_port, read_mqtt_packet

pytestmark = pytest.mark.timeout(60)


def paho_props(**values) -> Properties:
    p = Properties(PacketTypes.PUBLISH)
    for name, value in values.items():
        setattr(p, name, value)
    return p


ALL = dict(PayloadFormatIndicator=1, MessageExpiryInterval=300, ContentType="application/json",
           ResponseTopic="replies/backend", CorrelationData=b"req-7",
           UserProperty=[("site", "Zürich"), ("bay", "3"), ("site", "Bern")])

RULE = '''
mqtt.subscriptions = ["in/#"]
rule_engine.rules.props {
  sql = """SELECT pub_props.'User-Property' AS up, pub_props.'User-Property-Pairs' AS pairs,
                  pub_props.'Content-Type' AS ct, pub_props.'Message-Expiry-Interval' AS mei,
                  pub_props.'Response-Topic' AS rt, pub_props.'Correlation-Data' AS cd,
                  pub_props.'Payload-Format-Indicator' AS pfi, pub_props
           FROM "in/#" """
  actions = [{function = republish, args {topic = "seen/props", payload = "${.}", qos = 1}}]
}
rule_engine.rules.relay {
  sql = """SELECT * FROM "in/#" """
  actions = [{
    function = republish
    args {
      topic = "relayed/${topic}"
      payload = "${payload}"
      qos = 1
      mqtt_properties {
        Content-Type = "${pub_props.'Content-Type'}"
        Response-Topic = "${pub_props.'Response-Topic'}"
        Correlation-Data = "${pub_props.'Correlation-Data'}"
      }
      user_properties = "${pub_props.'User-Property'}"
    }
  }]
}
'''


async def _next(sub: aiomqtt.Client, topic: str) -> aiomqtt.Message:
    async with asyncio.timeout(10):
        async for m in sub.messages:
            if m.topic.matches(topic):
                return m
    raise AssertionError("unreachable")


async def test_a_rule_reads_every_property_an_mqtt5_publisher_set(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port, RULE) as gw, \
            aiomqtt.Client("127.0.0.1", mosquitto.port, protocol=aiomqtt.ProtocolVersion.V5) as sub, \
            aiomqtt.Client("127.0.0.1", mosquitto.port, protocol=aiomqtt.ProtocolVersion.V5) as pub:
        await sub.subscribe("seen/#", qos=1)
        await eventually(lambda: "in/#" in gw.node.bridge._on_broker)
        await pub.publish("in/a", b'{"x":1}', qos=1, properties=paho_props(**ALL))
        seen = orjson.loads((await _next(sub, "seen/props")).payload)
        assert seen["up"] == {"site": "Bern", "bay": "3"}  # EMQX: a map, a repeated name's last value
        assert seen["pairs"] == [{"key": "site", "value": "Zürich"}, {"key": "bay", "value": "3"},
                                 {"key": "site", "value": "Bern"}]
        assert (seen["ct"], seen["rt"], seen["cd"], seen["pfi"]) == \
            ("application/json", "replies/backend", "req-7", 1)
        assert 0 < seen["mei"] <= 300  # mosquitto counts down what is left
        assert "Topic-Alias" not in seen["pub_props"]
        # a message with no properties: pub_props is an empty map, every field undefined
        await pub.publish("in/b", b"{}", qos=1)
        bare = orjson.loads((await _next(sub, "seen/props")).payload)
        assert bare["pub_props"] == {} and bare["ct"] is None and bare["up"] is None
        assert gw.node.bridge.malformed_received == 0


async def test_republishing_a_message_from_the_broker_carries_its_properties_on(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port, RULE) as gw, \
            aiomqtt.Client("127.0.0.1", mosquitto.port, protocol=aiomqtt.ProtocolVersion.V5) as sub, \
            aiomqtt.Client("127.0.0.1", mosquitto.port, protocol=aiomqtt.ProtocolVersion.V5) as pub:
        await sub.subscribe("relayed/#", qos=1)
        await eventually(lambda: "in/#" in gw.node.bridge._on_broker)
        await pub.publish("in/c", b"hello", qos=1, properties=paho_props(**ALL))
        m = await _next(sub, "relayed/in/c")
        assert m.payload == b"hello"
        p = m.properties
        assert (p.ContentType, p.ResponseTopic, p.CorrelationData) == ("application/json", "replies/backend", b"req-7")
        assert p.UserProperty == [("site", "Bern"), ("bay", "3")]


async def test_a_command_with_properties_still_reaches_the_charge_point(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port) as gw, \
            aiomqtt.Client("127.0.0.1", mosquitto.port, protocol=aiomqtt.ProtocolVersion.V5) as backend:
        async with websockets.connect(gw.url("CPP"), subprotocols=["ocpp1.6"]) as ws:
            await subscribed(gw, "CPP")
            command = {"MessageTypeId": 2, "UniqueId": "c1", "Action": "Reset", "Payload": {"type": "Soft"}}
            await backend.publish("ocpp/cs/CPP", orjson.dumps(command), qos=1, properties=paho_props(**ALL))
            assert await recv_json(ws) == [2, "c1", "Reset", {"type": "Soft"}]


# --- the parser ----------------------------------------------------------------------------


def test_a_quoted_key_in_a_template_path_is_the_key():
    from engine.template import Template

    data = {"pub_props": {"Content-Type": "a/b"}}
    assert Template("${pub_props.'Content-Type'}").render(data) == "a/b"
    assert Template('x ${pub_props."Content-Type"} y').render(data) == "x a/b y"


def test_pub_props_of_a_message_without_properties_is_empty_and_costs_nothing():
    message = Message("t", b"{}")
    assert message.properties is None
    assert Env.for_message(message)["pub_props"] == {}


def test_pub_props_has_emqx_shape_for_any_message_with_properties():
    # as a rule's republish sets them, or as the bridge parsed them
    message = Message("t", b"{}", properties={
        "Payload-Format-Indicator": 0, "Correlation-Data": b"\xffid", "Subscription-Identifier": [9],
        "User-Property": [("a", "1"), ("b", "2"), ("a", "3")]})
    assert Env.for_message(message)["pub_props"] == {
        "Payload-Format-Indicator": 0, "Correlation-Data": "\ufffdid", "Subscription-Identifier": 9,
        "User-Property": {"a": "3", "b": "2"},
        "User-Property-Pairs": [{"key": "a", "value": "1"}, {"key": "b", "value": "2"}, {"key": "a", "value": "3"}]}
    several = Message("t", b"", properties={"Subscription-Identifier": [1, 2]})
    assert Env.for_message(several)["pub_props"] == {"Subscription-Identifier": [1, 2]}


def test_every_publish_property_is_parsed_and_repeatable_ones_keep_their_order():
    block = (b"\x01\x01" b"\x02\x00\x00\x01\x2c" b"\x03\x00\x04text" b"\x08\x00\x03r/t" b"\x09\x00\x02\x00\xff"
             b"\x26\x00\x01k\x00\x01a" b"\x26\x00\x01k\x00\x01b" b"\x0b\x05" b"\x0b\x81\x01" b"\x23\x00\x07")
    assert parse_publish_properties(block, 0, len(block)) == {
        "Payload-Format-Indicator": 1, "Message-Expiry-Interval": 300, "Content-Type": "text",
        "Response-Topic": "r/t", "Correlation-Data": b"\x00\xff", "User-Property": [("k", "a"), ("k", "b")],
        "Subscription-Identifier": [5, 129], "Topic-Alias": 7}


@pytest.mark.parametrize("block,needle,code", [
    (b"\x02\x00\x00", "Message-Expiry-Interval runs past", 0x81),
    (b"\x03\x00\x09abc", "Content-Type runs past", 0x81),
    (b"\x26\x00\x01k", "User-Property runs past", 0x81),
    (b"\x03\x00\x02\xff\xfe", "Content-Type is not UTF-8", 0x81),
    (b"\x17\x01", "property 0x17, which a PUBLISH cannot carry", 0x81),
    (b"\x0b\xff\xff\xff\xff\x01", "longer than four bytes", 0x81),
    (b"\x01\x02", "Payload-Format-Indicator 2", 0x82),
    (b"\x03\x00\x00\x03\x00\x00", "Content-Type twice", 0x82),
    (b"\x0b\x00", "Subscription-Identifier 0", 0x82),
])
def test_malformed_blocks_name_what_is_wrong(block, needle, code):
    with pytest.raises(MalformedPacket) as info:
        parse_publish_properties(block, 0, len(block))
    assert needle in str(info.value) and info.value.code == code


props_strategy = st.fixed_dictionaries({}, optional={
    "Payload-Format-Indicator": st.integers(0, 1),
    "Message-Expiry-Interval": st.integers(0, 2**32 - 1),
    "Content-Type": st.text(st.characters(blacklist_categories=("Cs",)), max_size=20),
    "Response-Topic": st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=20),
    "Correlation-Data": st.binary(max_size=30),
    "User-Property": st.lists(st.tuples(st.text(max_size=5), st.text(max_size=5)), min_size=1, max_size=4),
})


@given(props_strategy)
def test_what_we_write_we_read_back(properties):
    try:
        block = publish_properties(properties)
    except UnicodeEncodeError:
        return  # a lone surrogate: engine.bus.properties refuses those before they get here
    length, pos = read_varint(block, 0)
    assert parse_publish_properties(block, pos, pos + length) == properties


@given(st.binary(max_size=64))
def test_random_property_blocks_parse_or_are_malformed(block):
    try:
        parse_publish_properties(block, 0, len(block))
    except MalformedPacket as exc:
        assert exc.code in (0x81, 0x82)


# --- the client against a fake broker (raw sockets) ------------------------------------------


def publish_packet(topic: bytes, props: bytes, payload: bytes, qos: int = 0, packet_id: int = 1,
                   prop_length: int | None = None) -> bytes:
    body = struct.pack("!H", len(topic)) + topic + (struct.pack("!H", packet_id) if qos else b"")
    body += write_varint(len(props) if prop_length is None else prop_length) + props + payload
    return bytes((0x30 | qos << 1,)) + write_varint(len(body)) + body


class FakeBroker:
    """Answers CONNECT, SUBSCRIBE and PINGREQ, records what the client sends, and sends the packets
    `script[n]` to the n-th connection once it connected (or subscribed, for a bridge)."""

    def __init__(self, script: list[list[bytes]], after_subscribe: bool = False) -> None:
        self.script = script
        self.after_subscribe = after_subscribe
        self.port = free_port()
        self.received: list[list[bytes]] = []  # per connection: packets from the client
        self.server: asyncio.base_events.Server | None = None

    async def __aenter__(self) -> FakeBroker:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc) -> None:
        assert self.server is not None
        self.server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.server.wait_closed(), 2)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        number = len(self.received)
        packets: list[bytes] = []
        self.received.append(packets)
        script = self.script[number] if number < len(self.script) else []
        try:
            while True:
                first, body = await read_mqtt_packet(reader)
                packets.append(bytes([first]) + body)
                kind = first >> 4
                if kind == 1:  # CONNECT
                    writer.write(b"\x20\x03\x00\x00\x00")
                    if not self.after_subscribe:
                        writer.write(b"".join(script))
                elif kind == 8:  # SUBSCRIBE: grant QoS 1 to each filter
                    topics, pos = 0, 2
                    plen, pos = read_varint(body, 2)
                    pos += plen
                    while pos < len(body):
                        pos += 2 + struct.unpack_from("!H", body, pos)[0] + 1
                        topics += 1
                    writer.write(bytes((0x90,)) + write_varint(3 + topics) + body[:2] + b"\x00" + b"\x01" * topics)
                    if self.after_subscribe:
                        writer.write(b"".join(script))
                        script = []
                elif kind == 12:
                    writer.write(b"\xd0\x00")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def test_we_announce_a_topic_alias_maximum_and_resolve_the_aliases_the_broker_sets():
    got: list[tuple] = []
    script = [publish_packet(b"long/topic/name", b"\x23\x00\x03", b"one"),  # sets alias 3
              publish_packet(b"", b"\x23\x00\x03", b"two"),  # uses it
              publish_packet(b"", b"\x23\x00\x03\x03\x00\x01x", b"three", qos=1),  # uses it, with a property
              publish_packet(b"other", b"\x23\x00\x03", b"four"),  # moves it
              publish_packet(b"", b"\x23\x00\x03", b"five")]
    async with FakeBroker([script]) as broker:
        client = await MqttClient.connect("127.0.0.1", broker.port, client_id="alias",
                                          on_message=lambda *a: got.append(a), with_properties=True)
        await eventually(lambda: len(got) == 5)
        connect = broker.received[0][0]
        assert b"\x03\x22" + struct.pack("!H", TOPIC_ALIAS_MAXIMUM) in connect  # CONNECT properties
        assert [(t, p, props) for t, p, _, _, props in got] == [
            ("long/topic/name", b"one", None), ("long/topic/name", b"two", None),
            ("long/topic/name", b"three", {"Content-Type": "x"}), ("other", b"four", None), ("other", b"five", None)]
        assert client.protocol_error is None
        await client.disconnect()


@pytest.mark.parametrize("packet,reason,needle", [
    (publish_packet(b"t", b"\x03\x00\x09abc", b"p"), 0x81, "Content-Type runs past"),
    (publish_packet(b"t", b"\x01\x01", b"", prop_length=40), 0x81, "run past the PUBLISH"),
    (publish_packet(b"t", b"\x19\x01", b"p", qos=1), 0x81, "property 0x19"),
    (publish_packet(b"", b"\x23\x00\x05", b"p"), 0x82, "topic alias 5 used before the broker set it"),
    (publish_packet(b"t", b"\x23\x00\x00", b"p"), 0x94, "topic alias 0"),
    (publish_packet(b"t", b"\x23\x01\x00", b"p"), 0x94, "topic alias 256"),
    (publish_packet(b"", b"", b"p"), 0x82, "an empty topic and no topic alias"),
])
async def test_a_malformed_publish_closes_the_connection_with_its_reason_code(packet, reason, needle):
    got: list[tuple] = []
    async with FakeBroker([[packet, publish_packet(b"after", b"", b"x")]]) as broker:
        client = await MqttClient.connect("127.0.0.1", broker.port, client_id="bad",
                                          on_message=lambda *a: got.append(a), with_properties=True)
        await asyncio.wait_for(asyncio.shield(client.closed), 5)
        assert needle in (client.protocol_error or "") and client.closed_by_us
        await eventually(lambda: len(broker.received[0]) == 2)
        assert broker.received[0][1] == bytes((0xE0, reason, 0))  # DISCONNECT (as recorded: no length)
        assert got == []  # nothing delivered, nothing after it read


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=40), st.integers(0, 2))
def test_fuzzed_property_blocks_never_escape_the_client(block, qos):
    """Whatever the property block, the client delivers the message or closes with a reason code."""
    loop = asyncio.new_event_loop()
    try:
        asyncio.set_event_loop(loop)
        got: list[tuple] = []
        client = MqttClient(lambda *a: got.append(a), with_properties=True)
        client._connack.set_result(None)
        sent: list[bytes] = []
        closed: list[bool] = []

        class Transport:
            def write(self, data: bytes) -> None:
                sent.append(data)

            def close(self) -> None:
                closed.append(True)

            def is_closing(self) -> bool:
                return bool(closed)

        client.connection_made(Transport())  # type: ignore[arg-type]
        client.data_received(publish_packet(b"t", block, b"payload", qos=qos))
        if closed:
            assert client.protocol_error and got == []
            assert sent[-1][:2] == b"\xe0\x02" and sent[-1][2] in (0x81, 0x82, 0x94)
        else:
            assert [g[1] for g in got] == [b"payload"]
    finally:
        loop.close()
        asyncio.set_event_loop(None)


async def test_the_bridge_counts_a_malformed_publish_logs_one_line_and_reconnects(caplog):
    bus = Bus()
    got: list[Message] = []
    bus.subscribe("in/#", got.append)
    bad = publish_packet(b"in/x", b"\x26\x00\x05k", b"broken", qos=1)
    good = publish_packet(b"in/y", b"\x26\x00\x01k\x00\x01v", b"fine", qos=1)
    async with FakeBroker([[bad], [good]], after_subscribe=True) as broker:
        bridge = MqttBridge(BridgeOptions(host="127.0.0.1", port=broker.port, client_id="gw-props",
                                          subscriptions=["in/#"], reconnect_initial=0.05, reconnect_max=0.1),
                            bus.publish)
        bus.watch_remote(bridge)
        with caplog.at_level(logging.INFO, logger="ocppgw.mqtt"):
            await bridge.start()
            try:
                await eventually(lambda: len(got) == 1)
            finally:
                await bridge.stop(flush_timeout=1)
    assert [(m.topic, m.payload, m.properties) for m in got] == [("in/y", b"fine", {"User-Property": [("k", "v")]})]
    assert bridge.malformed_received == 1 and bridge.reconnects >= 1
    lines = [r.getMessage() for r in caplog.records if "breaks MQTT" in r.getMessage()]
    assert len(lines) == 1 and "User-Property runs past the properties" in lines[0], lines
    assert all(r.exc_info is None for r in caplog.records)

    from engine.metrics import NodeCollector

    class FakeNode:
        pass

    node = FakeNode()
    node.bridge = bridge  # type: ignore[attr-defined]
    families = {f.name: f for f in NodeCollector(node)._bridge()}  # type: ignore[arg-type]
    assert families["ocppgw_mqtt_bridge_malformed_received"].samples[0].value == 1
