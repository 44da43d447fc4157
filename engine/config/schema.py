"""The typed settings the gateway runs on, one frozen dataclass per config object.

Field names are the HOCON keys. Every field has a default, so an empty file is
a working config; `REQUIRED` marks the few keys an entry cannot do without.
Constraints travel in `Annotated[...]` metadata and are checked by the loader.

Over 400 lines on purpose: it is the whole config tree in one file, in the order of
conf/gateway.conf, so a key is found in one place (split, a reader would hunt).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Literal

from engine.config.types import Bind, CommaSeparated, Count, Duration, FrameSize, Size


@dataclass(frozen=True)
class Range:
    """Inclusive bounds for a number."""

    low: float | None = None
    high: float | None = None


@dataclass(frozen=True)
class NoEffect:
    """Marks a key EMQX's schema has that this gateway accepts and ignores: the loader takes any
    value for it and warns once per load, naming the key and `why` (docs/migrating-from-emqx.md)."""

    why: str = ""


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()

Port = Annotated[int, Range(1, 65535)]
NonNegative = Annotated[int, Range(0, None)]
Positive = Annotated[int, Range(1, None)]
Qos = Annotated[int, Range(0, 2)]
LogLevel = Literal["debug", "info", "notice", "warning", "error", "critical"]
TlsVersion = Literal["tlsv1.3", "tlsv1.2"]
Subprotocol = Literal["ocpp1.6", "ocpp2.0.1", "ocpp2.1"]


def _default_node_name() -> str:
    return f"ocppgw@{socket.gethostname()}"


@dataclass(frozen=True)
class NodeSettings:
    name: str = field(default_factory=_default_node_name)
    data_dir: str = "data"
    # processes sharing every port (SO_REUSEPORT), each a node named <name>-<i>: a whole number, or "auto" (cores)
    workers: str = "1"
    # durable buffers' fsync: full = every commit (survives power loss), normal = at checkpoints (survives a crash)
    durable_sync: Literal["full", "normal"] = "full"


@dataclass(frozen=True)
class LogSettings:
    level: LogLevel = "info"
    format: Literal["text", "json"] = "text"


# --- MQTT -----------------------------------------------------------------------


@dataclass(frozen=True)
class EmbeddedBrokerSettings:
    bind: Bind = Bind("127.0.0.1", 1883)
    start_timeout: Duration = Duration(10)


@dataclass(frozen=True)
class MqttSslSettings:
    enable: bool = False
    cacertfile: str = ""
    certfile: str = ""
    keyfile: str = ""
    verify: Literal["verify_peer", "verify_none"] = "verify_peer"
    versions: list[TlsVersion] = field(default_factory=lambda: ["tlsv1.3", "tlsv1.2"])


@dataclass(frozen=True)
class MqttBufferSettings:
    max_messages: Positive = 100_000
    mode: Literal["memory", "disk"] = "memory"  # disk: on disk (node.data_dir) before it is sent, until PUBACK
    max_buffer_bytes: Size = Size(256 * 1024 * 1024)  # payload + topic bytes, in memory or on disk
    overflow: Literal["drop_oldest", "drop_newest"] = "drop_oldest"


@dataclass(frozen=True)
class MqttReconnectSettings:
    initial_interval: Duration = Duration(1)
    max_interval: Duration = Duration(30)


@dataclass(frozen=True)
class MqttForwardSettings:
    # `${mountpoint}` stands for every mountpoint in use (gateway and listeners).
    topics: list[str] = field(default_factory=lambda: ["${mountpoint}#"])
    exclude: list[str] = field(default_factory=lambda: ["$events/#"])


@dataclass(frozen=True)
class MqttSettings:
    server: str = "embedded"
    embedded: EmbeddedBrokerSettings = field(default_factory=EmbeddedBrokerSettings)
    username: str = ""
    password: str = ""
    client_id: str = ""  # empty: node.name
    proto_ver: Literal["v5", "v4"] = "v5"
    qos: Qos = 1
    keepalive: Duration = Duration(60)
    max_inflight: Positive = 1000
    # a message is dropped (poison) after the broker dropped the connection this many times while it was
    # alone in flight (connectors/mqtt/poison.py); 0: only when an MQTT 5 broker's DISCONNECT names it
    max_disconnects_per_message: NonNegative = 3
    ssl: MqttSslSettings = field(default_factory=MqttSslSettings)
    buffer: MqttBufferSettings = field(default_factory=MqttBufferSettings)
    reconnect: MqttReconnectSettings = field(default_factory=MqttReconnectSettings)
    forward: MqttForwardSettings = field(default_factory=MqttForwardSettings)
    subscriptions: list[str] = field(default_factory=list)


# --- OCPP gateway ----------------------------------------------------------------


@dataclass(frozen=True)
class UpstreamSettings:
    topic: str = "cp/${cid}"
    reply_topic: str = "cp/${cid}/Reply"
    error_topic: str = "cp/${cid}/Reply"
    topic_override_mapping: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class OfflineQueueSettings:
    # CALLs for a charge point connected to no node, kept on disk until it reconnects (engine/ocpp/offline.py)
    enable: bool = False
    max_len: Positive = 10  # per charge point; a newer CALL beyond it is dropped (queue_full)
    ttl: Annotated[Duration, Range(1, None)] = Duration(3600)  # older: dropped (expired)
    boot_wait: Duration = Duration(5)  # after connecting: sent on the accepted BootNotification or this
    max_payload_size: Annotated[Size, Range(64, None)] = Size(64 * 1024)  # larger: dropped (too_large)
    max_clients: Positive = 10000  # charge points with something queued; a new one beyond: queue_full
    # commands waiting for the other nodes to say whether they hold the charge point; beyond: overloaded
    max_pending: Positive = 1000


@dataclass(frozen=True)
class DnstreamSettings:
    topic: str = "cs/${cid}"
    max_mqueue_len: Positive = 100
    awaiting_timeout: Duration = Duration(30)
    offline_queue: OfflineQueueSettings = field(default_factory=OfflineQueueSettings)


@dataclass(frozen=True)
class PasswordHashSettings:
    name: Literal["sha256", "sha512", "pbkdf2", "bcrypt"] = "sha256"
    salt_position: Literal["prefix", "suffix"] = "suffix"
    iterations: Positive = 4096  # pbkdf2
    mac_fun: Literal["sha256", "sha512"] = "sha256"  # pbkdf2
    salt_rounds: Annotated[int, Range(4, 31)] = 10  # bcrypt
    dk_length: Annotated[Any, NoEffect("hashes are made here, pbkdf2's key as long as its digest")] = None  # pbkdf2


@dataclass(frozen=True)
class AuthenticationSettings:
    # A written `authentication` block is on unless it says `enable = false` (as in EMQX); without
    # the block there is no authenticator (OcppSettings.authentication's default is off).
    enable: bool = True
    backend: Literal["built_in_database"] = "built_in_database"
    mechanism: Literal["password_based"] = "password_based"
    password_hash_algorithm: PasswordHashSettings = field(default_factory=PasswordHashSettings)
    allow_username_mismatch: bool = False
    # EMQX's user_id_type: which login names the user: the Basic username, or the charge point id
    user_id_type: Literal["username", "clientid"] = "username"
    # Failed logins from one source address (IPv6: one /64): more than this within
    # failed_login_window_time refuses that address's handshakes for failed_login_ban_time. 0: off.
    max_failed_logins_per_source: NonNegative = 30
    failed_login_window_time: Duration = Duration(60)
    failed_login_ban_time: Duration = Duration(60)
    # EMQX's built_in_database bootstrap (users imported from a file at start): add users through
    # the users API instead
    bootstrap_file: Annotated[Any, NoEffect("add users with POST .../authentication/users")] = ""
    bootstrap_type: Annotated[Any, NoEffect("add users with POST .../authentication/users")] = "plain"
    precondition: Annotated[Any, NoEffect("the one authenticator applies to every charge point")] = ""


@dataclass(frozen=True)
class WebsocketSettings:
    path: str = "/ocpp"
    # a list, or EMQX's string "ocpp1.6, ocpp2.0"; "ocpp2.0" (EMQX's name) is read as ocpp2.0.1
    supported_subprotocols: Annotated[list[Subprotocol], CommaSeparated((("ocpp2.0", "ocpp2.0.1"),))] = field(
        default_factory=lambda: ["ocpp1.6", "ocpp2.0.1", "ocpp2.1"]
    )
    fail_if_no_subprotocol: bool = True
    ping_interval: Duration = Duration(0)  # 0s: off
    max_frame_size: FrameSize = FrameSize(2 * 1024 * 1024)  # infinity: 16MB (types.INFINITE_FRAME_SIZE)
    compress: bool = False  # permessage-deflate when the client offers it (EMQX's websocket.compress)
    # the upgrade must be done this long after the TCP accept (EMQX's websocket.idle_timeout); 0s: no limit
    idle_timeout: Duration = Duration(15)
    max_request_line_length: Annotated[Size, Range(256, None)] = Size(8 * 1024)  # longer: 414, unparsed
    max_header_size: Annotated[Size, Range(1024, None)] = Size(16 * 1024)  # all headers together; larger: 431
    # the Origin header of an upgrade must be one of check_origins (403, origin_not_allowed)
    check_origin_enable: bool = False
    allow_origin_absence: bool = True
    check_origins: Annotated[list[str], CommaSeparated()] = field(
        default_factory=lambda: ["http://localhost:18083", "http://127.0.0.1:18083"]
    )
    piggyback: Annotated[Any, NoEffect("OCPP-J sends one message per WebSocket frame")] = "single"
    validate_utf8: Annotated[Any, NoEffect("text frames are always checked: invalid UTF-8 closes with 1007")] = True
    deflate_opts: Annotated[Any, NoEffect("permessage-deflate (compress) uses its defaults")] = None
    proxy_address_header: Annotated[Any, NoEffect(
        "a forwarded-for header is spoofable by any client; use proxy_protocol")] = "x-forwarded-for"
    proxy_port_header: Annotated[Any, NoEffect(
        "a forwarded-port header is spoofable by any client; use proxy_protocol")] = "x-forwarded-port"


@dataclass(frozen=True)
class TcpOptions:
    """EMQX's tcp_options of a listener."""

    backlog: Positive = 4096  # the accept queue (EMQX's default: 1024); a change needs a restart
    nodelay: bool = True
    recbuf: Size | None = None  # SO_RCVBUF of each connection; None: the kernel's
    sndbuf: Size | None = None  # SO_SNDBUF of each connection; None: the kernel's
    reuseaddr: bool = True  # SO_REUSEADDR on the listening socket; a change needs a restart
    keepalive: str = "none"  # TCP keepalive: "none" or "Idle,Interval,Probes" in seconds
    active_n: Annotated[Any, NoEffect("an Erlang socket option")] = 100
    send_timeout: Annotated[Any, NoEffect("a stalled peer's frames wait in its bounded queue instead")] = "15s"
    send_timeout_close: Annotated[Any, NoEffect("see send_timeout")] = True
    buffer: Annotated[Any, NoEffect("an Erlang driver buffer; see recbuf and sndbuf")] = "4KB"
    high_watermark: Annotated[Any, NoEffect("an Erlang port busy limit")] = "1MB"
    nolinger: Annotated[Any, NoEffect("connections close with the default linger")] = False
    tune_buffer: Annotated[Any, NoEffect("an Erlang driver buffer option")] = False


