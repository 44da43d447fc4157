"""The registry of connected sessions: one per charge point id, `add` the only takeover."""

from __future__ import annotations

from typing import Any

from engine.ocpp.registry import SessionRegistry


class FakeSession:
    """Closes as a Session does: it removes itself from the registry it is in."""

    def __init__(self, registry: SessionRegistry[Any], cid: str, connected_at: int = 0) -> None:
        self.registry = registry
        self.cid = cid
        self.connected_at = connected_at
        self.closed_with: tuple[str, int] | None = None

    @property
    def closed(self) -> bool:
        return self.closed_with is not None

    def close(self, reason: str, code: int = 1000) -> None:
        if self.closed_with is None:
            self.closed_with = (reason, code)
            self.registry.remove(self)


def test_add_lists_a_session_under_its_cid():
    registry: SessionRegistry[Any] = SessionRegistry()
    a = FakeSession(registry, "A")
    registry.add(a)
    assert registry["A"] is a and registry.get("A") is a and "A" in registry
    assert list(registry) == ["A"] and len(registry) == 1 and list(registry.values()) == [a]
    assert registry.get("B") is None and "B" not in registry


def test_a_second_add_takes_the_old_session_over():
    registry: SessionRegistry[Any] = SessionRegistry()
    old, new = FakeSession(registry, "A"), FakeSession(registry, "A")
    registry.add(old)
    registry.add(new)
    assert old.closed_with == ("takenover", 1000) and new.closed_with is None
    assert registry["A"] is new and len(registry) == 1


def test_adding_the_same_session_again_closes_nothing():
    registry: SessionRegistry[Any] = SessionRegistry()
    a = FakeSession(registry, "A")
    registry.add(a)
    registry.add(a)
    assert not a.closed and registry["A"] is a


def test_remove_unlists_only_the_listed_session():
    registry: SessionRegistry[Any] = SessionRegistry()
    old, new = FakeSession(registry, "A"), FakeSession(registry, "A")
    registry.add(old)
    registry.add(new)
    registry.remove(old)  # a taken-over session closing late must not unlist its successor
    assert registry["A"] is new
    registry.remove(new)
    assert "A" not in registry and len(registry) == 0
    registry.remove(new)  # idempotent


def test_take_over_closes_a_session_not_newer_than_the_announced_one():
    registry: SessionRegistry[Any] = SessionRegistry()
    a = FakeSession(registry, "A", connected_at=100)
    registry.add(a)
    assert not registry.take_over("A", 99)  # ours is newer: it stays
    assert not a.closed
    assert not registry.take_over("B", 100)  # not here
    assert registry.take_over("A", 100)
    assert a.closed_with == ("takenover", 1000) and "A" not in registry
