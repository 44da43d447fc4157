"""The scrape's byte counters count UTF-8 bytes as sent on the wire, and the process metrics are
prometheus_client's standard process_* family, not ours."""

from __future__ import annotations

import asyncio

import orjson
import pytest
import websockets

from tests.ocpp_support import running_gateway, subscribed
from tests.test_admin_metrics import scrape

pytestmark = pytest.mark.timeout(60)

RULE = '''
rule_engine.rules.boot {
  sql = """SELECT clientid, payload.UniqueId AS id, payload.Payload.chargePointVendor AS vendor
           FROM "ocpp/cp/+" WHERE payload.Action = 'BootNotification'"""
  actions = [{
    function = republish
    args {
      topic = "ocpp/cs/${clientid}"
      payload = """{"MessageTypeId": 3, "UniqueId": "${id}", "Payload": {"status": "Accepted", "interval": 300, "currentTime": "${vendor}"}}"""
    }
  }]
}
'''


async def test_bytes_are_counted_as_utf8_bytes(tmp_path, mosquitto):
    vendor = "Ünïcødé ⚡ 中文 🔌"
    sent = orjson.dumps([2, "b1", "BootNotification", {"chargePointVendor": vendor, "chargePointModel": "M"}]).decode()
    async with running_gateway(tmp_path, mosquitto.port, RULE) as gw:
        async with websockets.connect(gw.url("CP1"), subprotocols=["ocpp1.6"]) as ws:
            await subscribed(gw, "CP1")
            await ws.send(sent)
            received = await asyncio.wait_for(ws.recv(), 5)
            assert vendor in received
            s = await scrape(gw)
    assert len(sent.encode()) > len(sent) and len(received.encode()) > len(received)  # multi-byte both ways
    assert s.value("ocppgw_bytes_received_total") == len(sent.encode())
    assert s.value("ocppgw_bytes_sent_total") == len(received.encode())


async def test_process_metrics_come_from_the_standard_collector(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port) as gw:
        s = await scrape(gw)
    assert s.value("process_resident_memory_bytes") > 1_000_000
    assert s.value("process_cpu_seconds_total") > 0
    assert s.value("process_open_fds") > 0
    assert s.value("process_max_fds") > 0
    assert s.value("process_start_time_seconds") > 0
    assert s.type_of("process_cpu_seconds") == "counter"
    assert not [name for name in s.samples if name.startswith("ocppgw_process_")]
    # what the standard collector does not offer stays ours
    assert s.value("ocppgw_gc_frozen_objects") >= 0
    assert "python_gc_collections_total" in s.samples