@dataclass(frozen=True)
class SslOptions:
    certfile: str = ""
    keyfile: str = ""
    cacertfile: str = ""
    password: str = ""
    verify: Literal["verify_peer", "verify_none"] = "verify_none"
    fail_if_no_peer_cert: bool = False
    versions: list[TlsVersion] = field(default_factory=lambda: ["tlsv1.3", "tlsv1.2"])
    cn_must_match_cid: bool = False
    # OpenSSL names of the TLS 1.2 suites, a list or a comma string; [] = OpenSSL's defaults. TLS 1.3
    # names (TLS_AES_...) are accepted, but Python cannot narrow TLS 1.3 suites: all of them stay on.
    ciphers: Annotated[list[str], CommaSeparated()] = field(default_factory=list)
    handshake_timeout: Duration = Duration(15)  # the TLS handshake must be done this long after the accept
    reuse_sessions: bool = True  # false: no session tickets
    honor_cipher_order: bool = True
    client_renegotiation: bool = True  # false: a client's TLS 1.2 renegotiation is refused
    dhfile: str = ""  # DH parameters (PEM) for the DHE suites
    # $events/certificate_expiring when a connected charge point's client certificate expires within this
    cert_expiry_warning: Duration = Duration(30 * 86_400)
    depth: Annotated[Any, NoEffect("Python's ssl cannot set the verify depth: OpenSSL's limit of 100 applies")] = 10
    secure_renegotiate: Annotated[Any, NoEffect("OpenSSL always renegotiates securely (RFC 5746)")] = True
    log_level: Annotated[Any, NoEffect("TLS errors are logged at the gateway's log.level")] = "notice"
    hibernate_after: Annotated[Any, NoEffect("an Erlang process option")] = "5s"
    gc_after_handshake: Annotated[Any, NoEffect("an Erlang process option")] = False
    user_lookup_fun: Annotated[Any, NoEffect("no TLS-PSK here")] = None
    cacerts: Annotated[Any, NoEffect("the system CA store is not used: set cacertfile")] = False
    ocsp: Annotated[Any, NoEffect("no OCSP stapling here")] = None
    enable_crl_check: Annotated[Any, NoEffect("no CRL checking here: revoke by removing the CA or the "
                                              "charge point's login")] = False
    partial_chain: Annotated[Any, NoEffect("chains must reach a certificate of cacertfile")] = False
    verify_peer_ext_key_usage: Annotated[Any, NoEffect("the client certificate's extended key usage is "
                                                       "not checked")] = None


