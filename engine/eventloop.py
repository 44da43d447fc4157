"""The event loop the commands run on: uvloop where it is installed, asyncio's own otherwise."""

from __future__ import annotations

import asyncio


def runner() -> asyncio.Runner:
    try:
        import uvloop
    except ImportError:
        return asyncio.Runner()
    return asyncio.Runner(loop_factory=uvloop.new_event_loop)
