"""Our MQTT client against a real mosquitto: both protocol versions, every QoS, large and many messages."""

from __future__ import annotations

import asyncio

import pytest

from connectors.mqtt.client import MqttClient, MqttError
from tests.servers import Mosquitto

pytestmark = pytest.mark.timeout(60)


async def pair(port: int, v5: bool):
    got: list[tuple[str, bytes, int, bool]] = []
    arrived = asyncio.Event()

    def on_message(topic, payload, qos, retain):
        got.append((topic, payload, qos, retain))
        arrived.set()

    sub = await MqttClient.connect("127.0.0.1", port, client_id=f"sub-{v5}", on_message=on_message, v5=v5)
    pub = await MqttClient.connect("127.0.0.1", port, client_id=f"pub-{v5}", on_message=lambda *a: None, v5=v5)
    return sub, pub, got


@pytest.mark.parametrize("v5", [True, False])
async def test_every_qos_both_ways_and_large_payloads(mosquitto, v5):
    sub, pub, got = await pair(mosquitto.port, v5)
    assert await sub.subscribe([("t/#", 2)], no_local=True) == [2]
    big = bytes(range(256)) * 1200  # 300 KB: a 3-byte remaining length
    for qos, payload in ((0, b"zero"), (1, b"one"), (2, b"two"), (1, big)):
        ack = pub.publish(f"t/{qos}", payload, qos=qos)
        if ack is not None:
            await asyncio.wait_for(ack, 5)
    for _ in range(100):
        if len(got) == 4:
            break
        await asyncio.sleep(0.05)
    assert [(t, q) for t, _, q, _ in got] == [("t/0", 0), ("t/1", 1), ("t/2", 2), ("t/1", 1)]
    assert got[3][1] == big
    await asyncio.wait_for(sub.unsubscribe(["t/#"]), 5)
    await sub.disconnect()
    await pub.disconnect()
    assert sub.closed.done() and pub.closed.done()


async def test_many_messages_in_few_writes_arrive_in_order(mosquitto):
    sub, pub, got = await pair(mosquitto.port, True)
    await sub.subscribe([("n/#", 1)])
    acks = [pub.publish("n/x", str(i).encode(), qos=1) for i in range(5000)]
    await asyncio.wait_for(asyncio.gather(*acks), 20)
    for _ in range(200):
        if len(got) == 5000:
            break
        await asyncio.sleep(0.05)
    assert [int(p) for _, p, _, _ in got] == list(range(5000))
    await sub.disconnect()
    await pub.disconnect()


@pytest.mark.parametrize(("v5", "qos"), [(True, 1), (True, 2), (False, 1), (False, 2)])
async def test_acknowledgements_by_token_reach_on_ack_once_each(mosquitto, v5, qos):
    sub, pub, got = await pair(mosquitto.port, v5)
    await sub.subscribe([("k/#", qos)])
    acked: list[int] = []
    pub.on_ack = lambda token, code: acked.append(token) if code < 0x80 else None
    futures = [pub.publish("k/x", b"%d" % i, qos=qos, token=1000 + i) for i in range(300)]
    futures.append(pub.publish("k/y", b"with a future", qos=qos))  # the two kinds side by side
    assert futures[:300] == [None] * 300
    await asyncio.wait_for(futures[300], 10)
    for _ in range(200):
        if len(acked) == 300 and len(got) == 301:
            break
        await asyncio.sleep(0.05)
    assert sorted(acked) == list(range(1000, 1300))
    assert [p for _, p, _, _ in got] == [b"%d" % i for i in range(300)] + [b"with a future"]
    await sub.disconnect()
    await pub.disconnect()


@pytest.mark.parametrize("qos", [1, 2])
async def test_a_publish_the_broker_refuses_fails_with_its_reason_code(qos):
    """MQTT 5: mosquitto answers a publish its ACL denies with reason code 0x87; the future fails
    with it, on_ack gets it, and the messages around it are still delivered."""
    broker = Mosquitto(acl="topic readwrite ok/#\ntopic read denied/#\n")
    broker.start()
    try:
        sub, pub, got = await pair(broker.port, True)
        await sub.subscribe([("#", qos)])
        with pytest.raises(MqttError, match="refused the message: 0x87 not authorized"):
            await asyncio.wait_for(pub.publish("denied/x", b"no", qos=qos), 5)
        codes: dict[int, int] = {}
        pub.on_ack = codes.__setitem__
        pub.publish("ok/1", b"before", qos=qos, token=1)
        pub.publish("denied/y", b"no", qos=qos, token=2)
        pub.publish("ok/2", b"after", qos=qos, token=3)
        for _ in range(100):
            if len(codes) == 3 and len(got) == 2:
                break
            await asyncio.sleep(0.05)
        assert codes[2] == 0x87 and codes[1] < 0x80 and codes[3] < 0x80
        assert [p for _, p, _, _ in got] == [b"before", b"after"]
        await sub.disconnect()
        await pub.disconnect()
    finally:
        broker.kill()


async def test_no_local_on_v5_and_retain_flag(mosquitto):
    got = []
    client = await MqttClient.connect("127.0.0.1", mosquitto.port, client_id="self", on_message=lambda *m: got.append(m), v5=True)
    await client.subscribe([("me/#", 1)], no_local=True)
    await client.publish("me/x", b"mine", qos=1)
    other = await MqttClient.connect("127.0.0.1", mosquitto.port, client_id="other", on_message=lambda *m: None, v5=True)
    await other.publish("me/y", b"theirs", qos=1, retain=True)
    await asyncio.sleep(0.3)
    assert [(t, p) for t, p, _, _ in got] == [("me/y", b"theirs")]  # our own publish did not come back
    await client.disconnect()
    await other.disconnect()


