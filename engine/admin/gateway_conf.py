"""The OCPP gateway's settings in the shape of EMQX's gateway API, and request bodies back into
the admin API's overlay.

- Out: settings as JSON (durations and sizes as written, binds as `host:port`), listeners as a
  list with `id`/`type`/`name`, secrets as `"******"`, keys EMQX has that have no effect here
  left out while they hold their default (so a GET-then-PUT does not write them back).
- In: a body becomes an overlay entry that *replaces* what the conf file says for that object
  (EMQX's meaning of PUT): every key the file sets and the body does not is written as `null`,
  which the loader reads as "removed". A `"******"` secret keeps the current value.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import typing
from typing import Any

from engine.admin.common import ApiError, bad_request
from engine.admin.nodeview import NodeView
from engine.config.loader import read_sources
from engine.config.schema import ListenerSettings, ListenersSettings, NoEffect
from engine.config.types import Bind, Duration, Size

GATEWAY = "ocpp"
LISTENER_KINDS = ("ws", "wss")
MASK = "******"
SECRETS = frozenset({"password"})
# what the API shows of a listener beyond its settings; ignored in a body (EMQX's `id`, `running`, ...)
LISTENER_INFO = frozenset({"id", "type", "name", "running", "current_connections", "node_status"})
# what the API shows of the gateway beyond its settings; ignored in a body
GATEWAY_INFO = frozenset({"name", "status", "created_at", "started_at", "stopped_at", "current_connections",
                          "max_connections", "node_status"})
_LISTENER_NAME = re.compile(r"^[A-Za-z][0-9A-Za-z_-]*$")  # EMQX's rule for a listener's name
MAX_LISTENER_NAME = 64


# --- settings → JSON ------------------------------------------------------------------------------


@functools.cache
def _quiet_defaults(cls: type) -> dict[str, Any]:
    """The fields of `cls` marked NoEffect, with their defaults."""
    hints = typing.get_type_hints(cls, include_extras=True)
    quiet = {}
    for f in dataclasses.fields(cls):
        meta = typing.get_args(hints[f.name])[1:] if typing.get_origin(hints[f.name]) is typing.Annotated else ()
        if any(isinstance(m, NoEffect) for m in meta):
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            quiet[f.name] = default
    return quiet


def public(value: Any) -> Any:
    """A settings value as the API shows it."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        quiet = _quiet_defaults(type(value))
        out = {}
        for f in dataclasses.fields(value):
            item = getattr(value, f.name)
            if f.name in quiet and item == quiet[f.name]:
                continue
            out[f.name] = MASK if f.name in SECRETS and isinstance(item, str) and item else public(item)
        return out
    if isinstance(value, (Duration, Size, Bind)):
        return str(value)
    if isinstance(value, dict):
        return {k: public(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [public(v) for v in value]
    return value


def listener_id(kind: str, name: str) -> str:
    return f"{GATEWAY}:{kind}:{name}"


def parse_listener_id(text: str) -> tuple[str, str]:
    gateway, _, rest = text.partition(":")
    kind, _, name = rest.partition(":")
    if gateway != GATEWAY or kind not in LISTENER_KINDS or not name:
        raise bad_request(f"invalid listener id {text!r}: expected ocpp:ws:NAME or ocpp:wss:NAME")
    return kind, name


def check_new_name(name: Any) -> str:
    if not isinstance(name, str):
        raise bad_request("name: expected a string")
    if len(name) > MAX_LISTENER_NAME or not _LISTENER_NAME.match(name):
        raise bad_request(f"name: {name[:80]!r} is not a listener name (a letter, then letters, digits, "
                          f"_ or -; at most {MAX_LISTENER_NAME})")
    return name


def listener_settings(node: NodeView, kind: str, name: str) -> ListenerSettings | None:
    listeners = node.settings.gateway.ocpp.listeners
    found: ListenerSettings | None = (listeners.ws if kind == "ws" else listeners.wss).get(name)
    return found


def listener_not_found(text: str) -> ApiError:
    return ApiError(404, "RESOURCE_NOT_FOUND", f"listener {text!r} not found")


def listener_doc(node: NodeView, kind: str, name: str, settings: ListenerSettings) -> dict[str, Any]:
    """One listener as EMQX's API shows it: its settings, with id, type, name and what is running."""
    ocpp = node.settings.gateway.ocpp
    full = listener_id(kind, name)
    running_listener = node.listeners.get(full)
    server = getattr(running_listener, "server", None)
    running = server is not None and any(srv.is_serving() for srv in getattr(server, "servers", []))
    doc: dict[str, Any] = {"id": full, "type": kind, "name": name}
    doc.update(public(settings))
    doc["mountpoint"] = ocpp.mountpoint if settings.mountpoint is None else settings.mountpoint
    doc["message_format_checking"] = settings.message_format_checking or ocpp.message_format_checking
    doc["running"] = running
    doc["current_connections"] = running_listener.app.connections if running_listener is not None else 0
    return doc


def listener_docs(node: NodeView) -> list[dict[str, Any]]:
    listeners = node.settings.gateway.ocpp.listeners
    return [listener_doc(node, kind, name, s)
            for kind, group in (("ws", listeners.ws), ("wss", listeners.wss)) for name, s in group.items()]


# --- JSON → the overlay ----------------------------------------------------------------------------


def object_body(body: Any, what: str = "the body") -> dict[str, Any]:
    if not isinstance(body, dict):
        raise bad_request(f"{what} must be a JSON object")
    return body


def file_tree(node: NodeView) -> dict[str, Any]:
    """The conf file as written (no overlay, no environment): what a replacement must null out."""
    return read_sources(node.config_path, {}, overlay=False).tree


def dig(tree: dict[str, Any], *keys: str) -> Any:
    """tree[k1][k2]...; None where a level is missing or not an object."""
    here: Any = tree
    for key in keys:
        here = here.get(key) if isinstance(here, dict) else None
    return here


def place(tree: dict[str, Any], keys: tuple[str, ...], value: Any) -> None:
    """tree[k1]...[kn] = value, making the objects on the way."""
    here = tree
    for key in keys[:-1]:
        child = here.get(key)
        if not isinstance(child, dict):
            child = here[key] = {}
        here = child
    here[keys[-1]] = value


def keep_default_listeners(overlay: dict[str, Any], written: dict[str, Any], kind: str) -> None:
    """Before the overlay names a listener of `kind`: when neither the conf file nor the overlay has
    `listeners.<kind>`, the listeners running are the schema's default ones (`ws.default`), which a
    map in the overlay would replace. Write them in (as `{}`: every key its default)."""
    path = ("gateway", "ocpp", "listeners", kind)
    if dig(written, *path) is None and dig(overlay, *path) is None:
        for name in getattr(ListenersSettings(), kind):
            place(overlay, path + (name,), {})


def replacing(written: Any, body: dict[str, Any]) -> dict[str, Any]:
    """`body`, plus a null for every key of `written` (the conf file's object) the body does not set."""
    out = dict(body)
    if isinstance(written, dict):
        for key, value in written.items():
            if key not in out:
                out[key] = None
            elif isinstance(value, dict) and isinstance(out[key], dict):
                out[key] = replacing(value, out[key])
    return out


def unmasked(body: Any, current: Any) -> Any:
    """A body with every `"******"` secret put back to the current value."""
    if isinstance(body, dict):
        here = current if isinstance(current, dict) else {}
        return {k: (here.get(k) if k in SECRETS and v == MASK else unmasked(v, here.get(k))) for k, v in body.items()}
    return body


def plain_settings(value: Any) -> Any:
    """Settings as unmasked JSON (what a `"******"` in a body stands for)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain_settings(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: plain_settings(v) for k, v in value.items()}
    return value
