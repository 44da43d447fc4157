"""Rules over the API (EMQX's /rules, /rule_test), kept in the overlay so they survive a restart."""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from engine.admin.common import (
    ApiError,
    check_fields,
    json_body,
    json_response,
    not_found,
    page_args,
    paged,
)
from engine.admin.config_api import edit_overlay
from engine.admin.nodeview import NodeView
from rules.tester import response_body, rule_test_response

if TYPE_CHECKING:
    from connectors.registry import Resources
    from rules.runtime import RunningRule

RULE_FIELDS: dict[str, type | tuple[type, ...]] = {"sql": str, "actions": list, "enable": bool, "description": str,
                                                   "name": str, "metadata": dict}  # EMQX's name and metadata: kept


def _running_rules(node: NodeView) -> dict[str, RunningRule]:
    assert node.rules is not None  # built before the admin app
    return node.rules.rules


def _resources(node: NodeView) -> Resources:
    assert node.resources is not None  # built before the admin app
    return node.resources


def _rule_info(node: NodeView, rule_id: str) -> dict[str, Any]:
    settings = node.settings.rule_engine.rules[rule_id]
    running = _running_rules(node).get(rule_id)
    return {
        "id": rule_id,
        **dataclasses.asdict(settings),
        "from": running.rule.topics if running else [],
        "metrics": running.metrics.as_dict() if running else {},
    }


def _plain_rules(node: NodeView) -> dict[str, Any]:
    return {rid: dataclasses.asdict(r) for rid, r in node.settings.rule_engine.rules.items()}


async def _save_rules(node: NodeView, change: Callable[[dict[str, Any]], None]) -> Response | None:
    """Change the rule set with `change` (in turn with every other config change, so two requests
    at once both count), apply it through a reload and keep it in the overlay; a refusal is the answer."""
    def edit(overlay: dict[str, Any]) -> None:
        rules = _plain_rules(node)
        change(rules)
        overlay.setdefault("rule_engine", {})["rules"] = rules

    response = await edit_overlay(node, edit)
    return response if response.status_code != 200 else None


def routes(node: NodeView) -> list[Route]:
    async def list_rules(request: Request) -> Response:
        page, limit = page_args(request)
        items = [_rule_info(node, rid) for rid in sorted(node.settings.rule_engine.rules)]
        return json_response(paged(items, page, limit))

    async def create_rule(request: Request) -> Response:
        body = check_fields(await json_body(request), {"sql": str}, {"id": str, **{k: v for k, v in RULE_FIELDS.items() if k != "sql"}})
        rule_id = body.pop("id", None) or f"rule_{secrets.token_hex(4)}"

        def create(rules: dict[str, Any]) -> None:
            if rule_id in rules:
                raise ApiError(409, "ALREADY_EXISTS", f"rule {rule_id} already exists")
            rules[rule_id] = {"actions": [], "enable": True, "description": "", **body}

        refusal = await _save_rules(node, create)
        return refusal or json_response(_rule_info(node, rule_id), 201)

    async def get_rule(request: Request) -> Response:
        rule_id = request.path_params["id"]
        if rule_id not in node.settings.rule_engine.rules:
            raise not_found(f"rule {rule_id}")
        return json_response(_rule_info(node, rule_id))

    async def update_rule(request: Request) -> Response:
        rule_id = request.path_params["id"]
        body = check_fields(await json_body(request), {}, RULE_FIELDS)

        def update(rules: dict[str, Any]) -> None:
            if rule_id not in rules:
                raise not_found(f"rule {rule_id}")
            rules[rule_id] = {**rules[rule_id], **body}

        refusal = await _save_rules(node, update)
        return refusal or json_response(_rule_info(node, rule_id))

    async def delete_rule(request: Request) -> Response:
        rule_id = request.path_params["id"]
        def delete(rules: dict[str, Any]) -> None:
            if rules.pop(rule_id, None) is None:
                raise not_found(f"rule {rule_id}")

        refusal = await _save_rules(node, delete)
        return refusal or Response(status_code=204)

    async def rule_metrics(request: Request) -> Response:
        rule_id = request.path_params["id"]
        running = _running_rules(node).get(rule_id)
        if running is None:
            raise not_found(f"rule {rule_id}")
        return json_response({"id": rule_id, "metrics": running.metrics.as_dict()})

    async def rule_test(request: Request) -> Response:
        status, answer = rule_test_response(await json_body(request))
        return Response(response_body(answer), status_code=status, media_type="application/json")

    async def list_actions(request: Request) -> Response:
        return json_response([
            {"id": aid, "type": a.kind, "name": a.name, "connector": f"{a.kind}:{a.settings.connector}",
             "status": a.connector.status, "metrics": a.metrics.as_dict()}
            for aid, a in sorted(_resources(node).actions.items())
        ])

    async def list_connectors(request: Request) -> Response:
        return json_response([
            {"id": cid, "type": c.type, "name": c.name, "status": c.status, "last_error": c.last_error}
            for cid, c in sorted(_resources(node).connectors.items())
        ])

    return [
        Route("/api/v5/rules", list_rules, methods=["GET"]),
        Route("/api/v5/rules", create_rule, methods=["POST"]),
        Route("/api/v5/rules/{id}", get_rule, methods=["GET"]),
        Route("/api/v5/rules/{id}", update_rule, methods=["PUT"]),
        Route("/api/v5/rules/{id}", delete_rule, methods=["DELETE"]),
        Route("/api/v5/rules/{id}/metrics", rule_metrics, methods=["GET"]),
        Route("/api/v5/rule_test", rule_test, methods=["POST"]),
        Route("/api/v5/actions", list_actions, methods=["GET"]),
        Route("/api/v5/connectors", list_connectors, methods=["GET"]),
    ]
