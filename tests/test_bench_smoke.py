"""`ocpp-gateway bench`: every scenario runs end to end at small scale for about 2 seconds.

These only keep the bench from rotting: they check that each scenario ran and printed its JSON line
with the fields of the right types. They never assert on a figure (the machine is shared and noisy;
the figures are for docs/benchmarks.md, not for CI).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from numbers import Real

import pytest

from engine.bench.load import Histogram, rate_check

SCENARIOS = ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B9", "B10"]


def _bench(*args: str, timeout: float = 100) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "engine.cli", "bench", *args], check=False, capture_output=True,
                          text=True, timeout=timeout)


def _number_or_none(value: object) -> bool:
    return value is None or (isinstance(value, Real) and not isinstance(value, bool))


@pytest.mark.timeout(110)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario_runs_at_small_scale(scenario: str) -> None:
    done = _bench("--scenario", scenario, "--scale", "small", "--seconds", "2")
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert done.returncode == 0 and len(lines) == 1, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    result = json.loads(lines[0])
    assert result["scenario"] == scenario
    assert isinstance(result["gateway"], dict) and result["gateway"]
    assert result["baseline"] is None or isinstance(result["baseline"], dict)
    assert _number_or_none(result["ratio"])
    assert isinstance(result["ratio_of"], str)
    assert isinstance(result["bar"], dict) and result["bar"]
    assert result["meets_bar"] in (True, False, None)
    g = result["gateway"]
    if scenario in ("B1", "B2", "B3", "B6"):
        for key in ("calls_per_s", "p50_ms", "p99_ms", "errors", "timeouts", "disconnects"):
            assert _number_or_none(g[key]), (key, g)
        assert isinstance(result["baseline"], dict) and _number_or_none(result["baseline"]["calls_per_s"])
        assert isinstance(g["cpu"], dict)
    if scenario == "B9":
        for key in ("calls_per_s", "errors", "disk_commits_per_s", "calls_per_commit", "disk_messages_left"):
            assert _number_or_none(g[key]), (key, g)
        assert _number_or_none(result["baseline"]["calls_per_s"])
    if scenario == "B1":
        assert isinstance(g["half_rate"], dict) and _number_or_none(g["half_rate"]["p99_ms"])
    if scenario == "B4":
        for key in ("connections", "booted", "kb_per_connection", "rss_before_kb", "rss_after_kb"):
            assert _number_or_none(g[key]), (key, g)
        assert _number_or_none(result["baseline"]["kb_per_connection"])
    if scenario == "B5":
        assert _number_or_none(g["compiled_s"]) and _number_or_none(result["baseline"]["handwritten_s"])
    if scenario == "B6":
        assert isinstance(g["reloads"], int) and isinstance(g["reloads_failed"], int)
    if scenario == "B7":
        for key in ("connected", "gateway_connections", "stamps", "max_in_1s", "bucket_excess"):
            assert _number_or_none(g[key]), (key, g)
        assert isinstance(g["refused"], dict)
    if scenario == "B8":
        for key in ("connections", "cpu_quiet_pct", "cpu_dashboard_pct", "cpu_rise_points"):
            assert _number_or_none(g[key]), (key, g)
        assert g["dashboard"]["requests"] > 0 and g["dashboard"]["errors"] == 0, g
    if scenario == "B10":
        for key in ("calls_per_s", "p50_ms", "p99_ms", "errors"):
            assert _number_or_none(g[key]) and _number_or_none(result["baseline"][key]), (key, g)
        listing = g["listing"]
        # every charge point of both nodes is listed, from one node, over all pages
        assert listing["clients"] == listing["expected"] == listing["distinct_seen"] == result["listed"], listing
        assert listing["nodes"] == 2 and _number_or_none(listing["first_page_ms"]), listing


def test_unknown_scenario_is_a_usage_error() -> None:
    done = _bench("--scenario", "B99", timeout=30)
    assert done.returncode == 2 and "invalid choice" in done.stderr


def test_histogram_percentiles() -> None:
    h = Histogram()
    for i in range(1, 101):
        h.add(i / 1000)  # 1 ms .. 100 ms
    assert h.n == 100
    assert 49.9 <= h.percentile_ms(0.5) <= 50.1
    assert 98.9 <= h.percentile_ms(0.99) <= 99.1
    assert Histogram().percentile_ms(0.99) is None


def test_rate_check() -> None:
    # a token bucket of 10/s, burst 10: 10 at once, then one every 0.1 s
    times = [0.0] * 10 + [0.1 * k for k in range(1, 31)]
    ok = rate_check(times, rate=10, burst=10, slack=0.5)
    assert ok["bucket_excess"] <= 0 and ok["max_in_1s"] == 20  # the burst and the next 10 within [0, 1]
    over = rate_check([0.0] * 5 + [1.0] * 20, rate=10, burst=10, slack=0.5)
    # the worst interval is the instant 1.0 itself: 20 connections against a burst of 10
    assert over["bucket_excess"] == 20 - (10 + 0.5) and over["max_in_1s"] == 25
    assert rate_check([], rate=10, burst=10, slack=0) == {"bucket_excess": None, "max_in_1s": 0}


def test_rate_check_matches_every_interval() -> None:
    """The one-pass excess equals the largest over all pairs of events, checked the slow way."""
    rng = random.Random(7)
    for _ in range(50):
        times = sorted(rng.uniform(0, 3) for _ in range(rng.randint(1, 60)))
        got = rate_check(times, rate=8, burst=5, slack=0.25)
        slow = max((j - i + 1) - (5 + 8 * (times[j] - times[i]) + 0.25)
                   for i in range(len(times)) for j in range(i, len(times)))
        assert got["bucket_excess"] == round(slow, 1)
        most = max(sum(1 for u in times if t <= u <= t + 1.0) for t in times)
        assert got["max_in_1s"] == most
