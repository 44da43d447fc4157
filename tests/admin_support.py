"""A gateway on an event loop of its own thread, for synchronous (hypothesis) tests of the admin API."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.ocpp_support import Gateway, running_gateway
from tests.servers import Mosquitto


@contextmanager
def gateway_in_thread(tmp_path: Path, conf: str = "") -> Iterator[Gateway]:
    mosquitto = Mosquitto()
    mosquitto.start()
    loop = asyncio.new_event_loop()
    started: dict[str, Any] = {}
    ready = threading.Event()

    async def serve() -> None:
        stop = started["stop"] = asyncio.Event()
        try:
            async with running_gateway(tmp_path, mosquitto.port, conf) as gw:
                started["gw"] = gw
                ready.set()
                await stop.wait()
        finally:
            ready.set()

    thread = threading.Thread(target=lambda: loop.run_until_complete(serve()), daemon=True)
    thread.start()
    try:
        assert ready.wait(60) and "gw" in started, "the gateway did not start"
        yield started["gw"]
    finally:
        if "stop" in started:
            loop.call_soon_threadsafe(started["stop"].set)
        thread.join(30)
        mosquitto.stop()
