"""A wss listener's server TLS context from EMQX's `ssl_options`, and the TCP options of a listener.

What Python's `ssl` can do is honoured: certificate, key and CA files, `verify`,
`fail_if_no_peer_cert`, `versions`, `ciphers` (OpenSSL names of the TLS 1.2 suites; TLS 1.3
suites cannot be narrowed from Python and are accepted by name), `honor_cipher_order`,
`reuse_sessions` (false: no session tickets), `client_renegotiation` (false: refused),
`dhfile`; `handshake_timeout` is the accept path's (`engine.ocpp.accept`). The rest is
accepted with no effect (schema.NoEffect says why). `tcp_options`: `backlog` and `reuseaddr` on the
listening socket, `nodelay`, `recbuf`, `sndbuf`, `keepalive` on each accepted connection.
"""

from __future__ import annotations

import os
import socket
import ssl
from collections.abc import Iterator
from typing import Any

from engine.config.schema import SslOptions, TcpOptions, WssListenerSettings

_TLS_VERSIONS = {"tlsv1.2": ssl.TLSVersion.TLSv1_2, "tlsv1.3": ssl.TLSVersion.TLSv1_3}
TLS13_SUITES = frozenset({"TLS_AES_256_GCM_SHA384", "TLS_AES_128_GCM_SHA256", "TLS_CHACHA20_POLY1305_SHA256",
                          "TLS_AES_128_CCM_SHA256", "TLS_AES_128_CCM_8_SHA256"})


class TlsSetupError(Exception):
    """ssl_options a context cannot be made of; the message starts with the key under ssl_options
    (".ciphers: ...") or, for the certificate files, with ": "."""


def tls12_ciphers(names: list[str]) -> str:
    """The OpenSSL cipher string of the TLS 1.2 names in `names` ("" when there are none)."""
    return ":".join(name for name in names if name not in TLS13_SUITES)


def server_context(s: SslOptions) -> ssl.SSLContext:
    """The server context, or `TlsSetupError` naming the key at fault."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    key = ""
    try:
        ctx.load_cert_chain(s.certfile, s.keyfile, s.password or None)
        if s.cacertfile:
            ctx.load_verify_locations(s.cacertfile)
        if s.dhfile:
            key = ".dhfile"
            ctx.load_dh_params(s.dhfile)
    except (OSError, ssl.SSLError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror and not isinstance(exc, ssl.SSLError) else exc
        raise TlsSetupError(f"{key}: {reason}") from None
    if s.verify == "verify_peer":
        ctx.verify_mode = ssl.CERT_REQUIRED if s.fail_if_no_peer_cert else ssl.CERT_OPTIONAL
    versions = [_TLS_VERSIONS[v] for v in s.versions]
    ctx.minimum_version = min(versions)
    ctx.maximum_version = max(versions)
    apply_cipher_options(ctx, s)
    return ctx


def apply_cipher_options(ctx: ssl.SSLContext, s: SslOptions) -> None:
    """ciphers, honor_cipher_order, reuse_sessions, client_renegotiation (`TlsSetupError` on ciphers)."""
    suites = tls12_ciphers(s.ciphers)
    if suites:
        try:
            ctx.set_ciphers(suites)
        except ssl.SSLError:
            raise TlsSetupError(f".ciphers: OpenSSL knows none of {suites!r}") from None
    if s.honor_cipher_order:
        ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        ctx.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    if not s.reuse_sessions:
        ctx.options |= ssl.OP_NO_TICKET
        ctx.num_tickets = 0
    if not s.client_renegotiation:
        ctx.options |= ssl.OP_NO_RENEGOTIATION


def check_options(s: SslOptions) -> Iterator[tuple[str, str]]:
    """(key, problem) for what a listener could not start with and a config check can see without
    the certificates: unknown cipher names, an unreadable dhfile."""
    if s.ciphers:
        probe = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        unknown = [name for name in s.ciphers if name not in TLS13_SUITES and not _known_cipher(probe, name)]
        if unknown:
            yield "ciphers", f"unknown to OpenSSL: {', '.join(unknown)} (OpenSSL names, e.g. ECDHE-RSA-AES256-GCM-SHA384)"
    if s.dhfile and not os.access(s.dhfile, os.R_OK):
        yield "dhfile", "cannot be read"


def _known_cipher(ctx: ssl.SSLContext, name: str) -> bool:
    try:
        ctx.set_ciphers(name)
    except ssl.SSLError:
        return False
    return True


def wss_context(settings: WssListenerSettings) -> ssl.SSLContext:
    return server_context(settings.ssl_options)


def parse_keepalive(text: str) -> tuple[int, int, int] | None:
    """EMQX's tcp_options.keepalive: "none" (None) or "Idle,Interval,Probes" (seconds, seconds, count)."""
    if text.strip() == "none":
        return None
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ValueError('expected "none" or "Idle,Interval,Probes", e.g. "240,30,5"')
    idle, interval, probes = (int(p) for p in parts)
    return idle, interval, probes


def tune_listening(sock: socket.socket, options: TcpOptions) -> None:
    """Options of the listening socket that accepted connections inherit (buffer sizes must be set
    before the connection is made to count for the TCP window)."""
    if options.recbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, int(options.recbuf))
    if options.sndbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, int(options.sndbuf))


def tune_connection(sock: Any, options: TcpOptions) -> None:
    """The per-connection TCP options, read live (a reload applies to new connections)."""
    if sock is None:
        return
    try:
        # set either way: asyncio leaves it off on a socket made with proto 0 (as serve.bind_socket makes)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, int(options.nodelay))
        if options.recbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, int(options.recbuf))
        if options.sndbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, int(options.sndbuf))
        keepalive = parse_keepalive(options.keepalive)
        if keepalive is not None:
            idle, interval, probes = keepalive
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, interval)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, probes)
    except (OSError, ValueError):
        pass  # the peer is gone already, or a value the checks refused
