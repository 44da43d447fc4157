"""Workers: one node on every core. `node.workers = N` makes `run` a supervisor of N worker processes.

Each worker is `ocpp-gateway run --worker I`: a whole node named `<node.name>-<I>`, binding every
listener and the dashboard with SO_REUSEPORT, so the kernel spreads new connections over them.
The supervisor itself serves nothing: it starts the embedded broker once (when `mqtt.server =
embedded`; the workers reach it as an external broker), starts the workers, restarts a worker that
dies (with a backoff, each restart counted in the log), passes SIGHUP on (every worker reloads its
config files) and on SIGINT / SIGTERM stops the workers, then the broker.

The per-worker settings go to the worker as `OCPPGW_...` environment overrides, so a reload in the
worker keeps them: its node name (and MQTT client id, when one is set), the broker, `node.workers = 1`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from engine.children import die_with_parent
from engine.config.schema import Settings

if TYPE_CHECKING:
    from connectors.mqtt import EmbeddedBroker

log = logging.getLogger("ocppgw.workers")

EXIT_CONFIG = 2  # as engine.cli: a worker that exits with these cannot start; restarting would not help
EXIT_START = 3
STOP_TIMEOUT = 30.0  # after SIGTERM, a worker still running is killed
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0
STEADY = 60.0  # a worker that ran this long before it died starts again from the first backoff


class WorkersError(ValueError):
    pass


def worker_count(value: str | int) -> int:
    """`node.workers` (or `run --workers`): a positive whole number, or `auto` (the cores this process may use)."""
    text = str(value).strip().lower()
    if text == "auto":
        try:
            return len(os.sched_getaffinity(0))
        except AttributeError:  # not Linux
            return os.cpu_count() or 1
    if not text.isdigit() or int(text) < 1:
        raise WorkersError(f"expected a positive whole number or auto, not {value!r}")
    return int(text)


def worker_name(name: str, index: int) -> str:
    return f"{name}-{index}"


def worker_env(settings: Settings, index: int, broker: str | None) -> dict[str, str]:
    """The `OCPPGW_...` overrides that make worker `index` of these settings."""
    env = {"OCPPGW_NODE__WORKERS": "1", "OCPPGW_NODE__NAME": worker_name(settings.node.name, index)}
    client_id = settings.mqtt.client_id
    if client_id and "${node.name}" not in client_id:  # empty or with ${node.name}: one per worker already
        env["OCPPGW_MQTT__CLIENT_ID"] = worker_name(client_id, index)
    if broker is not None:  # the embedded broker, started by the supervisor (amqtt: MQTT 3.1.1 only)
        env.update({"OCPPGW_MQTT__SERVER": broker, "OCPPGW_MQTT__PROTO_VER": "v4"})
    # the workers are one cluster (engine/cluster): whichever worker the kernel hands an admin request
    # answers for all of them (clients, call, kick, nodes, stats), and takeover needs no clock
    env["OCPPGW_CLUSTER__ENABLE"] = "true"
    return env


def embedded_broker_url(host: str, port: int) -> str:
    """How a worker on this machine reaches the broker bound to host:port."""
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"mqtt://[{host}]:{port}" if ":" in host else f"mqtt://{host}:{port}"


def backoff(failures: int) -> float:
    """The wait before a restart, after `failures` deaths in a row (each within STEADY of its start)."""
    return float(min(BACKOFF_FIRST * 2 ** (max(failures, 1) - 1), BACKOFF_MAX))


def exit_reason(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _in_worker() -> None:
    """Between fork and exec: die with the supervisor, and ignore SIGHUP until the node handles it
    (an ignored signal stays ignored across exec; a SIGHUP passed on while the worker starts would
    otherwise end it)."""
    die_with_parent()
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


@dataclass
class Worker:
    index: int
    name: str
    process: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    failures: int = 0  # deaths in a row, each within STEADY of its start: the backoff grows with them
    restarts: int = 0
    waiter: asyncio.Task[int] | None = field(default=None, repr=False)


class Supervisor:
    def __init__(self, settings: Settings, config_path: str | None, count: int) -> None:
        self.settings = settings
        self.config_path = config_path
        self.count = count
        self.workers = [Worker(i, worker_name(settings.node.name, i)) for i in range(count)]
        self.broker_url: str | None = None
        self.restarts = 0  # over all workers, since the start
        self._stop = asyncio.Event()
        self._broker: EmbeddedBroker | None = None

    def command(self, worker: Worker) -> list[str]:
        args = [sys.executable, "-m", "engine.cli", "run", "--worker", str(worker.index)]
        if self.config_path is not None:
            args += ["-c", self.config_path]
        return args

    async def spawn(self, worker: Worker) -> None:
        env = dict(os.environ, **worker_env(self.settings, worker.index, self.broker_url))
        worker.process = await asyncio.create_subprocess_exec(
            *self.command(worker), env=env, stdin=asyncio.subprocess.DEVNULL, preexec_fn=_in_worker)
        worker.started_at = time.monotonic()
        worker.waiter = asyncio.ensure_future(worker.process.wait())
        log.info("worker %d (%s) started, pid %d", worker.index, worker.name, worker.process.pid)

    def signal_all(self, sig: int) -> None:
        for worker in self.workers:
            if worker.process is not None and worker.process.returncode is None:
                try:
                    worker.process.send_signal(sig)
                except ProcessLookupError:
                    pass

    async def _start_broker(self) -> None:
        from connectors.mqtt import EmbeddedBroker

        embedded = self.settings.mqtt.embedded
        self._broker = EmbeddedBroker(embedded.bind.host, embedded.bind.port, start_timeout=embedded.start_timeout)
        try:
            await self._broker.start()
        except Exception:
            self._broker = None
            raise
        self.broker_url = embedded_broker_url(embedded.bind.host, embedded.bind.port)

    async def run(self) -> int:
        """Until SIGINT / SIGTERM: 0, or a worker's exit code if it cannot start (the others are stopped)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        code = 0
        try:
            if self.settings.mqtt.server == "embedded":
                try:
                    await self._start_broker()
                except Exception as exc:  # noqa: BLE001 - its message says what failed
                    print(f"cannot start: {exc}", file=sys.stderr)
                    return EXIT_START
            from engine import fds

            _, limit = fds.raise_nofile_limit()  # inherited by the workers
            log.info("%d workers (node.workers), each a node named %s-<i>, sharing each port, each with an "
                     "open-file limit of %d of its own", self.count, self.settings.node.name, limit)
            for worker in self.workers:
                await self.spawn(worker)
            code = await self._watch()
        finally:
            await self._stop_workers()
            if self._broker is not None:
                await self._broker.stop()
        return code

    def reload(self) -> None:
        log.info("SIGHUP: every worker reloads its config")
        self.signal_all(signal.SIGHUP)

    async def _watch(self) -> int:
        stopping = asyncio.ensure_future(self._stop.wait())
        try:
            while True:
                waiters = {w.waiter: w for w in self.workers if w.waiter is not None}
                done, _ = await asyncio.wait([stopping, *waiters], return_when=asyncio.FIRST_COMPLETED)
                if stopping in done:
                    return 0
                for task in done:
                    worker = waiters[task]  # type: ignore[index]
                    worker.waiter = None
                    code = task.result()
                    if code in (EXIT_CONFIG, EXIT_START) and worker.restarts == 0:
                        # at the first start: as a single node, `run` fails (a restart would fail the same)
                        log.error("worker %d (%s) cannot start (%s): stopping every worker", worker.index,
                                  worker.name, exit_reason(code))
                        return code
                    await self._restart_later(worker, code)
        finally:
            stopping.cancel()

    async def _restart_later(self, worker: Worker, code: int) -> None:
        ran = time.monotonic() - worker.started_at
        worker.failures = 1 if ran >= STEADY else worker.failures + 1
        delay = backoff(worker.failures)
        worker.restarts += 1
        self.restarts += 1
        pid = worker.process.pid if worker.process is not None else 0
        if code in (EXIT_CONFIG, EXIT_START):  # a restart that failed (the config file broken since?)
            log.error("worker %d (%s, pid %d) cannot start (%s; its log says why): restart %d of this worker "
                      "(%d in all) in %.1f s", worker.index, worker.name, pid, exit_reason(code), worker.restarts,
                      self.restarts, delay)
        else:
            log.warning("worker %d (%s, pid %d) died (%s) after %.1f s: restart %d of this worker (%d in all) in "
                        "%.1f s; its charge points reconnect to the other workers", worker.index, worker.name, pid,
                        exit_reason(code), ran, worker.restarts, self.restarts, delay)

        async def later() -> int:
            try:
                await asyncio.wait_for(self._stop.wait(), delay)
                return 0  # stopping: no restart
            except asyncio.TimeoutError:
                pass
            await self.spawn(worker)
            assert worker.waiter is not None
            return await worker.waiter

        worker.process = None
        worker.waiter = asyncio.ensure_future(later())

    async def _stop_workers(self) -> None:
        self.signal_all(signal.SIGTERM)
        running = [w.process for w in self.workers if w.process is not None and w.process.returncode is None]
        if not running:
            return
        _, late = await asyncio.wait([asyncio.ensure_future(p.wait()) for p in running], timeout=STOP_TIMEOUT)
        if late:
            log.warning("%d workers still running %g s after SIGTERM: killed", len(late), STOP_TIMEOUT)
            self.signal_all(signal.SIGKILL)
            await asyncio.wait(late)
        for w in self.workers:
            if w.waiter is not None:
                w.waiter.cancel()
