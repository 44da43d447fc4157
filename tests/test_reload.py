"""Hot reload with charge points connected: what changes, what stays, what is refused."""

from __future__ import annotations

import asyncio
import logging
import signal

import orjson
import pytest
import websockets

from engine.bus import Message
from engine.config import load_settings
from engine.reload import ReloadError
from tests.gateway import GatewayProcess
from tests.http_target import HttpTarget
from tests.ocpp_support import Backend, eventually, recv_json, running_gateway, subscribed
from tests.servers import free_port

pytestmark = pytest.mark.timeout(90)


def rule(target: str) -> str:
    return f'''
    rule_engine.rules.route {{
      sql = """SELECT payload.n AS n FROM "in/#" """
      actions = [{{function = republish, args {{ topic = "{target}", payload = "${{n}}" }}}}]
    }}
    '''


async def reconfigure(gw, tmp_path, extra: str):
    """The gateway's own config plus `extra`, loaded and applied as a reload would."""
    base = (tmp_path / "gateway.conf").read_text()
    path = tmp_path / "next.conf"
    path.write_text(base + extra)
    return await gw.node.reload(load_settings(path, {}))


async def test_rules_swap_and_a_broken_set_changes_nothing(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port, rule("out/a")) as gw:
        got: list[str] = []
        gw.node.bus.subscribe("out/#", lambda m: got.append(m.topic))
        async with websockets.connect(gw.url("STAY"), subprotocols=["ocpp1.6"]) as ws:
            gw.node.bus.publish(Message("in/1", b'{"n": 1}', origin="test"))
            report = await reconfigure(gw, tmp_path, rule("out/b"))
            assert "rule_engine" in report.changed
            gw.node.bus.publish(Message("in/1", b'{"n": 2}', origin="test"))
            assert got == ["out/a", "out/b"]  # before the reload the old rule, after it the new
            with pytest.raises(ReloadError) as info:
                await reconfigure(gw, tmp_path, rule("out/c") + 'rule_engine.rules.bad { sql = "SELECT nope( FROM" }\n')
            assert any(e.startswith("rule bad: line 1") for e in info.value.errors)
            gw.node.bus.publish(Message("in/1", b'{"n": 3}', origin="test"))
            assert got == ["out/a", "out/b", "out/b"]  # the refused config changed nothing
            await ws.send('[2,"1","Heartbeat",{}]')
            await eventually(lambda: gw.ctx.sessions["STAY"].recv_cnt == 1)
        assert [e["reason"] for e in gw.events.named("client_disconnected")] == ["normal"]


async def test_upstream_topic_and_mountpoint_apply_to_connected_charge_points(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port) as gw:
        backend = Backend(mosquitto.port, "ocpp/#", "ev/#")
        async with websockets.connect(gw.url("LIVE"), subprotocols=["ocpp1.6"]) as ws:
            await subscribed(gw, "LIVE")
            await ws.send('[2,"a","Heartbeat",{}]')
            assert (await backend.next())[0] == "ocpp/cp/LIVE"
            await reconfigure(gw, tmp_path, 'gateway.ocpp { mountpoint = "ev/", upstream.topic = "in/${cid}" }\n')
            await ws.send('[2,"b","Heartbeat",{}]')
            assert (await backend.next())[0] == "ev/in/LIVE"
            # its downstream subscription moved with the mountpoint
            await eventually(lambda: "ev/cs/LIVE" in gw.node.bridge._on_broker)
            backend.publish("ev/cs/LIVE", {"MessageTypeId": 2, "UniqueId": "r1", "Action": "Reset", "Payload": {"type": "Soft"}})
            assert await recv_json(ws) == [2, "r1", "Reset", {"type": "Soft"}]
            assert gw.ctx.sessions["LIVE"].connected_at  # never dropped
        backend.close()