@dataclass(frozen=True)
class ListenerSettings:
    enable: bool = True
    bind: Bind = Bind("0.0.0.0", 33033)
    mountpoint: str | None = None  # None: the gateway's mountpoint
    max_connections: Annotated[Count, Range(1, None)] = Count(1_024_000)  # or infinity
    max_conn_rate: Positive = 1000
    # New connections per second from one source address (IPv6: one /64) and for one charge point
    # id, checked before the listener-wide max_conn_rate; 0: off
    max_conn_rate_per_source: NonNegative = 100
    max_conn_rate_per_clientid: NonNegative = 5
    # Peers the per-source limits (rate, failed logins) do not apply to: a reverse proxy on the same
    # host, the simulator. Addresses or networks.
    per_source_exempt: list[str] = field(default_factory=lambda: ["127.0.0.0/8", "::1/128"])
    enable_authn: bool = True
    # None: gateway.ocpp.message_format_checking
    message_format_checking: Literal["all", "upstream_only", "dnstream_only", "disable"] | None = None
    websocket: WebsocketSettings = field(default_factory=WebsocketSettings)
    # EMQX's access_rules: "allow all", "deny 10.0.0.0/8", "allow 192.168.1.7", ...; the first rule
    # matching the client's address decides, none matching: allowed. Refused at accept (access_denied).
    access_rules: list[str] = field(default_factory=list)
    # a PROXY protocol header (v1 or v2, as HAProxy's send-proxy) must open each connection: its source
    # address is the client's; without one within proxy_protocol_timeout the connection is closed
    proxy_protocol: bool = False
    proxy_protocol_timeout: Duration = Duration(3)
    tcp_options: TcpOptions = field(default_factory=TcpOptions)
    acceptors: Annotated[Any, NoEffect("one event loop accepts all connections")] = 16
    authentication: Annotated[Any, NoEffect(
        "no per-listener authenticator: gateway.ocpp.authentication applies; enable_authn = false turns it off")] = None
    zone: Annotated[Any, NoEffect("no zones here")] = None
    limiter: Annotated[Any, NoEffect("use max_conn_rate and max_conn_rate_per_source")] = None


