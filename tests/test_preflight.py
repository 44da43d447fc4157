"""`check-config` refuses what `run` refuses: the files and directories a config names (OCA schema
directory, TLS certificates and keys of wss listeners, the MQTT bridge and connectors, node.data_dir)
are looked at by both, with the same message (engine/preflight.py). Real processes: `ocpp-gateway
check-config` and `ocpp-gateway run` on the same config, each exits 2 naming the key and the file."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.certs import CertAuthority
from tests.gateway import BIN, GatewayProcess
from tests.servers import free_port

pytestmark = pytest.mark.timeout(90)


def _check_config(conf: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BIN, "check-config", "-c", str(conf)], capture_output=True, text=True,
                          cwd=conf.parent, timeout=60)


def _wss(path: Path, certfile: str, keyfile: str, extra: str = "") -> str:
    return (f'gateway.ocpp.listeners.wss.s {{ bind = "127.0.0.1:{free_port()}", ssl_options {{ certfile = "{certfile}", '
            f'keyfile = "{keyfile}"{", " + extra if extra else ""} }} }}\n')


def _schema_dir_missing(tmp: Path) -> tuple[str, str]:
    where = tmp / "nowhere"
    return (f'gateway.ocpp {{ message_format_checking = all, json_schema_dir = "{where}" }}\n',
            f"gateway.ocpp.json_schema_dir: schema directory '{where}' is not an existing directory")


def _schema_dir_empty(tmp: Path) -> tuple[str, str]:
    where = tmp / "schemas"
    (where / "ocpp1.6").mkdir(parents=True)
    return (f'gateway.ocpp {{ message_format_checking = all, json_schema_dir = "{where}" }}\n',
            f"gateway.ocpp.json_schema_dir: no OCPP schemas in '{where}': expected ocpp1.6/, ocpp2.0.1/, ocpp2.1/ "
            "(one or more) holding *.json files")


def _schema_file_broken(tmp: Path) -> tuple[str, str]:
    where = tmp / "schemas"
    (where / "ocpp1.6").mkdir(parents=True)
    (where / "ocpp1.6" / "Heartbeat.json").write_text("{ not json")
    # checked because one listener asks for it, though the gateway-wide mode is off
    return (f'gateway.ocpp {{ json_schema_dir = "{where}", listeners.ws.default.message_format_checking = all }}\n',
            f"gateway.ocpp.json_schema_dir: {where / 'ocpp1.6' / 'Heartbeat.json'}: not a readable JSON file")


def _wss_cert_missing(tmp: Path) -> tuple[str, str]:
    server = CertAuthority(tmp).server()
    return (_wss(tmp, str(tmp / "gone.pem"), str(server.key)),
            f"gateway.ocpp.listeners.wss.s.ssl_options.certfile: '{tmp / 'gone.pem'}' does not exist")


def _wss_key_not_pem(tmp: Path) -> tuple[str, str]:
    server = CertAuthority(tmp).server()
    (tmp / "key.der").write_bytes(b"\x30\x82\x01\x00not a pem key")
    return (_wss(tmp, str(server.cert), str(tmp / "key.der")),
            f"gateway.ocpp.listeners.wss.s.ssl_options.keyfile: '{tmp / 'key.der'}' is not a PEM file (no -----BEGIN line)")


def _wss_key_of_another_cert(tmp: Path) -> tuple[str, str]:
    ca = CertAuthority(tmp)
    one, other = ca.server("one"), ca.server("other")
    return (_wss(tmp, str(one.cert), str(other.key)), "gateway.ocpp.listeners.wss.s.ssl_options: ")


def _wss_ca_is_a_directory(tmp: Path) -> tuple[str, str]:
    server = CertAuthority(tmp).server()
    return (_wss(tmp, str(server.cert), str(server.key), f'cacertfile = "{tmp}", verify = verify_peer'),
            f"gateway.ocpp.listeners.wss.s.ssl_options.cacertfile: '{tmp}' is a directory, not a file")


def _mqtt_ca_missing(tmp: Path) -> tuple[str, str]:
    return (f'mqtt {{ server = "mqtts://127.0.0.1:8883", ssl.cacertfile = "{tmp / "ca.pem"}" }}\n',
            f"mqtt.ssl.cacertfile: '{tmp / 'ca.pem'}' does not exist")


def _http_connector_cert_not_pem(tmp: Path) -> tuple[str, str]:
    (tmp / "client.crt").write_text("just text\n")
    return (f'connectors.http.hook {{ url = "https://127.0.0.1:9/", ssl {{ enable = true, certfile = "{tmp / "client.crt"}" }} }}\n',
            f"connectors.http.hook.ssl.certfile: '{tmp / 'client.crt'}' is not a PEM file (no -----BEGIN line)")


def _pgsql_connector_key_missing(tmp: Path) -> tuple[str, str]:
    client = CertAuthority(tmp).server("client")
    return (f'connectors.pgsql.db {{ database = "x", ssl {{ enable = true, certfile = "{client.cert}", '
            f'keyfile = "{tmp / "client-gone.key"}" }} }}\n',
            f"connectors.pgsql.db.ssl.keyfile: '{tmp / 'client-gone.key'}' does not exist")


def _data_dir_under_a_file(tmp: Path) -> tuple[str, str]:
    (tmp / "plain").write_text("")
    return (f'node.data_dir = "{tmp / "plain" / "data"}"\n',
            f"node.data_dir '{tmp / 'plain' / 'data'}': cannot be created: '{tmp / 'plain'}' is not a directory")


def _data_dir_is_a_file(tmp: Path) -> tuple[str, str]:
    (tmp / "plain").write_text("")
    return f'node.data_dir = "{tmp / "plain"}"\n', f"node.data_dir '{tmp / 'plain'}': not a directory"


def _default_admin_credentials_beyond_loopback(tmp: Path) -> tuple[str, str]:
    return (f'dashboard.listeners.http.bind = "0.0.0.0:{free_port()}"\n',
            "refusing to serve the admin API beyond loopback with the default credentials admin/public")


CASES: dict[str, Callable[[Path], tuple[str, str]]] = {
    "schema dir missing": _schema_dir_missing,
    "schema dir without schemas": _schema_dir_empty,
    "schema file broken": _schema_file_broken,
    "wss certfile missing": _wss_cert_missing,
    "wss keyfile not PEM": _wss_key_not_pem,
    "wss key of another certificate": _wss_key_of_another_cert,
    "wss cacertfile a directory": _wss_ca_is_a_directory,
    "mqtt cacertfile missing": _mqtt_ca_missing,
    "http connector certfile not PEM": _http_connector_cert_not_pem,
    "pgsql connector keyfile missing": _pgsql_connector_key_missing,
    "data_dir under a file": _data_dir_under_a_file,
    "data_dir a file": _data_dir_is_a_file,
    "default admin credentials beyond loopback": _default_admin_credentials_beyond_loopback,
}


@pytest.mark.parametrize("case", list(CASES))
def test_check_config_and_run_refuse_the_same(tmp_path: Path, case: str) -> None:
    conf_text, message = CASES[case](tmp_path)
    conf = tmp_path / "gateway.conf"
    conf.write_text(conf_text)
    checked = _check_config(conf)
    assert checked.returncode == 2, checked.stdout + checked.stderr
    assert message in checked.stderr and checked.stderr.startswith("config error: "), checked.stderr
    assert "Traceback" not in checked.stderr and checked.stdout == ""

    gw = GatewayProcess(tmp_path, config=conf_text)
    if "dashboard.listeners.http.bind" in conf_text:
        del gw.env["OCPPGW_DASHBOARD__LISTENERS__HTTP__BIND"]  # the helper's loopback bind would win
    gw.start(wait_for=None)
    assert gw.wait(60) == 2, gw.log
    refused = [line for line in gw.lines if line.startswith("config error: ")]
    assert refused == checked.stderr.splitlines(), gw.log  # the same lines, word for word
    assert "Traceback" not in gw.log and "started" not in gw.log


def test_what_run_does_not_need_is_not_looked_at(tmp_path: Path) -> None:
    """Schema checking off, the wss listener disabled, connector TLS off: their files may be absent."""
    gone = tmp_path / "gone.pem"
    conf = tmp_path / "gateway.conf"
    conf.write_text(
        f'gateway.ocpp.json_schema_dir = "{tmp_path / "nowhere"}"\n'
        f'gateway.ocpp.listeners.wss.s {{ enable = false, ssl_options {{ certfile = "{gone}", keyfile = "{gone}" }} }}\n'
        f'connectors.http.hook {{ url = "https://127.0.0.1:9/", ssl {{ enable = false, certfile = "{gone}" }} }}\n'
        f'node.data_dir = "{tmp_path / "new" / "data"}"\n')
    checked = _check_config(conf)
    assert checked.returncode == 0, checked.stderr
    assert not (tmp_path / "new").exists()  # check-config looks, it does not create


def test_good_files_pass_and_run_serves_wss(tmp_path: Path) -> None:
    ca = CertAuthority(tmp_path)
    server = ca.server()
    schemas = tmp_path / "schemas"
    (schemas / "ocpp1.6").mkdir(parents=True)
    (schemas / "ocpp1.6" / "Heartbeat.json").write_text(json.dumps({"type": "object"}))
    conf_text = (_wss(tmp_path, str(server.cert), str(server.key), f'cacertfile = "{ca.cert_path}"')
                 + f'gateway.ocpp {{ message_format_checking = all, json_schema_dir = "{schemas}" }}\n')
    conf = tmp_path / "gateway.conf"
    conf.write_text(conf_text)
    checked = _check_config(conf)
    assert checked.returncode == 0, checked.stderr
    gw = GatewayProcess(tmp_path, config=conf_text).start()
    assert gw.stop() == 0
    assert "config error" not in gw.log


async def test_a_reload_to_files_run_would_refuse_is_refused(tmp_path: Path, mosquitto) -> None:
    """The same lines from a reload (SIGHUP, PUT /configs): the running config and listeners stay."""
    from engine.config import load_settings
    from engine.reload import ReloadError
    from tests.ocpp_support import running_gateway

    async with running_gateway(tmp_path, mosquitto.port) as gw:
        before = set(gw.node.listeners)
        extra, message = _wss_cert_missing(tmp_path)
        path = tmp_path / "next.conf"
        path.write_text((tmp_path / "gateway.conf").read_text() + extra)
        with pytest.raises(ReloadError) as info:
            await gw.node.reload(load_settings(path, {}))
        assert message in info.value.errors
        assert set(gw.node.listeners) == before and "s" not in gw.node.settings.gateway.ocpp.listeners.wss
