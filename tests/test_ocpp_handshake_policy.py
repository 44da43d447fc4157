"""The handshake's policy as plain functions: a request's parts in, a charge point (or a Refusal) out.
No sockets: the listener-level behaviour is in test_ocpp_handshake.py and test_transport_limits.py."""

from __future__ import annotations

import asyncio
import base64

import pytest

from engine.config.schema import (AuthenticationSettings, ListenerSettings, SslOptions, WebsocketSettings,
                                  WssListenerSettings)
from engine.ocpp import handshake
from engine.ocpp.handshake import Admission, RateLimit, Refusal

PREFIX = "/ocpp/"


def refused(call, *args):
    with pytest.raises(Refusal) as info:
        call(*args)
    return info.value


# --- path → charge point id --------------------------------------------------------------------------------------

def test_the_path_names_the_charge_point():
    assert handshake.endpoint_prefix(ListenerSettings(websocket=WebsocketSettings(path="/ocpp/"))) == PREFIX
    assert handshake.check_path(PREFIX, "/ocpp/CP-1") == "CP-1"
    assert handshake.check_path(PREFIX, "/ocpp/été") == "été"
    assert handshake.cid_of(PREFIX, "/ocpp/CP-1") == "CP-1"
    assert handshake.cid_of(PREFIX, "/other/CP-1") == ""


@pytest.mark.parametrize(("path", "status", "reason"), [
    ("/other/CP1", 404, None),
    ("/ocpp/", 400, "client_identifier_not_valid"),
    ("/ocpp/a/b", 400, "client_identifier_not_valid"),
    ("/ocpp/a+b", 400, "client_identifier_not_valid"),
    ("/ocpp/a#b", 400, "client_identifier_not_valid"),
    ("/ocpp/a\nb", 400, "client_identifier_not_valid"),
    ("/ocpp/" + "x" * (handshake.MAX_CID_LENGTH + 1), 400, "client_identifier_not_valid"),
    ("/ocpp/a\ufffd", 400, "client_identifier_not_valid"),
])
def test_bad_paths_are_refused(path, status, reason):
    refusal = refused(handshake.check_path, PREFIX, path)
    assert (refusal.status, refusal.reason_code) == (status, reason)
    assert handshake.check_path(PREFIX, "/ocpp/" + "x" * handshake.MAX_CID_LENGTH)


# --- subprotocol -------------------------------------------------------------------------------------------------

def test_the_highest_common_version_is_picked():
    ws = WebsocketSettings()
    assert handshake.pick_subprotocol(ws, ["ocpp1.6", "ocpp2.0.1"]) == ("ocpp2.0.1", True)
    assert handshake.pick_subprotocol(ws, ["ocpp1.6", "ocpp2.1", "x"]) == ("ocpp2.1", True)
    only16 = WebsocketSettings(supported_subprotocols=["ocpp1.6"])
    assert handshake.pick_subprotocol(only16, ["ocpp2.0.1", "ocpp1.6"]) == ("ocpp1.6", True)
    refusal = refused(handshake.pick_subprotocol, only16, ["ocpp2.0.1"])
    assert refusal.status == 400 and refusal.reason_code == "unsupported_protocol_version"


def test_no_subprotocol_offered():
    refusal = refused(handshake.pick_subprotocol, WebsocketSettings(), [])
    assert refusal.status == 400 and "no Sec-WebSocket-Protocol" in refusal.message
    assert handshake.pick_subprotocol(WebsocketSettings(fail_if_no_subprotocol=False), []) == ("ocpp1.6", False)


# --- client certificate -------------------------------------------------------------------------------------------

def cert(cn: str) -> dict:
    return {"subject": ((("countryName", "DE"),), (("commonName", cn),))}


def test_the_certificate_must_name_the_charge_point_when_asked():
    strict = WssListenerSettings(ssl_options=SslOptions(cn_must_match_cid=True))
    handshake.check_certificate(strict, cert("CP1"), "CP1")
    assert refused(handshake.check_certificate, strict, cert("CP2"), "CP1").status == 403
    assert refused(handshake.check_certificate, strict, None, "CP1").message == "a client certificate is required"
    handshake.check_certificate(WssListenerSettings(), None, "CP1")  # not asked
    handshake.check_certificate(ListenerSettings(), None, "CP1")  # not TLS
    assert handshake.common_name(cert("X")) == "X" and handshake.common_name({}) is None


# --- HTTP Basic login --------------------------------------------------------------------------------------------

def basic(text: bytes) -> list[tuple[bytes, bytes]]:
    return [(b"host", b"x"), (b"authorization", b"Basic " + base64.b64encode(text))]


