"""The MQTT bridge against a real mosquitto: both directions, outages, overflow, echoes."""

from __future__ import annotations

import asyncio
import contextlib

import aiomqtt
import pytest

from connectors.mqtt import BridgeOptions, MqttBridge
from engine.bus import Bus, Message
from tests.servers import Mosquitto

pytestmark = pytest.mark.timeout(60)


def make_bridge(bus: Bus, port: int, **overrides) -> MqttBridge:
    options = BridgeOptions(
        host="127.0.0.1", port=port, client_id="gw-test",
        forward_topics=["ocpp/#"], reconnect_initial=0.1, reconnect_max=0.5, **overrides,
    )
    bridge = MqttBridge(options, bus.publish)
    bus.watch_remote(bridge)
    bus.subscribe("#", bridge.forward)
    return bridge


@contextlib.asynccontextmanager
async def subscriber(port: int, *filters: str, client_id: str | None = None, clean: bool = True):
    """An outside MQTT client; with clean=False its session (and queue) survives disconnects."""
    client = aiomqtt.Client(
        "127.0.0.1", port, identifier=client_id, protocol=aiomqtt.ProtocolVersion.V311, clean_session=clean
    )
    async with client:
        for f in filters:
            await client.subscribe(f, qos=1)
        yield client


async def take(client: aiomqtt.Client, n: int, timeout: float = 15.0) -> list[tuple[str, bytes]]:
    got: list[tuple[str, bytes]] = []

    async def collect():
        async for m in client.messages:
            got.append((m.topic.value, m.payload))
            if len(got) == n:
                return

    await asyncio.wait_for(collect(), timeout)
    return got


async def nothing_more(client: aiomqtt.Client, wait: float = 0.5) -> None:
    with contextlib.suppress(asyncio.TimeoutError):
        m = await asyncio.wait_for(anext(aiter(client.messages)), wait)
        raise AssertionError(f"unexpected message {m.topic} {m.payload!r}")


