"""`GET /api/v5/prometheus/stats`: real charge points, a rule, an HTTP action; the counters say what the test did."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import httpx
import orjson
import pytest
import websockets
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import InvalidStatus

from engine.bus import Bus, Message
from engine.metrics import LoopLagMonitor, node_registry, render
from tests.http_target import http_target
from tests.ocpp_support import Backend, eventually, running_gateway, subscribed

pytestmark = pytest.mark.timeout(60)

AUTH = ("admin", "public")

RULES = '''
rule_engine.rules.boot_accept {
  sql = """SELECT clientid, payload.UniqueId AS id FROM "ocpp/cp/+" WHERE payload.Action = 'BootNotification'"""
  actions = [{
    function = republish
    args {
      topic = "ocpp/cs/${clientid}"
      payload = """{"MessageTypeId": 3, "UniqueId": "${id}", "Payload": {"status": "Accepted", "interval": 300, "currentTime": "2024-01-01T00:00:00Z"}}"""
    }
  }]
}
'''


class Scrape:
    """One parsed scrape: `value(name, **labels)` reads one sample by its full sample name."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.families = {f.name: f for f in text_string_to_metric_families(text)}
        self.samples: dict[str, list[tuple[dict[str, str], float]]] = {}
        for family in self.families.values():
            for sample in family.samples:
                self.samples.setdefault(sample.name, []).append((sample.labels, sample.value))

    def value(self, name: str, **labels: str) -> float:
        found = [v for got, v in self.samples.get(name, []) if got == labels]
        assert len(found) == 1, f"{name}{labels}: {self.samples.get(name)}"
        return found[0]

    def by(self, name: str, label: str) -> dict[str, float]:
        return {got[label]: v for got, v in self.samples.get(name, [])}

    def type_of(self, family: str) -> str:
        return self.families[family].type


async def scrape(gw) -> Scrape:
    async with httpx.AsyncClient(auth=AUTH) as client:
        response = await client.get(f"{gw.admin_url}/prometheus/stats")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    result = Scrape(response.text)
    assert result.samples.get("ocppgw_metrics_collect_errors_total") is None, response.text
    return result


async def refused(url: str, **kwargs) -> int:
    with pytest.raises(InvalidStatus) as info:
        async with websockets.connect(url, **kwargs):
            pass
    return info.value.response.status_code


