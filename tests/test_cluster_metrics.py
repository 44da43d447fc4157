"""`GET /api/v5/prometheus/stats?mode=...` (EMQX 5.5's modes) across real node processes on one
real mosquitto: each node's series, their sum, a bad mode, and a node that does not answer."""

from __future__ import annotations

import signal

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.test_cluster import AUTH, admin, both_running, connect, two_nodes, until  # noqa: F401 (fixture)

pytestmark = pytest.mark.timeout(120)


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The samples called `name` (for ocppgw_connections: OCPP 1.6 only): labels (sorted) → value."""
    return {tuple(sorted(s.labels.items())): s.value for f in text_string_to_metric_families(text)
            for s in f.samples if s.name == name and s.labels.get("proto_ver", "ocpp1.6") == "ocpp1.6"}


async def scrape(http: httpx.AsyncClient, gw, mode: str | None = None) -> str:
    answer = await http.get(admin(gw) + "/prometheus/stats", params={"mode": mode} if mode else {})
    assert answer.status_code == 200, answer.text
    return answer.text


CONNECTIONS = "ocppgw_connections"
V16 = ("proto_ver", "ocpp1.6")


async def test_each_mode_shows_each_nodes_series_and_the_aggregate_sums_them(two_nodes) -> None:
    a, b = two_nodes
    async with httpx.AsyncClient(auth=AUTH, timeout=30) as http:
        await both_running(http, a, b)
        held = [await connect(a, "CP-A1"), await connect(b, "CP-B1"), await connect(b, "CP-B2")]
        try:
            async def counted() -> bool:
                return (samples(await scrape(http, a), CONNECTIONS).get((V16,)) == 1
                        and samples(await scrape(http, b), CONNECTIONS).get((V16,)) == 2)

            await until(counted, 30)
            for asked in (a, b):  # whichever node answers, the answer is the cluster's
                mine = samples(await scrape(http, asked, "node"), CONNECTIONS)
                assert mine == {(V16,): 1 if asked is a else 2}  # mode=node: this node only, no node label
                each = samples(await scrape(http, asked, "all_nodes_unaggregated"), CONNECTIONS)
                assert each == {(("node", "a"), V16): 1, (("node", "b"), V16): 2}, each
                total = await scrape(http, asked, "all_nodes_aggregated")
                assert samples(total, CONNECTIONS) == {(V16,): 3}
                assert samples(total, "ocppgw_cluster_nodes_running") == {(): 4}  # 2 seen by each, summed
                assert samples(total, "ocppgw_cluster_scrape_missing") == {}
                assert "process_start_time_seconds" in total and 'quantile="' not in total
        finally:
            for ws in held:
                await ws.close()


async def test_an_unknown_mode_is_a_400_naming_the_modes(two_nodes) -> None:
    a, _ = two_nodes
    async with httpx.AsyncClient(auth=AUTH, timeout=30) as http:
        answer = await http.get(admin(a) + "/prometheus/stats", params={"mode": "cluster"})
        assert answer.status_code == 400, answer.text
        assert answer.json()["code"] == "BAD_REQUEST"
        assert "all_nodes_aggregated" in answer.json()["message"] and "'cluster'" in answer.json()["message"]


async def test_a_silent_node_is_reported_missing_and_the_scrape_still_answers(two_nodes) -> None:
    a, b = two_nodes
    async with httpx.AsyncClient(auth=AUTH, timeout=30) as http:
        await both_running(http, a, b)
        assert b.proc is not None
        b.proc.send_signal(signal.SIGSTOP)
        try:
            for mode in ("all_nodes_unaggregated", "all_nodes_aggregated"):
                text = await scrape(http, a, mode)
                assert samples(text, "ocppgw_cluster_scrape_missing") == {(("node", "b"),): 1}
                assert "# node b is missing" in text
                running = samples(text, "ocppgw_cluster_nodes_running")
                assert running == ({(("node", "a"),): 2} if mode == "all_nodes_unaggregated" else {(): 2})
        finally:
            b.proc.send_signal(signal.SIGCONT)
        assert "Traceback" not in a.log


async def test_with_workers_any_worker_answers_for_all(tmp_path) -> None:
    """`node.workers = 2` share the dashboard port: whichever worker the kernel hands a scrape to,
    `mode=all_nodes_unaggregated` has both workers' series and `all_nodes_aggregated` their sum."""
    import asyncio

    from tests.test_workers import start_workers

    gw = await asyncio.to_thread(start_workers, tmp_path, 2, "node.workers = 2\n")
    try:
        url = "http://" + gw.env["OCPPGW_DASHBOARD__LISTENERS__HTTP__BIND"] + "/api/v5/prometheus/stats"
        async with httpx.AsyncClient(auth=AUTH, timeout=30) as http:
            async def both_seen() -> bool:
                text = (await http.get(url, params={"mode": "all_nodes_aggregated"},
                                       headers={"connection": "close"})).text
                return samples(text, "ocppgw_cluster_nodes_running") == {(): 4}

            await until(both_seen, 60)
            for _ in range(6):  # new connections each time: the kernel picks the worker
                answer = await http.get(url, params={"mode": "all_nodes_unaggregated"}, headers={"connection": "close"})
                assert answer.status_code == 200, answer.text
                running = samples(answer.text, "ocppgw_cluster_nodes_running")
                assert running == {(("node", "gw-0"),): 2, (("node", "gw-1"),): 2}, running
                assert samples(answer.text, "ocppgw_cluster_scrape_missing") == {}
        assert "Traceback" not in gw.log
    finally:
        gw.stop()


