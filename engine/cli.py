"""`ocpp-gateway`: run the gateway, check a config, and the tools around them."""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import signal
import sys

from engine import __version__, ctl, eventloop, gctune, simulate
from engine.config import ConfigError, Loaded, dump_hocon, load_settings_with_warnings

EXIT_CONFIG = 2
EXIT_START = 3


def _add_config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c", "--config", metavar="FILE",
        help="HOCON config file (default: conf/gateway.conf if present, else built-in defaults)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ocpp-gateway",
        description="OCPP-J gateway (1.6, 2.0.1, 2.1) with an EMQX-dialect SQL rules engine.",
    )
    parser.add_argument("--version", action="version", version=f"ocpp-gateway {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = commands.add_parser("run", help="run the gateway", description="Run the gateway until SIGINT or SIGTERM.")
    _add_config_arg(run)
    run.add_argument("--workers", metavar="N",
                     help="processes sharing every port, each a node <node.name>-<i> (node.workers; a number or auto)")
    run.add_argument("--worker", type=int, help=argparse.SUPPRESS)  # set by the supervisor: I am worker I
    check = commands.add_parser(
        "check-config", help="validate a config and print the effective one",
        description="Validate the config (file and OCPPGW_* environment overrides) and print "
        "the effective config with every default filled in, or every error.",
    )
    _add_config_arg(check)
    check.add_argument("--show-secrets", action="store_true", help="print passwords instead of ******")
    tester = commands.add_parser(
        "rule-test", help="run rule SQL against a context, without actions",
        description="Run rule SQL against a test context (EMQX's rule tester) and print the output as JSON. "
        "Exit 0 with the output, 1 if the rule selects nothing, 2 if the SQL or context is wrong.",
    )
    tester.add_argument("sql", help='the rule SQL, e.g. "SELECT payload.x AS x FROM \\"t/#\\""')
    tester.add_argument("--context", default="{}", metavar="JSON",
                        help='the input: message fields (topic, payload, clientid, ...) or an event with "event_type"')
    hasher = commands.add_parser(
        "hash-secret", help="hash an API key secret for dashboard.api_keys",
        description="Print the hash of an API key secret, for dashboard.api_keys { <key> = \"<hash>\" }. "
        "The secret is read from standard input (or --secret).",
    )
    hasher.add_argument("--secret", help="the secret (default: read from standard input)")
    bench = commands.add_parser(
        "bench", help="run the performance scenarios",
        description="Run the performance scenarios (B1 round trip over MQTT, B2 answered by a rule, B3 schema checking, "
        "B4 connections, B5 compiled rule, B6 reload under load, B7 connect storm, B8 dashboard cost, B9 disk buffer cost, B10 cluster: docs/benchmarks.md); "
        "one JSON line each.",
    )
    bench.add_argument("--scenario", default="all", choices=["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B9", "B10", "all"],
                       help="which scenario (default all, in order)")
    bench.add_argument("--scale", default="full", choices=["full", "small"],
                       help="full: the sizes of the bars (200 charge points, B4 50,000, B7 10,000); small: a quick check")
    bench.add_argument("--seconds", type=float, help="each measured phase (default 10 full, 2 small; B6's reload phase 30 full)")
    bench.add_argument("--warmup", type=float, help="before each measured phase (default 2 full, 0.5 small)")
    bench.add_argument("--cps", type=int, help="B1, B2, B3, B6: charge points (default 200 full, 20 small)")
    bench.add_argument("--connections", type=int, help="B4, B7, B8: charge points (default 50,000 / 10,000 / 10,000 full, 500 / 500 / 200 small)")
    bench.add_argument("--conn-rate", type=int, help="B7: the gateway's max_conn_rate (default 1000 full, 250 small)")
    bench.add_argument("--messages", type=int, help="B5: messages per round (default 100,000 full, 10,000 small)")
    bench.add_argument("--workers", type=int, help="B4: the gateway runs node.workers = N, the charge points come from "
                       "several load processes (50,000 under an open-file limit of 20,000 per process)")
    bench.add_argument("--no-pin", action="store_true", help="do not pin the processes to cores with taskset")
    ctl.add_parser(commands)
    simulate.add_parser(commands)
    return parser


def _load(path: str | None) -> Loaded:
    try:
        return load_settings_with_warnings(path)
    except ConfigError as exc:
        for line in exc.errors:
            print(f"config error: {line}", file=sys.stderr)
        sys.exit(EXIT_CONFIG)


def _refused_by_preflight(settings) -> bool:
    """The files and directories the config names, as run needs them (engine/preflight.py); each
    problem printed as a config error. check-config and run both ask, so they refuse the same."""
    from engine.preflight import problems

    found = problems(settings)
    for line in found:
        print(f"config error: {line}", file=sys.stderr)
    return bool(found)


def cmd_check_config(args: argparse.Namespace) -> int:
    from connectors.registry import ResourceConfigError, Resources
    from engine.bus import Bus
    from rules.runtime import RuleEngine, RuleLoadError

    loaded = _load(args.config)
    settings = loaded.settings
    for line in loaded.warnings:  # accepted keys with no effect, deprecated shapes: still a valid config
        print(f"config warning: {line}", file=sys.stderr)
    if _refused_by_preflight(settings):
        return EXIT_CONFIG
    try:
        resources = Resources(settings)
        RuleEngine(Bus(), resources.resolve).compile(settings.rule_engine.rules)
    except (ResourceConfigError, RuleLoadError) as exc:
        for line in exc.errors:
            print(f"config error: {line}", file=sys.stderr)
        return EXIT_CONFIG
    sys.stdout.write(dump_hocon(settings, show_secrets=args.show_secrets))
    return 0


def cmd_rule_test(args: argparse.Namespace) -> int:
    import orjson

    from rules.sql import RuleSyntaxError
    from rules.tester import NoMatch, run_rule_test
    from rules.values import RuleError

    try:
        context = orjson.loads(args.context)
    except orjson.JSONDecodeError as exc:
        print(f"--context is not JSON: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if not isinstance(context, dict):
        print("--context must be a JSON object", file=sys.stderr)
        return EXIT_CONFIG
    try:
        output = run_rule_test(args.sql, context)
    except NoMatch as exc:
        print(f"NOT_MATCH: {exc}", file=sys.stderr)
        return 1
    except (RuleSyntaxError, RuleError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    print(orjson.dumps(output, option=orjson.OPT_INDENT_2, default=str).decode())
    return 0


def _loop_exception_handler(loop: asyncio.AbstractEventLoop, context: dict) -> None:
    """Expected socket races (a peer vanishing under a socket callback) in one line; the rest as usual."""
    from engine import fds

    exc = context.get("exception")
    if exc is not None and fds.is_accept_error(context):
        fds.accept_error(exc)  # counted, one line per 10 s at most (asyncio retries the accept by itself)
        return
    if isinstance(exc, OSError) and exc.errno in (errno.EBADF, errno.ENOTCONN, errno.EPIPE):
        logging.getLogger("ocppgw.loop").debug("%s: %s", context.get("message", "socket callback"), exc)
        return
    loop.default_exception_handler(context)


async def _run(settings, config_path: str | None) -> int:
    from engine.node import Node, NodeError
    from engine.reload import ReloadError

    node = Node(settings, config_path)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(_loop_exception_handler)
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    reloading: set[asyncio.Task] = set()

    async def reload_on_hup() -> None:
        if not node.started:
            logging.getLogger("ocppgw.reload").warning("reload ignored: the node is still starting")
            return
        try:
            await node.reload_from_files()
        except ReloadError as exc:
            logging.getLogger("ocppgw.reload").error("reload refused, the running config stays: %s", "; ".join(exc.errors))

    def hup() -> None:
        task = loop.create_task(reload_on_hup())
        reloading.add(task)
        task.add_done_callback(reloading.discard)

    loop.add_signal_handler(signal.SIGHUP, hup)
    try:
        await node.start()
    except NodeError as exc:
        print(f"cannot start: {exc}", file=sys.stderr)
        await node.stop()
        return EXIT_START
    except Exception:
        logging.getLogger("ocppgw").exception("unexpected error while starting")
        await node.stop()
        return EXIT_START

    def connection_counts() -> tuple[int, int]:
        m = node.ocpp.metrics if node.ocpp is not None else None
        return (m.connections_total, m.connections) if m is not None else (0, 0)

    async with gctune.Freezer(connection_counts):
        await stop.wait()
    await node.stop()
    return 0


def _raise_open_file_limit(settings) -> None:
    """Every connection is a file descriptor: take the hard limit (a login shell's soft 1,024 would
    cap the node near 1,000 charge points), and say so if the listeners may need more than that."""
    from engine import fds

    log = logging.getLogger("ocppgw.fds")
    before, after = fds.raise_nofile_limit()
    if after != before:
        log.info("open-file limit raised from %d to %d", before, after)
    ocpp = settings.gateway.ocpp
    listeners = {f"gateway.ocpp.listeners.{kind}.{name}": listener.max_connections
                 for kind, group in (("ws", ocpp.listeners.ws), ("wss", ocpp.listeners.wss))
                 for name, listener in group.items() if listener.enable} if ocpp.enable else {}
    warning = fds.fd_headroom_warning(listeners, after)
    if warning:
        log.warning("%s", warning)


def cmd_run(args: argparse.Namespace) -> int:
    from engine.config.loader import log_warnings
    from engine.log import setup_logging

    from engine import workers

    loaded = _load(args.config)
    settings = loaded.settings
    try:
        count = workers.worker_count(args.workers if args.workers is not None else settings.node.workers)
    except workers.WorkersError as exc:
        print(f"config error: {'--workers' if args.workers is not None else 'node.workers'}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if _refused_by_preflight(settings):
        return EXIT_CONFIG
    setup_logging(settings.log.level, settings.log.format)
    if args.worker is not None:
        from engine.serve import share_ports

        share_ports()  # a worker: every port is shared with the others
    elif count > 1:
        with eventloop.runner() as runner:
            return runner.run(workers.Supervisor(settings, args.config, count).run())
    log_warnings(loaded.warnings)
    _raise_open_file_limit(settings)
    gctune.tune()
    with eventloop.runner() as runner:
        return runner.run(_run(settings, args.config))


def cmd_hash_secret(args: argparse.Namespace) -> int:
    from engine.admin.common import hash_secret

    secret = args.secret if args.secret is not None else sys.stdin.readline().rstrip("\n")
    if len(secret) < 8:
        print("the secret must be at least 8 characters", file=sys.stderr)
        return EXIT_CONFIG
    print(hash_secret(secret))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    import orjson

    from engine.bench import scenarios

    for name in ("seconds", "warmup", "cps", "connections", "conn_rate", "messages", "workers"):
        value = getattr(args, name)
        if value is not None and (value < 0 if name == "warmup" else value <= 0):
            print(f"--{name.replace('_', '-')} must be {'0 or more' if name == 'warmup' else 'positive'}", file=sys.stderr)
            return EXIT_CONFIG
    opts = scenarios.Options(
        scale=args.scale, seconds=args.seconds, warmup=args.warmup, cps=args.cps, connections=args.connections,
        messages=args.messages, conn_rate=args.conn_rate, pin=not args.no_pin, workers=args.workers,
    )
    scenarios.prepare(opts)
    failed = 0
    for name in scenarios.SCENARIOS if args.scenario == "all" else (args.scenario,):
        try:
            result = scenarios.run(name, opts)
        except Exception as exc:  # noqa: BLE001 - one scenario failing does not stop the others
            failed += 1
            result = {"scenario": name, "error": f"{type(exc).__name__}: {exc}"}
        print(orjson.dumps(result).decode(), flush=True)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    handlers = {"run": cmd_run, "check-config": cmd_check_config, "rule-test": cmd_rule_test, "bench": cmd_bench,
                "hash-secret": cmd_hash_secret, "ctl": ctl.run,
                "simulate": simulate.run_cli}
    if args.command not in handlers:
        parser.print_help()
        sys.exit(EXIT_CONFIG)
    sys.exit(handlers[args.command](args))


if __name__ == "__main__":
    main()
