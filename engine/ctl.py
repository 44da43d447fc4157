"""`ocpp-gateway ctl`: a client of the admin API (`/api/v5`) for operators and scripts.

Where the API is and who we are: `--url` (default: the config's
`dashboard.listeners.http.bind`, 0.0.0.0 read as 127.0.0.1), `--user`/`--password`
(default: `OCPPGW_CTL_USER`/`OCPPGW_CTL_PASSWORD`, then the config's
`dashboard.default_username`/`default_password`); the config is the one `-c` names
(or `conf/gateway.conf`, with the `OCPPGW_*` overrides, as `run` reads it), and it is
only read when something is not given otherwise.

Output: readable tables and `key: value` lines, or with `--json` the API's JSON as
it came (a listing that spans several pages is fetched whole and printed in the
API's page shape with every item in `data`).

Exit codes: 0 success, 1 the API answered an error (`error: <code>: <message>` on
stderr), 2 a usage error, 3 the gateway cannot be reached.
"""

from __future__ import annotations

import argparse
import getpass
import math
import os
import sys
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import quote, urlsplit

import orjson

EXIT_OK = 0
EXIT_API = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3

API_PATH = "/api/v5"
OCPP = "/gateways/ocpp"
USERS = f"{OCPP}/authentication/users"
PAGE_LIMIT = 10_000  # the API's largest page
REQUEST_TIMEOUT = 30.0  # seconds, for everything but `call`
CALL_GRACE = 30.0  # a call's HTTP wait: its --timeout plus this

EXIT_HELP = """\
exit codes:
  0  success
  1  the admin API answered an error (printed as "error: <code>: <message>" on stderr)
  2  usage error (bad arguments, a bad JSON argument, an unreadable config)
  3  the gateway's admin API cannot be reached

connection options (--url, -c, --user, --password, --json) go before or after the command;
`users add` takes the admin API password only before the command (its --password is the
new user's), or from OCPPGW_CTL_PASSWORD or the config.
"""


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


# --- the command line ----------------------------------------------------------------------


