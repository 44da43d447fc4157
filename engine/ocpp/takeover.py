"""Takeover across nodes that share a broker.

Each node announces every new connection on `gateway.ocpp.takeover_topic`
(through the MQTT bridge, which forwards it and subscribes to everyone
else's). A node that holds a session for the announced charge point, older
than the announced one, closes it with reason `takenover`, exactly as a
duplicate connection on one node does. Anyone who may publish on that topic
can disconnect charge points, so restrict it with the broker's ACLs, as the
downstream command topics.
"""

from __future__ import annotations

import logging

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
