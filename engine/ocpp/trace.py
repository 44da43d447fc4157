"""The frame trace: a tap on the session's frame path, for recordings and live watchers.

A session carries `tap`, None unless somebody wants its charge point's frames: then it is
`Tracer.frame`, called with every text frame in and out. So a charge point nobody traces
pays one attribute check per frame, and nothing else.

Two kinds of sinks hang on a charge point id:
- a `Recording` (POST /api/v5/trace): JSON Lines in <node.data_dir>/trace/<name>.jsonl between
  its start and end, stopped early when its file would pass its size cap (the file then ends at
  a record boundary);
- a `Watcher` (the dashboard's live stream): a bounded queue; when its reader is slow the
  newest frames are lost and counted, never queued without bound.

One record per frame: {"time", "clientid", "direction": "in"|"out", "frame": text as on the
wire}; `connected`/`disconnected` records (with "event" instead of a frame) mark the sessions.
Beside each file, <name>.meta.json keeps what the trace is, so a restarted node lists it again
and goes on recording a trace whose end has not come (`restore`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import orjson

log = logging.getLogger("ocppgw.trace")

Tap = Callable[[str, str, str], None]  # (clientid, "in" | "out", frame text)
NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")  # a trace's name is a plain file name


class TracedSession(Protocol):
    cid: str
    proto_ver: str
    closed: bool
    tap: Tap | None


def rfc3339(seconds: float, millis: bool = False) -> str:
    whole = int(seconds)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
    return f"{text}.{int((seconds - whole) * 1000):03d}Z" if millis else f"{text}Z"


def encode(record: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(record)
    except TypeError:  # a lone surrogate in a frame: JSON's own escapes carry it
        return json.dumps(record, separators=(",", ":")).encode()


@dataclass
class TraceStats:
    """Read by the metrics collector at scrape time."""

    watchers_refused: int = 0  # live streams refused: dashboard.max_trace_watchers reached
    frames_lost: int = 0  # frames a slow live-stream reader lost
    stopped_by_size: int = 0  # recordings stopped by trace.max_file_size
    records_written: int = 0


class TraceExists(Exception):
    pass


class TooManyWatchers(Exception):
    pass


class Recording:
    def __init__(self, name: str, clientid: str, start_at: float, end_at: float, path: Path, max_size: int) -> None:
        self.name = name
        self.clientid = clientid
        self.start_at = start_at
        self.end_at = end_at
        self.path = path
        self.max_size = max_size
        self.size = 0
        self.stopped = False
        self.stop_reason: str | None = None
        self.file: Any = None
        self.timers: list[asyncio.TimerHandle] = []

    def status(self, now: float | None = None) -> str:
        now = time.time() if now is None else now
        if self.stopped or now >= self.end_at:
            return "stopped"
        return "waiting" if self.file is None else "running"

    def write(self, line: bytes) -> bool:
        """Append one record; False (nothing written) when it would pass the size cap."""
        if self.size + len(line) > self.max_size:
            return False
        self.file.write(line)
        self.size += len(line)
        return True

    @property
    def meta_path(self) -> Path:
        return self.path.with_name(f"{self.name}.meta.json")

    def save_meta(self) -> None:
        try:
            self.meta_path.write_bytes(orjson.dumps({
                "name": self.name, "type": "clientid", "clientid": self.clientid, "start_at": self.start_at,
                "end_at": self.end_at, "stopped": self.stopped, "stop_reason": self.stop_reason}))
        except OSError as exc:
            log.warning("trace %s: cannot write %s: %s", self.name, self.meta_path, exc.strerror or exc)

    def describe(self, node: str) -> dict[str, Any]:
        return {"name": self.name, "type": "clientid", "clientid": self.clientid, "status": self.status(),
                "start_at": rfc3339(self.start_at), "end_at": rfc3339(self.end_at), "formatter": "json",
                "log_size": {node: self.size}, "stop_reason": self.stop_reason}


class Watcher:
    """One live stream's queue of records (JSON, no newline); `lost` counts what did not fit."""

    def __init__(self, clientid: str, limit: int) -> None:
        self.clientid = clientid
        self.limit = limit
        self.queue: deque[bytes] = deque()
        self.lost = 0
        self.wake = asyncio.Event()

    def put(self, record: bytes) -> bool:
        if len(self.queue) >= self.limit:
            self.lost += 1
            return False
        self.queue.append(record)
        self.wake.set()
        return True


