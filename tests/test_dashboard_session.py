"""The dashboard's page and its sessions over real sockets: `/` and its assets (no other host), login
(token + HttpOnly SameSite=Strict cookie), the same refusals as the API (bad password, lockout), the
CSRF check on cookie-authenticated changes, expiry after dashboard.token_expired_time, logout, a
session ended by a password change, and `POST /api/v5/configs/validate`."""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest

from engine.admin.common import Credentials, hash_secret
from engine.admin.dashboard_files import FOLDER
from engine.admin.session_auth import COOKIE, SessionStore
from tests.ocpp_support import running_gateway
from tests.test_admin_metrics import scrape

pytestmark = pytest.mark.timeout(60)
UI = {"x-requested-with": "ocpp-dashboard"}


def root(gw) -> str:
    return gw.admin_url.removesuffix("/api/v5")


async def login(api: httpx.AsyncClient, user: str = "admin", password: str = "public") -> httpx.Response:
    return await api.post("/api/v5/login", json={"username": user, "password": password})


async def test_the_page_and_its_assets_are_served_without_login_and_name_no_other_host(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port) as gw, httpx.AsyncClient(base_url=root(gw)) as web:
        page = await web.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        csp = page.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "connect-src 'self'" in csp and "script-src 'self'" in csp
        assert 'src="/dashboard/app.js"' in page.text
        for asset in sorted(FOLDER.iterdir()):
            got = await web.get(f"/dashboard/{asset.name}")
            assert got.status_code == 200, asset.name
            assert got.content == asset.read_bytes()
            # no CDN, no request to any other host: the machine may be offline
            assert not re.search(rb"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", got.content.replace(b"http://www.w3.org/2000/svg", b"")), asset.name
        assert (await web.get("/dashboard/app.js")).headers["content-type"].startswith("text/javascript")
        assert (await web.get("/dashboard/nope.js")).status_code == 404
        assert (await web.get("/dashboard/%2e%2e%2fapp.py")).status_code == 404
        assert (await web.get("/favicon.ico")).status_code == 200
        assert (await web.post("/")).status_code == 405
        assert (await web.get("/api/v5/status")).status_code == 401  # the data still needs a login


async def test_login_sets_an_httponly_strict_cookie_and_answers_the_token(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port) as gw, httpx.AsyncClient(base_url=root(gw)) as web:
        assert (await web.get("/api/v5/session")).json() == {"username": None}
        answer = await login(web)
        assert answer.status_code == 200, answer.text
        token = answer.json()["token"]
        cookie = answer.headers["set-cookie"]
        assert cookie.startswith(f"{COOKIE}={token};")
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
        assert (await web.get("/api/v5/session")).json() == {"username": "admin"}
        assert (await web.get("/api/v5/status")).status_code == 200  # by the cookie
        async with httpx.AsyncClient(base_url=root(gw)) as other:  # EMQX's way: the token as Bearer
            assert (await other.get("/api/v5/status", headers={"authorization": f"Bearer {token}"})).status_code == 200
            bearer = await other.post("/api/v5/rule_test", headers={"authorization": f"Bearer {token}"},
                                      json={"sql": 'SELECT 1 AS x FROM "t/#"'})
            assert bearer.status_code == 200  # no cookie: no CSRF check needed
        out = await web.post("/api/v5/logout", headers=UI)
        assert out.status_code == 204 and "Max-Age=0" in out.headers["set-cookie"]
        web.cookies.set(COOKIE, token)  # the old token is dead even if a client keeps it
        after = await web.get("/api/v5/status")
        assert after.status_code == 401 and after.json()["code"] == "TOKEN_TIME_OUT"


async def test_an_api_key_logs_in_and_bad_credentials_are_refused_and_lock_out(tmp_path, mosquitto):
    conf = (f'dashboard.api_keys {{ ops-bot = "{hash_secret("bot-secret-1", iterations=1000)}" }}\n'
            "dashboard.unsuccessful_login_max_attempts = 3\n")
    async with running_gateway(tmp_path, mosquitto.port, conf) as gw, httpx.AsyncClient(base_url=root(gw)) as web:
        assert (await login(web, "ops-bot", "bot-secret-1")).status_code == 200
        web.cookies.clear()
        bad = await login(web, "admin", "wrong")
        assert bad.status_code == 401 and bad.json()["code"] == "BAD_USERNAME_OR_PWD"
        assert "www-authenticate" not in bad.headers  # no browser login box over the page's form
        assert (await web.post("/api/v5/login", content=b"not json")).status_code == 400
        assert (await web.post("/api/v5/login", json={"username": "admin"})).status_code == 400
        await login(web, "admin", "wrong")
        await login(web, "admin", "wrong")
        locked = await login(web, "admin", "public")  # the right password, but the address is locked out
        assert locked.status_code == 429 and locked.json()["code"] == "LOGIN_LOCKED"
        assert gw.node.admin_stats.lockouts == 1


