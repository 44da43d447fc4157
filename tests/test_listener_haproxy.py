"""A real HAProxy (TCP mode, send-proxy / send-proxy-v2) in front of ws and wss listeners with
proxy_protocol = true: the gateway sees each charge point's own address, in the per-source limits
and in the clients API."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from tests.certs import CertAuthority
from tests.gateway import GatewayProcess
from tests.ocpp_support import running_gateway
from tests.servers import ensure_debian_package, free_port, wait_port
from tests.test_listener_accept import client_context

pytestmark = pytest.mark.timeout(120)
P = ["ocpp1.6"]


class HAProxy:
    """haproxy -db in TCP mode: `fronts` maps a frontend port to (backend port, "send-proxy" or "send-proxy-v2")."""

    def __init__(self, workdir: Path, fronts: dict[int, tuple[int, str]]) -> None:
        self.binary = ensure_debian_package("haproxy", "haproxy")
        lines = ["global", "  maxconn 256", "defaults", "  mode tcp", "  timeout connect 5s",
                 "  timeout client 60s", "  timeout server 60s"]
        for i, (front, (back, option)) in enumerate(fronts.items()):
            lines += [f"frontend f{i}", f"  bind 127.0.0.1:{front}", f"  default_backend b{i}",
                      f"backend b{i}", f"  server gw 127.0.0.1:{back} {option}"]
        self.config = workdir / "haproxy.cfg"
        self.config.write_text("\n".join(lines) + "\n")
        self.fronts = fronts
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> HAProxy:
        self.proc = subprocess.Popen([self.binary, "-db", "-f", str(self.config)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for front in self.fronts:
            wait_port(front)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


async def clients(admin_url: str) -> dict[str, str]:
    async with httpx.AsyncClient(base_url=admin_url, auth=("admin", "public"), timeout=15) as http:
        response = await http.get("/gateways/ocpp/clients")
    assert response.status_code == 200, response.text
    return {c["clientid"]: c["ip_address"] for c in response.json()["data"]}


def setup(tmp_path: Path) -> tuple[CertAuthority, str, dict[int, tuple[int, str]]]:
    (tmp_path / "pki").mkdir()
    ca = CertAuthority(tmp_path / "pki")
    server = ca.server()
    ws_v1, ws_v2, wss_v2 = free_port(), free_port(), free_port()
    fronts = {free_port(): (ws_v1, "send-proxy"), free_port(): (ws_v2, "send-proxy-v2"),
              free_port(): (wss_v2, "send-proxy-v2")}
    limits = "proxy_protocol = true, max_conn_rate_per_source = 1, per_source_exempt = []"
    conf = f"""gateway.ocpp.listeners.ws {{
      v1 {{ bind = "127.0.0.1:{ws_v1}", {limits} }}
      v2 {{ bind = "127.0.0.1:{ws_v2}", {limits} }}
    }}
    gateway.ocpp.listeners.wss.tls {{ bind = "127.0.0.1:{wss_v2}", {limits},
      ssl_options {{ certfile = "{server.cert}", keyfile = "{server.key}" }} }}"""
    return ca, conf, fronts


async def through_haproxy(tmp_path: Path, ca: CertAuthority, fronts: dict[int, tuple[int, str]], admin_url: str) -> None:
    front_v1, front_v2, front_tls = list(fronts)
    with HAProxy(tmp_path, fronts):
        open_ = []
        for front, scheme, cid_prefix in ((front_v1, "ws", "V1"), (front_v2, "ws", "V2"), (front_tls, "wss", "TLS")):
            extra = {"ssl": client_context(ca), "server_hostname": "localhost"} if scheme == "wss" else {}
            url = f"{scheme}://127.0.0.1:{front}/ocpp/"
            for source in ("127.0.0.2", "127.0.0.3"):
                ws = await websockets.connect(url + f"{cid_prefix}-{source}", subprotocols=P,
                                              local_addr=(source, 0), **extra)
                open_.append(ws)
            # the per-source rate (1/s) counts 127.0.0.2's connections, not HAProxy's
            with pytest.raises(InvalidStatus) as info:
                await websockets.connect(url + f"{cid_prefix}-again", subprotocols=P,
                                         local_addr=("127.0.0.2", 0), **extra)
            assert info.value.response.status_code == 429
        seen = await clients(admin_url)
        for cid_prefix in ("V1", "V2", "TLS"):
            for source in ("127.0.0.2", "127.0.0.3"):
                assert seen[f"{cid_prefix}-{source}"] == source
        for ws in open_:
            await ws.close()


async def test_haproxy_in_front_of_ws_and_wss(tmp_path, mosquitto):
    ca, conf, fronts = setup(tmp_path)
    async with running_gateway(tmp_path, mosquitto.port, conf) as gw:
        await through_haproxy(tmp_path, ca, fronts, gw.admin_url)
        assert gw.ctx.metrics.refused["source_rate_exceeded"] == 3


async def test_haproxy_in_front_of_a_gateway_process(tmp_path):
    """The same through `ocpp-gateway run` (uvloop's transports under the accept path)."""
    ca, conf, fronts = setup(tmp_path)
    gw = GatewayProcess(tmp_path, conf)
    admin_url = "http://" + gw.env["OCPPGW_DASHBOARD__LISTENERS__HTTP__BIND"] + "/api/v5"
    try:
        gw.start()
        await through_haproxy(tmp_path, ca, fronts, admin_url)
        async with httpx.AsyncClient(timeout=15) as http:
            metrics = (await http.get(admin_url + "/prometheus/stats", auth=("admin", "public"))).text
        assert 'ocppgw_handshakes_refused_total{reason="source_rate_exceeded"} 3.0' in metrics
        assert "Traceback" not in "\n".join(gw.lines) and "[error]" not in "\n".join(gw.lines)
    finally:
        gw.stop()
