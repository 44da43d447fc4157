"""What `run` would refuse in a valid config: the files it names and the directories it needs.

The config checks (engine/config/checks.py) look at values only, so a config loads the same anywhere
(the admin API, the docs' examples, a machine that is not the one it is for). The files are looked at
here, on the machine that runs it: `ocpp-gateway check-config` and `ocpp-gateway run` both call
`problems()` before anything starts, so check-config passes exactly the configs run starts with (short
of a port taken or a broker down, which only trying shows). Where run builds a part from the files
(the OCA schema registry, a listener's or a client's TLS context), this builds the same part with the
same code and throws it away. A reload asks too (engine/reload.py), so a reload to a config whose
files run would refuse is refused, and the running config stays.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path

from engine.config.schema import ClientTlsSettings, Settings
from engine.parts import NodeError, schema_registry

_PEM = b"-----BEGIN "


def problems(settings: Settings, schemas: bool = True) -> list[str]:
    """Every problem, one line each, `key: what is wrong`; empty when run can start with this config.
    `schemas=False`: the caller compiles the schema registry itself (a reload, which keeps the running
    one when its files did not change)."""
    found: list[str] = []
    _data_dir(settings, found)
    if schemas:
        _schemas(settings, found)
    _ocpp_tls(settings, found)
    _mqtt_tls(settings, found)
    _connector_tls(settings, found)
    return found


def _data_dir(settings: Settings, found: list[str]) -> None:
    """run creates node.data_dir (with its parents) and keeps its user store there."""
    data_dir = settings.node.data_dir
    path = Path(data_dir)
    where = f"node.data_dir {data_dir!r}"
    if path.exists():
        if not path.is_dir():
            found.append(f"{where}: not a directory")
        elif not os.access(path, os.W_OK | os.X_OK):
            found.append(f"{where}: not writable")
        return
    parent = path.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        found.append(f"{where}: cannot be created: {str(parent)!r} is not a directory")
    elif not os.access(parent, os.W_OK | os.X_OK):
        found.append(f"{where}: cannot be created: {str(parent)!r} is not writable")


def _schemas(settings: Settings, found: list[str]) -> None:
    """With message_format_checking on (gateway-wide or on a listener), run compiles the schemas."""
    if not settings.gateway.ocpp.enable:
        return
    try:
        schema_registry(settings)
    except NodeError as exc:
        found.append(str(exc))


def pem_file_problem(path: str) -> str | None:
    """Why `path` cannot serve as a PEM certificate or key file, or None."""
    try:
        with open(path, "rb") as file:
            head = file.read(64 * 1024)
    except FileNotFoundError:
        return f"{path!r} does not exist"
    except IsADirectoryError:
        return f"{path!r} is a directory, not a file"
    except OSError as exc:
        return f"{path!r} cannot be read: {exc.strerror or exc}"
    if _PEM not in head:
        return f"{path!r} is not a PEM file (no -----BEGIN line)"
    return None


def _files(key: str, owner: object, names: tuple[str, ...], found: list[str]) -> bool:
    """Check the named file settings of `owner`; False if any is unusable."""
    good = True
    for name in names:
        path = getattr(owner, name, "")
        if path:
            problem = pem_file_problem(path)
            if problem:
                found.append(f"{key}.{name}: {problem}")
                good = False
    return good


def _ocpp_tls(settings: Settings, found: list[str]) -> None:
    from engine.ocpp.listener import ListenerError, server_tls_context

    ocpp = settings.gateway.ocpp
    if not ocpp.enable:
        return
    for name, listener in ocpp.listeners.wss.items():
        key = f"gateway.ocpp.listeners.wss.{name}"
        if not listener.enable:
            continue
        if _files(f"{key}.ssl_options", listener.ssl_options, ("certfile", "keyfile", "cacertfile"), found):
            try:  # what run does with them: a key that does not match, a wrong password, ...
                server_tls_context(listener, key)
            except ListenerError as exc:
                found.append(str(exc))


def _mqtt_tls(settings: Settings, found: list[str]) -> None:
    from connectors.mqtt.setup import tls_context

    mqtt = settings.mqtt
    if not (mqtt.ssl.enable or mqtt.server.startswith("mqtts://")):
        return
    if _files("mqtt.ssl", mqtt.ssl, ("cacertfile", "certfile", "keyfile"), found):
        try:
            tls_context(mqtt)
        except (OSError, ssl.SSLError, ValueError) as exc:
            found.append(f"mqtt.ssl: {_ssl_reason(exc)}")


def _connector_tls(settings: Settings, found: list[str]) -> None:
    from connectors.tls import client_context

    for kind in ("http", "pgsql"):
        for name, connector in getattr(settings.connectors, kind).items():
            tls: ClientTlsSettings = connector.ssl
            if not (connector.enable and tls.enable):
                continue
            key = f"connectors.{kind}.{name}.ssl"
            if _files(key, tls, ("cacertfile", "certfile", "keyfile"), found) and kind == "http":
                try:
                    client_context(verify=tls.verify, cacertfile=tls.cacertfile, certfile=tls.certfile,
                                   keyfile=tls.keyfile)
                except (OSError, ssl.SSLError, ValueError) as exc:
                    found.append(f"{key}: {_ssl_reason(exc)}")


def _ssl_reason(exc: Exception) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)