async def test_a_cookie_request_that_changes_something_needs_the_page_header_and_its_own_origin(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port) as gw, httpx.AsyncClient(base_url=root(gw)) as web:
        assert (await login(web)).status_code == 200
        body = {"sql": 'SELECT 1 AS x FROM "t/#"'}
        forged = await web.post("/api/v5/rule_test", json=body)
        assert forged.status_code == 403 and "x-requested-with" in forged.json()["message"]
        elsewhere = await web.post("/api/v5/rule_test", json=body, headers={**UI, "origin": "http://evil.example"})
        assert elsewhere.status_code == 403 and "another origin" in elsewhere.json()["message"]
        own = f"http://127.0.0.1:{gw.admin_port}"
        assert (await web.post("/api/v5/rule_test", json=body, headers={**UI, "origin": own})).status_code == 200
        proxied = f"https://127.0.0.1:{gw.admin_port}"  # a proxy that ends TLS: the same host
        assert (await web.post("/api/v5/rule_test", json=body, headers={**UI, "origin": proxied})).status_code == 200
        port = await web.post("/api/v5/rule_test", json=body, headers={**UI, "origin": "http://127.0.0.1:1"})
        assert port.status_code == 403
        assert (await web.get("/api/v5/rules")).status_code == 200  # reading needs no header
        assert gw.node.admin_stats.refused["csrf"] == 3
        assert (await scrape(gw)).value("ocppgw_admin_requests_refused_total", reason="csrf") == 3


async def test_a_session_expires_after_token_expired_time_without_a_request(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port, "dashboard.token_expired_time = 1s\n") as gw, \
            httpx.AsyncClient(base_url=root(gw)) as web:
        assert (await login(web)).status_code == 200
        assert (await web.get("/api/v5/status")).status_code == 200
        await asyncio.sleep(1.3)
        gone = await web.get("/api/v5/status")
        assert gone.status_code == 401 and gone.json()["code"] == "TOKEN_TIME_OUT"
        assert gw.node.admin_stats.refused["session_expired"] == 1


def test_a_session_ends_when_its_credentials_change_or_it_idles():
    now = [0.0]
    store = SessionStore(clock=lambda: now[0], max_sessions=2)
    creds = Credentials("admin", "pw", {"bot": hash_secret("bot-secret", iterations=1000)})
    token = store.open("admin", creds)
    bot = store.open("bot", creds)
    assert store.user(token, creds, idle=60) == "admin" and store.user(bot, creds, idle=60) == "bot"
    now[0] = 50.0
    assert store.user(token, creds, idle=60) == "admin"  # a request pushes the expiry on
    now[0] = 100.0
    assert store.user(token, creds, idle=60) == "admin" and store.user(bot, creds, idle=60) is None
    assert store.user(token, Credentials("admin", "new-pw", {}), idle=60) is None  # the password changed
    assert store.user(token, creds, idle=60) is None  # and the session is gone for good
    first, second, third = (store.open("admin", creds) for _ in range(3))
    assert len(store) == 2 and store.user(first, creds, idle=60) is None  # the oldest went first


async def test_validate_checks_a_config_without_applying_it(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port) as gw, httpx.AsyncClient(base_url=gw.admin_url, auth=("admin", "public")) as api:
        before = gw.node.settings
        bad = await api.post("/configs/validate?mode=replace", content="dashboard { max_request_body = lots }\nnode.nope = 1\n")
        assert bad.status_code == 200
        errors = bad.json()["errors"]
        assert bad.json()["valid"] is False and len(errors) == 2
        assert any("dashboard.max_request_body" in e for e in errors) and any("node.nope" in e for e in errors)
        good = await api.post("/configs/validate", content="log.level = debug\n")
        assert good.json()["valid"] is True
        assert gw.node.settings is before  # nothing applied
        assert (await api.post("/configs/validate", content="")).status_code == 400
        assert (await api.post("/configs/validate?mode=x", content="a=1")).status_code == 400


async def test_head_of_the_page_has_its_length_and_no_body(tmp_path, mosquitto):
    async with running_gateway(tmp_path, mosquitto.port) as gw, httpx.AsyncClient(base_url=root(gw)) as web:
        head = await web.head("/")
        assert head.status_code == 200 and head.content == b""
        assert int(head.headers["content-length"]) == (FOLDER / "index.html").stat().st_size


def test_every_screenshot_docs_dashboard_shows_is_there_and_small():
    docs = FOLDER.parents[2] / "docs"
    shown = set(re.findall(r"!\[[^\]]*\]\((img/[^)]+)\)", (docs / "dashboard.md").read_text(encoding="utf-8")))
    on_disk = {f"img/{p.name}" for p in (docs / "img").glob("dashboard-*.png")}
    assert shown == on_disk and len(shown) >= 8
    assert all((docs / p).stat().st_size < 200_000 for p in shown)
