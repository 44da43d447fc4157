"""The trace API (EMQX 5's shape: /api/v5/trace) and the live frame stream of one charge point.

Recordings: POST /trace (type clientid), GET /trace, PUT /trace/{name}/stop, DELETE /trace[/{name}],
GET /trace/{name}/download (the JSON Lines file) and /trace/{name}/log (a window of it).
Live: GET /gateways/ocpp/clients/{clientid}/frames, Server-Sent Events, one `data:` per record.
Credentials are checked by the app's middleware, not here.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from engine.admin.common import ApiError, bad_request, check_fields, json_body, json_response, not_found
from engine.admin.nodeview import NodeView
from engine.ocpp.trace import NAME, Recording, TooManyWatchers, TraceExists, Tracer, Watcher

MAX_CLIENTID = 256
DEFAULT_DURATION = 600.0  # EMQX: a trace without end_at ends 10 minutes after it starts
MAX_LOG_BYTES = 1024 * 1024
KEEPALIVE = 15.0  # seconds between `: keepalive` comments on an idle live stream
CHUNK = 64 * 1024


def _when(body: dict[str, Any], key: str) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise bad_request(f"{key}: not an RFC 3339 time: {value[:64]!r}") from None
        if parsed.tzinfo is None:
            raise bad_request(f"{key}: an RFC 3339 time needs its offset (Z or +hh:mm)")
        return parsed.timestamp()
    raise bad_request(f"{key}: expected an RFC 3339 time or unix seconds")


class TraceApi:
    def __init__(self, node: NodeView) -> None:
        self.node = node

    def _tracer(self) -> Tracer:
        ctx = self.node.ocpp
        if ctx is None:
            raise ApiError(404, "NOT_FOUND", "the OCPP gateway is disabled: there is nothing to trace")
        return ctx.tracer

    def _recording(self, request: Request) -> Recording:
        name = request.path_params["name"]
        recording = self._tracer().recordings.get(name)
        if recording is None:
            raise not_found(f"trace {name[:64]!r}")
        return recording

    async def create(self, request: Request) -> Response:
        body = check_fields(await json_body(request), {"name": str, "type": str}, {
            "clientid": str, "start_at": (str, int, float), "end_at": (str, int, float), "formatter": str,
            # EMQX's other trace types' keys: read only to refuse their type by name
            "topic": str, "ip_address": str, "ruleid": str, "payload_encode": str, "payload_limit": int,
        })
        name, kind = body["name"], body["type"]
        if not NAME.fullmatch(name):
            raise bad_request("name: 1 to 64 letters, digits, '_' or '-'")
        if kind != "clientid":
            raise bad_request(f"type: only clientid traces are supported here, not {kind[:32]!r} "
                              "(topic, ip_address and ruleid traces are EMQX's, for MQTT clients and rules)")
        clientid = body.get("clientid")
        if not clientid or len(clientid) > MAX_CLIENTID:
            raise bad_request(f"clientid: required, 1 to {MAX_CLIENTID} characters")
        if body.get("formatter", "json") != "json":
            raise bad_request("formatter: only json (JSON Lines) is written here")
        now = time.time()
        start = _when(body, "start_at")
        start = now if start is None else start
        end = _when(body, "end_at")
        end = max(start, now) + DEFAULT_DURATION if end is None else end
        if end <= start:
            raise bad_request("end_at must be after start_at")
        if end <= now:
            raise bad_request("end_at is in the past")
        tracer = self._tracer()
        settings = self.node.settings
        if name not in tracer.recordings and len(tracer.recordings) >= settings.trace.max_traces:
            raise ApiError(400, "MAX_LIMIT_REACHED", f"{settings.trace.max_traces} traces exist already "
                           "(trace.max_traces): delete one first")
        directory = Path(settings.node.data_dir) / "trace"
        try:
            recording = tracer.create(name, clientid, start, end, directory, settings.trace.max_file_size)
        except TraceExists:
            raise ApiError(409, "ALREADY_EXISTS", f"trace {name!r} exists already") from None
        except OSError as exc:
            raise ApiError(500, "INTERNAL_ERROR", f"cannot create the trace file in {directory}: "
                           f"{exc.strerror or exc}") from None
        return json_response(recording.describe(settings.node.name))

    async def list_traces(self, request: Request) -> Response:
        node = self.node.settings.node.name
        return json_response([r.describe(node) for r in self._tracer().recordings.values()])

    async def stop(self, request: Request) -> Response:
        recording = self._recording(request)
        self._tracer().stop(recording.name)
        return json_response(recording.describe(self.node.settings.node.name))

    async def delete(self, request: Request) -> Response:
        self._tracer().delete(self._recording(request).name)
        return Response(status_code=204)

    async def clear(self, request: Request) -> Response:
        self._tracer().clear()
        return Response(status_code=204)

    async def download(self, request: Request) -> Response:
        recording = self._recording(request)
        size = recording.size  # whole records only: what is written after this is not sent

        def chunks() -> Iterator[bytes]:
            left = size
            with open(recording.path, "rb") as f:
                while left > 0:
                    data = f.read(min(CHUNK, left))
                    if not data:
                        break
                    left -= len(data)
                    yield data

        if not recording.path.exists():
            raise not_found(f"the file of trace {recording.name!r}")
        return StreamingResponse(chunks(), media_type="application/x-ndjson", headers={
            "content-disposition": f'attachment; filename="{recording.name}.jsonl"',
            "content-length": str(size),
        })

    async def log(self, request: Request) -> Response:
        """EMQX's paged reading: `bytes` from `position`, cut at the last whole record."""
        recording = self._recording(request)
        try:
            position = int(request.query_params.get("position", "0"))
            want = int(request.query_params.get("bytes", "1000"))
        except ValueError:
            raise bad_request("position and bytes must be integers") from None
        if position < 0 or want < 1:
            raise bad_request("position must be 0 or more and bytes at least 1")
        want = min(want, MAX_LOG_BYTES)
        end = min(recording.size, position + want)
        data = b""
        if end > position:
            with open(recording.path, "rb") as f:
                f.seek(position)
                data = f.read(end - position)
            cut = data.rfind(b"\n")
            if cut >= 0:
                data = data[: cut + 1]
        return json_response({"items": data.decode("utf-8", "replace"),
                              "meta": {"position": position + len(data), "bytes": len(data)}})

    async def frames(self, request: Request) -> Response:
        clientid = request.path_params["clientid"]
        d = self.node.settings.dashboard
        try:
            watcher = self._tracer().watch(clientid, d.trace_watcher_queue, d.max_trace_watchers)
        except TooManyWatchers:
            raise ApiError(503, "SERVICE_UNAVAILABLE", f"{d.max_trace_watchers} live frame streams are open "
                           "already (dashboard.max_trace_watchers)", headers={"retry-after": "5"}) from None
        return FrameStream(self._tracer(), watcher)


