"""The alarms' lifecycle and the conditions not easily made on a real node (a certificate about to
expire, a listener that is not serving), evaluated against stand-ins of the node's parts; the
broker and the failing action are tested on a real node in tests/test_admin_monitor.py."""

from __future__ import annotations

import time
from types import SimpleNamespace

from engine.alarms import MAX_HISTORY, Alarms
from engine.config import load_settings
from engine.ocpp.certs import CertificateWatch, ClientCertificate


def test_activate_hold_deactivate_and_bounded_history() -> None:
    alarms = Alarms(node="n1")
    alarms.update({"a": ("first", {"k": 1})}, now_ms=1000)
    alarms.update({"a": ("second", {"k": 2})}, now_ms=2000)
    [active] = alarms.listing(True)
    assert (active.name, active.message, active.details, active.activated_at) == ("a", "second", {"k": 2}, 1000)
    assert active.activated and active.node == "n1"
    alarms.update({}, now_ms=3000)
    assert alarms.listing(True) == []
    [ended] = alarms.listing(False)
    assert ended.deactivated_at == 3000 and not ended.activated
    alarms.update({"a": ("again", {})}, now_ms=4000)  # a new activation, the old one stays in the history
    assert [a.activated_at for a in alarms.listing(None)] == [4000, 1000]
    for n in range(MAX_HISTORY + 5):
        alarms.update({f"x{n}": ("m", {})})
    assert len(alarms.history) == MAX_HISTORY


def _node(tmp_path, listeners, started=True):
    path = tmp_path / "gateway.conf"
    path.write_text(f'node.data_dir = "{tmp_path}"\n')
    return SimpleNamespace(settings=load_settings(path, {}), listeners=listeners, started=started, bridge=None,
                           resources=None)


class Connected:
    def __init__(self, cid: str) -> None:
        self.cid = cid


def test_certificate_expiring_while_its_charge_point_is_connected(tmp_path) -> None:
    watch = CertificateWatch()
    soon = ClientCertificate("CN=CP7", "CN=CA", "0A", time.time() + 3 * 86_400, "CP7")
    later = ClientCertificate("CN=CP8", "CN=CA", "0B", time.time() + 300 * 86_400, "CP8")
    cp7, cp8 = Connected("CP7"), Connected("CP8")
    watch.certificates.update({cp7: soon, cp8: later})
    settings = SimpleNamespace(ssl_options=SimpleNamespace(cert_expiry_warning=30 * 86_400))
    listener = SimpleNamespace(app=SimpleNamespace(certificates=watch), settings=settings,
                               server=SimpleNamespace(started=True, should_exit=False))
    node = _node(tmp_path, {"ocpp:ws:default": listener})
    alarms = Alarms()
    alarms.evaluate(node)
    assert [a.name for a in alarms.listing(True)] == ["certificate_expiring:CP7"]
    [alarm] = alarms.listing(True)
    assert alarm.details["clientid"] == "CP7" and alarm.details["serial"] == "0A" and "2 day" in alarm.message
    del watch.certificates[cp7]  # the charge point went away
    alarms.evaluate(node)
    assert alarms.listing(True) == [] and [a.name for a in alarms.listing(False)] == ["certificate_expiring:CP7"]


def test_listener_stopped(tmp_path) -> None:
    alarms = Alarms()
    alarms.evaluate(_node(tmp_path, {}, started=False))  # before the node has started: nothing to say
    assert alarms.listing(True) == []
    alarms.evaluate(_node(tmp_path, {}))
    assert [a.name for a in alarms.listing(True)] == ["listener_stopped:ocpp:ws:default"]
    serving = SimpleNamespace(app=SimpleNamespace(certificates=None), settings=SimpleNamespace(),
                              server=SimpleNamespace(started=True, should_exit=False))
    alarms.evaluate(_node(tmp_path, {"ocpp:ws:default": serving}))
    assert alarms.listing(True) == []
