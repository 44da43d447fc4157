"""Takeover claims on `gateway.ocpp.takeover_topic`, for nodes that share a broker without
`cluster.enable`: published on a small connection of their own (the bridge's client id +
`-takeover`), because the bridge, which reads every node's claims (engine/parts.py), never hears
its own publishes back, and broker order needs each node to read its own claims too
(engine/ocpp/takeover.py). While it is down a claim cannot be sent, and the session takes its
commands at once.
"""

from __future__ import annotations

import asyncio
import itertools
import logging

from connectors.mqtt.bridge import BridgeOptions
from connectors.mqtt.client import MqttClient, MqttError

log = logging.getLogger("ocppgw.takeover")

RETRY = (0.5, 1.0, 2.0, 5.0)  # seconds between connection attempts


class ClaimLink:
    def __init__(self, options: BridgeOptions, template: str) -> None:
        self.options = options
        self.template = template
        self._client: MqttClient | None = None
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._stopping = False

    def topic(self, cid: str) -> str:
        return self.template.replace("${clientid}", cid).replace("${cid}", cid)

    def send(self, cid: str, payload: bytes) -> bool:
        client = self._client
        if client is None or client.closed.done() or not self._connected.is_set():
            return False
        client.publish(self.topic(cid), payload, 1, False, token=0)
        return True

    async def start(self, timeout: float = 10.0) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())
        try:
            await asyncio.wait_for(self._connected.wait(), timeout)
        except TimeoutError:
            log.warning("takeover: not connected to the broker yet; retrying in the background")

    async def stop(self) -> None:
        self._stopping = True
        client = self._client
        if client is not None and not client.closed.done():
            try:
                await asyncio.wait_for(client.disconnect(), 2.0)
            except (MqttError, TimeoutError):
                client.abort()
        if self._task is not None:
            self._task.cancel()

    def _on_message(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        pass  # subscribes to nothing

    async def _run(self) -> None:
        o = self.options
        for attempt in itertools.count():
            if self._stopping:
                return
            try:
                client = await MqttClient.connect(
                    o.host, o.port, client_id=f"{o.client_id}-takeover", on_message=self._on_message,
                    v5=o.proto_ver == "v5", username=o.username, password=o.password,
                    keepalive=max(1, int(o.keepalive)), tls=o.tls)
                self._client = client
                self._connected.set()
                attempt = 0
                await client.closed
            except MqttError as exc:
                if attempt == 0:
                    log.warning("takeover: %s", exc)
            self._connected.clear()
            self._client = None
            if not self._stopping:
                await asyncio.sleep(RETRY[min(attempt, len(RETRY) - 1)])
