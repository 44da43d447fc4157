"""`GET /api/v5/prometheus/stats?mode=...` (EMQX 5.5's modes) over the cluster room.

- `node` (the default): this node's series, as always.
- `all_nodes_unaggregated`: every running node's series, each sample labelled `node="<name>"`.
- `all_nodes_aggregated`: one series per name and label set, the nodes combined: counters, gauges
  and histogram buckets (with their `_sum` and `_count`) are added up; summaries keep `_sum` and
  `_count` (added up) and drop their quantiles; `process_start_time_seconds` and `*_created` keep
  the earliest start and the event loop lag gauges the largest value; info series are kept once per distinct
  label set (value 1), as they name things rather than count them.

Each other running node is asked for its samples (op `prometheus.stats`), all at once, within
`cluster.request_timeout`. A node that does not answer (or answers nonsense) is left out, named in
`ocppgw_cluster_scrape_missing{node="..."} 1` and in a `#` comment line, and the scrape still
answers with the others.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric

from engine.admin.nodeview import ClusterView
from engine.cluster import NodeUnreachable, RemoteError

log = logging.getLogger("ocppgw.admin")

MODES = ("node", "all_nodes_aggregated", "all_nodes_unaggregated")
OP = "prometheus.stats"
MISSING = "ocppgw_cluster_scrape_missing"
EARLIEST = {"process_start_time_seconds"}
LARGEST = {"ocppgw_event_loop_lag_seconds", "ocppgw_event_loop_lag_max_seconds"}

NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")  # a metric or label name (Prometheus' data model)
TYPES = {"counter", "gauge", "histogram", "gaugehistogram", "summary", "info", "stateset", "unknown"}

Family = dict[str, Any]  # {"name", "type", "help", "unit", "samples": [[name, labels, value], ...]}


def _number(value: float) -> float | str:
    return value if math.isfinite(value) else repr(float(value))  # JSON has no NaN or Inf


def dump(registry: CollectorRegistry) -> list[Family]:
    """The registry's families as plain data (what a node answers to `prometheus.stats`)."""
    return [{"name": f.name, "type": f.type, "help": f.documentation, "unit": f.unit,
             "samples": [[s.name, dict(s.labels), _number(s.value)] for s in f.samples]}
            for f in registry.collect()]


def _checked(answer: Any) -> list[Family] | None:
    """Another node's answer as families, or None if it is not one."""
    if not isinstance(answer, list):
        return None
    for family in answer:
        if not (isinstance(family, dict) and isinstance(family.get("name"), str) and NAME.fullmatch(family["name"])
                and family.get("type") in TYPES and isinstance(family.get("help"), str)
                and family.get("unit", "") == "" and isinstance(family.get("samples"), list)):
            return None
        for sample in family["samples"]:
            if not (isinstance(sample, list) and len(sample) == 3 and isinstance(sample[0], str)
                    and NAME.fullmatch(sample[0]) and isinstance(sample[1], dict)
                    and all(NAME.fullmatch(k) and isinstance(v, str) for k, v in sample[1].items())
                    and isinstance(sample[2], (int, float, str)) and not isinstance(sample[2], bool)):
                return None
            try:
                float(sample[2])
            except ValueError:
                return None
    return answer


async def gather(cluster: ClusterView | None, name: str, local: list[Family]) -> tuple[dict[str, list[Family]], dict[str, str]]:
    """Every running node's families (this one's is `local`) and the nodes missing, with why."""
    found: dict[str, list[Family]] = {name: local}
    missing: dict[str, str] = {}
    if cluster is None:
        return found, missing
    peers = cluster.peers()
    answers = await asyncio.gather(*(cluster.request(n, OP, {}) for n in peers), return_exceptions=True)
    for peer, answer in zip(peers, answers, strict=True):
        if isinstance(answer, NodeUnreachable):
            missing[peer] = str(answer)
        elif isinstance(answer, RemoteError):
            missing[peer] = f"node {peer} answered {answer.status}: {answer.message}"
        elif isinstance(answer, BaseException):
            missing[peer] = f"node {peer}: {type(answer).__name__}: {answer}"
        elif (families := _checked(answer)) is None:
            missing[peer] = f"node {peer} answered something that is not a set of metrics"
        else:
            found[peer] = families
    for why in missing.values():
        log.warning("prometheus scrape: %s; its series are missing", why)
    return found, missing


def _family(name: str, typ: str, doc: str, unit: str) -> Metric:
    return Metric(name, doc, typ, unit)


def unaggregated(found: dict[str, list[Family]]) -> list[Metric]:
    families: dict[str, Metric] = {}
    for node in sorted(found):
        for f in found[node]:
            metric = families.setdefault(f["name"], _family(f["name"], f["type"], f["help"], f.get("unit") or ""))
            if metric.type != f["type"]:
                continue  # another version's family of the same name: not mixed in
            for sample, labels, value in f["samples"]:
                metric.add_sample(sample, {**labels, "node": node}, float(value))
    return list(families.values())


def _combine(family: str, sample: str, old: float, new: float) -> float:
    if family in EARLIEST or sample.endswith("_created"):  # start times: the earliest
        return min(old, new)
    if family in LARGEST:
        return max(old, new)
    return old + new


def aggregated(found: dict[str, list[Family]]) -> list[Metric]:
    families: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for node in sorted(found):
        for f in found[node]:
            name, typ = f["name"], f["type"]
            metric = families.setdefault(name, _family(name, typ, f["help"], f.get("unit") or ""))
            if metric.type != typ:
                continue
            series = values.setdefault(name, {})
            for sample, labels, value in f["samples"]:
                if typ == "summary" and "quantile" in labels:
                    continue  # quantiles do not add up
                key = (sample, tuple(sorted(labels.items())))
                if typ in ("info", "stateset"):
                    series[key] = 1.0 if typ == "info" else max(series.get(key, 0.0), float(value))
                elif key in series:
                    series[key] = _combine(name, sample, series[key], float(value))
                else:
                    series[key] = float(value)
    for name, metric in families.items():
        for (sample, labels), value in values.get(name, {}).items():
            metric.add_sample(sample, dict(labels), value)
    return list(families.values())


class _Families:
    """What `generate_latest` needs: something with `collect()`."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def render_cluster(mode: str, found: dict[str, list[Family]], missing: dict[str, str], timeout: float) -> bytes:
    combine: Callable[[dict[str, list[Family]]], list[Metric]] = aggregated if mode == "all_nodes_aggregated" else unaggregated
    families = combine(found)
    gap = Metric(MISSING, "Running nodes whose series this scrape lacks: they did not answer within "
                 "cluster.request_timeout (1 each, by node).", "gauge")
    for node in sorted(missing):
        gap.add_sample(MISSING, {"node": node}, 1.0)
    families.append(gap)
    text = generate_latest(_Families(families))
    notes = "".join(f"# node {node} is missing: no answer within {timeout:g}s (cluster.request_timeout) "
                    "or an unreadable one\n" for node in sorted(missing))
    return text + notes.encode()