def test_basic_credentials():
    assert handshake.basic_credentials(basic(b"user:pa:ss")) == ("user", "pa:ss")
    assert handshake.basic_credentials(basic(b"nocolon")) == (None, None)
    assert handshake.basic_credentials([(b"authorization", b"Bearer abc")]) == (None, None)
    assert handshake.basic_credentials([(b"authorization", b"Basic !!!")]) == (None, None)
    assert handshake.basic_credentials(basic("é:x".encode("latin-1"))) == (None, None)
    assert handshake.basic_credentials([]) == (None, None)


class Authenticator:
    def __init__(self, good: dict[str, str]) -> None:
        self.good = good
        self.asked: list[tuple[str | None, str | None]] = []

    async def authenticate(self, username: str | None, password: str | None) -> bool:
        self.asked.append((username, password))
        return username is not None and self.good.get(username) == password


def login(cid, username, password, auth=AuthenticationSettings(), good=None):
    failures: list[int] = []
    authenticator = Authenticator(good or {"CP1": "secret"})
    try:
        asyncio.run(handshake.check_login(cid, username, password, auth, authenticator, lambda: failures.append(1)))
    except Refusal as refusal:
        return refusal, len(failures), authenticator.asked
    return None, len(failures), authenticator.asked


def test_a_good_login_passes():
    assert login("CP1", "CP1", "secret") == (None, 0, [("CP1", "secret")])


def test_a_missing_login_is_asked_for_and_not_counted_as_a_failure():
    refusal, failures, asked = login("CP1", None, None)
    assert (refusal.status, refusal.reason_code, failures, asked) == (401, "not_authorized", 0, [])
    assert refusal.headers == [(b"www-authenticate", b'Basic realm="ocpp-gateway"')]


def test_wrong_logins_fail_and_are_counted():
    refusal, failures, asked = login("CP1", "CP1", "wrong")
    assert (refusal.status, refusal.reason_code, failures) == (401, "bad_username_or_password", 1)
    refusal, failures, asked = login("CP1", "CP2", "secret")  # another charge point's name
    assert (refusal.message, failures, asked) == ("the username must be the charge point id", 1, [])


def test_username_mismatch_and_clientid_logins():
    mismatch = AuthenticationSettings(allow_username_mismatch=True)
    assert login("CP1", "shared", "pw", mismatch, {"shared": "pw"})[0] is None
    by_cid = AuthenticationSettings(user_id_type="clientid")
    assert login("CP1", "anything", "secret", by_cid) == (None, 0, [("CP1", "secret")])


def test_authn_required_needs_all_three():
    on, off = AuthenticationSettings(), AuthenticationSettings(enable=False)
    assert handshake.authn_required(on, ListenerSettings(), Authenticator({}))
    assert not handshake.authn_required(off, ListenerSettings(), Authenticator({}))
    assert not handshake.authn_required(on, ListenerSettings(enable_authn=False), Authenticator({}))
    assert not handshake.authn_required(on, ListenerSettings(), None)


# --- capacity and admission --------------------------------------------------------------------------------------

class Listener:
    def __init__(self, max_connections: int = 2, rate: float = 10) -> None:
        self.settings = ListenerSettings(max_connections=max_connections, max_conn_rate=rate)
        self.rate = RateLimit(rate)
        self.connections = 0
        self.admitting = 0


def test_admission_holds_a_place_and_a_token_until_it_ends():
    listener = Listener()
    admission = handshake.admit(listener)
    assert listener.admitting == 1 and listener.rate.reserved == 1
    admission.take_token()
    assert listener.rate.reserved == 0 and listener.rate.tokens == pytest.approx(9, abs=0.01)
    admission.end()
    admission.end()  # idempotent
    assert listener.admitting == 0 and listener.rate.reserved == 0


def test_an_admission_that_never_ran_gives_its_token_back():
    listener = Listener()
    admission = handshake.admit(listener)
    admission.end()
    assert listener.admitting == 0 and listener.rate.reserved == 0 and listener.rate.tokens == pytest.approx(10, abs=0.01)


def test_max_connections_counts_sessions_and_pending_handshakes():
    listener = Listener(max_connections=2)
    listener.connections = 1
    first = handshake.admit(listener)
    refusal = refused(handshake.admit, listener)
    assert (refusal.status, refusal.reason_code, refusal.message) == (503, "server_unavailable", "the listener is at max_connections")
    first.end()
    assert isinstance(handshake.admit(listener), Admission)


def test_max_conn_rate():
    listener = Listener(max_connections=100, rate=2)
    handshake.admit(listener)
    handshake.admit(listener)
    refusal = refused(handshake.admit, listener)
    assert refusal.status == 503 and "max_conn_rate" in refusal.message


def test_a_refusal_is_a_whole_http_answer():
    raw = Refusal(429, "slow down", "banned", [(b"retry-after", b"5")]).http_response()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0] == b"HTTP/1.1 429 Too Many Requests"
    assert b"content-length: 10" in head and b"retry-after: 5" in head and body == b"slow down\n"
