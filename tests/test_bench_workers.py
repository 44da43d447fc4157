"""B4 with workers at a small scale: the gateway as `node.workers = 2`, the charge points from two
load processes (the per-process share lowered so that a few hundred need two), the memory summed
over every worker."""

from __future__ import annotations

import pytest

from engine.bench.scenarios import memory_workers
from engine.bench.scenarios.memory import b4
from engine.bench.scenarios.options import Options

pytestmark = pytest.mark.timeout(240)


async def test_b4_with_workers_sums_every_worker_and_splits_the_load(monkeypatch):
    monkeypatch.setattr(memory_workers, "PER_LOAD_PROCESS", 150)
    result = await b4(Options(scale="small", connections=300, seconds=1, pin=False, workers=2))
    assert result["scenario"] == "B4" and result["workers"] == 2
    assert result["worker_processes"] == [2, 2]
    assert result["load_processes"] == 2
    assert result["connections"] == 300 and result["booted"] == 300 and result["alive_at_end"] == 300
    assert result["lost"] == 0 and result["errors"] == 0
    assert result["rss_after_kb"] > result["rss_before_kb"] > 0
    assert result["kb_per_connection"] is not None and result["meets_bar"] is False  # 300 is not the bar's 50,000
