"""Run a uvicorn server on a socket we bind ourselves, so a busy port is our clear error, not uvicorn's exit."""

from __future__ import annotations

import socket
from typing import Any

import uvicorn

from engine.config.types import Bind


class BindError(Exception):
    pass


def bind_socket(bind: Bind, key: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in bind.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((bind.host, bind.port))
    except OSError as exc:
        sock.close()
        raise BindError(f"{key} {bind}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


async def start_server(app: Any, sock: socket.socket, ssl: Any = None, **options: Any) -> uvicorn.Server:
    options.setdefault("http", "httptools")
    config = uvicorn.Config(
        app, lifespan="off", log_config=None, access_log=False, server_header=False,
        date_header=False, proxy_headers=False, timeout_graceful_shutdown=5, backlog=4096, **options,
    )
    config.load()
    if ssl is not None:
        config.ssl = ssl
    server = uvicorn.Server(config)
    server.lifespan = config.lifespan_class(config)  # serve() would set it; we drive startup ourselves
    await server.startup(sockets=[sock])
    return server
