"""`ocpp-gateway ctl`: the admin API's command-line client, run as a subprocess against a
real gateway process, with charge points on raw WebSocket connections."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import websockets

from tests.gateway import BIN, GatewayProcess
from tests.ocpp_support import closed_with, recv_json
from tests.servers import free_port

pytestmark = pytest.mark.timeout(90)

RULE = 'rule_engine.rules.all_up { sql = """SELECT clientid FROM "ocpp/cp/#" """, description = "every upstream message" }\n'


@dataclass
class Out:
    code: int
    stdout: str
    stderr: str

    def json(self):
        return json.loads(self.stdout)


def admin_url(gw: GatewayProcess) -> str:
    return f"http://{gw.env['OCPPGW_DASHBOARD__LISTENERS__HTTP__BIND']}/api/v5"


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any OCPPGW_* setting (so nothing points at a gateway)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCPPGW_")}
    env.update(extra)
    return env


def run_ctl(*args: str, gw: GatewayProcess | None = None, input: str | None = None,
            env: dict[str, str] | None = None, cwd: Path | None = None, config: bool = True) -> Out:
    """`ocpp-gateway ctl ARGS`; with `gw`, in its directory, its environment and (config=True) `-c` its config."""
    argv = [BIN, "ctl"]
    if gw is not None and config:
        argv += ["-c", "gateway.conf"]
    argv += list(args)
    if env is None:
        env = gw.env if gw is not None else clean_env()
    if cwd is None:  # without a gateway: a directory with no conf/gateway.conf in it
        cwd = gw.workdir if gw is not None else Path(tempfile.gettempdir())
    done = subprocess.run(argv, check=False, cwd=cwd, env=env, capture_output=True, text=True, timeout=60,
                          input=input, stdin=None if input is not None else subprocess.DEVNULL)
    assert "Traceback" not in done.stderr, done.stderr
    return Out(done.returncode, done.stdout, done.stderr)


async def actl(*args: str, **kwargs) -> Out:
    """`run_ctl` off the event loop, so charge points in this test keep being served."""
    return await asyncio.to_thread(run_ctl, *args, **kwargs)


def ok(out: Out) -> Out:
    assert out.code == 0, (out.code, out.stdout, out.stderr)
    return out


@pytest.fixture(scope="module")
def gw(tmp_path_factory) -> Iterator[GatewayProcess]:
    """One gateway for the module: authentication on, but only on a second listener ("secure")."""
    workdir = tmp_path_factory.mktemp("ctl")
    secure_port = free_port()
    config = (
        "gateway.ocpp.authentication.enable = true\n"
        "gateway.ocpp.listeners.ws.default.enable_authn = false\n"
        f'gateway.ocpp.listeners.ws.secure {{ bind = "127.0.0.1:{secure_port}" }}\n' + RULE
    )
    process = GatewayProcess(workdir, config=config)
    process.secure_port = secure_port  # type: ignore[attr-defined]
    process.start()
    yield process
    assert process.stop() == 0


async def wait_connected(gw: GatewayProcess, cid: str) -> None:
    async with httpx.AsyncClient(base_url=admin_url(gw), auth=("admin", "public"), timeout=10) as http:
        for _ in range(200):
            if (await http.get(f"/gateways/ocpp/clients/{cid}")).status_code == 200:
                return
            await asyncio.sleep(0.05)
    raise AssertionError(f"{cid} never showed up in the admin API")


@contextlib.asynccontextmanager
async def charge_point(gw: GatewayProcess, cid: str, port: int | None = None,
                       headers: dict[str, str] | None = None) -> AsyncIterator[websockets.ClientConnection]:
    url = f"ws://127.0.0.1:{port or gw.ocpp_port}/ocpp/{cid}"
    async with websockets.connect(url, subprotocols=["ocpp1.6"], additional_headers=headers) as ws:
        await wait_connected(gw, cid)
        yield ws


async def answer_calls(ws: websockets.ClientConnection, answers: dict[str, list]) -> None:
    """A charge point that answers every CALL: `answers[action]` is the frame after the UniqueId."""
    async for raw in ws:
        frame = json.loads(raw)
        if frame[0] == 2:
            await ws.send(json.dumps([answers[frame[2]][0], frame[1], *answers[frame[2]][1:]]))


# --- without a gateway ------------------------------------------------------------------------


def test_help_of_ctl_and_its_commands():
    out = ok(run_ctl("--help"))
    assert "usage: ocpp-gateway ctl" in out.stdout
    for name in ("status", "reload", "clients", "client", "kick", "call", "users", "rules"):
        assert name in out.stdout
    assert "exit codes:" in out.stdout
    for command in (["status"], ["reload"], ["clients"], ["client"], ["kick"], ["call"], ["users"], ["users", "add"],
                    ["users", "list"], ["users", "delete"], ["rules"], ["rules", "list"], ["rules", "metrics"]):
        out = ok(run_ctl(*command, "--help"))
        assert f"usage: ocpp-gateway ctl {' '.join(command)}" in out.stdout, command
        assert "--url" in out.stdout and "--json" in out.stdout, command
    assert "--timeout" in run_ctl("call", "--help").stdout
    assert "--superuser" in run_ctl("users", "add", "--help").stdout
    assert "ctl" in ok(subprocess_help()).stdout


def subprocess_help() -> Out:
    done = subprocess.run([BIN, "--help"], check=False, capture_output=True, text=True, timeout=30)
    return Out(done.returncode, done.stdout, done.stderr)


def test_missing_or_wrong_commands_are_usage_errors(tmp_path):
    for args in ([], ["users"], ["rules"]):
        out = run_ctl(*args, cwd=tmp_path)
        assert out.code == 2 and "usage: ocpp-gateway ctl" in out.stderr, args
    for args in (["nope"], ["client"], ["call", "CP1"], ["users", "add"], ["call", "CP", "Reset", "{}", "--timeout", "x"]):
        out = run_ctl(*args, cwd=tmp_path)
        assert out.code == 2 and "usage:" in out.stderr, args


def test_unreachable_gateway_is_exit_3_naming_the_url(tmp_path):
    port = free_port()
    out = run_ctl("--url", f"http://127.0.0.1:{port}/api/v5", "status")
    assert out.code == 3, out
    assert f"http://127.0.0.1:{port}/api/v5" in out.stderr and "cannot reach" in out.stderr
    assert out.stdout == ""
    # the URL from a config: the dashboard's bind, 0.0.0.0 read as loopback
    conf = tmp_path / "gw.conf"
    conf.write_text(f'dashboard.listeners.http.bind = "0.0.0.0:{port}"\ndashboard.default_password = "s3cret-pw"\n')
    out = run_ctl("-c", str(conf), "clients")
    assert out.code == 3 and f"http://127.0.0.1:{port}/api/v5" in out.stderr, out
    # a host:port is enough for --url; options may come after the command
    out = run_ctl("rules", "list", "--url", f"127.0.0.1:{port}")
    assert out.code == 3 and f"http://127.0.0.1:{port}/api/v5" in out.stderr, out


def test_bad_arguments_are_exit_2_before_anything_is_sent(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/api/v5"  # nothing there: a usage error must come first
    for payload, expected in (("{", "not JSON"), ("[1, 2]", "JSON object"), ('"Soft"', "JSON object")):
        out = run_ctl("--url", url, "call", "CP1", "Reset", payload)
        assert out.code == 2 and expected in out.stderr, (payload, out)
    for timeout in ("0", "-1", "nan", "inf"):
        out = run_ctl("--url", url, "call", "CP1", "Reset", "{}", "--timeout", timeout)
        assert out.code == 2 and "--timeout" in out.stderr, (timeout, out)
    out = run_ctl("--url", url, "users", "add", "u1", input="")
    assert out.code == 2 and "password" in out.stderr, out
    out = run_ctl("--url", "ftp://127.0.0.1:1", "status")
    assert out.code == 2 and "--url" in out.stderr, out
    conf = tmp_path / "broken.conf"
    conf.write_text("dashboard { listeners.http.bind = \n")
    out = run_ctl("-c", str(conf), "status")
    assert out.code == 2 and str(conf) in out.stderr, out


# --- against a running gateway -------------------------------------------------------------------------


def test_status(gw):
    out = ok(run_ctl("status", gw=gw))
    assert "status:" in out.stdout and "running" in out.stdout
    assert "connections:" in out.stdout and "ocpp:ws:default" in out.stdout and "ocpp:ws:secure" in out.stdout
    body = ok(run_ctl("status", "--json", gw=gw)).json()
    assert body["status"] == "running" and body["node"] and body["version"]
    # --json before the command works the same
    assert ok(run_ctl("--json", "status", gw=gw)).json() == body
    # with no -c: the defaults and the OCPPGW_* environment, as `run` reads them
    assert ok(run_ctl("status", "--json", gw=gw, config=False)).json() == body


def test_url_and_credentials_from_options_and_environment(gw):
    url = admin_url(gw)
    assert ok(run_ctl("status", "--url", url, "--user", "admin", "--password", "public", "--json")).json()["status"] == "running"
    assert ok(run_ctl("--url", url.removesuffix("/api/v5"), "status", "--json")).json()["status"] == "running"
    env = clean_env(OCPPGW_CTL_USER="admin", OCPPGW_CTL_PASSWORD="public")
    assert ok(run_ctl("--url", url, "status", env=env)).code == 0


def test_wrong_credentials_are_exit_1_with_the_apis_message(gw):
    out = run_ctl("--password", "wrong", "status", gw=gw)
    assert out.code == 1, out
    assert out.stderr.strip() == "error: BAD_USERNAME_OR_PWD: bad username or password"
    assert out.stdout == ""
    out = run_ctl("clients", "--user", "nobody", gw=gw)
    assert out.code == 1 and "error: BAD_USERNAME_OR_PWD:" in out.stderr, out
    env = {**gw.env, "OCPPGW_CTL_PASSWORD": "wrong"}
    out = run_ctl("status", gw=gw, env=env)
    assert out.code == 1 and "error: BAD_USERNAME_OR_PWD:" in out.stderr, out
    # for scripts, --json gives the API's error body on stdout as well
    out = run_ctl("--password", "wrong", "status", "--json", gw=gw)
    assert out.code == 1 and out.json()["code"] == "BAD_USERNAME_OR_PWD"


async def test_clients_listing_and_one_client(gw):
    async with charge_point(gw, "LIST-A1"), charge_point(gw, "LIST-B2"):
        out = ok(await actl("clients", gw=gw))
        lines = out.stdout.splitlines()
        assert lines[0].split()[:3] == ["CLIENTID", "PROTO", "ADDRESS"]
        rows = {line.split()[0]: line.split() for line in lines[1:]}
        assert {"LIST-A1", "LIST-B2"} <= set(rows)
        assert rows["LIST-A1"][1] == "ocpp1.6" and rows["LIST-A1"][2].startswith("127.0.0.1:")
        # columns line up: every row starts its second column where the header does
        start = lines[0].index("PROTO")
        assert all(line[start:].startswith("ocpp1.6") for line in lines[1:])

        out = ok(await actl("clients", "--like", "A1", gw=gw))
        assert "LIST-A1" in out.stdout and "LIST-B2" not in out.stdout
        body = ok(await actl("clients", "--json", gw=gw)).json()
        assert {"LIST-A1", "LIST-B2"} <= {c["clientid"] for c in body["data"]}
        assert body["meta"]["count"] == len(body["data"])
        out = ok(await actl("clients", "--like", "nobody-has-this", gw=gw))
        assert "no charge points connected" in out.stdout

        out = ok(await actl("client", "LIST-A1", gw=gw))
        fields = dict(line.split(":", 1) for line in out.stdout.splitlines())
        assert fields["clientid"].strip() == "LIST-A1" and fields["proto_ver"].strip() == "ocpp1.6"
        assert fields["ip_address"].strip() == "127.0.0.1"
        assert ok(await actl("client", "LIST-B2", "--json", gw=gw)).json()["clientid"] == "LIST-B2"

    out = await actl("client", "LIST-A1", gw=gw)
    assert out.code == 1 and out.stderr.startswith("error: RESOURCE_NOT_FOUND: ") and "LIST-A1" in out.stderr


async def test_kick_closes_the_charge_points_socket(gw):
    async with charge_point(gw, "KICK-ME") as ws:
        out = ok(await actl("kick", "KICK-ME", gw=gw))
        assert out.stdout.strip() == "kicked KICK-ME"
        await closed_with(ws, 1000)
    out = await actl("kick", "KICK-ME", gw=gw)
    assert out.code == 1 and "error: RESOURCE_NOT_FOUND:" in out.stderr, out
    out = await actl("kick", "KICK-ME", "--json", gw=gw)
    assert out.code == 1 and out.json()["code"] == "RESOURCE_NOT_FOUND"


async def test_call_prints_the_charge_points_answer(gw):
    answers = {"Reset": [3, {"status": "Accepted"}], "ClearCache": [4, "NotSupported", "no cache here", {"why": "none"}]}
    async with charge_point(gw, "CALL-OK") as ws:
        answering = asyncio.create_task(answer_calls(ws, answers))
        try:
            out = ok(await actl("call", "CALL-OK", "Reset", '{"type": "Soft"}', gw=gw))
            assert json.loads(out.stdout) == {"status": "Accepted"}
            out = ok(await actl("call", "CALL-OK", "Reset", '{"type": "Hard"}', "--timeout", "30", "--json", gw=gw))
            body = out.json()
            assert body["MessageTypeId"] == 3 and body["Action"] == "Reset" and body["Payload"] == {"status": "Accepted"}
            # a CALLERROR is the charge point's answer, and a failure: exit 1
            out = await actl("call", "CALL-OK", "ClearCache", gw=gw)
            assert out.code == 1, out
            assert "CALLERROR NotSupported: no cache here" in out.stderr and '"why"' in out.stderr
            out = await actl("call", "CALL-OK", "ClearCache", "--json", gw=gw)
            assert out.code == 1 and out.json()["ErrorCode"] == "NotSupported"
        finally:
            answering.cancel()
    out = await actl("call", "CALL-OK", "Reset", '{"type": "Soft"}', gw=gw)
    assert out.code == 1 and "error: RESOURCE_NOT_FOUND:" in out.stderr, out


async def test_call_to_a_silent_charge_point_times_out(gw):
    async with charge_point(gw, "CALL-MUTE") as ws:
        out = await actl("call", "CALL-MUTE", "Reset", '{"type": "Soft"}', "--timeout", "1", gw=gw)
        assert out.code == 1, out
        assert out.stderr.startswith("error: TIMEOUT: ")
        assert "CALL-MUTE did not answer" in out.stderr and "within 1s" in out.stderr
        assert out.stdout == ""
        frame = await recv_json(ws)  # it was sent; the charge point just kept quiet
        assert frame[0] == 2 and frame[2:] == ["Reset", {"type": "Soft"}]


async def test_users_add_list_delete(gw):
    out = ok(await actl("users", "add", "USR-1", "--password", "pw-one", gw=gw))
    assert out.stdout.strip() == "added user USR-1"
    # the password from stdin (not a terminal): its first line, without the newline
    out = ok(await actl("users", "add", "USR-2", "--superuser", gw=gw, input="pw two\n"))
    assert out.stdout.strip() == "added superuser USR-2"
    body = ok(await actl("users", "add", "USR-3", "--json", gw=gw, input="pw-three")).json()
    assert body == {"user_id": "USR-3", "is_superuser": False}

    out = ok(await actl("users", "list", gw=gw))
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["USER_ID", "SUPERUSER"]
    assert {tuple(line.split()) for line in lines[1:]} >= {("USR-1", "no"), ("USR-2", "yes"), ("USR-3", "no")}
    body = ok(await actl("users", "list", "--json", gw=gw)).json()
    assert {"USR-1", "USR-2", "USR-3"} <= {u["user_id"] for u in body["data"]}
    assert [u["user_id"] for u in ok(await actl("users", "list", "--like", "USR-2", "--json", gw=gw)).json()["data"]] == ["USR-2"]

    # the passwords are the ones given: charge points log in with them on the listener with authentication
    for cid, password in (("USR-1", "pw-one"), ("USR-2", "pw two")):
        token = base64.b64encode(f"{cid}:{password}".encode()).decode()
        async with charge_point(gw, cid, port=gw.secure_port, headers={"Authorization": f"Basic {token}"}):
            pass
    with pytest.raises(websockets.InvalidStatus):
        token = base64.b64encode(b"USR-2:pw two\n").decode()
        await websockets.connect(f"ws://127.0.0.1:{gw.secure_port}/ocpp/USR-2", subprotocols=["ocpp1.6"],
                                 additional_headers={"Authorization": f"Basic {token}"})

    out = await actl("users", "add", "USR-1", "--password", "again", gw=gw)
    assert out.code == 1 and "error: ALREADY_EXISTS:" in out.stderr, out
    # the admin API's own password goes before the command for `users add`
    out = await actl("--password", "wrong", "users", "add", "USR-4", "--password", "pw", gw=gw)
    assert out.code == 1 and "BAD_USERNAME_OR_PWD" in out.stderr, out

    for user_id in ("USR-1", "USR-2", "USR-3"):
        out = ok(await actl("users", "delete", user_id, gw=gw))
        assert out.stdout.strip() == f"deleted user {user_id}"
    out = await actl("users", "delete", "USR-1", gw=gw)
    assert out.code == 1 and out.stderr.strip() == "error: NOT_FOUND: user 'USR-1' not found"
    out = ok(await actl("users", "list", "--like", "USR-", gw=gw))
    assert out.stdout.strip() == "no users with 'USR-' in their id"


async def test_users_security_profile(gw):
    # profile 3 without --password: no password asked for (not even on stdin): the certificate is the login
    body = ok(await actl("users", "add", "PRF-3", "--security-profile", "3", "--json", gw=gw, input="ignored\n")).json()
    assert body == {"user_id": "PRF-3", "is_superuser": False, "security_profile": 3}
    out = ok(await actl("users", "add", "PRF-2", "--password", "pw", "--security-profile", "2", gw=gw))
    assert out.stdout.strip() == "added user PRF-2"
    out = await actl("users", "add", "PRF-X", "--password", "pw", "--security-profile", "4", gw=gw)
    assert out.code != 0 and "--security-profile" in out.stderr
    lines = ok(await actl("users", "list", "--like", "PRF-", gw=gw)).stdout.splitlines()
    assert lines[0].split() == ["USER_ID", "SUPERUSER", "PROFILE"]
    assert {tuple(line.split()) for line in lines[1:]} == {("PRF-2", "no", "2"), ("PRF-3", "no", "3")}
    out = ok(await actl("users", "set-profile", "PRF-2", "none", gw=gw))
    assert out.stdout.strip() == "user PRF-2: security profile none"
    body = ok(await actl("users", "set-profile", "PRF-2", "1", "--json", gw=gw)).json()
    assert body["security_profile"] == 1
    # a user without a password keeps profile 3
    out = await actl("users", "set-profile", "PRF-3", "2", gw=gw)
    assert out.code == 1 and "security_profile" in out.stderr, out
    for user_id in ("PRF-2", "PRF-3"):
        ok(await actl("users", "delete", user_id, gw=gw))


async def test_rules_list_and_metrics(gw):
    out = ok(await actl("rules", "list", gw=gw))
    lines = out.stdout.splitlines()
    assert lines[0].split()[:3] == ["ID", "ENABLE", "FROM"]
    row = next(line.split() for line in lines[1:] if line.startswith("all_up "))
    assert row[1:3] == ["true", "ocpp/cp/#"]
    body = ok(await actl("rules", "list", "--json", gw=gw)).json()
    assert [r["id"] for r in body["data"]] == ["all_up"] and body["data"][0]["description"] == "every upstream message"

    async with charge_point(gw, "RULE-CP") as ws:
        await ws.send('[2,"hb1","Heartbeat",{}]')
        for _ in range(100):
            metrics = ok(await actl("rules", "metrics", "all_up", "--json", gw=gw)).json()
            if metrics["metrics"]["matched"] >= 1:
                break
            await asyncio.sleep(0.1)
        assert metrics["id"] == "all_up" and metrics["metrics"]["matched"] >= 1, metrics

    out = ok(await actl("rules", "metrics", "all_up", gw=gw))
    fields = {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in out.stdout.splitlines())}
    assert fields["id"] == "all_up" and int(fields["matched"]) >= 1 and "actions.failed" in fields
    out = ok(await actl("rules", "metrics", gw=gw))
    header, *rows = out.stdout.splitlines()
    assert header.split()[:3] == ["ID", "MATCHED", "PASSED"] and rows[0].split()[0] == "all_up"
    every = ok(await actl("rules", "metrics", "--json", gw=gw)).json()
    assert [r["id"] for r in every] == ["all_up"] and every[0]["metrics"]["matched"] >= 1
    out = await actl("rules", "metrics", "nope", gw=gw)
    assert out.code == 1 and "error: NOT_FOUND: rule nope not found" in out.stderr, out


def test_reload_after_editing_the_config(tmp_path):
    process = GatewayProcess(tmp_path, config="log.level = info\n")
    process.start()
    try:
        conf = tmp_path / "gateway.conf"
        assert ok(run_ctl("rules", "list", gw=process)).stdout.strip() == "no rules"
        out = ok(run_ctl("reload", gw=process))
        assert out.stdout.splitlines() == ["reloaded", "changed: nothing"]

        conf.write_text("log.level = info\n" + RULE)
        out = ok(run_ctl("reload", gw=process))
        assert out.stdout.splitlines() == ["reloaded", "changed: rule_engine"]
        assert "all_up" in ok(run_ctl("rules", "list", gw=process)).stdout
        body = ok(run_ctl("reload", "--json", gw=process)).json()
        assert body == {"status": "reloaded", "changed": [], "needs_restart": []}

        # a broken file: the gateway refuses it and says why; ctl still finds the API in it
        conf.write_text("log.level = info\n" + 'rule_engine.rules.bad { sql = "SELECT FROM" }\n')
        out = run_ctl("reload", gw=process)
        assert out.code == 1, out
        assert out.stderr.startswith("error: BAD_CONFIG: ") and "rule bad" in out.stderr
        out = run_ctl("reload", "--json", gw=process)
        assert out.code == 1 and out.json()["code"] == "BAD_CONFIG" and out.json()["errors"]
        rules = ok(run_ctl("rules", "list", "--json", gw=process)).json()["data"]
        assert [r["id"] for r in rules] == ["all_up"]  # the running config stayed

        conf.write_text("log.level = info\nmqtt.buffer.max_messages = 5\n")
        out = ok(run_ctl("reload", gw=process))
        assert "changed: rule_engine" in out.stdout and "needs a restart to apply: mqtt" in out.stdout
    finally:
        assert process.stop() == 0
