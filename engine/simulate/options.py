"""What a simulated fleet does: one dataclass, filled by the CLI or by a test."""

from __future__ import annotations

from dataclasses import dataclass

PROTOCOLS = ("ocpp1.6", "ocpp2.0.1", "ocpp2.1")
SCENARIOS = ("boot", "idle", "charge")


@dataclass
class SimOptions:
    url: str                               # ws[s]://host:port/path; each charge point adds /<id>
    count: int = 1
    proto: str = "ocpp1.6"
    scenario: str = "idle"                 # boot: boot, status, close | idle: + heartbeats | charge: + sessions
    rate: float = 100.0                    # new connections per second during the ramp-up (0: all at once)
    duration: float = 60.0                 # seconds to run after the ramp-up (0: until stop() / Ctrl-C)
    prefix: str = "SIM"
    first: int = 1                         # ids are prefix + 5-digit number: SIM00001, SIM00002, ...
    connectors: int = 2
    auth: str | None = None                # "user:password" for HTTP Basic; "{cid}" is replaced by the id
    heartbeat: float | None = None         # None: the interval of the BootNotification answer
    meter_interval: float = 10.0           # seconds between MeterValues during a session
    session_duration: float = 60.0         # mean session length (±25%)
    session_pause: float = 10.0            # mean pause between sessions on a connector (±25%)
    call_timeout: float = 30.0             # a CALL not answered within this counts as a timeout
    backoff_min: float = 1.0               # reconnect backoff: doubles from min up to max, with jitter
    backoff_max: float = 30.0
    reboot_delay: float = 1.0              # after a Reset, offline this long before reconnecting
    source_addresses: int = 0              # K > 1: bind round-robin to 127.0.0.2.. (URL host 127.0.0.1); 0: auto
    tls_ca: str | None = None
    tls_cert: str | None = None            # may contain "{cid}" for a certificate per charge point
    tls_key: str | None = None
    tls_insecure: bool = False
    seed: int = 1
    progress: bool = False                 # a live line on stderr every second
    drain_timeout: float = 30.0            # at the end: how long to wait for sessions to stop and answers to come

    def problems(self) -> list[str]:
        out = []
        if not self.url.startswith(("ws://", "wss://")):
            out.append("--url must start with ws:// or wss://")
        if self.count < 1:
            out.append("--count must be at least 1")
        if self.proto not in PROTOCOLS:
            out.append(f"--proto must be one of {', '.join(PROTOCOLS)}")
        if self.scenario not in SCENARIOS:
            out.append(f"--scenario must be one of {', '.join(SCENARIOS)}")
        if self.rate < 0:
            out.append("--rate must not be negative")
        if self.duration < 0:
            out.append("--duration must not be negative")
        if self.connectors < 1:
            out.append("--connectors must be at least 1")
        if self.heartbeat is not None and self.heartbeat <= 0:
            out.append("--heartbeat must be positive")
        for name in ("meter_interval", "session_duration", "call_timeout"):
            if getattr(self, name) <= 0:
                out.append(f"--{name.replace('_', '-')} must be positive")
        if self.session_pause < 0:
            out.append("--session-pause must not be negative")
        if self.auth is not None and ":" not in self.auth:
            out.append("--auth must be user:password")
        if self.source_addresses < 0:
            out.append("--source-addresses must not be negative")
        if not 0 < self.backoff_min <= self.backoff_max:
            out.append("the reconnect backoff needs 0 < min <= max")
        if self.tls_key and not self.tls_cert:
            out.append("--tls-key needs --tls-cert")
        return out

    def cid(self, index: int) -> str:
        return f"{self.prefix}{index:05d}"
