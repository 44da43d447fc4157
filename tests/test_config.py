"""Config: HOCON + environment overrides → typed settings, and every way it can be wrong."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest

from engine.config import ConfigError, dump_hocon, load_settings
from engine.config.loader import read_sources
from engine.config.types import Bind, ConfigValueError, Duration, Size

REPO = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str, name: str = "gw.conf") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def errors_of(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text), env or {})
    return info.value.errors


# --- value types --------------------------------------------------------------------


@pytest.mark.parametrize(
    "value,seconds",
    [("30s", 30), ("5m", 300), ("1h", 3600), ("500ms", 0.5), ("1d", 86400), ("1.5s", 1.5),
     (datetime.timedelta(seconds=30), 30), (" 2 s ", 2)],
)
def test_duration_parses(value, seconds):
    assert Duration.parse(value) == seconds


@pytest.mark.parametrize("value", ["30", "30x", "-1s", "", "s", True, None, [1]])
def test_duration_rejects(value):
    with pytest.raises(ConfigValueError):
        Duration.parse(value)


def test_duration_bare_number_says_to_add_a_unit():
    with pytest.raises(ConfigValueError, match='needs a unit, e.g. "30s"'):
        Duration.parse(30)


@pytest.mark.parametrize("value,text", [(30, "30s"), (300, "5m"), (3600, "1h"), (0.5, "500ms"), (0, "0ms"), (90, "90s")])
def test_duration_prints_canonically(value, text):
    assert str(Duration(value)) == text


@pytest.mark.parametrize("value,size", [(1024, 1024), ("64KB", 65536), ("1MB", 1 << 20), ("2gb", 2 << 30), ("10", 10), ("10b", 10)])
def test_size_parses(value, size):
    assert Size.parse(value) == size
    assert Size.parse(str(Size(size))) == size


@pytest.mark.parametrize("value", ["1TB", "-1", "1.5MB", "lots", -5, True])
def test_size_rejects(value):
    with pytest.raises(ConfigValueError):
        Size.parse(value)


@pytest.mark.parametrize(
    "value,bind",
    [("0.0.0.0:33033", ("0.0.0.0", 33033)), (33033, ("0.0.0.0", 33033)), ("1883", ("0.0.0.0", 1883)),
     ("[::1]:1883", ("::1", 1883)), ("localhost:80", ("localhost", 80))],
)
def test_bind_parses(value, bind):
    assert Bind.parse(value) == bind
    assert Bind.parse(str(Bind(*bind))) == bind


@pytest.mark.parametrize("value,message", [("0.0.0.0:99999", "out of range"), ("0.0.0.0:0", "out of range"),
                                            ("host", "expected"), ("a:b:c", "expected"), (":80", "expected"), (True, "expected")])
def test_bind_rejects(value, message):
    with pytest.raises(ConfigValueError, match=message):
        Bind.parse(value)


# --- loading --------------------------------------------------------------------------


def test_empty_file_is_a_working_config(tmp_path):
    s = load_settings(write(tmp_path, ""), {})
    assert s.mqtt.server == "embedded"
    assert s.mqtt.embedded.bind == Bind("127.0.0.1", 1883)
    assert s.gateway.ocpp.mountpoint == "ocpp/"
    assert s.gateway.ocpp.upstream.topic == "cp/${cid}"
    assert s.gateway.ocpp.dnstream.awaiting_timeout == 30
    assert s.gateway.ocpp.listeners.ws["default"].bind == Bind("0.0.0.0", 33033)
    assert s.dashboard.listeners.http.bind == Bind("127.0.0.1", 18083)


def test_shipped_conf_is_every_default_commented(tmp_path):
    """conf/gateway.conf documents every key with its default, all commented out."""
    shipped = load_settings(REPO / "conf" / "gateway.conf", {})
    assert shipped == load_settings(write(tmp_path, ""), {})
    text = (REPO / "conf" / "gateway.conf").read_text()
    uncommented = "\n".join(line.split("#", 1)[0] for line in text.splitlines() if not line.lstrip().startswith("#"))
    commented = "\n".join(line.lstrip()[1:] for line in text.splitlines() if line.lstrip().startswith("#"))
    assert not uncommented.strip()
    for key in ("mountpoint", "awaiting_timeout", "max_mqueue_len", "buffer", "max_messages", "forward",
                "heartbeat_checking_times_backoff", "message_format_checking", "lenient_clients", "cn_must_match_cid",
                "fail_if_no_subprotocol", "supported_subprotocols", "salt_position", "default_password"):
        assert key in commented, key


def test_values_and_nested_objects(tmp_path):
    s = load_settings(write(tmp_path, """
        node { name = "gw7", data_dir = "/var/lib/gw" }
        mqtt { server = "mqtt://broker.local:1884", qos = 2, keepalive = 30s, buffer.max_messages = 10 }
        gateway.ocpp {
          mountpoint = "ev/"
          idle_timeout = "45s"
          upstream.topic_override_mapping { BootNotification = "cp/${cid}/boot" }
          listeners.ws.default { bind = "127.0.0.1:9000", websocket.path = "/ws" }
          listeners.wss.secure { bind = 9443, ssl_options { certfile = "c.pem", keyfile = "k.pem" } }
        }
        rule_engine.rules.r1 { sql = "SELECT * FROM \\"t/#\\"", actions = ["console"] }
    """), {})
    assert s.node.name == "gw7"
    assert s.mqtt.qos == 2 and s.mqtt.keepalive == 30 and s.mqtt.buffer.max_messages == 10
    assert s.gateway.ocpp.idle_timeout == 45
    assert s.gateway.ocpp.upstream.topic_override_mapping == {"BootNotification": "cp/${cid}/boot"}
    assert s.gateway.ocpp.listeners.ws["default"].websocket.path == "/ws"
    assert s.gateway.ocpp.listeners.wss["secure"].bind == Bind("0.0.0.0", 9443)
    assert s.rule_engine.rules["r1"].sql == 'SELECT * FROM "t/#"'


def test_include_and_substitution(tmp_path):
    write(tmp_path, 'node.name = "from-include"\nbase_port = 2000\n', "base.conf")
    path = write(tmp_path, 'include "base.conf"\nmqtt.embedded.bind = "127.0.0.1:"${base_port}\n')
    # base_port is not a gateway key: the include works, and the stray key is reported
    with pytest.raises(ConfigError) as info:
        load_settings(path, {})
    assert info.value.errors == [f"{path}: base_port = 2000: unknown key"]
    write(tmp_path, 'node.name = "from-include"\n', "base.conf")
    s = load_settings(write(tmp_path, 'include "base.conf"\nmqtt.client_id = ${node.name}\n'), {})
    assert s.node.name == "from-include" and s.mqtt.client_id == "from-include"


def test_unknown_key_names_path_value_file_and_suggests(tmp_path):
    errs = errors_of(tmp_path, "mqtt { severs = \"x\" }")
    assert errs == [f'{tmp_path / "gw.conf"}: mqtt.severs = "x": unknown key (did you mean \'server\'?)']


def test_every_error_is_reported_at_once(tmp_path):
    errs = errors_of(tmp_path, """
        mqtt.qos = 3
        mqtt.keepalive = 60
        log.level = loud
        gateway.ocpp.listeners.ws.default.bind = "0.0.0.0:70000"
        gateway.ocpp.heartbeat_checking_times_backoff = "two"
        gateway.ocpp.dnstream.max_mqueue_len = 0
    """)
    f = tmp_path / "gw.conf"
    assert sorted(errs) == sorted([
        f"{f}: log.level = \"loud\": expected one of debug, info, notice, warning, error, critical",
        f"{f}: mqtt.keepalive = 60: a duration needs a unit, e.g. \"60s\" or \"60ms\"",
        f"{f}: mqtt.qos = 3: out of range 0..2",
        f"{f}: gateway.ocpp.heartbeat_checking_times_backoff = \"two\": expected an integer",
        f"{f}: gateway.ocpp.dnstream.max_mqueue_len = 0: out of range 1..",
        f"{f}: gateway.ocpp.listeners.ws.default.bind = \"0.0.0.0:70000\": port 70000 is out of range 1..65535",
    ])


@pytest.mark.parametrize(
    "text,expected",
    [
        ('mqtt.server = "http://x"', 'mqtt.server = "http://x": expected "embedded", "mqtt://host[:port]" or "mqtts://host[:port]"'),
        ('mqtt.server = "mqtt://x:notaport"', "the port is not a number"),
        ('mqtt.server = "mqtt://u:p@x"', "takes no path, query or credentials"),
        ('mqtt.forward.topics = ["a/#/b"]', 'mqtt.forward.topics[0] = "a/#/b": # must be a whole level and the last one'),
        ('mqtt.subscriptions = ["x+"]', 'mqtt.subscriptions[0] = "x+": + must be a whole level'),
        ('gateway.ocpp.mountpoint = "a/#/"', "a mountpoint cannot contain +, # or NUL"),
        ('gateway.ocpp.listeners.ws.default.websocket.path = "ocpp"', 'a path starts with "/"'),
        ('gateway.ocpp.listeners.wss.s { bind = 9000, ssl_options.keyfile = "k.pem" }', 'gateway.ocpp.listeners.wss.s.ssl_options.certfile = "": a wss listener needs a certificate and key'),
        ('gateway.ocpp.listeners.ws.a.bind = 9000\ngateway.ocpp.listeners.ws.b.bind = "0.0.0.0:9000"', "the same address as gateway.ocpp.listeners.ws.a"),
        ('gateway.ocpp.listeners.ws.default.websocket.supported_subprotocols = ["ocpp1.5"]', "expected one of ocpp1.6, ocpp2.0.1, ocpp2.1"),
        ('rule_engine.rules.r1 { actions = [] }', "rule_engine.rules.r1.sql: missing, required"),
        ('connectors.kafka.k1 {}', 'connectors.kafka = {"k1": {}}: unknown key'),
        ("mqtt = 5", "mqtt = 5: expected an object"),
        ("mqtt.subscriptions = \"a/b\"", 'mqtt.subscriptions = "a/b": expected a list'),
        ("node.name = [1]", "node.name = [1]: expected a string"),
        ("mqtt.ssl.enable = yes", 'mqtt.ssl.enable = "yes": expected true or false'),
        ("mqtt.reconnect { initial_interval = 10s, max_interval = 1s }", "must not be less than initial_interval"),
    ],
)
def test_bad_values(tmp_path, text, expected):
    errs = errors_of(tmp_path, text)
    assert len(errs) == 1, errs
    assert expected in errs[0]


def test_hocon_syntax_error_names_line_and_column(tmp_path):
    errs = errors_of(tmp_path, "node {\n  name = \n  x = }\n}\n")
    assert len(errs) == 1
    assert errs[0].startswith(f"{tmp_path / 'gw.conf'}:3:")
    assert "HOCON syntax error" in errs[0]


def test_unresolved_substitution(tmp_path):
    errs = errors_of(tmp_path, "node.name = ${nowhere}")
    assert len(errs) == 1 and "Cannot resolve variable ${nowhere}" in errs[0]


def test_unreadable_file(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path / "missing.conf", {})
    assert info.value.errors == [f"{tmp_path / 'missing.conf'}: cannot read the config file: No such file or directory"]
    with pytest.raises(ConfigError, match="is a directory|Is a directory"):
        load_settings(tmp_path, {})


def test_binary_file(tmp_path):
    path = tmp_path / "bin.conf"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_settings(path, {})


# --- environment overrides ----------------------------------------------------------------


def test_env_overrides_file_and_defaults(tmp_path):
    path = write(tmp_path, 'gateway.ocpp.mountpoint = "file/"\nmqtt.qos = 0\n')
    s = load_settings(path, {
        "OCPPGW_GATEWAY__OCPP__MOUNTPOINT": "env/",
        "OCPPGW_MQTT__QOS": "2",
        "OCPPGW_MQTT__KEEPALIVE": "15s",
        "OCPPGW_MQTT__SSL__ENABLE": "true",
        "OCPPGW_MQTT__SUBSCRIPTIONS": '["a/#", "b/+"]',
        "OCPPGW_MQTT__SERVER": "mqtt://10.0.0.1:1884",
        "OCPPGW_GATEWAY__OCPP__LISTENERS__WS__DEFAULT__BIND": "127.0.0.1:4000",
        "OTHER_VAR": "ignored",
    })
    assert s.gateway.ocpp.mountpoint == "env/"
    assert s.mqtt.qos == 2 and s.mqtt.keepalive == 15 and s.mqtt.ssl.enable is True
    assert s.mqtt.subscriptions == ["a/#", "b/+"]
    assert s.mqtt.server == "mqtt://10.0.0.1:1884"
    assert s.gateway.ocpp.listeners.ws["default"].bind == Bind("127.0.0.1", 4000)


def test_env_object_override(tmp_path):
    s = load_settings(write(tmp_path, ""), {"OCPPGW_GATEWAY__OCPP__UPSTREAM__TOPIC_OVERRIDE_MAPPING": '{Heartbeat = "hb/${cid}"}'})
    assert s.gateway.ocpp.upstream.topic_override_mapping == {"heartbeat": "hb/${cid}"} or \
        s.gateway.ocpp.upstream.topic_override_mapping == {"Heartbeat": "hb/${cid}"}


@pytest.mark.parametrize(
    "name,value,expected",
    [
        ("OCPPGW_MQTT__QOS", "high", 'environment OCPPGW_MQTT__QOS: mqtt.qos = "high": expected an integer'),
        ("OCPPGW_MQTT__KEEPALIVE", "60", 'environment OCPPGW_MQTT__KEEPALIVE: mqtt.keepalive = "60": expected a duration'),
        ("OCPPGW_MQTT__NOPE", "1", 'environment OCPPGW_MQTT__NOPE: mqtt.nope = "1": unknown key'),
        ("OCPPGW_MQTT__SSL__ENABLE", "maybe", "expected true or false"),
        ("OCPPGW_MQTT____QOS", "1", "environment OCPPGW_MQTT____QOS: cannot be read as a key path"),
        ("OCPPGW_MQTT__SERVER__X", "1", "environment OCPPGW_MQTT__SERVER__X: mqtt.server is a value, not an object"),
    ],
)
def test_bad_env_override(tmp_path, name, value, expected):
    path = write(tmp_path, 'mqtt.server = "embedded"\n')
    with pytest.raises(ConfigError) as info:
        load_settings(path, {name: value})
    assert len(info.value.errors) == 1, info.value.errors
    assert expected in info.value.errors[0]


def test_env_origin_covers_nested_keys(tmp_path):
    src = read_sources(write(tmp_path, ""), {"OCPPGW_MQTT__BUFFER": "{max_messages = 0}"})
    assert src.origin(("mqtt", "buffer", "max_messages")) == "environment OCPPGW_MQTT__BUFFER"
    with pytest.raises(ConfigError, match="environment OCPPGW_MQTT__BUFFER: mqtt.buffer.max_messages = 0: out of range"):
        load_settings(tmp_path / "gw.conf", {"OCPPGW_MQTT__BUFFER": "{max_messages = 0}"})


# --- printing -------------------------------------------------------------------------------


def test_dump_round_trips_and_hides_secrets(tmp_path):
    s = load_settings(write(tmp_path, 'mqtt { password = "hunter2", keepalive = 90s }\nnode.name = "n"'), {})
    text = dump_hocon(s)
    assert 'password = "******"' in text and "hunter2" not in text
    again = load_settings(write(tmp_path, dump_hocon(s, show_secrets=True), "again.conf"), {})
    assert again == s


def test_shipped_conf_uncommented_is_valid(tmp_path):
    """Uncommenting the shipped file one level gives a valid config: the examples in it are right."""
    lines = []
    for line in (REPO / "conf" / "gateway.conf").read_text().splitlines():
        if line.startswith("##"):
            continue
        lines.append(line[2:] if line.startswith("# ") else line[1:] if line.startswith("#") else line)
    text = "\n".join(lines).replace('"ocppgw@<hostname>"', '"n1"')
    s = load_settings(write(tmp_path, text), {})
    assert s.node.name == "n1"
    assert s.rule_engine.rules["boot_accept"].actions == [{"function": "console"}]