def _connection_options(parser: argparse.ArgumentParser, *, leaf: bool, with_credentials: bool = True) -> None:
    """The options every ctl command takes. On `ctl` itself they have defaults; on the
    commands they default to nothing, so that one given before the command stays."""
    dflt: Any = argparse.SUPPRESS if leaf else None
    group = parser.add_argument_group("connection")
    group.add_argument("--url", default=dflt, metavar="URL",
                       help="the admin API, e.g. http://127.0.0.1:18083/api/v5 "
                       "(default: from the config's dashboard.listeners.http.bind)")
    group.add_argument("-c", "--config", default=dflt, metavar="FILE",
                       help="the gateway's config, read for the URL and the credentials "
                       "(default: conf/gateway.conf if present, else built-in defaults)")
    if with_credentials:
        group.add_argument("--user", default=dflt, metavar="USER",
                           help="admin API user or API key (default: $OCPPGW_CTL_USER, then the config's "
                           "dashboard.default_username)")
        group.add_argument("--password", default=dflt, metavar="PASSWORD",
                           help="its password or secret (default: $OCPPGW_CTL_PASSWORD, then the config's "
                           "dashboard.default_password)")
    group.add_argument("--json", action="store_true", default=argparse.SUPPRESS if leaf else False,
                       help="print the API's JSON as it came, for scripts")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `ctl` and its commands on the CLI's subparsers."""
    formatter = argparse.RawDescriptionHelpFormatter
    ctl = subparsers.add_parser(
        "ctl", help="talk to a running gateway's admin API",
        description="Talk to a running gateway through its admin API (/api/v5): status, reload, "
        "charge points, CALLs, users of the built-in authenticator, rules.",
        epilog=EXIT_HELP, formatter_class=formatter,
    )
    _connection_options(ctl, leaf=False)
    ctl.set_defaults(_ctl_help=ctl)
    commands = ctl.add_subparsers(dest="ctl_command", metavar="COMMAND")

    def command(parent: Any, name: str, func: Callable[..., int], help_text: str, description: str | None = None,
                with_credentials: bool = True) -> argparse.ArgumentParser:
        p = parent.add_parser(name, help=help_text, description=description or help_text,
                              epilog=EXIT_HELP, formatter_class=formatter)
        _connection_options(p, leaf=True, with_credentials=with_credentials)
        p.set_defaults(ctl_func=func)
        return p

    command(commands, "status", cmd_status, "the node's status, its OCPP gateway and listeners")
    command(commands, "reload", cmd_reload, "re-read the config files and apply them (POST /configs/reload)",
            "Re-read the gateway's config files and apply what changed. A config with errors changes "
            "nothing; the errors are printed and the exit code is 1.")
    p = command(commands, "clients", cmd_clients, "list the connected charge points")
    p.add_argument("--like", metavar="TEXT", help="only charge point ids containing TEXT")
    p = command(commands, "client", cmd_client, "show one connected charge point")
    p.add_argument("cid", metavar="CID", help="the charge point id")
    p = command(commands, "kick", cmd_kick, "disconnect a charge point")
    p.add_argument("cid", metavar="CID", help="the charge point id")
    p = command(commands, "call", cmd_call, "send a CALL to a charge point and print its answer",
                "Send a CALL to a connected charge point and print its answer: the CALLRESULT's payload, "
                "or the CALLERROR (exit code 1). If no answer comes in time the exit code is 1 too.")
    p.add_argument("cid", metavar="CID", help="the charge point id")
    p.add_argument("action", metavar="ACTION", help="the OCPP action, e.g. Reset")
    p.add_argument("payload", metavar="JSON", nargs="?", default="{}",
                   help='the CALL\'s payload, a JSON object (default {}), e.g. \'{"type": "Soft"}\'')
    p.add_argument("--timeout", metavar="S", type=float,
                   help="seconds to wait for the answer (default: the gateway's dnstream.awaiting_timeout)")

    users = commands.add_parser("users", help="users of the built-in authenticator (add, list, delete)",
                                description="Users of the built-in authenticator of charge points.",
                                epilog=EXIT_HELP, formatter_class=formatter)
    _connection_options(users, leaf=True)
    users.set_defaults(_ctl_help=users)
    user_commands = users.add_subparsers(dest="ctl_users_command", metavar="COMMAND")
    p = command(user_commands, "add", cmd_users_add, "add a user",
                "Add a user. The password comes from --password, else from the first line of stdin "
                "when it is not a terminal, else from a prompt.", with_credentials=False)
    p.add_argument("user_id", metavar="USER", help="the user id (the charge point's username)")
    p.add_argument("--password", dest="new_password", metavar="P", help="the new user's password")
    p.add_argument("--superuser", action="store_true", help="make the user a superuser")
    p = command(user_commands, "list", cmd_users_list, "list the users")
    p.add_argument("--like", metavar="TEXT", help="only user ids containing TEXT")
    p = command(user_commands, "delete", cmd_users_delete, "delete a user")
    p.add_argument("user_id", metavar="USER", help="the user id")

    rules = commands.add_parser("rules", help="rules of the rule engine (list, metrics)",
                                description="Rules of the rule engine.", epilog=EXIT_HELP, formatter_class=formatter)
    _connection_options(rules, leaf=True)
    rules.set_defaults(_ctl_help=rules)
    rule_commands = rules.add_subparsers(dest="ctl_rules_command", metavar="COMMAND")
    command(rule_commands, "list", cmd_rules_list, "list the rules with their metrics")
    p = command(rule_commands, "metrics", cmd_rules_metrics, "the metrics of one rule, or of every rule")
    p.add_argument("rule_id", metavar="ID", nargs="?", help="the rule id (default: every rule)")
    return ctl


# --- where the API is, and who we are -------------------------------------------------------------


def _dashboard_settings(config: str | None) -> Any:
    """The config's `dashboard` settings. A config that is wrong elsewhere still gives them
    (so `ctl reload` can show the gateway's own answer about a broken file)."""
    from engine.config import ConfigError, load_settings
    from engine.config.loader import Sources, build, read_sources
    from engine.config.schema import DashboardSettings

    try:
        return load_settings(config).dashboard
    except ConfigError as exc:
        errors = exc.errors
    try:
        sources = read_sources(config, os.environ, overlay=True)
        tree = sources.tree.get("dashboard", {})
        return build(Sources(tree if isinstance(tree, dict) else {}, sources.file, {}), DashboardSettings)
    except ConfigError:
        pass
    raise CtlError(EXIT_USAGE, "cannot read the config for the admin API's address and credentials:\n  "
                   + "\n  ".join(errors) + "\n(give --url, --user and --password instead)")


