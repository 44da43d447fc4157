"""The session's downstream half on its own: driven through its `Channel` seam, with no `Session`
(engine/ocpp/downstream.py never imports engine/ocpp/session.py)."""

from __future__ import annotations

import ast
import asyncio
from collections import OrderedDict
from pathlib import Path
from typing import Any, Literal

import orjson

from engine.bus import Bus, Message
from engine.config.schema import OcppSettings
from engine.ocpp.context import GatewayContext
from engine.ocpp.downstream import Downstream

ROOT = Path(__file__).resolve().parent.parent


class Channel:
    """A stand-in for the session: records what the downstream asks of it."""

    def __init__(self) -> None:
        self.cid = "CP1"
        self.proto_ver = "ocpp1.6"
        self.mountpoint = "ocpp/"
        self.closed = False
        self.sent: list[list[Any]] = []
        self.drops: list[str] = []
        self.delivered_ids: list[str] = []
        self.boots: list[Any] = []

    def send_frame(self, text: str, type_id: int) -> None:
        self.sent.append(orjson.loads(text))

    def dropped(self, reason: str, payload: str, description: str, message: Message | None = None) -> None:
        self.drops.append(reason)

    def delivered(self, message: Message) -> None:
        self.delivered_ids.append(message.json()["UniqueId"])

    def check(self, action: str, kind: Literal["request", "response"], payload: Any) -> tuple[str, str] | None:
        return None

    def boot_accepted(self, interval: Any) -> None:
        self.boots.append(interval)


class Listener:
    full_name = "ocpp:ws:default"
    checking = None


def command(uid: str, action: str = "Reset") -> bytes:
    return orjson.dumps({"MessageTypeId": 2, "UniqueId": uid, "Action": action, "Payload": {"type": "Soft"}})


def test_the_downstream_runs_its_queue_through_the_channel_alone():
    async def run() -> tuple[Channel, list[Any]]:
        bus = Bus()
        ctx = GatewayContext(OcppSettings(message_format_checking="disable"), bus, "n", None)
        channel = Channel()
        pending: OrderedDict[str, str] = OrderedDict({"b1": "BootNotification"})  # the charge point's CALL
        down = Downstream(channel, ctx, Listener(), pending)
        down.subscribe()  # the charge point's topic: ocpp/ + cs/${cid}
        for uid in ("c1", "c2", "c3"):
            bus.publish(Message("ocpp/cs/CP1", command(uid), origin="mqtt"))
        waiting = [(state, out.unique_id) for state, out in down.waiting_calls()]
        assert waiting == [("inflight", "c1"), ("queued", "c2"), ("queued", "c3")]
        assert [frame[1] for frame in channel.sent] == ["c1"]  # one CALL at a time
        assert down.inflight is not None
        down.answered(down.inflight, {"MessageTypeId": 3, "UniqueId": "c1", "Payload": {}})
        assert [frame[1] for frame in channel.sent] == ["c1", "c2"]  # the answer lets the next go
        reply = {"MessageTypeId": 3, "UniqueId": "b1", "Payload": {"status": "Accepted", "interval": 30,
                                                                   "currentTime": "2026-01-01T00:00:00Z"}}
        bus.publish(Message("ocpp/cs/CP1", orjson.dumps(reply), origin="mqtt"))
        assert channel.sent[-1][:2] == [3, "b1"] and channel.boots == [30] and not pending
        down.held = True  # a takeover claim is out: the broker's commands are dropped, replies are not
        bus.publish(Message("ocpp/cs/CP1", command("c4"), origin="mqtt"))
        down.drop_all("client_disconnected")
        down.unsubscribe()
        bus.publish(Message("ocpp/cs/CP1", command("c5"), origin="mqtt"))  # nobody listens any more
        return channel, down.waiting_calls()

    channel, waiting = asyncio.run(run())
    assert channel.delivered_ids == ["c1", "c2", "b1"]
    assert channel.drops == ["takeover_pending", "client_disconnected", "client_disconnected"]
    assert waiting == []


def test_the_downstream_module_imports_no_session():
    tree = ast.parse((ROOT / "engine/ocpp/downstream.py").read_text(encoding="utf-8"))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module or "")
            imported.update(f"{node.module}.{alias.name}" for alias in node.names)
    assert not any(m.endswith(".session") for m in imported), imported
