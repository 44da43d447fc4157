"""Admin API credentials: API keys with hashed secrets, and no default password beyond loopback."""

from __future__ import annotations

import subprocess

import httpx
import pytest

from engine.admin.common import Credentials, hash_secret, secret_matches
from engine.node import NodeError
from tests.gateway import BIN
from tests.ocpp_support import running_gateway


def test_hash_secret_cli_and_matching():
    out = subprocess.run([BIN, "hash-secret"], input="s3cret-key\n", capture_output=True, text=True, timeout=30)
    assert out.returncode == 0
    stored = out.stdout.strip()
    assert stored.startswith("pbkdf2_sha256$") and "s3cret-key" not in stored
    assert secret_matches("s3cret-key", stored) and not secret_matches("other", stored)
    short = subprocess.run([BIN, "hash-secret", "--secret", "short"], capture_output=True, text=True, timeout=30)
    assert short.returncode == 2 and "at least 8" in short.stderr
    assert not secret_matches("x", "garbage") and not secret_matches("x", "md5$1$a$b")


def test_credentials_check():
    creds = Credentials("admin", "pw", {"bot": hash_secret("bot-secret", iterations=1000)})
    assert creds.check("admin", "pw") and not creds.check("admin", "PW") and not creds.check("Admin", "pw")
    assert creds.check("bot", "bot-secret") and creds.check("bot", "bot-secret")  # second time from the cache
    assert not creds.check("bot", "wrong") and not creds.check("nobody", "bot-secret")


async def test_api_key_works_and_wrong_secret_does_not(tmp_path, mosquitto):
    conf = f'dashboard.api_keys {{ ci-bot = "{hash_secret("ci-secret-1", iterations=1000)}" }}\n'
    async with running_gateway(tmp_path, mosquitto.port, conf) as gw:
        async with httpx.AsyncClient(base_url=gw.admin_url) as api:
            assert (await api.get("/status", auth=("ci-bot", "ci-secret-1"))).status_code == 200
            assert (await api.get("/status", auth=("ci-bot", "wrong"))).status_code == 401
            assert (await api.get("/status", headers={"authorization": "Basic !!notbase64"})).status_code == 401
            assert (await api.get("/status", headers={"authorization": "Bearer x"})).status_code == 401


async def test_default_credentials_refused_beyond_loopback(tmp_path, mosquitto):
    from tests.servers import free_port

    with pytest.raises(NodeError, match="refusing to serve the admin API beyond loopback with the default credentials"):
        async with running_gateway(tmp_path, mosquitto.port, f'dashboard.listeners.http.bind = "0.0.0.0:{free_port()}"\n'):
            pass
    conf = f'dashboard {{ listeners.http.bind = "0.0.0.0:{free_port()}", default_password = "a-real-one" }}\n'
    async with running_gateway(tmp_path, mosquitto.port, conf) as gw:
        assert gw.node.admin_server is not None
