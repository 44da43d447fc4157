"""The `ocpp-gateway` command as an operator uses it: real processes, real sockets, real signals."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time

import paho.mqtt.client as paho
import pytest

from tests.gateway import BIN, GatewayProcess, pid_alive, wait_dead

pytestmark = pytest.mark.timeout(90)


def cli(*args: str, cwd=None, env=None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BIN, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=60)


def test_version_and_help():
    out = cli("--version")
    assert out.returncode == 0 and out.stdout.startswith("ocpp-gateway 0.")
    for args in (["--help"], ["run", "--help"], ["check-config", "--help"]):
        out = cli(*args)
        assert out.returncode == 0 and "usage: ocpp-gateway" in out.stdout, args
    assert "-c FILE" in cli("run", "--help").stdout


def test_no_command_prints_help_and_fails():
    out = cli()
    assert out.returncode != 0 and "usage: ocpp-gateway" in out.stdout


def test_check_config_prints_effective_config(tmp_path):
    conf = tmp_path / "gw.conf"
    conf.write_text('gateway.ocpp.mountpoint = "ev/"\nmqtt.password = "s3cret"\n')
    out = cli("check-config", "-c", str(conf))
    assert out.returncode == 0, out.stderr
    assert 'mountpoint = "ev/"' in out.stdout
    assert 'awaiting_timeout = "30s"' in out.stdout
    assert "s3cret" not in out.stdout and 'password = "******"' in out.stdout


@pytest.mark.parametrize(
    "text,env,expected",
    [
        ("mqtt.nonsense = 1", {}, "config error: {file}: mqtt.nonsense = 1: unknown key"),
        ('mqtt.qos = "one"', {}, 'config error: {file}: mqtt.qos = "one": expected an integer'),
        ('gateway.ocpp.idle_timeout = "soon"', {}, 'config error: {file}: gateway.ocpp.idle_timeout = "soon": expected a duration'),
        ("", {"OCPPGW_MQTT__BUFFER__MAX_MESSAGES": "many"},
         'config error: environment OCPPGW_MQTT__BUFFER__MAX_MESSAGES: mqtt.buffer.max_messages = "many": expected an integer'),
        ("node {\n  name = \n}}\n", {}, "config error: {file}:3:"),
    ],
)
def test_config_errors_through_the_cli(tmp_path, text, env, expected):
    conf = tmp_path / "gw.conf"
    conf.write_text(text)
    for command in ("check-config", "run"):
        out = cli(command, "-c", str(conf), env={**os.environ, **env})
        assert out.returncode == 2, (command, out.stderr)
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1, out.stderr
        assert lines[0].startswith(expected.format(file=conf)), lines[0]
        assert "Traceback" not in out.stderr and out.stdout == ""


def test_unreadable_config_file(tmp_path):
    out = cli("run", "-c", str(tmp_path / "nope.conf"))
    assert out.returncode == 2
    assert out.stderr.strip() == f"config error: {tmp_path / 'nope.conf'}: cannot read the config file: No such file or directory"


def test_run_with_no_config_serves_mqtt_and_stops_cleanly(tmp_path):
    gw = GatewayProcess(tmp_path).start()
    broker = gw.broker_pid()
    received: list[tuple[str, bytes]] = []
    sub = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="watcher")
    sub.on_message = lambda c, u, m: received.append((m.topic, m.payload))
    sub.connect("127.0.0.1", gw.mqtt_port)
    sub.subscribe("#", qos=1)
    sub.loop_start()
    pub = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="publisher")
    pub.connect("127.0.0.1", gw.mqtt_port)
    pub.loop_start()
    time.sleep(0.3)
    pub.publish("hello/world", b"hi", qos=1).wait_for_publish(5)
    deadline = time.monotonic() + 5
    while not received and time.monotonic() < deadline:
        time.sleep(0.05)
    assert received == [("hello/world", b"hi")]
    for c in (sub, pub):
        c.loop_stop()
        c.disconnect()
    gw.signal(signal.SIGTERM)
    assert gw.wait() == 0
    assert wait_dead(broker), "the embedded broker outlived the gateway"
    assert "node" in gw.log and "stopped" in gw.log
    assert "Traceback" not in gw.log
    assert (tmp_path / "data").is_dir()


def test_sigint_stops_too(tmp_path):
    gw = GatewayProcess(tmp_path).start()
    broker = gw.broker_pid()
    gw.signal(signal.SIGINT)
    assert gw.wait() == 0
    assert wait_dead(broker)


def test_killed_gateway_takes_its_broker_along(tmp_path):
    gw = GatewayProcess(tmp_path).start()
    broker = gw.broker_pid()
    assert pid_alive(broker)
    gw.signal(signal.SIGKILL)
    gw.wait()
    assert wait_dead(broker), "orphan broker after SIGKILL"


def test_broker_port_in_use_is_a_clear_error(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        gw = GatewayProcess(tmp_path, env={"OCPPGW_MQTT__EMBEDDED__BIND": f"127.0.0.1:{port}"})
        gw.start(wait_for=None)
        assert gw.wait() == 3
        gw.wait_log(rf"cannot start: mqtt.embedded.bind 127.0.0.1:{port}: address 127.0.0.1:{port} is already in use")
        assert "Traceback" not in gw.log


def test_embedded_broker_is_restarted_if_it_dies(tmp_path):
    gw = GatewayProcess(tmp_path).start()
    first = gw.broker_pid()
    os.kill(first, signal.SIGKILL)
    gw.wait_log(r"embedded MQTT broker exited with code -9; restarting")
    gw.wait_count("embedded MQTT broker listening", 2)
    pids = re.findall(r"listening on \S+ \(pid (\d+)\)", gw.log)
    assert int(pids[1]) != first
    gw.wait_log(r"mqtt bridge connected", timeout=15)
    assert gw.stop() == 0
    assert wait_dead(int(pids[1]))


def test_run_against_external_mosquitto(tmp_path, mosquitto):
    gw = GatewayProcess(tmp_path, config=f'mqtt.server = "mqtt://127.0.0.1:{mosquitto.port}"\nmqtt.reconnect.initial_interval = 200ms\n')
    gw.start()
    gw.wait_log(rf"mqtt bridge connected to 127.0.0.1:{mosquitto.port}")
    assert "embedded MQTT broker" not in gw.log
    mosquitto.kill()
    gw.wait_log("mqtt bridge lost the broker")
    mosquitto.start()
    gw.wait_count("mqtt bridge connected", 2)
    assert gw.stop() == 0
    assert "Traceback" not in gw.log


def test_json_log_format(tmp_path):
    gw = GatewayProcess(tmp_path, env={"OCPPGW_LOG__FORMAT": "json"}).start(wait_for='"node \\S+ started"')
    assert gw.stop() == 0
    entries = [json.loads(line) for line in gw.lines]
    assert {"time", "level", "logger", "msg"} <= set(entries[0])
    assert any(e["msg"].startswith("node ") and e["msg"].endswith(" stopped") for e in entries)


def test_bad_rules_through_the_cli(tmp_path):
    conf = tmp_path / "gw.conf"
    conf.write_text('rule_engine.rules.r1 { sql = "SELECT upper() FROM \\"t/#\\"" }\n')
    out = cli("check-config", "-c", str(conf))
    assert out.returncode == 2
    assert out.stderr.strip() == "config error: rule r1: line 1, column 8: upper() takes 1 argument, not 0"
    gw = GatewayProcess(tmp_path, config=conf.read_text())
    gw.start(wait_for=None)
    assert gw.wait() == 3
    gw.wait_log(r"cannot start: rules do not load:")
    gw.wait_log(r"rule r1: line 1, column 8: upper\(\) takes 1 argument, not 0")
    assert "Traceback" not in gw.log and "embedded MQTT broker" not in gw.log  # refused before starting anything


def test_loop_handler_keeps_expected_socket_races_to_one_quiet_line(caplog):
    import asyncio
    import errno
    import logging

    from engine.cli import _loop_exception_handler

    loop = asyncio.new_event_loop()
    try:
        with caplog.at_level(logging.DEBUG):
            _loop_exception_handler(loop, {"message": "Exception in callback add_writer", "exception": OSError(errno.EBADF, "Bad file descriptor")})
            assert all(r.levelno == logging.DEBUG for r in caplog.records) and "Traceback" not in caplog.text
            _loop_exception_handler(loop, {"message": "something else", "exception": RuntimeError("boom")})
        assert any(r.levelno == logging.ERROR and "something else" in r.getMessage() for r in caplog.records)
    finally:
        loop.close()


def test_ocpp_traffic_reaches_subscribers_of_the_embedded_broker(tmp_path):
    """The default setup end to end: a charge point's frames on the embedded broker, a command back."""
    import asyncio

    import websockets

    gw = GatewayProcess(tmp_path).start()
    received: list[tuple[str, bytes]] = []
    sub = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="backend")
    sub.on_message = lambda c, u, m: received.append((m.topic, m.payload))
    sub.connect("127.0.0.1", gw.mqtt_port)
    sub.subscribe("ocpp/cp/#", qos=1)
    sub.loop_start()
    time.sleep(0.3)

    async def charge_point() -> list:
        async with websockets.connect(f"ws://127.0.0.1:{gw.ocpp_port}/ocpp/CP1", subprotocols=["ocpp1.6"]) as ws:
            await ws.send('[2,"b1","BootNotification",{"chargePointVendor":"V","chargePointModel":"M"}]')
            await ws.send('[2,"h1","Heartbeat",{}]')
            deadline = time.monotonic() + 10
            while len(received) < 2 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            sub.publish("ocpp/cs/CP1", b'{"MessageTypeId":3,"UniqueId":"b1","Payload":{"status":"Accepted","interval":300,"currentTime":"2026-01-01T00:00:00Z"}}', qos=1)
            return json.loads(await asyncio.wait_for(ws.recv(), 10))

    try:
        answer = asyncio.run(charge_point())
        assert [t for t, _ in received] == ["ocpp/cp/CP1", "ocpp/cp/CP1"]
        assert json.loads(received[0][1])["Action"] == "BootNotification"
        assert answer == [3, "b1", {"status": "Accepted", "interval": 300, "currentTime": "2026-01-01T00:00:00Z"}]
    finally:
        sub.loop_stop()
        sub.disconnect()
        assert gw.stop() == 0


