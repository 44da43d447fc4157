"""HTTP webhook actions against a real HTTP server: retries, failures, expiry, outages, overflow."""

from __future__ import annotations

import asyncio
import logging

import orjson
import pytest

from engine.bus import Message
from engine.node import NodeError
from tests.http_target import HttpTarget, http_target
from tests.ocpp_support import eventually, running_gateway

pytestmark = pytest.mark.timeout(60)


def conf(url: str, opts: str = "", params: str = "") -> str:
    return f'''
    connectors.http.hook {{ url = "{url}", headers {{ x-api-key = "k1" }} }}
    actions.http.alerts {{
      connector = hook
      parameters {{ path = "/alerts/${{clientid}}", headers {{ x-seq = "${{n}}" }} {params} }}
      resource_opts {{ retry_interval = 50ms, health_check_interval = 200ms {opts} }}
    }}
    rule_engine.rules.r {{ sql = """SELECT clientid, payload.n AS n FROM "in/#" """, actions = ["http:alerts"] }}
    '''


def publish(gw, n: int, clientid: str = "CP1") -> None:
    gw.node.bus.publish(Message(f"in/{clientid}", orjson.dumps({"n": n}), origin="test", headers={"clientid": clientid}))


def invariant(metrics) -> None:
    m = metrics
    assert m.matched == m.success + m.failed + m.dropped + m.inflight + m.queuing, m


async def test_every_message_arrives_once_in_order_through_503s(tmp_path, mosquitto):
    async with http_target() as target:
        target.answer = lambda attempt: 503 if attempt <= 6 else 200
        async with running_gateway(tmp_path, mosquitto.port, conf(target.url)) as gw:
            for n in range(20):
                publish(gw, n)
            action = gw.node.resources.actions["http:alerts"]
            await eventually(lambda: action.metrics.success == 20)
            assert [orjson.loads(body)["n"] for _, _, _, body in target.received] == list(range(20))
            method, path, headers, body = target.received[0]
            assert (method, path) == ("POST", "/alerts/CP1")
            assert headers["x-api-key"] == "k1" and headers["x-seq"] == "0"
            assert headers["content-type"] == "application/json"
            assert orjson.loads(body) == {"clientid": "CP1", "n": 0}
            m = action.metrics
            assert (m.matched, m.failed, m.dropped, m.retried) == (20, 0, 0, 6)
            invariant(m)


async def test_client_errors_fail_without_retry(tmp_path, mosquitto):
    async with http_target() as target:
        target.answer = lambda attempt: 400 if attempt % 2 else 201
        async with running_gateway(tmp_path, mosquitto.port, conf(target.url)) as gw:
            for n in range(6):
                publish(gw, n)
            action = gw.node.resources.actions["http:alerts"]
            await eventually(lambda: action.metrics.success + action.metrics.failed == 6)
            assert (action.metrics.success, action.metrics.failed, action.metrics.retried) == (3, 3, 0)
            assert target.attempts == 6
            invariant(action.metrics)


async def test_a_server_that_never_answers_hits_the_ttl(tmp_path, mosquitto):
    async with http_target() as target:
        target.answer = lambda attempt: None
        opts = ", request_ttl = 1s"
        params = ", request_timeout = 200ms"
        async with running_gateway(tmp_path, mosquitto.port, conf(target.url, opts, params)) as gw:
            for n in range(3):
                publish(gw, n)
            action = gw.node.resources.actions["http:alerts"]
            await eventually(lambda: action.metrics.dropped_expired == 3, timeout=10)
            assert action.metrics.success == 0 and action.metrics.retried >= 1
            invariant(action.metrics)


async def test_messages_wait_while_the_server_is_down(tmp_path, mosquitto):
    target = HttpTarget()  # not started yet: connection refused
    async with running_gateway(tmp_path, mosquitto.port, conf(target.url)) as gw:
        connector = gw.node.resources.connectors["http:hook"]
        await eventually(lambda: connector.status == "disconnected")
        for n in range(5):
            publish(gw, n)
        action = gw.node.resources.actions["http:alerts"]
        assert action.metrics.queuing == 5
        await target.start()
        try:
            await eventually(lambda: action.metrics.success == 5)
            assert connector.status == "connected"
            assert [orjson.loads(b)["n"] for *_, b in target.received] == list(range(5))
            invariant(action.metrics)
        finally:
            await target.stop()


async def test_buffer_overflow_drops_the_oldest_and_counts(tmp_path, mosquitto):
    target = HttpTarget()
    opts = ", max_buffer_messages = 5"
    async with running_gateway(tmp_path, mosquitto.port, conf(target.url, opts)) as gw:
        connector = gw.node.resources.connectors["http:hook"]
        await eventually(lambda: connector.status == "disconnected")
        for n in range(12):
            publish(gw, n)
        action = gw.node.resources.actions["http:alerts"]
        assert (action.metrics.dropped_queue_full, action.metrics.queuing) == (7, 5)
        await target.start()
        try:
            await eventually(lambda: action.metrics.success == 5)
            assert [orjson.loads(b)["n"] for *_, b in target.received] == list(range(7, 12))
            invariant(action.metrics)
        finally:
            await target.stop()


async def test_body_template_and_method(tmp_path, mosquitto):
    async with http_target() as target:
        params = ', method = put, body = """{"cp": "${clientid}", "value": ${n}}"""'
        async with running_gateway(tmp_path, mosquitto.port, conf(target.url, params=params)) as gw:
            publish(gw, 41, "CP9")
            action = gw.node.resources.actions["http:alerts"]
            await eventually(lambda: action.metrics.success == 1)
            method, path, headers, body = target.received[0]
            assert (method, path, orjson.loads(body)) == ("PUT", "/alerts/CP9", {"cp": "CP9", "value": 41})


