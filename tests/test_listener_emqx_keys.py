"""EMQX 5's ws/wss listener keys: a full EMQX listener block checks and starts; each key is honoured
or named once as having no effect; EMQX's value forms (comma strings, infinity) read as EMQX reads them."""

from __future__ import annotations

import ssl
import subprocess
import sys
from pathlib import Path

import pytest
import websockets

from engine.config.loader import ConfigError, load_settings, load_settings_with_warnings
from engine.config.types import INFINITE_FRAME_SIZE, UNLIMITED_COUNT
from engine.ocpp.access import AccessRules
from tests.certs import CertAuthority
from tests.gateway import GatewayProcess
from tests.servers import free_port

BIN = str(Path(sys.executable).with_name("ocpp-gateway"))

LISTENER_BODY = """
    acceptors = 16
    enable = true
    max_connections = infinity
    max_conn_rate = 1000
    enable_authn = true
    mountpoint = "ocpp/"
    proxy_protocol = false
    proxy_protocol_timeout = 3s
    access_rules = ["allow all"]
    zone = default
    limiter {}
    authentication { mechanism = password_based, backend = built_in_database }
    tcp_options {
      active_n = 100, backlog = 1024, send_timeout = 15s, send_timeout_close = true,
      recbuf = 64KB, sndbuf = 64KB, buffer = 4KB, high_watermark = 1MB, nodelay = true,
      nolinger = false, reuseaddr = true, keepalive = "240,30,5", tune_buffer = false
    }
    websocket {
      path = "/ocpp"
      piggyback = single
      compress = false
      idle_timeout = 7200s
      max_frame_size = infinity
      fail_if_no_subprotocol = true
      supported_subprotocols = "ocpp1.6, ocpp2.0"
      check_origin_enable = false
      allow_origin_absence = true
      check_origins = "http://localhost:18083, http://127.0.0.1:18083"
      proxy_address_header = "x-forwarded-for"
      proxy_port_header = "x-forwarded-port"
      deflate_opts { level = default, mem_level = 8, strategy = default, server_context_takeover = takeover,
                     client_context_takeover = takeover, server_max_window_bits = 15, client_max_window_bits = 15 }
      validate_utf8 = true
    }
"""

SSL_BODY = """
      cacertfile = "{ca}"
      certfile = "{cert}"
      keyfile = "{key}"
      verify = verify_none
      fail_if_no_peer_cert = false
      reuse_sessions = true
      depth = 10
      password = ""
      versions = ["tlsv1.3", "tlsv1.2"]
      ciphers = "TLS_AES_256_GCM_SHA384,TLS_AES_128_GCM_SHA256,ECDHE-ECDSA-AES256-GCM-SHA384,ECDHE-RSA-AES256-GCM-SHA384"
      secure_renegotiate = true
      log_level = notice
      hibernate_after = 5s
      dhfile = ""
      honor_cipher_order = true
      client_renegotiation = true
      handshake_timeout = 15s
      gc_after_handshake = false
      user_lookup_fun = "emqx_tls_psk:lookup"
      cacerts = false
      enable_crl_check = false
      partial_chain = false
      verify_peer_ext_key_usage = ""
      ocsp {{ enable_ocsp_stapling = false, refresh_interval = 5m, refresh_http_timeout = 15s }}
"""

NO_EFFECT = ["acceptors", "zone", "limiter", "authentication", "tcp_options.active_n", "tcp_options.send_timeout",
             "tcp_options.send_timeout_close", "tcp_options.buffer", "tcp_options.high_watermark",
             "tcp_options.nolinger", "tcp_options.tune_buffer", "websocket.piggyback", "websocket.deflate_opts",
             "websocket.proxy_address_header", "websocket.proxy_port_header", "websocket.validate_utf8"]
SSL_NO_EFFECT = ["depth", "secure_renegotiate", "log_level", "hibernate_after", "gc_after_handshake",
                 "user_lookup_fun", "cacerts", "enable_crl_check", "partial_chain", "verify_peer_ext_key_usage", "ocsp"]


def emqx_config(tmp_path: Path, ws_port: int, wss_port: int) -> str:
    (tmp_path / "pki").mkdir(exist_ok=True)
    ca = CertAuthority(tmp_path / "pki")
    server = ca.server()
    ssl_body = SSL_BODY.format(ca=ca.cert_path, cert=server.cert, key=server.key)
    return (f'gateway.ocpp.listeners.ws.default {{ bind = "127.0.0.1:{ws_port}"\n{LISTENER_BODY} }}\n'
            f'gateway.ocpp.listeners.wss.default {{ bind = "127.0.0.1:{wss_port}"\n{LISTENER_BODY}\n'
            f'  ssl_options {{ {ssl_body} }} }}\n')


