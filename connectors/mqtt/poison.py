"""Poison messages: the ones the broker answers by dropping the connection.

The bridge resends what was not acknowledged when a connection ends (at least
once). A message the broker cannot take and answers by closing the connection
(a packet over mosquitto's `max_packet_size`, with MQTT 3.1.1 no reason code
at all) would be resent after every reconnect, forever, and nothing behind it
would ever reach the broker again.

Who is to blame: when the broker closes the connection over a PUBLISH, the
culprit is one of the messages still unacknowledged, but not necessarily the
oldest: mosquitto, for one, closes without sending the acknowledgements it
had queued for the packets before it. A broker restart or a network blip also
ends a connection with messages in flight, and proves nothing against any of
them. So after a connection is lost with messages in flight, the next
connection sends those messages again in a window that starts at one message
and grows by one with each acknowledgement (TCP's slow start: it doubles
every round trip), the *probe*, and then opens the full window again. A
culprit among them ends the connection again, with fewer messages ahead of
it each time (the first one, alone, was acknowledged, unless it is the
culprit), until it goes out alone. Only a loss while a single message was in
flight accuses that message (the suspect), and only `max_losses` such losses
in a row drop it; an acknowledgement clears it. A message that is fine is
dropped only if the broker went away that many times in a row within one
round trip of a reconnect, which is not an outage but a broker that cannot
take it. After an ordinary outage the probe costs a few round trips.

An MQTT 5 broker may say why it closes (DISCONNECT with a reason code); a
reason that is about a message (packet too large, topic name invalid, payload
format invalid) while a single message was in flight drops it at once; one
that is about the session (server shutting down, session taken over...)
accuses nobody.
Connections we end ourselves (stop, a silent half-open connection) accuse
nobody.
"""

from __future__ import annotations

import logging

from engine.bus.message import Message
from engine.log import Throttle

log = logging.getLogger("ocppgw.mqtt")

# MQTT 5 DISCONNECT reason codes that name the message being handled, not the session
MESSAGE_REASONS = {0x90: "topic_name_invalid", 0x95: "packet_too_large", 0x99: "payload_format_invalid"}
# ... and those that say it is not about any message: server shutting down, keep alive timeout, session
# taken over, administrative action, use another server, server moved, connection rate exceeded,
# maximum connect time
NOT_ABOUT_A_MESSAGE = {0x8B, 0x8D, 0x8E, 0x98, 0x9C, 0x9D, 0x9F, 0xA0}
LOSSES = "connection_lost"  # the reason for a message dropped after max_losses lost connections
LOG_EVERY = 60.0  # seconds: after the first drop of a reason, at most one log line per reason this often
TOPIC_IN_LOG = 100  # characters of the topic shown in the log line


class PoisonGuard:
    """Tracks the suspect message and counts the messages dropped, by reason."""

    def __init__(self, max_losses: int) -> None:
        self.max_losses = max_losses  # 0: never drop over lost connections alone (reason codes still do)
        self.suspect: Message | None = None
        self.losses = 0  # connections lost while the suspect was alone in flight
        self.probe_remaining = 0  # messages in flight at the last loss not yet acknowledged (or dropped)
        self.probe_window = 1  # while probing: how many may be in flight
        self.dropped: dict[str, int] = {}
        self._lines = Throttle(LOG_EVERY)  # per reason

    @property
    def probing(self) -> bool:
        """True while the window is `probe_window`, not the full one."""
        return self.probe_remaining > 0

    def connection_lost(self, unacked: list[Message], reason_code: int | None) -> bool:
        """A connection ended with `unacked` (oldest first, at least one) not acknowledged: True if
        the oldest is to be dropped (counted and logged here), False if all are to be sent again."""
        oldest, alone = unacked[0], len(unacked) == 1
        self.probe_remaining = max(self.probe_remaining, len(unacked))
        self.probe_window = 1
        reason = MESSAGE_REASONS.get(reason_code) if alone and reason_code is not None else None
        if reason is None:
            if not alone or not self.max_losses or reason_code in NOT_ABOUT_A_MESSAGE:
                return False  # any of them may be the culprit, or none: the probe will tell
            if oldest is self.suspect:
                self.losses += 1
            else:
                self.suspect, self.losses = oldest, 1
            if self.losses < self.max_losses:
                return False
            reason = LOSSES
        detail = (f"the broker closed the connection with reason code 0x{reason_code:02x}"
                  if reason != LOSSES else
                  f"the broker dropped the connection {self.losses} times while it was the only message in flight")
        if oldest is self.suspect:
            self.suspect, self.losses = None, 0
        self.probe_remaining = max(0, self.probe_remaining - 1)
        self.drop(oldest, reason, detail)
        return True

    def acked(self, message: Message) -> None:
        """The broker answered `message` while probing: it was not the culprit; the window grows."""
        self.probe_remaining = max(0, self.probe_remaining - 1)
        self.probe_window += 1
        if message is self.suspect:
            self.suspect, self.losses = None, 0

    def drop(self, message: Message, reason: str, detail: str) -> None:
        """Count a dropped message and log it (the first of each reason, then at most one line per
        LOG_EVERY seconds per reason, saying how many were not logged)."""
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        more = self._lines.allow(reason)
        if more is None:
            return
        topic = message.topic if len(message.topic) <= TOPIC_IN_LOG else message.topic[:TOPIC_IN_LOG] + "..."
        log.warning("mqtt bridge dropped a message on %r (%d bytes): %s (reason %s, counted in "
                    "mqtt_bridge_poison_dropped%s)", topic, len(message.payload), detail, reason,
                    f"; {more} more dropped for this reason since the last line" if more else "")
