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

Two changes made at once on two nodes get the same number; the larger node name wins everywhere
and the other change is dropped, not merged. The node that made the loser learns it (from its own
record of what it took, or from the winner `<kind>.apply` answers with) and says so to its caller
(`superseded_by`). A record over `cluster.max_record_size` is refused with one log line and counted.

A broker that restarts without persistence loses the retained records: nobody would publish them
again until the next change. So when a node's cluster link (re)connects and, within a moment, it
has not received a record at least as new as its own, it asks the running nodes their versions
(op `<kind>.version`) and, if none of them has a newer one, publishes its own again, retained:
at most once per version and (re)connection, and never an older version over a newer one it knows
of. The same when a record older than its own comes last (the broker retains the last one: two
changes made at once whose loser reached the broker second), and when the retained record is one
this node refuses and no running node holds (junk on the topic must not block the restore).
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
Current = Callable[[], str | None]  # the text of the version this node holds (None: none kept)
VERSION_FILE = "cluster.version.json"
MAX_TEXT = 64 * 1024 * 1024  # default of cluster.max_record_size: a bigger record is not taken from the broker
WINNERS_KEPT = 256  # version numbers whose winner is remembered (to tell a caller its change lost)
SETTLE = 1.0  # seconds after a (re)connection to wait for the retained record before re-publishing


def parse_version(value: Any) -> Version | None:
    if (isinstance(value, list) and len(value) == 2 and isinstance(value[0], int)
            and not isinstance(value[0], bool) and value[0] >= 0 and isinstance(value[1], str)):
        return (value[0], value[1])
    return None