class Tracer:
    """Every recording and live watcher of one node, by charge point id."""

    def __init__(self, sessions: Any) -> None:
        self._sessions = sessions  # cid → session (the context's registry)
        self.recordings: dict[str, Recording] = {}  # by name
        self._live: dict[str, list[Recording]] = {}  # cid → recordings running now
        self._watchers: dict[str, list[Watcher]] = {}  # cid → live streams
        self.stats = TraceStats()

    # --- the tap -------------------------------------------------------------------------------

    def frame(self, cid: str, direction: str, text: str) -> None:
        self._emit(cid, encode({"time": rfc3339(time.time(), True), "clientid": cid,
                                "direction": direction, "frame": text}))

    def attach(self, session: TracedSession) -> None:
        """A session of `session.cid` started: give it the tap if anybody traces that id."""
        if self._wanted(session.cid):
            session.tap = self.frame
            self._emit(session.cid, encode({"time": rfc3339(time.time(), True), "clientid": session.cid,
                                            "event": "connected", "proto_ver": session.proto_ver}))

    def detach(self, session: TracedSession, reason: str) -> None:
        if self._wanted(session.cid):
            self._emit(session.cid, encode({"time": rfc3339(time.time(), True), "clientid": session.cid,
                                            "event": "disconnected", "reason": reason}))

    def _emit(self, cid: str, record: bytes) -> None:
        for recording in tuple(self._live.get(cid, ())):  # a full one leaves the list
            try:
                written = recording.write(record + b"\n")
            except OSError as exc:
                log.warning("trace %s stopped: cannot write %s: %s", recording.name, recording.path, exc.strerror or exc)
                self._finish(recording, "write_error")
                continue
            if written:
                self.stats.records_written += 1
            else:
                log.warning("trace %s stopped: its file reached trace.max_file_size", recording.name)
                self.stats.stopped_by_size += 1
                self._finish(recording, "max_file_size")
        for watcher in self._watchers.get(cid, ()):
            if not watcher.put(record):
                self.stats.frames_lost += 1

    def _wanted(self, cid: str) -> bool:
        return cid in self._live or cid in self._watchers

    def _retap(self, cid: str) -> None:
        session = self._sessions.get(cid)
        if session is not None and not session.closed:
            session.tap = self.frame if self._wanted(cid) else None

    # --- recordings ----------------------------------------------------------------------------

    def create(self, name: str, clientid: str, start_at: float, end_at: float, directory: Path,
               max_size: int) -> Recording:
        if name in self.recordings:
            raise TraceExists(name)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{name}.jsonl"
        with open(path, "wb"):
            pass  # an empty file from the start: the trace can be downloaded while it waits
        recording = self.recordings[name] = Recording(name, clientid, start_at, end_at, path, max_size)
        recording.save_meta()
        self._schedule(recording)
        return recording

    def restore(self, directory: Path, max_size: int) -> int:
        """The traces a previous run of the node left in `directory`; those not ended record on."""
        restored = 0
        for meta in sorted(directory.glob("*.meta.json")) if directory.is_dir() else ():
            try:
                m = orjson.loads(meta.read_bytes())
                name, clientid = m["name"], m["clientid"]
                start_at, end_at = float(m["start_at"]), float(m["end_at"])
                if not (isinstance(name, str) and NAME.fullmatch(name) and isinstance(clientid, str)):
                    raise ValueError("bad name or clientid")
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("trace: %s is not a trace's description (%s): left alone", meta, exc)
                continue
            path = directory / f"{name}.jsonl"
            if name in self.recordings or not path.is_file():
                continue
            recording = self.recordings[name] = Recording(name, clientid, start_at, end_at, path, max_size)
            recording.size = path.stat().st_size
            if m.get("stopped") or end_at <= time.time():
                recording.stopped = True
                recording.stop_reason = m.get("stop_reason") or "end_at"
            else:
                self._schedule(recording)
            restored += 1
        if restored:
            log.info("trace: %d trace(s) of the previous run restored from %s", restored, directory)
        return restored

    def _schedule(self, recording: Recording) -> None:
        loop = asyncio.get_running_loop()
        delay = recording.start_at - time.time()
        if delay > 0:
            recording.timers.append(loop.call_later(delay, self._begin, recording))
        else:
            self._begin(recording)

    def _begin(self, recording: Recording) -> None:
        if recording.stopped:
            return
        recording.file = open(recording.path, "ab", buffering=0)  # whole records reach the file at once
        self._live.setdefault(recording.clientid, []).append(recording)
        self._retap(recording.clientid)
        loop = asyncio.get_running_loop()
        recording.timers.append(loop.call_later(max(0.0, recording.end_at - time.time()), self._finish,
                                                recording, "end_at"))
        log.info("trace %s of %s started", recording.name, recording.clientid)

    def _finish(self, recording: Recording, reason: str) -> None:
        if recording.stopped:
            return
        recording.stopped = True
        recording.stop_reason = reason
        for timer in recording.timers:
            timer.cancel()
        recording.timers.clear()
        live = self._live.get(recording.clientid)
        if live and recording in live:
            live.remove(recording)
            if not live:
                del self._live[recording.clientid]
        if recording.file is not None:
            recording.file.close()
        if reason != "deleted":
            recording.save_meta()
        self._retap(recording.clientid)

    def stop(self, name: str) -> Recording | None:
        recording = self.recordings.get(name)
        if recording is not None:
            self._finish(recording, "stopped")
        return recording

    def delete(self, name: str) -> bool:
        recording = self.recordings.pop(name, None)
        if recording is None:
            return False
        self._finish(recording, "deleted")
        for path in (recording.path, recording.meta_path):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        return True

    def clear(self) -> None:
        for name in list(self.recordings):
            self.delete(name)

    # --- live watchers -------------------------------------------------------------------------

    @property
    def watcher_count(self) -> int:
        return sum(len(w) for w in self._watchers.values())

    def watch(self, cid: str, queue_limit: int, max_watchers: int) -> Watcher:
        if self.watcher_count >= max_watchers:
            self.stats.watchers_refused += 1
            raise TooManyWatchers(cid)
        watcher = Watcher(cid, queue_limit)
        self._watchers.setdefault(cid, []).append(watcher)
        self._retap(cid)
        return watcher

    def unwatch(self, watcher: Watcher) -> None:
        watchers = self._watchers.get(watcher.clientid)
        if watchers and watcher in watchers:
            watchers.remove(watcher)
            if not watchers:
                del self._watchers[watcher.clientid]
            self._retap(watcher.clientid)
