"""The node: one object that builds every part from the settings, runs them, swaps them on a
reload, and stops them. The builders are `engine.parts` (shared with the reload); the reload's
steps that need no node are `engine.reload`.

Start order follows the data path backwards (broker, bridge, then the parts
that publish), so nothing publishes into a part that is not there yet; stop
order is the reverse, so listeners stop accepting first and the bridge
flushes last.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING

from connectors.mqtt import EmbeddedBroker, MqttBridge
from connectors.mqtt.bridge import BridgeOptions
from connectors.mqtt.setup import properties_dropped
from connectors.registry import ResourceConfigError, Resources
from engine.bus import Bus
from engine.config.schema import AuthenticationSettings, Settings
from engine.durable import DurableError, queue_path
from engine.metrics import LoopLagMonitor
from engine.monitor import Monitor
from engine.ocpp.context import GatewayContext
from engine.ocpp.listener import ListenerError, OcppListener
from engine.ocpp.takeover import ClaimOrder
from engine.parts import (  # NodeError is imported from here too (CLI, tests)
    NodeError,
    admin_credentials,
    authenticator_for,
    bridge_options,
    claims_filter,
    enabled_listeners,
    open_beyond_loopback,
    open_user_store,
    schema_registry,
)
from engine.reload import ReloadError, ReloadReport, apply_ocpp, note_changes, plan_reload, restart_only
from rules.runtime import RuleEngine, RuleLoadError

if TYPE_CHECKING:
    from uvicorn import Server

    from engine.admin.credentials import Credentials
    from engine.admin.lockout import AdminStats
    from engine.auth import Authenticator, UserStore
    from engine.cluster import ClusterMember
    from engine.cluster.claim_link import ClaimLink
    from engine.ocpp.offline_setup import OfflineCommands

log = logging.getLogger("ocppgw.node")


class Node:
    def __init__(self, settings: Settings, config_path: str | None = None) -> None:
        self.settings = settings
        self.config_path = config_path  # what a reload from the files reads
        self.bus = Bus()
        self.broker: EmbeddedBroker | None = None
        self.bridge: MqttBridge | None = None
        self.ocpp: GatewayContext | None = None
        self.listeners: dict[str, OcppListener] = {}
        self.authenticator: Authenticator | None = None
        self.takeover: ClaimLink | None = None  # claims on gateway.ocpp.takeover_topic (no cluster.enable)
        self.claims: ClaimOrder | None = None  # takeover in broker order
        self.cluster: ClusterMember | None = None  # cluster.enable: the other nodes on the broker
        self.offline: OfflineCommands | None = None  # commands for charge points connected nowhere
        self.rules: RuleEngine | None = None
        self.resources: Resources | None = None
        self.admin_server: Server | None = None
        self._admin_sock: socket.socket | None = None
        self.admin_credentials: Credentials | None = None
        self.admin_stats: AdminStats | None = None  # set by the admin app, read by the metrics collector
        self.user_store: UserStore | None = None
        self._stopped = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self.started = False
        self.started_at = 0.0
        self.loop_lag = LoopLagMonitor()  # read by the metrics collector
        self.monitor = Monitor(self)  # samples every 10 s and the alarms, read by the admin API

    async def start(self) -> None:
        s = self.settings
        self.loop_lag.start()
        try:
            self.resources = Resources(s)
        except ResourceConfigError as exc:
            raise NodeError("connectors and actions do not load:\n  " + "\n  ".join(exc.errors)) from None
        self.bus.properties_dropped = properties_dropped(s.mqtt)  # republish warns at rule load
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
        options = bridge_options(s)
        options.journal_path = queue_path(s.node.data_dir, s.node.name, "mqtt_bridge")
        options.durable_sync = s.node.durable_sync
        try:
            self.bridge = MqttBridge(options, self.bus.publish)
        except DurableError as exc:
            raise NodeError(f"mqtt.buffer: {exc}") from None
        self.bus.watch_remote(self.bridge)
        for topic in ["#"] + [t for t in options.forward_topics if t.startswith("$")]:
            self.bus.subscribe(topic, self.bridge.forward, name="mqtt-bridge")
        await self.bridge.start()
        await self.resources.start()
        self.rules.install(compiled)
        if self.broker:
            # the broker is ours and up: wait for the bridge so `run` is ready when it says so
            await self.bridge.wait_connected(s.mqtt.embedded.start_timeout)
        self.user_store = open_user_store(s)
        self._join_cluster(options)
        await self._start_ocpp()
        if self.cluster is not None:
            from engine.admin.nodes_api import serve_cluster

            serve_cluster(self)  # the requests other nodes' admin APIs send here
            from engine.admin.config_api import join_config_sync

            join_config_sync(self)  # the admin API's overlay is the cluster's (engine/cluster/config_sync.py)
            from engine.admin.users_sync import join_users_sync

            join_users_sync(self)  # so is the built-in user store
            await self.cluster.start()
        await self._start_admin()
        self.started = True
        self.started_at = time.time()
        self.monitor.start()
        log.info("node %s started", s.node.name)

    def _join_cluster(self, options: BridgeOptions) -> None:
        c = self.settings.cluster
        if not c.enable:
            return
        from engine.cluster import ClusterMember, check_node_name

        problem = check_node_name(self.settings.node.name)
        if problem:
            raise NodeError(problem)
        self.cluster = ClusterMember(options, self.settings.node.name, c.topic_prefix, float(c.keepalive),
                                     float(c.request_timeout))

    async def _start_ocpp(self) -> None:
        ocpp = self.settings.gateway.ocpp
        if not ocpp.enable:
            return
        self.ocpp = GatewayContext(ocpp, self.bus, self.settings.node.name, schema_registry(self.settings))
        # broker order decides, not clocks: claims go out on a connection of their own and come back
        # through the bridge (engine/parts.py subscribes it), in order with the commands
        cluster, wait = self.cluster, float(self.settings.cluster.request_timeout)
        heard = claims_filter(self.settings)
        ready = self.bridge.subscriptions_confirmed if self.bridge is not None else None
        if cluster is not None and heard:
            self.claims = ClaimOrder(self.ocpp, lambda cid, payload: cluster.publish("claims", payload), wait, heard,
                                     ready)
        elif heard:
            from engine.cluster.claim_link import ClaimLink

            assert self.bridge is not None
            self.takeover = link = ClaimLink(self.bridge.options, ocpp.takeover_topic)
            self.claims = ClaimOrder(self.ocpp, link.send, wait, heard, ready)
            await link.start(timeout=5.0)  # not connected by then: sessions take commands at once
        self.ocpp.claims = self.claims  # new sessions take commands once their claim is back
        from engine.ocpp.offline_setup import start_offline

        self.offline = start_offline(self.settings, self.ocpp, self.cluster)
        authenticator = self._apply_authentication(ocpp.authentication)
        for kind, name, listener_settings in enabled_listeners(ocpp).values():
            listener = OcppListener(self.ocpp, name, kind, listener_settings, authenticator)
            try:
                await listener.start()
            except ListenerError as exc:
                raise NodeError(str(exc)) from None
            self.listeners[listener.app.full_name] = listener
        self._warn_open_listeners(set())

    def _open_listeners(self) -> set[tuple[str, str]]:
        """(name, bind) of each running listener that lets anybody on the network in without a login."""
        return {(full, str(listener.settings.bind)) for full, listener in self.listeners.items()
                if open_beyond_loopback(listener.settings, self.authenticator)}

    def _warn_open_listeners(self, before: set[tuple[str, str]]) -> None:
        """One WARNING per listener that is open now and was not `before` (at start: every open one;
        after a reload or an API change: those it opened)."""
        for full, bind in sorted(self._open_listeners() - before):
            log.warning("OCPP listener %s on %s is reachable beyond loopback and lets charge points in "
                        "without a login: set gateway.ocpp.authentication (and keep the listener's "
                        "enable_authn = true) or bind it to 127.0.0.1", full, bind)

    def _apply_authentication(self, auth: AuthenticationSettings) -> Authenticator | None:
        """The authenticator for these settings, and the admission guards' flapping_detect (start and
        reload both come through here)."""
        if self.ocpp is not None:
            self.ocpp.guards.apply(self.settings.flapping_detect)
        self.authenticator = authenticator_for(auth, self.authenticator, self.user_store)
        return self.authenticator

    async def _start_admin(self) -> None:
        from engine.admin.app import create_app
        from engine.fds import ADMIN_RESERVE
        from engine.httpguard import HeadLimits
        from engine.serve import BindError, bind_socket, start_server

        d = self.settings.dashboard
        self.admin_credentials = admin_credentials(self.settings)
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
        log.info("dashboard on http://%s/ (admin API: /api/v5)", d.listeners.http.bind)

    async def reload(self, settings: Settings) -> ReloadReport:
        """Apply a new, validated config; raise ReloadError with every problem (nothing changes)."""
        async with self._reload_lock:
            return await self._reload(settings)

    async def _reload(self, new: Settings) -> ReloadReport:
        old = self.settings
        assert self.rules is not None and self.resources is not None  # a reload comes after the start
        plan = plan_reload(new, self.bus, self.resources, self.rules,
                           self.ocpp.registry if self.ocpp is not None else None)
        report = ReloadReport(needs_restart=restart_only(old, new))
        await plan.resources.start_new(self.resources)
        self.rules.external = plan.resources.resolve
        self.rules.configure(new.rule_engine)
        self.rules.install(plan.compiled)  # no await between this and the OCPP settings below
        self.resources = plan.resources
        if self.ocpp is not None:
            self.ocpp.apply(new.gateway.ocpp, plan.registry)
        plan.hand_over_queues()
        note_changes(old, new, report)
        self.admin_credentials = admin_credentials(new)
        if self.bridge is not None:
            options = bridge_options(new)  # forward filters name the mountpoints, which may have changed
            self.bridge.set_forward(options.forward_topics, options.forward_exclude)
        self.settings = new
        if self.ocpp is not None:
            was_open = self._open_listeners()
            authenticator = self._apply_authentication(new.gateway.ocpp.authentication)
            await apply_ocpp(self.ocpp, self.listeners, authenticator, old, new, report)
            self._warn_open_listeners(was_open)
        await plan.finish(report)
        return report

    async def reload_from_files(self) -> ReloadReport:
        """Re-read the config file (and the overlay) and apply it."""
        from engine.config import ConfigError, load_settings_in_background

        try:
            settings = await load_settings_in_background(self.config_path)
        except ConfigError as exc:
            raise ReloadError(exc.errors) from None
        return await self.reload(settings)

    async def stop(self) -> None:
        from engine.config.background import stop_background_loader

        log.info("node %s stopping", self.settings.node.name)
        stop_background_loader()
        await self.monitor.stop()
        if self.admin_server is not None:
            await self.admin_server.shutdown()
            self.admin_server = None
        if self._admin_sock is not None:
            self._admin_sock.close()
            self._admin_sock = None
        if self.cluster is not None:
            await self.cluster.stop()  # the others see it stopped now, not at its keepalive
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
            await self.takeover.stop()
        if self.claims is not None:
            self.claims.close()
        if self.offline is not None:
            await self.offline.stop()
        if self.authenticator is not None:
            self.authenticator.close()
        if self.bridge:
            await self.bridge.stop()
        if self.broker:
            await self.broker.stop()
        self.loop_lag.stop()
        self._stopped.set()
        log.info("node %s stopped", self.settings.node.name)
