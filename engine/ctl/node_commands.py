"""`ctl status` and `ctl reload`: the node, its gateway and its config."""

from __future__ import annotations

import argparse

from engine.ctl.api import EXIT_OK, OCPP, Api, _json
from engine.ctl.output import _cell, _key_values, _out, _plural


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
