"""Keepalive as a value: a silence in, the next state (or a timeout) out; no timers, no sockets."""

from __future__ import annotations

import pytest

from engine.ocpp.keepalive import GRACE, Keepalive


def test_a_frame_within_the_window_keeps_it_alive():
    k = Keepalive(10)
    assert k.window == pytest.approx(10 * (1 + GRACE))
    assert k.check(0, 1) is k
    assert k.check(10.9, 1) is k  # within the grace


def test_one_missed_check_times_out_when_one_is_allowed():
    assert Keepalive(10).check(11.5, 1) is None


def test_missed_checks_count_until_the_backoff():
    k = Keepalive(10)
    k = k.check(12, 3)
    assert k == Keepalive(10, 1)
    k = k.check(22, 3)
    assert k == Keepalive(10, 2)
    assert k.check(32, 3) is None


def test_a_frame_starts_the_count_again():
    k = Keepalive(10, 2)
    k = k.check(1, 3)
    assert k == Keepalive(10, 0)
    assert k.check(12, 3) == Keepalive(10, 1)  # not a timeout: the count started again


def test_the_backoff_is_read_per_check():
    k = Keepalive(5).check(6, 3)
    assert k is not None and k.missed == 1
    assert k.check(12, 2) is None  # a reload lowered heartbeat_checking_times_backoff
