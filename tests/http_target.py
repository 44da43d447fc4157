"""A real HTTP server for webhook tests: records what it receives, answers what the test says."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.servers import free_port


class HttpTarget:
    def __init__(self) -> None:
        self.port = free_port()
        self.received: list[tuple[str, str, dict[str, str], bytes]] = []  # method, path, headers, body
        self.attempts = 0
        self.attempted_at: list[float] = []  # time.monotonic() of each attempt
        # decides each answer from the attempt number (1-based): a status, or (status, headers);
        # None: never answer
        self.answer: Callable[[int], int | tuple[int, dict[str, str]] | None] = lambda n: 200
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, request: Request) -> Response:
        self.attempts += 1
        self.attempted_at.append(time.monotonic())
        body = await request.body()
        status = self.answer(self.attempts)
        if status is None:
            await asyncio.sleep(3600)
        headers: dict[str, str] = {}
        if isinstance(status, tuple):
            status, headers = status
        if 200 <= status < 300:
            self.received.append((request.method, request.url.path, dict(request.headers), body))
        return Response(status_code=status, headers=headers)

    async def start(self) -> None:
        app = Starlette(routes=[Route("/{path:path}", self._handle, methods=["GET", "POST", "PUT", "PATCH", "DELETE"])])
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_config=None, access_log=False, lifespan="off")
        self._server = uvicorn.Server(config)
        self._server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self._server and self._task:
            self._server.should_exit = True
            self._server.force_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(self._task, 5)
        self._server = self._task = None


@contextlib.asynccontextmanager
async def http_target() -> AsyncIterator[HttpTarget]:
    target = HttpTarget()
    await target.start()
    try:
        yield target
    finally:
        await target.stop()
