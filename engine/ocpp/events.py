"""The fields of the `$events/<name>` messages the OCPP side publishes, as EMQX names them.

Plain builders: a client (or the handshake's parts) in, the event's fields out. The context
adds `event` (its name in `EVENT_NAMES`), `node` and `timestamp` when it publishes them
(`GatewayContext.publish_event`), so every builder here is a function of its arguments (and
of the clock, for ids and times).
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Protocol

from engine.bus import Message
from engine.config.schema import FlappingDetectSettings

EVENT_NAMES = {
    "client_connected": "client.connected",
    "client_disconnected": "client.disconnected",
    "client_connack": "client.connack",
    "client_flapping": "client.flapping",
    "message_delivered": "message.delivered",
    "message_dropped": "message.dropped",
    "certificate_expiring": "certificate.expiring",
}


class EventClient(Protocol):
    """What the events say of a connected charge point."""

    cid: str
    username: str | None
    peer: tuple[str, int]
    sockname: tuple[str, int]
    proto_ver: str


def client_fields(client: EventClient, **extra: Any) -> dict[str, Any]:
    fields = {
        "clientid": client.cid,
        "username": client.username,
        "peername": f"{client.peer[0]}:{client.peer[1]}",
        "peerhost": client.peer[0],
        "sockname": f"{client.sockname[0]}:{client.sockname[1]}",
        "proto_name": "OCPP",
        "proto_ver": client.proto_ver,
    }
    fields.update(extra)
    return fields


def client_connected(client: EventClient, *, keepalive: float, connected_at: int, mountpoint: str) -> dict[str, Any]:
    return client_fields(
        client, keepalive=int(keepalive), clean_start=True, expiry_interval=0, is_bridge=False,
        connected_at=connected_at, conn_props={}, mountpoint=mountpoint,
    )


def client_disconnected(client: EventClient, *, reason: str, connected_at: int) -> dict[str, Any]:
    return client_fields(
        client, reason=reason, disconnected_at=int(time.time() * 1000), connected_at=connected_at, disconn_props={},
    )


def client_connack(cid: str, username: str | None, peer: tuple[Any, ...], proto_ver: str, reason_code: str,
                   description: str | None = None) -> dict[str, Any]:
    """A handshake's outcome: `success`, or the refusal's reason code and `description`."""
    fields = {
        "clientid": cid, "username": username, "peername": f"{peer[0]}:{peer[1]}", "peerhost": peer[0],
        "proto_name": "OCPP", "proto_ver": proto_ver, "reason_code": reason_code,
    }
    if description is not None:
        fields["description"] = description
    return fields


def client_flapping(cid: str, username: str | None, peerhost: str, flapping: FlappingDetectSettings) -> dict[str, Any]:
    return {
        "clientid": cid, "username": username, "peerhost": peerhost, "max_count": flapping.max_count,
        "window_time": float(flapping.window_time), "ban_time": float(flapping.ban_time),
        "until": int((time.time() + flapping.ban_time) * 1000),
    }


def message_fields(client: EventClient, message: Message | None, payload: str) -> dict[str, Any]:
    """The fields of `message_delivered` and `message_dropped` (the session adds a drop's `reason`
    and `description` itself: a drop is on its hot path, one call fewer)."""
    return _message_fields(client.cid, client.username, client.peer[0], client.proto_ver, message, payload)


def absent_message_fields(cid: str, message: Message, payload: str) -> dict[str, Any]:
    """The same, for a command to a charge point connected nowhere (engine/ocpp/offline.py): no
    username, peer or protocol version."""
    return _message_fields(cid, None, None, None, message, payload)


def _message_fields(cid: str, username: str | None, peerhost: str | None, proto_ver: str | None,
                    message: Message | None, payload: str) -> dict[str, Any]:
    return {
        "id": uuid.uuid4().hex,
        "clientid": cid,
        "username": username,
        "peerhost": peerhost,
        "proto_ver": proto_ver,
        "topic": message.topic if message else "",
        "qos": message.qos if message else 0,
        "flags": {"retain": bool(message and message.retain), "dup": False},
        "pub_props": {},
        "payload": payload,
        "publish_received_at": message.timestamp if message else int(time.time() * 1000),
    }


def message_delivered(client: EventClient, message: Message) -> dict[str, Any]:
    fields = message_fields(client, message, message.payload.decode("utf-8", "replace"))
    fields["from_clientid"] = message.headers.get("clientid", message.origin)
    fields["from_username"] = message.headers.get("username")
    return fields


def takeover_notice(node: str, connected: dict[str, Any]) -> dict[str, Any]:
    """What a node tells the others of a `client_connected` event (`engine.ocpp.takeover`)."""
    return {"node": node, "clientid": connected["clientid"], "connected_at": connected["connected_at"]}


def certificate_expiring(cid: str, username: str | None, certificate: dict[str, Any], days_left: int) -> dict[str, Any]:
    """A connected charge point's client certificate expires within `ssl_options.cert_expiry_warning`:
    `certificate` is the clients API's object (subject, issuer, serial, not_after in ISO 8601)."""
    return {"clientid": cid, "username": username, **certificate, "days_left": days_left}
