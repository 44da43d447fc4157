"""Prometheus metrics of a node, read from the live objects at scrape time.

Nothing here sits on the hot path: the gateway, the rules, the actions, the
bridge and the bus keep their own plain counters, and `NodeCollector` turns
them into metric families only when `/api/v5/prometheus/stats` is scraped
(so nothing is counted twice, and a scrape costs one pass over the live
objects). Each node gets its own `CollectorRegistry` (`node_registry`), so
several nodes in one process (tests) do not collide.

Every part may be absent (OCPP disabled, no rules, no bridge, before start or
after stop): its metrics are then left out, or read as zero where a zero is
the truth (a gateway with OCPP disabled has had no connections).

The process's memory, CPU time and file descriptors come from prometheus_client's standard
collectors (`process_*`, `python_gc_*`, `python_info`), which `node_registry` registers beside ours.
The event loop lag comes from `LoopLagMonitor` (engine/procstats.py), which the node starts and
stops with itself:

    self.loop_lag = LoopLagMonitor()   # in Node.__init__
    self.loop_lag.start()              # in Node.start (inside the running loop)
    self.loop_lag.stop()               # in Node.stop
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from engine.procstats import LoopLagMonitor

__all__ = ["CONTENT_TYPE", "LoopLagMonitor", "NodeCollector", "node_registry", "render"]

log = logging.getLogger("ocppgw.metrics")

PREFIX = "ocppgw_"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
KNOWN_PROTOCOLS = ("ocpp1.6", "ocpp2.0.1", "ocpp2.1")  # always listed, at 0 when none is connected
ACTION_DROP_REASONS = ("queue_full", "expired", "other")
BOUND_KEYS = ("gateway.ocpp.max_connectors_per_client", "gateway.ocpp.max_remembered_results", "alarm.size_limit")


# --- the collector -------------------------------------------------------------------------------


def _counter(name: str, doc: str, labels: Iterable[str] = ()) -> CounterMetricFamily:
    return CounterMetricFamily(PREFIX + name, doc, labels=list(labels))


def _gauge(name: str, doc: str, labels: Iterable[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, doc, labels=list(labels))


def _bridge_disk(bridge: Any) -> list[Metric]:
    """The bridge's durable queue (mqtt.buffer.mode = disk, or kept by a stop): zero when it has none."""
    journal = getattr(bridge, "journal", None)
    on_disk = _gauge("mqtt_bridge_disk_messages", "Messages of the MQTT bridge held on disk until the broker takes them.")
    on_disk.add_metric([], journal.items if journal is not None else 0)
    disk_bytes = _gauge("mqtt_bridge_disk_bytes", "Bytes of the messages the MQTT bridge holds on disk.")
    disk_bytes.add_metric([], journal.bytes if journal is not None else 0)
    families: list[Metric] = [on_disk, disk_bytes]
    for name, attr, doc in (
        ("mqtt_bridge_disk_commits", "commits", "Transactions (each fsynced with node.durable_sync = full) of the "
         "bridge's durable queue."),
        ("mqtt_bridge_redelivered", "redelivered", "Messages kept from the last run that the broker took after the "
         "start (some may have reached it before: at least once)."),
        ("mqtt_bridge_disk_write_errors", "write_errors", "Messages that could not be written to disk and went on "
         "from memory."),
    ):
        family = _counter(name, doc)
        family.add_metric([], getattr(journal, attr, 0) if journal is not None else 0)
        families.append(family)
    return families


