"""The offline command queue on disk: one SQLite file per node, one row per queued CALL.

Writes are small and rare (a command for a charge point that is away), so they are made on the
event loop, each its own transaction, WAL journal with `synchronous = FULL`: a row is on disk when
`add` returns, and survives SIGKILL and power loss. Counts per charge point are kept in memory
(read at every command and by the metrics), loaded from the file when it opens.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Queued:
    id: int
    cid: str
    topic: str
    payload: bytes
    queued_at: int  # ms since the epoch

    def as_dict(self) -> dict[str, object]:
        return {"id": self.id, "cid": self.cid, "topic": self.topic,
                "payload": self.payload.decode("utf-8", "replace"), "queued_at": self.queued_at}


class OfflineStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = FULL")
        self._db.execute("CREATE TABLE IF NOT EXISTS commands (id INTEGER PRIMARY KEY AUTOINCREMENT,"
                         " cid TEXT NOT NULL, topic TEXT NOT NULL, payload BLOB NOT NULL, queued_at INTEGER NOT NULL)")
        self._db.execute("CREATE INDEX IF NOT EXISTS commands_cid ON commands (cid, id)")
        self.counts: Counter[str] = Counter(dict(self._db.execute("SELECT cid, COUNT(*) FROM commands GROUP BY cid")))

    def close(self) -> None:
        self._db.close()

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def add(self, cid: str, topic: str, payload: bytes, queued_at: int) -> int:
        cursor = self._db.execute("INSERT INTO commands (cid, topic, payload, queued_at) VALUES (?, ?, ?, ?)",
                                  (cid, topic, payload, queued_at))
        self.counts[cid] += 1
        return int(cursor.lastrowid or 0)

    def items(self, cid: str) -> list[Queued]:
        if not self.counts.get(cid):
            return []
        rows = self._db.execute("SELECT id, cid, topic, payload, queued_at FROM commands WHERE cid = ? ORDER BY id", (cid,))
        return [Queued(*row) for row in rows]

    def delete(self, items: list[Queued]) -> None:
        if not items:
            return
        with self._db:  # one transaction for them all
            self._db.execute("BEGIN")
            self._db.executemany("DELETE FROM commands WHERE id = ?", [(q.id,) for q in items])
        for q in items:
            self.counts[q.cid] -= 1
            if self.counts[q.cid] <= 0:
                del self.counts[q.cid]

    def older_than(self, queued_at: int) -> list[Queued]:
        rows = self._db.execute("SELECT id, cid, topic, payload, queued_at FROM commands WHERE queued_at < ? ORDER BY id",
                                (queued_at,))
        return [Queued(*row) for row in rows]
