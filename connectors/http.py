"""HTTP webhooks: a pooled httpx client per connector, one request per rule output."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import email.utils
import math
import ssl
import time
from typing import Any
from urllib.parse import urlsplit

import httpx

from connectors.resource import NO_RETRY, BufferedAction, Connector, SendError
from connectors.tls import client_context
from engine.config.schema import (
    ClientTlsSettings,
    HttpActionSettings,
    HttpConnectorSettings,
)
from engine.template import Template, to_json

# retried within the action's budget (request_ttl, max_retries): the server is down, busy or slow;
# every other 4xx is an answer about the request itself, and fails it at once
RETRIABLE_STATUS = frozenset({408, 429, *range(500, 600)})


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds a Retry-After header asks for (delta-seconds or an HTTP date), or None if absent or
    unreadable. The resource caps it (MAX_BACKOFF) and never waits past a message's request_ttl."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    seconds = when.timestamp() - (time.time() if now is None else now)
    return max(0.0, seconds) if math.isfinite(seconds) else None


def client_tls(settings: ClientTlsSettings) -> ssl.SSLContext | bool:
    if not settings.enable:
        return True  # httpx's default verification for https:// URLs
    return client_context(verify=settings.verify, cacertfile=settings.cacertfile, certfile=settings.certfile,
                          keyfile=settings.keyfile)


def check_url(url: str) -> str | None:
    """What is wrong with a connector URL, or None."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return 'expected an http:// or https:// URL with a host, e.g. "http://127.0.0.1:8080/hooks"'
    try:
        parts.port
    except ValueError:
        return "the port is not a number in 1..65535"
    return None


class HttpConnector(Connector):
    type = "http"

    def __init__(self, name: str, settings: HttpConnectorSettings) -> None:
        super().__init__(name, settings.resource_opts.health_check_interval)
        self.settings = settings
        parts = urlsplit(settings.url)
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.client: httpx.AsyncClient | None = None

    async def connect(self) -> None:
        s = self.settings
        self.client = httpx.AsyncClient(
            base_url=s.url,
            headers=s.headers,
            timeout=httpx.Timeout(None, connect=s.connect_timeout),
            limits=httpx.Limits(max_connections=s.pool_size, max_keepalive_connections=s.pool_size),
            verify=client_tls(s.ssl),
        )

    async def check(self) -> None:
        # EMQX's health check for HTTP: can we open a TCP connection to the server
        _, writer = await asyncio.wait_for(asyncio.open_connection(self.host, self.port), self.settings.connect_timeout)
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()

    async def disconnect(self) -> None:
        if self.client is not None:
            client, self.client = self.client, None
            await client.aclose()


def http_action(name: str, settings: HttpActionSettings, connector: HttpConnector) -> BufferedAction:
    p = settings.parameters
    method = p.method.upper()
    path = Template(p.path)
    headers = {key: Template(value) for key, value in p.headers.items()}
    body = Template(p.body) if p.body else None
    default_headers = {} if body else {"content-type": "application/json"}

    def render(output: dict[str, Any]) -> tuple[str, dict[str, str], bytes]:
        rendered = {key: t.render(output) for key, t in headers.items()}
        content = body.render(output).encode() if body else to_json(output)
        return path.render(output), {**default_headers, **rendered}, content

    async def send(batch: list[tuple[str, dict[str, str], bytes]]) -> None:
        client = connector.client
        if client is None:
            raise SendError("not connected", retriable=True, connection=True)
        for url, request_headers, content in batch:
            try:
                response = await client.request(method, url, headers=request_headers, content=content,
                                                 timeout=httpx.Timeout(p.request_timeout, connect=connector.settings.connect_timeout))
            except httpx.TimeoutException as exc:
                raise SendError(f"timed out: {type(exc).__name__}", retriable=True) from None
            except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
                raise SendError(f"connection failed: {exc}", retriable=True, connection=True) from None
            except httpx.HTTPError as exc:
                raise SendError(f"request failed: {exc}", retriable=False) from None
            status = response.status_code
            if 200 <= status < 300:
                continue
            retriable = status in RETRIABLE_STATUS
            raise SendError(f"HTTP {status} from {response.request.url}", retriable=retriable,
                            retry_after=retry_after(response.headers.get("retry-after")) if retriable else None)

    # one request per message: a batch of HTTP requests would succeed or fail in part
    opts = dataclasses.replace(settings.resource_opts, batch_size=1)
    if p.max_retries is not None:  # EMQX's parameters.max_retries: this many retries, 0 none
        opts = dataclasses.replace(opts, max_retries=p.max_retries or NO_RETRY)
    return BufferedAction("http", name, connector, opts, render, send, settings)
