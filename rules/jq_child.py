"""The jq child process: runs jq programs for rules.jq_sandbox, one request per line.

Started as a script with `python -I` and an empty environment (so `$ENV`
and `env` see nothing), it imports only jq and orjson. Its arguments: the
address-space limit in bytes (0: none), the parent's pid, then directories
to put on sys.path (where the parent found jq and orjson). It asks the
kernel for SIGTERM when its parent dies (PR_SET_PDEATHSIG, as
engine.children.die_with_parent does; done here rather than in a
preexec_fn so the parent can spawn it without running Python between fork
and exec), and exits at once if the parent is already gone. It writes `ready`, then answers each
request line `[program, input_json_text, max_answer_chars]` with one line:
`{"r": [outputs...]}`, `{"e": "message"}`, `{"s": size}` for an answer over
the limit, `{"m": 1}` when Python ran out of memory. Compiled programs are cached.
Running out of memory inside jq aborts the process: the parent sees it exit.
"""

import os
import resource
import signal
import sys


def _die_with_parent(parent: int) -> None:
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: stdin's end still stops the loop below
    if os.getppid() != parent:
        sys.exit(0)  # the parent died before the request above took effect


def main() -> None:
    memory, parent = int(sys.argv[1]), int(sys.argv[2])
    _die_with_parent(parent)
    sys.path[:0] = sys.argv[3:]
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the terminal's Ctrl-C is for the gateway
    os.environ.clear()  # started with none; this also drops what Python itself set (LC_CTYPE)
    import json

    import jq
    import orjson

    if memory > 0:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    cache: dict[str, jq._Program] = {}  # program text -> compiled (a local: the annotation is never evaluated)
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    stdout.write(b"ready\n")
    stdout.flush()
    for line in stdin:
        try:
            program, source, max_chars = orjson.loads(line)
            compiled = cache.get(program)
            if compiled is None:
                try:
                    compiled = jq.compile(program)
                except ValueError as e:
                    raise _Answer(f"invalid jq program: {e}") from None
                if len(cache) >= 256:
                    cache.clear()
                cache[program] = compiled
            try:
                results = compiled.input_text(source).all()
            except ValueError as e:
                raise _Answer(f"jq error: {e}") from None
            try:
                answer = orjson.dumps({"r": results})
            except TypeError:  # an integer beyond 64 bits
                answer = json.dumps({"r": results}, separators=(",", ":")).encode()
            if len(answer) > max_chars:
                answer = orjson.dumps({"s": len(answer)})
        except _Answer as e:
            answer = orjson.dumps({"e": str(e)})
        except MemoryError:
            answer = b'{"m":1}'
        except Exception as e:  # noqa: BLE001 - one request's failure, answered, never the child's end
            answer = orjson.dumps({"e": f"jq error: {type(e).__name__}: {e}"})
        stdout.write(answer + b"\n")
        stdout.flush()


class _Answer(Exception):
    pass


if __name__ == "__main__":
    main()