@dataclass(frozen=True)
class WssListenerSettings(ListenerSettings):
    bind: Bind = Bind("0.0.0.0", 33034)
    ssl_options: SslOptions = field(default_factory=SslOptions)


@dataclass(frozen=True)
class ListenersSettings:
    ws: dict[str, ListenerSettings] = field(default_factory=lambda: {"default": ListenerSettings()})
    wss: dict[str, WssListenerSettings] = field(default_factory=dict)


@dataclass(frozen=True)
class ClientinfoOverride:
    """EMQX's gateway clientinfo_override: templates that rewrite the client's username, password
    and clientid (the whole block has no effect here)."""

    username: str = ""
    password: str = ""
    clientid: str = ""


@dataclass(frozen=True)
class OcppSettings:
    enable: bool = True
    mountpoint: str = "ocpp/"
    default_heartbeat_interval: Duration = Duration(60)
    heartbeat_checking_times_backoff: Positive = 1
    message_format_checking: Literal["all", "upstream_only", "dnstream_only", "disable"] = "disable"
    json_schema_dir: str = ""  # empty: the schemas shipped in schemas/
    json_schema_id_prefix: str = "urn:OCPP:1.6:2019:12:"
    idle_timeout: Duration = Duration(30)
    lenient_clients: list[str] = field(default_factory=list)
    # Broker topic on which nodes sharing a broker announce each new connection, so a
    # charge point reconnecting to another node takes over from the old one. "": off.
    takeover_topic: str = "$ocppgw/takeover/${cid}"
    upstream: UpstreamSettings = field(default_factory=UpstreamSettings)
    dnstream: DnstreamSettings = field(default_factory=DnstreamSettings)
    authentication: AuthenticationSettings = field(default_factory=lambda: AuthenticationSettings(enable=False))
    listeners: ListenersSettings = field(default_factory=ListenersSettings)
    # connector statuses the dashboard remembers per charge point; a further connector id is not kept
    max_connectors_per_client: Annotated[int, Range(1, 65536)] = 256
    # OCPP 2.1: CALLRESULTs remembered per direction per charge point, for a CALLRESULTERROR about
    # one of them; the oldest is forgotten beyond this (a CALLRESULTERROR about it: unknown_unique_id)
    max_remembered_results: Annotated[int, Range(1, 4096)] = 32
    # EMQX's common gateway keys this gateway does not need
    enable_stats: Annotated[Any, NoEffect("connection statistics are always kept")] = True
    clientinfo_override: Annotated[ClientinfoOverride, NoEffect(
        "the charge point id is the last segment of the URL path, the username the Basic one")] = field(
        default_factory=ClientinfoOverride)


