"""Admin API credentials: API keys with hashed secrets (checked off the loop, cached), no default or empty
password beyond loopback (refused alike by `check-config`, `run` and a reload), login lockout per address."""

from __future__ import annotations

import asyncio
import subprocess
import threading

import httpx
import pytest

import engine.admin.credentials as credentials_module
from engine.admin.common import Credentials, hash_secret, secret_matches
from engine.admin.lockout import LoginGuard
from engine.config import ConfigError
from engine.config.schema import DashboardSettings
from engine.config.types import Duration
from tests.gateway import BIN
from tests.ocpp_support import running_gateway
from tests.servers import free_port
from tests.test_admin_metrics import scrape

pytestmark = pytest.mark.timeout(60)


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


def test_an_empty_password_never_logs_in(caplog):
    creds = Credentials("admin", "", {"bot": hash_secret("", iterations=1000)})
    assert not creds.check("admin", "") and not creds.check("bot", "")
    assert not asyncio.run(creds.verify("admin", "")) and not asyncio.run(creds.verify("bot", ""))
    assert "dashboard.default_password is empty" in caplog.text


async def test_api_key_works_and_wrong_secret_does_not(tmp_path, mosquitto):
    conf = f'dashboard.api_keys {{ ci-bot = "{hash_secret("ci-secret-1", iterations=1000)}" }}\n'
    async with running_gateway(tmp_path, mosquitto.port, conf) as gw:
        async with httpx.AsyncClient(base_url=gw.admin_url) as api:
            assert (await api.get("/status", auth=("ci-bot", "ci-secret-1"))).status_code == 200
            assert (await api.get("/status", auth=("ci-bot", "wrong"))).status_code == 401
            assert (await api.get("/status", headers={"authorization": "Basic !!notbase64"})).status_code == 401
            assert (await api.get("/status", headers={"authorization": "Bearer x"})).status_code == 401


async def test_api_key_hash_runs_off_the_loop_and_a_verified_key_is_cached(tmp_path, mosquitto, monkeypatch):
    """While a key's pbkdf2 runs (held here on purpose), the loop answers others; a good key is hashed once."""
    release = threading.Event()
    calls: list[str] = []
    real = credentials_module.secret_matches

    def held(secret: str, stored: str) -> bool:
        calls.append(threading.current_thread().name)
        release.wait(20)
        return real(secret, stored)

    monkeypatch.setattr(credentials_module, "secret_matches", held)
    conf = f'dashboard.api_keys {{ ci-bot = "{hash_secret("ci-secret-1", iterations=1000)}" }}\n'
    async with running_gateway(tmp_path, mosquitto.port, conf) as gw, httpx.AsyncClient(base_url=gw.admin_url, timeout=30) as api:
        keyed = asyncio.create_task(api.get("/status", auth=("ci-bot", "ci-secret-1")))
        for _ in range(500):
            if calls:
                break
            await asyncio.sleep(0.01)
        assert calls and calls[0] != threading.current_thread().name
        other = await asyncio.wait_for(api.get("/status", auth=("admin", "public")), 10)
        assert other.status_code == 200 and not keyed.done()
        release.set()
        assert (await keyed).status_code == 200
        assert (await api.get("/status", auth=("ci-bot", "ci-secret-1"))).status_code == 200
        assert len(calls) == 1  # the second time from the cache


async def test_default_credentials_refused_beyond_loopback(tmp_path, mosquitto):
    with pytest.raises(ConfigError, match="refusing to serve the admin API beyond loopback with the default credentials"):
        async with running_gateway(tmp_path, mosquitto.port, f'dashboard.listeners.http.bind = "0.0.0.0:{free_port()}"\n'):
            pass
    conf = f'dashboard {{ listeners.http.bind = "0.0.0.0:{free_port()}", default_password = "a-real-one" }}\n'
    async with running_gateway(tmp_path, mosquitto.port, conf) as gw:
        assert gw.node.admin_server is not None


def test_empty_password_refused_beyond_loopback_by_check_config_and_run_alike(tmp_path):
    conf = tmp_path / "gw.conf"
    conf.write_text(f'node.data_dir = "{tmp_path}/data"\ndashboard {{ listeners.http.bind = "0.0.0.0:{free_port()}", '
                    'default_password = "" }\n')
    check = subprocess.run([BIN, "check-config", "-c", str(conf)], capture_output=True, text=True, timeout=60)
    run = subprocess.run([BIN, "run", "-c", str(conf)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 2 and run.returncode == 2, (check.stderr, run.stderr)
    assert "dashboard.default_password" in check.stderr and "empty password is refused" in check.stderr
    assert check.stderr == run.stderr
    # on loopback it starts, with a warning, and admin:'' does not log in
    conf.write_text(f'node.data_dir = "{tmp_path}/data"\ndashboard {{ listeners.http.bind = "127.0.0.1:{free_port()}", '
                    'default_password = "" }\n')
    assert subprocess.run([BIN, "check-config", "-c", str(conf)], capture_output=True, text=True, timeout=60).returncode == 0


async def test_empty_password_on_loopback_never_logs_in(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port, 'dashboard.default_password = ""\n') as gw:
        async with httpx.AsyncClient(base_url=gw.admin_url) as api:
            r = await api.get("/status", auth=("admin", ""))
            assert r.status_code == 401 and r.json()["code"] == "BAD_USERNAME_OR_PWD"


async def test_empty_password_refused_by_a_reload(tmp_path, mosquitto):
    conf = f'dashboard {{ listeners.http.bind = "0.0.0.0:{free_port()}", default_password = "a-real-one" }}\n'
    async with running_gateway(tmp_path, mosquitto.port, conf) as gw:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw.node.settings.dashboard.listeners.http.bind.port}/api/v5",
                                     auth=("admin", "a-real-one")) as api:
            r = await api.put("/configs", content='dashboard.default_password = ""')
            assert r.status_code == 400 and "empty password is refused" in r.json()["message"]
            assert (await api.get("/status")).status_code == 200