class NodeCollector(Collector):
    """Every metric of one node, built from the node's live objects on each `collect()`."""

    def __init__(self, node: Any, lag: LoopLagMonitor | Callable[[], LoopLagMonitor | None] | None = None,
                 version: str | None = None) -> None:
        self.node = node
        self._lag = lag
        self.version = version
        self.section_errors: dict[str, int] = {}

    def describe(self) -> list[Metric]:
        return []  # nothing checked at registration: the families depend on what runs

    def lag_monitor(self) -> LoopLagMonitor | None:
        lag = self._lag
        if lag is None:
            lag = getattr(self.node, "loop_lag", None)
        elif not isinstance(lag, LoopLagMonitor):
            lag = lag()
        return lag if isinstance(lag, LoopLagMonitor) else None

    def collect(self) -> Iterator[Metric]:
        sections: list[tuple[str, Callable[[], list[Metric]]]] = [
            ("node", self._node), ("gateway", self._gateway), ("listeners", self._listeners),
            ("rules", self._rules), ("actions", self._actions), ("bridge", self._bridge),
            ("bus", self._bus), ("process", self._process), ("admission", self._admission),
            ("admin", self._admin),
            ("trace", self._trace),
            ("cluster", self._cluster),
            ("offline", self._offline),
            ("takeover", self._takeover),
            ("bounds", self._bounds),
        ]
        for name, section in sections:
            try:
                families = section()
            except Exception:
                # one part failing to read (a race with a reload, a bug) does not cost the whole scrape
                self.section_errors[name] = self.section_errors.get(name, 0) + 1
                log.exception("metrics: reading %s failed", name)
                continue
            yield from families
        errors = _counter("metrics_collect_errors", "Scrapes that could not read a part of the node, by part.",
                          ["section"])
        for name, count in sorted(self.section_errors.items()):
            errors.add_metric([name], count)
        yield errors

    # --- sections (each returns complete families) -----------------------------------------------

    def _node(self) -> list[Metric]:
        settings = getattr(self.node, "settings", None)
        name = getattr(getattr(settings, "node", None), "name", "") or ""
        info = InfoMetricFamily(PREFIX.rstrip("_"), "The node's name and the gateway's version.")
        info.add_metric([], {"node": name, "version": self.version or ""})
        return [info]

    def _gateway(self) -> list[Metric]:
        from engine.ocpp.context import GatewayMetrics
        from engine.ocpp.frames import TYPE_NAMES

        ctx = getattr(self.node, "ocpp", None)
        m = ctx.metrics if ctx is not None else GatewayMetrics()
        connections = _gauge("connections", "Charge points connected now, by OCPP version.", ["proto_ver"])
        for proto in sorted(set(KNOWN_PROTOCOLS) | set(m.by_proto)):
            connections.add_metric([proto], max(0, m.by_proto.get(proto, 0)))
        accepted = _counter("connections_accepted", "Charge point connections accepted since start.")
        accepted.add_metric([], m.connections_total)
        frames_in = _counter("frames_received", "WebSocket frames received from charge points.")
        frames_in.add_metric([], m.frames_in)
        frames_out = _counter("frames_sent", "WebSocket frames sent to charge points.")
        frames_out.add_metric([], m.frames_out)
        bytes_in = _counter("bytes_received", "Bytes (characters of text frames) received from charge points.")
        bytes_in.add_metric([], m.bytes_in)
        bytes_out = _counter("bytes_sent", "Bytes (characters of text frames) sent to charge points.")
        bytes_out.add_metric([], m.bytes_out)
        errors = _counter("callerrors_sent", "CALLERRORs the gateway itself answered to charge points, by error code.",
                          ["code"])
        for code, count in sorted(m.errors.items()):
            errors.add_metric([code], count)
        result_errors = _counter("callresulterrors_sent", "CALLRESULTERRORs (OCPP 2.1) the gateway itself sent to "
                                 "charge points about a CALLRESULT it could not process, by error code.", ["code"])
        for code, count in sorted(m.result_errors.items()):
            result_errors.add_metric([code], count)
        by_type_in = _counter("frames_received_by_type", "OCPP-J messages received from charge points, by "
                              "MessageTypeId (CALL .. SEND); frames that do not parse are not counted.", ["type"])
        by_type_out = _counter("frames_sent_by_type", "OCPP-J messages sent to charge points, by MessageTypeId.",
                               ["type"])
        for type_id, type_name in TYPE_NAMES.items():
            by_type_in.add_metric([type_name], m.received_by_type[type_id])
            by_type_out.add_metric([type_name], m.sent_by_type[type_id])
        drops = _counter("messages_dropped", "Messages dropped (not delivered), by reason.", ["reason"])
        for reason, count in sorted(m.drops.items()):
            drops.add_metric([reason], count)
        refused = _counter("handshakes_refused", "WebSocket handshakes refused, by reason code.", ["reason"])
        for reason, count in sorted(m.refused.items()):
            refused.add_metric([reason], count)
        queued = inflight = 0
        sessions = list(ctx.sessions.values()) if ctx is not None else []
        for session in sessions:
            info = session.info()
            queued += info.get("mqueue_len", 0)
            inflight += info.get("inflight_cnt", 0)
        queue = _gauge("downstream_queue_messages", "Downstream CALLs waiting for their turn, summed over charge points.")
        queue.add_metric([], queued)
        waiting = _gauge("downstream_inflight_messages", "Downstream CALLs sent and not answered yet, summed over charge points.")
        waiting.add_metric([], inflight)
        return [connections, accepted, frames_in, frames_out, bytes_in, bytes_out, errors, result_errors, by_type_in,
                by_type_out, drops, refused, queue, waiting]

    def _listeners(self) -> list[Metric]:
        current = _gauge("listener_connections", "Charge points connected now, by listener.", ["listener"])
        pending = _gauge("listener_pending_handshakes",
                         "Connections accepted and not upgraded (nor turned down) yet, by listener.", ["listener"])
        expiry = _gauge("listener_client_cert_soonest_expiry_timestamp_seconds", "The earliest not_after (unix "
                        "seconds) of the client certificates of the charge points connected now, by listener.",
                        ["listener"])
        for name, listener in sorted((getattr(self.node, "listeners", None) or {}).items()):
            current.add_metric([name], listener.app.connections)
            waiting = getattr(listener, "pending", None)
            if waiting is not None:
                pending.add_metric([name], waiting.count)
            certificates = getattr(listener.app, "certificates", None)
            soonest = certificates.soonest() if certificates is not None else None
            if soonest is not None:
                expiry.add_metric([name], soonest)
        admin = _counter("admin_http_refused", "Admin API connections closed or requests refused before they "
                         "reached the API (handshake_timeout, uri_too_long, headers_too_large).", ["reason"])
        server = getattr(self.node, "admin_server", None)
        refusals = getattr(getattr(getattr(server, "config", None), "http_protocol_class", None), "refusals", None)
        for reason, count in sorted((refusals or {}).items()):
            admin.add_metric([reason], count)
        return [current, pending, expiry, admin]

    def _admission(self) -> list[Metric]:
        """Bans of the per-client admission checks (engine/ocpp/admission.py): flapping_detect by
        charge point id, failed logins by source address. Their refusals are in handshakes_refused."""
        import time

        from engine.ocpp.admission import Guards

        ctx = getattr(self.node, "ocpp", None)
        g = ctx.guards if ctx is not None else Guards()
        now = time.monotonic()
        total = _counter("admission_bans", "Bans issued: flapping (a charge point id), failed_logins (a source "
                         "address).", ["kind"])
        active = _gauge("admission_bans_active", "Bans in force now.", ["kind"])
        for kind, table in (("flapping", g.flapping), ("failed_logins", g.login_failures)):
            total.add_metric([kind], table.bans_total)
            active.add_metric([kind], table.active(now))
        return [total, active]

    def _rules(self) -> list[Metric]:
        engine = getattr(self.node, "rules", None)
        rules = dict(engine.rules) if engine is not None else {}
        counters = [
            ("matched", "matched", "Messages and events that reached the rule."),
            ("passed", "passed", "Messages for which the rule produced output."),
            ("failed", "failed", "Messages for which the rule failed or produced no output."),
            ("failed_exception", "failed.exception", "Messages on which the rule's SQL raised an error."),
            ("failed_no_result", "failed.no_result", "Messages the rule's WHERE (or FOREACH) left without output."),
            ("actions", "actions.total", "Actions the rule ran."),
            ("actions_success", "actions.success", "Actions the rule ran without an error."),
            ("actions_failed", "actions.failed", "Actions that raised an error when the rule ran them."),
            ("actions_blocked", "actions.blocked", "Outputs whose later actions did not run: a buffer_mode = disk "
             "action before them could not write the request."),
        ]
        families = {name: _counter(f"rule_{name}", doc, ["rule"]) for name, _, doc in counters}
        enabled = _gauge("rule_enabled", "1 if the rule is enabled, 0 if not.", ["rule"])
        for rule_id, running in sorted(rules.items()):
            values = running.metrics.as_dict()
            for name, key, _ in counters:
                families[name].add_metric([rule_id], values.get(key, 0))
            enabled.add_metric([rule_id], 1 if getattr(running.settings, "enable", True) else 0)
        from rules.limits import REFUSED  # process-wide: rule functions have no node at hand

        refused = _counter("rule_function_limits", "Rule function calls and rule SQL refused by a limit "
                           "(jq_timeout, jq_memory, string_size, regex, sql_depth), this process.", ["limit"])
        for limit, count in sorted(REFUSED.items()):
            refused.add_metric([limit], count)
        return [*families.values(), enabled, refused]

    def _actions(self) -> list[Metric]:
        resources = getattr(self.node, "resources", None)
        actions = dict(resources.actions) if resources is not None else {}
        connectors = dict(resources.connectors) if resources is not None else {}
        counters = [
            ("matched", "Requests rules handed to the action."),
            ("success", "Requests the action delivered."),
            ("failed", "Requests the action failed to deliver (or to render)."),
            ("retried", "Delivery attempts the action retried."),
        ]
        families = {name: _counter(f"action_{name}", doc, ["action"]) for name, doc in counters}
        dropped = _counter("action_dropped", "Requests the action dropped, by reason.", ["action", "reason"])
        inflight = _gauge("action_inflight", "Requests being delivered now.", ["action"])
        queuing = _gauge("action_queuing", "Requests waiting in the action's buffer.", ["action"])
        queuing_bytes = _gauge("action_queuing_bytes", "Bytes (rendered, about) waiting in the action's buffer "
                               "(limit: resource_opts.max_buffer_bytes).", ["action"])
        disk = [  # the action's files (resource_opts.buffer_mode; a stop keeps what waits): zero without
            (_gauge("action_disk_messages", "Requests of the action held on disk until the target answers them.",
                    ["action"]), "disk_items"),
            (_gauge("action_disk_bytes", "Bytes of the requests the action holds on disk.", ["action"]), "disk_bytes"),
            (_counter("action_restored", "Requests read back from the action's file at the start.", ["action"]),
             "restored"),
            (_counter("action_redelivered", "Requests kept from the last run that the target took after the start "
                      "(some may have reached it before: at least once).", ["action"]), "redelivered"),
            (_counter("action_disk_write_errors", "Requests that could not be written to disk and went on from "
                      "memory.", ["action"]), "write_errors"),
        ]
        for action_id, action in sorted(actions.items()):
            values = action.metrics.as_dict()
            for name, _ in counters:
                families[name].add_metric([action_id], values.get(name, 0))
            for reason in ACTION_DROP_REASONS:
                dropped.add_metric([action_id, reason], values.get(f"dropped.{reason}", 0))
            inflight.add_metric([action_id], values.get("inflight", 0))
            queuing.add_metric([action_id], values.get("queuing", 0))
            queuing_bytes.add_metric([action_id], getattr(action, "queued_bytes", 0))
            for family, attr in disk:
                family.add_metric([action_id], getattr(action, attr, 0))
        up = _gauge("connector_up", "1 if the connector is connected, 0 if not.", ["connector"])
        for connector_id, connector in sorted(connectors.items()):
            up.add_metric([connector_id], 1 if connector.status == "connected" else 0)
        return [*families.values(), dropped, inflight, queuing, queuing_bytes, *(f for f, _ in disk), up]

    def _bridge(self) -> list[Metric]:
        bridge = getattr(self.node, "bridge", None)
        if bridge is None:
            return []
        connected = _gauge("mqtt_bridge_connected", "1 if the bridge is connected to the MQTT broker, 0 if not.")
        connected.add_metric([], 1 if bridge.connected else 0)
        buffered = _gauge("mqtt_bridge_buffered_messages", "Messages waiting for (or in flight to) the MQTT broker.")
        buffered.add_metric([], bridge.buffered)
        families: list[Metric] = [connected, buffered]
        for name, attr, doc in (
            ("mqtt_bridge_dropped", "dropped", "Messages dropped because the bridge's buffer was full."),
            ("mqtt_bridge_published", "published", "Messages published to the MQTT broker."),
            ("mqtt_bridge_refused", "refused", "Messages the MQTT broker refused (MQTT 5 reason code 0x80 or more)."),
            ("mqtt_bridge_received", "received", "Messages received from the MQTT broker."),
            ("mqtt_bridge_reconnects", "reconnects", "Times the bridge lost the MQTT broker and connected again."),
            ("mqtt_bridge_echo_suppressed", "echo_suppressed", "Our own messages the broker echoed back, ignored."),
            ("mqtt_bridge_malformed_received", "malformed_received", "Packets from the MQTT broker that break MQTT "
             "(such as malformed PUBLISH properties): each closes the connection (DISCONNECT 0x81/0x82/0x94)."),
        ):
            family = _counter(name, doc)
            family.add_metric([], getattr(bridge, attr, 0))
            families.append(family)
        families.extend(_bridge_disk(bridge))
        poison = _counter("mqtt_bridge_poison_dropped", "Messages dropped because the MQTT broker dropped the "
                          "connection over them (or would have: bigger than its maximum packet size), by reason.",
                          ["reason"])
        for reason, count in sorted(getattr(bridge, "poison_dropped", {}).items()):
            poison.add_metric([reason], count)
        families.append(poison)
        return families

    def _bus(self) -> list[Metric]:
        bus = getattr(self.node, "bus", None)
        if bus is None:
            return []
        published = _counter("bus_messages", "Messages published on the node's internal bus.")
        published.add_metric([], bus.published)
        errors = _counter("bus_handler_errors", "Bus subscribers that raised on a message.")
        errors.add_metric([], bus.handler_errors)
        subscriptions = _gauge("bus_subscriptions", "Subscriptions on the node's internal bus.")
        subscriptions.add_metric([], bus.subscription_count())
        return [published, errors, subscriptions]

    def _cluster(self) -> list[Metric]:
        """cluster.enable (engine/cluster/): nodes seen, messages ignored, takeovers in broker order."""
        cluster = getattr(self.node, "cluster", None)
        if cluster is None:
            return []
        claims = getattr(self.node, "claims", None)
        running = _gauge("cluster_nodes_running", "Nodes of the cluster that say they are running, this one included.")
        running.add_metric([], 1 + len(cluster.peers()))
        malformed = _counter("cluster_messages_malformed", "Messages under cluster.topic_prefix ignored as malformed.")
        malformed.add_metric([], cluster.malformed + (claims.malformed if claims is not None else 0))
        served = _counter("cluster_requests_served", "Admin requests other nodes carried here and this node answered.")
        served.add_metric([], cluster.requests_served)
        taken = _counter("cluster_takeovers", "Sessions closed because the charge point connected to another node "
                         "(its claim came later in broker order).")
        taken.add_metric([], claims.taken_over if claims is not None else 0)
        too_large = _counter("cluster_records_too_large", "Config overlay / user store records refused (not taken, "
                             "not published): over cluster.max_record_size, by kind.", ["kind"])
        for kind, count in sorted(getattr(cluster, "records_too_large", {}).items()):
            too_large.add_metric([kind], count)
        return [running, malformed, served, taken, too_large]

    def _offline(self) -> list[Metric]:
        """The offline command queue (engine/ocpp/offline.py): what waits, what went out, what was dropped."""
        offline = getattr(self.node, "offline", None)
        if offline is None:
            return []
        queue = offline.queue
        queued = _gauge("offline_queued", "CALLs in this node's offline queue, for charge points connected nowhere.")
        queued.add_metric([], queue.store.total)
        delivered = _counter("offline_delivered", "CALLs from the offline queue handed to a reconnected charge point.")
        delivered.add_metric([], queue.delivered)
        dropped = _counter("offline_dropped", "Commands for charge points connected nowhere dropped, by reason "
                           "(not_connected, queue_full, overloaded, expired, too_large, invalid_payload, invalid_clientid, write_failed, deleted).", ["reason"])
        for reason, count in sorted(queue.dropped.items()):
            dropped.add_metric([reason], count)
        return [queued, delivered, dropped]

    def _takeover(self) -> list[Metric]:
        """Takeover claims across nodes (engine/ocpp/takeover.py), with or without cluster.enable."""
        claims = getattr(self.node, "claims", None)
        if claims is None:
            return []
        taken = _counter("takeovers", "Sessions closed because the charge point connected to another node "
                         "(its claim came later in broker order).")
        taken.add_metric([], claims.taken_over)
        unconfirmed = _counter("takeover_claims_unconfirmed", "New connections that took commands without "
                               "their takeover claim back (link down, or not back within cluster.request_timeout).")
        unconfirmed.add_metric([], claims.unconfirmed)
        malformed = _counter("takeover_claims_malformed", "Takeover claims ignored as malformed.")
        malformed.add_metric([], claims.malformed)
        return [taken, unconfirmed, malformed]

    def _trace(self) -> list[Metric]:
        """The frame trace (engine/ocpp/trace.py): recordings, live streams and what they refused."""
        ctx = getattr(self.node, "ocpp", None)
        tracer = getattr(ctx, "tracer", None)
        if tracer is None:
            return []
        st = tracer.stats
        running = _gauge("traces_running", "Frame traces recording now.")
        running.add_metric([], sum(1 for r in tracer.recordings.values() if r.status() == "running"))
        watchers = _gauge("trace_watchers", "Live frame streams open now.")
        watchers.add_metric([], tracer.watcher_count)
        refused = _counter("trace_watchers_refused", "Live frame streams refused: dashboard.max_trace_watchers reached.")
        refused.add_metric([], st.watchers_refused)
        lost = _counter("trace_frames_lost", "Frames a slow live-stream reader lost (dashboard.trace_watcher_queue).")
        lost.add_metric([], st.frames_lost)
        capped = _counter("traces_stopped_by_size", "Frame traces stopped by trace.max_file_size.")
        capped.add_metric([], st.stopped_by_size)
        return [running, watchers, refused, lost, capped]

    def _admin(self) -> list[Metric]:
        stats = getattr(self.node, "admin_stats", None)  # set by the admin app (engine.admin.lockout.AdminStats)
        failures = _counter("admin_login_failures", "Admin API logins with wrong credentials.")
        lockouts = _counter("admin_login_lockouts", "Source addresses locked out of the admin API after failed logins.")
        refused = _counter("admin_requests_refused", "Admin API requests refused before they were served, by reason.",
                           ["reason"])
        if stats is not None:
            failures.add_metric([], stats.login_failures)
            lockouts.add_metric([], stats.lockouts)
            for reason, count in sorted(stats.refused.items()):
                refused.add_metric([reason], count)
        return [failures, lockouts, refused]

    def _bounds(self) -> list[Metric]:
        """What the fixed bounds of config did not keep, by the bound's key (each listed, at 0 too)."""
        ctx = getattr(self.node, "ocpp", None)
        counts = dict.fromkeys(BOUND_KEYS, 0)
        if ctx is not None:
            counts.update(ctx.metrics.bounded)
        alarms = getattr(getattr(self.node, "monitor", None), "alarms", None)
        if alarms is not None:
            counts["alarm.size_limit"] = alarms.dropped
        dropped = _counter("bound_dropped", "Entries not kept because a configured bound was reached, by its key: "
                           "connector statuses of a further connector (gateway.ocpp.max_connectors_per_client), "
                           "OCPP 2.1 CALLRESULTs forgotten (gateway.ocpp.max_remembered_results), deactivated "
                           "alarms pushed out (alarm.size_limit).", ["key"])
        for key, count in sorted(counts.items()):
            dropped.add_metric([key], count)
        return [dropped]

    def _process(self) -> list[Metric]:
        # memory, CPU and file descriptors: prometheus_client's standard process_* collector
        # (node_registry); here what it does not offer
        families: list[Metric] = []
        frozen = _gauge("gc_frozen_objects", "Objects the garbage collector's full passes skip (see engine/gctune.py).")
        frozen.add_metric([], gc.get_freeze_count())
        families.append(frozen)
        from engine import fds as fdlimits

        accept_errors = _counter("accept_errors", "Connections that could not be accepted, or were closed as they "
                                 "were because they took one of the last file descriptors (fd_reserve), by reason.",
                                 ["reason"])
        for reason, count in sorted(fdlimits.stats.accept_errors.items()):
            accept_errors.add_metric([reason], count)
        families.append(accept_errors)
        monitor = self.lag_monitor()
        if monitor is not None:
            last = _gauge("event_loop_lag_seconds", "How late the event loop ran its last lag probe.")
            last.add_metric([], monitor.last)
            peak = _gauge("event_loop_lag_max_seconds", "The largest event loop lag seen since start.")
            peak.add_metric([], monitor.max)
            families += [last, peak]
        return families


def node_registry(node: Any, lag: LoopLagMonitor | Callable[[], LoopLagMonitor | None] | None = None,
                  version: str | None = None) -> CollectorRegistry:
    """A registry of its own holding the node's collector (`lag` defaults to `node.loop_lag`) and
    prometheus_client's standard ones: process_* (memory, CPU, file descriptors, start time; read
    from /proc, so Linux only), python_info, python_gc_*."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(node, lag, version))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The registry in the Prometheus text format (0.0.4)."""
    return generate_latest(registry)
