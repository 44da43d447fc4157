"""A connection of our own to the broker beside the bridge, kept up by itself.

The cluster (engine/cluster/member.py), the takeover claims without a cluster
(engine/cluster/claim_link.py) and the offline queue's watcher (engine/ocpp/offline_link.py)
each need one: the bridge never hears its own publishes back, and a wildcard on the bridge's
connection beside per-charge-point subscriptions would bring some messages twice. A subclass
names itself (`suffix`, the client id is the bridge's + `-<suffix>`; `what`, the log prefix),
may give a last will, and says what it does while connected (`run_connected`: by default it waits until
the connection closes) and before a stop's DISCONNECT (`last_words`). A lost connection is
retried after RETRY seconds (the last one repeated); the first failure after a success is logged.
"""

from __future__ import annotations

import asyncio
import logging

from connectors.mqtt.bridge import BridgeOptions
from connectors.mqtt.client import MqttClient, MqttError

log = logging.getLogger("ocppgw.mqtt")

RETRY = (0.5, 1.0, 2.0, 5.0)  # seconds between connection attempts


class SideLink:
    suffix = "side"
    what = "mqtt side link"

    def __init__(self, options: BridgeOptions, keepalive: float | None = None) -> None:
        self.options = options
        self.link_keepalive = options.keepalive if keepalive is None else keepalive
        self._client: MqttClient | None = None
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()  # set by `run_connected` once the link is usable
        self._stopping = False

    # --- for subclasses -----------------------------------------------------------------------

    def on_message(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        """A message for one of the link's subscriptions (none by default)."""

    def will(self) -> tuple[str, bytes, int, bool] | None:
        return None

    async def run_connected(self, client: MqttClient) -> None:
        """Connected: subscribe, announce, then return when `client` closes."""
        self._connected.set()
        await client.closed

    async def last_words(self, client: MqttClient) -> None:
        """A stop, before the DISCONNECT (raises MqttError or TimeoutError: the connection is aborted)."""

    def lost(self) -> None:
        """The connection ended (or never came)."""

    # --- lifecycle ----------------------------------------------------------------------------

    def launch(self) -> None:
        """Connect in the background."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"mqtt {self.suffix} link")

    async def start(self, timeout: float = 10.0) -> None:
        """Connect in the background; wait up to `timeout` for the link to be usable (`run_connected` says when)."""
        self.launch()
        try:
            await asyncio.wait_for(self._connected.wait(), timeout)
        except TimeoutError:
            log.warning("%s: not connected to the broker yet; retrying in the background", self.what)

    async def stop(self) -> None:
        self._stopping = True
        client = self._client
        if client is not None and not client.closed.done():
            try:
                await self.last_words(client)
                await asyncio.wait_for(client.disconnect(), 2.0)
            except (MqttError, TimeoutError):
                client.abort()
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        o = self.options
        failures = 0
        while not self._stopping:
            try:
                client = await MqttClient.connect(
                    o.host, o.port, client_id=f"{o.client_id}-{self.suffix}", on_message=self.on_message,
                    v5=o.proto_ver == "v5", username=o.username, password=o.password,
                    keepalive=max(1, int(self.link_keepalive)), tls=o.tls, will=self.will())
                self._client = client
                failures = 0
                await self.run_connected(client)
            except MqttError as exc:
                if failures == 0:
                    log.warning("%s: %s", self.what, exc)
                failures += 1
            self._connected.clear()
            self._client = None
            self.lost()
            if not self._stopping:
                await asyncio.sleep(RETRY[min(max(failures - 1, 0), len(RETRY) - 1)])
