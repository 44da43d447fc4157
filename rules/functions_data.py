"""Maps, arrays, hashes, encodings, JSON, jq, JMESPath, coalesce, UUIDs, and the
functions that read the message being processed (clientid(), topic(N), ...).

EMQX binaries are strings here: functions that produce bytes (base64_decode,
hexstr2bin) return them as UTF-8 text and fail on bytes that are not UTF-8;
functions that consume bytes (hashes, base64_encode, bin2hexstr) use the
string's UTF-8 form.

Just over 400 lines: the functions of EMQX's "data" families (maps, arrays, encodings, jq,
JMESPath, payload readers), registered in one table at the end.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import uuid
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import jmespath
import jmespath.exceptions

from engine.bus.topic import matches as topic_matches
from rules.functions_base import (
    ABSENT,
    ArgError,
    Function,
    array,
    check_size,
    describe,
    erl_equal,
    func,
    integer,
    json_decode,
    json_encode,
    key_path,
    nested_get,
    nested_put,
    text,
    text_or_atom,
)
from rules.values import UNDEFINED, RuleError

from rules import jq_sandbox

# --- maps -------------------------------------------------------------------------------------


def to_map(value: Any) -> dict[Any, Any]:
    """EMQX's map(): a map, a JSON object in a string, or an array of [key, value] pairs."""
    if type(value) is dict:
        return value
    if type(value) is str:
        decoded = json_decode(value)
        if type(decoded) is dict:
            return decoded
    elif type(value) is list and all(type(p) is list and len(p) == 2 and type(p[0]) is str for p in value):
        return {k: v for k, v in value}
    raise ArgError(f"expected a map, got {describe(value)}")


def _map_get(key: Any, data: Any, default: Any = UNDEFINED) -> Any:
    """map_get("a.b", map[, default]): a nested value; strings on the way are decoded as JSON."""
    return nested_get(key_path(text(key, "a key")), data, default)


def _map_put(key: Any, value: Any, data: Any) -> dict[Any, Any]:
    """A copy of the map with the nested key set; putting undefined changes nothing."""
    return nested_put(key_path(text(key, "a key")), value, data)


def _mget(key: Any, data: Any, default: Any = UNDEFINED) -> Any:
    """mget(key, map[, default]): one key, taken literally (dots included)."""
    return to_map(data).get(text(key, "a key"), default)


def _mput(key: Any, value: Any, data: Any) -> dict[Any, Any]:
    out = dict(to_map(data))
    if value is not UNDEFINED:  # an undefined value would not survive JSON anyway
        out[text(key, "a key")] = value
    return out


def _map_keys(data: Any) -> list[Any]:
    return list(to_map(data))


def _map_values(data: Any) -> list[Any]:
    return list(to_map(data).values())


def _map_to_entries(data: Any) -> list[dict[str, Any]]:
    return [{"key": k, "value": v} for k, v in to_map(data).items()]


def _map_size(data: Any) -> int:
    return len(to_map(data))


# --- arrays (1-based, as lists:nth and lists:sublist) ------------------------------------------


def _nth(n: Any, items: Any) -> Any:
    n, items = integer(n, "a position"), array(items)
    if not 1 <= n <= len(items):
        raise ArgError(f"position {n} is outside an array of {len(items)}")
    return items[n - 1]


def _length(items: Any) -> int:
    return len(array(items))


def _sublist(a: Any, b: Any, c: Any = ABSENT) -> list[Any]:
    """sublist(len, array) or sublist(start, len, array), start counting from 1."""
    start, length, items = (1, a, b) if c is ABSENT else (a, b, c)
    start, length, items = integer(start, "a start position"), integer(length, "a length"), array(items)
    if length < 0:
        raise ArgError(f"the length cannot be negative, got {length}")
    if not 1 <= start <= len(items) + 1:
        raise ArgError(f"start {start} is outside an array of {len(items)}")
    return items[start - 1 : start - 1 + length]