@dataclass(frozen=True)
class GatewaySettings:
    ocpp: OcppSettings = field(default_factory=OcppSettings)


# --- rules, connectors, actions, dashboard -----------------------------------------


@dataclass(frozen=True)
class RuleSettings:
    sql: str = REQUIRED
    # Each entry is "type:name" or {function = republish|console, args {...}};
    # the rules engine checks the entries when it loads the rule.
    actions: list[Any] = field(default_factory=list)
    enable: bool = True
    description: str = ""
    name: str = ""  # EMQX's display name; the map key is the rule's id
    metadata: dict[str, Any] = field(default_factory=dict)  # kept and shown by the rules API, as in EMQX


@dataclass(frozen=True)
class RuleEngineSettings:
    rules: dict[str, RuleSettings] = field(default_factory=dict)
    ignore_sys_message: Annotated[Any, NoEffect("no $SYS messages reach the rules here")] = True
    jq_implementation_module: Annotated[Any, NoEffect("jq runs in a sandboxed child process")] = "jq_nif"
    # limits of the rule functions (rules/limits.py; docs/security.md, section rules)
    jq_function_default_timeout: Duration = Duration(0.2)  # jq() without its 3rd argument
    jq_function_max_memory: Size = Size(256 * 1024 * 1024)  # the jq child's address space (RLIMIT_AS)
    max_string_size: Size = Size(8 * 1024 * 1024)  # characters in one string a function builds
    regex_max_matches: NonNegative = 10_000  # matches one regex_replace call may replace


# --- connectors and actions (HTTP, SQLite, PostgreSQL) ------------------------------


@dataclass(frozen=True)
class ResourceOpts:
    """Buffering and delivery of one action (EMQX's resource_opts)."""

    max_buffer_messages: Positive = 10_000  # beyond this the oldest waiting message is dropped
    inflight_window: Positive = 1  # requests in flight at once; 1 keeps the order of delivery
    request_ttl: Duration = Duration(45)  # a message not delivered within this is dropped (expired)
    batch_size: Positive = 1
    batch_time: Duration = Duration(0)  # how long to wait for a batch to fill
    max_retries: NonNegative = 0  # 0: retry until request_ttl
    retry_interval: Duration = Duration(1)  # first backoff; doubles up to 30s
    health_check_interval: Duration = Duration(15)
    # queued requests (their rendered size) above this drop the oldest, counted as dropped.queue_full
    max_buffer_bytes: Size = Size(256 * 1024 * 1024)
    # EMQX's keys for its Erlang worker pools and disk buffers
    worker_pool_size: Annotated[Any, NoEffect("one delivery loop per action; inflight_window sets the "
                                              "requests in flight")] = 16
    query_mode: Annotated[Any, NoEffect("delivery is always asynchronous to the rule")] = "async"
    # memory_only; volatile_offload: beyond buffer_seg_bytes in a spill file, not kept after a crash;
    # disk: on disk (node.data_dir) before delivery, until the target answered (docs/actions.md)
    buffer_mode: Literal["memory_only", "volatile_offload", "disk"] = "memory_only"
    buffer_seg_bytes: Size = Size(10 * 1024 * 1024)  # the part of the buffer kept in memory (not memory_only)
    buffer_overflow: Literal["drop_oldest", "drop_newest"] = "drop_oldest"  # a full buffer drops this one
    metrics_flush_interval: Annotated[Any, NoEffect("metrics are read live")] = "5s"
    resume_interval: Annotated[Any, NoEffect("retries back off from retry_interval")] = "15s"
    start_timeout: Annotated[Any, NoEffect("an action starts at once; its connector connects in the "
                                           "background")] = "5s"
    start_after_created: Annotated[Any, NoEffect("an action starts when it is created")] = True
    auto_restart_interval: Annotated[Any, NoEffect("a connector reconnects by itself, with backoff")] = "60s"


