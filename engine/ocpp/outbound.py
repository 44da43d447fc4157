"""What may go to a charge point: a frame's encoding and size (its envelope's shape: `envelope.check_downstream`).

The session hands every downstream message through here before it takes the in-flight slot, so a
message that cannot go out is dropped with a reason and never blocks the commands behind it.
"""

from __future__ import annotations

from collections.abc import Callable

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

