"""The MQTT bridge's durable buffer (connectors/mqtt/journal.py) against a real mosquitto."""

from __future__ import annotations

import sqlite3

import pytest

from connectors.mqtt import MqttBridge
from connectors.mqtt.buffer import OutgoingBuffer
from connectors.mqtt.journal import decode, encode
from engine.bus import Bus, Message
from engine.durable import DurableError, queue_path
from tests.servers import Mosquitto
from tests.test_bridge import eventually, make_bridge, subscriber, take

pytestmark = pytest.mark.timeout(90)


def bridge_on(tmp_path, port: int, mode: str, **overrides) -> tuple[Bus, MqttBridge]:
    bus = Bus()
    path = queue_path(tmp_path, "n1", "mqtt_bridge")
    return bus, make_bridge(bus, port, journal_path=path, buffer_mode=mode, **overrides)


def stored(tmp_path) -> list[Message]:
    """What the bridge's file holds (read with sqlite3 beside the queue's lock)."""
    db = sqlite3.connect(queue_path(tmp_path, "n1", "mqtt_bridge"))
    try:
        return [decode(data) for (data,) in db.execute("SELECT data FROM items ORDER BY seq")]
    finally:
        db.close()


def payloads(n: int, start: int = 0) -> list[bytes]:
    return [b'{"n":%d}' % i for i in range(start, start + n)]


@pytest.mark.parametrize(("first", "second"), [("disk", "disk"), ("memory", "memory"), ("memory", "disk"),
                                               ("disk", "memory")])
async def test_kept_across_a_stop_with_the_broker_down_and_sent_first(tmp_path, first, second):
    broker = Mosquitto()  # not started yet: the broker is down
    try:
        bus, bridge = bridge_on(tmp_path, broker.port, first)
        await bridge.start()
        for payload in payloads(300):
            bus.publish(Message("ocpp/cp/CP1", payload, origin="ocpp"))
        await bridge.stop(flush_timeout=0.5)
        kept = stored(tmp_path)
        assert [m.payload for m in kept] == payloads(300)

        # the next start (possibly with the other mode): the kept ones first, then the new ones
        bus, bridge = bridge_on(tmp_path, broker.port, second)
        assert bridge.buffered == 300
        for payload in payloads(20, 300):
            bus.publish(Message("ocpp/cp/CP1", payload, origin="ocpp"))
        broker.start()
        async with subscriber(broker.port, "ocpp/#") as sub:
            await bridge.start()
            got = await take(sub, 320, timeout=30)
        assert [p for _, p in got] == payloads(320)
        await eventually(lambda: bridge.buffered == 0)
        assert bridge.redelivered == 300
        await bridge.stop()
        assert stored(tmp_path) == []  # every acknowledged message left the file
    finally:
        broker.stop()


async def test_disk_mode_writes_before_sending_and_removes_at_the_puback(tmp_path, mosquitto):
    bus, bridge = bridge_on(tmp_path, mosquitto.port, "disk")
    await bridge.start()
    assert await bridge.wait_connected(5)
    async with subscriber(mosquitto.port, "ocpp/#") as sub:
        for payload in payloads(500):
            bus.publish(Message("ocpp/cp/CP1", payload, origin="ocpp"))
        assert bridge.buffered == 500  # none goes out before its write completed
        assert bridge.journal is not None and bridge.journal.items == 500
        got = await take(sub, 500)
    assert [p for _, p in got] == payloads(500)
    await eventually(lambda: bridge.journal is not None and bridge.journal.items == 0)
    assert 0 < bridge.journal.commits < 500  # group commit
    assert bridge.redelivered == 0
    await bridge.stop()
    assert stored(tmp_path) == []


async def test_a_second_bridge_on_the_same_file_is_refused(tmp_path):
    _, bridge = bridge_on(tmp_path, 1, "disk")
    with pytest.raises(DurableError, match="in use by another process"):
        bridge_on(tmp_path, 1, "disk")
    await bridge.stop(flush_timeout=0)


async def test_full_disk_buffer_drops_are_removed_from_the_file(tmp_path):
    broker = Mosquitto()
    try:
        bus, bridge = bridge_on(tmp_path, broker.port, "disk", buffer_max_messages=10)
        await bridge.start()
        for payload in payloads(25):
            bus.publish(Message("ocpp/cp/CP1", payload, origin="ocpp"))
        await bridge.stop(flush_timeout=0)
        assert bridge.dropped == 15
        assert [m.payload for m in stored(tmp_path)] == payloads(10, 15)
    finally:
        broker.stop()