def test_how_the_aggregate_combines_each_kind_of_series() -> None:
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, Summary

    from engine.admin.metrics_cluster import _checked, dump, render_cluster

    def node(count: float, observed: float, started: float, lag: float, version: str) -> list:
        r = CollectorRegistry()
        Counter("ocppgw_things", "d", ["kind"], registry=r).labels("x").inc(count)
        Histogram("ocppgw_wait_seconds", "d", buckets=(1.0,), registry=r).observe(observed)
        Summary("ocppgw_size", "d", registry=r).observe(observed)
        Gauge("process_start_time_seconds", "d", registry=r).set(started)
        Gauge("ocppgw_event_loop_lag_max_seconds", "d", registry=r).set(lag)
        Info("ocppgw_build", "d", registry=r).info({"version": version})
        return dump(r)

    found = {"a": node(2, 0.5, 100, 0.2, "1"), "b": node(3, 5, 50, 0.1, "2")}
    text = render_cluster("all_nodes_aggregated", found, {}, 5).decode()
    assert samples(text, "ocppgw_things_total") == {(("kind", "x"),): 5}
    assert samples(text, "ocppgw_wait_seconds_bucket") == {(("le", "1.0"),): 1, (("le", "+Inf"),): 2}
    assert samples(text, "ocppgw_wait_seconds_count") == {(): 2}
    assert samples(text, "ocppgw_size_sum") == {(): 5.5} and "quantile" not in text
    assert samples(text, "process_start_time_seconds") == {(): 50}  # the earliest
    assert samples(text, "ocppgw_event_loop_lag_max_seconds") == {(): 0.2}  # the largest
    assert samples(text, "ocppgw_build_info") == {(("version", "1"),): 1, (("version", "2"),): 1}
    created = samples(text, "ocppgw_things_created")
    assert list(created.values()) == [min(s[2] for f in found.values() for fam in f for s in fam["samples"]
                                          if s[0] == "ocppgw_things_created")]
    # what another node answers is checked before it is used
    assert _checked(found["a"]) is not None
    for bad in ({"x": 1}, [{"name": "a b", "type": "gauge", "help": "", "samples": []}],
                [{"name": "a", "type": "gauge", "help": "", "samples": [["a", {"bad label": "1"}, 1]]}],
                [{"name": "a", "type": "gauge", "help": "", "samples": [["a", {}, "lots"]]}]):
        assert _checked(bad) is None, bad
