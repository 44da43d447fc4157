"""The in-process bus: delivery, isolation of failing handlers, remote-subscription watchers."""

from __future__ import annotations

import logging

import pytest

from engine.bus import Bus, Message, TopicError


def test_delivers_to_every_matching_subscription_in_order():
    bus = Bus()
    got: list[tuple[str, str]] = []
    bus.subscribe("ocpp/cp/+", lambda m: got.append(("plus", m.topic)))
    bus.subscribe("ocpp/#", lambda m: got.append(("hash", m.topic)))
    bus.subscribe("ocpp/cs/CP1", lambda m: got.append(("cs", m.topic)))
    assert bus.publish(Message("ocpp/cp/CP1", b"{}")) == 2
    assert bus.publish(Message("ocpp/cs/CP1", b"{}")) == 2
    assert bus.publish(Message("other", b"")) == 0
    assert sorted(got[:2]) == [("hash", "ocpp/cp/CP1"), ("plus", "ocpp/cp/CP1")]
    assert sorted(got[2:]) == [("cs", "ocpp/cs/CP1"), ("hash", "ocpp/cs/CP1")]


def test_dollar_topics_need_explicit_subscription():
    bus = Bus()
    got = []
    bus.subscribe("#", lambda m: got.append("hash"))
    bus.subscribe("$events/#", lambda m: got.append("events"))
    bus.publish(Message("$events/client_connected", b"{}"))
    assert got == ["events"]


def test_failing_handler_does_not_stop_the_others(caplog):
    bus = Bus()
    got = []

    def broken(message):
        raise RuntimeError("boom")

    bus.subscribe("t", broken, name="broken")
    bus.subscribe("t", got.append)
    with caplog.at_level(logging.ERROR):
        assert bus.publish(Message("t", b"x")) == 1
    assert len(got) == 1 and bus.handler_errors == 1
    assert "broken" in caplog.text


def test_unsubscribe():
    bus = Bus()
    got = []
    sub = bus.subscribe("a/+", got.append)
    bus.unsubscribe(sub)
    bus.unsubscribe(sub)  # twice is harmless
    bus.publish(Message("a/b", b""))
    assert got == [] and bus.subscription_count() == 0


def test_bad_topics_are_refused():
    bus = Bus()
    with pytest.raises(TopicError):
        bus.subscribe("a/#/b", print)
    with pytest.raises(TopicError):
        bus.publish(Message("a/+", b""))


class Watcher:
    def __init__(self):
        self.events = []

    def remote_added(self, f):
        self.events.append(("+", f))

    def remote_removed(self, f):
        self.events.append(("-", f))


def test_remote_watchers_hear_first_and_last_subscription_only():
    bus = Bus()
    w = Watcher()
    bus.watch_remote(w)
    a = bus.subscribe("ocpp/cs/CP1", print, remote=True)
    b = bus.subscribe("ocpp/cs/CP1", print, remote=True)
    local = bus.subscribe("ocpp/cs/CP1", print)
    assert w.events == [("+", "ocpp/cs/CP1")]
    assert list(bus.remote_filters()) == ["ocpp/cs/CP1"]
    bus.unsubscribe(a)
    bus.unsubscribe(local)
    assert w.events == [("+", "ocpp/cs/CP1")]
    bus.unsubscribe(b)
    assert w.events == [("+", "ocpp/cs/CP1"), ("-", "ocpp/cs/CP1")]
    assert list(bus.remote_filters()) == []


def test_message_json_is_decoded_once():
    m = Message("t", b'{"a": [1, 2]}')
    first = m.json()
    assert first == {"a": [1, 2]} and m.json() is first
    assert Message("t", b"", decoded={"pre": 1}).json() == {"pre": 1}
