"""The admin API's config is the cluster's (engine/cluster/config_sync.py): real node processes on
one real mosquitto, asked over HTTP."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import pytest

from tests.servers import Mosquitto
from tests.test_cluster import AUTH, admin, node, until


async def configs(http: httpx.AsyncClient, gw) -> str:
    answer = await http.get(admin(gw) + "/configs")
    assert answer.status_code == 200, answer.text
    return answer.text


def has(text: str, value: int) -> bool:
    return f"max_mqueue_len = {value}" in text


@pytest.fixture
def nodes(tmp_path: Path, mosquitto: Mosquitto):
    made = {name: node(tmp_path, mosquitto, name) for name in ("a", "b", "c")}
    try:
        yield made
    finally:
        for gw in made.values():
            if gw.proc is not None and gw.proc.poll() is None:
                gw.proc.send_signal(signal.SIGCONT)
            gw.stop()


async def running(http: httpx.AsyncClient, gw, names: set[str]) -> None:
    async def seen() -> bool:
        answer = await http.get(admin(gw) + "/nodes")
        return {n["node"] for n in answer.json() if n["node_status"] == "running"} == names

    await until(seen)


async def test_a_config_change_on_one_node_applies_on_every_node(nodes) -> None:
    a, b, c = nodes["a"], nodes["b"], nodes["c"]
    a.start()
    b.start()
    async with httpx.AsyncClient(auth=AUTH, timeout=10) as http:
        await running(http, a, {"a", "b"})
        answer = await http.put(admin(a) + "/configs", content="gateway.ocpp.dnstream.max_mqueue_len = 9")
        assert answer.status_code == 200, answer.text
        assert answer.json()["nodes"] == [{"node": "b", "status": "reloaded", "errors": []}]
        assert has(await configs(http, a), 9) and has(await configs(http, b), 9)

        # refused on the node asked: refused everywhere, nothing applied anywhere
        answer = await http.put(admin(a) + "/configs", content='gateway.ocpp.dnstream.max_mqueue_len = "lots"')
        assert answer.status_code == 400, answer.text
        for gw in (a, b):
            assert has(await configs(http, gw), 9)

        # a change made on b, while c is not there yet: c takes it when it starts
        answer = await http.put(admin(b) + "/configs", content="gateway.ocpp.dnstream.max_mqueue_len = 11")
        assert answer.status_code == 200, answer.text
        assert answer.json()["nodes"] == [{"node": "a", "status": "reloaded", "errors": []}]
        c.start()

        async def c_has_it() -> bool:
            return has(await configs(http, c), 11)

        await until(c_has_it)

        # a node down during a change gets it when it is back
        b.stop()
        await running(http, a, {"a", "c"})
        answer = await http.put(admin(a) + "/configs", content="gateway.ocpp.dnstream.max_mqueue_len = 12")
        assert answer.status_code == 200, answer.text
        assert answer.json()["nodes"] == [{"node": "c", "status": "reloaded", "errors": []}]
        b.lines.clear()  # its first run's "started" line
        b.start()

        async def b_has_it() -> bool:
            return has(await configs(http, b), 12)

        await until(b_has_it)
        for gw in (a, b, c):
            assert has(await configs(http, gw), 12)