async def test_listener_bind_change_restarts_only_that_listener(tmp_path, mosquitto):
    other, new_port = free_port(), free_port()
    conf = f'gateway.ocpp.listeners.ws.other {{ bind = "127.0.0.1:{other}" }}\n'
    async with running_gateway(tmp_path, mosquitto.port, conf) as gw:
        p = ["ocpp1.6"]
        async with websockets.connect(f"ws://127.0.0.1:{other}/ocpp/KEEP", subprotocols=p) as keep:
            old_port = gw.node.listeners["ocpp:ws:default"].settings.bind.port
            move = conf + f'gateway.ocpp.listeners.ws.default.bind = "127.0.0.1:{new_port}"\n'
            base = (tmp_path / "gateway.conf").read_text().replace(f'"127.0.0.1:{old_port}"', f'"127.0.0.1:{new_port}"')
            (tmp_path / "next.conf").write_text(base + move)
            report = await gw.node.reload(load_settings(tmp_path / "next.conf", {}))
            assert f"listener ocpp:ws:default restarted on 127.0.0.1:{new_port}" in report.changed
            with pytest.raises(OSError):
                await websockets.connect(f"ws://127.0.0.1:{old_port}/ocpp/X", subprotocols=p, open_timeout=2)
            async with websockets.connect(f"ws://127.0.0.1:{new_port}/ocpp/NEW", subprotocols=p):
                assert "NEW" in gw.ctx.sessions
            await keep.send('[2,"k","Heartbeat",{}]')  # the other listener's charge point never noticed
            await eventually(lambda: gw.ctx.sessions["KEEP"].recv_cnt == 1)


async def test_a_listening_socket_option_restarts_the_listener(tmp_path, mosquitto):
    """backlog and reuseaddr belong to the listening socket: a change is a restart on the same address
    (reported), not a silent no-op; nodelay applies in place to new connections."""
    async with running_gateway(tmp_path, mosquitto.port) as gw:
        bind = gw.node.listeners["ocpp:ws:default"].settings.bind
        report = await reconfigure(gw, tmp_path, "gateway.ocpp.listeners.ws.default.tcp_options.nodelay = false\n")
        assert report.changed == ["listener ocpp:ws:default"], report.changed
        report = await reconfigure(gw, tmp_path, "gateway.ocpp.listeners.ws.default.tcp_options.backlog = 16\n")
        assert f"listener ocpp:ws:default restarted on {bind}" in report.changed, report.changed
        assert gw.node.listeners["ocpp:ws:default"].settings.tcp_options.backlog == 16
        async with websockets.connect(gw.url("AFTER"), subprotocols=["ocpp1.6"]) as ws:
            await ws.send('[2,"a","Heartbeat",{}]')
            await eventually(lambda: "AFTER" in gw.ctx.sessions and gw.ctx.sessions["AFTER"].recv_cnt == 1)


async def test_a_reload_that_opens_a_listener_to_the_network_warns_once(tmp_path, mosquitto, caplog):
    """The start's warning about a listener anybody on the network may use without a login also
    comes from a reload that makes one so (a file reload, PUT /configs, the API), once, not again
    for a later reload that leaves it as it is."""
    caplog.set_level(logging.WARNING, "ocppgw.node")
    port = free_port()
    async with running_gateway(tmp_path, mosquitto.port) as gw:
        def warned() -> list[str]:
            return [r.getMessage() for r in caplog.records if "without a login" in r.getMessage()]
        assert warned() == []  # the test gateway listens on loopback
        extra = f'gateway.ocpp.listeners.ws.wide {{ bind = "0.0.0.0:{port}" }}\n'
        await reconfigure(gw, tmp_path, extra)
        assert len(warned()) == 1 and "ocpp:ws:wide" in warned()[0], warned()
        await reconfigure(gw, tmp_path, extra + "gateway.ocpp.default_heartbeat_interval = 90s\n")
        assert len(warned()) == 1, warned()


