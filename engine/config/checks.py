"""Checks that span more than one value's type: URLs, topics, paths, binds."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from engine.bus.topic import TopicError, validate_filter
from engine.config.schema import Settings

Fail = Callable[[tuple[str, ...], object, str], None]


def check_settings(settings: Settings, fail: Fail) -> None:
    _check_mqtt(settings, fail)
    _check_ocpp(settings, fail)
    _check_dashboard(settings, fail)
    _check_cluster(settings, fail)
    _check_workers(settings, fail)


def _check_cluster(settings: Settings, fail: Fail) -> None:
    """cluster {}: the node's name and the prefix become topic levels (engine/cluster/)."""
    c = settings.cluster
    if not c.enable:
        return
    name = settings.node.name
    if not name or any(ch in name for ch in "+#/\0"):
        fail(("node", "name"), name, "with cluster.enable the name is a topic level: non-empty, without + # / or NUL")
    prefix = c.topic_prefix
    if not prefix.strip("/") or prefix.startswith("$") or any(ch in prefix for ch in "+#\0"):
        fail(("cluster", "topic_prefix"), prefix, "a topic prefix: not empty, not starting with $, without + # or NUL")
    if c.request_timeout <= 0:
        fail(("cluster", "request_timeout"), str(c.request_timeout), "must be more than 0s")
    if c.keepalive < 1:
        fail(("cluster", "keepalive"), str(c.keepalive), "must be at least 1s")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.partition("%")[0]).is_loopback  # an IPv6 zone (%eth0) is not part of it
    except ValueError:
        return False  # a name: it may resolve anywhere


def _check_dashboard(settings: Settings, fail: Fail) -> None:
    """Credentials that must not guard an admin API reachable beyond loopback. Checked here, when the
    config is read, so `check-config`, `run` and a reload refuse the same configs."""
    d = settings.dashboard
    http = d.listeners.http
    if not http.enable or is_loopback(http.bind.host):
        return
    where = f"dashboard.listeners.http.bind is {http.bind}"
    if not d.default_password:
        fail(("dashboard", "default_password"), "", f"an empty password is refused: {where}, beyond loopback")
    elif (d.default_username, d.default_password) == ("admin", "public"):
        fail(("dashboard", "default_password"), "public", f"refusing to serve the admin API beyond loopback "
             f"with the default credentials admin/public ({where}); set dashboard.default_password")


def _check_workers(settings: Settings, fail: Fail) -> None:
    workers = settings.node.workers.strip().lower()
    if workers != "auto" and not (workers.isdigit() and int(workers) >= 1):
        fail(("node", "workers"), settings.node.workers, "expected a positive whole number or auto")


def parse_mqtt_server(server: str) -> tuple[str, str, int]:
    """`mqtt://host[:port]` or `mqtts://host[:port]` → (scheme, host, port)."""
    parts = urlsplit(server)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise ValueError('expected "embedded", "mqtt://host[:port]" or "mqtts://host[:port]"')
    if parts.path not in ("", "/") or parts.query or parts.username:
        raise ValueError("the server URL takes no path, query or credentials (use mqtt.username)")
    try:
        port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
    except ValueError:
        raise ValueError("the port is not a number in 1..65535") from None
    return parts.scheme, parts.hostname, port


def _check_mqtt(settings: Settings, fail: Fail) -> None:
    mqtt = settings.mqtt
    if mqtt.server != "embedded":
        try:
            parse_mqtt_server(mqtt.server)
        except ValueError as exc:
            fail(("mqtt", "server"), mqtt.server, str(exc))
    if mqtt.reconnect.initial_interval <= 0:
        fail(("mqtt", "reconnect", "initial_interval"), str(mqtt.reconnect.initial_interval), "must be more than 0s")
    if mqtt.reconnect.max_interval < mqtt.reconnect.initial_interval:
        fail(("mqtt", "reconnect", "max_interval"), str(mqtt.reconnect.max_interval), "must not be less than initial_interval")
    for key in ("topics", "exclude"):
        for i, topic in enumerate(getattr(mqtt.forward, key)):
            _check_filter(("mqtt", "forward", f"{key}[{i}]"), topic.replace("${mountpoint}", "m/"), topic, fail)
    for i, topic in enumerate(mqtt.subscriptions):
        _check_filter(("mqtt", f"subscriptions[{i}]"), topic, topic, fail)