def _popen_with(**kwargs):
    """GatewayProcess.start with more Popen arguments (a session of its own, rlimits in the child)."""
    import functools
    from unittest import mock

    return mock.patch("tests.gateway.subprocess.Popen", functools.partial(subprocess.Popen, **kwargs))


def test_ctrl_c_to_the_process_group_stops_cleanly_with_the_embedded_broker(tmp_path):
    """A terminal's Ctrl-C signals the whole foreground process group. The embedded broker must not
    take it (it would die under the node, which would log 'restarting' and could not flush); the node
    stops it itself, last."""
    gw = GatewayProcess(tmp_path)
    with _popen_with(start_new_session=True):  # the gateway leads its own group, as a shell's job does
        gw.start()
    broker = gw.broker_pid()
    gw.wait_log(r"mqtt bridge connected", timeout=15)
    os.killpg(gw.proc.pid, signal.SIGINT)
    assert gw.wait() == 0
    assert wait_dead(broker)
    assert "restarting" not in gw.log and "exited with code" not in gw.log, gw.log
    stopping = gw.log.index("stopping")
    assert gw.log.index("embedded MQTT broker stopped") > stopping  # stopped by the node, after the rest
    assert "Traceback" not in gw.log


def _limits(pid: int) -> tuple[int, int]:
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max open files"):
                soft, hard = line.split()[3:5]
                return int(soft), int(hard)
    raise AssertionError("no open-file limit in /proc/<pid>/limits")


