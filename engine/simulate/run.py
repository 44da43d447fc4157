"""The fleet: ramp-up, the run, the stop, the live progress line and the summary.

    summary = await run_fleet(SimOptions(url="ws://127.0.0.1:33033/ocpp", count=1000, scenario="charge"))

or, to act on the fleet while it runs (a test sending commands through a backend):

    fleet = Fleet(options); task = asyncio.create_task(fleet.run()); ...; fleet.stop(); summary = await task
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import ipaddress
import logging
import random
import signal
import ssl
import sys
import urllib.parse
from typing import Any, TextIO

from engine import eventloop, gctune
from engine.simulate import handlers
from engine.simulate.charger import ChargePoint
from engine.simulate.options import SimOptions
from engine.simulate.stats import Stats

log = logging.getLogger("ocppgw.simulate")

EPHEMERAL_PORTS_PER_ADDRESS = 25_000  # of the ~28,000 Linux gives one source address by default


def raise_nofile() -> int:
    """Raise the soft open-file limit to the hard one; the limit now in force."""
    try:
        import resource
    except ImportError:  # not on POSIX
        return 0
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        return soft
    return target


def source_addresses(options: SimOptions) -> list[str]:
    """127.0.0.2, 127.0.0.3, ... when connecting to 127.0.0.1 with more than one; else none (the kernel picks)."""
    host = urllib.parse.urlsplit(options.url).hostname
    if host != "127.0.0.1":
        return []
    count = options.source_addresses or (1 + (options.count - 1) // EPHEMERAL_PORTS_PER_ADDRESS)
    if count <= 1:
        return []
    first = int(ipaddress.IPv4Address("127.0.0.2"))
    return [str(ipaddress.IPv4Address(first + k)) for k in range(count)]


class Fleet:
    def __init__(self, options: SimOptions) -> None:
        problems = options.problems()
        if problems:
            raise ValueError("; ".join(problems))
        self.options = options
        self.stats = Stats()
        self.stopping = False
        self.chargers: list[ChargePoint] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.base_url = options.url.rstrip("/")
        self.sources = source_addresses(options)
        self.rng = random.Random(options.seed)
        self.default_config = handlers.default_config(options)
        self.nofile = 0
        self.elapsed = 0.0
        self.ramp_s: float | None = None
        self.run_s = 0.0  # from the start to the stop (the wind-down excluded)
        self.connected_at_stop = 0
        self._stop_requested = asyncio.Event()
        self._ssl: dict[str, ssl.SSLContext] = {}
        self._auth: tuple[str, str] | None = None
        if options.auth is not None:
            user, _, password = options.auth.partition(":")
            self._auth = (user, password)

    # --- what each charge point asks ------------------------------------------------------------

    def source_address(self, index: int) -> str | None:
        if not self.sources:
            return None
        return self.sources[(index - self.options.first) % len(self.sources)]

    def url_for(self, cid: str) -> str:
        return f"{self.base_url}/{urllib.parse.quote(cid, safe='')}"

    def headers_for(self, cid: str) -> dict[str, str]:
        headers = {"Sec-WebSocket-Protocol": self.options.proto}
        if self._auth is not None:
            user, password = (part.replace("{cid}", cid) for part in self._auth)
            headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        return headers

    def ssl_for(self, cid: str) -> ssl.SSLContext | None:
        o = self.options
        if not self.base_url.startswith("wss://"):
            return None
        cert = o.tls_cert.replace("{cid}", cid) if o.tls_cert else None
        key = o.tls_key.replace("{cid}", cid) if o.tls_key else None
        cache_key = f"{cert}|{key}"
        context = self._ssl.get(cache_key)
        if context is None:
            context = ssl.create_default_context(cafile=o.tls_ca)
            if o.tls_insecure:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            if cert:
                context.load_cert_chain(cert, key)
            self._ssl[cache_key] = context
        return context

    # --- the run ---------------------------------------------------------------------------------

    def stop(self) -> None:
        """End the run: every charge point stops its sessions, waits for its answers and closes."""
        self._stop_requested.set()

    async def run(self) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        o = self.options
        if o.tls_cert or o.tls_ca:
            self.ssl_for(o.cid(o.first))  # a bad certificate path fails here, once
        self.nofile = raise_nofile()
        started = loop.time()
        progress = loop.create_task(self._progress(started)) if o.progress else None
        ramp = loop.create_task(self._ramp())
        try:
            await self._until_end(ramp)
        finally:
            self.run_s = loop.time() - started
            self.stats.stopping()
            self.connected_at_stop = self.stats.connected
            self.stopping = True
            if not ramp.done():
                ramp.cancel()
            for cp in self.chargers:
                cp.stop()
            if self.tasks:
                _, pending = await asyncio.wait(self.tasks, timeout=o.drain_timeout + 10.0)
                for task in pending:
                    task.cancel()
                if pending:
                    await asyncio.wait(pending, timeout=5.0)
            self.elapsed = loop.time() - started
            if progress is not None:
                progress.cancel()
                self._print_progress(started, final=True)
        return self.summary()

    async def _ramp(self) -> None:
        loop = asyncio.get_running_loop()
        o = self.options
        start = loop.time()
        for n in range(o.count):
            if self.stopping:
                return
            if o.rate > 0:
                delay = start + n / o.rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            elif n % 500 == 499:
                await asyncio.sleep(0)
            cp = ChargePoint(self, o.first + n)
            self.chargers.append(cp)
            task = loop.create_task(cp.run(), name=f"simulate:{cp.cid}")
            task.add_done_callback(self._charger_done)
            self.tasks.append(task)
        self.ramp_s = loop.time() - start

    def _charger_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("charge point task failed", exc_info=task.exception())
            self.stats.protocol_error("internal")

    async def _until_end(self, ramp: asyncio.Task[None]) -> None:
        loop = asyncio.get_running_loop()
        o = self.options
        stop = loop.create_task(self._stop_requested.wait())
        try:
            await asyncio.wait([ramp, stop], return_when=asyncio.FIRST_COMPLETED)
            if stop.done():
                return
            ramp.result()
            waiting: list[asyncio.Future[Any]] = [stop]
            if o.scenario == "boot":
                waiting.append(loop.create_task(asyncio.wait(self.tasks)))
            await asyncio.wait(waiting, timeout=o.duration or None, return_when=asyncio.FIRST_COMPLETED)
            for extra in waiting[1:]:
                extra.cancel()
        finally:
            stop.cancel()

    # --- progress and summary ---------------------------------------------------------------------

    async def _progress(self, started: float) -> None:
        while True:
            await asyncio.sleep(1.0)
            self._print_progress(started)

    _last_answered = 0
    _last_time = 0.0

    def _print_progress(self, started: float, final: bool = False, stream: TextIO | None = None) -> None:
        stream = stream or sys.stderr
        now = asyncio.get_running_loop().time()
        s = self.stats
        since = (now - (self._last_time or started)) or 1e-9
        rate = (s.calls_answered - self._last_answered) / since
        self._last_answered, self._last_time = s.calls_answered, now
        window = s.window
        p50, p99 = window.percentile(0.5), window.percentile(0.99)
        s.window = type(window)()
        line = (f"{now - started:7.1f}s  connected {s.connected}/{len(self.chargers)}  calls/s {rate:,.0f}  "
                f"answered {s.calls_answered:,}  errors {s.errors}  p50 {_ms(p50)}  p99 {_ms(p99)}  "
                f"tx {s.tx_started:,}")
        if stream.isatty():
            stream.write("\r" + line + "\x1b[K" + ("\n" if final else ""))
        else:
            stream.write(line + "\n")
        stream.flush()

    def summary(self) -> dict[str, Any]:
        o = self.options
        s = self.stats
        out: dict[str, Any] = {
            "url": o.url,
            "proto": o.proto,
            "scenario": o.scenario,
            "count": o.count,
            "started": len(self.chargers),
            "connected": self.connected_at_stop,
            "elapsed_s": round(self.elapsed, 3),
            "run_s": round(self.run_s, 3),
            "ramp_s": None if self.ramp_s is None else round(self.ramp_s, 3),
        }
        out.update(s.summary())
        answered = s.calls_answered if s.answered_at_stop is None else s.answered_at_stop
        out["calls_per_s"] = round(answered / self.run_s, 1) if self.run_s else 0.0
        out["source_addresses"] = self.sources
        out["nofile"] = self.nofile
        return out


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}ms"


async def run_fleet(options: SimOptions) -> dict[str, Any]:
    """Run a fleet to its end (duration, or every charge point booted for `boot`); the summary."""
    return await Fleet(options).run()


# --- the CLI ------------------------------------------------------------------------------------------


def options_from_args(args: argparse.Namespace) -> SimOptions:
    return SimOptions(
        url=args.url, count=args.count, proto=args.proto, scenario=args.scenario, rate=args.rate,
        duration=args.duration, prefix=args.prefix, first=args.first, connectors=args.connectors, auth=args.auth,
        heartbeat=args.heartbeat, meter_interval=args.meter_interval, session_duration=args.session_duration,
        session_pause=args.session_pause, call_timeout=args.call_timeout, reboot_delay=args.reboot_delay,
        source_addresses=args.source_addresses, tls_ca=args.tls_ca, tls_cert=args.tls_cert, tls_key=args.tls_key,
        tls_insecure=args.tls_insecure, seed=args.seed, progress=not args.quiet,
    )


def format_summary(summary: dict[str, Any]) -> str:
    s = summary
    lat = s["latency_ms"]
    lines = [
        f"{s['count']} charge points ({s['proto']}, {s['scenario']}) against {s['url']} for {s['elapsed_s']:.1f}s",
        (f"  connected {s['connected']} (peak {s['connected_peak']}), connects {s['connects']}, "
         f"reconnects {s['reconnects']}, connect failures {s['connect_failures']} {s['connect_errors'] or ''}").rstrip(),
        (f"  boots {s['boots']}, transactions {s['transactions_started']} started / {s['transactions_stopped']} stopped, "
         f"{s['energy_wh'] / 1000:,.1f} kWh"),
        (f"  calls sent {s['calls_sent']:,}, answered {s['calls_answered']:,} ({s['calls_per_s']:,.1f}/s), "
         f"CALLERRORs {s['callerrors_received']}, timeouts {s['timeouts']}"),
        (f"  latency ms: p50 {lat['p50']}  p90 {lat['p90']}  p99 {lat['p99']}  max {lat['max']}"
         f"  (stopping: p50 {s['stop_latency_ms']['p50']}  p99 {s['stop_latency_ms']['p99']})"),
        (f"  server calls {s['server_calls_received']} (answered {s['server_calls_answered']}, "
         f"CALLERROR {s['server_callerrors_sent']})"),
        f"  frames sent {s['frames_sent']:,} / received {s['frames_received']:,}",
        (f"  2.1: SENDs sent {s['sends_sent']:,} / received {s['sends_received']:,}, "
         f"CALLRESULTERRORs received {s['callresulterrors_received']}"),
        f"  protocol errors {s['protocol_errors']} {s['protocol_error_kinds'] or ''}".rstrip(),
        "  per action (sent/answered/errors): " + ", ".join(
            f"{name} {a['sent']}/{a['answered']}/{a['errors']}" for name, a in s["actions"].items()),
    ]
    return "\n".join(lines)


def exit_code(summary: dict[str, Any]) -> int:
    """0: every charge point connected (booted, for `boot`) and no protocol error; 1 otherwise."""
    if summary["protocol_errors"] or summary["timeouts"]:
        return 1
    if summary["scenario"] == "boot":
        return 0 if summary["boots"] >= summary["count"] else 1
    return 0 if summary["connected"] >= summary["count"] else 1


def main(args: argparse.Namespace) -> int:
    import orjson

    try:
        options = options_from_args(args)
        fleet = Fleet(options)
    except ValueError as exc:
        print(f"simulate: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("picows").setLevel(logging.CRITICAL)  # connect failures are counted, not logged one by one

    async def go() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()

        def interrupt() -> None:
            if fleet.stopping or fleet._stop_requested.is_set():
                assert task is not None
                task.cancel()  # a second Ctrl-C: do not wait for the sessions to stop
            else:
                fleet.stop()

        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, interrupt)
            except (NotImplementedError, RuntimeError):
                pass
        # thousands of connections here too: keep them out of the collector's full passes
        async with gctune.Freezer(lambda: (fleet.stats.connects, fleet.stats.connected)):
            return await fleet.run()

    with eventloop.runner() as runner:
        try:
            summary = runner.run(go())
        except asyncio.CancelledError:
            print("simulate: interrupted", file=sys.stderr)
            return 130
        except (OSError, ssl.SSLError) as exc:  # a certificate that cannot be read, mostly
            print(f"simulate: {exc}", file=sys.stderr)
            return 2
    if args.json:
        print(orjson.dumps(summary).decode())
    else:
        print(format_summary(summary))
    return exit_code(summary)
