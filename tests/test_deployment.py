"""A real deployment: 3 cluster nodes (`ocpp-gateway run` processes) on one mosquitto behind a real
HAProxy (`mode tcp`, `send-proxy`, health checks); 100 charge points connect through HAProxy; one
node is SIGKILLed. Every charge point comes back through HAProxy, every command published afterwards
on `ocpp/cs/<cid>` reaches its charge point exactly once, and a surviving node's API lists all 100.

The HAProxy configuration written here is the one shown in docs/deployment.md.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import httpx
import orjson
import paho.mqtt.client as paho
import pytest
import websockets

from tests.gateway import GatewayProcess
from tests.ocpp_support import until
from tests.servers import Mosquitto, ensure_debian_package, free_port, wait_port

pytestmark = pytest.mark.timeout(240)
AUTH = ("admin", "public")
CHARGE_POINTS = 100
NODES = ("n0", "n1", "n2")
SOURCE = "127.0.0.7"  # the charge points' address; HAProxy reaches the nodes from 127.0.0.1


def haproxy_config(bind: str, servers: dict[str, str]) -> str:
    """The HAProxy configuration of this test; docs/deployment.md shows it (checked below)."""
    lines = "\n".join(f"    server {name} {address} send-proxy check inter 500ms"
                      for name, address in servers.items())
    return f"""global
    maxconn 4096
defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h
frontend ocpp
    bind {bind}
    default_backend gateways
backend gateways
    balance roundrobin
{lines}
"""


DOC_SERVERS = {"gw1": "10.0.0.11:33033", "gw2": "10.0.0.12:33033", "gw3": "10.0.0.13:33033"}


def test_the_docs_show_the_tested_haproxy_config() -> None:
    text = (Path(__file__).parents[1] / "docs" / "deployment.md").read_text()
    block = text.split("```haproxy\n", 1)[1].split("```", 1)[0]
    assert block == haproxy_config("0.0.0.0:33033", DOC_SERVERS)


def cluster_node(tmp_path: Path, broker: Mosquitto, name: str) -> GatewayProcess:
    workdir = tmp_path / name
    workdir.mkdir()
    conf = (f'node {{ name = "{name}", data_dir = "{workdir / "data"}" }}\n'
            f'mqtt {{ server = "mqtt://127.0.0.1:{broker.port}", reconnect.initial_interval = 100ms }}\n'
            'cluster { enable = true, keepalive = 5s, request_timeout = 2s }\n'
            'gateway.ocpp.listeners.ws.default.proxy_protocol = true\n')
    return GatewayProcess(workdir, conf)


def admin(gw: GatewayProcess) -> str:
    return "http://" + gw.env["OCPPGW_DASHBOARD__LISTENERS__HTTP__BIND"] + "/api/v5"


class ChargePoint:
    """Connects through HAProxy, says one Heartbeat, answers every CALL (counting its UniqueIds),
    and reconnects with a short backoff when the socket closes."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.connections = 0
        self.online = False
        self.calls: Counter[str] = Counter()

    async def run(self) -> None:
        while True:
            try:
                async with websockets.connect(self.url, subprotocols=["ocpp1.6"], open_timeout=5,
                                              local_addr=(SOURCE, 0)) as ws:
                    self.connections += 1
                    self.online = True
                    await ws.send(orjson.dumps([2, f"hb{self.connections}", "Heartbeat", {}]).decode())
                    async for raw in ws:
                        frame = orjson.loads(raw)
                        if frame[0] == 2:
                            self.calls[frame[1]] += 1
                            await ws.send(orjson.dumps([3, frame[1], {"status": "Accepted"}]).decode())
            except (OSError, websockets.WebSocketException, asyncio.TimeoutError):
                pass
            self.online = False
            await asyncio.sleep(0.2)



async def listing(http: httpx.AsyncClient, gw: GatewayProcess) -> dict[str, str] | None:
    """clientid → node, from one node's API; None while it cannot answer for the whole cluster."""
    answer = await http.get(admin(gw) + "/gateways/ocpp/clients", params={"limit": 1000})
    if answer.status_code != 200:
        return None
    return {row["clientid"]: row["node"] for row in answer.json()["data"]}