class Recorder:
    """A charge point's socket that remembers what it sent and received, for the byte counts."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self.frames_sent = 0
        self.bytes_sent = 0
        self.bytes_received = 0

    async def send(self, frame: str | bytes) -> None:
        await self.ws.send(frame)
        self.frames_sent += 1
        self.bytes_sent += len(frame.encode() if isinstance(frame, str) else frame)  # bytes on the wire

    async def recv(self) -> list:
        text = await asyncio.wait_for(self.ws.recv(), 5)
        self.bytes_received += len(text.encode())
        return orjson.loads(text)


async def test_prometheus_counters_match_the_traffic(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port, RULES) as gw:
        backend = Backend(mosquitto.port)
        base = f"ws://127.0.0.1:{gw.ocpp_port}"
        # three refused handshakes, by three reasons
        assert await refused(gw.url("NOPROTO")) == 400
        assert await refused(f"{base}/elsewhere/CP9", subprotocols=["ocpp1.6"]) == 404
        assert await refused(f"{base}/ocpp/", subprotocols=["ocpp1.6"]) == 400

        before = await scrape(gw)
        assert before.value("ocppgw_connections", proto_ver="ocpp1.6") == 0
        assert before.value("ocppgw_connections_accepted_total") == 0
        assert before.value("ocppgw_frames_received_total") == 0

        async with websockets.connect(gw.url("CP16"), subprotocols=["ocpp1.6"]) as ws16, \
                websockets.connect(gw.url("CP201"), subprotocols=["ocpp2.0.1"]) as ws201:
            cp16, cp201 = Recorder(ws16), Recorder(ws201)
            await subscribed(gw, "CP16")
            # a Heartbeat the rule matches but its WHERE rejects, then a boot the rule answers
            await cp16.send('[2,"hb-1","Heartbeat",{}]')
            await cp16.send('[2,"boot-1","BootNotification",{"chargePointVendor":"V","chargePointModel":"M"}]')
            assert await cp16.recv() == [3, "boot-1", {"status": "Accepted", "interval": 300,
                                                       "currentTime": "2024-01-01T00:00:00Z"}]
            # bad frames: each answered with a CALLERROR and dropped as invalid_frame
            await cp16.send("{not json")
            assert (await cp16.recv())[:3] == [4, "-1", "FormationViolation"]
            await cp16.send('[5,"b3","Heartbeat",{}]')
            assert (await cp16.recv())[:3] == [4, "b3", "ProtocolError"]
            await cp16.send(b"\x01\x02binary")
            assert (await cp16.recv())[:3] == [4, "-1", "FormationViolation"]
            await cp201.send("nope")
            assert (await cp201.recv())[:3] == [4, "-1", "RpcFrameworkError"]
            # a downstream message that is not JSON is dropped as invalid_payload
            backend.publish("ocpp/cs/CP16", b"this is not json")
            await eventually(lambda: gw.ctx.metrics.drops["invalid_payload"] == 1)
            # the upstream frames reached the backend
            topics = sorted([(await backend.next())[0] for _ in range(2)])
            assert topics == ["ocpp/cp/CP16", "ocpp/cp/CP16"]

            s = await scrape(gw)
            assert s.by("ocppgw_connections", "proto_ver") == {"ocpp1.6": 1, "ocpp2.0.1": 1, "ocpp2.1": 0}
            assert s.type_of("ocppgw_connections") == "gauge"
            assert s.value("ocppgw_connections_accepted_total") == 2
            assert s.type_of("ocppgw_connections_accepted") == "counter"
            assert s.value("ocppgw_listener_connections", listener="ocpp:ws:default") == 2
            assert s.value("ocppgw_frames_received_total") == cp16.frames_sent + cp201.frames_sent == 6
            assert s.value("ocppgw_frames_sent_total") == 5  # one CALLRESULT (the rule), four CALLERRORs
            assert s.value("ocppgw_bytes_received_total") == cp16.bytes_sent + cp201.bytes_sent
            assert s.value("ocppgw_bytes_sent_total") == cp16.bytes_received + cp201.bytes_received
            assert s.by("ocppgw_callerrors_sent_total", "code") == {
                "FormationViolation": 2, "ProtocolError": 1, "RpcFrameworkError": 1}
            assert s.by("ocppgw_messages_dropped_total", "reason") == {"invalid_frame": 4, "invalid_payload": 1}
            assert s.by("ocppgw_handshakes_refused_total", "reason") == {
                "unsupported_protocol_version": 1, "not_found": 1, "client_identifier_not_valid": 1}
            assert s.value("ocppgw_downstream_queue_messages") == 0
            assert s.value("ocppgw_downstream_inflight_messages") == 0

            # the rule saw two CALLs, answered one, left the other without output
            rule = {name: s.value(f"ocppgw_rule_{name}_total", rule="boot_accept")
                    for name in ("matched", "passed", "failed", "failed_exception", "failed_no_result",
                                 "actions", "actions_success", "actions_failed")}
            assert rule == {"matched": 2, "passed": 1, "failed": 1, "failed_exception": 0, "failed_no_result": 1,
                            "actions": 1, "actions_success": 1, "actions_failed": 0}
            assert s.value("ocppgw_rule_enabled", rule="boot_accept") == 1

            # the bridge and the bus: the scrape reads the live counters, nothing counted twice
            bridge, bus = gw.node.bridge, gw.node.bus
            assert s.value("ocppgw_mqtt_bridge_connected") == 1
            assert s.value("ocppgw_mqtt_bridge_dropped_total") == 0
            assert s.value("ocppgw_mqtt_bridge_buffered_messages") >= 0
            assert s.value("ocppgw_mqtt_bridge_published_total") == bridge.published >= 2
            assert s.value("ocppgw_mqtt_bridge_received_total") == bridge.received >= 1
            assert s.value("ocppgw_mqtt_bridge_reconnects_total") == bridge.reconnects
            assert s.value("ocppgw_bus_messages_total") == bus.published > 0
            assert s.value("ocppgw_bus_handler_errors_total") == 0

            # the process: prometheus_client's standard collector, none of our own
            assert s.value("process_resident_memory_bytes") > 1_000_000
            assert s.value("process_cpu_seconds_total") > 0
            assert s.value("process_open_fds") > 0
            assert not [name for name in s.samples if name.startswith("ocppgw_process_")]
            assert s.value("ocppgw_info", node="gw-test", version=s.samples["ocppgw_info"][0][0]["version"]) == 1

        # both gone: the gauges fall, the counters stay
        await eventually(lambda: gw.ctx.metrics.connections == 0)
        after = await scrape(gw)
        assert after.by("ocppgw_connections", "proto_ver") == {"ocpp1.6": 0, "ocpp2.0.1": 0, "ocpp2.1": 0}
        assert after.value("ocppgw_listener_connections", listener="ocpp:ws:default") == 0
        assert after.value("ocppgw_connections_accepted_total") == 2
        assert after.value("ocppgw_frames_received_total") == 6
        assert after.by("ocppgw_callerrors_sent_total", "code") == s.by("ocppgw_callerrors_sent_total", "code")
        backend.close()


async def test_event_loop_lag_is_exposed(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port) as gw:
        first = await scrape(gw)
        assert first.type_of("ocppgw_event_loop_lag_seconds") == "gauge"
        assert first.value("ocppgw_event_loop_lag_seconds") >= 0
        assert first.value("ocppgw_event_loop_lag_max_seconds") >= 0
        await asyncio.sleep(1.2)  # the sampler ticks every 0.5 s
        second = await scrape(gw)
        assert second.value("ocppgw_event_loop_lag_max_seconds") >= second.value("ocppgw_event_loop_lag_seconds") >= 0


async def test_action_and_connector_metrics(tmp_path, mosquitto):
    async with http_target() as target:
        target.answer = lambda attempt: 503 if attempt == 1 else 200
        conf = f'''
        connectors.http.hook {{ url = "{target.url}" }}
        actions.http.alerts {{
          connector = hook
          parameters {{ path = "/alerts/${{clientid}}" }}
          resource_opts {{ retry_interval = 50ms, health_check_interval = 200ms }}
        }}
        rule_engine.rules.r {{ sql = """SELECT clientid, payload.n AS n FROM "in/#" """, actions = ["http:alerts"] }}
        '''
        async with running_gateway(tmp_path, mosquitto.port, conf) as gw:
            action = gw.node.resources.actions["http:alerts"]
            await eventually(lambda: gw.node.resources.connectors["http:hook"].status == "connected")
            for n in range(3):
                gw.node.bus.publish(Message("in/CP1", orjson.dumps({"n": n}), origin="test", headers={"clientid": "CP1"}))
            await eventually(lambda: action.metrics.success == 3)
            s = await scrape(gw)
            assert s.value("ocppgw_action_matched_total", action="http:alerts") == 3
            assert s.value("ocppgw_action_success_total", action="http:alerts") == 3
            assert s.value("ocppgw_action_failed_total", action="http:alerts") == 0
            assert s.value("ocppgw_action_retried_total", action="http:alerts") == 1
            assert s.by("ocppgw_action_dropped_total", "reason") == {"queue_full": 0, "expired": 0, "other": 0}
            assert s.value("ocppgw_action_inflight", action="http:alerts") == 0
            assert s.value("ocppgw_action_queuing", action="http:alerts") == 0
            assert s.value("ocppgw_connector_up", connector="http:hook") == 1
            assert s.value("ocppgw_rule_matched_total", rule="r") == 3
            assert s.value("ocppgw_rule_actions_success_total", rule="r") == 3


async def test_credentials_are_required(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port) as gw, httpx.AsyncClient() as client:
        response = await client.get(f"{gw.admin_url}/prometheus/stats")
        assert response.status_code == 401
        assert response.json()["code"] == "BAD_USERNAME_OR_PWD"
        response = await client.get(f"{gw.admin_url}/prometheus/stats", auth=("admin", "wrong"))
        assert response.status_code == 401
        assert "ocppgw_" not in response.text


async def test_absent_parts_leave_their_metrics_out():
    # a node with OCPP disabled, no rules, no actions, no bridge: the scrape still parses
    node = SimpleNamespace(settings=SimpleNamespace(node=SimpleNamespace(name="bare")), bus=Bus(),
                           ocpp=None, listeners={}, rules=None, resources=None, bridge=None)
    text = render(node_registry(node)).decode()
    s = Scrape(text)
    assert s.value("ocppgw_connections_accepted_total") == 0
    assert s.by("ocppgw_connections", "proto_ver") == {"ocpp1.6": 0, "ocpp2.0.1": 0, "ocpp2.1": 0}
    assert s.value("ocppgw_frames_received_total") == 0
    assert s.value("ocppgw_downstream_queue_messages") == 0
    assert "ocppgw_mqtt_bridge_connected" not in s.samples
    assert "ocppgw_event_loop_lag_seconds" not in s.samples  # no monitor given, none on the node
    assert "ocppgw_rule_matched_total" not in s.samples
    assert s.value("ocppgw_bus_messages_total") == 0
    assert s.value("ocppgw_info", node="bare", version="") == 1
    assert "ocppgw_metrics_collect_errors_total" not in s.samples


async def test_a_part_that_fails_to_read_does_not_cost_the_scrape(caplog):
    class Broken:
        @property
        def rules(self):
            raise RuntimeError("boom")

    node = SimpleNamespace(settings=None, bus=Bus(), ocpp=None, listeners={}, rules=Broken(), resources=None,
                           bridge=None)
    s = Scrape(render(node_registry(node)).decode())
    assert s.value("ocppgw_metrics_collect_errors_total", section="rules") == 1
    assert s.value("ocppgw_bus_messages_total") == 0
    assert "reading rules failed" in caplog.text


async def test_loop_lag_monitor_start_stop():
    monitor = LoopLagMonitor(interval=0.02)
    assert not monitor.running
    monitor.start()
    monitor.start()  # idempotent
    assert monitor.running
    await eventually(lambda: monitor.samples >= 3)
    monitor.stop()
    monitor.stop()
    assert not monitor.running
    samples = monitor.samples
    await asyncio.sleep(0.1)
    assert monitor.samples == samples  # stopped means stopped
    assert monitor.max >= monitor.last >= 0
    node = SimpleNamespace(bus=None, loop_lag=monitor)
    s = Scrape(render(node_registry(node)).decode())
    assert s.value("ocppgw_event_loop_lag_seconds") == monitor.last
    assert s.value("ocppgw_event_loop_lag_max_seconds") == monitor.max