def test_a_full_emqx_listener_block_loads_and_names_each_key_without_effect_once(tmp_path):
    path = tmp_path / "emqx.conf"
    path.write_text(emqx_config(tmp_path, 33033, 33034))
    loaded = load_settings_with_warnings(path, {}, overlay=False)
    s, lines = loaded.settings, loaded.warnings
    for kind in ("ws", "wss"):
        for key in NO_EFFECT + ([f"ssl_options.{k}" for k in SSL_NO_EFFECT] if kind == "wss" else []):
            full = f"gateway.ocpp.listeners.{kind}.default.{key}: accepted for EMQX compatibility, has no effect here"
            assert sum(full in line for line in lines) == 1, full
    honoured = ["max_connections", "access_rules", "proxy_protocol", "tcp_options.backlog", "tcp_options.keepalive",
                "websocket.max_frame_size", "websocket.check_origins", "ssl_options.ciphers", "ssl_options.handshake_timeout"]
    for key in honoured:
        assert not any(f".{key}:" in line for line in lines), key
    wss = s.gateway.ocpp.listeners.wss["default"]
    assert wss.max_connections == UNLIMITED_COUNT and str(wss.max_connections) == "infinity"
    assert wss.websocket.max_frame_size == INFINITE_FRAME_SIZE and str(wss.websocket.max_frame_size) == "infinity"
    assert wss.websocket.supported_subprotocols == ["ocpp1.6", "ocpp2.0.1"]  # EMQX's "ocpp2.0"
    assert wss.websocket.check_origins == ["http://localhost:18083", "http://127.0.0.1:18083"]
    assert wss.ssl_options.ciphers[:2] == ["TLS_AES_256_GCM_SHA384", "TLS_AES_128_GCM_SHA256"]
    assert wss.tcp_options.backlog == 1024 and wss.tcp_options.recbuf == 64 * 1024
    assert wss.ssl_options.handshake_timeout == 15


