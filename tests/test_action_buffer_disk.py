"""An action's buffer on disk (resource_opts.buffer_mode), in process: a real durable queue file,
a connector that is down until the test brings it up, a target that records what it got."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from connectors import action_store
from connectors.resource import BufferedAction, Connector, SendError
from engine.bus import Message
from engine.config.schema import ResourceOpts, RuleSettings
from engine.config.types import Duration, Size
from rules.compiler import compile_sql
from rules.runtime import RunningRule
from tests.ocpp_support import eventually

pytestmark = pytest.mark.timeout(60)


class Target:
    """A connector (down until `up()`) and the send function of an action delivering to it."""

    def __init__(self) -> None:
        self.connector = Connector("t")
        self.got: list[Any] = []
        self.refuse = False

    def up(self) -> None:
        self.connector.status = "connected"
        self.connector._up.set()

    async def send(self, batch: list[Any]) -> None:
        if self.connector.status != "connected":
            raise SendError("down", retriable=True, connection=True)
        if self.refuse:
            raise SendError("refused", retriable=False)
        self.got.extend(batch)


def make_action(tmp_path: Path, target: Target, **opts: Any) -> BufferedAction:
    action = BufferedAction("sqlite", "rows", target.connector, ResourceOpts(**opts),
                            render=lambda out: [out["n"], out.get("text", "")], send=target.send)
    action.open_disk(tmp_path / "action_sqlite_rows.db", tmp_path / "action_sqlite_rows.spill.db", "full")
    return action


def rows_in(path: Path) -> list[Any]:
    """What the file holds, read beside the running queue (WAL)."""
    db = sqlite3.connect(path)
    try:
        return [action_store.decode(raw)[0] for (raw,) in db.execute("SELECT data FROM items ORDER BY seq")]
    finally:
        db.close()


def balanced(action: BufferedAction) -> bool:
    m = action.metrics
    return m.matched == m.success + m.failed + m.dropped + m.inflight + m.queuing


async def crash(action: BufferedAction) -> None:
    """The node dies: nothing more is acknowledged, the worker stops, the file is closed as it is."""
    if action._worker:
        action._worker.cancel()
    for store in (action.store, action.spill):
        if store is not None:
            store.users = 1
            await action_store.release(store)


async def test_disk_writes_each_request_before_delivery_and_removes_it_once_answered(tmp_path):
    target = Target()
    action = make_action(tmp_path, target, buffer_mode="disk")
    await action.start()
    future = action.run({"n": 1})
    assert future is not None and not future.done()  # the rule waits for this
    await future
    assert rows_in(tmp_path / "action_sqlite_rows.db") == [[1, ""]]  # on disk, target down
    assert target.got == []
    target.up()
    await eventually(lambda: target.got == [[1, ""]])
    await action.store.queue.flush()
    assert rows_in(tmp_path / "action_sqlite_rows.db") == []
    assert action.disk_items == 0 and balanced(action)
    await action.stop()


async def test_disk_after_a_crash_delivers_what_was_not_answered_first_in_order(tmp_path):
    target = Target()
    action = make_action(tmp_path, target, buffer_mode="disk")
    await action.start()
    await asyncio.gather(*[action.run({"n": i}) for i in range(5)])
    await crash(action)

    again = Target()
    revived = make_action(tmp_path, again, buffer_mode="disk")
    m = revived.metrics
    assert (revived.restored, m.matched, m.queuing) == (5, 5, 5) and balanced(revived)
    await revived.start()
    revived.run({"n": 5})
    again.up()
    await eventually(lambda: len(again.got) == 6)
    assert [row[0] for row in again.got] == [0, 1, 2, 3, 4, 5]
    assert (revived.redelivered, m.success) == (5, 6) and balanced(revived)
    await revived.stop()
    assert rows_in(tmp_path / "action_sqlite_rows.db") == []


async def test_disk_a_final_failure_is_removed_and_counted_failed(tmp_path):
    target = Target()
    target.refuse = True
    target.up()
    action = make_action(tmp_path, target, buffer_mode="disk")
    await action.start()
    await action.run({"n": 1})
    await eventually(lambda: action.metrics.failed == 1)
    await action.store.queue.flush()
    assert rows_in(tmp_path / "action_sqlite_rows.db") == [] and balanced(action)
    await action.stop()


async def test_request_ttl_counts_from_the_enqueue_time_across_a_restart(tmp_path, monkeypatch):
    target = Target()
    action = make_action(tmp_path, target, buffer_mode="disk", request_ttl=Duration(60))
    await action.start()
    await action.run({"n": 1})
    await crash(action)
    later = time.time() + 61  # the node was down longer than request_ttl
    monkeypatch.setattr(action_store, "wall_clock", lambda: later)
    revived = make_action(tmp_path, Target(), buffer_mode="disk", request_ttl=Duration(60))
    await revived.start()
    await eventually(lambda: revived.metrics.dropped_expired == 1)
    assert balanced(revived)
    await revived.stop()
    assert rows_in(tmp_path / "action_sqlite_rows.db") == []


@pytest.mark.parametrize("overflow,kept", [("drop_oldest", [7, 8, 9]), ("drop_newest", [0, 1, 2])])
async def test_max_buffer_bytes_bounds_the_disk_buffer(tmp_path, overflow, kept):
    target = Target()
    # each request renders to 8 + 8 + 300 bytes: three fit
    action = make_action(tmp_path, target, buffer_mode="disk", max_buffer_bytes=Size(1000), buffer_overflow=overflow)
    for i in range(10):
        future = action.run({"n": i, "text": "x" * 300})
        if future is not None:
            with contextlib.suppress(action_store.DurableError):  # a dropped new one: its "write" fails
                await future
    await action.store.queue.flush()
    assert [row[0] for row in rows_in(tmp_path / "action_sqlite_rows.db")] == kept
    assert action.metrics.dropped_queue_full == 7 and balanced(action)
    await action.stop()


async def test_volatile_offload_spills_beyond_buffer_seg_bytes_and_delivers_in_order(tmp_path):
    target = Target()
    action = make_action(tmp_path, target, buffer_mode="volatile_offload", buffer_seg_bytes=Size(1000))
    await action.start()
    for i in range(50):
        action.run({"n": i, "text": "y" * 100})  # 116 bytes each: 8 fit in memory
    await action.spill.queue.flush()
    assert action.spill.items == 50 - 8  # 8 * 116 bytes in memory, the rest in the spill file
    assert action.memory_bytes == 8 * 116
    assert not (tmp_path / "action_sqlite_rows.db").exists()  # the kept file is for a stop
    target.up()
    await eventually(lambda: len(target.got) == 50)
    assert [row[0] for row in target.got] == list(range(50))
    await action.spill.queue.flush()
    assert action.spill.items == 0 and balanced(action)
    await action.stop()


async def test_volatile_offload_spill_is_not_kept_after_a_crash(tmp_path):
    target = Target()
    action = make_action(tmp_path, target, buffer_mode="volatile_offload", buffer_seg_bytes=Size(200))
    await action.start()
    for i in range(20):
        action.run({"n": i, "text": "z" * 100})
    await action.spill.queue.flush()
    assert action.spill.items > 0
    await crash(action)
    revived = make_action(tmp_path, Target(), buffer_mode="volatile_offload", buffer_seg_bytes=Size(200))
    assert revived.restored == 0 and revived.spill.items == 0 and revived.metrics.queuing == 0
    await revived.stop()


@pytest.mark.parametrize("mode", ["memory_only", "volatile_offload"])
async def test_a_stop_with_the_target_down_keeps_the_buffer_for_the_next_start(tmp_path, mode, caplog):
    target = Target()
    action = make_action(tmp_path, target, buffer_mode=mode, buffer_seg_bytes=Size(300))
    await action.start()
    for i in range(10):
        action.run({"n": i, "text": "w" * 100})
    await action.stop(flush_timeout=0)
    assert "action sqlite:rows stopped with 10 messages not delivered: kept in" in caplog.text
    assert [row[0] for row in rows_in(tmp_path / "action_sqlite_rows.db")] == list(range(10))

    again = Target()
    revived = make_action(tmp_path, again, buffer_mode="memory_only")
    await revived.start()
    again.up()
    await eventually(lambda: len(again.got) == 10)
    assert [row[0] for row in again.got] == list(range(10)) and revived.redelivered == 10
    await revived.stop()
    assert rows_in(tmp_path / "action_sqlite_rows.db") == []


async def test_memory_only_writes_nothing_while_running(tmp_path):
    action = make_action(tmp_path, Target(), buffer_mode="memory_only")
    assert action.run({"n": 1}) is None
    assert not (tmp_path / "action_sqlite_rows.db").exists() and action.store is None
    await action.stop(flush_timeout=0)  # kept now: the target is down


async def test_a_damaged_file_is_refused_naming_it(tmp_path):
    (tmp_path / "action_sqlite_rows.db").write_bytes(b"this is not a queue" * 100)
    with pytest.raises(action_store.DurableError, match="action_sqlite_rows.db: not a readable queue file"):
        make_action(tmp_path, Target(), buffer_mode="disk")


class Recorder:
    name = "answer"

    def __init__(self) -> None:
        self.seen: list[Any] = []

    def run(self, output: dict[str, Any]) -> None:
        self.seen.append(output["n"])


def rule_with(actions: list[Any]) -> RunningRule:
    return RunningRule(compile_sql('SELECT payload.n AS n FROM "t/#"', "r"), actions,
                       RuleSettings(sql='SELECT payload.n AS n FROM "t/#"'))


async def test_a_rule_runs_the_actions_after_a_disk_action_once_the_request_is_on_disk(tmp_path):
    target = Target()
    action = make_action(tmp_path, target, buffer_mode="disk")
    answer = Recorder()
    on_disk_when_answered: list[list[Any]] = []
    original = answer.run

    def run(output: dict[str, Any]) -> None:
        on_disk_when_answered.append([row[0] for row in rows_in(tmp_path / "action_sqlite_rows.db")])
        original(output)

    answer.run = run  # type: ignore[method-assign]
    rule = rule_with([action, answer])
    for n in range(3):
        rule.on_message(Message("t/1", b'{"n": %d}' % n))
    assert answer.seen == []  # nothing answered before the write
    await eventually(lambda: answer.seen == [0, 1, 2])
    for i, seen in enumerate(on_disk_when_answered):
        assert i in seen  # each answer came after its row was on disk
    assert action.store.queue.commits == 1  # the later messages were written at once, not one by one
    await action.stop(flush_timeout=0)


async def test_a_failed_disk_write_stops_the_later_actions_counted(tmp_path):
    action = make_action(tmp_path, Target(), buffer_mode="disk")
    answer = Recorder()
    rule = rule_with([action, answer])
    await action.store.queue.close()  # every write now fails
    rule.on_message(Message("t/1", b'{"n": 1}'))
    await asyncio.sleep(0)
    assert answer.seen == [] and rule.metrics.blocked == 1
    assert rule.metrics.as_dict()["actions.blocked"] == 1
    await action_store.release(action.store)  # the registry of open files is the process's: leave it empty


async def test_a_request_the_full_disk_buffer_drops_is_not_answered(tmp_path):
    # nothing acknowledged is lost: with drop_newest (or a request larger than the buffer) the rule
    # does not run its answer for a message it did not keep, so the charge point sends it again
    action = make_action(tmp_path, Target(), buffer_mode="disk", max_buffer_messages=1,
                         buffer_overflow="drop_newest")
    answer = Recorder()
    rule = rule_with([action, answer])
    rule.on_message(Message("t/1", b'{"n": 0}'))
    rule.on_message(Message("t/1", b'{"n": 1}'))  # the buffer holds one: dropped
    await eventually(lambda: answer.seen == [0] and rule.metrics.blocked == 1)
    (tmp_path / "big").mkdir()
    big = make_action(tmp_path / "big", Target(), buffer_mode="disk", max_buffer_bytes=4)
    rule = rule_with([big, answer])
    rule.on_message(Message("t/1", b'{"n": 2}'))  # rendered [2, ""]: larger than the whole buffer
    await eventually(lambda: rule.metrics.blocked == 1)
    assert answer.seen == [0] and action.metrics.dropped_queue_full == 1 and big.metrics.dropped_queue_full == 1
    await action.stop(flush_timeout=0)
    await big.stop(flush_timeout=0)


@pytest.mark.parametrize("rendered", [
    ("/ocpp/CP1", {"content-type": "application/json", "x-n": "1"}, b'{"a": "\xc3\xa9"}\x00\xff'),  # an HTTP request
    ["CP1", 12, 3.5, None, "{\"json\": [1, 2]}"],  # an SQL row's values
])
def test_a_rendered_request_reads_back_as_it_was(rendered):
    data, enqueued = action_store.decode(action_store.encode(rendered, 1765000000.25))
    assert data == rendered and type(data) is type(rendered) and enqueued == 1765000000.25


async def test_a_stop_keeps_the_batch_in_flight_too_in_order(tmp_path):
    target = Target()
    target.up()
    hang = asyncio.Event()

    async def send(batch: list[Any]) -> None:
        await hang.wait()  # the target never answers

    action = make_action(tmp_path, target, buffer_mode="memory_only")
    action._send = send
    await action.start()
    for i in range(3):
        action.run({"n": i})
    await eventually(lambda: action.metrics.inflight == 1)
    await action.stop(flush_timeout=0)
    assert [row[0] for row in rows_in(tmp_path / "action_sqlite_rows.db")] == [0, 1, 2]
    assert action.metrics.dropped == 0 and balanced(action)
