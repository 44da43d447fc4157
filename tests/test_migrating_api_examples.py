"""The curl examples of docs/migrating-from-emqx.md's `api` section, run in order against a live
gateway: each answers the status its `# → NNN` line says. Listener ports in the examples (33033,
33043, 33044) are swapped for free ones, and the charge points that should get in do."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import websockets

from tests.ocpp_support import running_gateway
from tests.servers import free_port

pytestmark = pytest.mark.timeout(90)

DOC = Path(__file__).resolve().parent.parent / "docs" / "migrating-from-emqx.md"
DOC_BASE = "http://127.0.0.1:18083/api/v5"
DOC_PORTS = ("33033", "33043", "33044")


@dataclass
class Call:
    expected: int
    method: str
    url: str
    auth: tuple[str, str]
    headers: dict[str, str]
    body: str | None


def api_section() -> str:
    text = DOC.read_text()
    match = re.search(r"<!-- section: api -->\n(.*?)<!-- end: api -->", text, re.S)
    assert match, "the api section is missing"
    return match.group(1)


def parse_curl(command: str, expected: int) -> Call:
    words = shlex.split(command)
    assert words[0] == "curl", command
    method, url, body, auth, headers = None, None, None, ("", ""), {}
    args = iter(words[1:])
    for word in args:
        if word == "-u":
            user, _, password = next(args).partition(":")
            auth = (user, password)
        elif word == "-X":
            method = next(args)
        elif word == "-H":
            name, _, value = next(args).partition(":")
            headers[name.strip()] = value.strip()
        elif word == "-d":
            body = next(args)
        elif word.startswith("http"):
            url = word
        else:
            raise AssertionError(f"an option the test does not know: {word} in {command}")
    assert url and url.startswith(DOC_BASE), command
    return Call(expected, method or ("POST" if body is not None else "GET"), url, auth, headers, body)


def doc_calls() -> list[Call]:
    calls = []
    for block in re.findall(r"```sh\n(.*?)```", api_section(), re.S):
        expected = None
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            marker = re.match(r"#\s*→\s*(\d{3})", line.strip())
            if marker:
                expected = int(marker.group(1))
            elif line.strip().startswith("curl"):
                assert expected is not None, f"no '# → status' line before: {line}"
                calls.append(parse_curl(line.strip(), expected))
                expected = None
    return calls


def test_the_section_has_examples_for_every_new_path():
    paths = {(c.method, re.sub(r"\?.*", "", c.url[len(DOC_BASE):])) for c in doc_calls()}
    for needed in [("PUT", "/gateways/ocpp"), ("GET", "/gateways"), ("POST", "/gateways/ocpp/listeners"),
                   ("PUT", "/gateways/ocpp/listeners/ocpp:ws:site2"), ("DELETE", "/gateways/ocpp/listeners/ocpp:ws:site2"),
                   ("POST", "/gateways/ocpp/authentication"), ("PUT", "/gateways/ocpp/authentication"),
                   ("DELETE", "/gateways/ocpp/authentication"), ("POST", "/gateways/ocpp/clients/CP001/call")]:
        assert needed in paths, needed


async def connects(port: int, cid: str) -> bool:
    try:
        async with websockets.connect(f"ws://127.0.0.1:{port}/ocpp/{cid}", subprotocols=["ocpp1.6"], open_timeout=5):
            return True
    except (OSError, websockets.InvalidHandshake, TimeoutError):
        return False


async def test_the_examples_answer_as_the_doc_says(tmp_path, mosquitto):
    ports = {doc_port: str(free_port()) for doc_port in DOC_PORTS}
    async with running_gateway(tmp_path, mosquitto.port) as gw:
        async with httpx.AsyncClient(timeout=30) as http:
            for call in doc_calls():
                url, body = call.url.replace(DOC_BASE, gw.admin_url), call.body
                for doc_port, port in ports.items():
                    body = body.replace(doc_port, port) if body is not None else None
                r = await http.request(call.method, url, auth=call.auth, headers=call.headers,
                                       content=body.encode() if body is not None else None)
                assert r.status_code == call.expected, (call.method, call.url, r.text)
                if call.method == "PUT" and url.endswith("/gateways/ocpp") and '"listeners"' in (body or ""):
                    # EMQX's docs body moved the default listener to the port given as a string
                    assert await connects(int(ports["33033"]), "DOC1")
                if call.method == "POST" and url.endswith("/listeners"):
                    assert await connects(int(ports["33043"]), "DOC2")
                if call.method == "PUT" and "/listeners/" in url:
                    assert await connects(int(ports["33044"]), "DOC3")
                    assert not await connects(int(ports["33043"]), "DOC4")
        # what the examples did is what runs
        ocpp = gw.node.settings.gateway.ocpp
        assert "site2" not in ocpp.listeners.ws and ocpp.authentication.enable is False
        assert ocpp.idle_timeout == 45 and ocpp.dnstream.awaiting_timeout == 20
        assert gw.node.user_store is not None and len(gw.node.user_store) == 1
