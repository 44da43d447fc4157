"""`ctl rules list|metrics`: the rule engine's rules and their metrics."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import orjson

from engine.ctl.api import EXIT_OK, Api, _json, _segment
from engine.ctl.output import _key_values, _out, _table

METRICS = ["matched", "passed", "failed", "failed.exception", "failed.no_result",
           "actions.total", "actions.success", "actions.failed"]


def _short(text: str, width: int = 60) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 3] + "..."


def cmd_rules_list(api: Api, args: argparse.Namespace) -> int:
    body, text = api.get_all("/rules")
    if args.json:
        _out(text)
        return EXIT_OK
    rules = body.get("data", [])
    if not rules:
        _out("no rules")
        return EXIT_OK
    _table(rules, [
        ("ID", lambda r: r.get("id")),
        ("ENABLE", lambda r: r.get("enable")),
        ("FROM", lambda r: ",".join(r.get("from") or []) or None),
        ("ACTIONS", lambda r: len(r.get("actions") or [])),
        ("MATCHED", lambda r: (r.get("metrics") or {}).get("matched")),
        ("PASSED", lambda r: (r.get("metrics") or {}).get("passed")),
        ("FAILED", lambda r: (r.get("metrics") or {}).get("failed")),
        ("SQL", lambda r: _short(r.get("sql", ""))),
    ])
    return EXIT_OK


def _metric(name: str) -> Callable[[dict[str, Any]], Any]:
    """A column's getter: one metric of a rule (a function, so each column keeps its own name)."""
    return lambda r: r["metrics"].get(name)


def cmd_rules_metrics(api: Api, args: argparse.Namespace) -> int:
    if args.rule_id is not None:
        response = api.request("GET", f"/rules/{_segment(args.rule_id)}/metrics")
        if args.json:
            _out(response.text)
            return EXIT_OK
        body = _json(response)
        _key_values([("id", body.get("id")), *(body.get("metrics") or {}).items()])
        return EXIT_OK
    body, _ = api.get_all("/rules")
    every = [{"id": r.get("id"), "metrics": r.get("metrics") or {}} for r in body.get("data", [])]
    if args.json:  # one entry per rule, each as GET /rules/{id}/metrics answers
        _out(orjson.dumps(every).decode())
        return EXIT_OK
    if not every:
        _out("no rules")
        return EXIT_OK
    names = list(METRICS) + sorted({k for r in every for k in r["metrics"]} - set(METRICS))
    columns: list[tuple[str, Callable[[dict[str, Any]], Any]]] = [("ID", lambda r: r["id"])]
    columns += [(name.upper(), _metric(name)) for name in names]
    _table(every, columns)
    return EXIT_OK
