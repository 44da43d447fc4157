"""OCPP security profiles per charge point (OCPP 2.0.1 part 2): a user record's `security_profile`,
refusal of a connection on a lower profile, the client certificate as the login of a profile 3
charge point, its certificate in the clients API and the metrics, and $events/certificate_expiring.
Real wss connections with certificates made here."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
from datetime import datetime

import httpx
import pytest
import websockets
from cryptography import x509
from ocpp import v201
from websockets.exceptions import InvalidStatus

from engine.auth import UserStore
from engine.config.schema import PasswordHashSettings
from engine.ocpp import certs
from tests.certs import CertAuthority
from tests.ocpp_support import Backend, eventually, running_gateway, subscribed
from tests.servers import free_port
from tests.test_admin_metrics import scrape

pytestmark = pytest.mark.timeout(90)

ADMIN = ("admin", "public")
USERS = "/gateways/ocpp/authentication/users"
NOW = "2024-01-01T00:00:00Z"
RULE = '''
rule_engine.rules.cert_expiring {
  sql = """SELECT * FROM "$events/certificate_expiring" """
  actions = [{
    function = republish
    args { topic = "certs/${clientid}", payload = """{"days_left": ${days_left}, "serial": "${serial}", "not_after": "${not_after}"}""" }
  }]
}
'''


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


class Pki:
    def __init__(self, directory) -> None:
        directory.mkdir()
        self.ca = CertAuthority(directory)
        self.server = self.ca.server()

    def context(self, cert=None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca.cert_path))
        if cert is not None:
            ctx.load_cert_chain(cert.cert, cert.key)
        return ctx


@pytest.fixture
def pki(tmp_path) -> Pki:
    return Pki(tmp_path / "pki")


class Ports:
    def __init__(self) -> None:
        self.tls, self.mutual, self.optional = free_port(), free_port(), free_port()


def config(pki: Pki, ports: Ports, extra: str = "") -> str:
    tls = f'certfile = "{pki.server.cert}", keyfile = "{pki.server.key}", cacertfile = "{pki.ca.cert_path}"'
    return f"""
    gateway.ocpp.authentication {{ enable = true, password_hash_algorithm {{ name = sha256 }} }}
    gateway.ocpp.listeners.wss {{
      tls {{ bind = "127.0.0.1:{ports.tls}", ssl_options {{ {tls} }} }}
      mutual {{ bind = "127.0.0.1:{ports.mutual}",
               ssl_options {{ {tls}, verify = verify_peer, fail_if_no_peer_cert = true, cn_must_match_cid = true }} }}
      optional {{ bind = "127.0.0.1:{ports.optional}",
                 ssl_options {{ {tls}, verify = verify_peer, fail_if_no_peer_cert = false }} }}
    }}
    """ + extra


def users(tmp_path) -> UserStore:
    return UserStore.in_data_dir(tmp_path / "data", PasswordHashSettings(name="sha256"))


async def refused(url: str, **kwargs) -> tuple[int, str]:
    with pytest.raises(InvalidStatus) as info:
        async with websockets.connect(url, subprotocols=["ocpp2.0.1"], **kwargs):
            pass
    return info.value.response.status_code, info.value.response.body.decode()


@contextlib.asynccontextmanager
async def connected(gw, url: str, cid: str, **kwargs):
    async with websockets.connect(url, subprotocols=["ocpp2.0.1"], **kwargs) as ws:
        await eventually(lambda: cid in gw.ctx.sessions)
        yield ws


def wss(port: int, cid: str) -> str:
    return f"wss://localhost:{port}/ocpp/{cid}"


def not_after(cert_files) -> datetime:
    return x509.load_pem_x509_certificate(cert_files.cert.read_bytes()).not_valid_after_utc


async def test_lower_profile_refused_with_401_and_event(tmp_path, mosquitto, pki):
    store = users(tmp_path)
    store.add("CP2", "pw2", security_profile=2)
    store.add("CP3", None, security_profile=3)
    store.add("CP1", "pw1")  # no profile: any listener
    ports = Ports()
    open_port = free_port()
    no_login = f'gateway.ocpp.listeners.ws.open {{ bind = "127.0.0.1:{open_port}", enable_authn = false }}'
    async with running_gateway(tmp_path, mosquitto.port, config(pki, ports, no_login)) as gw:
        # a profile 2 charge point: not over ws (profile 1), even with the right password
        status, body = await refused(gw.url("CP2"), additional_headers=basic("CP2", "pw2"))
        assert status == 401 and "security profile 2" in body
        async with connected(gw, wss(ports.tls, "CP2"), "CP2", ssl=pki.context(),
                             additional_headers=basic("CP2", "pw2")):
            assert gw.ctx.sessions["CP2"].listener == "ocpp:wss:tls"
        # a profile 3 charge point: neither over ws nor over TLS without a client certificate
        assert (await refused(gw.url("CP3"), additional_headers=basic("CP3", "x")))[0] == 401
        assert (await refused(wss(ports.tls, "CP3"), ssl=pki.context()))[0] == 401
        # ...and not over a listener that asks for no certificate even when it has one to show
        assert (await refused(wss(ports.tls, "CP3"), ssl=pki.context(pki.ca.client("CP3"))))[0] == 401
        # a charge point without a profile logs in anywhere
        async with connected(gw, gw.url("CP1"), "CP1", additional_headers=basic("CP1", "pw1")):
            pass
        reasons = [e["reason_code"] for e in gw.events.named("client_connack")]
        assert reasons == ["security_profile_too_low", "success", "security_profile_too_low",
                           "security_profile_too_low", "security_profile_too_low", "success"]
        refusal = gw.events.named("client_connack")[0]
        assert refusal["clientid"] == "CP2" and "security profile 2" in refusal["description"]
        metrics = await scrape(gw)
        assert metrics.value("ocppgw_handshakes_refused_total", reason="security_profile_too_low") == 4
        # a ws listener without logins is profile 1 too: CP2 may not use it, CP1 (no profile) may
        status, body = await refused(f"ws://127.0.0.1:{open_port}/ocpp/CP2")
        assert status == 401 and "security profile 2" in body
        async with connected(gw, f"ws://127.0.0.1:{open_port}/ocpp/CP1", "CP1"):
            pass


async def test_profile_3_certificate_is_the_login(tmp_path, mosquitto, pki):
    store = users(tmp_path)
    store.add("CP3", None, security_profile=3)
    store.add("CPX", None, security_profile=3)
    ports = Ports()
    async with running_gateway(tmp_path, mosquitto.port, config(pki, ports)) as gw:
        backend = Backend(mosquitto.port)
        # no Basic credentials at all: the verified certificate with CN = CP3 is the login; the ocpp
        # package's charge point boots through it
        async with websockets.connect(wss(ports.mutual, "CP3"), subprotocols=["ocpp2.0.1"],
                                      ssl=pki.context(pki.ca.client("CP3"))) as ws:
            cp = v201.ChargePoint("CP3", ws)
            task = asyncio.create_task(cp.start())
            await subscribed(gw, "CP3")
            boot = asyncio.create_task(cp.call(v201.call.BootNotification(
                charging_station={"model": "M", "vendor_name": "V"}, reason="PowerUp")))
            await backend.answer("ocpp/cp/CP3", {"currentTime": NOW, "interval": 60, "status": "Accepted"})
            assert (await boot).status == "Accepted"
            assert gw.ctx.sessions["CP3"].listener == "ocpp:wss:mutual"
            assert gw.ctx.sessions["CP3"].username == "CP3"  # the certificate's CN
            task.cancel()
        # a wss listener where the certificate is optional: presenting a verified one is profile 3
        async with connected(gw, wss(ports.optional, "CP3"), "CP3", ssl=pki.context(pki.ca.client("CP3"))):
            pass
        # ...but without cn_must_match_cid a certificate of another CN is no login for CPX, which has no password
        status, _ = await refused(wss(ports.optional, "CPX"), ssl=pki.context(pki.ca.client("someone-else")))
        assert status == 401
        # a charge point with no profile 3 record is not let in by its certificate alone
        status, _ = await refused(wss(ports.mutual, "CP9"), ssl=pki.context(pki.ca.client("CP9")))
        assert status == 401
        backend.close()


async def test_users_api_and_cli_fields(tmp_path, mosquitto, pki):
    ports = Ports()
    async with running_gateway(tmp_path, mosquitto.port, config(pki, ports)) as gw, \
            httpx.AsyncClient(base_url=gw.admin_url, auth=ADMIN, timeout=15) as http:
        created = await http.post(USERS, json={"user_id": "CP3", "security_profile": 3})
        assert created.status_code == 201, created.text
        assert created.json() == {"user_id": "CP3", "is_superuser": False, "security_profile": 3}
        assert (await http.get(f"{USERS}/CP3")).json()["security_profile"] == 3
        # only a profile 3 user may have no password; profiles are 1, 2, 3
        no_password = await http.post(USERS, json={"user_id": "CP2", "security_profile": 2})
        assert no_password.status_code == 400 and "password" in no_password.json()["message"]
        for bad in (0, 4, "2", True):
            answer = await http.post(USERS, json={"user_id": "CPB", "password": "p", "security_profile": bad})
            assert answer.status_code == 400 and "security_profile" in answer.json()["message"], bad
        assert (await http.post(USERS, json={"user_id": "CP2", "password": "pw", "security_profile": 2})).status_code == 201
        plain = await http.post(USERS, json={"user_id": "CP1", "password": "pw"})
        assert plain.json() == {"user_id": "CP1", "is_superuser": False}  # as EMQX shows a user
        # PUT changes it, null clears it; a user without a password must keep profile 3
        assert (await http.put(f"{USERS}/CP2", json={"security_profile": 1})).json()["security_profile"] == 1
        assert "security_profile" not in (await http.put(f"{USERS}/CP2", json={"security_profile": None})).json()
        stuck = await http.put(f"{USERS}/CP3", json={"security_profile": 2})
        assert stuck.status_code == 400 and "security_profile" in stuck.json()["message"]
        assert (await http.put(f"{USERS}/CP3", json={"security_profile": 2, "password": "now-one"})).status_code == 200
        listed = {u["user_id"]: u.get("security_profile") for u in (await http.get(USERS)).json()["data"]}
        assert listed == {"CP1": None, "CP2": None, "CP3": 2}
        # a profile set through the API applies to the next handshake
        assert (await http.put(f"{USERS}/CP1", json={"security_profile": 2})).status_code == 200
        assert (await refused(gw.url("CP1"), additional_headers=basic("CP1", "pw")))[0] == 401
    # stored with the record: the file read again has them
    again = users(tmp_path)
    assert again.get("CP1").security_profile == 2 and again.get("CP3").security_profile == 2


def test_store_keeps_profile_3_users_without_password(tmp_path):
    store = users(tmp_path)
    store.add("CP3", None, security_profile=3)
    with pytest.raises(ValueError):
        store.add("CP2", None, security_profile=2)
    again = users(tmp_path)
    assert again.get("CP3").as_dict() == {"user_id": "CP3", "is_superuser": False, "security_profile": 3}
    assert not again._record("CP3").matches("")  # no password logs it in


async def test_client_certificate_in_api_and_metrics(tmp_path, mosquitto, pki):
    store = users(tmp_path)
    store.add("CP1", "pw1")
    for cid in ("CPA", "CPB"):
        store.add(cid, None, security_profile=3)
    soon, later = pki.ca.client("CPA", days=10), pki.ca.client("CPB", days=90)
    ports = Ports()
    async with running_gateway(tmp_path, mosquitto.port, config(pki, ports)) as gw, \
            httpx.AsyncClient(base_url=gw.admin_url, auth=ADMIN, timeout=15) as http:
        async with connected(gw, gw.url("CP1"), "CP1", additional_headers=basic("CP1", "pw1")), \
                connected(gw, wss(ports.mutual, "CPB"), "CPB", ssl=pki.context(later)):
            async with connected(gw, wss(ports.mutual, "CPA"), "CPA", ssl=pki.context(soon)):
                info = (await http.get("/gateways/ocpp/clients/CPA")).json()
                assert info["security_profile"] == 3
                cert = info["certificate"]
                assert cert["subject"] == "CN=CPA" and cert["issuer"] == "CN=ocpp-gateway test CA"
                parsed = x509.load_pem_x509_certificate(soon.cert.read_bytes())
                assert int(cert["serial"], 16) == parsed.serial_number
                assert datetime.fromisoformat(cert["not_after"]) == not_after(soon)
                listed = {c["clientid"]: c for c in (await http.get("/gateways/ocpp/clients")).json()["data"]}
                assert "certificate" not in listed["CP1"] and listed["CP1"]["security_profile"] == 1
                assert listed["CPB"]["certificate"]["subject"] == "CN=CPB"
                metrics = await scrape(gw)
                gauge = "ocppgw_listener_client_cert_soonest_expiry_timestamp_seconds"
                assert metrics.by(gauge, "listener") == {"ocpp:wss:mutual": not_after(soon).timestamp()}
            # read at scrape time: the 10-day certificate gone, the 90-day one is the soonest
            await eventually(lambda: "CPA" not in gw.ctx.sessions)
            metrics = await scrape(gw)
            assert metrics.by(gauge, "listener") == {"ocpp:wss:mutual": not_after(later).timestamp()}
        await eventually(lambda: not gw.ctx.sessions)
        assert (await scrape(gw)).by(gauge, "listener") == {}


async def test_certificate_expiring_event_and_rule(tmp_path, mosquitto, pki):
    store = users(tmp_path)
    for cid in ("CPA", "CPB"):
        store.add(cid, None, security_profile=3)
    soon, later = pki.ca.client("CPA", days=10), pki.ca.client("CPB", days=90)
    ports = Ports()
    async with running_gateway(tmp_path, mosquitto.port, config(pki, ports, RULE)) as gw:
        backend = Backend(mosquitto.port, "certs/#", "ocpp/cp/#")
        async with connected(gw, wss(ports.mutual, "CPA"), "CPA", ssl=pki.context(soon)):
            event = await gw.events.wait("certificate_expiring")
            assert event["clientid"] == "CPA" and event["event"] == "certificate.expiring"
            assert event["node"] == "gw-test" and event["days_left"] in (9, 10)
            assert event["subject"] == "CN=CPA" and datetime.fromisoformat(event["not_after"]) == not_after(soon)
            assert int(event["serial"], 16) == x509.load_pem_x509_certificate(soon.cert.read_bytes()).serial_number
            topic, body = await backend.next()
            assert topic == "certs/CPA" and body["serial"] == event["serial"] and body["days_left"] == event["days_left"]
        # 90 days is beyond the default 30d warning: nothing, though the session is up and serving
        async with connected(gw, wss(ports.mutual, "CPB"), "CPB", ssl=pki.context(later)) as ws:
            await ws.send('[2,"hb-1","Heartbeat",{}]')
            topic, body = await backend.next()
            assert topic == "ocpp/cp/CPB" and body["UniqueId"] == "hb-1"
        # once a day per charge point: a reconnect within the day is not warned again, on any listener
        for port in (ports.mutual, ports.optional):
            async with connected(gw, wss(port, "CPA"), "CPA", ssl=pki.context(soon)) as ws:
                await ws.send(f'[2,"hb-{port}","Heartbeat",{{}}]')
                topic, body = await backend.next()
                assert topic == "ocpp/cp/CPA" and body["UniqueId"] == f"hb-{port}", (port, ports.mutual, gw.events.named("certificate_expiring"))
        assert [e["clientid"] for e in gw.events.named("certificate_expiring")] == ["CPA"]
        backend.close()


async def test_certificate_expiring_window_from_config_and_daily_while_connected(tmp_path, mosquitto, pki, monkeypatch):
    store = users(tmp_path)
    store.add("CPB", None, security_profile=3)
    later = pki.ca.client("CPB", days=90)
    ports = Ports()
    # a day made short, so that "daily while connected" can be watched
    monkeypatch.setattr(certs, "DAY", 0.3)
    monkeypatch.setattr(certs, "_SLACK", 0.0)
    conf = config(pki, ports).replace("cn_must_match_cid = true }", "cn_must_match_cid = true, cert_expiry_warning = 100d }")
    async with running_gateway(tmp_path, mosquitto.port, conf) as gw:
        async with connected(gw, wss(ports.mutual, "CPB"), "CPB", ssl=pki.context(later)):
            await eventually(lambda: len(gw.events.named("certificate_expiring")) >= 3)
        assert {e["clientid"] for e in gw.events.named("certificate_expiring")} == {"CPB"}
        await eventually(lambda: not gw.ctx.sessions)
        watch = gw.node.listeners["ocpp:wss:mutual"].app.certificates
        assert watch.certificates == {} and watch._timers == {}  # disconnected: its daily check is gone


def test_expiry_warnings_once_a_day_per_charge_point():
    now = [1_000_000.0]
    warnings = certs.ExpiryWarnings(clock=lambda: now[0])
    cert = certs.ClientCertificate("CN=a", "CN=ca", "01", now[0] + 10 * certs.DAY, "a")
    far = certs.ClientCertificate("CN=b", "CN=ca", "02", now[0] + 90 * certs.DAY, "b")
    window = 30 * certs.DAY
    assert warnings.due("a", cert, window)
    assert not warnings.due("a", cert, window)  # the same day
    assert not warnings.due("b", far, window)
    now[0] += certs.DAY
    assert warnings.due("a", cert, window)
    assert cert.days_left(now[0]) == 9


def test_distinguished_names_as_rfc4514():
    rdns = ((("countryName", "DE"),), (("organizationName", "Acme, Inc"),), (("commonName", "cp+1"),))
    assert certs.distinguished_name(rdns) == "CN=cp\\+1,O=Acme\\, Inc,C=DE"
