"""Hostile input to the admin API (hypothesis, bounded): HOCON through PUT /configs and JSON bodies of
every endpoint that takes one. Always an answer below 500 with a JSON `code` and `message` for a
refusal, never a traceback in the answer, and the node keeps serving."""

from __future__ import annotations

import json
from urllib.parse import quote
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.admin_support import gateway_in_thread

pytestmark = pytest.mark.timeout(600)

AUTH = ("admin", "public")
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def gw(tmp_path_factory) -> Iterator[Any]:
    with gateway_in_thread(tmp_path_factory.mktemp("fuzz"), "dashboard.unsuccessful_login_max_attempts = 0\n") as gw:
        with httpx.Client(base_url=gw.admin_url, auth=AUTH, timeout=120) as api:
            r = api.post("/rules", json={"id": "r1", "sql": 'SELECT 1 AS one FROM "t/#"'})
            assert r.status_code == 201, r.text
        yield gw


def answered_well(r: httpx.Response) -> None:
    assert r.status_code < 500, r.text
    if r.status_code >= 400:
        body = r.json()
        assert isinstance(body.get("code"), str) and isinstance(body.get("message"), str), r.text
        assert "Traceback" not in r.text


fragments = st.sampled_from([
    "include", 'include "x"', "include url(\"http://127.0.0.1:1/\")", "include file(\"/etc/passwd\")",
    "required(", "${HOME}", "${?PATH}", "${a.b}", "+=", "{", "}", "[", "]", "=", ":", ",", '"', '"""', "\\", "#", "//",
    "\n", " ", "a", "a.b", '"a.b"', "gateway.ocpp", "rule_engine.rules", "idle_timeout", "31s", "1MB", "null",
    "true", "-1", "1e999", "\x00", "\u2028", "é", "\ud7ff", "include\t\"x\"",
])
hocon_text = st.one_of(
    st.text(max_size=200),
    st.lists(fragments, max_size=40).map("".join),
    st.integers(1, 3000).map(lambda n: "a = " + "[" * n + "]" * n),
    st.integers(1, 3000).map(lambda n: "a " + "{ b " * n + "}" * n),
)


@FUZZ
@given(body=hocon_text, mode=st.sampled_from(["merge", "replace"]))
def test_hocon_through_put_configs(gw, body, mode):
    with httpx.Client(base_url=gw.admin_url, auth=AUTH, timeout=120) as api:
        r = api.put("/configs", params={"mode": mode}, content=body.encode("utf-8", "surrogatepass"))
        event(f"PUT /configs -> {r.status_code}")
        answered_well(r)
        assert api.get("/status").status_code == 200


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False), st.text(max_size=20)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12,
)
field_names = st.sampled_from(["sql", "id", "actions", "enable", "description", "context", "action", "payload",
                               "timeout", "user_id", "password", "is_superuser", "x", "type", "name", "bind",
                               "websocket", "listeners", "mountpoint", "mechanism", "backend", "authentication"])
shaped = st.dictionaries(field_names, json_values, max_size=5)
def _dumps(value: Any) -> bytes:
    return json.dumps(value).encode("utf-8", "surrogatepass")  # big integers, Infinity: hostile too