class ConfigSync:
    def __init__(self, member: ClusterMember, data_dir: str | Path, apply: Apply, kind: str = "config",
                 max_size: int = MAX_TEXT, current: Current | None = None) -> None:
        self.member = member
        self.kind = kind
        self.path = Path(data_dir) / (VERSION_FILE if kind == "config" else f"cluster.{kind}.version.json")
        self.apply = apply
        self.max_size = max_size
        self.current = current
        self.version: Version = self._load()
        self.winners: dict[int, Version] = {}  # version number → the largest version seen with it
        self.republished = 0  # retained records published again after a (re)connection (tests, logs)
        self._heard: Version | None = None  # the last record received since the last (re)connection: the retained one
        self._restored: Version | None = None  # the version published again since the last (re)connection
        self._tasks: set[asyncio.Task[Any]] = set()
        member.on(kind, self._on_published)
        member.serve(f"{kind}.apply", self._serve)
        member.serve(f"{kind}.version", self._serve_version)
        member.on_join(self._joined)

    def _load(self) -> Version:
        try:
            found = parse_version(orjson.loads(self.path.read_bytes()))
        except (OSError, orjson.JSONDecodeError):
            found = None
        return found or (0, "")

    def next_version(self) -> Version:
        return (self.version[0] + 1, self.member.name)

    def _seen(self, version: Version) -> None:
        if version > self.winners.get(version[0], (0, "")):
            self.winners[version[0]] = version
            while len(self.winners) > WINNERS_KEPT:
                del self.winners[min(self.winners)]

    def kept(self, version: Version, text: str, publish: bool) -> None:
        """The text of `version` is applied and stored here; `publish`: this node made it."""
        self.version = version
        self._seen(version)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_bytes(orjson.dumps(list(version)))
        if publish:
            self._publish(version, text)

    def _publish(self, version: Version, text: str) -> bool:
        record = orjson.dumps({"version": list(version), "node": version[1], "text": text})
        if len(record) > self.max_size:
            self.member.count_too_large(self.kind)
            log.error("cluster: %s version %s not published: %d bytes, over cluster.max_record_size (%d)",
                      self.kind, version[0], len(record), self.max_size)
            return False
        if not self.member.publish(self.kind, record, retain=True):
            log.warning(f"cluster: {self.kind} version %s not published (not connected to the broker)", version)
            return False
        return True

    def superseded_by(self, mine: Version) -> Version | None:
        """The version that won over `mine` (a change made elsewhere at the same time), if one is known:
        taken here, or answered by another node to `<kind>.apply` as the one it holds (see `spread`)."""
        best = self.winners.get(mine[0], mine)
        return best if best > mine else None

    def mark(self, mine: Version, outcomes: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """`spread`'s outcomes, with this node's own first if its change `mine` lost."""
        lost = self.superseded_by(mine)
        if lost is None:
            return outcomes
        why = (f"version {lost[0]} of node {lost[1]}, made at the same time, won: this change "
               f"(version {mine[0]} of node {mine[1]}) is not kept, on any node")
        log.warning("cluster: %s change %s", self.kind, why)
        return [{"node": self.member.name, "status": "superseded", "errors": [why],
                 "superseded_by": {"node": lost[1], "version": lost[0]}}, *outcomes]

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
                winner = parse_version(result.get("winner"))  # the version that node holds at this number
                if winner is not None and winner[0] == version[0]:
                    self._seen(winner)
            else:
                outcomes.append({"node": name, "status": "refused", "errors": [f"unexpected answer {result!r}"[:200]]})
        return outcomes

    async def _serve(self, args: dict[str, Any]) -> dict[str, Any]:
        version, text = parse_version(args.get("version")), args.get("text")
        if version is None or not isinstance(text, str):
            return {"status": "refused", "errors": [f"{self.kind}.apply: expected a version and a text"]}
        outcome = await self.apply(text, version)
        winner = self.winners.get(version[0])  # the version kept here with this number, if any
        return {**outcome, **({"winner": list(winner)} if winner is not None else {})}

    async def _serve_version(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"version": list(self.version)}

    def _on_published(self, payload: bytes) -> None:
        if not payload:
            return  # the retained record was cleared
        if len(payload) > self.max_size:
            self.member.count_too_large(self.kind)
            log.error("cluster: a %s record of %d bytes refused: over cluster.max_record_size (%d)",
                      self.kind, len(payload), self.max_size)
            return
        data = orjson.loads(payload)
        version = parse_version(data.get("version")) if isinstance(data, dict) else None
        if version is None or not isinstance(data.get("text"), str):
            raise ValueError(f"not a {self.kind} record")
        self._heard = version  # the broker's order: the last one received is the one it retains
        if version < self.version:
            # the broker went backwards (or two changes met and the loser's record came last)
            self._spawn(self._restore("a record older than this node's"))
        if version <= self.version:
            return
        self._spawn(self._take(data["text"], version))

    def _spawn(self, job: Any) -> None:
        task = asyncio.get_running_loop().create_task(job)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- the broker lost the retained record ----------------------------------------------------

    def _joined(self) -> None:
        """The cluster link is (re)connected: the retained record should come now."""
        self._heard = None
        self._restored = None
        self._spawn(self._after_join())

    async def _after_join(self) -> None:
        await asyncio.sleep(SETTLE)
        if self._heard is None:
            await self._restore("no record on the broker")
        elif self._heard < self.version:
            await self._restore("a record older than this node's")

    async def _restore(self, why: str) -> None:
        """Publish this node's version again, retained, once per version and (re)connection, if no
        running node has a newer one."""
        if self._restored == self.version or self.version == (0, "") or self.current is None:
            return
        self._restored = self.version
        peers = self.member.peers()
        found = await asyncio.gather(*(self.member.request(n, f"{self.kind}.version", {}) for n in peers),
                                     return_exceptions=True)
        for answer in found:
            theirs = parse_version(answer.get("version")) if isinstance(answer, dict) else None
            if theirs is not None and theirs > self.version:
                return  # that node publishes it (or this one takes it)
        if self._heard is not None and self._heard >= self.version:
            return  # it came back meanwhile
        text = self.current()
        if text is None:
            return
        version = self.version
        if self._publish(version, text):
            self.republished += 1
            log.info("cluster: %s version %s of node %s published again (%s)", self.kind, version[0], version[1], why)

    async def _take(self, text: str, version: Version) -> None:
        outcome = await self.apply(text, version)
        if outcome.get("status") == "refused":
            log.error("cluster: %s version %s from node %s refused here: %s", self.kind, version[0], version[1],
                      "; ".join(outcome.get("errors") or []))
            if self._heard == version:
                # the retained record is one nobody may hold (junk with a large number would else block
                # every restore); if a running node took it, `_restore` finds that out and stays quiet
                self._heard = None
                await self._restore("the record on the broker was refused here")
        elif outcome.get("status") == "reloaded":
            log.info("cluster: took %s version %s from node %s", self.kind, version[0], version[1])
