"""Running a ctl command: connect, call it, and turn its failure into an exit code
and a line on stderr."""

from __future__ import annotations

import argparse
import sys

from engine.ctl.api import EXIT_API, EXIT_USAGE, Api, ApiFailure, CtlError
from engine.ctl.output import _out
from engine.ctl.target import _target


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