async def test_refused_and_unreachable(tmp_path):
    broker = Mosquitto(users={"u": "p"})
    broker.start()
    try:
        for v5 in (True, False):
            with pytest.raises(MqttError, match="refused the connection: (not authorized|bad user name or password)"):
                await MqttClient.connect("127.0.0.1", broker.port, client_id="c", on_message=lambda *a: None,
                                         v5=v5, username="u", password="wrong")
        ok = await MqttClient.connect("127.0.0.1", broker.port, client_id="c", on_message=lambda *a: None,
                                      username="u", password="p")
        await ok.disconnect()
    finally:
        broker.stop()
    from tests.servers import free_port

    with pytest.raises(MqttError, match="cannot connect"):
        await MqttClient.connect("127.0.0.1", free_port(), client_id="c", on_message=lambda *a: None)


async def test_pending_acks_fail_when_the_broker_goes(mosquitto):
    client = await MqttClient.connect("127.0.0.1", mosquitto.port, client_id="gone", on_message=lambda *a: None)
    mosquitto.kill()
    await asyncio.wait_for(asyncio.shield(client.closed), 5)
    with pytest.raises(MqttError):
        client.publish("x", b"y", qos=1)


def test_malformed_length_is_refused():
    loop = asyncio.new_event_loop()
    try:
        asyncio.set_event_loop(loop)
        client = MqttClient(lambda *a: None)
        closed = []

        class Transport:
            def close(self):
                closed.append(True)

            def is_closing(self):
                return False

            def write(self, data):
                pass

        client.connection_made(Transport())  # type: ignore[arg-type]
        client.data_received(b"\x30\xff\xff\xff\xff\x01")  # a 5-byte remaining length
        assert closed == [True]
        client.data_received(b"\x30\x00")  # after the error nothing more is read
        assert closed == [True]
        waiting = MqttClient(lambda *a: None)
        waiting.connection_made(Transport())  # type: ignore[arg-type]
        waiting.data_received(b"\x30")  # half a header: waits for more, no error
        assert closed == [True]
        short = MqttClient(lambda *a: None)
        short.connection_made(Transport())  # type: ignore[arg-type]
        short.data_received(b"\x90\x01\x00")  # a SUBACK too short to hold its packet id
        assert closed == [True, True]
    finally:
        loop.close()
        asyncio.set_event_loop(None)


async def test_v5_maximum_packet_size_and_disconnect_reason_code():
    """MQTT 5: the client reads the broker's Maximum Packet Size from CONNACK (among its other
    properties) and keeps the reason code of the broker's DISCONNECT (0x95 packet too large);
    with 3.1.1 the broker just closes, with no reason."""
    broker = Mosquitto()
    broker.conf.write_text(broker.conf.read_text() + "max_packet_size 500\n")
    broker.start()
    try:
        v5 = await MqttClient.connect("127.0.0.1", broker.port, client_id="big5", on_message=lambda *a: None)
        assert v5.max_packet_size == 500 and v5.disconnect_reason is None
        # the whole packet (MQTT 5 §3.1.2.11: fixed header included), which mosquitto still takes
        assert v5.publish_size("t", b"x" * 491, 1) == 500
        await asyncio.wait_for(v5.publish("t", b"x" * 491, qos=1), 5)
        v5.publish("t", b"x" * 600, qos=1, token="too big")
        await asyncio.wait_for(asyncio.shield(v5.closed), 5)
        assert v5.disconnect_reason == 0x95 and not v5.timed_out
        v4 = await MqttClient.connect("127.0.0.1", broker.port, client_id="big4", on_message=lambda *a: None,
                                      v5=False)
        assert v4.max_packet_size is None
        v4.publish("t", b"x" * 1000, qos=1, token="too big")
        await asyncio.wait_for(asyncio.shield(v4.closed), 5)
        assert v4.disconnect_reason is None
    finally:
        broker.stop()


def test_connack_properties_are_skipped_by_type():
    from connectors.mqtt.properties import connack_max_packet_size

    props = (b"\x21\x00\x0a"  # receive maximum (two bytes)
             b"\x12\x00\x03abc"  # assigned client identifier (string)
             b"\x26\x00\x01k\x00\x01v"  # user property (string pair)
             b"\x24\x01"  # maximum QoS (byte)
             b"\x27\x00\x01\x00\x00")  # maximum packet size (four bytes): 65536
    assert connack_max_packet_size(bytes([len(props)]) + props, 0) == 65536
    assert connack_max_packet_size(b"\x03\x24\x01\x25", 0) is None  # not given


async def test_a_publish_no_mqtt_packet_can_frame_raises_before_anything_is_queued(mosquitto):
    client = await MqttClient.connect("127.0.0.1", mosquitto.port, client_id="huge", on_message=lambda *a: None)

    class Huge(bytes):
        def __len__(self):
            return 268_435_456  # one byte more than four bytes of remaining length can say

    with pytest.raises(OverflowError):
        client.publish("t", Huge(), qos=1, token="huge")
    assert not client._tokens and not client._out  # nothing half-written
    await asyncio.wait_for(client.publish("t", b"fine", qos=1), 5)
    await client.disconnect()