raw_bodies = st.one_of(
    json_values.map(_dumps), shaped.map(_dumps), st.binary(max_size=100),
    st.integers(1, 5000).map(lambda n: b"[" * n + b"]" * n),
    st.integers(1, 5000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
)
ENDPOINTS = [
    ("POST", "/rules"), ("PUT", "/rules/r1"), ("POST", "/rule_test"),
    ("POST", "/gateways/ocpp/clients/CP1/call"),
    ("POST", "/gateways/ocpp/authentication/users"), ("PUT", "/gateways/ocpp/authentication/users/u1"),
    ("PUT", "/gateways/ocpp"), ("POST", "/gateways/ocpp/listeners"),
    ("POST", "/gateways/ocpp/authentication"), ("PUT", "/gateways/ocpp/authentication"),
]


@FUZZ
@given(endpoint=st.sampled_from(ENDPOINTS), body=raw_bodies)
def test_json_bodies_of_the_admin_endpoints(gw, endpoint, body):
    method, path = endpoint
    with httpx.Client(base_url=gw.admin_url, auth=AUTH, timeout=120) as api:
        r = api.request(method, path, content=body, headers={"content-type": "application/json"})
        event(f"{method} {path} -> {r.status_code}")
        answered_well(r)
        if method == "POST" and path == "/rules" and r.status_code == 201:
            assert api.delete(f"/rules/{r.json()['id']}").status_code == 204
        assert api.get("/status").status_code == 200


def test_deeply_nested_values_are_a_400(gw):
    with httpx.Client(base_url=gw.admin_url, auth=AUTH, timeout=120) as api:
        deep: Any = 1
        for _ in range(900):
            deep = [deep]
        r = api.post("/rules", json={"id": "deep", "sql": 'SELECT 1 AS one FROM "t/#"', "actions": deep})
        assert r.status_code == 400 and "nested too deeply" in r.json()["message"], r.text
        r = api.put("/configs", content="a = " + "[" * 400 + "]" * 400)
        assert r.status_code == 400 and "nested too deeply" in r.json()["message"], r.text
        assert api.get("/status").status_code == 200


# A listener body without a bind would (rightly) move the listener to the default 0.0.0.0:33033:
# the fuzzed dicts for PUT .../listeners/{id} carry a loopback bind of their own.
FUZZ_LISTENER = "ocpp:ws:fuzz"
listener_bodies = st.one_of(
    json_values.filter(lambda v: not isinstance(v, dict)).map(_dumps), st.binary(max_size=100),
    st.integers(1, 5000).map(lambda n: b'{"websocket":' * n + b"1" + b"}" * n),
    st.builds(lambda d, port: _dumps({**d, "bind": f"127.0.0.1:{port}"}), shaped, st.integers(20000, 20100)),
)


@pytest.fixture(scope="module")
def fuzz_listener(gw) -> str:
    with httpx.Client(base_url=gw.admin_url, auth=AUTH, timeout=120) as api:
        r = api.post("/gateways/ocpp/listeners", json={"type": "ws", "name": "fuzz", "bind": "127.0.0.1:20101"})
        assert r.status_code == 201, r.text
    return FUZZ_LISTENER


@FUZZ
@given(body=listener_bodies)
def test_json_bodies_of_a_listener(gw, fuzz_listener, body):
    with httpx.Client(base_url=gw.admin_url, auth=AUTH, timeout=120) as api:
        r = api.put(f"/gateways/ocpp/listeners/{fuzz_listener}", content=body, headers={"content-type": "application/json"})
        event(f"PUT listener -> {r.status_code}")
        answered_well(r)
        assert api.get("/status").status_code == 200
        assert api.get("/gateways/ocpp/listeners/ocpp:ws:default").json()["running"] is True


@FUZZ
@given(listener_id=st.text(min_size=1, max_size=60).filter(lambda t: t.strip(".") != ""), method=st.sampled_from(["GET", "PUT", "DELETE"]))
def test_listener_ids(gw, listener_id, method):
    with httpx.Client(base_url=gw.admin_url, auth=AUTH, timeout=120) as api:
        path = "/gateways/ocpp/listeners/" + quote(listener_id.encode("utf-8", "surrogatepass"), safe="")
        r = api.request(method, path, json={"bind": "127.0.0.1:20102"})
        event(f"{method} listener id -> {r.status_code}")
        answered_well(r)
        if listener_id not in ("ocpp:ws:default", FUZZ_LISTENER):
            assert r.status_code in (400, 404, 405), (listener_id, r.text)
        assert api.get("/status").status_code == 200