def test_buffer_bound_in_bytes_and_drop_newest():
    dropped: list[bytes] = []
    buf = OutgoingBuffer(100, max_bytes=30, overflow="drop_newest", on_drop=lambda m: dropped.append(m.payload))
    for i in range(5):
        buf.append(Message("t", b"%09d" % i))  # 10 bytes each
    assert buf.dropped == 2 and dropped == [b"000000003", b"000000004"] and buf.bytes == 30
    oldest = OutgoingBuffer(100, max_bytes=30, on_drop=lambda m: dropped.append(m.payload))
    for i in range(5):
        oldest.append(Message("t", b"%09d" % i))
    assert [m.payload for m in oldest.take(10, 0)] == [b"000000002", b"000000003", b"000000004"]
    assert oldest.dropped == 2 and oldest.bytes == 0


def test_a_message_survives_encoding_with_its_properties():
    props = {"Content-Type": "application/json", "Correlation-Data": b"\x00\xffid",
             "User-Property": [("a", "1"), ("b", "2")], "Message-Expiry-Interval": 60}
    message = decode(encode(Message("ocpp/cp/é", b"\x00payload", qos=1, retain=True, properties=props)))
    assert (message.topic, message.payload, message.qos, message.retain) == ("ocpp/cp/é", b"\x00payload", 1, True)
    assert message.properties == props
    plain = decode(encode(Message("t", b"")))
    assert plain.properties is None and plain.payload == b"" and not plain.retain


async def test_metrics_read_the_file_live(tmp_path):
    from engine.metrics import _bridge_disk

    broker = Mosquitto()  # down
    try:
        bus, bridge = bridge_on(tmp_path, broker.port, "disk")

        def values() -> dict[str, float]:
            return {f.name.removeprefix("ocppgw_"): f.samples[0].value for f in _bridge_disk(bridge)}

        assert values()["mqtt_bridge_disk_messages"] == 0
        for payload in payloads(3):
            bus.publish(Message("ocpp/cp/CP1", payload, origin="ocpp"))
        assert bridge.journal is not None and bridge.journal.queue is not None
        await bridge.journal.queue.flush()
        now = values()
        assert now["mqtt_bridge_disk_messages"] == 3
        assert now["mqtt_bridge_disk_bytes"] == 3 * len(encode(Message("ocpp/cp/CP1", payloads(1)[0])))
        assert now["mqtt_bridge_disk_commits"] >= 1
        assert now["mqtt_bridge_redelivered"] == 0 and now["mqtt_bridge_disk_write_errors"] == 0
        await bridge.stop(flush_timeout=0)
    finally:
        broker.stop()


@pytest.mark.parametrize("proto_ver", ["v5", "v4"])
async def test_a_poison_message_leaves_the_file(tmp_path, proto_ver):
    """v5: over the broker's announced maximum packet size, never sent; v4: the broker drops the
    connection over it until it is dropped (poison.py). Either way it must not come back at a restart."""
    broker = Mosquitto()
    broker.conf.write_text(broker.conf.read_text() + "max_packet_size 1000\n")
    broker.start()
    try:
        bus, bridge = bridge_on(tmp_path, broker.port, "disk", proto_ver=proto_ver)
        await bridge.start()
        assert await bridge.wait_connected(5)
        async with subscriber(broker.port, "ocpp/#") as sub:
            bus.publish(Message("ocpp/cp/CP1", b"1", origin="ocpp"))
            bus.publish(Message("ocpp/cp/POISON", b"p" * 3000, origin="ocpp"))
            bus.publish(Message("ocpp/cp/CP1", b"2", origin="ocpp"))
            got: list[tuple[str, bytes]] = []
            while (got[-1][1] if got else None) != b"2":
                got += await take(sub, 1)  # "1" may come twice (resent after a lost connection)
        assert all(topic != "ocpp/cp/POISON" for topic, _ in got)
        await eventually(lambda: bridge.buffered == 0)
        assert sum(bridge.poison_dropped.values()) == 1
        await eventually(lambda: bridge.journal is not None and bridge.journal.items == 0)
        await bridge.stop()
        assert stored(tmp_path) == []
    finally:
        broker.stop()


async def test_a_failed_write_still_sends_the_message_and_counts_it(tmp_path, mosquitto, monkeypatch):
    bus, bridge = bridge_on(tmp_path, mosquitto.port, "disk")
    assert bridge.journal is not None and bridge.journal.queue is not None

    def disk_full(*args):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(bridge.journal.queue, "_write", disk_full)
    await bridge.start()
    assert await bridge.wait_connected(5)
    async with subscriber(mosquitto.port, "ocpp/#") as sub:
        bus.publish(Message("ocpp/cp/CP1", b"on and on", origin="ocpp"))
        assert [p for _, p in await take(sub, 1)] == [b"on and on"]
    assert bridge.journal.write_errors == 1
    monkeypatch.undo()
    await bridge.stop()
