"""The uvicorn (and websockets) internals our transport overrides or reads are still there.

`engine.ocpp.transport` and `engine.httpguard` subclass uvicorn's HttpToolsProtocol and
WebSocketsSansIOProtocol and override or read members that are not uvicorn's public API (they
exist as we use them from uvicorn 0.35; pyproject.toml pins the range we test). An upgrade that
renames, removes or re-signs one of them fails here, naming it, instead of somewhere in a
handshake or on the hot path. A member listed here is either overridden by us (its signature
must match) or read by us (it must be a method, or an attribute some method of the class sets).
"""

from __future__ import annotations

import ast
import inspect
import re
import textwrap
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.server import ServerProtocol

# method: the parameters after self we rely on (overridden or called)
HTTP_METHODS = {
    "connection_made": ["transport"], "connection_lost": ["exc"], "data_received": ["data"],
    "send_400_response": ["msg"], "handle_websocket_upgrade": [], "_should_upgrade": [],
    "on_message_begin": [], "on_url": ["url"], "on_header": ["name", "value"], "on_headers_complete": [],
    "on_message_complete": [], "on_body": ["body"], "on_response_complete": [],
}
HTTP_ATTRIBUTES = ["loop", "transport", "parser", "logger", "url", "scope", "client"]

WS_METHODS = {
    "send": ["message"], "connection_lost": ["exc"], "send_receive_event_to_app": [], "keepalive_timeout": [],
    "handle_connect": ["event"], "handle_parser_exception": [],
}
WS_ATTRIBUTES = ["handshake_complete", "close_sent", "conn", "frames", "curr_msg_data_type", "transport", "queue",
                 "read_paused", "close_timer", "loop", "close_timeout", "scope", "request", "response"]

CONN_METHODS = ["send_text", "send_close", "data_to_send"]
CONN_ATTRIBUTES = ["close_rcvd"]


def _set_attributes(cls: type) -> set[str]:
    """The `self.<name>` a class and its bases assign anywhere in their methods (or annotate in the body)."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if klass is object or klass.__module__ in ("asyncio.protocols", "builtins"):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        for node in ast.walk(tree):
            targets: list[ast.expr] = []
            if isinstance(node, ast.Assign):
                targets = node.targets
            elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
                targets = [node.target]
            for target in targets:
                if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and target.value.id == "self":
                    names.add(target.attr)
            if isinstance(node, ast.ClassDef):
                names.update(s.target.id for s in node.body if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name))
    return names


def _check(cls: type, methods: dict[str, list[str]] | list[str], attributes: list[str]) -> list[str]:
    changed = []
    for name in methods:
        member = getattr(cls, name, None)
        if not callable(member):
            changed.append(f"{cls.__qualname__}.{name}() is gone")
            continue
        if isinstance(methods, dict):
            params = [p for p in inspect.signature(member).parameters][1:]
            if params != methods[name]:
                changed.append(f"{cls.__qualname__}.{name} takes {params} now, not {methods[name]}")
    assigned = _set_attributes(cls)
    changed += [f"{cls.__qualname__}.{name} is no longer set" for name in attributes
                if name not in assigned and not hasattr(cls, name)]
    return changed


@pytest.mark.parametrize(("cls", "methods", "attributes"), [
    (HttpToolsProtocol, HTTP_METHODS, HTTP_ATTRIBUTES),
    (WebSocketsSansIOProtocol, WS_METHODS, WS_ATTRIBUTES),
    (ServerProtocol, CONN_METHODS, CONN_ATTRIBUTES),
], ids=["HttpToolsProtocol", "WebSocketsSansIOProtocol", "websockets.ServerProtocol"])
def test_the_internals_we_use_are_there(cls, methods, attributes):
    changed = _check(cls, methods, attributes)
    assert not changed, (f"uvicorn {version('uvicorn')} / websockets {version('websockets')} changed what "
                         "engine/ocpp/transport.py and engine/httpguard.py override or read: " + "; ".join(changed))


def test_the_installed_uvicorn_is_in_the_pinned_range():
    pyproject = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())
    spec = next(d for d in pyproject["project"]["dependencies"] if re.match(r"uvicorn\b", d))
    bounds = dict(re.findall(r"(>=|<)\s*([0-9.]+)", spec))
    assert ">=" in bounds and "<" in bounds, f"pyproject.toml must pin a uvicorn range (>=low,<high), not {spec!r}"

    def parse(text: str) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"[0-9]+", text)[:3])

    installed = parse(version("uvicorn"))
    assert parse(bounds[">="]) <= installed < parse(bounds["<"]), (
        f"uvicorn {version('uvicorn')} is outside the tested range {spec!r}: run tests/test_uvicorn_internals.py "
        "and the transport tests on it, then move the pin")


def test_our_overrides_are_still_overrides():
    """Every method the transport overrides exists in the uvicorn class it extends (a rename upstream
    would leave ours never called)."""
    from engine.httpguard import GuardedHttpProtocol
    from engine.ocpp.transport import OcppHttpProtocol, OcppProtocol

    ours = {
        GuardedHttpProtocol: HttpToolsProtocol,
        OcppHttpProtocol: HttpToolsProtocol,
        OcppProtocol: WebSocketsSansIOProtocol,
    }
    own = {"send_text", "close", "disconnect_reason", "head_limits", "count", "disarm", "for_app",  # our additions
           "_arm", "_head_timed_out", "_refuse", "_uncount", "_turn_down"}
    for cls, base in ours.items():
        for name, member in vars(cls).items():
            if inspect.isfunction(member) and not name.startswith("__") and name not in own:
                assert callable(getattr(base, name, None)), f"{cls.__name__}.{name} overrides nothing in {base.__name__}"