@pytest.mark.parametrize(
    "text,expected",
    [
        ('connectors.http.h { url = "ftp://x" }', "connectors.http.h.url = 'ftp://x': expected an http:// or https:// URL"),
        ('connectors.http.h { url = "http://x:99999" }', "connectors.http.h.url = 'http://x:99999': the port is not a number"),
        ('connectors.http.h { url = "http://x" }\nactions.http.a { connector = nope }', "actions.http.a.connector = 'nope': no connectors.http.nope"),
        ('connectors.http.h { url = "http://x" }\nactions.http.a { connector = h, parameters.path = "/${}" }', "actions.http.a.parameters: empty placeholder"),
        ('connectors.http.h { url = "http://x" }\nactions.http.a { connector = h, parameters.body = "${x" }', "actions.http.a.parameters: unclosed placeholder"),
    ],
)
async def test_bad_action_config_is_refused_at_load(tmp_path, mosquitto, text, expected):
    with pytest.raises(NodeError) as info:
        async with running_gateway(tmp_path, mosquitto.port, text):
            pass
    assert expected in str(info.value)


async def test_max_retries_bounds_the_attempts(tmp_path, mosquitto):
    async with http_target() as target:
        target.answer = lambda attempt: 503
        async with running_gateway(tmp_path, mosquitto.port, conf(target.url, ", max_retries = 2")) as gw:
            publish(gw, 1)
            action = gw.node.resources.actions["http:alerts"]
            await eventually(lambda: action.metrics.failed == 1)
            assert (action.metrics.retried, target.attempts) == (2, 3)
            invariant(action.metrics)


async def test_a_window_of_500s_loses_nothing(tmp_path, mosquitto):
    """The server answers 500 for a while (a deploy, a crash loop), then 200: every message arrives,
    once each and in order, within the action's budget."""
    loop = asyncio.get_running_loop()
    async with http_target() as target:
        window_ends = loop.time() + 1.5
        target.answer = lambda attempt: 500 if loop.time() < window_ends else 200
        async with running_gateway(tmp_path, mosquitto.port, conf(target.url, ", request_ttl = 30s")) as gw:
            for n in range(50):
                publish(gw, n)
            action = gw.node.resources.actions["http:alerts"]
            await eventually(lambda: action.metrics.success == 50, timeout=30)
            assert [orjson.loads(body)["n"] for *_, body in target.received] == list(range(50))
            m = action.metrics
            assert (m.failed, m.dropped) == (0, 0) and m.retried >= 1
            invariant(m)


@pytest.mark.parametrize("status", [500, 501, 507, 599, 408, 429])
async def test_server_errors_timeouts_and_busy_are_retried(tmp_path, mosquitto, status):
    async with http_target() as target:
        target.answer = lambda attempt: status if attempt <= 2 else 200
        async with running_gateway(tmp_path, mosquitto.port, conf(target.url)) as gw:
            publish(gw, 7)
            action = gw.node.resources.actions["http:alerts"]
            await eventually(lambda: action.metrics.success == 1)
            assert (action.metrics.retried, action.metrics.failed, target.attempts) == (2, 0, 3)


async def test_failures_are_logged_without_flooding(tmp_path, mosquitto, caplog):
    async with http_target() as target:
        target.answer = lambda attempt: 400
        with caplog.at_level(logging.WARNING, logger="ocppgw.connector"):
            async with running_gateway(tmp_path, mosquitto.port, conf(target.url)) as gw:
                for n in range(30):
                    publish(gw, n)
                action = gw.node.resources.actions["http:alerts"]
                await eventually(lambda: action.metrics.failed == 30)
        failed = [r for r in caplog.records if "failed" in r.getMessage()]
        assert len(failed) == 1 and "HTTP 400" in failed[0].getMessage()  # 30 failures, counted, one line


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 413, 422])
async def test_other_client_errors_fail_at_once(tmp_path, mosquitto, status):
    async with http_target() as target:
        target.answer = lambda attempt: status
        async with running_gateway(tmp_path, mosquitto.port, conf(target.url)) as gw:
            publish(gw, 7)
            action = gw.node.resources.actions["http:alerts"]
            await eventually(lambda: action.metrics.failed == 1)
            assert (action.metrics.retried, target.attempts) == (0, 1)
            invariant(action.metrics)


async def test_retry_after_is_honoured_and_capped_by_the_budget(tmp_path, mosquitto):
    async with http_target() as target:
        # retry_interval is 50ms: the server asks for a full second
        target.answer = lambda attempt: (429, {"retry-after": "1"}) if attempt == 1 else 200
        async with running_gateway(tmp_path, mosquitto.port, conf(target.url)) as gw:
            publish(gw, 1)
            action = gw.node.resources.actions["http:alerts"]
            await eventually(lambda: action.metrics.success == 1)
            assert target.attempts == 2
            assert target.attempted_at[1] - target.attempted_at[0] >= 0.95  # not before it asked
        target.attempts, target.attempted_at = 0, []
        # a Retry-After beyond the request_ttl: the message expires at its ttl, counted, not later
        target.answer = lambda attempt: (503, {"retry-after": "3600"})
        async with running_gateway(tmp_path, mosquitto.port, conf(target.url, ", request_ttl = 1s")) as gw:
            publish(gw, 2)
            action = gw.node.resources.actions["http:alerts"]
            await eventually(lambda: action.metrics.dropped_expired == 1, timeout=20)
            assert target.attempts == 1
            invariant(action.metrics)


def test_retry_after_values():
    from connectors.http import retry_after

    assert retry_after(None) is None and retry_after("") is None and retry_after("soon") is None
    assert retry_after("120") == 120.0 and retry_after(" 0 ") == 0.0
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412490.0) == 0.0  # in the past: now
