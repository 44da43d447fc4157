"""`ocpp-gateway simulate --replay FILE`: a session recorded by the trace API on one gateway,
replayed by the real CLI against a second gateway, in order, with the recorded spacing (or N times
faster). Timing is checked loosely: relative order and the scale of the total span."""

from __future__ import annotations

import asyncio
import sys
from datetime import datetime
from pathlib import Path

import httpx
import orjson
import pytest
import websockets

from tests.ocpp_support import eventually, running_gateway

pytestmark = pytest.mark.timeout(120)

BIN = str(Path(sys.executable).with_name("ocpp-gateway"))
CREDS = ("admin", "public")


def upstream(body: bytes) -> list[tuple[float, str]]:
    out = []
    for line in body.splitlines():
        r = orjson.loads(line)
        if r.get("direction") == "in":
            out.append((datetime.fromisoformat(r["time"].replace("Z", "+00:00")).timestamp(), r["frame"]))
    return out


def span(frames: list[tuple[float, str]]) -> float:
    return frames[-1][0] - frames[0][0]


async def simulate(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(BIN, "simulate", *args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def record(tmp_path: Path, mosquitto) -> Path:
    """A charge point's session on gateway A, frames with pauses between them, downloaded."""
    (tmp_path / "a").mkdir()
    async with running_gateway(tmp_path / "a", mosquitto.port) as gw, \
            httpx.AsyncClient(base_url=gw.admin_url, auth=CREDS, timeout=15) as http:
        assert (await http.post("/trace", json={"name": "rec", "type": "clientid", "clientid": "REC1"})).status_code == 200
        async with websockets.connect(gw.url("REC1"), subprotocols=["ocpp2.0.1"]) as ws:
            for i, pause in enumerate((0.5, 1.0, 0.5, 0)):
                await ws.send(f'[2, "r{i}", "Heartbeat", {{}}]' if i % 2 else f"bad frame {i} ✓")
                if i % 2 == 0:
                    await asyncio.wait_for(ws.recv(), 5)  # the gateway's CALLERROR
                await asyncio.sleep(pause)
        await eventually(lambda: "REC1" not in gw.ctx.sessions)
        path = tmp_path / "rec.jsonl"
        path.write_bytes((await http.get("/trace/rec/download")).content)
    return path


async def test_replay_sends_the_recorded_frames_in_order_with_their_spacing(tmp_path, mosquitto):
    path = await record(tmp_path, mosquitto)
    recorded = upstream(path.read_bytes())
    assert len(recorded) == 4 and span(recorded) >= 1.9

    (tmp_path / "b").mkdir()
    async with running_gateway(tmp_path / "b", mosquitto.port, 'node.name = "gw-replay"\n') as gw, \
            httpx.AsyncClient(base_url=gw.admin_url, auth=CREDS, timeout=15) as http:
        url = f"ws://127.0.0.1:{gw.ocpp_port}/ocpp"
        for name, speed in (("speed1", "1"), ("speed4", "4")):
            assert (await http.post("/trace", json={"name": name, "type": "clientid", "clientid": "REC1"})).status_code == 200
            code, out, err = await simulate("--replay", str(path), "--url", url, "--speed", speed, "--json")
            assert code == 0, err
            summary = orjson.loads(out)
            assert summary["frames_sent"] == 4 and summary["proto"] == "ocpp2.0.1" and summary["connects"] == 1
            assert summary["frames_received"] >= 2  # the CALLERRORs of the bad frames at least
            await eventually(lambda: "REC1" not in gw.ctx.sessions)
            assert (await http.put(f"/trace/{name}/stop")).status_code == 200
            replayed = upstream((await http.get(f"/trace/{name}/download")).content)
            assert [f for _, f in replayed] == [f for _, f in recorded]  # the same text, in the same order
            lines = (await http.get(f"/trace/{name}/download")).content.splitlines()
            assert orjson.loads(lines[0])["proto_ver"] == "ocpp2.0.1" and len(lines) > 4
            if speed == "1":
                assert span(replayed) >= 0.8 * span(recorded)
                gaps = [b[0] - a[0] for a, b in zip(replayed, replayed[1:])]
                assert gaps[1] > gaps[0] and gaps[1] > gaps[2]  # the long pause stays the longest
            else:
                assert span(replayed) <= 0.6 * span(recorded)


async def test_a_bad_trace_file_is_one_clear_line(tmp_path):
    cases = {
        "missing.jsonl": None,
        "garbage.jsonl": b"{not json\n",
        "empty.jsonl": b"",
        "noframes.jsonl": b'{"time":"2026-12-06T09:30:00.000Z","clientid":"CP1","event":"connected"}\n',
        "notrecord.jsonl": b'[1,2,3]\n',
        "badtime.jsonl": b'{"time":"soon","clientid":"CP1","direction":"in","frame":"x"}\n',
    }
    for name, content in cases.items():
        path = tmp_path / name
        if content is not None:
            path.write_bytes(content)
        code, out, err = await simulate("--replay", str(path))
        assert code == 2, (name, err)
        assert err.count("\n") == 1 and err.startswith("simulate: ") and "Traceback" not in err, (name, err)
    code, _, err = await simulate("--replay", str(tmp_path / "garbage.jsonl"), "--speed", "0")
    assert code == 2 and "--speed" in err
    code, _, err = await simulate("--count", "1")
    assert code == 2 and "--url" in err
