"""Takeover claims on `gateway.ocpp.takeover_topic`, for nodes that share a broker without
`cluster.enable`: published on a small connection of their own (the bridge's client id +
`-takeover`), because the bridge, which reads every node's claims (engine/parts.py), never hears
its own publishes back, and broker order needs each node to read its own claims too
(engine/ocpp/takeover.py). While it is down a claim cannot be sent, and the session takes its
commands at once.
"""

from __future__ import annotations

from connectors.mqtt.bridge import BridgeOptions
from connectors.mqtt.side_link import SideLink


class ClaimLink(SideLink):
    suffix = "takeover"
    what = "takeover"

    def __init__(self, options: BridgeOptions, template: str) -> None:
        super().__init__(options)
        self.template = template

    def topic(self, cid: str) -> str:
        return self.template.replace("${clientid}", cid).replace("${cid}", cid)

    def send(self, cid: str, payload: bytes) -> bool:
        client = self._client
        if client is None or client.closed.done() or not self._connected.is_set():
            return False
        client.publish(self.topic(cid), payload, 1, False, token=0)
        return True
