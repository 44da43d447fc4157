"""The node: one object that builds every part from the settings, runs them, and stops them.

Start order follows the data path backwards (broker, bridge, then the parts
that publish), so nothing publishes into a part that is not there yet; stop
order is the reverse, so listeners stop accepting first and the bridge
flushes last.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from connectors.mqtt import EmbeddedBroker, MqttBridge
from connectors.mqtt.setup import bridge_options
from connectors.registry import ResourceConfigError, Resources
from engine.bus import Bus
from engine.config.schema import ListenerSettings, Settings
from engine.metrics import LoopLagMonitor
from engine.ocpp.admission import guards, is_loopback
from engine.ocpp.context import GatewayContext
from engine.ocpp.listener import ListenerError, OcppListener
from engine.ocpp.takeover import TakeoverNotices, notice_filter
from rules.runtime import RuleEngine, RuleLoadError

log = logging.getLogger("ocppgw.node")


class NodeError(Exception):
    """The node cannot start; the message says why, for the operator."""


def open_beyond_loopback(listener: ListenerSettings, authenticator) -> bool:
    """A listener anybody on the network may connect to without a password or a client certificate."""
    if is_loopback(listener.bind.host):
        return False
    if authenticator is not None and listener.enable_authn:
        return False
    tls = getattr(listener, "ssl_options", None)
    return not (tls and (tls.cn_must_match_cid or (tls.verify == "verify_peer" and tls.fail_if_no_peer_cert)))


class Node:
    def __init__(self, settings: Settings, config_path: str | None = None) -> None:
        self.settings = settings
        self.config_path = config_path  # what a reload from the files reads
        self.bus = Bus()
        self.broker: EmbeddedBroker | None = None
        self.bridge: MqttBridge | None = None
        self.ocpp: GatewayContext | None = None
        self.listeners: dict[str, OcppListener] = {}
        self.authenticator = None
        self.takeover: TakeoverNotices | None = None
        self.rules: RuleEngine | None = None
        self.resources: Resources | None = None
        self.admin_server = None
        self.admin_credentials = None
        self.user_store = None
        self._stopped = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self.started = False
        self.started_at = 0.0
        self.loop_lag = LoopLagMonitor()  # read by the metrics collector

    def bridge_options(self, settings: Settings):
        options = bridge_options(settings.mqtt, settings.node.name, self.mountpoints(settings))
        takeover = settings.gateway.ocpp.takeover_topic
        # nodes sharing a broker hear of each other's new connections; the embedded broker serves
        # one node, and amqtt stops delivering a client's messages once it publishes to a $ topic
        if settings.gateway.ocpp.enable and takeover and settings.mqtt.server != "embedded":
            options.forward_topics.append(notice_filter(takeover))
            options.subscriptions.append(notice_filter(takeover))
        return options

    def mountpoints(self, settings: Settings | None = None) -> list[str]:
        ocpp = (settings or self.settings).gateway.ocpp
        found = [ocpp.mountpoint]
        for kind in (ocpp.listeners.ws, ocpp.listeners.wss):
            for listener in kind.values():
                if listener.mountpoint is not None and listener.mountpoint not in found:
                    found.append(listener.mountpoint)
        return found

    async def start(self) -> None:
        s = self.settings
        self.loop_lag.start()
        self.check_admin_credentials(s)
        try:
            self.resources = Resources(s)
        except ResourceConfigError as exc:
            raise NodeError("connectors and actions do not load:\n  " + "\n  ".join(exc.errors)) from None
        self.rules = RuleEngine(self.bus, self.resources.resolve)
        self.rules.configure(s.rule_engine)
        try:
            # compiled first: a rule that does not compile stops the start before anything runs
            compiled = self.rules.compile(s.rule_engine.rules)
        except RuleLoadError as exc:
            raise NodeError("rules do not load:\n  " + "\n  ".join(exc.errors)) from None
        try:
            Path(s.node.data_dir).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise NodeError(f"node.data_dir {s.node.data_dir!r}: {exc.strerror or exc}") from None
        if s.mqtt.server == "embedded":
            bind = s.mqtt.embedded.bind
            self.broker = EmbeddedBroker(bind.host, bind.port, start_timeout=s.mqtt.embedded.start_timeout)
            try:
                await self.broker.start()
            except Exception as exc:
                self.broker = None
                raise NodeError(str(exc)) from None
        options = self.bridge_options(s)
        self.bridge = MqttBridge(options, self.bus.publish)
        self.bus.watch_remote(self.bridge)
        for topic in ["#"] + [t for t in options.forward_topics if t.startswith("$")]:
            self.bus.subscribe(topic, self.bridge.forward, name="mqtt-bridge")
        await self.bridge.start()
        await self.resources.start()
        self.rules.install(compiled)
        if self.broker:
            # the broker is ours and up: wait for the bridge so `run` is ready when it says so
            await self.bridge.wait_connected(s.mqtt.embedded.start_timeout)
        self._open_user_store()
        await self._start_ocpp()
        await self._start_admin()
        self.started = True
        self.started_at = time.time()
        log.info("node %s started", s.node.name)

    async def _start_ocpp(self) -> None:
        ocpp = self.settings.gateway.ocpp
        if not ocpp.enable:
            return
        self.ocpp = GatewayContext(ocpp, self.bus, self.settings.node.name, self.schema_registry(self.settings))
        if ocpp.takeover_topic and self.settings.mqtt.server != "embedded":
            self.takeover = TakeoverNotices(self.ocpp, ocpp.takeover_topic)
        authenticator = self._authenticator()
        for kind, listeners in (("ws", ocpp.listeners.ws), ("wss", ocpp.listeners.wss)):
            for name, listener_settings in listeners.items():
                if not listener_settings.enable:
                    continue
                listener = OcppListener(self.ocpp, name, kind, listener_settings, authenticator)
                try:
                    await listener.start()
                except ListenerError as exc:
                    raise NodeError(str(exc)) from None
                self.listeners[listener.app.full_name] = listener
                if open_beyond_loopback(listener_settings, authenticator):
                    log.warning("OCPP listener %s on %s is reachable beyond loopback and lets charge points in "
                                "without a login: set gateway.ocpp.authentication (and keep the listener's "
                                "enable_authn = true) or bind it to 127.0.0.1", listener.app.full_name,
                                listener_settings.bind)

    def schema_registry(self, settings: Settings, current=None):
        """The compiled schemas if anything checks messages (gateway-wide or on a listener), else None.
        `current` (the running registry) is kept when its schema files have not changed."""
        ocpp = settings.gateway.ocpp
        modes = {ocpp.message_format_checking}
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

    def _open_user_store(self) -> None:
        from engine.auth import AuthStoreError, UserStore

        auth = self.settings.gateway.ocpp.authentication
        try:
            # the store exists with authentication (or OCPP) off too: users can be added beforehand
            self.user_store = UserStore.in_data_dir(Path(self.settings.node.data_dir), auth.password_hash_algorithm)
        except AuthStoreError as exc:
            raise NodeError(str(exc)) from None

    def _authenticator(self):
        return self.apply_authentication(self.settings.gateway.ocpp.authentication)

    def apply_authentication(self, auth):
        """The authenticator for these settings (None when off), reusing the running one; and the
        admission guards' flapping_detect (start and reload both come through here)."""
        from engine.auth import Authenticator

        if self.ocpp is not None:
            guards(self.ocpp).apply(self.settings.flapping_detect)
        if not auth.enable:
            if self.authenticator is not None:
                self.authenticator.close()
            self.authenticator = None
        elif self.authenticator is None:
            self.authenticator = Authenticator(auth, self.user_store)
        else:
            self.authenticator.apply(auth)
        return self.authenticator

    def check_admin_credentials(self, settings: Settings) -> None:
        d = settings.dashboard
        bind = d.listeners.http.bind
        loopback = bind.host in ("127.0.0.1", "::1", "localhost") or bind.host.startswith("127.")
        if d.listeners.http.enable and not loopback and (d.default_username, d.default_password) == ("admin", "public"):
            raise NodeError(f"dashboard.listeners.http.bind {bind}: refusing to serve the admin API beyond loopback "
                            "with the default credentials admin/public; set dashboard.default_password")

    async def _start_admin(self) -> None:
        from engine.admin.app import create_app
        from engine.fds import ADMIN_RESERVE
        from engine.httpguard import HeadLimits
        from engine.serve import BindError, bind_socket, start_server

        d = self.settings.dashboard
        self.set_admin_credentials(self.settings)
        if not d.listeners.http.enable:
            return
        try:
            sock = bind_socket(d.listeners.http.bind, "dashboard.listeners.http.bind")
        except BindError as exc:
            raise NodeError(str(exc)) from None
        http = d.listeners.http
        limits = HeadLimits(timeout=float(http.idle_timeout), max_request_line=int(http.max_request_line_length),
                            max_header_size=int(http.max_header_size), fd_reserve=ADMIN_RESERVE)
        self.admin_server = await start_server(create_app(self), sock, limits=limits)
        self._admin_sock = sock
        log.info("admin API on http://%s/api/v5", d.listeners.http.bind)

    def set_admin_credentials(self, settings: Settings) -> None:
        from engine.admin.common import Credentials

        d = settings.dashboard
        self.admin_credentials = Credentials(d.default_username, d.default_password, d.api_keys)

    async def reload(self, settings: Settings):
        """Apply a new, validated config; raise ReloadError with every problem (nothing changes)."""
        from engine.reload import reload

        async with self._reload_lock:
            return await reload(self, settings)

    async def reload_from_files(self):
        """Re-read the config file (and the overlay) and apply it."""
        from engine.config import ConfigError, load_settings_in_background
        from engine.reload import ReloadError

        try:
            settings = await load_settings_in_background(self.config_path)
        except ConfigError as exc:
            raise ReloadError(exc.errors) from None
        return await self.reload(settings)

    async def stop(self) -> None:
        from engine.config.loader import stop_background_loader

        log.info("node %s stopping", self.settings.node.name)
        stop_background_loader()
        if self.admin_server is not None:
            await self.admin_server.shutdown()
            self.admin_server = None
            self._admin_sock.close()
        for listener in self.listeners.values():
            listener.stop_accepting()
        for listener in self.listeners.values():
            await listener.stop()
        self.listeners.clear()
        if self.rules is not None:
            self.rules.close()
        if self.resources is not None:
            await self.resources.stop()  # after the rules: what they queued is flushed
        if self.takeover is not None:
            self.takeover.close()
        if self.authenticator is not None:
            self.authenticator.close()
        if self.bridge:
            await self.bridge.stop()
        if self.broker:
            await self.broker.stop()
        self.loop_lag.stop()
        self._stopped.set()
        log.info("node %s stopped", self.settings.node.name)
