"""The backend of B1: an MQTT client on the broker that answers every charge point CALL it sees on
ocpp/cp/+ with a CALLRESULT on ocpp/cs/<cid> (Heartbeat with its currentTime, the rest empty). Run
as its own process; prints "ready" once subscribed, and exits on SIGTERM or when the broker goes away.

It uses the gateway's own MQTT client (connectors/mqtt/client.py), so the installed package needs
nothing from the test extras to run the bench.

  python -m engine.bench.backend --port 1883
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time

import orjson

from connectors.mqtt.client import MqttClient, MqttError


class _Clock:
    """The current UTC time as OCPP text, formatted once per second."""

    def __init__(self) -> None:
        self.second = 0
        self.text = b""

    def now(self) -> bytes:
        second = int(time.time())
        if second != self.second:
            self.second = second
            self.text = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second)).encode()
        return self.text


def answer(payload: bytes, clock: _Clock) -> bytes | None:
    """The CALLRESULT envelope for a CALL envelope the gateway published, or None for anything else."""
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(body, dict) or body.get("MessageTypeId") != 2:
        return None
    result = b'{"currentTime":"%b"}' % clock.now() if body.get("Action") == "Heartbeat" else b"{}"
    return b'{"MessageTypeId":3,"UniqueId":%b,"Payload":%b}' % (orjson.dumps(body.get("UniqueId")), result)


async def serve(host: str, port: int, qos: int, mountpoint: str) -> None:
    down = mountpoint + "cs/"
    clock = _Clock()
    client: MqttClient | None = None

    def on_message(topic: str, payload: bytes, _qos: int, _retain: bool) -> None:
        reply = answer(payload, clock)
        if reply is not None and client is not None and not client.closed.done():
            # QoS 1 answers with a token: acknowledged through on_ack (ignored), no future per message
            client.publish(down + topic.rsplit("/", 1)[1], reply, qos, token=True if qos else None)

    # MQTT 3.1.1, as the bench has always used; asyncio's TCP transports turn Nagle off by themselves
    client = await MqttClient.connect(host, port, client_id=f"bench-backend-{os.getpid()}",
                                      on_message=on_message, v5=False, keepalive=60)
    await client.subscribe([(mountpoint + "cp/+", qos)])
    print("ready", flush=True)
    await client.closed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--qos", type=int, default=0, choices=(0, 1), help="of the subscription and the answers")
    parser.add_argument("--mountpoint", default="ocpp/")
    args = parser.parse_args()
    try:
        asyncio.run(serve(args.host, args.port, args.qos, args.mountpoint))
    except MqttError as exc:
        print(f"backend: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
