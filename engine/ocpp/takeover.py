"""Takeover across nodes that share a broker, in the order the broker delivers claims.

Every new connection publishes a claim for its charge point; every node (the sender too) reads
every claim for that charge point in the broker's order, and a session whose own claim came
back before another node's claim for the same charge point is the older one and closes
(`takenover`), exactly as a duplicate connection on one node does. No clock is read.

Where the claims travel: with `cluster.enable`, on the cluster's one claims topic, published by
the cluster connection (engine/cluster/member.py); without it, on `gateway.ocpp.takeover_topic`
(one topic per charge point, so the broker orders each one's claims), published by a small
connection of its own (engine/cluster/claim_link.py). Both are read by the bridge, which never
hears its own publishes back but hears these, on the connection the commands come by: a node
reads a claim before any command the broker routed after it. Anyone who may publish there can
disconnect charge points, so restrict the topic with the broker's ACLs, as the downstream
command topics.

A command published while a charge point moves reaches one socket at most, and is reported
dropped where it is not delivered. The new session subscribes its downstream topic at once (so
the answers to the CALLs the charge point sends at once, BootNotification, reach it), but until
its own claim is back (`hold`, `release`) it takes no command (CALL, SEND) from the broker: the old session
may still hold the charge point, and the broker hands such a command to both. It reports each
one dropped (`takeover_pending`); the old session delivers it to its still-open socket, or has
closed. The old session stops taking commands when the newer claim arrives and reports what it
holds unanswered (in flight and queued) as dropped (`takenover`). Upstream frames never wait. A
claim goes out only once the broker has acknowledged the new session's subscription (the
bridge's `subscriptions_confirmed`): were the claim there first, a command published between
the two would reach the old node alone, after the claim that closes its socket there. A
claim that never comes back (the link down) does not keep a lone node deaf: after `wait`
seconds the session takes commands anyway (logged, counted in `unconfirmed`). A reconnect to
the node that already holds the charge point (a local takeover) takes commands at once.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from collections.abc import Callable
from typing import Any

import orjson

from engine.bus import Message
from engine.ocpp.context import GatewayContext
from engine.ocpp.events import takeover_notice

log = logging.getLogger("ocppgw.takeover")

# tests only: seconds a claim waits before it is published (a claim held back by a slow link)
TEST_DELAY_ENV = "OCPP_GATEWAY_TEST_CLAIM_DELAY"  # not OCPPGW_: those are config keys


def notice_filter(template: str) -> str:
    """The subscription that matches every charge point's notice."""
    return template.replace("${clientid}", "+").replace("${cid}", "+")


class _Claim:
    __slots__ = ("session", "token", "seen", "timer", "payload", "unconfirmed")

    def __init__(self, session: Any, token: str, payload: bytes) -> None:
        self.session = session
        self.token = token
        self.payload = payload
        self.seen = False  # came back from the broker: any later claim for the cid is newer
        self.timer: asyncio.TimerHandle | None = None
        self.unconfirmed = False  # took commands without it (counted once)


