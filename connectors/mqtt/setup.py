"""MQTT settings → bridge options (server URL, TLS, forward filters)."""

from __future__ import annotations

import ssl

from connectors.mqtt.bridge import BridgeOptions
from connectors.tls import client_context
from engine.config.checks import parse_mqtt_server
from engine.config.schema import MqttSettings


def tls_context(settings: MqttSettings) -> ssl.SSLContext:
    s = settings.ssl
    return client_context(verify=s.verify, cacertfile=s.cacertfile, certfile=s.certfile, keyfile=s.keyfile,
                          versions=s.versions)


def bridge_options(settings: MqttSettings, node_name: str, mountpoints: list[str]) -> BridgeOptions:
    """`mountpoints`: every mountpoint in use, for `${mountpoint}` in forward filters."""
    if settings.server == "embedded":
        scheme, host, port = "mqtt", settings.embedded.bind.host, settings.embedded.bind.port
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1"
        proto_ver = "v4"  # amqtt speaks MQTT 3.1.1 only
    else:
        scheme, host, port = parse_mqtt_server(settings.server)
        proto_ver = settings.proto_ver

    def render(topics: list[str]) -> list[str]:
        out: list[str] = []
        for topic in topics:
            variants = [topic.replace("${mountpoint}", m) for m in mountpoints] if "${mountpoint}" in topic else [topic]
            out.extend(v for v in variants if v not in out)
        return out

    client_id = settings.client_id.replace("${node.name}", node_name) or node_name
    return BridgeOptions(
        host=host,
        port=port,
        client_id=client_id,
        username=settings.username,
        password=settings.password,
        proto_ver=proto_ver,
        qos=settings.qos,
        keepalive=settings.keepalive,
        max_inflight=settings.max_inflight,
        buffer_max_messages=settings.buffer.max_messages,
        buffer_max_bytes=settings.buffer.max_buffer_bytes,
        buffer_overflow=settings.buffer.overflow,
        buffer_mode=settings.buffer.mode,
        max_disconnects_per_message=settings.max_disconnects_per_message,
        reconnect_initial=settings.reconnect.initial_interval,
        reconnect_max=settings.reconnect.max_interval,
        tls=tls_context(settings) if scheme == "mqtts" or settings.ssl.enable else None,
        forward_topics=render(settings.forward.topics),
        forward_exclude=render(settings.forward.exclude),
        subscriptions=list(settings.subscriptions),
    )


def properties_dropped(settings: MqttSettings) -> str:
    """Why MQTT 5 message properties cannot reach the broker's subscribers ("" when they can)."""
    if settings.server == "embedded":
        return "the embedded broker speaks MQTT 3.1.1 only"
    if settings.proto_ver == "v4":
        return "mqtt.proto_ver = v4"
    return ""