async def test_websocket_options_apply_to_new_connections_without_a_restart(tmp_path, mosquitto):
    """Compression, frame size and pings change in place: the charge point connected before the
    reload stays, with what it started with; one that connects after gets the new values."""
    async with running_gateway(tmp_path, mosquitto.port) as gw:
        p = ["ocpp1.6"]
        async with websockets.connect(gw.url("BEFORE"), subprotocols=p, compression="deflate") as before:
            assert before.response.headers.get("Sec-WebSocket-Extensions") is None
            report = await reconfigure(gw, tmp_path, """gateway.ocpp.listeners.ws.default.websocket {
              compress = true, max_frame_size = "1KB", ping_interval = 30s }
            """)
            assert report.changed == ["listener ocpp:ws:default"], report.changed
            async with websockets.connect(gw.url("AFTER"), subprotocols=p, compression="deflate") as after:
                assert after.response.headers["Sec-WebSocket-Extensions"].startswith("permessage-deflate")
                await after.send('[2,"c","Heartbeat",{}]')
                await eventually(lambda: "AFTER" in gw.ctx.sessions and gw.ctx.sessions["AFTER"].recv_cnt == 1)
                assert gw.ctx.sessions["AFTER"].transport.ping_interval == 30
                big = '[2,"b","DataTransfer",{"vendorId":"x","data":"%s"}]' % ("y" * 2000)
                await before.send(big)  # the old limit (2 MB) still holds for the old connection
                await eventually(lambda: gw.ctx.sessions["BEFORE"].recv_cnt == 1)
                await after.send(big)  # the new one: 1 KB
                await asyncio.wait_for(after.wait_closed(), 5)
                assert after.close_code == 1009
            assert gw.ctx.sessions["BEFORE"].transport.ping_interval is None
            assert not before.close_code


async def test_authentication_turned_on_applies_to_new_connections(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port) as gw:
        p = ["ocpp1.6"]
        async with websockets.connect(gw.url("OPEN"), subprotocols=p) as before:
            gw.node.user_store.add("SECURE", "pw")
            await reconfigure(gw, tmp_path, "gateway.ocpp.authentication.enable = true\n")
            with pytest.raises(websockets.InvalidStatus) as info:
                await websockets.connect(gw.url("NOPE"), subprotocols=p)
            assert info.value.response.status_code == 401
            async with websockets.connect(gw.url("SECURE"), subprotocols=p,
                                          additional_headers={"Authorization": "Basic U0VDVVJFOnB3"}):
                assert "SECURE" in gw.ctx.sessions
            await before.send('[2,"1","Heartbeat",{}]')  # already connected: stays
            await eventually(lambda: gw.ctx.sessions["OPEN"].recv_cnt == 1)


async def test_a_changed_action_takes_over_the_waiting_messages(tmp_path, mosquitto):
    target = HttpTarget()  # down for now
    actions = '''
    connectors.http.hook {{ url = "{url}" }}
    actions.http.a {{ connector = hook, parameters.path = "{path}", resource_opts.health_check_interval = 200ms }}
    actions.http.same {{ connector = hook, resource_opts.health_check_interval = 200ms }}
    rule_engine.rules.r {{ sql = """SELECT payload.n AS n FROM "in/#" """, actions = ["http:a", "http:same"] }}
    '''
    async with running_gateway(tmp_path, mosquitto.port, actions.format(url=target.url, path="/old")) as gw:
        for n in range(3):
            gw.node.bus.publish(Message("in/1", orjson.dumps({"n": n}), origin="test"))
        old_a = gw.node.resources.actions["http:a"]
        same = gw.node.resources.actions["http:same"]
        assert old_a.metrics.queuing == 3
        await reconfigure(gw, tmp_path, actions.format(url=target.url, path="/new"))
        new_a = gw.node.resources.actions["http:a"]
        assert new_a is not old_a and gw.node.resources.actions["http:same"] is same  # unchanged: kept
        assert new_a.metrics.queuing == 3 and old_a.metrics.queuing == 0
        gw.node.bus.publish(Message("in/1", orjson.dumps({"n": 3}), origin="test"))
        await target.start()
        try:
            await eventually(lambda: new_a.metrics.success == 4 and same.metrics.success == 4)
            # rendered before the reload: the old path; after it: the new one
            got = sorted((orjson.loads(body)["n"], path) for _, path, _, body in target.received if path != "/")
            assert got == [(0, "/old"), (1, "/old"), (2, "/old"), (3, "/new")]
        finally:
            await target.stop()


