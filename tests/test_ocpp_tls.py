"""wss listeners: server TLS, mutual TLS (security profile 3) and the CN = charge point id rule."""

from __future__ import annotations

import ssl

import pytest
import websockets
from websockets.exceptions import InvalidStatus

from tests.certs import CertAuthority
from tests.ocpp_support import running_gateway
from tests.servers import free_port

pytestmark = pytest.mark.timeout(60)


def client_context(ca: CertAuthority, cert=None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca.cert_path))
    if cert is not None:
        ctx.load_cert_chain(cert.cert, cert.key)
    return ctx


@pytest.fixture
def pki(tmp_path):
    (tmp_path / "pki").mkdir()
    ca = CertAuthority(tmp_path / "pki")
    return ca, ca.server()


async def test_server_tls_and_mutual_tls(tmp_path, mosquitto, pki):
    ca, server = pki
    plain, mutual, optional = free_port(), free_port(), free_port()
    tls = f'certfile = "{server.cert}", keyfile = "{server.key}", cacertfile = "{ca.cert_path}"'
    conf = f"""
    gateway.ocpp.listeners.wss {{
      plain {{ bind = "127.0.0.1:{plain}", ssl_options {{ {tls} }} }}
      mutual {{ bind = "127.0.0.1:{mutual}",
               ssl_options {{ {tls}, verify = verify_peer, fail_if_no_peer_cert = true, cn_must_match_cid = true }} }}
      optional {{ bind = "127.0.0.1:{optional}",
                 ssl_options {{ {tls}, verify = verify_peer, fail_if_no_peer_cert = false, cn_must_match_cid = true }} }}
    }}
    """
    p = ["ocpp1.6"]
    async with running_gateway(tmp_path, mosquitto.port, conf) as gw:
        # server-only TLS (security profile 2 transport)
        async with websockets.connect(f"wss://localhost:{plain}/ocpp/CP1", subprotocols=p, ssl=client_context(ca)):
            assert gw.ctx.sessions["CP1"].listener == "ocpp:wss:plain"
        # a client that does not trust our CA refuses us
        with pytest.raises(ssl.SSLCertVerificationError):
            await websockets.connect(f"wss://localhost:{plain}/ocpp/CP1", subprotocols=p,
                                     ssl=ssl.create_default_context())

        # mutual TLS: a certificate whose CN is the charge point id is accepted
        good = ca.client("CP7")
        async with websockets.connect(f"wss://localhost:{mutual}/ocpp/CP7", subprotocols=p, ssl=client_context(ca, good)) as ws:
            await ws.send('[2,"1","Heartbeat",{}]')
            assert "CP7" in gw.ctx.sessions
        # no client certificate: the TLS handshake itself fails
        with pytest.raises((ssl.SSLError, OSError, websockets.InvalidHandshake)):
            async with websockets.connect(f"wss://localhost:{mutual}/ocpp/CP7", subprotocols=p,
                                          ssl=client_context(ca), open_timeout=5) as ws:
                await ws.recv()
        # a certificate for another charge point: 403
        with pytest.raises(InvalidStatus) as info:
            await websockets.connect(f"wss://localhost:{mutual}/ocpp/CP8", subprotocols=p, ssl=client_context(ca, good))
        assert info.value.response.status_code == 403
        # a certificate from a CA we do not trust
        (tmp_path / "rogue").mkdir()
        rogue = CertAuthority(tmp_path / "rogue").client("CP7")
        with pytest.raises((ssl.SSLError, OSError, websockets.InvalidHandshake)):
            async with websockets.connect(f"wss://localhost:{mutual}/ocpp/CP7", subprotocols=p,
                                          ssl=client_context(ca, rogue), open_timeout=5) as ws:
                await ws.recv()

        # verify_peer without fail_if_no_peer_cert: TLS passes, the CN rule refuses with 403
        with pytest.raises(InvalidStatus) as info:
            await websockets.connect(f"wss://localhost:{optional}/ocpp/CP7", subprotocols=p, ssl=client_context(ca))
        assert info.value.response.status_code == 403
        async with websockets.connect(f"wss://localhost:{optional}/ocpp/CP7", subprotocols=p, ssl=client_context(ca, good)):
            pass
        reasons = [e["reason_code"] for e in gw.events.named("client_connack") if e["reason_code"] != "success"]
        assert reasons == ["not_authorized", "not_authorized"]


async def test_bad_certificate_files_are_a_clear_start_error(tmp_path, mosquitto):
    from engine.node import NodeError

    conf = f"""
    gateway.ocpp.listeners.wss.s {{ bind = "127.0.0.1:{free_port()}",
      ssl_options {{ certfile = "{tmp_path}/missing.pem", keyfile = "{tmp_path}/missing.key" }} }}
    """
    with pytest.raises(NodeError, match=r"gateway.ocpp.listeners.wss.s.ssl_options: No such file or directory"):
        async with running_gateway(tmp_path, mosquitto.port, conf):
            pass
