"""Settings → parts: what `Node.start` and `Node.reload` both build from the settings.

One place, so a start and a reload of the same config cannot build different
parts. Each builder takes settings (and, where a running part is reused, that
part) and returns the part; none of them touches the node, and nothing here
imports it: the node imports this.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from connectors.mqtt.bridge import BridgeOptions
from connectors.mqtt.setup import bridge_options as mqtt_bridge_options
from engine.admin.credentials import Credentials
from engine.config.checks import is_loopback
from engine.config.schema import AuthenticationSettings, ListenerSettings, OcppSettings, Settings
from engine.ocpp.takeover import notice_filter

if TYPE_CHECKING:
    from engine.auth import Authenticator, UserStore
    from engine.ocpp.schemas import SchemaRegistry


class NodeError(Exception):
    """The node cannot start; the message says why, for the operator."""


def mountpoints(settings: Settings) -> list[str]:
    """Every mountpoint in use: the gateway's, then each listener's own."""
    ocpp = settings.gateway.ocpp
    found = [ocpp.mountpoint]
    for kind in (ocpp.listeners.ws, ocpp.listeners.wss):
        for listener in kind.values():
            if listener.mountpoint is not None and listener.mountpoint not in found:
                found.append(listener.mountpoint)
    return found


def bridge_options(settings: Settings) -> BridgeOptions:
    options = mqtt_bridge_options(settings.mqtt, settings.node.name, mountpoints(settings))
    claims = claims_filter(settings)
    if claims:
        # takeover claims (engine/ocpp/takeover.py) go out on a connection of their own and are read
        # here, on the connection the commands come by, so a node reads them in the broker's order
        options.subscriptions.append(claims)
    return options


def claims_filter(settings: Settings) -> str:
    """The topic filter of every node's takeover claims ("": no takeover across nodes): the cluster's
    claims topic, else `gateway.ocpp.takeover_topic` on an external broker (the embedded one serves
    one node, and amqtt stops delivering a client's messages once it publishes to a $ topic)."""
    if not settings.gateway.ocpp.enable:
        return ""
    if settings.cluster.enable:
        return settings.cluster.topic_prefix.rstrip("/") + "/claims"
    takeover = settings.gateway.ocpp.takeover_topic
    if takeover and settings.mqtt.server != "embedded":
        return notice_filter(takeover)
    return ""


def schema_registry(settings: Settings, current: SchemaRegistry | None = None) -> SchemaRegistry | None:
    """The compiled schemas if anything checks messages (gateway-wide or on a listener), else None.
    `current` (the running registry) is kept when its schema files have not changed."""
    ocpp = settings.gateway.ocpp
    modes: set[str | None] = {ocpp.message_format_checking}
    for listeners in (ocpp.listeners.ws, ocpp.listeners.wss):
        modes.update(listener.message_format_checking for listener in listeners.values())
    if not modes - {"disable", None}:
        return None
    from engine.ocpp.schemas import SchemaError, SchemaRegistry

    if current is not None and current.unchanged(ocpp.json_schema_dir or None):
        return current  # compiling ~400 schemas takes ~30 ms: not on every reload
    try:
        return SchemaRegistry(ocpp.json_schema_dir or None)
    except SchemaError as exc:
        raise NodeError(f"gateway.ocpp.json_schema_dir: {exc}") from None


def enabled_listeners(ocpp: OcppSettings) -> dict[str, tuple[str, str, ListenerSettings]]:
    """The listeners to run, by full name (`ocpp:ws:default`): (kind, name, settings)."""
    wanted: dict[str, tuple[str, str, ListenerSettings]] = {}
    for kind, listeners in (("ws", ocpp.listeners.ws), ("wss", ocpp.listeners.wss)):
        for name, settings in listeners.items():
            if settings.enable:
                wanted[f"ocpp:{kind}:{name}"] = (kind, name, settings)
    return wanted


def admin_credentials(settings: Settings) -> Credentials:
    d = settings.dashboard
    return Credentials(d.default_username, d.default_password, d.api_keys)


def open_user_store(settings: Settings) -> UserStore:
    from engine.auth import AuthStoreError, UserStore

    auth = settings.gateway.ocpp.authentication
    try:
        # the store exists with authentication (or OCPP) off too: users can be added beforehand
        return UserStore.in_data_dir(Path(settings.node.data_dir), auth.password_hash_algorithm)
    except AuthStoreError as exc:
        raise NodeError(str(exc)) from None


def authenticator_for(auth: AuthenticationSettings, running: Authenticator | None,
                      store: UserStore | None) -> Authenticator | None:
    """The authenticator for these settings (None when off), reusing (and updating) the running one."""
    from engine.auth import Authenticator

    if not auth.enable:
        if running is not None:
            running.close()
        return None
    if running is None:
        assert store is not None  # opened before any listener starts
        return Authenticator(auth, store)
    running.apply(auth)
    return running


def open_beyond_loopback(listener: ListenerSettings, authenticator: Authenticator | None) -> bool:
    """A listener anybody on the network may connect to without a password or a client certificate."""
    if is_loopback(listener.bind.host):
        return False
    if authenticator is not None and listener.enable_authn:
        return False
    tls = getattr(listener, "ssl_options", None)
    return not (tls and (tls.cn_must_match_cid or (tls.verify == "verify_peer" and tls.fail_if_no_peer_cert)))
