"""A listener's `access_rules` (EMQX's): which client addresses may connect at all.

Each rule is `allow` or `deny`, then `all` or addresses and networks separated by commas:
`"allow 10.0.0.0/8"`, `"deny 192.168.1.7, 192.168.2.0/24"`, `"deny all"`. The first rule that
matches the client's address decides; an address no rule matches is allowed (EMQX's default).
The address is the TCP peer's, or the PROXY protocol header's source with `proxy_protocol = true`.
"""

from __future__ import annotations

import ipaddress
from typing import NamedTuple

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Rule(NamedTuple):
    allow: bool
    networks: tuple[Network, ...] | None  # None: all


def parse_rule(text: str) -> Rule:
    """One rule, or ValueError saying what is wrong with it."""
    verb, _, rest = text.strip().partition(" ")
    if verb not in ("allow", "deny"):
        raise ValueError('a rule starts with "allow" or "deny"')
    rest = rest.strip()
    if not rest:
        raise ValueError('a rule names "all" or addresses after its verb')
    if rest == "all":
        return Rule(verb == "allow", None)
    networks = []
    for part in rest.split(","):
        try:
            networks.append(ipaddress.ip_network(part.strip(), strict=False))
        except ValueError:
            raise ValueError(f'{part.strip()!r} is not "all", an address or a network ("10.0.0.0/8")') from None
    return Rule(verb == "allow", tuple(networks))


class AccessRules:
    """The parsed rules of one listener (the config check has refused bad ones already)."""

    __slots__ = ("rules",)

    def __init__(self, texts: list[str]) -> None:
        rules = []
        for text in texts:
            try:
                rules.append(parse_rule(text))
            except ValueError:
                pass
        self.rules = tuple(rules)

    def allows(self, host: str) -> bool:
        if not self.rules:
            return True
        try:
            addr: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(host.partition("%")[0])
        except ValueError:
            addr = None  # type: ignore[assignment]  # not an IP address (a Unix socket): only "all" matches
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        for rule in self.rules:
            if rule.networks is None or (addr is not None and any(addr in net for net in rule.networks)):
                return rule.allow
        return True
