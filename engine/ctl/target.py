"""Where the admin API is and who we are: --url/--user/--password, the
OCPPGW_CTL_* environment, then the config's dashboard settings."""

from __future__ import annotations

import argparse
import os
from typing import Any
from urllib.parse import urlsplit

from engine.ctl.api import API_PATH, EXIT_USAGE, CtlError


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