def test_run_raises_its_open_file_limit_and_warns_when_listeners_need_more(tmp_path):
    import resource

    def low_soft_limit() -> None:  # what a login shell gives: soft 256 here, hard 4096
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 4096))

    from tests.servers import free_port

    conf = (f"gateway.ocpp.listeners.ws.default.max_connections = 4000\n"
            f'gateway.ocpp.listeners.ws.other {{ bind = "127.0.0.1:{free_port()}", max_connections = 500 }}\n')
    gw = GatewayProcess(tmp_path, config=conf)
    with _popen_with(preexec_fn=low_soft_limit):
        gw.start()
    try:
        assert _limits(gw.proc.pid) == (4096, 4096)
        gw.wait_log(r"open-file limit raised from 256 to 4096")
        line = gw.wait_log(r"\[warning\].*the listeners accept up to 4500 connections.*open-file limit is 4096").group(0)
        assert "gateway.ocpp.listeners.ws.other.max_connections = 500" in line
    finally:
        assert gw.stop() == 0


def test_no_headroom_warning_when_the_listeners_fit():
    from engine.fds import fd_headroom_warning

    assert fd_headroom_warning({"a": 1000, "b": 24}, 1024) is None
    assert "up to 1025" in fd_headroom_warning({"a": 1000, "b": 25}, 1024)


def test_loop_handler_counts_accept_errors_in_one_line_per_period(caplog):
    import asyncio
    import errno
    import logging

    from engine import fds
    from engine.cli import _loop_exception_handler

    loop = asyncio.new_event_loop()
    before = fds.stats.accept_errors["emfile"]
    try:
        with caplog.at_level(logging.DEBUG):
            for _ in range(50):  # asyncio reports every failed accept (it retries after a second)
                _loop_exception_handler(loop, {"message": "socket.accept() out of system resource",
                                               "exception": OSError(errno.EMFILE, "Too many open files"),
                                               "socket": None})
        lines = [r for r in caplog.records if "accepting a connection failed" in r.getMessage()]
        assert len(lines) <= 1 and "Traceback" not in caplog.text  # once per 10 s at most (0 if logged just before)
        assert fds.stats.accept_errors["emfile"] == before + 50
    finally:
        loop.close()
