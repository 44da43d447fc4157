"""1,100 silent sockets against `ocpp-gateway run` under an open-file limit of 1,024: the admin API still
answers during the flood (the last descriptors are kept), the flood is counted and logged, the silent
sockets are closed at websocket.idle_timeout, and a charge point then connects."""

from __future__ import annotations

import functools
import resource
import select
import socket
import subprocess
import time
from unittest import mock

import httpx
import pytest
from websockets.sync.client import connect

from tests.gateway import GatewayProcess

pytestmark = pytest.mark.timeout(120)


def test_silent_socket_flood_under_a_low_open_file_limit(tmp_path):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 1500:
        pytest.skip("this test needs 1,100 sockets of its own")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1500), hard))

    def limit_1024() -> None:  # soft and hard: `run` cannot raise it
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))

    gw = GatewayProcess(tmp_path, config="gateway.ocpp.listeners.ws.default.websocket.idle_timeout = 2s\n")
    admin = "http://" + gw.env["OCPPGW_DASHBOARD__LISTENERS__HTTP__BIND"] + "/api/v5"
    with mock.patch("tests.gateway.subprocess.Popen", functools.partial(subprocess.Popen, preexec_fn=limit_1024)):
        gw.start()
    silent: list[socket.socket] = []
    try:
        for _ in range(1100):
            silent.append(socket.create_connection(("127.0.0.1", gw.ocpp_port), timeout=10))
        # during the flood: the admin API answers, and the gateway says what is going on
        with httpx.Client(timeout=10, auth=("admin", "public")) as client:
            assert client.get(f"{admin}/status").status_code == 200
        gw.wait_log(r"\[error\] ocppgw.fds: connection closed at accept: descriptor \d+ of an open-file limit of 1024")
        # every silent socket is closed by the gateway: at the timeout, or at accept if it came too late
        open_ = {s.fileno(): s for s in silent}
        poller = select.poll()
        for fd in open_:
            poller.register(fd, select.POLLIN)
        deadline = time.monotonic() + 60
        while open_ and time.monotonic() < deadline:
            for fd, _ in poller.poll(1000):
                try:
                    data = open_[fd].recv(1)
                except ConnectionResetError:
                    data = b""
                assert data == b"", data
                poller.unregister(fd)
                del open_[fd]
        assert not open_, f"{len(open_)} silent sockets still open"
        with connect(f"ws://127.0.0.1:{gw.ocpp_port}/ocpp/AFTER", subprotocols=["ocpp1.6"], open_timeout=10) as ws:
            assert ws.subprotocol == "ocpp1.6"
            with httpx.Client(timeout=10, auth=("admin", "public")) as client:
                stats = client.get(f"{admin}/prometheus/stats").text
        assert 'ocppgw_accept_errors_total{reason="fd_reserve"}' in stats
        assert 'ocppgw_handshakes_refused_total{reason="handshake_timeout"}' in stats
        assert "\nprocess_max_fds 1024.0\n" in stats  # prometheus_client's standard process collector
        assert "Traceback" not in gw.log
    finally:
        for s in silent:
            s.close()
        assert gw.stop() == 0