async def test_failed_logins_lock_the_source_out(tmp_path, mosquitto, monkeypatch):
    conf = "dashboard { unsuccessful_login_max_attempts = 3, unsuccessful_login_lock_duration = 1h }\n"
    async with running_gateway(tmp_path, mosquitto.port, conf) as gw, httpx.AsyncClient(base_url=gw.admin_url) as api:
        assert (await api.get("/status", auth=("admin", "public"))).status_code == 200
        for _ in range(3):
            assert (await api.get("/status", auth=("admin", "guess"))).status_code == 401
        checked: list[str] = []
        real_verify = gw.node.admin_credentials.verify

        async def counting_verify(user: str, password: str) -> bool:
            checked.append(user)
            return await real_verify(user, password)

        monkeypatch.setattr(gw.node.admin_credentials, "verify", counting_verify)
        r = await api.get("/status", auth=("admin", "public"))  # even the right password: locked is locked
        assert r.status_code == 429 and r.json()["code"] == "LOGIN_LOCKED" and int(r.headers["retry-after"]) > 3000
        assert "unsuccessful_login_lock_duration" in r.json()["message"]
        assert checked == []  # nothing was checked while locked
        monkeypatch.undo()
        guard_stats = gw.node.admin_stats
        assert guard_stats.login_failures == 3 and guard_stats.lockouts == 1 and guard_stats.refused["login_locked"] == 1
        for app in _guards(gw):
            app.guard._locked.clear()  # the scrape comes from the same address
        s = await scrape(gw)
        assert s.value("ocppgw_admin_login_failures_total") == 3 and s.value("ocppgw_admin_login_lockouts_total") == 1
        assert s.value("ocppgw_admin_requests_refused_total", reason="login_locked") == 1


def _guards(gw):
    from engine.admin.app import _Authenticated

    app = gw.node.admin_server.config.app
    while app is not None and not isinstance(app, _Authenticated):
        app = getattr(app, "app", None)
    return [app] if app is not None else []


def test_login_guard_interval_and_expiry():
    now = [1000.0]
    guard = LoginGuard(clock=lambda: now[0], max_sources=3)
    d = DashboardSettings(unsuccessful_login_max_attempts=3, unsuccessful_login_interval=Duration(60),
                          unsuccessful_login_lock_duration=Duration(600))
    guard.failed("a", d)
    guard.failed("a", d)
    now[0] += 61  # both fell out of the interval
    guard.failed("a", d)
    assert guard.locked_for("a") == 0
    guard.failed("a", d)
    guard.failed("a", d)
    assert guard.locked_for("a") == 600 and guard.stats.lockouts == 1
    assert guard.locked_for("b") == 0
    now[0] += 601
    assert guard.locked_for("a") == 0
    guard.failed("x", d)
    guard.succeeded("x")  # a good login forgets the failures
    guard.failed("x", d)
    guard.failed("x", d)
    assert guard.locked_for("x") == 0
    for source in "pqrstu":  # a flood of addresses: the tables stay bounded
        guard.failed(source, d)
    assert len(guard._failures) <= 3
    off = DashboardSettings(unsuccessful_login_max_attempts=0)
    for _ in range(20):
        guard.failed("z", off)
    assert guard.locked_for("z") == 0


async def test_request_bodies_above_the_limit_get_413(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port, "dashboard.max_request_body = 1KB\n") as gw, \
            httpx.AsyncClient(base_url=gw.admin_url, auth=("admin", "public")) as api:
        big = "# " + "x" * 2000 + "\n"
        r = await api.put("/configs", content=big)  # Content-Length says it
        assert r.status_code == 413 and r.json()["code"] == "PAYLOAD_TOO_LARGE" and "1KB" in r.json()["message"]

        async def chunks():
            for _ in range(10):
                yield b'{"sql": "' + b"y" * 300

        r = await api.post("/rules", content=chunks())  # chunked: counted as it arrives
        assert r.status_code == 413 and "dashboard.max_request_body" in r.json()["message"]
        assert (await api.put("/configs", content="gateway.ocpp.dnstream.max_mqueue_len = 9")).status_code == 200
        assert (await api.get("/status")).status_code == 200
        s = await scrape(gw)
        assert s.value("ocppgw_admin_requests_refused_total", reason="body_too_large") == 2


def test_hashing_queue_is_bounded(monkeypatch):
    creds = Credentials("admin", "pw", {"bot": hash_secret("bot-secret", iterations=1000)})
    monkeypatch.setattr(credentials_module, "MAX_PENDING_HASHES", 0)
    with pytest.raises(credentials_module.HashingBusy):
        asyncio.run(creds.verify("bot", "guess"))
    assert asyncio.run(creds.verify("admin", "pw"))  # the dashboard user needs no hash