async def test_changes_that_need_a_restart_are_reported(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port) as gw:
        report = await reconfigure(gw, tmp_path, "mqtt.buffer.max_messages = 5\n")
        assert report.needs_restart == ["mqtt"]


async def test_sighup_reloads_the_file(tmp_path):
    conf = tmp_path / "gateway.conf"
    gw = GatewayProcess(tmp_path, config="log.level = info\n")
    gw.start()
    try:
        conf.write_text(rule("out/x"))
        gw.signal(signal.SIGHUP)
        gw.wait_log(r"config reloaded: rule_engine")
        conf.write_text('rule_engine.rules.r { sql = "SELECT FROM" }\n')
        gw.signal(signal.SIGHUP)
        gw.wait_log(r"reload refused, the running config stays: rule r: ")
        assert "Traceback" not in gw.log
    finally:
        assert gw.stop() == 0


async def test_reload_keeps_unchanged_connections_running(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port, rule("out/a")) as gw:
        async with websockets.connect(gw.url("C1"), subprotocols=["ocpp1.6"]) as ws:
            for i in range(5):
                await reconfigure(gw, tmp_path, rule(f"out/{i}"))
            await ws.send('[2,"1","Heartbeat",{}]')
            await eventually(lambda: gw.ctx.sessions["C1"].recv_cnt == 1)
            await asyncio.sleep(0.1)
            assert not gw.events.named("client_disconnected")


async def test_reload_keeps_the_compiled_schemas_unless_their_files_changed(tmp_path, mosquitto):
    import shutil

    from engine.ocpp.schemas import DEFAULT_SCHEMA_DIR

    schemas = tmp_path / "schemas"
    shutil.copytree(DEFAULT_SCHEMA_DIR / "ocpp1.6", schemas / "ocpp1.6")
    conf = f'gateway.ocpp {{ message_format_checking = all, json_schema_dir = "{schemas}" }}\n'
    async with running_gateway(tmp_path, mosquitto.port, conf) as gw:
        first = gw.ctx.registry
        assert first is not None
        await reconfigure(gw, tmp_path, rule("out/a"))
        assert gw.ctx.registry is first  # nothing under json_schema_dir changed: not compiled again
        async with websockets.connect(gw.url("CP1"), subprotocols=["ocpp1.6"]) as ws:
            await ws.send('[2,"1","Heartbeat",{}]')
            await eventually(lambda: gw.ctx.sessions["CP1"].recv_cnt == 1)
            heartbeat = schemas / "ocpp1.6" / "Heartbeat.json"
            text = heartbeat.read_text().replace('"properties": {},', '"properties": {}, "required": ["x"],')
            heartbeat.write_text(text)
            await reconfigure(gw, tmp_path, rule("out/a"))
            assert gw.ctx.registry is not first  # an edited schema file is read again
            await ws.send('[2,"2","Heartbeat",{}]')
            answer = await recv_json(ws)
            assert answer[:4] == [4, "2", "OccurenceConstraintViolation", "payload: required property 'x' missing"]


async def test_a_reload_compiles_only_the_rules_that_changed(tmp_path, mosquitto):
    def other(topic: str) -> str:
        return f'''
        rule_engine.rules.other {{
          sql = """SELECT clientid FROM "{topic}" """
          actions = [{{function = console}}]
        }}
        '''

    async with running_gateway(tmp_path, mosquitto.port, rule("out/a") + other("x/#")) as gw:
        before = {rule_id: running.rule for rule_id, running in gw.node.rules.rules.items()}
        await reconfigure(gw, tmp_path, rule("out/b") + other("y/#"))  # route: same SQL, new action
        after = gw.node.rules.rules
        assert after["route"].rule is before["route"]  # same SQL: not compiled again
        assert after["other"].rule is not before["other"] and after["other"].rule.topics == ["y/#"]
        got: list[str] = []
        gw.node.bus.subscribe("out/#", lambda m: got.append(m.topic))
        gw.node.bus.publish(Message("in/1", b'{"n": 1}', origin="test"))
        assert got == ["out/b"]  # the kept rule runs the new action