@dataclass(frozen=True)
class ConnectorResourceOpts:
    """A connector's resource_opts (EMQX's): how often its health is checked."""

    health_check_interval: Duration = Duration(15)
    start_timeout: Annotated[Any, NoEffect("a connector connects in the background")] = "5s"
    start_after_created: Annotated[Any, NoEffect("a connector starts when it is created")] = True


_TLS_NO_EFFECT = NoEffect("the system's TLS library picks it")


@dataclass(frozen=True)
class ClientTlsSettings:
    enable: bool = False
    verify: Literal["verify_peer", "verify_none"] = "verify_peer"
    cacertfile: str = ""
    certfile: str = ""
    keyfile: str = ""
    # EMQX's ssl client keys this gateway does not set
    server_name_indication: Annotated[Any, NoEffect("the server's host name is sent")] = "auto"
    versions: Annotated[Any, _TLS_NO_EFFECT] = ("tlsv1.3", "tlsv1.2")
    ciphers: Annotated[Any, _TLS_NO_EFFECT] = ()
    depth: Annotated[Any, _TLS_NO_EFFECT] = 10
    password: Annotated[Any, NoEffect("the key file must not be encrypted")] = ""
    reuse_sessions: Annotated[Any, _TLS_NO_EFFECT] = True
    secure_renegotiate: Annotated[Any, _TLS_NO_EFFECT] = True
    hibernate_after: Annotated[Any, NoEffect("an Erlang process setting")] = "5s"
    log_level: Annotated[Any, NoEffect("TLS errors are logged as connector errors")] = "notice"
    middlebox_comp_mode: Annotated[Any, _TLS_NO_EFFECT] = True
    partial_chain: Annotated[Any, _TLS_NO_EFFECT] = False
    verify_peer_ext_key_usage: Annotated[Any, _TLS_NO_EFFECT] = ""
    enable_crl_check: Annotated[Any, _TLS_NO_EFFECT] = False


# EMQX's common action keys this gateway does not use
_LOCAL_TOPIC = NoEffect("an action runs only from the rules that name it")
_FALLBACK = NoEffect("a failed message is counted and logged, not handed to another action")
_MODIFIED = NoEffect("written by EMQX's API")
_TAGS = NoEffect("EMQX's dashboard labels")


@dataclass(frozen=True)
class HttpConnectorSettings:
    enable: bool = True
    url: str = REQUIRED  # base URL; an action's path is joined to it
    headers: dict[str, str] = field(default_factory=dict)
    connect_timeout: Duration = Duration(15)
    pool_size: Positive = 8
    ssl: ClientTlsSettings = field(default_factory=ClientTlsSettings)
    description: str = ""
    resource_opts: ConnectorResourceOpts = field(default_factory=ConnectorResourceOpts)
    pool_type: Annotated[Any, NoEffect("requests share one pool of pool_size connections")] = "random"
    enable_pipelining: Annotated[Any, NoEffect("HTTP/1.1 requests are not pipelined")] = 100
    tags: Annotated[Any, _TAGS] = ()


@dataclass(frozen=True)
class HttpParameters:
    method: Literal["post", "put", "get", "delete", "patch"] = "post"
    path: str = ""  # template, joined to the connector's url
    headers: dict[str, str] = field(default_factory=dict)  # templates
    body: str = ""  # template; empty: the whole rule output as JSON
    request_timeout: Duration = Duration(15)
    # EMQX's: retries of a failed request (0: none); unset: resource_opts.max_retries
    max_retries: NonNegative | None = None


@dataclass(frozen=True)
class HttpActionSettings:
    enable: bool = True
    connector: str = REQUIRED
    parameters: HttpParameters = field(default_factory=HttpParameters)
    resource_opts: ResourceOpts = field(default_factory=ResourceOpts)
    description: str = ""
    local_topic: Annotated[Any, _LOCAL_TOPIC] = ""
    fallback_actions: Annotated[Any, _FALLBACK] = ()
    last_modified_at: Annotated[Any, _MODIFIED] = 0
    tags: Annotated[Any, _TAGS] = ()


@dataclass(frozen=True)
class SqliteConnectorSettings:
    enable: bool = True
    path: str = "gateway.db"  # relative paths are under node.data_dir
    busy_timeout: Duration = Duration(5)
    description: str = ""
    resource_opts: ConnectorResourceOpts = field(default_factory=ConnectorResourceOpts)
    tags: Annotated[Any, _TAGS] = ()