def _api_url(url: str) -> str:
    url = url.strip()
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise CtlError(EXIT_USAGE, f"--url {url}: expected http(s)://host:port[/api/v5]")
    path = parts.path.rstrip("/")
    if not path:
        path = API_PATH
    return f"{parts.scheme}://{parts.netloc}{path}"


def _url_from_bind(dashboard: Any) -> str:
    bind = dashboard.listeners.http.bind
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(bind.host, bind.host)
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{bind.port}{API_PATH}"


def _target(args: argparse.Namespace) -> tuple[str, tuple[str, str], str | None]:
    """The API's base URL, the credentials, and a note on why it may be unreachable."""
    url = getattr(args, "url", None)
    user = getattr(args, "user", None) or os.environ.get("OCPPGW_CTL_USER") or None
    password = getattr(args, "password", None)
    if password is None:
        password = os.environ.get("OCPPGW_CTL_PASSWORD")
    note = None
    if url is None or user is None or password is None:
        dashboard = _dashboard_settings(getattr(args, "config", None))
        if url is None:
            url = _url_from_bind(dashboard)
            if not dashboard.listeners.http.enable:
                note = "the config has dashboard.listeners.http.enable = false"
        user = dashboard.default_username if user is None else user
        password = dashboard.default_password if password is None else password
    return _api_url(url), (user, password), note


# --- talking to the API ---------------------------------------------------------------------


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


# --- output -----------------------------------------------------------------------------------------


def _out(text: str = "") -> None:
    print(text)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return orjson.dumps(value).decode()
    return str(value)


