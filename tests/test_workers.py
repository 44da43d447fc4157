"""`node.workers = N`: a real `ocpp-gateway run` supervising N worker processes that share each port.

Which worker holds a charge point's socket is read from the kernel (psutil: the worker process
whose TCP connection has the charge point's address as its peer), not from the gateway.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
from pathlib import Path

import httpx
import orjson
import psutil
import pytest
import websockets

from engine.config.types import Bind
from engine.serve import BindError, bind_socket, share_ports
from engine.workers import WorkersError, backoff, embedded_broker_url, worker_count
from tests.gateway import BIN, GatewayProcess, pid_alive, wait_dead
from tests.servers import free_port

pytestmark = pytest.mark.timeout(120)


def started_workers(gw: GatewayProcess) -> dict[int, int]:
    """Worker index → pid of its latest start, from the supervisor's log."""
    return {int(i): int(pid) for i, pid in re.findall(r"worker (\d+) \(\S+\) started, pid (\d+)", gw.log)}


def broker_processes(gw: GatewayProcess) -> list[psutil.Process]:
    assert gw.proc is not None
    return [p for p in psutil.Process(gw.proc.pid).children(recursive=True)
            if "connectors.mqtt.embedded_main" in " ".join(p.cmdline())]


def start_workers(tmp_path: Path, count: int, conf: str = "", args: tuple[str, ...] = ()) -> GatewayProcess:
    gw = GatewayProcess(tmp_path, config=f'node.name = "gw"\n{conf}')
    gw.args += list(args)
    gw.start(wait_for=None)
    for i in range(count):
        gw.wait_log(rf"node gw-{i} started")
    return gw


