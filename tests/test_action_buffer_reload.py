"""A reload with disk buffers: a changed action takes over the file and what waits in it, an
unchanged one keeps running, and no file is left open (or opened twice) after the node stops."""

from __future__ import annotations

import sqlite3

import orjson
import pytest

from connectors import action_store
from engine.bus import Message
from engine.config import load_settings
from tests.http_target import HttpTarget
from tests.ocpp_support import eventually, running_gateway

pytestmark = pytest.mark.timeout(90)

ACTIONS = '''
connectors.http.hook {{ url = "{url}" }}
actions.http.a {{ connector = hook, parameters.path = "{path}",
                  resource_opts {{ health_check_interval = 200ms, buffer_mode = disk }} }}
actions.http.same {{ connector = hook, resource_opts {{ health_check_interval = 200ms, buffer_mode = disk }} }}
rule_engine.rules.r {{ sql = """SELECT payload.n AS n FROM "in/#" """, actions = ["http:a", "http:same"] }}
'''


async def test_a_reload_hands_the_disk_buffer_to_the_changed_action(tmp_path, mosquitto):
    target = HttpTarget()  # down for now
    async with running_gateway(tmp_path, mosquitto.port, ACTIONS.format(url=target.url, path="/old")) as gw:
        for n in range(3):
            gw.node.bus.publish(Message("in/1", orjson.dumps({"n": n}), origin="test"))
        old_a = gw.node.resources.actions["http:a"]
        same = gw.node.resources.actions["http:same"]
        await eventually(lambda: old_a.disk_items == 3 and same.disk_items == 3)
        a_file = old_a.store
        path = tmp_path / "next.conf"
        path.write_text((tmp_path / "gateway.conf").read_text() + ACTIONS.format(url=target.url, path="/new"))
        await gw.node.reload(load_settings(path, {}))
        new_a = gw.node.resources.actions["http:a"]
        assert new_a is not old_a and gw.node.resources.actions["http:same"] is same
        assert new_a.store is a_file and a_file.users == 1 and same.store.users == 1  # one opening each
        assert new_a.metrics.queuing == 3 and new_a.disk_items == 3
        gw.node.bus.publish(Message("in/1", orjson.dumps({"n": 3}), origin="test"))
        await target.start()
        try:
            await eventually(lambda: new_a.metrics.success == 4 and same.metrics.success == 4)
            await eventually(lambda: new_a.disk_items == 0 and same.disk_items == 0)
            got = sorted((orjson.loads(body)["n"], p) for _, p, _, body in target.received if p != "/")
            assert got == [(0, "/old"), (1, "/old"), (2, "/old"), (3, "/new")]
        finally:
            await target.stop()
    assert action_store._OPEN == {}  # every file closed with the node


async def test_a_reload_that_removes_a_disk_action_empties_its_file(tmp_path, mosquitto):
    target = HttpTarget()  # down
    async with running_gateway(tmp_path, mosquitto.port, ACTIONS.format(url=target.url, path="/old")) as gw:
        for n in range(3):
            gw.node.bus.publish(Message("in/1", orjson.dumps({"n": n}), origin="test"))
        old_a = gw.node.resources.actions["http:a"]
        await eventually(lambda: old_a.disk_items == 3)
        a_file = old_a.store
        path = tmp_path / "next.conf"
        path.write_text((tmp_path / "gateway.conf").read_text() + 'actions.http.a.enable = false\n'
                        'rule_engine.rules.r.actions = ["http:same"]\n')
        await gw.node.reload(load_settings(path, {}))
        assert "http:a" not in gw.node.resources.actions
        assert old_a.metrics.dropped_other == 3 and a_file.items == 0


async def test_a_reload_that_fails_leaves_the_buffers_as_they_were(tmp_path, mosquitto):
    from engine.reload import ReloadError

    target = HttpTarget()  # down
    async with running_gateway(tmp_path, mosquitto.port, ACTIONS.format(url=target.url, path="/old")) as gw:
        for n in range(3):
            gw.node.bus.publish(Message("in/1", orjson.dumps({"n": n}), origin="test"))
        a, same = gw.node.resources.actions["http:a"], gw.node.resources.actions["http:same"]
        await eventually(lambda: a.disk_items == 3 and same.disk_items == 3)  # `same` runs once a's row is written
        path = tmp_path / "next.conf"
        # a changed action (its file opened by the new set), a removed one, and a rule that does not compile
        path.write_text((tmp_path / "gateway.conf").read_text() + 'actions.http.same.enable = false\n'
                        'actions.http.a.parameters.path = "/new"\n'
                        'rule_engine.rules.r { sql = "SELECT FROM", actions = ["http:a"] }\n')
        with pytest.raises(ReloadError):
            await gw.node.reload(load_settings(path, {}))
        assert gw.node.resources.actions["http:a"] is a and gw.node.resources.actions["http:same"] is same
        assert a.metrics.queuing == 3 and same.metrics.queuing == 3
    for name in ("a", "same"):  # kept by the stop, none dropped
        db = sqlite3.connect(tmp_path / "data" / "buffers" / "gw-test" / f"action_http_{name}.db")
        assert db.execute("SELECT count(*) FROM items").fetchone()[0] == 3
        db.close()
    assert action_store._OPEN == {}  # the file the failed reload opened is closed with the node