def _table(rows: Iterable[dict[str, Any]], columns: list[tuple[str, Callable[[dict[str, Any]], Any]]]) -> None:
    cells = [[header for header, _ in columns]]
    cells += [[_cell(get(row)) for _, get in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    for line in cells:
        _out("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())


def _key_values(pairs: Iterable[tuple[str, Any]], indent: str = "") -> None:
    pairs = list(pairs)
    width = max((len(k) for k, _ in pairs), default=0) + 1
    for key, value in pairs:
        _out(f"{indent}{(key + ':').ljust(width)} {_cell(value)}".rstrip())


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


# --- the commands -------------------------------------------------------------------------------


def cmd_status(api: Api, args: argparse.Namespace) -> int:
    response = api.request("GET", "/status")
    if args.json:
        _out(response.text)
        return EXIT_OK
    status = _json(response)
    gateway = _json(api.request("GET", OCPP))
    _key_values([*status.items(),
                 ("gateway", f"{gateway.get('name', 'ocpp')} {gateway.get('status')}"),
                 ("connections", gateway.get("current_connections"))])
    listeners = gateway.get("listeners") or []
    if listeners:
        _out("listeners:")
        cells = [[li.get("id"), li.get("bind"), "running" if li.get("running") else "stopped",
                  _plural(li.get("current_connections", 0), "connection")] for li in listeners]
        widths = [max(len(_cell(c[i])) for c in cells) for i in range(4)]
        for c in cells:
            _out("  " + "  ".join(_cell(v).ljust(w) for v, w in zip(c, widths, strict=True)).rstrip())
    return EXIT_OK


def cmd_reload(api: Api, args: argparse.Namespace) -> int:
    response = api.request("POST", "/configs/reload")
    if args.json:
        _out(response.text)
        return EXIT_OK
    report = _json(response)
    changed = report.get("changed") or []
    _out("reloaded")
    _out(f"changed: {', '.join(changed) if changed else 'nothing'}")
    if report.get("needs_restart"):
        _out(f"needs a restart to apply: {', '.join(report['needs_restart'])}")
    return EXIT_OK


CLIENT_COLUMNS: list[tuple[str, Callable[[dict[str, Any]], Any]]] = [
    ("CLIENTID", lambda c: c.get("clientid")),
    ("PROTO", lambda c: c.get("proto_ver")),
    ("ADDRESS", lambda c: f"{c.get('ip_address')}:{c.get('port')}"),
    ("USERNAME", lambda c: c.get("username")),
    ("CONNECTED_AT", lambda c: c.get("connected_at")),
    ("KEEPALIVE", lambda c: c.get("keepalive")),
    ("MQUEUE", lambda c: c.get("mqueue_len")),
    ("RECV", lambda c: c.get("recv_cnt")),
    ("SEND", lambda c: c.get("send_cnt")),
]


def cmd_clients(api: Api, args: argparse.Namespace) -> int:
    body, text = api.get_all(f"{OCPP}/clients", {"like_clientid": args.like} if args.like else None)
    if args.json:
        _out(text)
        return EXIT_OK
    clients = body.get("data", [])
    if not clients:
        _out("no charge points connected" + (f" with {args.like!r} in their id" if args.like else ""))
        return EXIT_OK
    _table(clients, CLIENT_COLUMNS)
    return EXIT_OK


def _segment(text: str) -> str:
    return quote(text, safe="")


def cmd_client(api: Api, args: argparse.Namespace) -> int:
    response = api.request("GET", f"{OCPP}/clients/{_segment(args.cid)}")
    if args.json:
        _out(response.text)
        return EXIT_OK
    _key_values(_json(response).items())
    return EXIT_OK


def cmd_kick(api: Api, args: argparse.Namespace) -> int:
    api.request("DELETE", f"{OCPP}/clients/{_segment(args.cid)}")
    if not args.json:  # 204: the API has no JSON to show
        _out(f"kicked {args.cid}")
    return EXIT_OK


def _call_payload(args: argparse.Namespace) -> dict[str, Any]:
    try:
        payload = orjson.loads(args.payload)
    except orjson.JSONDecodeError as exc:
        raise CtlError(EXIT_USAGE, f"the payload is not JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise CtlError(EXIT_USAGE, "the payload must be a JSON object, e.g. '{\"type\": \"Soft\"}'")
    return payload


def cmd_call(api: Api, args: argparse.Namespace) -> int:
    payload = _call_payload(args)
    body: dict[str, Any] = {"action": args.action, "payload": payload}
    timeout = args.timeout
    if timeout is not None:
        if not (timeout > 0 and math.isfinite(timeout)):
            raise CtlError(EXIT_USAGE, "--timeout must be a number of seconds greater than 0")
        body["timeout"] = timeout
    wait = api.httpx.Timeout(REQUEST_TIMEOUT, read=None if timeout is None else timeout + CALL_GRACE)
    try:
        response = api.request("POST", f"{OCPP}/clients/{_segment(args.cid)}/call", json=body, timeout=wait)
    except ApiFailure as exc:
        if exc.status == 504:
            # the API's message says which: no answer within the timeout, or a disconnect
            within = f"{timeout:g}s" if timeout is not None else "the gateway's dnstream.awaiting_timeout"
            exc.message = exc.message or f"the charge point {args.cid} did not answer within {within}"
        raise
    answer = _json(response)
    if args.json:
        _out(response.text)
    if isinstance(answer, dict) and answer.get("MessageTypeId") == 4:
        details = answer.get("ErrorDetails")
        message = f"error: the charge point answered CALLERROR {answer.get('ErrorCode')}: {answer.get('ErrorDescription')}"
        if details:
            message += f"\ndetails: {_cell(details)}"
        raise CtlError(EXIT_API, message)
    if not args.json:
        result = answer.get("Payload", answer) if isinstance(answer, dict) else answer
        _out(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    return EXIT_OK


def _new_password(args: argparse.Namespace) -> str:
    if args.new_password is not None:
        password = args.new_password
    elif not sys.stdin.isatty():
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        try:
            password = getpass.getpass(f"password for {args.user_id}: ")
            if password and getpass.getpass("again: ") != password:
                raise CtlError(EXIT_USAGE, "the passwords differ")
        except EOFError:
            password = ""
    if not password:
        raise CtlError(EXIT_USAGE, "the password must not be empty (give --password, or it on stdin)")
    return password


def cmd_users_add(api: Api, args: argparse.Namespace) -> int:
    body = {"user_id": args.user_id, "password": _new_password(args), "is_superuser": args.superuser}
    response = api.request("POST", USERS, json=body)
    if args.json:
        _out(response.text)
        return EXIT_OK
    user = _json(response)
    _out(f"added {'superuser' if user.get('is_superuser') else 'user'} {user.get('user_id', args.user_id)}")
    return EXIT_OK


def cmd_users_list(api: Api, args: argparse.Namespace) -> int:
    body, text = api.get_all(USERS, {"like_user_id": args.like} if args.like else None)
    if args.json:
        _out(text)
        return EXIT_OK
    users = body.get("data", [])
    if not users:
        _out("no users" + (f" with {args.like!r} in their id" if args.like else ""))
        return EXIT_OK
    _table(users, [("USER_ID", lambda u: u.get("user_id")),
                   ("SUPERUSER", lambda u: "yes" if u.get("is_superuser") else "no")])
    return EXIT_OK


def cmd_users_delete(api: Api, args: argparse.Namespace) -> int:
    api.request("DELETE", f"{USERS}/{_segment(args.user_id)}")
    if not args.json:  # 204: the API has no JSON to show
        _out(f"deleted user {args.user_id}")
    return EXIT_OK


METRICS = ["matched", "passed", "failed", "failed.exception", "failed.no_result",
           "actions.total", "actions.success", "actions.failed"]


def _short(text: str, width: int = 60) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 3] + "..."


def cmd_rules_list(api: Api, args: argparse.Namespace) -> int:
    body, text = api.get_all("/rules")
    if args.json:
        _out(text)
        return EXIT_OK
    rules = body.get("data", [])
    if not rules:
        _out("no rules")
        return EXIT_OK
    _table(rules, [
        ("ID", lambda r: r.get("id")),
        ("ENABLE", lambda r: r.get("enable")),
        ("FROM", lambda r: ",".join(r.get("from") or []) or None),
        ("ACTIONS", lambda r: len(r.get("actions") or [])),
        ("MATCHED", lambda r: (r.get("metrics") or {}).get("matched")),
        ("PASSED", lambda r: (r.get("metrics") or {}).get("passed")),
        ("FAILED", lambda r: (r.get("metrics") or {}).get("failed")),
        ("SQL", lambda r: _short(r.get("sql", ""))),
    ])
    return EXIT_OK


def cmd_rules_metrics(api: Api, args: argparse.Namespace) -> int:
    if args.rule_id is not None:
        response = api.request("GET", f"/rules/{_segment(args.rule_id)}/metrics")
        if args.json:
            _out(response.text)
            return EXIT_OK
        body = _json(response)
        _key_values([("id", body.get("id")), *(body.get("metrics") or {}).items()])
        return EXIT_OK
    body, _ = api.get_all("/rules")
    every = [{"id": r.get("id"), "metrics": r.get("metrics") or {}} for r in body.get("data", [])]
    if args.json:  # one entry per rule, each as GET /rules/{id}/metrics answers
        _out(orjson.dumps(every).decode())
        return EXIT_OK
    if not every:
        _out("no rules")
        return EXIT_OK
    names = list(METRICS) + sorted({k for r in every for k in r["metrics"]} - set(METRICS))
    columns: list[tuple[str, Callable[[dict[str, Any]], Any]]] = [("ID", lambda r: r["id"])]
    columns += [(name.upper(), lambda r, name=name: r["metrics"].get(name)) for name in names]
    _table(every, columns)
    return EXIT_OK


# --- running a command -----------------------------------------------------------------------------


def _command_name(args: argparse.Namespace) -> str:
    parts = ["ctl", args.ctl_command or ""]
    parts.append(getattr(args, "ctl_users_command", None) or getattr(args, "ctl_rules_command", None) or "")
    return " ".join(p for p in parts if p)


def run(args: argparse.Namespace) -> int:
    func = getattr(args, "ctl_func", None)
    if func is None:
        args._ctl_help.print_help(sys.stderr)
        return EXIT_USAGE
    api = None
    try:
        base, auth, note = _target(args)
        api = Api(base, auth, note)
        return func(api, args)
    except CtlError as exc:
        if exc.code == EXIT_USAGE:
            print(f"ocpp-gateway {_command_name(args)}: {exc.message}", file=sys.stderr)
        elif exc.message.startswith("error: "):
            print(exc.message, file=sys.stderr)
        else:
            print(f"error: {exc.message}", file=sys.stderr)
        return exc.code
    except ApiFailure as exc:
        if getattr(args, "json", False) and exc.text:
            _out(exc.text)
        print(f"error: {exc.code}: {exc.message}", file=sys.stderr)
        return EXIT_API
    except KeyboardInterrupt:
        return 130
    finally:
        if api is not None:
            api.close()
