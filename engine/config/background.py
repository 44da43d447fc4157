"""Work that must not run on the event loop (parsing HOCON, building settings) in a worker process.

Parsing HOCON is several milliseconds of pure Python (pyhocon on pyparsing;
seconds for a large body), enough to spoil the charge points' latency once a
second if the gateway is reloaded that often. It runs in one worker process
at the lowest priority (started on first use, kept), so it gets only the CPU
time the gateway does not want; if that process cannot run, in a thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import concurrent.futures.process
import multiprocessing
import os
from collections.abc import Callable
from typing import Any

from engine.children import die_with_parent

_pool: concurrent.futures.ProcessPoolExecutor | None = None


def _background_worker_init() -> None:
    die_with_parent()
    os.nice(19)  # parsing waits for the CPU the gateway leaves idle


async def in_background(fn: Callable[..., Any], *args: Any) -> Any:
    """`fn(*args)` in the worker process (`fn` is module-level: it is pickled by name); what `fn`
    raises is raised here. If the worker cannot run, in a thread."""
    global _pool
    loop = asyncio.get_running_loop()
    try:
        if _pool is None:
            _pool = concurrent.futures.ProcessPoolExecutor(
                1, mp_context=multiprocessing.get_context("spawn"), initializer=_background_worker_init)
        future = loop.run_in_executor(_pool, fn, *args)
    except (concurrent.futures.process.BrokenProcessPool, OSError, RuntimeError):
        _pool = None
        return await asyncio.to_thread(fn, *args)
    try:
        return await future
    except concurrent.futures.process.BrokenProcessPool:
        _pool = None
        return await asyncio.to_thread(fn, *args)


def stop_background_loader() -> None:
    """End the worker process (node shutdown)."""
    global _pool
    if _pool is not None:
        _pool.shutdown(wait=False, cancel_futures=True)
        _pool = None