@dataclass(frozen=True)
class PgsqlConnectorSettings:
    enable: bool = True
    server: str = "127.0.0.1:5432"  # "host[:port]" (5432), "[v6 address]:port"
    database: str = REQUIRED
    username: str = "postgres"
    password: str = ""
    pool_size: Positive = 8
    connect_timeout: Duration = Duration(15)
    ssl: ClientTlsSettings = field(default_factory=ClientTlsSettings)
    # true: no server-side prepared statements (behind PgBouncer in transaction mode), as in EMQX
    disable_prepared_statements: bool = False
    description: str = ""
    resource_opts: ConnectorResourceOpts = field(default_factory=ConnectorResourceOpts)
    auto_reconnect: Annotated[Any, NoEffect("a connector always reconnects")] = True
    tags: Annotated[Any, _TAGS] = ()


@dataclass(frozen=True)
class SqlParameters:
    sql: str = REQUIRED  # INSERT with ${var} placeholders, sent as bound parameters
    prepare_statement: Annotated[Any, NoEffect("the action's one statement is its sql")] = None


@dataclass(frozen=True)
class SqlActionSettings:
    # the shape before EMQX 5.4 (the statement beside `connector`) still loads, with a warning
    MOVED: ClassVar[dict[str, tuple[str, ...]]] = {"sql": ("parameters", "sql")}

    enable: bool = True
    connector: str = REQUIRED
    parameters: SqlParameters = field(default_factory=SqlParameters)
    resource_opts: ResourceOpts = field(default_factory=ResourceOpts)
    description: str = ""
    local_topic: Annotated[Any, _LOCAL_TOPIC] = ""
    fallback_actions: Annotated[Any, _FALLBACK] = ()
    last_modified_at: Annotated[Any, _MODIFIED] = 0
    tags: Annotated[Any, _TAGS] = ()


@dataclass(frozen=True)
class ConnectorsSettings:
    http: dict[str, HttpConnectorSettings] = field(default_factory=dict)
    sqlite: dict[str, SqliteConnectorSettings] = field(default_factory=dict)
    pgsql: dict[str, PgsqlConnectorSettings] = field(default_factory=dict)


@dataclass(frozen=True)
class ActionsSettings:
    http: dict[str, HttpActionSettings] = field(default_factory=dict)
    sqlite: dict[str, SqlActionSettings] = field(default_factory=dict)
    pgsql: dict[str, SqlActionSettings] = field(default_factory=dict)



@dataclass(frozen=True)
class DashboardHttpListener:
    enable: bool = True
    bind: Bind = Bind("127.0.0.1", 18083)
    # a request's head must arrive this long after the accept (or the previous answer); 0s: no limit
    idle_timeout: Duration = Duration(15)
    max_request_line_length: Annotated[Size, Range(256, None)] = Size(8 * 1024)  # longer: 414, unparsed
    max_header_size: Annotated[Size, Range(1024, None)] = Size(16 * 1024)  # all headers together; larger: 431


@dataclass(frozen=True)
class DashboardListeners:
    http: DashboardHttpListener = field(default_factory=DashboardHttpListener)


@dataclass(frozen=True)
class DashboardSettings:
    listeners: DashboardListeners = field(default_factory=DashboardListeners)
    default_username: str = "admin"
    default_password: str = "public"
    # API keys for scripts: key → hashed secret ("pbkdf2_sha256$iterations$salt$hash",
    # made by `ocpp-gateway hash-secret`); the secret itself is never stored
    api_keys: dict[str, str] = field(default_factory=dict)
    # a source address with this many failed logins within unsuccessful_login_interval is refused
    # (429, nothing checked) for unsuccessful_login_lock_duration; 0: no lockout (EMQX's keys)
    unsuccessful_login_max_attempts: NonNegative = 5
    unsuccessful_login_lock_duration: Duration = Duration(600)
    unsuccessful_login_interval: Duration = Duration(300)
    # request bodies above this are refused with 413 before they are read (EMQX has no such key)
    max_request_body: Size = Size(1024 * 1024)
    # live frame streams (GET .../clients/{clientid}/frames) open at once; more are answered 503
    max_trace_watchers: Positive = 32
    # frames waiting for one slow live-stream reader; beyond, frames are lost (an `event: lost`)
    trace_watcher_queue: Positive = 1000
    # a dashboard session (POST /api/v5/login) ends after this long without a request from it (EMQX's key)
    token_expired_time: Duration = Duration(3600)
    # characters of one filter value of the clients list (GET /api/v5/clients?clientid=...); longer: 400
    max_filter_length: Annotated[int, Range(1, 65536)] = 256


@dataclass(frozen=True)
class TraceSettings:
    """The frame trace (POST /api/v5/trace): one charge point's frames to JSON Lines in
    <node.data_dir>/trace/<name>.jsonl."""

    max_file_size: Size = Size(64 * 1024 * 1024)  # a trace's file reaching this stops the trace
    max_traces: Positive = 30  # traces kept at once (running, waiting or stopped)