async def eventually(predicate, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


async def test_bus_to_broker_follows_forward_filters(mosquitto):
    bus = Bus()
    bridge = make_bridge(bus, mosquitto.port)
    await bridge.start()
    assert await bridge.wait_connected(5)
    async with subscriber(mosquitto.port, "#", "$events/#") as sub:
        bus.publish(Message("ocpp/cp/CP1", b'{"n":1}', origin="ocpp"))
        bus.publish(Message("elsewhere/x", b"not forwarded", origin="ocpp"))
        bus.publish(Message("$events/client_connected", b"{}", origin="event"))
        bus.publish(Message("alerts/CP1", b"from a rule", origin="rule:r1"))
        bus.publish(Message("ocpp/cp/CP1", b'{"n":2}', origin="ocpp"))
        assert await take(sub, 3) == [
            ("ocpp/cp/CP1", b'{"n":1}'), ("alerts/CP1", b"from a rule"), ("ocpp/cp/CP1", b'{"n":2}')
        ]
        await nothing_more(sub)
    await bridge.stop()
    assert bridge.published == 3 and bridge.dropped == 0


@pytest.mark.parametrize("proto_ver", ["v5", "v4"])
async def test_broker_to_bus_and_no_echo(mosquitto, proto_ver):
    bus = Bus()
    bridge = make_bridge(bus, mosquitto.port, proto_ver=proto_ver)
    got: list[Message] = []
    bus.subscribe("ocpp/cs/CP1", got.append, remote=True)
    await bridge.start()
    assert await bridge.wait_connected(5)
    await eventually(lambda: "ocpp/cs/CP1" in bridge._on_broker)
    async with subscriber(mosquitto.port, "ocpp/#") as sub:
        # a backend command arrives in the bus, once, and is not sent back to the broker
        await sub.publish("ocpp/cs/CP1", b'{"MessageTypeId":2}', qos=1)
        await eventually(lambda: len(got) == 1)
        assert got[0].origin == "mqtt" and got[0].payload == b'{"MessageTypeId":2}'
        assert await take(sub, 1) == [("ocpp/cs/CP1", b'{"MessageTypeId":2}')]
        # a local publish on a subscribed topic: delivered locally once, on the broker once,
        # and the broker's echo does not come back in (no-local on v5, echo filter on v4)
        bus.publish(Message("ocpp/cs/CP1", b"local answer", origin="rule:boot"))
        assert await take(sub, 1) == [("ocpp/cs/CP1", b"local answer")]
        await asyncio.sleep(0.5)
        assert [m.payload for m in got] == [b'{"MessageTypeId":2}', b"local answer"]
        # an identical message from the backend is still delivered (the echo was counted once)
        await sub.publish("ocpp/cs/CP1", b"local answer", qos=1)
        await eventually(lambda: len(got) == 3)
    await bridge.stop()
    if proto_ver == "v4":
        assert bridge.echo_suppressed == 1


async def test_unsubscribes_when_last_remote_subscription_goes(mosquitto):
    bus = Bus()
    bridge = make_bridge(bus, mosquitto.port)
    got: list[Message] = []
    sub_a = bus.subscribe("ocpp/cs/+", got.append, remote=True)
    await bridge.start()
    await eventually(lambda: "ocpp/cs/+" in bridge._on_broker)
    bus.unsubscribe(sub_a)
    await eventually(lambda: not bridge._on_broker)
    async with subscriber(mosquitto.port) as client:
        await client.publish("ocpp/cs/CP9", b"x", qos=1)
        await asyncio.sleep(0.3)
    assert got == []
    await bridge.stop()


async def test_subscription_churn_ends_with_exactly_the_wanted_filters(mosquitto):
    """Filters come and go while earlier SUBSCRIBE/UNSUBSCRIBE packets are still in flight (the sync
    only looks at what changed since its last pass): the broker ends up with exactly what is wanted,
    and a command on a kept filter arrives."""
    bus = Bus()
    bridge = make_bridge(bus, mosquitto.port)
    got: list[Message] = []
    await bridge.start()
    assert await bridge.wait_connected(5)
    subs = {i: bus.subscribe(f"ocpp/cs/C{i}", got.append, remote=True) for i in range(600)}
    await asyncio.sleep(0)  # the first batch is on its way
    for i in range(0, 600, 2):
        bus.unsubscribe(subs.pop(i))
    for i in range(0, 100, 2):
        subs[i] = bus.subscribe(f"ocpp/cs/C{i}", got.append, remote=True)
    await asyncio.sleep(0.01)
    for i in range(1, 40, 2):
        bus.unsubscribe(subs.pop(i))
    wanted = {f"ocpp/cs/C{i}" for i in subs}
    await eventually(lambda: bridge._on_broker == wanted)
    async with subscriber(mosquitto.port) as client:
        await client.publish("ocpp/cs/C41", b"kept", qos=1)
        await client.publish("ocpp/cs/C3", b"gone", qos=1)
        await client.publish("ocpp/cs/C98", b"back", qos=1)
    await eventually(lambda: sorted(m.payload for m in got) == [b"back", b"kept"])
    await asyncio.sleep(0.2)
    assert sorted(m.payload for m in got) == [b"back", b"kept"]
    await bridge.stop()


async def test_messages_the_broker_refuses_are_counted_not_retried(caplog):
    """MQTT 5: a broker that refuses some publishes (here its ACL: reason code 0x87) gets them once;
    they are counted as refused (not published), logged once per reason code, and the messages
    around them still go through in order."""
    broker = Mosquitto(acl="topic read ocpp/#\ntopic readwrite ocpp/cp/CP1\n")  # no writing to ocpp/cp/DENIED
    broker.start()
    try:
        bus = Bus()
        bridge = make_bridge(bus, broker.port)
        await bridge.start()
        assert await bridge.wait_connected(5)
        async with subscriber(broker.port, "ocpp/cp/#") as sub:
            for i in range(10):
                cid = "DENIED" if i % 3 == 0 else "CP1"
                bus.publish(Message(f"ocpp/cp/{cid}", str(i).encode(), origin="ocpp"))
            got = await take(sub, 6)
            assert [p for _, p in got] == [b"1", b"2", b"4", b"5", b"7", b"8"]
            await eventually(lambda: bridge.refused == 4 and bridge.published == 6)
            assert bridge.buffered == 0
            await nothing_more(sub)
        warnings = [r.getMessage() for r in caplog.records if "refused a message" in r.getMessage()]
        assert len(warnings) == 1 and "0x87 not authorized" in warnings[0] and "ocpp/cp/DENIED" in warnings[0]
        await bridge.stop()
    finally:
        broker.kill()


async def test_outage_keeps_every_message_in_order(mosquitto):
    bus = Bus()
    bridge = make_bridge(bus, mosquitto.port)
    inbound: list[Message] = []
    bus.subscribe("ocpp/cs/CP1", inbound.append, remote=True)
    await bridge.start()
    assert await bridge.wait_connected(5)
    # a subscriber whose session (and queue) outlives the broker restart
    async with subscriber(mosquitto.port, "ocpp/cp/#", client_id="watcher", clean=False):
        pass
    mosquitto.terminate()
    await eventually(lambda: not bridge.connected)
    for i in range(1000):
        bus.publish(Message("ocpp/cp/CP1", str(i).encode(), origin="ocpp"))
    assert bridge.buffered == 1000 and bridge.dropped == 0
    mosquitto.start()
    async with subscriber(mosquitto.port, client_id="watcher", clean=False) as sub:
        got = await take(sub, 1000, timeout=30)
        assert [int(p) for _, p in got] == list(range(1000))
        await nothing_more(sub)
    assert bridge.published == 1000 and bridge.buffered == 0 and bridge.reconnects >= 1
    # subscriptions were restored on reconnect: commands reach the bus again
    await eventually(lambda: "ocpp/cs/CP1" in bridge._on_broker)
    async with subscriber(mosquitto.port) as client:
        await client.publish("ocpp/cs/CP1", b"after restart", qos=1)
    await eventually(lambda: [m.payload for m in inbound] == [b"after restart"])
    await bridge.stop()


async def test_overflow_drops_the_oldest_and_counts(mosquitto):
    bus = Bus()
    bridge = make_bridge(bus, mosquitto.port, buffer_max_messages=100)
    await bridge.start()
    assert await bridge.wait_connected(5)
    async with subscriber(mosquitto.port, "ocpp/cp/#", client_id="watcher2", clean=False):
        pass
    mosquitto.terminate()
    await eventually(lambda: not bridge.connected)
    for i in range(250):
        bus.publish(Message("ocpp/cp/CP1", str(i).encode(), origin="ocpp"))
    assert bridge.dropped == 150 and bridge.buffered == 100
    mosquitto.start()
    async with subscriber(mosquitto.port, client_id="watcher2", clean=False) as sub:
        got = await take(sub, 100)
        assert [int(p) for _, p in got] == list(range(150, 250))
        await nothing_more(sub)
    await bridge.stop()


async def test_stop_flushes_what_is_buffered(mosquitto):
    bus = Bus()
    bridge = make_bridge(bus, mosquitto.port, max_inflight=5)
    await bridge.start()
    assert await bridge.wait_connected(5)
    async with subscriber(mosquitto.port, "ocpp/#") as sub:
        for i in range(300):
            bus.publish(Message("ocpp/cp/CP2", str(i).encode(), origin="ocpp"))
        await bridge.stop()
        assert bridge.published == 300 and bridge.buffered == 0
        got = await take(sub, 300)
        assert [int(p) for _, p in got] == list(range(300))


async def test_unreachable_broker_buffers_and_retries():
    from tests.servers import free_port

    bus = Bus()
    bridge = make_bridge(bus, free_port())
    await bridge.start()
    await eventually(lambda: bridge.reconnects >= 2)
    bus.publish(Message("ocpp/cp/CP1", b"waiting", origin="ocpp"))
    assert not bridge.connected and bridge.buffered == 1
    assert bridge.last_error
    await bridge.stop()


async def test_mqtts_with_credentials(tmp_path):
    """mqtts:// with a CA file, and username/password: wrong ones are retried, never crash."""
    from connectors.mqtt.setup import bridge_options
    from engine.config.loader import load_settings
    from tests.certs import CertAuthority
    from tests.servers import Mosquitto

    ca = CertAuthority(tmp_path)
    server = ca.server()
    broker = Mosquitto(users={"gw": "s3cret"}, tls=(ca.cert_path, server.cert, server.key))
    broker.start()
    try:
        conf = tmp_path / "gw.conf"
        base = f'mqtt {{ server = "mqtts://localhost:{broker.port}", username = gw, ssl.cacertfile = "{ca.cert_path}" }}\n'
        conf.write_text(base + 'mqtt.password = "wrong"\nmqtt.reconnect.initial_interval = 100ms\n')
        bus = Bus()
        bad = MqttBridge(bridge_options(load_settings(conf, {}).mqtt, "n1", ["ocpp/"]), bus.publish)
        await bad.start()
        await eventually(lambda: bad.reconnects >= 1)
        assert not bad.connected and "authoriz" in bad.last_error.lower()
        await bad.stop()

        conf.write_text(base + 'mqtt.password = "s3cret"\n')
        options = bridge_options(load_settings(conf, {}).mqtt, "n1", ["ocpp/"])
        assert options.tls is not None and options.client_id == "n1"
        bridge = MqttBridge(options, bus.publish)
        bus.subscribe("#", bridge.forward)
        await bridge.start()
        assert await bridge.wait_connected(5)
        bus.publish(Message("ocpp/cp/CP1", b"over tls", origin="ocpp"))
        await eventually(lambda: bridge.published == 1)
        await bridge.stop()

        # a server certificate from a CA we do not trust is refused
        (tmp_path / "other").mkdir()
        other = CertAuthority(tmp_path / "other")
        conf.write_text(f'mqtt {{ server = "mqtts://localhost:{broker.port}", username = gw, password = s3cret, '
                        f'ssl.cacertfile = "{other.cert_path}" }}\n')
        untrusted = MqttBridge(bridge_options(load_settings(conf, {}).mqtt, "n1", ["ocpp/"]), bus.publish)
        await untrusted.start()
        await eventually(lambda: untrusted.reconnects >= 1 or bool(untrusted.last_error))
        assert not untrusted.connected and "certificate" in untrusted.last_error.lower()
        await untrusted.stop()
    finally:
        broker.stop()


def test_outgoing_buffer_requeue_keeps_order_and_bounds():
    from connectors.mqtt.buffer import OutgoingBuffer

    buf = OutgoingBuffer(5)
    for i in range(3, 6):
        buf.append(Message("t", str(i).encode()))
    buf.requeue_front([Message("t", b"0"), Message("t", b"1"), Message("t", b"2")])
    assert buf.dropped == 1  # six for five places: the oldest ("0") goes
    assert [m.payload for m in buf.take(10, 0)] == [b"1", b"2", b"3", b"4", b"5"]


def test_outgoing_buffer_take_stops_at_a_later_subscription_stamp():
    from connectors.mqtt.buffer import OutgoingBuffer

    buf = OutgoingBuffer(10)
    for i, stamp in enumerate([0, 1, 1, 2, 1]):
        buf.append(Message("t", str(i).encode()), stamp)
    assert [m.payload for m in buf.take(2, 1)] == [b"0", b"1"]  # the limit
    assert [m.payload for m in buf.take(10, 1)] == [b"2"]  # "3" waits for subscription 2, and "4" behind it
    assert buf.take(10, 1) == [] and len(buf) == 2
    assert [m.payload for m in buf.take(10, 2)] == [b"3", b"4"]


def test_echo_filter_counts_and_expires(monkeypatch):
    from connectors.mqtt import buffer

    now = [1000.0]
    monkeypatch.setattr(buffer.time, "monotonic", lambda: now[0])
    echo = buffer.EchoFilter(ttl=10)
    echo.expect("t", b"x")
    echo.expect("t", b"x")
    assert echo.consume("t", b"x") and len(echo) == 1
    now[0] += 5
    echo.expect("t", b"x")  # a newer one
    now[0] += 6  # the first remaining is older than 10s now, the newer one is not
    echo.expect("u", b"y")
    assert len(echo) == 2
    assert echo.consume("t", b"x") and not echo.consume("t", b"x")
    assert echo.suppressed == 2


async def test_a_message_waits_for_the_subscriptions_made_before_it(mosquitto, monkeypatch):
    """With a slow SUBACK, the first upstream message of a new charge point is held until its
    command topic is subscribed: a fast backend's answer to it cannot be lost."""
    from connectors.mqtt import client as mqtt_client

    original = mqtt_client.MqttClient.subscribe

    def slow_subscribe(self, topics, no_local=True):
        future = original(self, topics, no_local)
        delayed = asyncio.get_running_loop().create_future()

        def later(f):
            asyncio.get_running_loop().call_later(0.5, lambda: delayed.done() or delayed.set_result(f.result()))

        future.add_done_callback(later)
        return delayed

    monkeypatch.setattr(mqtt_client.MqttClient, "subscribe", slow_subscribe)
    bus = Bus()
    bridge = make_bridge(bus, mosquitto.port)
    await bridge.start()
    assert await bridge.wait_connected(5)
    await eventually(lambda: bridge._subscribed_upto >= 0)
    async with subscriber(mosquitto.port, "ocpp/cp/#") as sub:
        bus.subscribe("ocpp/cs/CP1", lambda m: None, remote=True)
        bus.publish(Message("ocpp/cp/CP1", b"first CALL", origin="ocpp"))
        got = await take(sub, 1)
        # by the time the broker has the CALL, it has the command subscription too
        assert got == [("ocpp/cp/CP1", b"first CALL")]
        assert "ocpp/cs/CP1" in bridge._on_broker
    await bridge.stop()
