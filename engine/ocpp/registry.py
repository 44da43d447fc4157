"""The connected charge points of one node, by charge point id: one session per id.

`add` is the only way in and the only takeover: a charge point that connects again closes
its old session (reason `takenover`) before the new one is listed. A session leaves through
`remove` when it closes; `take_over` closes one announced elsewhere (another node of the
cluster, `engine.ocpp.takeover`). Everything else reads it as a mapping, cid → session.

Typed against `ConnectedSession`, what the node, the admin API and the metrics may use of a
session, so this module (and the context that holds it) never imports the session.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Mapping
from typing import Any, Generic, Protocol, TypeVar

log = logging.getLogger("ocppgw.listener")


class ConnectedSession(Protocol):
    """A connected charge point as seen from outside its connection."""

    cid: str
    username: str | None
    proto_ver: str
    peer: tuple[str, int]
    listener: str  # the full name of the listener that accepted it
    mountpoint: str
    connected_at: int  # ms since the epoch
    closed: bool
    recv_cnt: int
    send_cnt: int

    @property
    def keepalive(self) -> float: ...
    def close(self, reason: str, code: int = 1000) -> None: ...
    def info(self) -> dict[str, Any]: ...
    def resubscribe(self, mountpoint: str) -> None: ...
    def call(self, action: str, payload: dict[str, Any],
             unique_id: str | None = None) -> asyncio.Future[dict[str, Any]]: ...


S = TypeVar("S", bound=ConnectedSession)


class SessionRegistry(Mapping[str, S], Generic[S]):
    __slots__ = ("_by_cid", "_sorted")

    def __init__(self) -> None:
        self._by_cid: dict[str, S] = {}
        self._sorted: list[S] | None = None  # the sessions by cid, made when asked, dropped when one comes or goes

    def add(self, session: S) -> None:
        """List `session` under its cid, closing the session it replaces (`takenover`)."""
        old = self._by_cid.get(session.cid)
        if old is not None and old is not session:
            log.info("charge point %s connected again: the old connection is taken over", session.cid)
            old.close("takenover", 1000)  # it removes itself
        self._sorted = None
        self._by_cid[session.cid] = session

    def remove(self, session: ConnectedSession) -> None:
        """Unlist `session` if it is still the one listed under its cid (a taken-over one is not)."""
        if self._by_cid.get(session.cid) is session:
            del self._by_cid[session.cid]
            self._sorted = None

    def in_order(self) -> list[S]:
        """The sessions sorted by cid (do not change the list): sorted once per change of who is
        connected, so paging through 20,000 charge points does not sort them on every request."""
        if self._sorted is None:
            by_cid = self._by_cid
            self._sorted = [by_cid[cid] for cid in sorted(by_cid)]
        return self._sorted

    def take_over(self, cid: str, connected_at: float) -> bool:
        """A connection of `cid` made at `connected_at` elsewhere: close ours if it is not newer."""
        session = self._by_cid.get(cid)
        if session is None or session.connected_at > connected_at:
            return False
        session.close("takenover", 1000)
        return True

    def __getitem__(self, cid: str) -> S:
        return self._by_cid[cid]

    def get(self, cid: str, default: Any = None) -> Any:  # the dict's own, faster than Mapping's
        return self._by_cid.get(cid, default)

    def __contains__(self, cid: object) -> bool:
        return cid in self._by_cid

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_cid)

    def __len__(self) -> int:
        return len(self._by_cid)
