"""engine/durable/queue.py: order across restarts, acks, group commit, bounds, lock, damage, SIGKILL."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from engine.durable import DROP_NEWEST, DurableError, DurableQueue, queue_path

ROOT = Path(__file__).resolve().parent.parent


async def test_order_survives_a_restart(tmp_path):
    path = queue_path(tmp_path, "node-a", "mqtt_bridge")
    q = DurableQueue(path)
    seqs = await asyncio.gather(*(q.append(f"m{i}".encode()) for i in range(50)))
    assert seqs == list(range(1, 51))
    await q.close()

    again = DurableQueue(path)
    assert again.items == 50 and again.bytes == sum(len(f"m{i}") for i in range(50))
    assert [data for _, data in again.load()] == [f"m{i}".encode() for i in range(50)]
    # new items follow the kept ones, numbers never reused
    assert await again.append(b"next") == 51
    assert [seq for seq, _ in await again.read(after=49)] == [50, 51]
    await again.close()


async def test_acks_in_any_order_and_ack_upto(tmp_path):
    path = tmp_path / "q.db"
    q = DurableQueue(path)
    for i in range(10):
        await q.append(bytes([i]))
    q.ack(7)
    q.ack(2)
    q.ack(2)  # twice: ignored
    q.ack(99)  # unknown: ignored
    q.ack_upto(4)
    assert q.items == 5 and q.bytes == 5
    await q.close()
    again = DurableQueue(path)
    assert [seq for seq, _ in again.load()] == [5, 6, 8, 9, 10]
    await again.close()


async def test_appends_of_one_loop_turn_share_a_commit(tmp_path):
    q = DurableQueue(tmp_path / "q.db")
    futures = [q.append(b"x" * 100) for _ in range(1000)]
    await asyncio.gather(*futures)
    assert q.written == 1000
    assert q.commits == 1
    # appends made while a commit runs go together into the next ones
    futures = []
    for _ in range(20):
        futures += [q.append(b"y") for _ in range(50)]
        await asyncio.sleep(0)
    await asyncio.gather(*futures)
    assert q.written == 2000
    assert q.commits <= 1 + 20  # at most one commit per loop turn
    await q.close()


async def test_overflow_drops_the_oldest(tmp_path):
    path = tmp_path / "q.db"
    q = DurableQueue(path, max_bytes=10)
    for i in range(5):
        await q.append(b"%d-" % i + b"ab")  # 4 bytes each
    assert q.dropped == {"queue_full": 3}
    assert q.items == 2 and q.bytes == 8
    await q.close()
    again = DurableQueue(path, max_bytes=10)
    assert [data for _, data in again.load()] == [b"3-ab", b"4-ab"]
    await again.close()


async def test_overflow_drops_the_newest(tmp_path):
    path = tmp_path / "q.db"
    q = DurableQueue(path, max_items=2, overflow=DROP_NEWEST)
    results = [await q.append(b"%d" % i) for i in range(4)]
    assert results == [1, 2, None, None]
    assert q.dropped == {"queue_full": 2}
    await q.close()
    again = DurableQueue(path)
    assert [data for _, data in again.load()] == [b"0", b"1"]
    await again.close()


async def test_dropping_an_unwritten_item_completes_its_future_with_none(tmp_path):
    q = DurableQueue(tmp_path / "q.db", max_items=1)
    first = q.append(b"a")
    second = q.append(b"b")  # same loop turn: "a" is not on disk yet, dropped before written
    assert await first is None and await second == 2
    assert q.items == 1
    await q.close()


async def test_a_second_process_is_refused(tmp_path):
    path = tmp_path / "buffers" / "n1" / "mqtt_bridge.db"
    q = DurableQueue(path)
    code = f"from engine.durable import DurableQueue; DurableQueue({str(path)!r})"
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert run.returncode != 0
    assert f"{path}: the queue is in use by another process (pid {os.getpid()})" in run.stderr
    await q.close()
    # released on close: the next opener gets it
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stderr


def test_a_damaged_file_is_refused_naming_it(tmp_path):
    path = tmp_path / "q.db"
    path.write_bytes(b"this is not an SQLite file at all" * 200)
    with pytest.raises(DurableError) as caught:
        DurableQueue(path)
    assert str(caught.value).startswith(f"{path}: not a readable queue file")
    assert "move it aside" in str(caught.value)
    # the lock was released with the refusal
    path.unlink()
    DurableQueue(path)


CHILD = textwrap.dedent("""
    import asyncio, sys
    from engine.durable import DurableQueue

    async def main():
        q = DurableQueue(sys.argv[1], sync="full")
        async def one(i):
            seq = await q.append(b"item-%d" % i)
            print(seq, i, flush=True)
        i = 0
        while True:
            await asyncio.gather(*(one(i + k) for k in range(37)))
            i += 37

    asyncio.run(main())
""")


def test_sigkill_in_the_middle_of_appends_loses_nothing_completed(tmp_path):
    path = tmp_path / "q.db"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    confirmed: dict[int, int] = {}
    try:
        while len(confirmed) < 3000:
            line = child.stdout.readline()
            assert line, "the child stopped early"
            seq, i = map(int, line.split())
            confirmed[seq] = i
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    # lines printed after our last read were confirmed too
    assert child.stdout is not None
    for line in child.stdout.read().splitlines():
        if len(line.split()) == 2:
            seq, i = map(int, line.split())
            confirmed[seq] = i
    q = DurableQueue(path)
    kept = dict(q.load())
    missing = [seq for seq in confirmed if kept.get(seq) != b"item-%d" % confirmed[seq]]
    assert missing == []
    assert list(kept) == sorted(kept)


@pytest.mark.parametrize(("sync", "level"), [("full", 2), ("normal", 1)])
async def test_the_sync_policy_is_sqlites(tmp_path, sync, level):
    q = DurableQueue(tmp_path / "q.db", sync=sync)
    assert q._db.execute("PRAGMA synchronous").fetchone()[0] == level
    assert q._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    await q.close()


def test_the_keys_load(tmp_path):
    from engine.config import ConfigError
    from engine.config.loader import load_settings

    conf = tmp_path / "gateway.conf"
    conf.write_text("node.durable_sync = normal\nmqtt.buffer { mode = disk, max_buffer_bytes = 1MB, "
                    "overflow = drop_newest }\n")
    s = load_settings(conf, {})
    assert s.node.durable_sync == "normal"
    assert (s.mqtt.buffer.mode, s.mqtt.buffer.max_buffer_bytes, s.mqtt.buffer.overflow) == ("disk", 1024 * 1024,
                                                                                          "drop_newest")
    defaults = load_settings(None, {})
    assert defaults.node.durable_sync == "full" and defaults.mqtt.buffer.mode == "memory"
    conf.write_text("mqtt.buffer.mode = tape\n")
    with pytest.raises(ConfigError, match="mqtt.buffer.mode"):
        load_settings(conf, {})
