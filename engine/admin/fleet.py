"""The charge point list of the admin API: filters and paging that stay fast at 20,000 charge points.

The registry keeps its sessions sorted by id (sorted again only when one connects or leaves), so
a request is one pass over them with cheap checks, and only the page asked for is rendered: no
sort per request, no dict per charge point that is not on the page.

Filters (EMQX's names where EMQX has them): `clientid`, `username`, `ip_address`, `proto_ver`
(`ocpp1.6`, `ocpp2.0.1`, `ocpp2.1`: anything else is a 400), `like_clientid`, `like_username`
(substring), `gte_connected_at`/`lte_connected_at`, and ours: `status`, a connector status (a
charge point matches when any of its connectors last reported it, e.g. `status=Faulted`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from starlette.datastructures import QueryParams

from engine.admin.common import ApiError, bad_request

if TYPE_CHECKING:
    from engine.ocpp.context import GatewayContext
    from engine.ocpp.session import Session

PROTOCOLS = ("ocpp1.6", "ocpp2.0.1", "ocpp2.1")
MAX_FILTER = 256  # default of dashboard.max_filter_length: characters of a filter value
_STATUS = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")

Check = Callable[["Session"], bool]


class FilterTooLong(ApiError):
    """A filter value longer than dashboard.max_filter_length (a 400; counted as filter_too_long)."""


def _params(q: QueryParams, max_filter: int) -> Callable[[str], str | None]:
    def param(name: str) -> str | None:
        if name not in q:
            return None
        value = q[name]
        if len(value) > max_filter:
            raise FilterTooLong(400, "BAD_REQUEST", f"{name}: longer than {max_filter} characters "
                                "(dashboard.max_filter_length)")
        return value

    return param


def checks(q: QueryParams, parse_time: Callable[[str, str], float],
           max_filter: int = MAX_FILTER) -> tuple[str | None, list[Check]]:
    """The exact clientid asked for (if any) and the checks every listed session must pass; a
    hostile or unknown value is a 400 naming the parameter."""
    found: list[Check] = []
    _param = _params(q, max_filter)
    cid = _param("clientid")
    username = _param("username")
    if username is not None:
        found.append(lambda s: s.username == username)
    ip = _param("ip_address")
    if ip is not None:
        found.append(lambda s: s.peer[0] == ip)
    proto = _param("proto_ver")
    if proto is not None:
        if proto not in PROTOCOLS:
            raise bad_request(f"proto_ver: expected one of {', '.join(PROTOCOLS)}")
        found.append(lambda s: s.proto_ver == proto)
    like_user = _param("like_username")
    if like_user is not None:
        found.append(lambda s: like_user in (s.username or ""))
    for name, below in (("gte_connected_at", False), ("lte_connected_at", True)):
        text = _param(name)
        if text is not None:
            found.append(_bound(parse_time(name, text), below))
    status = _param("status")
    if status is not None:
        if not _STATUS.fullmatch(status):
            raise bad_request("status: expected a connector status such as Available, Charging or Faulted")
        found.append(lambda s: s.fleet is not None and status in s.fleet.statuses)
    return cid, found


def _bound(bound: float, below: bool) -> Check:
    if below:
        return lambda s: s.connected_at <= bound
    return lambda s: s.connected_at >= bound


def _every(checks: list[Check]) -> Check:
    """One check for all of `checks` (nested `and`s: cheaper per session than all() over a generator)."""
    first = checks[0]
    if len(checks) == 1:
        return first
    rest = _every(checks[1:])
    return lambda s: first(s) and rest(s)


def matching(ctx: GatewayContext | None, q: QueryParams, parse_time: Callable[[str, str], float],
             page: int, limit: int, max_filter: int = MAX_FILTER) -> tuple[list[Session], int]:
    """The sessions of the page asked for, and how many match in all."""
    cid, found = checks(q, parse_time, max_filter)
    like = _params(q, max_filter)("like_clientid")
    if ctx is None:
        return [], 0
    registry = ctx.sessions
    if cid is not None:
        one = registry.get(cid)
        sessions: list[Any] = [one] if one is not None else []
    else:
        sessions = registry.in_order()
    if like is not None:
        found.insert(0, lambda s: like in s.cid)
    keep = _every(found) if found else None
    start, stop = (page - 1) * limit, page * limit
    count = 0
    page_items: list[Session] = []
    for session in sessions:
        if session.closed or (keep is not None and not keep(session)):
            continue
        if start <= count < stop:
            page_items.append(session)
        count += 1
    return page_items, count


def fleet_fields(session: Session) -> dict[str, Any]:
    """What the dashboard shows beyond EMQX's client fields."""
    from engine.ocpp.fleet import FleetInfo, rfc3339

    info = (session.fleet or FleetInfo()).as_dict()
    last = session.last_message_at
    info["last_message_at"] = rfc3339(last) if last is not None else None
    return info
