"""engine/gctune.py: the freezer keeps connections out of the collector's full passes, and gives back
the cycles of closed connections once enough of them have piled up."""

from __future__ import annotations

import asyncio
import gc
import weakref

import httpx
import pytest
import websockets

from engine.gctune import Freezer
from tests.gateway import GatewayProcess
from tests.servers import free_port


class Node:
    """Something with a reference cycle, as a closed connection's objects are."""

    def __init__(self) -> None:
        self.me = self


@pytest.fixture
def thawed():
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_freezes_as_charge_points_connect_and_thaws_once_closed_ones_pile_up(thawed) -> None:
    counts = {"accepted": 0, "connected": 0}
    freezer = Freezer(lambda: (counts["accepted"], counts["connected"]), grow=500, thaw_min=1000)
    freezer.check()
    assert (freezer.freezes, freezer.thaws) == (0, 0) and gc.get_freeze_count() == 0

    counts.update(accepted=499, connected=499)
    freezer.check()
    assert freezer.freezes == 0  # not yet 500 new ones
    counts.update(accepted=4000, connected=4000)
    freezer.check()
    assert freezer.freezes == 1 and gc.get_freeze_count() > 0
    freezer.check()
    assert freezer.freezes == 1  # nothing new since

    # a closed connection's cycle frozen with the rest is kept...
    doomed = Node()
    ref = weakref.ref(doomed)
    counts.update(accepted=4600, connected=4600)
    freezer.check()  # frozen along with it
    assert freezer.freezes == 2
    del doomed
    gc.collect()
    assert ref() is not None
    # ...until closed connections reach a quarter of those connected (at least thaw_min)
    counts.update(accepted=4600, connected=3700)  # 900 closed
    freezer.check()
    assert freezer.thaws == 0 and ref() is not None
    counts.update(accepted=4600, connected=3600)  # 1,000 closed, over max(1000, 900)
    freezer.check()
    assert freezer.thaws == 1 and ref() is None
    assert gc.get_freeze_count() > 0  # everything alive is frozen again
    # the next thaw counts from this one
    counts.update(accepted=4700, connected=3300)
    freezer.check()
    assert freezer.thaws == 1


async def test_start_freezes_what_starting_built_and_stop_unfreezes(thawed) -> None:
    freezer = Freezer(lambda: (0, 0))
    freezer.start()
    assert gc.get_freeze_count() > 0
    freezer.stop()
    assert gc.get_freeze_count() == 0


async def test_the_running_gateway_freezes_once_charge_points_connect(tmp_path) -> None:
    """`ocpp-gateway run` runs the freezer: what starting built is frozen, and more once 600 charge
    points have connected."""
    admin = free_port()
    gw = GatewayProcess(tmp_path, env={"OCPPGW_DASHBOARD__LISTENERS__HTTP__BIND": f"127.0.0.1:{admin}"}).start()
    try:
        async def frozen() -> float:
            async with httpx.AsyncClient(auth=("admin", "public")) as client:
                text = (await client.get(f"http://127.0.0.1:{admin}/api/v5/prometheus/stats")).text
            return next(float(line.split()[-1]) for line in text.splitlines()
                        if line.startswith("ocppgw_gc_frozen_objects "))

        assert await frozen() > 0  # what starting built
        before = await frozen()
        url = f"ws://127.0.0.1:{gw.ocpp_port}/ocpp/"
        conns = [await websockets.connect(url + f"F{i}", subprotocols=["ocpp1.6"]) for i in range(600)]
        for _ in range(50):
            if await frozen() > before:
                break
            await asyncio.sleep(0.1)
        assert await frozen() > before
        for ws in conns:
            await ws.close()
    finally:
        gw.stop()
    assert "Traceback" not in gw.log
