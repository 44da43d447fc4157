"""What may go to a charge point: a downstream message's shape, and a frame's encoding and size.

The session hands every downstream message through here before it takes the in-flight slot, so a
message that cannot go out is dropped with a reason and never blocks the commands behind it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine.ocpp import frames


class Unsendable(Exception):
    """A downstream frame that cannot go to the charge point: the drop reason and why."""

    def __init__(self, reason: str, description: str) -> None:
        super().__init__(description)
        self.reason = reason
        self.description = description


def frame_text(encode: Callable[[], str], max_frame_size: int) -> str:
    """The frame `encode` makes, or `Unsendable`: what JSON cannot carry (`invalid_payload`), or
    what is over the listener's `websocket.max_frame_size` (`frame_too_large`: the charge point
    would refuse it, most likely by closing the connection). 0: no size limit."""
    try:
        text = encode()
    except frames.EncodeError as exc:
        raise Unsendable("invalid_payload", f"the frame {exc}") from None
    if max_frame_size and len(text) * 4 > max_frame_size:  # a character is at most 4 bytes: most stop here
        size = len(text.encode())
        if size > max_frame_size:
            raise Unsendable("frame_too_large", f"the frame is {size} bytes, over the listener's "
                             f"websocket.max_frame_size ({max_frame_size})")
    return text


def check_downstream(body: Any) -> str | None:
    """What is wrong with a downstream message's shape, or None."""
    if not isinstance(body, dict):
        return "the payload must be a JSON object"
    type_id = body.get("MessageTypeId")
    if type(type_id) is not int or type_id not in (frames.CALL, frames.CALLRESULT, frames.CALLERROR):
        return "MessageTypeId must be 2, 3 or 4 (an integer)"
    unique_id = body.get("UniqueId")
    if unique_id is not None and (not isinstance(unique_id, str) or not 0 < len(unique_id) <= frames.MAX_UNIQUE_ID):
        return f"UniqueId must be a string of 1 to {frames.MAX_UNIQUE_ID} characters"
    if "Payload" in body and not isinstance(body["Payload"], dict):
        return "Payload must be a JSON object"
    if type_id == frames.CALL:
        if not isinstance(body.get("Action"), str) or not body["Action"]:
            return "a CALL needs an Action string"
        return None
    if unique_id is None:
        return "a reply needs the UniqueId of the CALL it answers"
    if type_id == frames.CALLERROR:
        if not isinstance(body.get("ErrorCode"), str):
            return "a CALLERROR needs an ErrorCode string"
        if not isinstance(body.get("ErrorDescription", ""), str):
            return "ErrorDescription must be a string"
        if not isinstance(body.get("ErrorDetails", {}), dict):
            return "ErrorDetails must be a JSON object"
    return None