class ChargePoint:
    """Connects, says one Heartbeat, stays until the socket closes, then reconnects."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.connections = 0
        self.local: tuple[str, int] | None = None

    async def run(self) -> None:
        while True:
            try:
                async with websockets.connect(self.url, subprotocols=["ocpp1.6"], open_timeout=5) as ws:
                    self.local = ws.transport.get_extra_info("sockname")[:2]
                    self.connections += 1
                    await ws.send(orjson.dumps([2, "hb", "Heartbeat", {}]).decode())
                    await ws.wait_closed()
            except (OSError, websockets.WebSocketException, asyncio.TimeoutError):
                pass
            self.local = None
            await asyncio.sleep(0.2)


def owner(pids: list[int], local: tuple[str, int] | None) -> int | None:
    """The worker whose socket has `local` (a charge point's address) as its peer."""
    if local is None:
        return None
    for pid in pids:
        try:
            conns = psutil.Process(pid).net_connections(kind="tcp")
        except psutil.NoSuchProcess:
            continue
        if any(c.raddr and (c.raddr.ip, c.raddr.port) == tuple(local) for c in conns):
            return pid
    return None


async def until(predicate, timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.1)


async def test_workers_share_the_port_and_a_killed_worker_is_restarted(tmp_path):
    gw = await asyncio.to_thread(start_workers, tmp_path, 2, "node.workers = 2\n")
    try:
        assert len(broker_processes(gw)) == 1, "one embedded broker for all workers"
        assert gw.log.count("embedded MQTT broker listening") == 1
        first = started_workers(gw)
        assert sorted(first) == [0, 1]
        cps = [ChargePoint(f"ws://127.0.0.1:{gw.ocpp_port}/ocpp/cp{i}") for i in range(30)]
        tasks = [asyncio.create_task(cp.run()) for cp in cps]
        pids = list(first.values())
        await until(lambda: all(owner(pids, cp.local) for cp in cps))
        owners = {cp.url: owner(pids, cp.local) for cp in cps}
        assert set(owners.values()) == set(pids), "the connections are spread over both workers"
        # the workers are one cluster: whichever worker answers, it lists every charge point
        admin = "http://" + gw.env["OCPPGW_DASHBOARD__LISTENERS__HTTP__BIND"] + "/api/v5"
        async with httpx.AsyncClient(auth=("admin", "public"), timeout=10) as api:
            for _ in range(6):  # new connections each time: the kernel picks the worker
                listed = (await api.get(f"{admin}/gateways/ocpp/clients?limit=100", headers={"connection": "close"})).json()
                assert sorted(c["clientid"] for c in listed["data"]) == sorted(f"cp{i}" for i in range(30)), listed["meta"]
                assert {c["node"] for c in listed["data"]} == {"gw-0", "gw-1"}
            nodes = (await api.get(f"{admin}/nodes")).json()
            assert sorted(n["node"] for n in nodes if n["node_status"] == "running") == ["gw-0", "gw-1"]

        victim = first[1]
        on_victim = [cp for cp in cps if owners[cp.url] == victim]
        others = [cp for cp in cps if owners[cp.url] != victim]
        os.kill(victim, signal.SIGKILL)
        await asyncio.to_thread(gw.wait_log, rf"worker 1 \(gw-1, pid {victim}\) died \(killed by SIGKILL\)")
        await asyncio.to_thread(gw.wait_count, "node gw-1 started", 2)
        now = started_workers(gw)
        assert now[1] != victim and now[0] == first[0]
        live = list(now.values())
        await until(lambda: all(cp.connections >= 2 and owner(live, cp.local) for cp in on_victim))
        assert all(cp.connections == 1 for cp in others), "the other worker's charge points kept their sockets"
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

        broker = broker_processes(gw)[0].pid
        gw.signal(signal.SIGTERM)
        assert await asyncio.to_thread(gw.wait) == 0
        for pid in (*live, broker):
            assert await asyncio.to_thread(wait_dead, pid), f"pid {pid} outlived the supervisor"
        assert gw.log.count("node gw-0 stopped") == 1 and gw.log.count("node gw-1 stopped") == 1
        assert "Traceback" not in gw.log
    finally:
        gw.stop()


def test_sighup_reloads_every_worker_and_run_workers_overrides_the_config(tmp_path):
    gw = start_workers(tmp_path, 2, "node.workers = 1\n", args=("--workers", "2"))
    try:
        conf = tmp_path / "gateway.conf"
        conf.write_text(conf.read_text() + "log.level = debug\n")
        gw.signal(signal.SIGHUP)
        gw.wait_count("config reloaded: log", 2)
        assert "worker 2 " not in gw.log
        assert gw.stop() == 0
    finally:
        gw.stop()


def test_a_restart_that_fails_is_retried_and_the_node_keeps_serving(tmp_path):
    gw = start_workers(tmp_path, 2, "node.workers = 2\n")
    try:
        conf = tmp_path / "gateway.conf"
        good = conf.read_text()
        conf.write_text(good + "gateway.ocpp.listeners.ws.default.max_connections = lots\n")
        os.kill(started_workers(gw)[1], signal.SIGKILL)
        gw.wait_log(r"worker 1 \(gw-1, pid \d+\) cannot start \(exit code 2; its log says why\): restart 2 ")
        assert gw.proc is not None and gw.proc.poll() is None, "the supervisor keeps running"
        assert pid_alive(started_workers(gw)[0]), "the other worker keeps serving"
        conf.write_text(good)
        gw.wait_count("node gw-1 started", 2)
        assert gw.stop() == 0
    finally:
        gw.stop()


def test_workers_auto_is_one_per_core(tmp_path):
    cores = len(os.sched_getaffinity(0))
    gw = start_workers(tmp_path, cores, 'node.workers = "auto"\n')
    try:
        assert sorted(started_workers(gw)) == list(range(cores))
        assert gw.stop() == 0
    finally:
        gw.stop()


def test_killed_supervisor_takes_workers_and_broker_along(tmp_path):
    gw = start_workers(tmp_path, 2, "node.workers = 2\n")
    children = [*started_workers(gw).values(), broker_processes(gw)[0].pid]
    assert all(pid_alive(pid) for pid in children)
    gw.signal(signal.SIGKILL)
    gw.wait()
    for pid in children:
        assert wait_dead(pid), f"pid {pid} outlived a killed supervisor"


def test_a_worker_that_cannot_start_stops_them_all(tmp_path):
    with socket.socket() as busy:  # no SO_REUSEPORT: the workers cannot share this one
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        gw = GatewayProcess(tmp_path, config="node.workers = 2\n",
                            env={"OCPPGW_GATEWAY__OCPP__LISTENERS__WS__DEFAULT__BIND": f"127.0.0.1:{port}"})
        gw.start(wait_for=None)
        assert gw.wait(60) == 3
        gw.wait_log(r"worker \d \(\S+\) cannot start \(exit code 3\): stopping every worker")
        gw.wait_log(rf"cannot start: .*127.0.0.1:{port}")
        assert "Traceback" not in gw.log


@pytest.mark.parametrize(("args", "conf", "expected"), [
    (["--workers", "0"], "", "config error: --workers: expected a positive whole number or auto, not '0'"),
    (["--workers", "many"], "", "config error: --workers: expected a positive whole number or auto"),
    ([], "node.workers = -2\n", "node.workers = \"-2\": expected a positive whole number or auto"),
])
def test_bad_worker_counts_are_config_errors(tmp_path, args, conf, expected):
    path = tmp_path / "gateway.conf"
    path.write_text(conf)
    result = subprocess.run([BIN, "run", "-c", str(path), *args], capture_output=True, text=True, timeout=60,
                            env=dict(os.environ, OCPPGW_DASHBOARD__LISTENERS__HTTP__BIND=f"127.0.0.1:{free_port()}"))
    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_shared_ports_bind_twice_and_only_then():
    port = free_port()
    first = bind_socket(Bind("127.0.0.1", port), "test")
    first.listen()
    try:
        with pytest.raises(BindError):
            bind_socket(Bind("127.0.0.1", port), "test")
    finally:
        first.close()
    share_ports()
    try:
        a = bind_socket(Bind("127.0.0.1", port), "test")
        b = bind_socket(Bind("127.0.0.1", port), "test")
        a.listen()
        b.listen()
        a.close()
        b.close()
    finally:
        share_ports(False)


def test_restart_backoff_doubles_up_to_its_cap():
    assert [backoff(n) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]
    assert backoff(50) == 30.0


def test_worker_count_and_broker_url():
    assert worker_count("3") == 3 and worker_count(2) == 2
    assert worker_count("AUTO") == len(os.sched_getaffinity(0))
    for bad in ("0", "-1", "x", "1.5"):
        with pytest.raises(WorkersError):
            worker_count(bad)
    assert embedded_broker_url("0.0.0.0", 1883) == "mqtt://127.0.0.1:1883"
    assert embedded_broker_url("::", 1883) == "mqtt://[::1]:1883"
