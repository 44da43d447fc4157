"""How a simulated charge point answers the CSMS's CALLs, as a real charger would: one answer table per version.

`answer(cp, action, payload)` looks the action up in the table of the charge
point's version (`ANSWERS`: action → handler, from `v16` and `v2`) and
returns the CALLRESULT payload and, optionally, what to do once it has been
sent (send the triggered message, start the remote session, reboot). An
action the charger does not support earns a CALLERROR: NotSupported if the
version defines it, NotImplemented if not. A handler takes the charge
point's state (`state.Charger`) and the request's payload.

Configuration (`config`): one store of 1.6 keys; 2.0.1 and 2.1 reach the same
values through device-model variables. What both versions share is in
`common`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from engine.simulate.calls import Answer, Refuse
from engine.simulate.handlers.config import CONFIG_16, VARIABLES_2, default_config
from engine.simulate.handlers.v2 import V2
from engine.simulate.handlers.v16 import V16
from engine.simulate.options import PROTOCOLS
from engine.simulate.state import Charger

__all__ = ["ANSWERS", "CONFIG_16", "VARIABLES_2", "Answer", "Refuse", "answer", "default_config"]

Handler = Callable[[Charger, dict[str, Any]], Answer]

# OCPP version → its answer table
ANSWERS: dict[str, dict[str, Handler]] = {proto: V16 if proto == "ocpp1.6" else V2 for proto in PROTOCOLS}


def answer(cp: Charger, action: str, payload: dict[str, Any]) -> Answer:
    handler = ANSWERS[cp.version].get(action)
    if handler is None:
        if action in _known_actions(cp.version):
            raise Refuse("NotSupported", f"{action} is not supported by this charge point")
        raise Refuse("NotImplemented", f"unknown action {action!r}")
    return handler(cp, payload)


@functools.cache
def _known_actions(version: str) -> frozenset[str]:
    """Actions the version defines (a request schema ships for them)."""
    from engine.ocpp.schemas import DEFAULT_SCHEMA_DIR

    names = set()
    for path in (DEFAULT_SCHEMA_DIR / version).glob("*.json"):
        stem = path.stem
        if stem.endswith("Response"):
            continue
        names.add(stem.removesuffix("Request"))
    return frozenset(names)
