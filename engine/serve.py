"""Run a uvicorn server on a socket we bind ourselves, so a busy port is our clear error, not uvicorn's exit.

Every server gets the request-head limits of `engine.httpguard` (a head timeout, a
cap on the request line and the headers, a reserve of file descriptors): the OCPP
listeners through their own subclass, the admin API through `guarded(limits)`.
"""

from __future__ import annotations

import socket
from typing import Any

import uvicorn

from engine.config.types import Bind
from engine.fds import ADMIN_RESERVE
from engine.httpguard import HeadLimits, guarded


class BindError(Exception):
    pass


# True in a worker of `node.workers` (engine/workers.py): every server socket is bound with
# SO_REUSEPORT, so the workers share each port and the kernel spreads the connections over them
_share_ports = False


def share_ports(share: bool = True) -> None:
    global _share_ports
    _share_ports = share


def bind_socket(bind: Bind, key: str, reuseaddr: bool = True) -> socket.socket:
    family = socket.AF_INET6 if ":" in bind.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    if reuseaddr:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if _share_ports:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((bind.host, bind.port))
    except OSError as exc:
        sock.close()
        raise BindError(f"{key} {bind}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


async def start_server(app: Any, sock: socket.socket, ssl: Any = None, limits: HeadLimits | None = None,
                       **options: Any) -> uvicorn.Server:
    """`limits` apply unless `http` names a protocol class of its own (a subclass of
    `GuardedHttpProtocol`); the class's `refusals` counts what they turned away."""
    if "http" not in options:
        options["http"] = guarded(limits or HeadLimits(fd_reserve=ADMIN_RESERVE))
    backlog = options.pop("backlog", 4096)  # the accept queue (an OCPP listener's tcp_options.backlog)
    config = uvicorn.Config(
        app, lifespan="off", log_config=None, access_log=False, server_header=False,
        date_header=False, proxy_headers=False, timeout_graceful_shutdown=5, backlog=backlog, **options,
    )
    config.load()
    if ssl is not None:
        config.ssl = ssl
    server = uvicorn.Server(config)
    server.lifespan = config.lifespan_class(config)  # serve() would set it; we drive startup ourselves
    await server.startup(sockets=[sock])
    return server