def _check_filter(path: tuple[str, ...], rendered: str, shown: str, fail: Fail) -> None:
    try:
        validate_filter(rendered)
    except TopicError as exc:
        fail(path, shown, str(exc))


def _check_mountpoint(path: tuple[str, ...], mountpoint: str, fail: Fail) -> None:
    if any(ch in mountpoint for ch in "+#\0"):
        fail(path, mountpoint, "a mountpoint cannot contain +, # or NUL")


def _check_ocpp(settings: Settings, fail: Fail) -> None:
    ocpp = settings.gateway.ocpp
    base = ("gateway", "ocpp")
    _check_mountpoint(base + ("mountpoint",), ocpp.mountpoint, fail)
    for key in ("topic", "reply_topic", "error_topic"):
        if not getattr(ocpp.upstream, key):
            fail(base + ("upstream", key), "", "a topic template cannot be empty")
    if not ocpp.dnstream.topic:
        fail(base + ("dnstream", "topic"), "", "a topic template cannot be empty")
    elif ocpp.dnstream.offline_queue.enable and not any(
            level in ("${cid}", "${clientid}") for level in ocpp.dnstream.topic.split("/")):
        fail(base + ("dnstream", "topic"), ocpp.dnstream.topic,
             "with offline_queue.enable the charge point id must be a whole level (cs/${cid}), so one filter sees them all")
    takeover = ocpp.takeover_topic
    if takeover:
        if "${cid}" not in takeover and "${clientid}" not in takeover:
            fail(base + ("takeover_topic",), takeover, "the template must contain ${cid}")
        else:
            _check_filter(base + ("takeover_topic",), takeover.replace("${clientid}", "+").replace("${cid}", "+"), takeover, fail)
    binds: dict[object, str] = {}
    for kind in ("ws", "wss"):
        for name, listener in getattr(ocpp.listeners, kind).items():
            path = base + ("listeners", kind, name)
            ws = listener.websocket
            if not ws.path.startswith("/"):
                fail(path + ("websocket", "path"), ws.path, 'a path starts with "/"')
            if not ws.supported_subprotocols:
                fail(path + ("websocket", "supported_subprotocols"), [], "at least one subprotocol is needed")
            if listener.mountpoint is not None:
                _check_mountpoint(path + ("mountpoint",), listener.mountpoint, fail)
            for i, network in enumerate(listener.per_source_exempt):
                try:
                    ipaddress.ip_network(network, strict=False)
                except ValueError:
                    fail(path + (f"per_source_exempt[{i}]",), network, 'expected an address or a network ("10.0.0.0/8")')
            _check_listener_emqx_keys(path, listener, fail)
            if kind == "wss":
                ssl = listener.ssl_options
                for key in ("certfile", "keyfile"):
                    if not getattr(ssl, key):
                        fail(path + ("ssl_options", key), "", "a wss listener needs a certificate and key")
                if ssl.verify == "verify_peer" and not ssl.cacertfile:
                    fail(path + ("ssl_options", "cacertfile"), "", "verify_peer needs a CA file")
            if listener.enable:
                other = binds.get(listener.bind)
                if other:
                    fail(path + ("bind",), str(listener.bind), f"the same address as {other}")
                binds[listener.bind] = ".".join(path)


def _check_listener_emqx_keys(path: tuple[str, ...], listener: Any, fail: Fail) -> None:
    """access_rules, tcp_options.keepalive, and the TLS keys run would refuse (ciphers, dhfile)."""
    from engine.ocpp import access, tls  # the listener's own parsers: one reading of each value

    for i, rule in enumerate(listener.access_rules):
        try:
            access.parse_rule(rule)
        except ValueError as exc:
            fail(path + (f"access_rules[{i}]",), rule, str(exc))
    try:
        tls.parse_keepalive(listener.tcp_options.keepalive)
    except ValueError as exc:
        fail(path + ("tcp_options", "keepalive"), listener.tcp_options.keepalive, str(exc))
    ssl_options = getattr(listener, "ssl_options", None)
    if ssl_options is not None:
        for key, problem in tls.check_options(ssl_options):
            fail(path + ("ssl_options", key), getattr(ssl_options, key), problem)
