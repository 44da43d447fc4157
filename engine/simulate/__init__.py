"""`ocpp-gateway simulate`: a fleet of simulated charge points in one process.

N charge points (ids PREFIX00001, PREFIX00002, ...) connect to URL/<id> at a
given rate, boot, report their connectors' status, heartbeat at the interval
the CSMS returned, and (scenario `charge`) run charging sessions with meter
values; they answer the CSMS's CALLs as a real charger would and reconnect
with backoff. See `run.Fleet` (the fleet), `charger.ChargePoint` (one charge
point's life on the network), `state.Charger` (what it knows: connectors,
configuration, its CALLs in `calls`), `handlers` (its answers to the CSMS,
one table per version), `sessions` and `transactions` (charging), `link`
(the WebSocket) and `messages` (payloads). The modules import downwards
only: run → charger → handlers, sessions → state → calls → link.

This module stays light: the CLI imports it for every command, and picows is
only imported when a fleet runs.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from engine.simulate.options import PROTOCOLS, SCENARIOS, SimOptions

__all__ = ["SimOptions", "add_parser", "run_cli", "run_fleet"]


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """The `simulate` subcommand, added to the CLI's subparsers."""
    p: argparse.ArgumentParser = commands.add_parser(
        "simulate", help="simulate a fleet of charge points against a gateway",
        description="Run N simulated charge points in one process against an OCPP-J endpoint: staggered "
        "ramp-up, BootNotification, StatusNotification per connector, heartbeats at the interval the server "
        "returns, charging sessions (scenario charge), answers to every CALL of the server, reconnects with "
        "backoff. Prints a live progress line on stderr and a summary at the end (--json for scripts). "
        "Exit 0 if every charge point connected (booted, for boot) with no protocol error, 1 otherwise, "
        "2 for bad options.",
    )
    p.add_argument("--url", help="endpoint: ws[s]://HOST:PORT/PATH; each charge point connects to URL/<id> "
                   "(required, except with --replay: default ws://127.0.0.1:33033/ocpp)")
    p.add_argument("-n", "--count", type=int, default=1, help="number of charge points (default 1)")
    p.add_argument("--proto", choices=PROTOCOLS, default="ocpp1.6", help="OCPP version (default ocpp1.6)")
    p.add_argument("--scenario", choices=SCENARIOS, default="idle",
                   help="boot: boot, report status, close | idle: boot, status, heartbeats | "
                   "charge: idle plus charging sessions (default idle)")
    p.add_argument("--rate", type=float, default=100.0, metavar="R",
                   help="new connections per second during the ramp-up; 0: all at once (default 100)")
    p.add_argument("--duration", type=float, default=60.0, metavar="S",
                   help="seconds to run after the ramp-up; 0: until Ctrl-C (default 60)")
    p.add_argument("--prefix", default="SIM", help="charge point id prefix (default SIM: SIM00001, SIM00002, ...)")
    p.add_argument("--first", type=int, default=1, help="number of the first charge point (default 1)")
    p.add_argument("--connectors", type=int, default=2, help="connectors (1.6) / EVSEs (2.x) per charge point (default 2)")
    p.add_argument("--auth", metavar="USER:PASS", help="HTTP Basic credentials; {cid} is replaced by the charge point id")
    p.add_argument("--heartbeat", type=float, metavar="S",
                   help="heartbeat interval, overriding the one the BootNotification answer gives")
    p.add_argument("--meter-interval", type=float, default=10.0, metavar="S",
                   help="seconds between MeterValues during a session (default 10)")
    p.add_argument("--session-duration", type=float, default=60.0, metavar="S",
                   help="mean charging session length, ±25%% (default 60)")
    p.add_argument("--session-pause", type=float, default=10.0, metavar="S",
                   help="mean pause between sessions on a connector, ±25%% (default 10)")
    p.add_argument("--call-timeout", type=float, default=30.0, metavar="S",
                   help="a CALL not answered within this is a timeout (default 30)")
    p.add_argument("--reboot-delay", type=float, default=1.0, metavar="S",
                   help="offline time after a Reset before reconnecting (default 1)")
    p.add_argument("--source-addresses", type=int, default=0, metavar="K",
                   help="bind connections round-robin to K loopback addresses 127.0.0.2.. when the URL host is "
                   "127.0.0.1, for more than the ~28,000 connections one address allows; 0: one per 25,000 "
                   "charge points (default 0)")
    p.add_argument("--tls-ca", metavar="FILE", help="wss: CA certificates to verify the server with")
    p.add_argument("--tls-cert", metavar="FILE", help="wss: client certificate (may contain {cid}: one per charge point)")
    p.add_argument("--tls-key", metavar="FILE", help="wss: the client certificate's key (may contain {cid})")
    p.add_argument("--tls-insecure", action="store_true", help="wss: do not verify the server's certificate")
    p.add_argument("--seed", type=int, default=1, help="random seed (tags, powers, session lengths)")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.add_argument("-q", "--quiet", action="store_true", help="no live progress line on stderr")
    p.add_argument("--replay", metavar="FILE", help="instead of a fleet: replay the upstream frames of a recorded "
                   "trace (JSON Lines of GET /api/v5/trace/NAME/download) as its charge point, with the recorded timing")
    p.add_argument("--speed", type=float, default=1.0, metavar="N",
                   help="--replay: N times faster than recorded (default 1: the original timing)")
    p.add_argument("--verbose", action="store_true", help="--replay: print every frame sent and received on stderr")
    return p


def run_cli(args: argparse.Namespace) -> int:
    from engine import gctune
    from engine.simulate.run import main

    if args.replay is not None:
        from engine.simulate.replay import DEFAULT_URL, ReplayOptions
        from engine.simulate.replay import main as replay

        return replay(args.replay, ReplayOptions(
            url=args.url or DEFAULT_URL, speed=args.speed, proto=args.proto, auth=args.auth, tls_ca=args.tls_ca, tls_cert=args.tls_cert,
            tls_key=args.tls_key, tls_insecure=args.tls_insecure, verbose=args.verbose,
        ), args.json)
    if args.url is None:
        print("simulate: --url is required (except with --replay)", file=sys.stderr)
        return 2
    gctune.tune()  # thousands of connections here too
    return main(args)


async def run_fleet(options: SimOptions) -> dict[str, Any]:
    from engine.simulate.run import run_fleet as run

    return await run(options)
