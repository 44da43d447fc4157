"""The admin API's HTTP client: the requests, paging, and how a failure becomes an
exit code (CtlError) or the API's own error (ApiFailure)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlsplit

import orjson

EXIT_OK = 0
EXIT_API = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3

API_PATH = "/api/v5"
OCPP = "/gateways/ocpp"
PAGE_LIMIT = 10_000  # the API's largest page
REQUEST_TIMEOUT = 30.0  # seconds, for everything but `call`
CALL_GRACE = 30.0  # a call's HTTP wait: its --timeout plus this


class CtlError(Exception):
    """Ends the command with `code`; `message` goes to stderr."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ApiFailure(Exception):
    """The API answered with an error status."""

    def __init__(self, status: int, code: str, message: str, text: str) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.text = text


class Api:
    def __init__(self, base: str, auth: tuple[str, str], note: str | None = None) -> None:
        import httpx

        self.httpx = httpx
        self.base = base
        self.note = note
        # a gateway on this machine is never behind the environment's HTTP proxy
        host = urlsplit(base).hostname or ""
        local = host in ("localhost", "::1") or host.startswith("127.")
        self.client = httpx.Client(base_url=base, auth=auth, timeout=REQUEST_TIMEOUT, trust_env=not local)

    def close(self) -> None:
        self.client.close()

    def request(self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None,
                timeout: Any = None) -> Any:
        httpx = self.httpx
        kwargs: dict[str, Any] = {"params": params}
        if json is not None:
            kwargs["json"] = json
        if timeout is not None:
            kwargs["timeout"] = timeout
        try:
            response = self.client.request(method, path, **kwargs)
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            raise CtlError(EXIT_USAGE, f"bad admin API URL {self.base}: {exc}") from None
        except httpx.TimeoutException:
            raise CtlError(EXIT_UNREACHABLE, f"the gateway's admin API at {self.base} did not answer in time") from None
        except httpx.TransportError as exc:
            reason = str(exc) or type(exc).__name__
            note = f" ({self.note})" if self.note else ""
            raise CtlError(EXIT_UNREACHABLE, f"cannot reach the gateway's admin API at {self.base}: {reason}{note}") from None
        if not 200 <= response.status_code < 300:
            raise _failure(response)
        return response

    def get_all(self, path: str, params: dict[str, Any] | None = None) -> tuple[dict[str, Any], str]:
        """Every page of a paged listing: the API's page shape holding all items, and the raw
        text when it came in one page."""
        params = dict(params or {})
        items: list[Any] = []
        page = 1
        while True:
            response = self.request("GET", path, params={**params, "page": page, "limit": PAGE_LIMIT})
            body = _json(response)
            items.extend(body.get("data", []))
            meta = body.get("meta", {})
            if not meta.get("hasnext"):
                break
            page += 1
        if page == 1:
            return body, response.text
        merged = {"data": items, "meta": {**meta, "page": 1, "limit": len(items), "hasnext": False}}
        return merged, orjson.dumps(merged).decode()


def _json(response: Any) -> Any:
    try:
        return orjson.loads(response.content)
    except orjson.JSONDecodeError:
        raise CtlError(EXIT_API, f"the admin API answered HTTP {response.status_code} with something that is not JSON: "
                       f"{response.text[:200]!r}") from None


def _failure(response: Any) -> ApiFailure:
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        body = None
    if isinstance(body, dict) and "code" in body:
        return ApiFailure(response.status_code, str(body["code"]), str(body.get("message", "")), response.text)
    text = response.text.strip()[:200] or response.reason_phrase
    return ApiFailure(response.status_code, f"HTTP {response.status_code}", text, response.text if body is not None else "")


def _segment(text: str) -> str:
    return quote(text, safe="")
