"""Everything the config API accepts starts again: what it stores reads back to the same settings.

Two properties (hypothesis, bounded): the overlay writer's HOCON reads back to the tree it was given
(or the writer refuses it), and random valid overlays sent to a running gateway with
`PUT /api/v5/configs` give the same effective config on a fresh load of the stored files as on the
running node (which is what the next `run` does).
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.config import load_settings
from engine.config.loader import _parse_text
from engine.config.overlay import OverlayValueError, _as_written, render_overlay, storable_key
from tests.admin_support import gateway_in_thread as running_in_thread

pytestmark = pytest.mark.timeout(300)

AUTH = ("admin", "public")

# --- the writer alone -------------------------------------------------------------------------------

keys = st.text(min_size=1, max_size=8)
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20),
    st.timedeltas(min_value=datetime.timedelta(0), max_value=datetime.timedelta(days=1000)),
)
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(keys, inner, max_size=3)),
                      max_leaves=10)


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.dictionaries(keys, values, max_size=4))
def test_the_overlay_text_reads_back_the_same_or_is_refused(tree):
    try:
        text = render_overlay(tree)
    except OverlayValueError:
        return  # refused: the API answers 400 and stores nothing
    assert _parse_text(text, "overlay") == _as_written(tree)


def test_keys_and_values_the_writer_refuses():
    for key in ("", ' a', 'a"b', "a\\b", "a\nb"):
        assert not storable_key(key)
        with pytest.raises(OverlayValueError):
            render_overlay({key: 1})
    with pytest.raises(OverlayValueError, match="empty string inside a list"):
        render_overlay({"a": ["x", ""]})
    assert _parse_text(render_overlay({"rules": {"a.b": {"d": datetime.timedelta(seconds=31)}}}), "o") == \
        {"rules": {"a.b": {"d": "31s"}}}


# --- through the API, on a running gateway ----------------------------------------------------------

def quoted(text: str) -> str:
    """A HOCON quoted string as an operator would write it."""
    escapes = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}
    return '"' + "".join(escapes.get(c, c) for c in text) + '"'


durations = st.one_of(
    st.integers(1, 3600).map(lambda n: f"{n}s"), st.integers(1, 99_999).map(lambda n: f"{n}ms"),
    st.integers(1, 60).map(lambda n: f"{n}m"), st.integers(1, 48).map(lambda n: f"{n} seconds"),
    st.integers(1, 3600).map(lambda n: f'"{n}s"'), st.integers(1, 9).map(lambda n: f'"{n}.5h"'),
)
texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)
names = st.text(st.sampled_from("abcxyz019_-.:@"), min_size=1, max_size=8).filter(storable_key)
topic_words = st.text(st.sampled_from("abcdefgh0123"), min_size=1, max_size=6)


@st.composite
def overlays(draw: Any) -> str:
    lines: list[str] = []
    if draw(st.booleans()):
        lines.append(f"gateway.ocpp.idle_timeout = {draw(durations)}")
    if draw(st.booleans()):
        lines.append(f"gateway.ocpp.dnstream.awaiting_timeout = {draw(durations)}")
    if draw(st.booleans()):
        lines.append(f"gateway.ocpp.dnstream.max_mqueue_len = {draw(st.integers(1, 100_000))}")
    if draw(st.booleans()):
        lines.append(f"gateway.ocpp.upstream.topic = {quoted(draw(topic_words) + '/${cid}/' + draw(topic_words))}")
    if draw(st.booleans()):
        size = draw(st.integers(1, 4096))
        lines.append(f"gateway.ocpp.listeners.ws.default.websocket.max_frame_size = "
                     f"{draw(st.sampled_from([str(size * 1024), f'{size}KB', quoted(f'{size}KB')]))}")
    if draw(st.booleans()):
        lines.append(f"log.level = {draw(st.sampled_from(['debug', 'info', 'warning', quoted('error')]))}")
    if draw(st.booleans()):
        lines.append(f"node.name = {quoted(draw(names))}")
    if draw(st.booleans()):
        lines.append(f"dashboard.unsuccessful_login_max_attempts = {draw(st.integers(0, 50))}")
    rules = draw(st.dictionaries(names, st.tuples(texts, st.booleans(), topic_words), max_size=3))
    if rules:
        lines.append("rule_engine.rules {")
        for rule_id, (description, enable, topic) in rules.items():
            sql = f'SELECT payload.x AS x FROM "{topic}/#"'
            lines.append(f"  {quoted(rule_id)} {{ sql = {quoted(sql)}, enable = {str(enable).lower()}, "
                         f"description = {quoted(description)}, actions = [{{function = console}}] }}")
        lines.append("}")
    return "\n".join(lines) or "log.format = text"


@pytest.fixture(scope="module")
def gateway_in_thread(tmp_path_factory) -> Iterator[Any]:
    tmp_path = tmp_path_factory.mktemp("roundtrip")
    with running_in_thread(tmp_path) as gw:
        yield gw, tmp_path


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=overlays(), mode=st.sampled_from(["merge", "replace"]))
def test_what_the_api_accepts_starts_again_the_same(gateway_in_thread, body, mode):
    gw, tmp_path = gateway_in_thread
    with httpx.Client(base_url=gw.admin_url, auth=AUTH, timeout=60) as api:
        r = api.put("/configs", params={"mode": mode}, content=body.encode())
        assert r.status_code == 200, (body, r.text)
        running = gw.node.settings
        fresh = load_settings(tmp_path / "gateway.conf", {})  # what the next start reads: the file + the overlay
        assert fresh == running, body
        assert api.get("/status").status_code == 200


def test_idle_timeout_and_a_dotted_rule_id_survive_a_fresh_load(gateway_in_thread):
    """The two cases of the issue: `idle_timeout = 31s` was stored as "0:00:31", rule `a.b` as `"\\"a.b\\""`."""
    gw, tmp_path = gateway_in_thread
    with httpx.Client(base_url=gw.admin_url, auth=AUTH, timeout=60) as api:
        r = api.put("/configs", params={"mode": "replace"}, content="gateway.ocpp.idle_timeout = 31s")
        assert r.status_code == 200, r.text
        r = api.post("/rules", json={"id": "a.b", "sql": 'SELECT 1 AS one FROM "t/#"'})
        assert r.status_code == 201, r.text
        assert api.get("/rules/a.b").status_code == 200
    fresh = load_settings(tmp_path / "gateway.conf", {})
    assert fresh.gateway.ocpp.idle_timeout == 31 and list(fresh.rule_engine.rules) == ["a.b"]
    assert fresh == gw.node.settings
