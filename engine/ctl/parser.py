"""The argparse wiring of `ocpp-gateway ctl`: every command, its options and help."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from engine.ctl.client_commands import cmd_call, cmd_client, cmd_clients, cmd_kick
from engine.ctl.node_commands import cmd_reload, cmd_status
from engine.ctl.rule_commands import cmd_rules_list, cmd_rules_metrics
from engine.ctl.user_commands import cmd_users_add, cmd_users_delete, cmd_users_list, cmd_users_set_profile

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

    users = commands.add_parser("users", help="users of the built-in authenticator (add, set-profile, list, delete)",
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
    p.add_argument("--security-profile", dest="security_profile", type=int, choices=(1, 2, 3), metavar="N",
                   help="the OCPP security profile (1, 2, 3) the charge point must connect with; with 3 and "
                        "no --password the user has no password: its client certificate is its login")
    p = command(user_commands, "set-profile", cmd_users_set_profile, "set or clear a user's security profile",
                "Set the OCPP security profile (1, 2, 3) a user's charge point must connect with, or clear "
                "it (none).")
    p.add_argument("user_id", metavar="USER", help="the user id")
    p.add_argument("profile", choices=("1", "2", "3", "none"), help="1, 2, 3 or none")
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
