"""`ctl users add|set-profile|list|delete`: users of the built-in authenticator."""

from __future__ import annotations

import argparse
import getpass
import sys

from engine.ctl.api import EXIT_OK, EXIT_USAGE, OCPP, Api, CtlError, _json, _segment
from engine.ctl.output import _out, _table

USERS = f"{OCPP}/authentication/users"


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
    body: dict[str, object] = {"user_id": args.user_id, "is_superuser": args.superuser}
    profile = getattr(args, "security_profile", None)
    if profile is not None:
        body["security_profile"] = profile
    if profile != 3 or args.new_password is not None:  # profile 3 without --password: the certificate is the login
        body["password"] = _new_password(args)
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
    columns = [("USER_ID", lambda u: u.get("user_id")),
               ("SUPERUSER", lambda u: "yes" if u.get("is_superuser") else "no")]
    if any(u.get("security_profile") for u in users):  # the column only once somebody has one
        columns.append(("PROFILE", lambda u: str(u.get("security_profile") or "-")))
    _table(users, columns)
    return EXIT_OK


def cmd_users_set_profile(api: Api, args: argparse.Namespace) -> int:
    profile = None if args.profile == "none" else int(args.profile)
    response = api.request("PUT", f"{USERS}/{_segment(args.user_id)}", json={"security_profile": profile})
    if args.json:
        _out(response.text)
        return EXIT_OK
    _out(f"user {args.user_id}: security profile {profile or 'none'}")
    return EXIT_OK


def cmd_users_delete(api: Api, args: argparse.Namespace) -> int:
    api.request("DELETE", f"{USERS}/{_segment(args.user_id)}")
    if not args.json:  # 204: the API has no JSON to show
        _out(f"deleted user {args.user_id}")
    return EXIT_OK
