"""The admin API's overlay (data_dir/cluster.hocon) as cluster state: one text, one version, every node.

A change made through the API on one node is validated and applied there first; then that node
gives it the next version `(n + 1, its name)`, publishes `{"version", "node", "text"}` retained on
`P/config` (so a node that starts later, or was down, takes it when it joins) and asks every other
running node to apply it (op `config.apply`); each answers its outcome. A node applies a text only
if its version is newer than the one it has: versions compare as (number, node name), so two
changes made at once on two nodes end with the same winner everywhere, and no wall clock decides.

The built-in user store (engine/auth/store.py) is shared the same way, as a second `ConfigSync`
of kind `users` (`P/users`, op `users.apply`): its text is the store's file, hashed records only.

This module knows nothing of settings: `apply(text, version)` (engine/admin/config_api.py) checks,
reloads and keeps the text, and answers `{"status": "reloaded" | "refused" | "superseded", ...}`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

from engine.cluster.member import ClusterMember, NodeUnreachable, RemoteError

log = logging.getLogger("ocppgw.cluster")

Version = tuple[int, str]
Apply = Callable[[str, Version], Awaitable[dict[str, Any]]]
VERSION_FILE = "cluster.version.json"
MAX_TEXT = 64 * 1024 * 1024  # a text bigger than this is not taken from the broker


def parse_version(value: Any) -> Version | None:
    if (isinstance(value, list) and len(value) == 2 and isinstance(value[0], int)
            and not isinstance(value[0], bool) and value[0] >= 0 and isinstance(value[1], str)):
        return (value[0], value[1])
    return None


class ConfigSync:
    def __init__(self, member: ClusterMember, data_dir: str | Path, apply: Apply, kind: str = "config") -> None:
        self.member = member
        self.kind = kind
        self.path = Path(data_dir) / (VERSION_FILE if kind == "config" else f"cluster.{kind}.version.json")
        self.apply = apply
        self.version: Version = self._load()
        self._tasks: set[asyncio.Task[Any]] = set()
        member.on(kind, self._on_published)
        member.serve(f"{kind}.apply", self._serve)

    def _load(self) -> Version:
        try:
            found = parse_version(orjson.loads(self.path.read_bytes()))
        except (OSError, orjson.JSONDecodeError):
            found = None
        return found or (0, "")

    def next_version(self) -> Version:
        return (self.version[0] + 1, self.member.name)

    def kept(self, version: Version, text: str, publish: bool) -> None:
        """The text of `version` is applied and stored here; `publish`: this node made it."""
        self.version = version
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_bytes(orjson.dumps(list(version)))
        if publish:
            record = {"version": list(version), "node": self.member.name, "text": text}
            if not self.member.publish(self.kind, orjson.dumps(record), retain=True):
                log.warning(f"cluster: {self.kind} version %s not published (not connected to the broker)", version)

    async def spread(self, version: Version, text: str) -> list[dict[str, Any]]:
        """Ask every other running node to apply `text`; each one's outcome."""
        peers = self.member.peers()
        args = {"version": list(version), "text": text}
        found = await asyncio.gather(*(self.member.request(n, f"{self.kind}.apply", args) for n in peers),
                                     return_exceptions=True)
        outcomes: list[dict[str, Any]] = []
        for name, result in zip(peers, found, strict=True):
            if isinstance(result, NodeUnreachable):
                outcomes.append({"node": name, "status": "unavailable", "errors": [str(result)]})
            elif isinstance(result, RemoteError):
                outcomes.append({"node": name, "status": "refused", "errors": [result.message]})
            elif isinstance(result, dict) and isinstance(result.get("status"), str):
                outcomes.append({"node": name, "status": result["status"], "errors": list(result.get("errors") or [])})
            else:
                outcomes.append({"node": name, "status": "refused", "errors": [f"unexpected answer {result!r}"[:200]]})
        return outcomes

    async def _serve(self, args: dict[str, Any]) -> dict[str, Any]:
        version, text = parse_version(args.get("version")), args.get("text")
        if version is None or not isinstance(text, str):
            return {"status": "refused", "errors": [f"{self.kind}.apply: expected a version and a text"]}
        return await self.apply(text, version)

    def _on_published(self, payload: bytes) -> None:
        if not payload:
            return  # the retained record was cleared
        if len(payload) > MAX_TEXT:
            raise ValueError(f"{self.kind} record over {MAX_TEXT} bytes")
        data = orjson.loads(payload)
        version = parse_version(data.get("version")) if isinstance(data, dict) else None
        if version is None or not isinstance(data.get("text"), str):
            raise ValueError(f"not a {self.kind} record")
        if version <= self.version:
            return
        task = asyncio.get_running_loop().create_task(self._take(data["text"], version))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _take(self, text: str, version: Version) -> None:
        outcome = await self.apply(text, version)
        if outcome.get("status") == "refused":
            log.error("cluster: %s version %s from node %s refused here: %s", self.kind, version[0], version[1],
                      "; ".join(outcome.get("errors") or []))
        elif outcome.get("status") == "reloaded":
            log.info("cluster: took %s version %s from node %s", self.kind, version[0], version[1])