def publish_resets(broker: Mosquitto, cids: list[str]) -> dict[str, str]:
    backend = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="backend")
    backend.connect("127.0.0.1", broker.port)
    backend.loop_start()
    sent = {}
    try:
        for cid in cids:
            unique = f"reset-{cid}"
            body = {"MessageTypeId": 2, "UniqueId": unique, "Action": "Reset", "Payload": {"type": "Soft"}}
            backend.publish(f"ocpp/cs/{cid}", orjson.dumps(body), qos=1).wait_for_publish(5)
            sent[cid] = unique
    finally:
        backend.loop_stop()
        backend.disconnect()
    return sent


async def test_three_nodes_behind_haproxy_survive_a_sigkill(tmp_path: Path, mosquitto: Mosquitto) -> None:
    binary = ensure_debian_package("haproxy", "haproxy")
    nodes = {name: cluster_node(tmp_path, mosquitto, name) for name in NODES}
    front = free_port()
    config = tmp_path / "haproxy.cfg"
    config.write_text(haproxy_config(f"127.0.0.1:{front}", {name: f"127.0.0.1:{gw.ocpp_port}" for name, gw in nodes.items()}))
    proxy: subprocess.Popen[bytes] | None = None
    tasks: list[asyncio.Task[None]] = []
    try:
        for gw in nodes.values():
            await asyncio.to_thread(gw.start)
        proxy = subprocess.Popen([binary, "-db", "-f", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        await asyncio.to_thread(wait_port, front)
        cps = {f"CP{i:03d}": ChargePoint(f"ws://127.0.0.1:{front}/ocpp/CP{i:03d}") for i in range(CHARGE_POINTS)}
        tasks = [asyncio.create_task(cp.run()) for cp in cps.values()]
        async with httpx.AsyncClient(auth=AUTH, timeout=15) as http:
            async def all_listed() -> dict[str, str] | None:
                rows = await listing(http, nodes["n0"])
                return rows if rows is not None and sorted(rows) == sorted(cps) else None

            before = await until(all_listed, 60, "100 charge points listed")
            assert set(before.values()) == set(NODES), f"HAProxy spreads them over the nodes: {Counter(before.values())}"
            # the PROXY header: the gateway sees the charge point's own address, not HAProxy's
            detail = (await http.get(admin(nodes["n1"]) + "/gateways/ocpp/clients/CP000")).json()
            assert detail["ip_address"] == SOURCE and detail["node"] == before["CP000"]

            victim = "n2"
            on_victim = [cid for cid, name in before.items() if name == victim]
            nodes[victim].signal(signal.SIGKILL)
            killed_at = time.monotonic()

            async def back() -> bool:
                return all(cps[cid].connections >= 2 and cps[cid].online for cid in on_victim)

            await until(back, 30, "the killed node's charge points reconnected through HAProxy")
            assert time.monotonic() - killed_at < 30
            assert all(cp.online for cp in cps.values())
            assert all(cps[cid].connections == 1 for cid, name in before.items() if name != victim), \
                "the surviving nodes' charge points kept their sockets"

            survivors = {"n0", "n1"}

            async def listed_on_survivors() -> dict[str, str] | None:
                rows = await listing(http, nodes["n0"])
                if rows is None or sorted(rows) != sorted(cps) or not set(rows.values()) <= survivors:
                    return None
                return rows

            after = await until(listed_on_survivors, 30, "a surviving node lists all 100 on surviving nodes")
            assert len(after) == CHARGE_POINTS
            assert (await listing(http, nodes["n1"])) == after

            sent = await asyncio.to_thread(publish_resets, mosquitto, list(cps))

            async def delivered() -> bool:
                return all(cps[cid].calls[unique] >= 1 for cid, unique in sent.items())

            await until(delivered, 30, "every Reset delivered")
            await asyncio.sleep(1.0)  # room for a duplicate to show up
            counts = {cid: cps[cid].calls[unique] for cid, unique in sent.items()}
            assert counts == {cid: 1 for cid in sent}, {cid: n for cid, n in counts.items() if n != 1}
            # HAProxy's health checks (a connect and a reset, no PROXY header) are not counted as refusals
            metrics = (await http.get(admin(nodes["n0"]) + "/prometheus/stats")).text
            refused = [line for line in metrics.splitlines()
                       if line.startswith("ocppgw_handshakes_refused_total") and "proxy_protocol" in line]
            assert all(float(line.split()[-1]) == 0 for line in refused), refused
        for name in survivors:
            assert "Traceback" not in nodes[name].log, nodes[name].log
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if proxy is not None:
            proxy.terminate()
            try:
                proxy.wait(10)
            except subprocess.TimeoutExpired:
                proxy.kill()
                proxy.wait()
        for gw in nodes.values():
            await asyncio.to_thread(gw.stop)