class ClaimOrder:
    """`send(cid, payload)` publishes a claim (False: not connected); every claim the broker delivers
    on `heard` (a topic filter the bridge subscribes to), ours included, comes in its order through
    the bus to `on_claim`. `wait`: seconds a new session waits for its claim before it takes
    commands anyway. `ready()` (the bridge's): None when every downstream subscription made so far
    is on the broker, else a future done when it is; a claim goes out only then, so a command
    published after the claim reached the broker also reaches the new session's node."""

    def __init__(self, ctx: GatewayContext, send: Callable[[str, bytes], bool], wait: float,
                 heard: str, ready: Callable[[], asyncio.Future[None] | None] | None = None) -> None:
        self.ctx = ctx
        self.send = send
        self.wait = wait
        self.ready = ready
        self.taken_over = 0
        self.malformed = 0
        self.unconfirmed = 0  # sessions that took commands without their claim back (link down, slow)
        self._ids = itertools.count(1)
        self._claims: dict[str, _Claim] = {}
        self._delay = float(os.environ.get(TEST_DELAY_ENV) or 0)
        self._subscriptions = [
            ctx.bus.subscribe("$events/client_disconnected", self._forget, name="takeover"),
            ctx.bus.subscribe(heard, self._heard, name="takeover"),  # the bridge's, in broker order
        ]

    def close(self) -> None:
        for sub in self._subscriptions:
            self.ctx.bus.unsubscribe(sub)
        for claim in self._claims.values():
            if claim.timer is not None:
                claim.timer.cancel()

    def hold(self, session: Any) -> bool:
        """Claim `session`'s charge point; True: the session takes commands once the claim is back
        (`session.release()`), False: at once (it replaces this node's own newest session, or the
        claim cannot be sent)."""
        cid = session.cid
        before = self._claims.get(cid)
        local = before is not None and before.seen and before.session is not session
        if before is not None and before.timer is not None:
            before.timer.cancel()
        token = f"{self.ctx.node}:{next(self._ids)}"
        # the takeover notice's fields (operators may consume them on takeover_topic) and the token
        notice = {**takeover_notice(self.ctx.node, {"clientid": cid, "connected_at": session.connected_at}),
                  "claim": token}
        claim = self._claims[cid] = _Claim(session, token, orjson.dumps(notice))
        waiter = self.ready() if self.ready is not None else None
        if waiter is None and self._delay <= 0:
            return self._publish(claim) and not local
        # the claim waits for the session's subscription to reach the broker (or the test delay); a
        # subscription that never does (the bridge down) does not keep the session deaf either
        loop = asyncio.get_running_loop()
        claim.timer = loop.call_later(self.wait, self._unanswered, claim)
        if waiter is None:
            loop.call_later(self._delay, self._publish, claim)
        else:
            waiter.add_done_callback(lambda _: self._subscribed(claim))
        return not local

    def _subscribed(self, claim: _Claim) -> None:
        if self._delay > 0:
            asyncio.get_running_loop().call_later(self._delay, self._publish, claim)
        else:
            self._publish(claim)

    def _publish(self, claim: _Claim) -> bool:
        """Send the claim; False when it cannot go (the session then takes commands at once)."""
        if claim.timer is not None:
            claim.timer.cancel()
            claim.timer = None
        if claim.session.closed or self._claims.get(claim.session.cid) is not claim:
            return False
        if not self.send(claim.session.cid, claim.payload):
            self._unconfirmed(claim, "the takeover link is down, no claim sent")
            return False
        claim.payload = b""  # sent: not kept for the life of the connection
        claim.timer = asyncio.get_running_loop().call_later(self.wait, self._unanswered, claim)
        return True

    def _unanswered(self, claim: _Claim) -> None:
        claim.timer = None
        if not claim.seen and not claim.session.closed:
            self._unconfirmed(claim, f"its takeover claim did not come back within {self.wait:g}s")

    def _unconfirmed(self, claim: _Claim, why: str) -> None:
        """Take commands without the claim: a lone node keeps working (logged once per 1000: a
        reconnect storm while the link is down must not flood the log)."""
        if claim.unconfirmed:  # a claim that waited for its subscription past `wait`, then could not go
            return
        claim.unconfirmed = True
        self.unconfirmed += 1
        if self.unconfirmed == 1 or self.unconfirmed % 1000 == 0:
            log.warning("charge point %s: %s; it takes commands anyway (%d such connections so far)",
                        claim.session.cid, why, self.unconfirmed)
        claim.session.release()

    def _forget(self, event: Message) -> None:
        fields = event.json()
        cid = fields.get("clientid")
        claim = self._claims.get(cid) if isinstance(cid, str) else None
        # a local takeover (`takenover` from the registry) is followed at once by the new session's
        # `hold`, which needs to know this node held the charge point: keep the claim until then
        if claim is not None and claim.session.closed and fields.get("reason") != "takenover":
            if claim.timer is not None:
                claim.timer.cancel()
            del self._claims[cid]

    def _heard(self, message: Message) -> None:
        if message.origin == "mqtt":  # what the bridge received; nothing on the bus is a claim
            self.on_claim(message.payload)

    def on_claim(self, payload: bytes) -> None:
        try:
            found = orjson.loads(payload)
            cid, token = found["clientid"], found.get("claim")
            if token is None and isinstance(found["node"], str) and isinstance(found["connected_at"], (int, float)):
                # a notice from a node of an earlier version (no claim token; it still decides by clocks):
                # in broker order it is a claim like any other, so a rolling upgrade keeps takeover working
                token = f"notice:{found['node']}:{found['connected_at']}"
            if not isinstance(cid, str) or not isinstance(token, str):
                raise TypeError
        except (orjson.JSONDecodeError, TypeError, KeyError):
            self.malformed += 1
            if self.malformed == 1 or self.malformed % 1000 == 0:
                log.warning("ignoring a malformed takeover claim (%d so far)", self.malformed)
            return
        claim = self._claims.get(cid)
        if claim is None:
            return
        session = claim.session
        if token == claim.token:
            claim.seen = True
            if claim.timer is not None:
                claim.timer.cancel()
                claim.timer = None
            session.release()  # the newest connection now: its commands come here
            log.debug("charge point %s: its takeover claim is back, taking commands", cid)
        elif claim.seen:
            del self._claims[cid]
            if not session.closed:
                session.close("takenover", 1000)
                self.taken_over += 1
                log.info("charge point %s connected again elsewhere (claim %s): closed it here", cid, token)
        # not yet seen: that claim is older than ours; its node closes its session when ours arrives
