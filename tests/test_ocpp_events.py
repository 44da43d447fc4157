"""The `$events` field builders: a client in, EMQX's fields out (no bus, no sockets)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from engine.bus import Message
from engine.config.schema import FlappingDetectSettings
from engine.ocpp import events


@dataclass
class Client:
    cid: str = "CP1"
    username: str | None = "user"
    peer: tuple[str, int] = ("10.0.0.1", 4321)
    sockname: tuple[str, int] = ("10.0.0.2", 80)
    proto_ver: str = "ocpp1.6"


CLIENT = {"clientid": "CP1", "username": "user", "peername": "10.0.0.1:4321", "peerhost": "10.0.0.1",
          "sockname": "10.0.0.2:80", "proto_name": "OCPP", "proto_ver": "ocpp1.6"}


def test_client_connected():
    fields = events.client_connected(Client(), keepalive=60.0, connected_at=123, mountpoint="ocpp/")
    assert fields == {**CLIENT, "keepalive": 60, "clean_start": True, "expiry_interval": 0, "is_bridge": False,
                      "connected_at": 123, "conn_props": {}, "mountpoint": "ocpp/"}
    assert list(fields)[:7] == list(CLIENT)  # EMQX's order: the client first
    assert type(fields["keepalive"]) is int


def test_client_disconnected():
    before = int(time.time() * 1000)
    fields = events.client_disconnected(Client(), reason="takenover", connected_at=123)
    assert before <= fields.pop("disconnected_at") <= int(time.time() * 1000)
    assert fields == {**CLIENT, "reason": "takenover", "connected_at": 123, "disconn_props": {}}


def test_client_connack_success_has_no_description():
    assert events.client_connack("CP1", None, ("::1", 5), "ocpp2.0.1", "success") == {
        "clientid": "CP1", "username": None, "peername": "::1:5", "peerhost": "::1", "proto_name": "OCPP",
        "proto_ver": "ocpp2.0.1", "reason_code": "success"}


def test_client_connack_refusal_says_why():
    fields = events.client_connack("CP1", "u", ("1.2.3.4", 5), "", "not_authorized", "a client certificate is required")
    assert fields["reason_code"] == "not_authorized" and fields["description"] == "a client certificate is required"


def test_client_flapping():
    flapping = FlappingDetectSettings(max_count=3, window_time=60, ban_time=300)
    before = int((time.time() + 300) * 1000)
    fields = events.client_flapping("CP1", "u", "1.2.3.4", flapping)
    assert before <= fields.pop("until") <= int((time.time() + 300) * 1000)
    assert fields == {"clientid": "CP1", "username": "u", "peerhost": "1.2.3.4", "max_count": 3,
                      "window_time": 60.0, "ban_time": 300.0}


def test_message_delivered_names_the_sender():
    message = Message("ocpp/cs/CP1", b'{"a":"\xff"}', qos=1, origin="mqtt", headers={"clientid": "backend"})
    fields = events.message_delivered(Client(), message)
    assert len(fields.pop("id")) == 32
    assert fields == {"clientid": "CP1", "username": "user", "peerhost": "10.0.0.1", "proto_ver": "ocpp1.6",
                      "topic": "ocpp/cs/CP1", "qos": 1, "flags": {"retain": False, "dup": False}, "pub_props": {},
                      "payload": '{"a":"\ufffd"}', "publish_received_at": message.timestamp,
                      "from_clientid": "backend", "from_username": None}
    assert events.message_delivered(Client(), Message("t", b"", origin="api"))["from_clientid"] == "api"


def test_message_dropped_without_a_message():
    before = int(time.time() * 1000)
    fields = events.message_fields(Client(), None, "[2,")
    assert before <= fields["publish_received_at"] <= int(time.time() * 1000)
    assert (fields["topic"], fields["qos"], fields["flags"]) == ("", 0, {"retain": False, "dup": False})
    assert fields["payload"] == "[2,"


def test_every_event_has_its_emqx_name():
    assert events.EVENT_NAMES == {
        "client_connected": "client.connected", "client_disconnected": "client.disconnected",
        "client_connack": "client.connack", "client_flapping": "client.flapping",
        "message_delivered": "message.delivered", "message_dropped": "message.dropped",
        # ours (issue 15): EMQX has no certificate events
        "certificate_expiring": "certificate.expiring"}


def test_takeover_notice():
    connected = events.client_connected(Client(), keepalive=0, connected_at=77, mountpoint="")
    assert events.takeover_notice("n1", connected) == {"node": "n1", "clientid": "CP1", "connected_at": 77}
