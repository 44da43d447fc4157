"""The backend of B1: an MQTT client (paho) on the broker that answers every charge point CALL it
sees on ocpp/cp/+ with a CALLRESULT on ocpp/cs/<cid> (Heartbeat with its currentTime, the rest
empty). Run as its own process; prints "ready" once subscribed, and exits on SIGTERM or when the
broker goes away.

  python -m engine.bench.backend --port 1883
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time

import orjson
import paho.mqtt.client as mqtt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--qos", type=int, default=0, choices=(0, 1), help="of the subscription and the answers")
    parser.add_argument("--mountpoint", default="ocpp/")
    args = parser.parse_args()
    qos = args.qos
    down = args.mountpoint + "cs/"
    clock = {"second": 0, "text": b""}

    def now_text() -> bytes:
        second = int(time.time())
        if second != clock["second"]:
            clock["second"] = second
            clock["text"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second)).encode()
        return clock["text"]

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-backend-{os.getpid()}",
                         protocol=mqtt.MQTTv311)
    client.max_inflight_messages_set(65535)
    client.max_queued_messages_set(0)

    def on_connect(c, userdata, flags, reason, properties) -> None:
        sock = c.socket()
        if sock is not None:  # paho leaves Nagle on: each small answer would wait for the last one's ACK
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.subscribe(args.mountpoint + "cp/+", qos)

    def on_subscribe(c, userdata, mid, reasons, properties) -> None:
        print("ready", flush=True)

    def on_message(c, userdata, msg) -> None:
        try:
            body = orjson.loads(msg.payload)
        except orjson.JSONDecodeError:
            return
        if not isinstance(body, dict) or body.get("MessageTypeId") != 2:
            return
        cid = msg.topic.rsplit("/", 1)[1]
        payload = b'{"currentTime":"%b"}' % now_text() if body.get("Action") == "Heartbeat" else b"{}"
        answer = b'{"MessageTypeId":3,"UniqueId":%b,"Payload":%b}' % (orjson.dumps(body.get("UniqueId")), payload)
        c.publish(down + cid, answer, qos)

    def on_disconnect(c, userdata, flags, reason, properties) -> None:
        c.disconnect()
        sys.exit(0)

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.on_disconnect = on_disconnect
    client.connect(args.host, args.port, keepalive=60)
    client.loop_forever()


if __name__ == "__main__":
    main()
