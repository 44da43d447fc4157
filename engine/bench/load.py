"""OCPP-J load for the benchmarks, on picows: charge points as a closed loop, at a set rate, or a connect storm.

Each charge point keeps at most one CALL in flight (as OCPP-J allows) and, in
the closed loop, sends the next as soon as the answer arrives; in the
rate-limited mode it sends on a schedule (N / rate seconds apart per charge
point, started staggered), never before the previous CALL is answered.
CALLs alternate Heartbeat and MeterValues. Latencies (send to answer) go to a
fixed 10 µs histogram, so percentiles cost nothing per call (`tally`). The
charge point itself, and its frames (`engine.ocpp.frames`), are in
`charge_point`.

Everything is bounded: every wait has a deadline, a CALL unanswered after
`call_timeout` is counted as a timeout and the charge point moves on, and
phases end on their own.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import random
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from picows import WSInvalidStatusError, ws_connect

from engine.bench.charge_point import BOOT, HEARTBEAT, SUBPROTOCOL_HEADERS, ChargePoint
from engine.bench.tally import Histogram, Stats, rate_check

__all__ = ["Histogram", "Holder", "Load", "Stats", "alternate", "rate_check", "storm"]

IDLE, CLOSED, RATE = 0, 1, 2

# one source address holds ~28,000 ephemeral ports; beyond this many connections use the next 127.0.0.x
PER_SOURCE_ADDRESS = 20_000

logging.getLogger("picows").setLevel(logging.CRITICAL)  # refusals are counted, not logged


def _bound_socket(source: str, _url: Any) -> socket.socket:
    """A socket from `source` whose port the kernel picks at connect time (IP_BIND_ADDRESS_NO_PORT):
    unique per destination, so one source address serves ~28,000 connections to each server."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.IPPROTO_IP, getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24), 1)
        sock.bind((source, 0))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class Load:
    """A set of charge points on one server, and the phases run on them."""

    def __init__(self, url: str, prefix: str = "CP", call_timeout: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.prefix = prefix
        self.call_timeout = call_timeout
        self.cps: list[ChargePoint] = []
        self.stats = Stats()
        self.measuring = False
        self.mode = IDLE
        self.interval = 0.0
        self.lost = 0  # connections that went without us closing them, over the whole life of the load
        self.close_reasons: Counter[str] = Counter()  # close frames the server sent, by "code reason"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._quiet: asyncio.Event | None = None

    # --- connecting ---------------------------------------------------------------------

    async def _open(self, cid: str, source: str, handshake_timeout: float) -> ChargePoint:
        kwargs: dict[str, Any] = {}
        if source != "127.0.0.1":
            kwargs["socket_factory"] = functools.partial(_bound_socket, source)
        _, cp = await ws_connect(
            lambda: ChargePoint(self, cid), f"{self.url}/{cid}", extra_headers=SUBPROTOCOL_HEADERS,
            websocket_handshake_timeout=handshake_timeout, enable_auto_pong=True, **kwargs,
        )
        return cp

    @staticmethod
    def source_for(index: int, per_source: int = PER_SOURCE_ADDRESS) -> str:
        return f"127.0.0.{1 + index // per_source}"

    async def connect(self, n: int, *, concurrency: int = 256, deadline_s: float = 120.0,
                      per_source: int = PER_SOURCE_ADDRESS, on_connected: Callable[[ChargePoint], None] | None = None,
                      handshake_timeout: float = 20.0) -> dict[str, Any]:
        """Connect charge points prefix0..prefix(n-1), `concurrency` handshakes at a time; a refusal or a
        failed attempt is retried (with backoff) until the deadline. Returns what it took."""
        self._loop = asyncio.get_running_loop()
        start = time.perf_counter()
        deadline = start + deadline_s
        refused: Counter[int] = Counter()
        failures: Counter[str] = Counter()
        gate = asyncio.Semaphore(concurrency)
        first = len(self.cps)

        async def one(i: int) -> None:
            cid = f"{self.prefix}{first + i}"
            attempt = 0
            while time.perf_counter() < deadline:
                async with gate:
                    try:
                        cp = await self._open(cid, self.source_for(first + i, per_source), handshake_timeout)
                    except WSInvalidStatusError as exc:
                        refused[int(exc.response.status) if exc.response is not None else 0] += 1
                    except Exception as exc:  # noqa: BLE001 - counted by kind, retried
                        failures[type(exc).__name__] += 1
                    else:
                        self.cps.append(cp)
                        if on_connected:
                            on_connected(cp)
                        return
                attempt += 1
                await asyncio.sleep(min(0.1 * 2 ** attempt, 2.0) * random.uniform(0.5, 1.5))

        await asyncio.gather(*(one(i) for i in range(n)))
        return {"connected": len(self.cps) - first, "wanted": n, "seconds": round(time.perf_counter() - start, 2),
                "refused": {str(k): v for k, v in sorted(refused.items())}, "failures": dict(failures)}

    async def close(self, timeout: float = 10.0) -> None:
        for cp in self.cps:
            cp.closing = True
            if cp.timer:
                cp.timer.cancel()
            if not cp.closed and cp.transport is not None:
                cp.transport.disconnect()
        deadline = time.perf_counter() + timeout
        while any(not cp.closed for cp in self.cps) and time.perf_counter() < deadline:
            await asyncio.sleep(0.05)
        self.cps = []

    # --- answers --------------------------------------------------------------------------

    def on_answer(self, cp: ChargePoint, latency: float, error: bool, data: bytes) -> None:
        st = self.stats
        if self.measuring:
            if error:
                st.errors += 1
            else:
                st.ok += 1
                st.hist.add(latency)
        elif error:
            st.errors += 1
        self._next(cp)

    def _next(self, cp: ChargePoint) -> None:
        mode = self.mode
        if mode == CLOSED:
            cp.send_call()
        elif mode == RATE:
            now = time.perf_counter()
            due = cp.due + self.interval
            if due < now - self.interval:
                # fell behind (a stall somewhere): skip the slots missed, no catching up in a burst, and
                # keep this charge point's phase. Starting again from `now` would put every charge point
                # the stall held up on the same instant from then on, and each stall would add to a
                # clump that never spreads again: B6 saw the median latency triple that way, from its
                # own load, while the gateway's CPU per call stayed the same.
                due += math.ceil((now - due) / self.interval) * self.interval
            cp.due = due
            if due <= now:
                cp.send_call()
            else:
                cp.timer = self._loop.call_later(due - now, cp.send_call)
        elif self._quiet is not None and not any(c.waiting for c in self.cps):
            self._quiet.set()

    async def _watchdog(self) -> None:
        """Give up on CALLs unanswered after call_timeout: counted, and the charge point goes on."""
        while True:
            await asyncio.sleep(min(0.5, self.call_timeout / 4))
            limit = time.perf_counter() - self.call_timeout
            for cp in self.cps:
                if cp.waiting and cp.t0 < limit and not cp.closed:
                    cp.waiting = False
                    self.stats.timeouts += 1
                    self._next(cp)

    # --- phases ---------------------------------------------------------------------------

    def alive(self) -> list[ChargePoint]:
        return [cp for cp in self.cps if not cp.closed]

    async def prime(self, timeout: float = 30.0, retry_after: float = 2.0) -> int:
        """One answered CALL per charge point before anything is measured (the gateway's downstream
        subscriptions reach the broker a moment after each connect): a CALL lost then is sent again."""
        self._loop = asyncio.get_running_loop()
        self.mode = IDLE
        deadline = time.perf_counter() + timeout
        pending = [cp for cp in self.alive() if cp.answers == 0]
        while pending and time.perf_counter() < deadline:
            for cp in pending:
                if not cp.waiting or time.perf_counter() - cp.t0 > retry_after:
                    cp.send_call(HEARTBEAT)
            step_end = min(deadline, time.perf_counter() + retry_after)
            while time.perf_counter() < step_end and any(cp.answers == 0 and not cp.closed for cp in pending):
                await asyncio.sleep(0.02)
            pending = [cp for cp in pending if cp.answers == 0 and not cp.closed]
        for cp in self.cps:
            cp.waiting = False
        self.stats = Stats()
        return sum(1 for cp in self.cps if cp.answers > 0 and not cp.closed)

    async def run(self, seconds: float, warmup: float = 1.0, rate: float | None = None,
                  probe: Callable[[], dict[str, float]] | None = None) -> Stats:
        """Drive every charge point (closed loop, or at `rate` calls/s in all) for warmup + seconds;
        returns what the measured `seconds` saw (`probe`: CPU seconds of the processes to watch, read at
        both ends). Stops and waits (bounded) for the last answers."""
        self._loop = asyncio.get_running_loop()
        cps = self.alive()
        self.stats = Stats()
        self.measuring = False
        watchdog = asyncio.create_task(self._watchdog())
        try:
            now = time.perf_counter()
            if rate:
                self.mode = RATE
                self.interval = len(cps) / rate
                for i, cp in enumerate(cps):
                    cp.due = now + self.interval * i / len(cps)
                    cp.timer = self._loop.call_later(cp.due - now, cp.send_call)
            else:
                self.mode = CLOSED
                for cp in cps:
                    cp.send_call()
            await asyncio.sleep(warmup)
            stats = self.stats = Stats()
            before = probe() if probe else {}
            self.measuring = True
            t0 = time.perf_counter()
            await asyncio.sleep(seconds)
            self.measuring = False
            stats.elapsed = time.perf_counter() - t0
            if probe:
                after = probe()
                stats.cpu = {name: after[name] - before.get(name, 0.0) for name in after}
            await self.stop()
            return stats
        finally:
            watchdog.cancel()
            self.mode = IDLE

    async def stop(self, timeout: float = 5.0) -> None:
        """No more CALLs; wait (bounded) for the ones in flight."""
        self.mode = IDLE
        for cp in self.cps:
            if cp.timer:
                cp.timer.cancel()
                cp.timer = None
        if any(cp.waiting and not cp.closed for cp in self.cps):
            self._quiet = asyncio.Event()
            try:
                await asyncio.wait_for(self._quiet.wait(), timeout)
            except TimeoutError:
                pass
            finally:
                self._quiet = None
        for cp in self.cps:
            cp.waiting = False


async def alternate(loads: dict[str, Load], seconds: float, warmup: float, rounds: int = 2,
                    probes: dict[str, Callable[[], dict[str, float]]] | None = None,
                    settle: dict[str, Callable[[], Awaitable[Any]]] | None = None) -> dict[str, Stats]:
    """Measure each load in turn, `rounds` times, seconds/rounds each (so a slow minute of a shared
    machine hits both sides alike); the first turn of each warms up longer. `settle[name]` runs after
    each turn of that load (e.g. until a gateway has sent its MQTT backlog, which would otherwise
    take the shared core from the next turn)."""
    totals = {name: Stats() for name in loads}
    warmed: set[str] = set()
    for _ in range(rounds):
        for name, load in loads.items():
            w = warmup if name not in warmed else min(warmup, 0.5)
            warmed.add(name)
            probe = (probes or {}).get(name)
            totals[name].merge(await load.run(seconds / rounds, warmup=w, probe=probe))
            if settle and name in settle:
                await settle[name]()
    return totals


# --- connections held open (B4) ----------------------------------------------------------------


class Holder:
    """Charge points that connect, boot, and then heartbeat on their interval (for the memory scenario)."""

    def __init__(self, load: Load, heartbeat_interval: float) -> None:
        self.load = load
        # a little ahead of the interval the gateway gave (it allows 10% late): this process's own loop
        # may lag a second while it opens thousands of connections, and a late heartbeat is a lost charger
        self.every = heartbeat_interval * 0.9
        self.booted = 0
        self.heartbeats = 0
        self.errors = 0
        load.on_answer = self.on_answer  # type: ignore[method-assign]

    def on_connected(self, cp: ChargePoint) -> None:
        cp.send_call(BOOT)

    def on_answer(self, cp: ChargePoint, latency: float, error: bool, data: bytes) -> None:
        if error:
            self.errors += 1
        if cp.booted:
            self.heartbeats += 1
        elif not error:
            cp.booted = True
            self.booted += 1
            # the first heartbeat anywhere in the first interval, so they do not all come at once
            cp.timer = asyncio.get_running_loop().call_later(random.uniform(0.05, 0.9) * self.every, self.beat, cp)

    def beat(self, cp: ChargePoint) -> None:
        """A heartbeat every interval, answered or not, as a charger's clock does it."""
        cp.timer = None
        if not cp.closed and not cp.closing:
            cp.send_call(HEARTBEAT)
            cp.timer = asyncio.get_running_loop().call_later(self.every, self.beat, cp)

    async def wait_booted(self, n: int, timeout: float) -> None:
        deadline = time.perf_counter() + timeout
        retry = time.perf_counter() + 5
        while self.booted < n and time.perf_counter() < deadline:
            await asyncio.sleep(0.05)
            if time.perf_counter() > retry:  # a boot answer lost before the downstream subscription: ask again
                retry = time.perf_counter() + 5
                for cp in self.load.cps:
                    if not cp.booted and not cp.closed:
                        cp.send_call(BOOT)


# --- connect storm (B7) -------------------------------------------------------------------------


async def storm(url: str, n: int, *, prefix: str = "ST", deadline_s: float = 120.0, per_source: int = 5_000,
                handshake_timeout: float = 30.0, on_connected: Callable[[ChargePoint], None] | None = None,
                load: Load | None = None) -> tuple[Load, dict[str, Any]]:
    """All `n` charge points try to connect at once; a refused one retries with backoff (jittered,
    doubling from 0.5 s up to 4 s). Returns the load (connections open) and the record: when each
    connection was seen accepted (perf_counter), refusals by HTTP status and first line of the
    answer, failures by kind."""
    load = load or Load(url, prefix)
    accepted_at: list[float] = []
    refused: Counter[str] = Counter()
    failures: Counter[str] = Counter()
    start = time.perf_counter()
    deadline = start + deadline_s

    async def one(i: int) -> None:
        cid = f"{prefix}{i}"
        backoff = 0.5
        while time.perf_counter() < deadline:
            try:
                cp = await load._open(cid, Load.source_for(i, per_source), handshake_timeout)
            except WSInvalidStatusError as exc:
                status = int(exc.response.status) if exc.response is not None else 0
                body = (exc.raw_body or b"").decode(errors="replace").strip().split("\n", 1)[0][:100]
                refused[f"{status} {body}"] += 1
            except Exception as exc:  # noqa: BLE001 - counted by kind, retried
                failures[type(exc).__name__] += 1
            else:
                accepted_at.append(time.perf_counter())
                load.cps.append(cp)
                if on_connected:
                    on_connected(cp)
                return
            await asyncio.sleep(backoff * random.uniform(0.5, 1.5))
            backoff = min(backoff * 2, 4.0)

    await asyncio.gather(*(one(i) for i in range(n)))
    accepted_at.sort()
    return load, {"connected": len(load.cps), "wanted": n, "seconds": round(time.perf_counter() - start, 2),
                  "accepted_at": accepted_at, "refused": dict(refused), "failures": dict(failures)}


