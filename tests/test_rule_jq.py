"""jq() in its child process (issue 12, item 2): stopped after its timeout, without the
gateway's environment, within a memory limit; the next call works."""

from __future__ import annotations

import os

import pytest

from rules import jq_sandbox, limits
from rules.functions import lookup
from rules.values import RuleError

pytestmark = pytest.mark.timeout(120)


def jq(*args):
    return lookup("jq").impl(*args)


def counted(limit: str, before: dict[str, int]) -> int:
    return limits.REFUSED[limit] - before[limit]


def test_a_program_that_never_ends_times_out_and_the_next_call_works():
    before = dict(limits.REFUSED)
    with pytest.raises(RuleError, match=r"^jq\(\): jq program timed out after 200 ms$"):
        jq("def f: f; f", 1)
    assert counted("jq_timeout", before) == 1
    assert jq(".a + 1", {"a": 41}) == [42]
    assert jq(".[]", "[1, 2]") == [1, 2]


def test_the_timeout_argument_is_honoured():
    with pytest.raises(RuleError, match=r"timed out after 50 ms$"):
        jq("def f: f; f", 1, 50)
    with pytest.raises(RuleError, match=r"timed out after 700 ms$"):
        jq("def f: f; f", 1, 700)
    # a program that takes longer than the default but ends: given time, it answers
    assert jq("[range(300000)] | length", 1, 60_000) == [300000]


def test_the_default_timeout_comes_from_the_settings(monkeypatch):
    monkeypatch.setattr(limits, "_current", limits.FunctionLimits(jq_timeout=0.03))
    with pytest.raises(RuleError, match=r"timed out after 30 ms$"):
        jq("def f: f; f", 1)


def test_jq_sees_no_environment(monkeypatch):
    monkeypatch.setenv("JQ_CANARY_SECRET", "leaked")
    jq_sandbox.SANDBOX.stop()  # the next child starts with the canary in our environment
    assert jq("$ENV.JQ_CANARY_SECRET", 1) == [None]
    assert jq("env.JQ_CANARY_SECRET", 1) == [None]
    assert jq("[$ENV, env]", 1) == [[{}, {}]]
    assert jq("$ENV.HOME, $ENV.PATH", 1) == [None, None]
    assert os.environ["JQ_CANARY_SECRET"] == "leaked"


def test_a_huge_program_stops_at_the_timeout_or_the_memory_limit(monkeypatch):
    """The issue's `[limit(30000000; repeat(1))]|length` ran ~56 s in the gateway's process."""
    before = dict(limits.REFUSED)
    with pytest.raises(RuleError, match=r"timed out after 200 ms|ran out of memory"):
        jq("[limit(30000000; repeat(1))]|length", 1)
    # with a long timeout and a small address space, the memory limit stops it
    monkeypatch.setattr(limits, "_current", limits.FunctionLimits(jq_max_memory=64 * 1024 * 1024))
    with pytest.raises(RuleError, match=r"^jq\(\): the jq program ran out of memory \(the limit is 64 MiB"):
        jq("[limit(30000000; repeat(1))]|length", 1, 60_000)
    assert counted("jq_timeout", before) + counted("jq_memory", before) == 2
    assert jq(".", 7) == [7]


def test_a_result_over_the_string_cap_is_refused(monkeypatch):
    monkeypatch.setattr(limits, "_current", limits.FunctionLimits(max_string_size=1000))
    before = dict(limits.REFUSED)
    with pytest.raises(RuleError, match=r"jq result is \d+ characters, over the limit of 1000"):
        jq("[range(1000)]", 1)
    assert counted("string_size", before) == 1
    assert jq("[range(10)]", 1) == [list(range(10))]


def test_the_child_is_one_process_that_dies_with_us_and_stops_on_request():
    jq(".", 1)
    child = jq_sandbox.SANDBOX._child
    assert child is not None and child.proc.poll() is None
    jq(".", 2)
    assert jq_sandbox.SANDBOX._child is child  # persistent: no process per call
    assert os.getsid(child.proc.pid) == child.proc.pid  # its own session: no terminal signals
    jq_sandbox.SANDBOX.stop()
    assert child.proc.poll() is not None
    assert jq(".", 3) == [3]  # started again on demand


def test_the_child_dies_when_the_gateway_is_killed():
    """SIGKILL leaves no atexit, and a child busy in jq does not read its closed stdin: the
    kernel's parent-death signal ends it."""
    import signal
    import subprocess
    import sys
    import time

    from tests.gateway import pid_alive, wait_dead

    script = ("from rules.functions import lookup; from rules import jq_sandbox; lookup('jq').impl('.', 1); "
              "print(jq_sandbox.SANDBOX._child.proc.pid, flush=True); lookup('jq').impl('def f: f; f', 1, 60000)")
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    child = 0
    try:
        child = int(parent.stdout.readline())
        assert pid_alive(child)
        time.sleep(0.5)  # the child is in the endless program now
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        assert wait_dead(child)
    finally:
        parent.kill()
        parent.wait()
        if child and pid_alive(child):
            os.kill(child, signal.SIGKILL)  # the test failed: leave nothing running


def test_a_child_killed_from_outside_is_replaced():
    import signal

    jq(".", 1)
    child = jq_sandbox.SANDBOX._child
    os.kill(child.proc.pid, signal.SIGKILL)
    child.proc.wait()
    assert jq(".", 2) == [2]  # a dead child is noticed before the request and replaced
    assert jq_sandbox.SANDBOX._child is not child
