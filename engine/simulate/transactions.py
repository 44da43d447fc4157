"""A transaction's messages as OCPP 1.6 and 2.0.1/2.1 each send them: its start, its samples, its end.

1.6: Authorize with an idTag, StartTransaction (the CSMS gives the
transaction id), MeterValues, StopTransaction. 2.x: Authorize with an
idToken, TransactionEvent Started (the charger makes the id), Updated and
Ended, with a seqNo each; MeterValues only outside a transaction. The
payloads are `messages`'s; this module reads them off a connector's state,
so that the session itself (`sessions`, which also starts the transaction
each version's way) is the same for every version.
"""

from __future__ import annotations

from typing import Any

from engine.simulate import messages as m
from engine.simulate.model import Connector, Tx

Message = tuple[str, dict[str, Any]]  # (action, payload)


def authorized(version: str, answer: dict[str, Any]) -> bool:
    """Whether an Authorize answer accepts the tag."""
    info = answer.get("idTagInfo" if m.is_v16(version) else "idTokenInfo") or {}
    return info.get("status") == "Accepted"


def meter(version: str, c: Connector, tx: Tx | None, context: str, trigger: str) -> Message:
    """A sample of `c`'s register and power; in 2.x, within a transaction, a TransactionEvent Updated."""
    ts = m.timestamp()
    sample = m.meter_value(version, ts, c.register, c.effective_power(), context)
    if m.is_v16(version):
        return "MeterValues", m.meter_values(version, c.id, sample, tx.id if tx else None)
    if tx is None:
        return "MeterValues", m.meter_values(version, c.id, sample)
    return "TransactionEvent", m.transaction_event("Updated", ts, trigger, tx.next_seq(), tx.id,
                                                   charging_state="Charging" if c.charging else "SuspendedEVSE",
                                                   sample=sample)


def stop(version: str, c: Connector, tx: Tx, reason: str, offline: bool = False) -> Message:
    """The end of `tx` for a 1.6 stop reason (mapped to 2.x's stoppedReason and triggerReason)."""
    ts = m.timestamp()
    sample = m.meter_value(version, ts, c.register, 0, "Transaction.End")
    if m.is_v16(version):
        return "StopTransaction", m.stop_transaction(tx.id, int(c.register), ts, reason, tx.tag, sample)
    stopped, trigger = m.V2_STOP.get(reason, ("Other", "AbnormalCondition"))
    return "TransactionEvent", m.transaction_event(
        "Ended", ts, trigger, tx.next_seq(), tx.id, charging_state="EVConnected", stopped_reason=stopped,
        sample=sample, tag=tx.tag if trigger == "StopAuthorized" else None, offline=offline)