@dataclass(frozen=True)
class FlappingDetectSettings:
    """EMQX's flapping_detect: a charge point id that logs in more than max_count times within
    window_time is refused for ban_time."""

    enable: bool = False
    max_count: Positive = 15
    window_time: Duration = Duration(60)
    ban_time: Duration = Duration(300)


@dataclass(frozen=True)
class PrometheusSettings:
    """EMQX's prometheus {}: the scrape endpoint GET /api/v5/prometheus/stats. Pushing to a push
    gateway and the Erlang VM collectors have no counterpart here."""

    # false: the scrape endpoint answers without credentials (everything else still needs them).
    # EMQX defaults to false; here the door is closed until opened.
    enable_basic_auth: bool = True
    push_gateway_server: Annotated[Any, NoEffect("no push gateway here: Prometheus scrapes /api/v5/prometheus/stats")] = None
    interval: Annotated[Any, NoEffect("no push gateway here: Prometheus scrapes at its own interval")] = None
    headers: Annotated[Any, NoEffect("no push gateway here")] = None
    job_name: Annotated[Any, NoEffect("no push gateway here")] = None
    enable: Annotated[Any, NoEffect("EMQX's push gateway switch: no push gateway here; the scrape endpoint is always on")] = None
    push_gateway: Annotated[Any, NoEffect("no push gateway here: Prometheus scrapes /api/v5/prometheus/stats")] = None
    collectors: Annotated[Any, NoEffect("Erlang VM collectors: the standard process_* collector is used instead")] = None
    vm_dist_collector: Annotated[Any, NoEffect("Erlang VM collector: no Erlang VM here")] = None
    mnesia_collector: Annotated[Any, NoEffect("Erlang VM collector: no Erlang VM here")] = None
    vm_statistics_collector: Annotated[Any, NoEffect("Erlang VM collector: no Erlang VM here")] = None
    vm_system_info_collector: Annotated[Any, NoEffect("Erlang VM collector: no Erlang VM here")] = None
    vm_memory_collector: Annotated[Any, NoEffect("Erlang VM collector: no Erlang VM here")] = None
    vm_msacc_collector: Annotated[Any, NoEffect("Erlang VM collector: no Erlang VM here")] = None


@dataclass(frozen=True)
class AlarmSettings:
    """EMQX's alarm {}: the deactivated alarms GET /api/v5/alarms lists (engine/alarms.py)."""

    size_limit: Annotated[int, Range(1, 3000)] = 1000  # deactivated alarms kept; beyond, the oldest goes
    validity_period: Annotated[Any, NoEffect("deactivated alarms are kept until size_limit pushes them out")] = None
    actions: Annotated[Any, NoEffect("alarms are only listed by GET /api/v5/alarms (not logged, not published)")] = None


@dataclass(frozen=True)
class ClusterSettings:
    """Nodes that share a broker see each other (engine/cluster/): presence, the cluster-wide admin
    API, takeover in broker order. Anyone who may publish under topic_prefix can kick charge points
    and call them: protect it with the broker's ACL."""

    enable: bool = False
    topic_prefix: str = "ocppgw/cluster"
    request_timeout: Duration = Duration(5)  # an admin request carried to another node
    keepalive: Duration = Duration(15)  # of the cluster connection: a dead node shows stopped within 1.5x
    max_record_size: Annotated[Size, Range(1024, None)] = Size(64 * 1024 * 1024)  # overlay / user store taken from the broker


@dataclass(frozen=True)
class Settings:
    node: NodeSettings = field(default_factory=NodeSettings)
    log: LogSettings = field(default_factory=LogSettings)
    mqtt: MqttSettings = field(default_factory=MqttSettings)
    gateway: GatewaySettings = field(default_factory=GatewaySettings)
    rule_engine: RuleEngineSettings = field(default_factory=RuleEngineSettings)
    connectors: ConnectorsSettings = field(default_factory=ConnectorsSettings)
    actions: ActionsSettings = field(default_factory=ActionsSettings)
    dashboard: DashboardSettings = field(default_factory=DashboardSettings)
    trace: TraceSettings = field(default_factory=TraceSettings)
    flapping_detect: FlappingDetectSettings = field(default_factory=FlappingDetectSettings)
    prometheus: PrometheusSettings = field(default_factory=PrometheusSettings)
    cluster: ClusterSettings = field(default_factory=ClusterSettings)
    alarm: AlarmSettings = field(default_factory=AlarmSettings)
