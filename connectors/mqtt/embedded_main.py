"""Child-process entry point of the embedded broker: `python -m connectors.mqtt.embedded_main HOST PORT`.

Runs an amqtt broker on its own event loop, in its own process, so broker
work never stalls the gateway's WebSocket side. Prints `READY` on stdout
once listening; exits 2 with one line on stderr if it cannot bind.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import signal
import sys


async def _serve(host: str, port: int) -> int:
    from amqtt.broker import Broker

    config = {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}", "max_connections": 0}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }
    broker = Broker(config)
    try:
        await broker.start()
    except Exception as exc:  # amqtt wraps the OSError of bind
        cause: BaseException = exc
        while (inner := cause.__cause__ or cause.__context__) is not None:
            cause = inner
        if isinstance(cause, OSError) and cause.errno == errno.EADDRINUSE:
            print(f"address {host}:{port} is already in use", file=sys.stderr, flush=True)
        else:
            print(f"cannot start on {host}:{port}: {cause}", file=sys.stderr, flush=True)
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # the gateway stops us with SIGTERM once it has flushed; SIGINT is a terminal's Ctrl-C, meant for
    # the gateway (we run in a session of our own, so it should not reach us anyway)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    print("READY", flush=True)
    await stop.wait()
    await broker.shutdown()
    return 0


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="embedded-broker %(levelname)s %(message)s")
    # amqtt logs every client's connect/disconnect at INFO and routine errors loudly.
    logging.getLogger("amqtt").setLevel(logging.CRITICAL)
    logging.getLogger("transitions").setLevel(logging.CRITICAL)
    host, port = sys.argv[1], int(sys.argv[2])
    sys.exit(asyncio.run(_serve(host, port)))


if __name__ == "__main__":
    main()
