"""Takeover across nodes that share a broker.

Each node announces every new connection on `gateway.ocpp.takeover_topic`
(through the MQTT bridge, which forwards it and subscribes to everyone
else's). A node that holds a session for the announced charge point, older
than the announced one, closes it with reason `takenover`, exactly as a
duplicate connection on one node does. Anyone who may publish on that topic
can disconnect charge points, so restrict it with the broker's ACLs, as the
downstream command topics.

That compares wall clocks of different machines: two nodes whose clocks differ by
more than the reconnect gap keep both sockets. With `cluster.enable`, `ClaimOrder`
decides instead, by the order the broker delivers claims on one topic: every new
connection publishes a claim, every node (the sender too) reads every claim in
that order, and a session whose own claim came back before another node's claim
for the same charge point is the older one and closes. No clock is read.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from typing import Any

import orjson

from engine.bus import Message
from engine.ocpp.context import GatewayContext, TopicTemplate
from engine.ocpp.events import takeover_notice

log = logging.getLogger("ocppgw.takeover")

ORIGIN = "takeover"


def notice_filter(template: str) -> str:
    """The subscription that matches every charge point's notice."""
    return template.replace("${clientid}", "+").replace("${cid}", "+")


class TakeoverNotices:
    def __init__(self, ctx: GatewayContext, template: str) -> None:
        self.ctx = ctx
        self.template = TopicTemplate(template)
        self.filter = notice_filter(template)
        self.taken_over = 0
        self._subscriptions = [
            ctx.bus.subscribe("$events/client_connected", self._announce, name="takeover"),
            ctx.bus.subscribe(self.filter, self._on_notice, name="takeover"),
        ]

    def close(self) -> None:
        for sub in self._subscriptions:
            self.ctx.bus.unsubscribe(sub)

    def _announce(self, event: Message) -> None:
        fields = event.json()
        notice = takeover_notice(self.ctx.node, fields)
        topic = self.template.render({"cid": fields["clientid"]})
        self.ctx.bus.publish(Message(topic, orjson.dumps(notice), qos=1, origin=ORIGIN, decoded=notice))

    def _on_notice(self, message: Message) -> None:
        if message.origin != "mqtt":
            return  # our own announcement
        try:
            notice = message.json()
            node, cid, connected_at = notice["node"], notice["clientid"], notice["connected_at"]
        except (orjson.JSONDecodeError, TypeError, KeyError):
            log.warning("ignoring a malformed takeover notice on %s", message.topic)
            return
        if node == self.ctx.node or not isinstance(connected_at, (int, float)):
            return
        if self.ctx.sessions.take_over(cid, connected_at):
            log.info("charge point %s connected to node %s: closed it here", cid, node)
            self.taken_over += 1


class ClaimOrder:
    """Takeover in broker order. `send(payload)` publishes a claim on the cluster's one claims topic
    (False: not connected); `on_claim(payload)` is called for every claim the broker delivers, ours
    included, in its order."""

    def __init__(self, ctx: GatewayContext, send: Callable[[bytes], bool]) -> None:
        self.ctx = ctx
        self.send = send
        self.taken_over = 0
        self.malformed = 0
        self._ids = itertools.count(1)
        # cid → [session, claim token, claim seen back from the broker]
        self._claims: dict[str, list[Any]] = {}
        self._subscriptions = [
            ctx.bus.subscribe("$events/client_connected", self._claim, name="takeover"),
            ctx.bus.subscribe("$events/client_disconnected", self._forget, name="takeover"),
        ]

    def close(self) -> None:
        for sub in self._subscriptions:
            self.ctx.bus.unsubscribe(sub)

    def _claim(self, event: Message) -> None:
        cid = event.json()["clientid"]
        session = self.ctx.sessions.get(cid)
        if session is None:
            return
        token = f"{self.ctx.node}:{next(self._ids)}"
        self._claims[cid] = [session, token, False]
        if not self.send(orjson.dumps({"node": self.ctx.node, "clientid": cid, "claim": token})):
            log.warning("charge point %s connected while the cluster link is down: no takeover claim sent", cid)

    def _forget(self, event: Message) -> None:
        cid = event.json().get("clientid")
        entry = self._claims.get(cid) if isinstance(cid, str) else None
        if entry is not None and entry[0].closed:
            del self._claims[cid]

    def on_claim(self, payload: bytes) -> None:
        try:
            claim = orjson.loads(payload)
            cid, token = claim["clientid"], claim["claim"]
            if not isinstance(cid, str) or not isinstance(token, str):
                raise TypeError
        except (orjson.JSONDecodeError, TypeError, KeyError):
            self.malformed += 1
            if self.malformed == 1 or self.malformed % 1000 == 0:
                log.warning("ignoring a malformed takeover claim (%d so far)", self.malformed)
            return
        entry = self._claims.get(cid)
        if entry is None:
            return
        session, ours, seen = entry
        if token == ours:
            entry[2] = True  # from now on, any claim for cid is newer than our session
        elif seen and not session.closed:
            del self._claims[cid]
            session.close("takenover", 1000)
            self.taken_over += 1
            log.info("charge point %s connected again elsewhere (claim %s): closed it here", cid, token)
        # not yet seen: that claim is older than ours; its node closes its session when ours arrives