async def test_a_full_emqx_listener_block_passes_check_config_and_starts(tmp_path):
    ws_port, wss_port = free_port(), free_port()
    conf = emqx_config(tmp_path, ws_port, wss_port)
    path = tmp_path / "emqx.conf"
    path.write_text(conf)
    out = subprocess.run([BIN, "check-config", "-c", str(path)], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    gw = GatewayProcess(tmp_path, conf, env={"OCPPGW_GATEWAY__OCPP__LISTENERS__WS__DEFAULT__BIND": f"127.0.0.1:{ws_port}"})
    try:
        gw.start()
        gw.wait_log(rf"OCPP listener ocpp:wss:default on wss://127.0.0.1:{wss_port}/ocpp")
        gw.wait_log(rf"OCPP listener ocpp:ws:default on ws://127.0.0.1:{ws_port}/ocpp")
        ca = ssl.create_default_context(cafile=str(tmp_path / "pki" / "ca.pem"))
        for url, extra in ((f"wss://localhost:{wss_port}/ocpp/CP1", {"ssl": ca}), (f"ws://127.0.0.1:{ws_port}/ocpp/CP2", {})):
            async with websockets.connect(url, subprotocols=["ocpp2.0.1"], **extra) as ws:
                assert ws.subprotocol == "ocpp2.0.1"  # EMQX's "ocpp2.0" in supported_subprotocols
                await ws.send('[2,"1","Heartbeat",{}]')
    finally:
        gw.stop()


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.conf"
    path.write_text(text)
    return path


@pytest.mark.parametrize("body, key, problem", [
    ('access_rules = ["allow all", "permit 10.0.0.0/8"]', "access_rules[1]", 'starts with "allow" or "deny"'),
    ('access_rules = ["deny 10.0.0.300"]', "access_rules[0]", "not \"all\", an address or a network"),
    ('access_rules = ["deny"]', "access_rules[0]", 'names "all" or addresses'),
    ('tcp_options.keepalive = "240,30"', "tcp_options.keepalive", "Idle,Interval,Probes"),
    ('websocket.supported_subprotocols = "ocpp1.6, ocpp3"', "websocket.supported_subprotocols[1]", "expected one of"),
    ("websocket.max_frame_size = infinite", "websocket.max_frame_size", "or infinity"),
    ("max_connections = lots", "max_connections", "integer or infinity"),
    ("max_connections = 0", "max_connections", "out of range"),
    ("tcp_options.backlog = 0", "tcp_options.backlog", "out of range"),
    ("tcp_options.nagle = false", "tcp_options.nagle", "unknown key"),
    ("websocket.check_origin = true", "websocket.check_origin", "unknown key"),
])
def test_bad_listener_values_name_the_key_and_the_file(tmp_path, body, key, problem):
    path = write(tmp_path, f"gateway.ocpp.listeners.ws.default {{ {body} }}")
    with pytest.raises(ConfigError) as info:
        load_settings(path, {}, overlay=False)
    line = next((e for e in info.value.errors if f"gateway.ocpp.listeners.ws.default.{key}" in e), None)
    assert line is not None, info.value.errors
    assert line.startswith(str(path)) and problem in line, line


def test_bad_tls_keys_are_refused_when_read(tmp_path):
    """What a wss listener could not start with is refused by the config check (check-config, run, reload)."""
    path = write(tmp_path, f"""gateway.ocpp.listeners.wss.s {{ ssl_options {{ certfile = c.pem, keyfile = k.pem,
        ciphers = "ECDHE-RSA-AES256-GCM-SHA384, NO-SUCH-CIPHER", dhfile = "{tmp_path}/missing.pem" }} }}""")
    with pytest.raises(ConfigError) as info:
        load_settings(path, {}, overlay=False)
    text = "\n".join(info.value.errors)
    assert "ssl_options.ciphers" in text and "unknown to OpenSSL: NO-SUCH-CIPHER" in text
    assert "ssl_options.dhfile" in text and "cannot be read" in text


def test_comma_strings_and_lists_read_alike_from_file_and_environment(tmp_path):
    path = write(tmp_path, 'gateway.ocpp.listeners.ws.default.websocket.supported_subprotocols = "ocpp2.0.1,ocpp1.6"')
    s = load_settings(path, {}, overlay=False)
    assert s.gateway.ocpp.listeners.ws["default"].websocket.supported_subprotocols == ["ocpp2.0.1", "ocpp1.6"]
    env = {"OCPPGW_GATEWAY__OCPP__LISTENERS__WS__DEFAULT__WEBSOCKET__CHECK_ORIGINS": "https://a.example, https://b.example",
           "OCPPGW_GATEWAY__OCPP__LISTENERS__WS__DEFAULT__WEBSOCKET__SUPPORTED_SUBPROTOCOLS": '["ocpp1.6"]',
           "OCPPGW_GATEWAY__OCPP__LISTENERS__WS__DEFAULT__MAX_CONNECTIONS": "infinity"}
    s = load_settings(write(tmp_path, ""), env, overlay=False)
    ws = s.gateway.ocpp.listeners.ws["default"]
    assert ws.websocket.check_origins == ["https://a.example", "https://b.example"]
    assert ws.websocket.supported_subprotocols == ["ocpp1.6"]
    assert ws.max_connections == UNLIMITED_COUNT


def test_access_rules_first_match_decides_and_nothing_matching_is_allowed():
    rules = AccessRules(["deny 192.168.1.7", "allow 192.168.1.0/24, 10.0.0.0/8", "deny all"])
    assert not rules.allows("192.168.1.7")
    assert rules.allows("192.168.1.8") and rules.allows("10.2.3.4")
    assert not rules.allows("172.16.0.1") and not rules.allows("2001:db8::1")
    assert not rules.allows("::ffff:192.168.1.7")  # an IPv4 client on a dual-stack socket
    assert rules.allows("::ffff:10.0.0.1")
    assert AccessRules([]).allows("203.0.113.1")
    assert AccessRules(["deny 203.0.113.0/24"]).allows("203.0.114.1")  # no rule matches: allowed
    assert AccessRules(["deny 2001:db8::/32"]).allows("192.0.2.1") and not AccessRules(["deny 2001:db8::/32"]).allows("2001:db8::5")


def test_infinity_prints_back_as_infinity_in_the_effective_config(tmp_path):
    from engine.config import dump_hocon

    path = write(tmp_path, 'gateway.ocpp.listeners.ws.default { max_connections = infinity, websocket.max_frame_size = infinity }')
    text = dump_hocon(load_settings(path, {}, overlay=False))
    assert 'max_connections = "infinity"' in text and 'max_frame_size = "infinity"' in text
    again = tmp_path / "again.conf"
    again.write_text(text)
    ws = load_settings(again, {}, overlay=False).gateway.ocpp.listeners.ws["default"]
    assert ws.max_connections == UNLIMITED_COUNT and ws.websocket.max_frame_size == INFINITE_FRAME_SIZE
