"""A second client library we did not write: ocpp-rpc (npm) in strict mode, as 1.6 and 2.0.1."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest

from tests.ocpp_support import Backend, running_gateway, subscribed
from tests.servers import ensure_debian_package

pytestmark = pytest.mark.timeout(120)

JS = Path(__file__).parent / "js"
NOW = "2026-01-01T00:00:00.000Z"


@pytest.fixture(scope="module")
def node_client() -> list[str]:
    node = ensure_debian_package("node", "nodejs")
    if not (JS / "node_modules" / "ocpp-rpc").is_dir():
        npm = ensure_debian_package("npm", "npm")
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=JS, check=True, capture_output=True, timeout=300)
    return [node, str(JS / "strict_client.js")]


@pytest.mark.parametrize("proto,reset", [("ocpp1.6", {"type": "Soft"}), ("ocpp2.0.1", {"type": "Immediate"})])
async def test_ocpp_rpc_strict_client(tmp_path, mosquitto, node_client, proto, reset):
    async with running_gateway(tmp_path, mosquitto.port) as gw:
        backend = Backend(mosquitto.port)
        cid = "RPC-" + proto.replace(".", "")
        process = await asyncio.create_subprocess_exec(
            *node_client, f"ws://127.0.0.1:{gw.ocpp_port}/ocpp", cid, proto,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )

        async def step() -> dict:
            line = await asyncio.wait_for(process.stdout.readline(), 15)
            assert line, (await process.stderr.read()).decode()
            out = json.loads(line)
            assert out["step"] != "error", out
            return out

        try:
            assert await step() == {"step": "connected", "protocol": proto}
            await subscribed(gw, cid)
            boot_answer = {"status": "Accepted", "currentTime": NOW, "interval": 300}
            call = await backend.answer(f"ocpp/cp/{cid}", boot_answer)
            assert call["Action"] == "BootNotification"
            assert (await step())["result"] == boot_answer
            await backend.answer(f"ocpp/cp/{cid}", {"currentTime": NOW})
            assert (await step())["result"] == {"currentTime": NOW}
            backend.publish(f"ocpp/cs/{cid}", {"MessageTypeId": 2, "UniqueId": "r-1", "Action": "Reset", "Payload": reset})
            assert (await step())["params"] == reset
            topic, reply = await backend.next()
            assert topic == f"ocpp/cp/{cid}/Reply"
            assert reply == {"MessageTypeId": 3, "UniqueId": "r-1", "Action": "Reset", "Payload": {"status": "Accepted"}}
            assert (await step())["step"] == "closed"
            assert await asyncio.wait_for(process.wait(), 10) == 0
            assert not gw.ctx.metrics.errors  # the gateway sent no CALLERROR to a strict client
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
            backend.close()