class FrameStream(Response):
    """Server-Sent Events of one watcher until the client goes away (its slot is then freed)."""

    media_type = "text/event-stream"

    def __init__(self, tracer: Tracer, watcher: Watcher) -> None:
        super().__init__()
        self.raw_headers = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"),
                            (b"x-accel-buffering", b"no")]  # no content-length: it streams until the reader leaves
        self.tracer = tracer
        self.watcher = watcher

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            await send({"type": "http.response.body", "body": b": connected\n\n", "more_body": True})
            pump = asyncio.ensure_future(self._pump(send))
            gone = asyncio.ensure_future(self._disconnected(receive))
            try:
                await asyncio.wait((pump, gone), return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (pump, gone):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, OSError):
                        await task
        finally:
            self.tracer.unwatch(self.watcher)

    @staticmethod
    async def _disconnected(receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    async def _pump(self, send: Send) -> None:
        watcher = self.watcher
        while True:
            try:
                await asyncio.wait_for(watcher.wake.wait(), KEEPALIVE)
            except TimeoutError:
                await send({"type": "http.response.body", "body": b": keepalive\n\n", "more_body": True})
                continue
            watcher.wake.clear()
            parts = [b"data: " + record + b"\n\n" for record in watcher.queue]
            watcher.queue.clear()
            if watcher.lost:  # the lost frames came after every one still queued
                parts.append(b"event: lost\ndata: " + orjson.dumps({"lost": watcher.lost}) + b"\n\n")
                watcher.lost = 0
            if parts:
                await send({"type": "http.response.body", "body": b"".join(parts), "more_body": True})


def routes(node: NodeView) -> list[Route]:
    api = TraceApi(node)
    ctx = getattr(node, "ocpp", None)  # a test's stand-in node may have no gateway at all
    if ctx is not None:  # the traces of the node's previous run: listed again, recording on
        ctx.tracer.restore(Path(node.settings.node.data_dir) / "trace", node.settings.trace.max_file_size)
    return [
        Route("/api/v5/trace", api.list_traces, methods=["GET"]),
        Route("/api/v5/trace", api.create, methods=["POST"]),
        Route("/api/v5/trace", api.clear, methods=["DELETE"]),
        Route("/api/v5/trace/{name}", api.delete, methods=["DELETE"]),
        Route("/api/v5/trace/{name}/stop", api.stop, methods=["PUT"]),
        Route("/api/v5/trace/{name}/download", api.download, methods=["GET"]),
        Route("/api/v5/trace/{name}/log", api.log, methods=["GET"]),
        Route("/api/v5/gateways/ocpp/clients/{clientid}/frames", api.frames, methods=["GET"]),
    ]
