"""jq programs run in a child process that can be stopped: rule functions must not hang the node.

jq is a full language (`def f: f; f` never ends, `[limit(30000000; repeat(1))]`
takes a minute and gigabytes) and its library reads the environment (`$ENV`,
`env`). So `jq()` never runs jq in the gateway's process: one persistent
child (rules/jq_child.py), started on first use, with an empty environment,
an address-space limit (`rule_engine.jq_function_max_memory`), its own
session (the terminal's Ctrl-C is not for it) and the kernel's promise to
kill it when the gateway dies (PR_SET_PDEATHSIG, requested by the child
itself: see rules/jq_child.py). Note that the kernel ties that promise to
the thread that started the child; rule functions run on the event loop's
thread, which lives as long as the node.

A call writes one request line and waits for the answer at most the call's
timeout (jq()'s 3rd argument in ms, else `rule_engine.jq_function_default_timeout`,
200 ms by default). Rule functions are synchronous, called from the rule
code on the event loop, so the loop waits too: that is why the bound is
small. On timeout the child is killed (SIGKILL, reaped at once) and a new
one started, and the call raises "jq program timed out after N ms"
(counted as `jq_timeout`); a child that dies mid-call (jq aborts when its
memory limit is hit) is replaced the same way (`jq_memory`). Starting a
child (about 0.1 s: Python and the jq module) is not counted against a
call's timeout; it has its own bound, `START_TIMEOUT`.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson

from rules import limits
from rules.functions_base import ArgError, LimitError

START_TIMEOUT = 5.0  # seconds for a new child to import jq and say it is ready
_CHILD = Path(__file__).with_name("jq_child.py")


def available() -> bool:
    return importlib.util.find_spec("jq") is not None


def _module_dirs() -> list[str]:
    """Where jq and orjson live: the child runs isolated (-I), with only these on its path."""
    dirs: list[str] = []
    for name in ("jq", "orjson"):
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.origin:
            origin = Path(spec.origin)
            root = str(origin.parent.parent if origin.name == "__init__.py" else origin.parent)
            if root not in dirs:
                dirs.append(root)
    return dirs


class JqChildError(Exception):
    """The child did not answer: (limit name or "", message)."""


class _Child:
    def __init__(self, memory: int) -> None:
        self.memory = memory
        self.owner = os.getpid()  # a forked worker does not own its parent's child
        self.proc = subprocess.Popen(
            [sys.executable, "-I", str(_CHILD), str(memory), str(self.owner), *_module_dirs()],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            env={}, cwd="/", close_fds=True, start_new_session=True,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None  # both are PIPE
        self.stdin, self.stdout = self.proc.stdin, self.proc.stdout
        self.ready = False
        self.buffer = bytearray()
        os.set_blocking(self.stdout.fileno(), False)
        os.set_blocking(self.stdin.fileno(), False)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for pipe in (self.stdin, self.stdout):
            try:
                pipe.close()
            except OSError:
                pass

    def exchange(self, request: bytes, deadline: float, max_answer: int) -> bytes:
        """Write `request`, read one line back; raise TimeoutError past `deadline`, EOFError
        if the child is gone, OverflowError if the answer grows past `max_answer`."""
        out, inp = self.stdin.fileno(), self.stdout.fileno()
        pending = memoryview(request)
        with selectors.DefaultSelector() as selector:
            selector.register(inp, selectors.EVENT_READ)
            if pending:
                selector.register(out, selectors.EVENT_WRITE)
            while True:
                newline = self.buffer.find(b"\n")
                if newline >= 0 and not pending:
                    line = bytes(self.buffer[:newline])
                    del self.buffer[: newline + 1]
                    return line
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                for key, _ in selector.select(left):
                    if key.fd == out:
                        try:
                            pending = pending[os.write(out, pending):]
                        except BrokenPipeError:
                            raise EOFError from None
                        if not pending:
                            selector.unregister(out)
                    else:
                        chunk = os.read(inp, 1 << 16)
                        if not chunk:
                            raise EOFError
                        self.buffer += chunk
                        if len(self.buffer) > max_answer:
                            raise OverflowError


class JqSandbox:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._child: _Child | None = None

    def prestart(self) -> None:
        """Start the child now (a rule that calls jq() was compiled), so the first call need not wait."""
        with self._lock:
            self._spawn()

    def _spawn(self) -> _Child:
        memory = limits.current().jq_max_memory
        child = self._child
        if child is not None and child.owner != os.getpid():
            child = self._child = None  # inherited through fork: the parent's to manage
        if child is not None and (child.proc.poll() is not None or child.memory != memory):
            child.kill()
            child = self._child = None
        if child is None:
            child = self._child = _Child(memory)
        return child

    def _ready(self) -> _Child:
        child = self._spawn()
        if not child.ready:
            try:
                line = child.exchange(b"", time.monotonic() + START_TIMEOUT, 1024)
            except (TimeoutError, EOFError, OverflowError):
                self._replace()
                raise JqChildError("", "the jq child process did not start") from None
            if line != b"ready":
                self._replace()
                raise JqChildError("", f"the jq child process did not start: {line[:200]!r}")
            child.ready = True
        return child

    def _replace(self) -> None:
        """Kill the child (reaped at once) and start the next one, so the next call finds it warm."""
        if self._child is not None:
            self._child.kill()
            self._child = None
        try:
            self._spawn()
        except OSError:
            pass  # the next call tries again, and says why if it still cannot

    def run(self, program: str, source: str, timeout: float, max_answer: int) -> list[Any]:
        with self._lock:
            request = orjson.dumps([program, source, max_answer]) + b"\n"
            child = self._ready()
            try:
                line = child.exchange(request, time.monotonic() + timeout, max_answer + 64)
            except TimeoutError:
                self._replace()
                raise JqChildError("jq_timeout", f"jq program timed out after {round(timeout * 1000)} ms") from None
            except OverflowError:
                self._replace()
                raise JqChildError("string_size", "the jq result is over the limit of "
                                   f"{max_answer} characters (rule_engine.max_string_size)") from None
            except EOFError:
                self._replace()  # reaps the child: its status says why it ended
                if child.proc.returncode == -signal.SIGABRT:  # jq aborts when an allocation fails
                    raise JqChildError("jq_memory", "the jq program ran out of memory (the limit is "
                                       f"{child.memory // (1024 * 1024)} MiB: rule_engine.jq_function_max_memory)"
                                       ) from None
                raise JqChildError("", f"the jq child process stopped (status {child.proc.returncode})") from None
        answer = orjson.loads(line)
        if "r" in answer:
            return answer["r"]
        if "e" in answer:
            raise JqChildError("", answer["e"])
        if "s" in answer:
            raise JqChildError("string_size", f"the jq result is {answer['s']} characters, over the limit "
                               f"of {max_answer} (rule_engine.max_string_size)")
        raise JqChildError("jq_memory", "the jq program ran out of memory (rule_engine.jq_function_max_memory)")

    def stop(self) -> None:
        with self._lock:
            if self._child is not None and self._child.owner == os.getpid():
                self._child.kill()
            self._child = None


SANDBOX = JqSandbox()
atexit.register(SANDBOX.stop)


def run_jq(program: str, source: str, timeout_ms: int | None) -> list[Any]:
    """The outputs of `program` on the JSON text `source`, run in the child; errors as rule errors."""
    current = limits.current()
    timeout = current.jq_timeout if timeout_ms is None else max(timeout_ms, 1) / 1000
    max_answer = current.max_string_size or (1 << 62)
    try:
        return SANDBOX.run(program, source, timeout, max_answer)
    except JqChildError as e:
        limit, message = e.args
        if limit:
            raise LimitError(limit, message) from None
        raise ArgError(message) from None
    except OSError as e:  # no process could be started (out of file descriptors, ...)
        raise ArgError(f"the jq child process does not start: {e}") from None
