"""Client TLS contexts for connections the gateway opens (MQTT broker, webhooks)."""

from __future__ import annotations

import ssl
from collections.abc import Iterable

_TLS_VERSIONS = {"tlsv1.2": ssl.TLSVersion.TLSv1_2, "tlsv1.3": ssl.TLSVersion.TLSv1_3}


def client_context(
    *, verify: str, cacertfile: str = "", certfile: str = "", keyfile: str = "", versions: Iterable[str] = ()
) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=cacertfile or None)
    if verify == "verify_none":
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if certfile:
        ctx.load_cert_chain(certfile, keyfile or None)
    chosen = [_TLS_VERSIONS[v] for v in versions]
    if chosen:
        ctx.minimum_version = min(chosen)
        ctx.maximum_version = max(chosen)
    return ctx
