"""`ocpp-gateway simulate --replay FILE`: a recorded trace played back as one charge point.

The trace is the JSON Lines file of the trace API (GET /api/v5/trace/{name}/download): the
upstream frames ("direction": "in") of its charge point are sent again, text as recorded, with the
recorded spacing divided by `speed`; `connected` / `disconnected` records close and open the
connection again where the original did. What the gateway sends back is counted (and printed
with --verbose), not answered: the recorded answers of the charge point are replayed as they were.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
import websockets

DEFAULT_URL = "ws://127.0.0.1:33033/ocpp"


@dataclass
class Step:
    at: float  # seconds after the first record
    kind: str  # "frame" | "connect" | "disconnect"
    frame: str = ""


@dataclass
class Recorded:
    clientid: str
    proto_ver: str | None
    steps: list[Step] = field(default_factory=list)

    @property
    def frames(self) -> int:
        return sum(1 for s in self.steps if s.kind == "frame")


def _seconds(text: Any, where: str) -> float:
    if not isinstance(text, str):
        raise ValueError(f"{where}: time is not a string")
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise ValueError(f"{where}: time {text[:40]!r} is not RFC 3339") from None


def load(path: str, clientid: str | None = None) -> Recorded:
    """The steps of `clientid` (default: the first charge point in the file); ValueError names the line."""
    records: list[tuple[int, dict[str, Any]]] = []
    try:
        with open(path, "rb") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = orjson.loads(line)
                except orjson.JSONDecodeError:
                    try:
                        record = json.loads(line)  # a lone surrogate, escaped by the recorder
                    except ValueError as exc:
                        raise ValueError(f"{path}:{number}: not JSON: {exc}") from None
                if not isinstance(record, dict) or not isinstance(record.get("clientid"), str):
                    raise ValueError(f"{path}:{number}: not a trace record (an object with clientid)")
                records.append((number, record))
    except OSError as exc:
        raise ValueError(f"{path}: {exc.strerror or exc}") from None
    if not records:
        raise ValueError(f"{path}: no trace records")
    cid = clientid or records[0][1]["clientid"]
    mine = [(n, r) for n, r in records if r["clientid"] == cid]
    if not mine:
        raise ValueError(f"{path}: no records of charge point {cid!r}")
    recorded = Recorded(cid, None)
    t0 = _seconds(mine[0][1].get("time"), f"{path}:{mine[0][0]}")
    for number, record in mine:
        at = _seconds(record.get("time"), f"{path}:{number}") - t0
        event = record.get("event")
        if event == "connected":
            recorded.proto_ver = recorded.proto_ver or record.get("proto_ver")
            recorded.steps.append(Step(at, "connect"))
        elif event == "disconnected":
            recorded.steps.append(Step(at, "disconnect"))
        elif record.get("direction") == "in":
            if not isinstance(record.get("frame"), str):
                raise ValueError(f"{path}:{number}: an \"in\" record without a text frame")
            recorded.steps.append(Step(at, "frame", record["frame"]))
    if recorded.frames == 0:
        raise ValueError(f"{path}: charge point {cid!r} sent no frame in this trace")
    return recorded


@dataclass
class ReplayOptions:
    url: str = DEFAULT_URL
    speed: float = 1.0
    proto: str = "ocpp1.6"  # when the trace does not name its version (no connected record)
    clientid: str | None = None
    auth: str | None = None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_insecure: bool = False
    verbose: bool = False


def _tls(options: ReplayOptions) -> ssl.SSLContext | None:
    if not options.url.startswith("wss://"):
        return None
    context = ssl.create_default_context(cafile=options.tls_ca)
    if options.tls_insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if options.tls_cert:
        context.load_cert_chain(options.tls_cert, options.tls_key)
    return context


async def replay(recorded: Recorded, options: ReplayOptions) -> dict[str, Any]:
    """Play `recorded` against the gateway; the counts and the time it took."""
    cid = recorded.clientid
    url = options.url.rstrip("/") + "/" + cid
    proto = recorded.proto_ver or options.proto
    headers = {}
    if options.auth:
        headers["Authorization"] = "Basic " + base64.b64encode(options.auth.replace("{cid}", cid).encode()).decode()
    summary: dict[str, Any] = {"clientid": cid, "url": url, "proto": proto, "frames_sent": 0,
                               "frames_received": 0, "connects": 0, "speed": options.speed}
    ws: Any = None
    reader: asyncio.Task[None] | None = None

    async def read(conn: Any) -> None:
        try:
            async for message in conn:
                summary["frames_received"] += 1
                if options.verbose:
                    print(f"<< {message}", file=sys.stderr)
        except websockets.ConnectionClosed:
            pass

    async def connect() -> None:
        nonlocal ws, reader
        ws = await websockets.connect(url, subprotocols=[proto], additional_headers=headers,  # type: ignore[list-item]
                                      ssl=_tls(options), max_size=None)
        summary["connects"] += 1
        reader = asyncio.create_task(read(ws))

    async def disconnect() -> None:
        nonlocal ws, reader
        if ws is not None:
            await ws.close()
            if reader is not None:
                await reader
        ws = reader = None

    loop = asyncio.get_running_loop()
    started = loop.time()
    wall = time.time()
    try:
        for step in recorded.steps:
            delay = started + step.at / options.speed - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if step.kind == "connect":
                await disconnect()
                await connect()
            elif step.kind == "disconnect":
                await disconnect()
            else:
                if ws is None:
                    await connect()
                await ws.send(step.frame)
                summary["frames_sent"] += 1
                if options.verbose:
                    print(f">> {step.frame}", file=sys.stderr)
        await asyncio.sleep(0.2)  # the last answers
    finally:
        await disconnect()
    summary["elapsed_s"] = round(time.time() - wall, 3)
    summary["recorded_s"] = round(recorded.steps[-1].at, 3)
    return summary


def main(path: str, options: ReplayOptions, as_json: bool) -> int:
    if options.speed <= 0:
        print("simulate: --speed must be positive", file=sys.stderr)
        return 2
    try:
        recorded = load(path, options.clientid)
    except ValueError as exc:
        print(f"simulate: {exc}", file=sys.stderr)
        return 2
    try:
        summary = asyncio.run(replay(recorded, options))
    except (OSError, websockets.WebSocketException) as exc:
        print(f"simulate: replay of {recorded.clientid} against {options.url} failed: {exc}", file=sys.stderr)
        return 1
    if as_json:
        print(orjson.dumps(summary).decode())
    else:
        print(f"replayed {summary['frames_sent']} frames of {summary['clientid']} ({summary['proto']}) to "
              f"{summary['url']} in {summary['elapsed_s']:.1f}s (recorded {summary['recorded_s']:.1f}s, "
              f"speed {options.speed:g}); received {summary['frames_received']}, connections {summary['connects']}")
    return 0