def _first(items: Any) -> Any:
    items = array(items)
    if not items:
        raise ArgError("the array is empty")
    return items[0]


def _last(items: Any) -> Any:
    items = array(items)
    if not items:
        raise ArgError("the array is empty")
    return items[-1]


def _contains(item: Any, items: Any) -> bool:
    """Membership with Erlang's exact match: 1 is not 1.0, true is not 1."""
    return any(erl_equal(item, x, exact=True) for x in array(items))


# --- hashes and encodings --------------------------------------------------------------------


def _digest(algorithm: str) -> Callable[[Any], str]:
    def call(data: Any) -> str:
        return hashlib.new(algorithm, text(data).encode()).hexdigest()

    return call


_HASHES = {
    "md5": "md5", "sha": "sha1", "sha1": "sha1", "sha224": "sha224", "sha256": "sha256",
    "sha384": "sha384", "sha512": "sha512", "sha3_224": "sha3_224", "sha3_256": "sha3_256",
    "sha3_384": "sha3_384", "sha3_512": "sha3_512", "blake2b": "blake2b", "blake2s": "blake2s",
    "shake128": "shake_128", "shake256": "shake_256",
}  # fmt: skip
_SHAKE_BYTES = {"shake_128": 16, "shake_256": 32}  # Erlang crypto's default output sizes


def _hash(algorithm: Any, data: Any) -> str:
    """hash(algorithm, data): lowercase hex; the algorithms of Erlang's crypto:hash/2."""
    name = _HASHES.get(text(algorithm, "an algorithm name"))
    if name is None:
        raise ArgError(f"unknown hash algorithm {describe(algorithm)}; known: {', '.join(_HASHES)}")
    h = hashlib.new(name, text_or_atom(data).encode())
    # typeshed's hashlib.new() returns a HASH whose hexdigest takes no length; a SHAKE's takes one
    return h.hexdigest(_SHAKE_BYTES[name]) if name in _SHAKE_BYTES else h.hexdigest()  # type: ignore[call-arg]


def _utf8(data: bytes) -> str:
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise ArgError("the decoded bytes are not UTF-8 text, and strings here are text") from None


