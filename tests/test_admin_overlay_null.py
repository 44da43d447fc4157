"""A `null` in the admin API's overlay removes the key it names from what the conf file set (how a
listener or authenticator deleted over the API stays deleted); the conf file's own keys are untouched
otherwise."""

from __future__ import annotations

import pytest

from engine.admin.gateway_conf import keep_default_listeners, place
from engine.config import ConfigError, load_settings
from engine.config.overlay import render_overlay
from engine.config.schema import ListenerSettings


def conf(tmp_path, text: str) -> str:
    path = tmp_path / "gw.conf"
    path.write_text(text)
    return str(path)


FILE = """
gateway.ocpp {
  mountpoint = "file/"
  authentication { enable = true }
  listeners.ws.side { bind = "127.0.0.1:41001", max_conn_rate = 7, websocket { path = "/side", compress = true } }
}
"""


def test_null_removes_what_the_file_set(tmp_path):
    path = conf(tmp_path, FILE)
    overlay = '"gateway" { "ocpp" { "listeners" { "ws" { "side" = null } }, "authentication" = null } }\n'
    s = load_settings(path, {}, overlay=overlay)
    assert s.gateway.ocpp.listeners.ws == {}  # the file's map had only `side`
    assert s.gateway.ocpp.authentication.enable is False  # no block: no authenticator
    assert s.gateway.ocpp.mountpoint == "file/"


def test_null_inside_an_object_resets_that_key_only(tmp_path):
    path = conf(tmp_path, FILE)
    overlay = ('"gateway" { "ocpp" { "listeners" { "ws" { "side" { "max_conn_rate" = null, '
               '"websocket" { "path" = null } } } } } }\n')
    side = load_settings(path, {}, overlay=overlay).gateway.ocpp.listeners.ws["side"]
    assert side.max_conn_rate == 1000 and side.websocket.path == "/ocpp"
    assert side.websocket.compress is True and side.bind.port == 41001


def test_without_the_overlay_nothing_changes(tmp_path):
    path = conf(tmp_path, FILE)
    assert load_settings(path, {}, overlay=False).gateway.ocpp.listeners.ws["side"].max_conn_rate == 7
    with pytest.raises(ConfigError, match="max_conn_rate"):  # in the conf file, null is still a wrong value
        load_settings(conf(tmp_path, "gateway.ocpp.listeners.ws.default.max_conn_rate = null\n"), {}, overlay=False)


def test_null_for_a_default_listener_the_file_never_named(tmp_path):
    path = conf(tmp_path, "")
    overlay = '"gateway" { "ocpp" { "listeners" { "ws" { "default" = null } } } }\n'
    assert load_settings(path, {}, overlay=overlay).gateway.ocpp.listeners.ws == {}


def test_a_listener_added_next_to_the_default_one_keeps_it(tmp_path):
    """The conf file names no listeners: the default `ws.default` runs, and a listener the API adds
    joins it instead of replacing the default map."""
    path = conf(tmp_path, "")
    overlay: dict = {}
    keep_default_listeners(overlay, {}, "ws")
    place(overlay, ("gateway", "ocpp", "listeners", "ws", "extra"), {"bind": "127.0.0.1:41002"})
    ws = load_settings(path, {}, overlay=render_overlay(overlay)).gateway.ocpp.listeners.ws
    assert set(ws) == {"default", "extra"} and ws["default"] == ListenerSettings()
    # the file names the map: nothing is added
    overlay = {}
    keep_default_listeners(overlay, {"gateway": {"ocpp": {"listeners": {"ws": {}}}}}, "ws")
    assert overlay == {}