def _base64_encode(data: Any) -> str:
    raw = text(data).encode()
    check_size((len(raw) + 2) // 3 * 4)
    return base64.b64encode(raw).decode("ascii")


def _base64_decode(data: Any) -> str:
    compact = re.sub(r"\s+", "", text(data))
    try:
        return _utf8(base64.b64decode(compact, validate=True))
    except (binascii.Error, ValueError) as e:  # ValueError: characters outside ASCII
        raise ArgError(f"invalid base64: {e}") from None


def _bin2hexstr(data: Any, prefix: Any = "") -> str:
    """Uppercase hex of the string's UTF-8 bytes, after an optional prefix ("0x")."""
    prefix, raw = text(prefix, "a prefix string"), text(data).encode()
    check_size(len(prefix) + 2 * len(raw))
    return prefix + raw.hex().upper()


def _hexstr2bin(hexstr: Any, prefix: Any = "") -> str:
    hexstr, prefix = text(hexstr), text(prefix, "a prefix string")
    if not hexstr.startswith(prefix):
        raise ArgError(f"{describe(hexstr)} does not start with {describe(prefix)}")
    digits = hexstr[len(prefix) :]
    if len(digits) % 2:
        digits = "0" + digits  # an odd count reads as if a leading 0 were there
    try:
        return _utf8(bytes.fromhex(digits))
    except ValueError:
        raise ArgError(f"{describe(hexstr)} is not a hex string") from None


def _json_decode(data: Any) -> Any:
    return json_decode(text(data, "JSON text"))


# --- jq and JMESPath ------------------------------------------------------------------------


def _jq_run(program: Any, value: Any, timeout_ms: Any = ABSENT) -> list[Any]:
    """All outputs of the jq program as an array; a string value is JSON text. The program runs
    in a child process, stopped after the timeout in ms (rules.jq_sandbox)."""
    program = text(program, "a jq program")
    if timeout_ms is not ABSENT and integer(timeout_ms, "a timeout in milliseconds") < 0:
        raise ArgError(f"the timeout cannot be negative, got {timeout_ms}")
    if type(value) is str:
        json_decode(value)  # one valid JSON document, or a clear error; jq gets the text as is
        source = value
    else:
        source = json_encode(value)
    return jq_sandbox.run_jq(program, source, None if timeout_ms is ABSENT else timeout_ms)


@lru_cache(maxsize=256)
def _jmespath_program(expression: str) -> Any:
    try:
        return jmespath.compile(expression)
    except jmespath.exceptions.JMESPathError as e:
        raise ArgError(f"invalid JMESPath expression: {e}") from None


def _jmespath(expression: Any, value: Any) -> Any:
    """The expression's result; a string value is JSON text; no result (null) is undefined."""
    compiled = _jmespath_program(text(expression, "a JMESPath expression"))
    if type(value) is str:
        value = json_decode(value)
    try:
        result = compiled.search(None if value is UNDEFINED else value)
    except jmespath.exceptions.JMESPathError as e:
        raise ArgError(str(e)) from None
    return UNDEFINED if result is None else result


# --- conditionals, ids -------------------------------------------------------------------------


def _candidates(args: tuple[Any, ...]) -> tuple[Any, ...]:
    # coalesce(array) looks inside the array, as EMQX's coalesce/1 does
    return tuple(args[0]) if len(args) == 1 and type(args[0]) is list else args


def _coalesce(*args: Any) -> Any:
    """The first argument that is neither undefined nor null."""
    return next((a for a in _candidates(args) if a is not UNDEFINED and a is not None), UNDEFINED)


def _coalesce_ne(*args: Any) -> Any:
    """The first argument that is neither undefined, null nor the empty string."""
    return next((a for a in _candidates(args) if a is not UNDEFINED and a is not None and a != ""), UNDEFINED)


def _uuid_v4() -> str:
    return str(uuid.uuid4())


def _uuid_v4_no_hyphen() -> str:
    return uuid.uuid4().hex


# --- the message being processed (needs_input: impl(columns, *args)) ------------------------


def column(columns: dict[str, Any], name: str) -> Any:
    """A column, or UNDEFINED. Indexing, not .get(): the rule engine's Env computes
    lazy columns (payload, id, flags) in __missing__, which .get() would skip."""
    try:
        return columns[name]
    except KeyError:
        return UNDEFINED


def _column(name: str) -> Callable[[dict[str, Any]], Any]:
    def get(columns: dict[str, Any]) -> Any:
        return column(columns, name)

    return get


def _topic(columns: dict[str, Any], level: Any = ABSENT) -> Any:
    """topic() or topic(N): the Nth level, counting from 1."""
    topic = column(columns, "topic")
    if level is ABSENT or topic is UNDEFINED:
        return topic
    n, levels = integer(level, "a level number"), text(topic).split("/")
    if not 1 <= n <= len(levels):
        raise ArgError(f"topic {describe(topic)} has no level {n}")
    return levels[n - 1]


def _flags(columns: dict[str, Any]) -> Any:
    flags = column(columns, "flags")
    return {} if flags is UNDEFINED else flags


def _flag(columns: dict[str, Any], name: Any) -> Any:
    flags = column(columns, "flags")
    return flags.get(text(name, "a flag name"), UNDEFINED) if type(flags) is dict else UNDEFINED


def _decoded_payload(columns: dict[str, Any]) -> Any:
    decoded = getattr(columns, "payload_value", None)  # the Env's decode-once cache
    if decoded is None:
        return column(columns, "payload")  # a JSON string is decoded by nested_get
    try:
        return decoded()
    except RuleError:
        return UNDEFINED  # not JSON: no path in it


def _payload(columns: dict[str, Any], path: Any = ABSENT) -> Any:
    """payload() is the raw payload; payload("a.b") decodes it as JSON and reads the path."""
    if path is ABSENT:
        return column(columns, "payload")
    return nested_get(key_path(text(path, "a path")), _decoded_payload(columns))


def _filter_entries(filters: Any) -> list[tuple[str, dict[str, Any]]]:
    """Subscriptions as events carry them: [{"topic": ..., "qos": ...}] (plain strings too)."""
    entries = []
    for item in array(filters, "an array of topic filters"):
        if type(item) is dict and type(item.get("topic")) is str:
            entries.append((item["topic"], item))
        elif type(item) is str:
            entries.append((item, {}))
        else:
            raise ArgError(f"expected a topic filter, got {describe(item)}")
    return entries


def _find_filter(filters: Any, topic: Any, qos: Any, match: Any) -> bool:
    topic = text(topic, "a topic")
    for entry_topic, entry in _filter_entries(filters):
        if match(entry_topic, topic):
            # the first matching subscription decides, as in EMQX
            return qos is ABSENT or erl_equal(entry.get("qos"), qos, exact=True)
    return False


def _contains_topic(filters: Any, topic: Any, qos: Any = ABSENT) -> bool:
    """Whether one of the subscriptions is exactly this topic (and has this QoS)."""
    return _find_filter(filters, topic, qos, lambda entry, t: entry == t)


def _contains_topic_match(filters: Any, topic: Any, qos: Any = ABSENT) -> bool:
    """Whether one of the subscriptions matches the given filter (and has this QoS)."""
    return _find_filter(filters, topic, qos, lambda entry, t: topic_matches(t, entry))


FUNCS: list[Function] = [
    func("map", to_map, 1),
    func("map_new", dict, 0),
    func("map_get", _map_get, 2, 3),
    func("map_put", _map_put, 3),
    func("mget", _mget, 2, 3),
    func("mput", _mput, 3),
    func("map_keys", _map_keys, 1),
    func("map_values", _map_values, 1),
    func("map_to_entries", _map_to_entries, 1),
    func("map_size", _map_size, 1),
    func("nth", _nth, 2),
    func("length", _length, 1),
    func("sublist", _sublist, 2, 3),
    func("first", _first, 1),
    func("last", _last, 1),
    func("contains", _contains, 2),
    func("md5", _digest("md5"), 1),
    func("sha", _digest("sha1"), 1),
    func("sha256", _digest("sha256"), 1),
    func("hash", _hash, 2),
    func("base64_encode", _base64_encode, 1),
    func("base64_decode", _base64_decode, 1),
    func("bin2hexstr", _bin2hexstr, 1, 2),
    func("hexstr2bin", _hexstr2bin, 1, 2),
    func("json_encode", json_encode, 1),
    func("json_decode", _json_decode, 1),
    func("jmespath", _jmespath, 2),
    func("coalesce", _coalesce, 1, None),
    func("coalesce_ne", _coalesce_ne, 1, None),
    func("uuid_v4", _uuid_v4, 0),
    func("uuid_v4_no_hyphen", _uuid_v4_no_hyphen, 0),
    func("null", lambda: UNDEFINED, 0),
    func("contains_topic", _contains_topic, 2, 3),
    func("contains_topic_match", _contains_topic_match, 2, 3),
    func("msgid", _column("id"), 0, needs_input=True),
    func("clientid", _column("clientid"), 0, needs_input=True),
    func("username", _column("username"), 0, needs_input=True),
    func("qos", _column("qos"), 0, needs_input=True),
    func("peerhost", _column("peerhost"), 0, needs_input=True),
    func("clientip", _column("peerhost"), 0, needs_input=True),
    func("topic", _topic, 0, 1, needs_input=True),
    func("flags", _flags, 0, needs_input=True),
    func("flag", _flag, 1, needs_input=True),
    func("payload", _payload, 0, 1, needs_input=True),
]

if jq_sandbox.available():  # the jq binding is optional: jq() is registered only when it is there
    FUNCS.append(func("jq", _jq_run, 2, 3))
