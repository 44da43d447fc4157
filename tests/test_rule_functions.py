"""The rule function library: EMQX's behaviour, function by function.

Cases marked "EMQX" restate facts of emqx_rule_funcs_SUITE (input → output);
the rest pin down this library's own choices where EMQX is Erlang-specific.
"""

from __future__ import annotations

import hashlib
import math
import re
from typing import Any

import pytest

from rules import functions_time
from rules.functions import FUNCTIONS, OPERATORS, Function, lookup, negate
from rules.values import UNDEFINED, RuleError

MSG = {
    "id": "0005F2B9A1C3",
    "clientid": "CP1",
    "username": "u",
    "payload": '{"Action": "StatusNotification", "Payload": {"connectorId": 1, "status": "Faulted"}}',
    "topic": "ocpp/cp/CP1",
    "qos": 1,
    "flags": {"retain": False, "dup": False},
    "timestamp": 1700000000000,
    "publish_received_at": 1700000000000,
    "node": "gw1",
    "peerhost": "127.0.0.1",
    "proto_ver": "ocpp1.6",
}


def call(name: str, *args: Any) -> Any:
    f = lookup(name)
    assert f is not None, name
    return f.impl(MSG, *args) if f.needs_input else f.impl(*args)


def fails(name: str, *args: Any, match: str = "") -> str:
    with pytest.raises(RuleError) as err:
        call(name, *args)
    message = str(err.value)
    assert message.startswith(f"{name}(): "), message
    assert re.search(match, message), message
    return message


@pytest.fixture
def utc(monkeypatch):
    """The machine's local offset, as RFC 3339 output uses it, fixed at UTC."""
    monkeypatch.setattr(functions_time, "local_offset", lambda _s: 0)


# --- every registered function: one normal case and one bad argument --------------------------

IS_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}").fullmatch
IS_RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?[+-]\d\d:\d\d").fullmatch

# (function, args, expected) — expected may be a predicate for values that vary.
NORMAL: list[tuple[str, tuple, Any]] = [
    ("abs", (-3,), 3),
    ("ceil", (1.2,), 2),
    ("floor", (-1.2,), -2),
    ("round", (2.5,), 3),
    ("power", (2, 10), 1024.0),
    ("fmod", (7.5, 2), 1.5),
    ("sqrt", (16,), 4.0),
    ("exp", (0,), 1.0),
    ("log", (1,), 0.0),
    ("log10", (1000,), 3.0),
    ("log2", (8,), 3.0),
    ("sin", (0,), 0.0),
    ("cos", (0,), 1.0),
    ("tan", (0,), 0.0),
    ("asin", (1,), math.pi / 2),
    ("acos", (1,), 0.0),
    ("atan", (1,), math.pi / 4),
    ("sinh", (0,), 0.0),
    ("cosh", (0,), 1.0),
    ("tanh", (0,), 0.0),
    ("asinh", (0,), 0.0),
    ("acosh", (1,), 0.0),
    ("atanh", (0,), 0.0),
    ("bitnot", (5,), -6),
    ("bitand", (12, 10), 8),
    ("bitor", (12, 10), 14),
    ("bitxor", (12, 10), 6),
    ("bitsl", (1, 4), 16),
    ("bitsr", (16, 4), 1),
    ("is_null", (UNDEFINED,), True),
    ("is_not_null", (None,), True),
    ("is_null_var", (None,), True),
    ("is_not_null_var", (0,), True),
    ("is_str", ("",), True),
    ("is_bool", (False,), True),
    ("is_int", (-1,), True),
    ("is_float", (2.0,), True),
    ("is_num", (1.5,), True),
    ("is_map", ({},), True),
    ("is_array", ([],), True),
    ("is_empty", ("{}",), True),
    ("str", ({"a": 1},), '{"a":1}'),
    ("str_utf8", ("abc 你好",), "abc 你好"),
    ("int", ("1.0",), 1),
    ("float", ("1",), 1.0),
    ("float2str", (20.2, 1), "20.2"),
    ("bool", ("true",), True),
    ("random", (), lambda v: type(v) is float and 0 <= v < 1),
    ("lower", ("0ABC",), "0abc"),
    ("upper", ("abc4",), "ABC4"),
    ("trim", (" abc ",), "abc"),
    ("ltrim", (" abc ",), "abc "),
    ("rtrim", (" abc ",), " abc"),
    ("reverse", ("abcd",), "dcba"),
    ("strlen", ("你好",), 2),
    ("bytesize", ("你好",), 6),
    ("substr", ("abcd", 1, 2), "bc"),
    ("split", ("a,b,c", ","), ["a", "b", "c"]),
    ("tokens", ("/a/b//c/", "/"), ["a", "b", "c"]),
    ("concat", ("a", "b"), "ab"),
    ("sprintf", ("Hello ~s!", "Shawn"), "Hello Shawn!"),
    ("pad", ("abc", 5), "abc  "),
    ("replace", ("ab c  ", " ", "-"), "ab-c--"),
    ("regex_match", ("acbcd", "(ac)+"), True),
    ("regex_replace", ("accbcd", "c+", "e"), "aebed"),
    ("regex_extract", ("Date: 2021-05-20", r"(\d{4})-(\d{2})-(\d{2})"), ["2021", "05", "20"]),
    ("ascii", ("ab",), 97),
    ("find", ("acbcd", "c"), "cbcd"),
    ("join_to_string", (",", ["a", "b", "c"]), "a,b,c"),
    ("unescape", ("Hello,\\t World\\n!",), "Hello,\t World\n!"),
    ("map", ('{"a":1}',), {"a": 1}),
    ("map_new", (), {}),
    ("map_get", ("a.b", {"a": {"b": 1}}), 1),
    ("map_put", ("a.b", 1, {}), {"a": {"b": 1}}),
    ("mget", ("a.b", {"a.b": 1}), 1),
    ("mput", ("a", 2, '{"a" : 1}'), {"a": 2}),
    ("map_keys", ({"a": 1, "b": 2},), ["a", "b"]),
    ("map_values", ({"a": 1, "b": 2},), [1, 2]),
    ("map_to_entries", ({"a": 1},), [{"key": "a", "value": 1}]),
    ("map_size", ('{"a" : "b"}',), 1),
    ("nth", (2, [1, 2, 3, 4]), 2),
    ("length", ([1, 2, 3, 4],), 4),
    ("sublist", (2, 2, [1, 2, 3, 4]), [2, 3]),
    ("first", ([1, 2, 3, 4],), 1),
    ("last", ([1, 2, 3, 4],), 4),
    ("contains", ("a", ["", "ab", 3, "a"]), True),
    ("md5", ("abc",), "900150983cd24fb0d6963f7d28e17f72"),
    ("sha", ("abc",), "a9993e364706816aba3e25717850c26c9cd0d89d"),
    ("sha256", ("abc",), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
    ("hash", ("sha1", "abc"), "a9993e364706816aba3e25717850c26c9cd0d89d"),
    ("base64_encode", ("hello",), "aGVsbG8="),
    ("base64_decode", ("aGVsbG8=",), "hello"),
    ("bin2hexstr", ("\x01\x02",), "0102"),
    ("hexstr2bin", ("1121",), "\x11!"),
    ("json_encode", ({"a": [1, 2.5, None, True, "é"]},), '{"a":[1,2.5,null,true,"é"]}'),
    ("json_decode", ('{"b": 2}',), {"b": 2}),
    ("jmespath", ("Payload.status", MSG["payload"]), "Faulted"),
    ("jq", (".", '{"b": 2}'), [{"b": 2}]),
    ("coalesce", (UNDEFINED, None, 42), 42),
    ("coalesce_ne", ("", UNDEFINED, "x"), "x"),
    ("uuid_v4", (), IS_UUID),
    ("uuid_v4_no_hyphen", (), lambda v: IS_UUID(f"{v[:8]}-{v[8:12]}-{v[12:16]}-{v[16:20]}-{v[20:]}") and len(v) == 32),
    ("null", (), UNDEFINED),
    ("contains_topic", ([{"topic": "t/a", "qos": 1}], "t/a"), True),
    ("contains_topic_match", ([{"topic": "t/a", "qos": 1}], "t/#"), True),
    ("msgid", (), "0005F2B9A1C3"),
    ("clientid", (), "CP1"),
    ("username", (), "u"),
    ("qos", (), 1),
    ("peerhost", (), "127.0.0.1"),
    ("clientip", (), "127.0.0.1"),
    ("topic", (3,), "CP1"),
    ("flags", (), {"retain": False, "dup": False}),
    ("flag", ("retain",), False),
    ("payload", ("Payload.status",), "Faulted"),
    ("now_timestamp", ("millisecond",), lambda v: type(v) is int and v > 1_600_000_000_000),
    ("now_rfc3339", (), IS_RFC3339),
    ("unix_ts_to_rfc3339", (0,), IS_RFC3339),
    ("rfc3339_to_unix_ts", ("2024-02-23T15:56:30+08:00",), 1708674990),
    ("format_date", ("second", "+08:00", "%Y-%m-%d %H:%M:%S", 1700000000), "2023-11-15 06:13:20"),
    ("date_to_unix_ts", ("second", "%Y-%m-%d %H:%M:%S", "2022-05-26 10:40:12"), 1653561612),
    ("timezone_to_second", ("+02:00:00",), 7200),
    ("timezone_to_offset_seconds", ("-02:00:00",), -7200),
]

# (function, args, what the message must mention)
BAD: list[tuple[str, tuple, str]] = [
    ("abs", ("1",), 'expected a number, got "1"'),
    ("ceil", (True,), "expected a number, got true"),
    ("floor", (None,), "got null"),
    ("round", ([],), "got \\[\\]"),
    ("power", (-8, 0.5), "not a real number"),
    ("fmod", (1, 0), "division by zero"),
    ("sqrt", (-1,), "outside the function's domain"),
    ("exp", (1000,), "outside"),
    ("log", (0,), "outside"),
    ("log10", (-1,), "outside"),
    ("log2", ("8",), "expected a number"),
    ("sin", (UNDEFINED,), "got undefined"),
    ("cos", ({},), "expected a number"),
    ("tan", ("x",), "expected a number"),
    ("asin", (2,), "outside"),
    ("acos", (2,), "outside"),
    ("atan", (None,), "expected a number"),
    ("sinh", (1000,), "outside"),
    ("cosh", (1000,), "outside"),
    ("tanh", ("0",), "expected a number"),
    ("asinh", (False,), "expected a number"),
    ("acosh", (0,), "outside"),
    ("atanh", (1,), "outside"),
    ("bitnot", (1.0,), "expected an integer, got 1.0"),
    ("bitand", (1, True), "expected an integer, got true"),
    ("bitor", ("1", 2), "expected an integer"),
    ("bitxor", (1, 2.5), "expected an integer"),
    ("bitsl", (1, 10**9), "too large"),
    ("bitsr", (1, "1"), "expected an integer"),
    ("is_empty", (5,), "expected a map or an array"),
    ("str", (object(),), "cannot convert"),
    ("str_utf8", (object(),), "cannot convert"),
    ("int", ("a",), '"a" is not a number'),
    ("float", ({"a": 1},), "cannot convert"),
    ("float2str", ("20.2", 1), "expected a float"),
    ("bool", (3,), "cannot convert 3 to a boolean"),
    ("lower", (5,), "expected a string, got 5"),
    ("upper", (5,), "expected a string, got 5"),
    ("trim", (None,), "expected a string, got null"),
    ("ltrim", (UNDEFINED,), "got undefined"),
    ("rtrim", (1,), "expected a string"),
    ("reverse", ([],), "expected a string"),
    ("strlen", ({},), "expected a string"),
    ("bytesize", (True,), "expected a string"),
    ("substr", ("abc", -1), "cannot be negative"),
    ("split", ("a,b", ",", "both"), "expected one of"),
    ("tokens", ("a", ",", "crlf"), "expected one of 'nocrlf'"),
    ("concat", ("a",), "expected an array"),
    ("sprintf", ("~s ~s", "a"), "needs more arguments"),
    ("pad", ("abc", 5, "middle"), "expected one of"),
    ("replace", ("abc", "b", 1), "expected a string, got 1"),
    ("regex_match", ("abc", "(a"), "invalid regular expression"),
    ("regex_replace", ("abc", "[", "x"), "invalid regular expression"),
    ("regex_extract", (1, "a"), "expected a string"),
    ("ascii", ("",), "non-empty"),
    ("find", ("abc", "b", "middle"), "expected one of"),
    ("join_to_string", (",", "abc"), "expected an array"),
    ("unescape", ("\\L",), "unrecognized escape sequence \\\\L"),
    ("map", ("a",), "invalid JSON"),
    ("map_get", (1, {}), "expected a key"),
    ("map_put", (None, 1, {}), "expected a key"),
    ("mget", ("a", 1.0), "expected a map"),
    ("mput", ("a", 1, "[1]"), "expected a map"),
    ("map_keys", ([1],), "expected a map"),
    ("map_values", ("x",), "invalid JSON"),
    ("map_to_entries", (5,), "expected a map"),
    ("map_size", (True,), "expected a map"),
    ("nth", (5, [1, 2]), "outside an array of 2"),
    ("length", ("abc",), "expected an array"),
    ("sublist", (-1, [1]), "cannot be negative"),
    ("first", ([],), "empty"),
    ("last", ({},), "expected an array"),
    ("contains", (1, "1"), "expected an array"),
    ("md5", (1,), "expected a string"),
    ("sha", (None,), "expected a string"),
    ("sha256", ({},), "expected a string"),
    ("hash", ("crc32", "abc"), "unknown hash algorithm"),
    ("base64_encode", (1,), "expected a string"),
    ("base64_decode", ("a",), "invalid base64"),
    ("bin2hexstr", (1,), "expected a string"),
    ("hexstr2bin", ("zz",), "not a hex string"),
    ("json_encode", (object(),), "cannot encode as JSON"),
    ("json_decode", ("{bad",), "invalid JSON"),
    ("jmespath", ("a[", {}), "invalid JMESPath expression"),
    ("jq", (".a[", "{}"), "invalid jq program"),
    ("contains_topic", ("t/a", "t/a"), "expected an array of topic filters"),
    ("contains_topic_match", ([1], "t/#"), "expected a topic filter"),
    ("topic", (9,), "has no level 9"),
    ("flag", (1,), "expected a flag name"),
    ("payload", (1,), "expected a path"),
    ("now_timestamp", ("hour",), "expected a time unit"),
    ("now_rfc3339", ("minute",), "expected a time unit"),
    ("unix_ts_to_rfc3339", (1.5,), "expected an integer timestamp"),
    ("rfc3339_to_unix_ts", ("2024-02-23",), "not an RFC 3339 date-time"),
    ("format_date", ("second", "+25:00", "%Y", 0), "expected a time offset"),
    ("date_to_unix_ts", ("second", "%Y-%m-%d %H:%M:%S", "2023-02-29 10:40:12"), "not a valid date"),
    ("timezone_to_second", ("+8",), "expected a time offset"),
    ("timezone_to_offset_seconds", (True,), "expected a time offset"),
]

# Functions with no arguments (or whose arguments cannot be wrong) have no bad-argument case.
NO_BAD_ARGS = {
    "random", "map_new", "uuid_v4", "uuid_v4_no_hyphen", "null", "msgid", "clientid", "username",
    "qos", "peerhost", "clientip", "flags",
    "is_null", "is_not_null", "is_null_var", "is_not_null_var", "is_str", "is_bool", "is_int",
    "is_float", "is_num", "is_map", "is_array", "coalesce", "coalesce_ne",
}  # fmt: skip


def test_every_function_has_a_normal_and_a_bad_argument_case():
    assert {name for name, _, _ in NORMAL} == set(FUNCTIONS)
    assert {name for name, _, _ in BAD} == set(FUNCTIONS) - NO_BAD_ARGS


@pytest.mark.parametrize(("name", "args", "expected"), NORMAL, ids=[n for n, _, _ in NORMAL])
def test_normal_case(name, args, expected, utc):
    result = call(name, *args)
    if callable(expected):
        assert expected(result), result
    elif type(expected) is float:
        assert type(result) is float and result == pytest.approx(expected)
    else:
        assert result == expected and type(result) is type(expected)


@pytest.mark.parametrize(("name", "args", "match"), BAD, ids=[n for n, _, _ in BAD])
def test_bad_argument(name, args, match):
    fails(name, *args, match=match)


# --- registry and arity metadata -----------------------------------------------------------------


def test_registry_shape():
    for name, f in FUNCTIONS.items():
        assert isinstance(f, Function) and f.name == name == name.lower()
        assert f.max_args is None or f.max_args >= f.min_args >= 0


def test_lookup_is_case_insensitive_and_misses_unknown_names():
    assert lookup("SubStr") is lookup("substr") is FUNCTIONS["substr"]
    assert lookup("no_such_function") is None


@pytest.mark.parametrize(
    ("name", "min_args", "max_args", "needs_input"),
    [
        ("substr", 2, 3, False),
        ("split", 2, 3, False),
        ("pad", 2, 4, False),
        ("replace", 3, 4, False),
        ("find", 2, 3, False),
        ("concat", 1, None, False),
        ("sprintf", 1, None, False),
        ("coalesce", 1, None, False),
        ("map_get", 2, 3, False),
        ("sublist", 2, 3, False),
        ("now_timestamp", 0, 1, False),
        ("unix_ts_to_rfc3339", 1, 2, False),
        ("format_date", 3, 4, False),
        ("date_to_unix_ts", 3, 4, False),
        ("jq", 2, 3, False),
        ("jmespath", 2, 2, False),
        ("uuid_v4", 0, 0, False),
        ("clientid", 0, 0, True),
        ("topic", 0, 1, True),
        ("payload", 0, 1, True),
        ("flag", 1, 1, True),
    ],
)
def test_arity(name, min_args, max_args, needs_input):
    f = lookup(name)
    assert (f.min_args, f.max_args, f.needs_input) == (min_args, max_args, needs_input)


def test_no_python_exception_leaks_from_odd_arguments():
    odd = [UNDEFINED, None, True, 0, -1, 1.5, "", "x", [], [1], {}, {"a": 1}]
    for name, f in FUNCTIONS.items():
        if name in ("random", "uuid_v4", "uuid_v4_no_hyphen", "now_timestamp", "now_rfc3339"):
            continue
        for n in range(f.min_args, (f.max_args if f.max_args is not None else f.min_args + 2) + 1):
            for value in odd:
                args = [value] * n
                try:
                    f.impl(MSG, *args) if f.needs_input else f.impl(*args)
                except RuleError:
                    pass


# --- operators -------------------------------------------------------------------------------------


def test_arithmetic():
    assert OPERATORS["+"](1, 2) == 3 and OPERATORS["+"](1, 2.5) == 3.5
    assert OPERATORS["-"](1, 2.5) == -1.5
    assert OPERATORS["*"](3, 4) == 12 and OPERATORS["*"](10**20, 10**20) == 10**40
    assert OPERATORS["/"](4, 2) == 2.0 and type(OPERATORS["/"](4, 2)) is float
    assert OPERATORS["/"](1, 4) == 0.25


def test_plus_concatenates_when_a_side_is_a_string():
    assert OPERATORS["+"]("a", "b") == "ab"  # EMQX
    assert OPERATORS["+"]("a", 1) == "a1"
    assert OPERATORS["+"](1.5, "a") == "1.5a"
    assert OPERATORS["+"]("v", True) == "vtrue"
    assert OPERATORS["+"]("x", {"a": 1}) == 'x{"a":1}'
    assert OPERATORS["+"]("x", UNDEFINED) == "xundefined"
    assert OPERATORS["+"]("x", None) == "xnull"


def test_div_and_mod_follow_erlang_signs():
    assert OPERATORS["div"](7, 2) == 3
    assert OPERATORS["div"](-7, 2) == -3  # truncates toward zero
    assert OPERATORS["div"](7, -2) == -3
    assert OPERATORS["mod"](7, 2) == 1
    assert OPERATORS["mod"](-7, 2) == -1  # the dividend's sign (Erlang rem)
    assert OPERATORS["mod"](7, -2) == 1
    assert OPERATORS["mod"](-7, -2) == -1
    for x in range(-20, 21):
        for y in (-7, -3, -1, 1, 3, 7):
            assert OPERATORS["div"](x, y) * y + OPERATORS["mod"](x, y) == x


@pytest.mark.parametrize("op", ["/", "div", "mod"])
def test_division_by_zero(op):
    with pytest.raises(RuleError, match=rf"operator {re.escape(op)}: division by zero"):
        OPERATORS[op](1, 0)


@pytest.mark.parametrize(
    ("op", "a", "b"),
    [
        ("+", 1, True),
        ("+", None, 1),
        ("+", UNDEFINED, 1),
        ("-", "5", 1),
        ("*", [1], 2),
        ("/", 1, {}),
        ("div", 7.0, 2),
        ("mod", 7, 2.0),
        ("div", True, 1),
    ],
)
def test_operators_reject_non_numbers(op, a, b):
    with pytest.raises(RuleError, match=rf"^operator {re.escape(op)}: expected two"):
        OPERATORS[op](a, b)


def test_float_overflow_is_an_error_not_inf():
    with pytest.raises(RuleError, match="not a finite number"):
        OPERATORS["*"](1e308, 10)


def test_negate():
    assert negate(3) == -3 and negate(-2.5) == 2.5
    for bad in ("1", True, None, UNDEFINED):
        with pytest.raises(RuleError, match="unary -: expected a number"):
            negate(bad)


# --- math and bits --------------------------------------------------------------------------------


def test_math_agrees_with_python_math():  # EMQX compares with Erlang's math module
    for x in (1, 2, 7, 100):
        for name in ("sqrt", "exp", "log", "log10", "log2", "sin", "cos", "tan", "atan", "sinh", "cosh", "tanh"):
            assert call(name, x) == getattr(math, name)(x)
        assert call("power", x, 3) == math.pow(x, 3)
        assert call("fmod", x, 3) == math.fmod(x, 3)


def test_rounding_returns_integers():
    assert call("round", -2.5) == -3 and call("round", 2.4) == 2 and call("round", 0.49999999999999994) == 0
    assert call("round", 7) == 7 and call("ceil", 2) == 2 and call("floor", 2.0) == 2
    assert type(call("ceil", 1.1)) is int and type(call("floor", 1.9)) is int
    assert call("abs", -1.5) == 1.5  # EMQX takes only integers; floats accepted here


def test_bit_operations():  # EMQX: equal to Erlang's bnot band bor bxor bsl bsr
    for x in (-9, -1, 0, 1, 5, 2**70):
        assert call("bitnot", x) == ~x
        for y in (0, 1, 3, 64):
            assert call("bitand", x, y) == x & y
            assert call("bitor", x, y) == x | y
            assert call("bitxor", x, y) == x ^ y
            assert call("bitsl", x, y) == x << y
            assert call("bitsr", x, y) == x >> y
    assert call("bitsl", 16, -2) == 4 and call("bitsr", 1, -3) == 8  # negative shifts reverse


# --- type tests and conversions ---------------------------------------------------------------


def test_is_null_only_for_undefined():  # EMQX
    assert call("is_null", UNDEFINED) is True
    assert call("is_null", None) is False  # JSON null: use is_null_var
    assert call("is_null", "undefined") is False and call("is_null", "") is False
    assert call("is_null_var", None) is True and call("is_null_var", UNDEFINED) is True
    assert call("is_null_var", "null") is False
    for v in (UNDEFINED, None, "undefined", "null", "", "a"):
        assert call("is_not_null", v) is not call("is_null", v)
        assert call("is_not_null_var", v) is not call("is_null_var", v)


def test_type_tests():  # EMQX
    assert all(call("is_str", v) for v in ("a", "", "abc"))
    assert not any(call("is_str", v) for v in (1, True, None, UNDEFINED))
    assert all(call("is_bool", v) for v in (True, False))
    assert not any(call("is_bool", v) for v in ("a", "", 2, 1))
    assert all(call("is_int", v) for v in (1, 2, -1))
    assert not any(call("is_int", v) for v in (1.1, "a", True))
    assert all(call("is_float", v) for v in (1.1, 2.0, -1.2))
    assert not any(call("is_float", v) for v in (1, "a", ""))
    assert all(call("is_num", v) for v in (1.1, 2.0, -1.2, 1))
    assert not any(call("is_num", v) for v in ("a", "", True))
    assert all(call("is_map", v) for v in ({}, {"a": 1}))
    assert not any(call("is_map", v) for v in ("a", "{}", []))
    assert all(call("is_array", v) for v in ([], [1, 2]))
    assert not any(call("is_array", v) for v in ("", "[]", {}))
    assert all(call("is_empty", v) for v in ([], {}, "{}", "[]"))
    assert not any(call("is_empty", v) for v in ([1], {"a": "b"}, '{"a" : "b"}'))


def test_str():  # EMQX
    assert call("str", "abc") == "abc"
    assert call("str", "你好🐸") == "你好🐸"
    assert call("str", {"a": 1}) == '{"a":1}'
    assert call("str", [{"a": 1}, {"b": 1}]) == '[{"a":1},{"b":1}]'
    assert call("str", 1) == "1"
    assert call("str", 2.0) == "2.0"
    assert call("str", 1.0000000001) == "1.0000000001"
    assert call("str", 1 / 3) == "0.3333333333"  # at most 10 decimals
    assert call("str", True) == "true" and call("str", None) == "null" and call("str", UNDEFINED) == "undefined"
    assert call("str_utf8", {"a": "abc 你好"}) == '{"a":"abc 你好"}'


def test_int():  # EMQX
    assert call("int", "1") == 1
    assert call("int", "1.0") == 1
    assert call("int", 1) == 1
    assert call("int", 1.9) == 1
    assert call("int", 1.0001) == 1
    assert call("int", -1.5) == -2  # floored
    assert call("int", True) == 1 and call("int", False) == 0
    for bad in ("a", "1e5", " 1", "", None, [1]):  # Erlang number syntax only
        fails("int", bad)


def test_float():  # EMQX
    assert call("float", "1.0") == 1.0
    assert call("float", 1) == 1.0 and type(call("float", 1)) is float
    assert call("float", 1.9) == 1.9
    assert call("float", 1.0000000001) == 1.0000000001
    assert call("float", "-2.5e3") == -2500.0
    assert call("float", 3.14159, 2) == 3.14
    fails("float", "a")
    fails("float", True)
    fails("float", 1.5, 0, match="decimals")


def test_float2str():  # EMQX
    assert call("float2str", 20.2, 1) == "20.2"
    assert call("float2str", 20.2, 10) == "20.2"
    assert call("float2str", 20.2, 15) == "20.199999999999999"
    assert call("float2str", 20.2, 16) == "20.1999999999999993"
    assert call("float2str", 20.2, 0) == "20"


def test_bool():  # EMQX
    for v in (1, 1.0, True, "true"):
        assert call("bool", v) is True
    for v in (0, 0.0, False, "false"):
        assert call("bool", v) is False
    for v in (3, "yes", None, UNDEFINED):
        fails("bool", v)


def test_map_conversion():  # EMQX
    assert call("map", '{"a":1}') == {"a": 1}
    assert call("map", [["ver", "1.0"], ["name", "emqx"]]) == {"ver": "1.0", "name": "emqx"}
    for bad in ("a", "[1]", 1.0, None):
        fails("map", bad)


# --- strings ---------------------------------------------------------------------------------------


def test_trim():  # EMQX
    assert call("trim", "") == "" and call("ltrim", "") == "" and call("rtrim", "") == ""
    assert call("trim", " \t\r\nabc \u2028") == "abc"
    assert call("rtrim", " abc") == " abc"
    assert call("upper", True) == "TRUE"  # EMQX takes atoms by name


def test_substr():  # EMQX: the start counts from 0
    assert call("substr", "", 1) == ""
    assert call("substr", "abc", 1) == "bc"
    assert call("substr", "abcd", 1, 2) == "bc"
    assert call("substr", "abc", 5) == "" and call("substr", "abc", 0, 10) == "abc"
    fails("substr", "abc", 0, -1)


SPLITS = [  # EMQX: (string, separator, mode, result)
    ("", "/", None, []),
    ("/", "/", None, []),
    ("/a/b/c", "/", None, ["a", "b", "c"]),
    ("/a/b//c/", "/", None, ["a", "b", "c"]),
    ("a, b ,c", ",", None, ["a", " b ", "c"]),
    ("a,b,c\r\n", ",", None, ["a", "b", "c\r\n"]),
    ("", "/", "notrim", [""]),
    ("/", "/", "notrim", ["", ""]),
    ("/a/b//c/", "/", "notrim", ["", "a", "b", "", "c", ""]),
    ("哈哈, 你好, 是的\r\n", ",", "notrim", ["哈哈", " 你好", " 是的\r\n"]),
    ("", "/", "leading", []),
    ("/", "/", "leading", []),
    ("/a/b/c", "/", "leading", ["a/b/c"]),
    ("a/b//c/", "/", "leading", ["a", "b//c/"]),
    ("哈哈, 你好, 是的\r\n", ",", "leading", ["哈哈", " 你好, 是的\r\n"]),
    ("", "/", "leading_notrim", [""]),
    ("/", "/", "leading_notrim", ["", ""]),
    ("/a/b/c", "/", "leading_notrim", ["", "a/b/c"]),
    ("a b,c\r\n", ",", "leading_notrim", ["a b", "c\r\n"]),
    ("", "/", "trailing", []),
    ("/", "/", "trailing", []),
    ("/a/b/c", "/", "trailing", ["/a/b", "c"]),
    ("a/b//c/", "/", "trailing", ["a/b//c"]),
    ("哈哈, 你好, 是的\r\n", ",", "trailing", ["哈哈, 你好", " 是的\r\n"]),
    ("", "/", "trailing_notrim", [""]),
    ("/", "/", "trailing_notrim", ["", ""]),
    ("a/b//c/", "/", "trailing_notrim", ["a/b//c", ""]),
    ("a,b,c\n", ",", "trailing_notrim", ["a,b", "c\n"]),
    ("abc", "", None, ["abc"]),
]


@pytest.mark.parametrize(("s", "sep", "mode", "expected"), SPLITS)
def test_split(s, sep, mode, expected):
    assert call("split", s, sep, *([] if mode is None else [mode])) == expected


def test_tokens():  # EMQX
    assert call("tokens", "", "/") == []
    assert call("tokens", "/", "/") == []
    assert call("tokens", " /a/ b /c", " /") == ["a", "b", "c"]
    assert call("tokens", "a ,\nb,c\n", ", ") == ["a", "\nb", "c\n"]
    assert call("tokens", "a ,b,c\r\n", ", ") == ["a", "b", "c\r\n"]
    assert call("tokens", "a,b, c\n", ", ", "nocrlf") == ["a", "b", "c"]
    assert call("tokens", "a,b\r\n,c\n", ",", "nocrlf") == ["a", "b", "c"]
    assert call("tokens", "\r\n", ",", "nocrlf") == []
    assert call("tokens", "哈哈, 你好, 是的\r\n", ", ", "nocrlf") == ["哈哈", "你好", "是的"]


def test_concat():  # EMQX
    assert call("concat", "哈哈", "你好") == "哈哈你好"
    assert call("concat", call("concat", "a", "b"), "c") == "abc"
    assert call("concat", "", "a") == "a" and call("concat", "", "") == ""
    assert call("concat", "a", 1, True, 2.5, {"k": 1}) == 'a1true2.5{"k":1}'
    assert call("concat", ["a", "b", 3]) == "ab3"


def test_pad():  # EMQX
    assert call("pad", "abc", 0) == "abc"
    assert call("pad", "abc", 5, "trailing") == "abc  "
    assert call("pad", "abc", 5, "both") == " abc "
    assert call("pad", "abc", 6, "both") == " abc  "
    assert call("pad", "abc", 5, "leading") == "  abc"
    assert call("pad", "abc", 0, "leading") == "abc"
    assert call("pad", "abc", 5, "trailing", "e") == "abcee"
    assert call("pad", "abc", 5, "trailing", "ex") == "abcexex"
    assert call("pad", "abc", 5, "both", "e") == "eabce"
    assert call("pad", "abc", 5, "both", "ex") == "exabcex"
    assert call("pad", "abc", 5, "leading", "e") == "eeabc"
    assert call("pad", "abc", 5, "leading", "ex") == "exexabc"


def test_replace():  # EMQX
    assert call("replace", "ab c  ", " ", "::") == "ab::c::::"
    assert call("replace", "ab c  ", " ", "-", "all") == "ab-c--"
    assert call("replace", "ab c  ", " ", "-", "leading") == "ab-c  "
    assert call("replace", "ab c  ", " ", "-", "trailing") == "ab c -"
    assert call("replace", "abc", "", "-") == "abc"


def test_find():  # EMQX
    assert call("find", "acbcd", "c", "leading") == "cbcd"
    assert call("find", "acbcd", "e") == ""
    assert call("find", "", "c") == "" and call("find", "", "") == ""
    assert call("find", "acbcd", "c", "trailing") == "cd"
    assert call("find", "acbcd", "e", "trailing") == ""
    assert call("find", "", "", "trailing") == ""


def test_regex_functions():  # EMQX
    assert call("regex_match", "acbcd", "c") is True
    assert call("regex_match", "bcd", "(ac)+") is False
    assert call("regex_match", "", ".*") is True
    assert call("regex_match", "", "[a-z]+") is False
    assert call("regex_match", "exebd", "^[a-z]+$") is True
    assert call("regex_match", "e2xebd", "^[a-z]+$") is False
    assert call("regex_replace", "", "c.*", "e") == ""
    assert call("regex_replace", "accbcd", "c+", "[&]") == "a[cc]b[c]d"
    assert call("regex_replace", "a1b22", r"(\d+)", r"<\1|\g{1}|\&|\\>") == r"a<1|1|&|\>b<22|22|&|\>"
    assert call("regex_replace", "ab", "(x)?b", r"[\1\9]") == "a[]"
    assert call("regex_extract", "Number: 12345", r"(\d+)") == ["12345"]
    assert call("regex_extract", "Hello, world!", r"(\w+).*\s(\w+)") == ["Hello", "world"]
    assert call("regex_extract", "No numbers here!", r"(\d+)") == []
    assert call("regex_extract", "abc", "b") == []


def test_ascii_reads_the_first_byte():  # EMQX
    assert call("ascii", "a") == 97
    assert call("ascii", "é") == 0xC3  # the first UTF-8 byte, as EMQX reads it


def test_join_to_string():  # EMQX
    assert call("join_to_string", " ", ["a", "b", "c"]) == "a b c"
    assert call("join_to_string", ", ", [1, "c", {"a": 1}, [1, 2, 3]]) == '1, c, {"a":1}, [1,2,3]'
    assert call("join_to_string", ",", ["a"]) == "a"
    assert call("join_to_string", ",", []) == ""
    assert call("join_to_string", call("map_keys", '{"a":"a","b":1,"c":"c"}')) == "a, b, c"
    assert call("join_to_string", call("map_values", '{"a":"a","b":1,"c":"c"}')) == "a, 1, c"


def test_unescape():  # EMQX
    for escaped, plain in [("\\n", "\n"), ("\\t", "\t"), ("\\r", "\r"), ("\\b", "\b"), ("\\f", "\f"), ("\\v", "\v"),
                           ("\\'", "'"), ('\\"', '"'), ("\\?", "?"), ("\\a", "\x07"), ("\\\\", "\\")]:  # fmt: skip
        assert call("unescape", escaped) == plain
    assert call("unescape", "Hello, World!") == "Hello, World!"
    assert call("unescape", "hej\\x0Ahej") == "hej\nhej"
    assert call("unescape", "\\x41\\x42\\x43") == "ABC"
    assert call("unescape", "\\x0041") == "A"
    assert call("unescape", "\\x20AC") == "€"
    assert call("unescape", "Hello, \\x00004E16\\x0000754C") == "Hello, 世界"
    fails("unescape", "\\xG1", match="unrecognized escape sequence")
    fails("unescape", "\\x11000000", match="not a Unicode character")


# --- sprintf ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "args", "expected"),
    [
        ("Hello ~ts!", ("Shawn",), "Hello Shawn!"),  # EMQX
        ("Name: ~ts, Count: ~p", ("ABC", 2), "Name: ABC, Count: 2"),  # EMQX
        ("~s|~s|~s", (True, None, UNDEFINED), "true|null|undefined"),
        ("~p ~w", ("abc", 'a"b'), '<<"abc">> <<"a\\"b">>'),
        ("~p", ("é",), '<<"é"/utf8>>'),
        ("~w", ({"b": 1, "a": [1, 2.5, None, True]},), '#{<<"a">> => [1,2.5,null,true],<<"b">> => 1}'),
        ("~w ~w ~w ~w ~w ~w", (0.1, 1e20, 100000.0, 123456.0, 1e-4, -0.0), "0.1 1.0e20 1.0e5 123456.0 1.0e-4 -0.0"),
        ("~w", (2.0**53,), "9.007199254740992e15"),
        ("~d ~5d|~-5d|~5..0d", (42, 42, 42, 42), "42    42|42   |00042"),
        ("~3d", (12345,), "***"),
        ("~.16B ~.16b ~.2B ~.16# ~.16+", (255, 255, 5, 255, 255), "FF ff 101 16#FF 16#ff"),
        ("~.16x ~.16X", (31, "0x", 255, "0X"), "0x1f 0XFF"),
        ("~f ~.2f ~8.3f ~.1f", (3.14159, 3.14159, 3.14159, 2), "3.141590 3.14    3.142 2.0"),
        ("~e ~.3e", (1.0, 12345.678), "1.00000e+0 1.23e+4"),
        ("~g ~g ~g", (0.5, 1234.5, 123456.0), "0.500000 1234.50 1.23456e+5"),
        ("~c~3c~~~n", (97, 98), "abbb~\n"),
        ("~5s|~-5s|~.2s|~5.2s", ("abc", "abc", "abc", "abc"), "  abc|abc  |ab|   ab"),
        ("~*d", (4, 7), "   7"),
        ("~i~s", ("skipped", "x"), "x"),
        ("~P ~W", ([1, 2], 5, "a", 3), '[1,2] <<"a">>'),
        ("no directives", (), "no directives"),
    ],
)
def test_sprintf(fmt, args, expected):
    assert call("sprintf", fmt, *args) == expected


@pytest.mark.parametrize(
    ("fmt", "args", "match"),
    [
        ("~s ~s", ("a",), "needs more arguments"),
        ("~s", ("a", "b"), "uses 1 of the 2 arguments"),
        ("~q", (1,), "unknown control sequence ~q"),
        ("abc ~", (), "ends inside a control sequence"),
        ("~d", (1.5,), "~d expects an integer"),
        ("~s", (1,), "~s expects a string"),
        ("~f", ("1",), "~f expects a number"),
        ("~.1e", (1.0,), "precision of at least 2"),
        (5, (), "expected a format string"),
    ],
)
def test_sprintf_bad_format(fmt, args, match):
    fails("sprintf", fmt, *args, match=match)


# --- maps and arrays ------------------------------------------------------------------------------


def test_map_get():  # EMQX
    assert call("map_get", "a", {"a": 1}) == 1
    assert call("map_get", "a", {}) is UNDEFINED
    assert call("map_get", "a.c", {"a": {"b": 1}}) is UNDEFINED
    assert call("map_get", "a.c", {"a": {"b": 1}}, "dflt") == "dflt"
    assert call("map_get", "a.b", '{"a": {"b": 2}}') == 2  # JSON text is looked into
    assert call("map_get", "a.b", {"a": '{"b": 3}'}) == 3
    assert call("map_get", "a", "not json") is UNDEFINED
    assert call("map_get", "a", {"a": None}, 0) is None  # present but null is not missing


def test_map_put():  # EMQX
    assert call("map_put", "a", 1, {}) == {"a": 1}
    assert call("map_put", "a", 2, {"a": 1}) == {"a": 2}
    assert call("map_put", "a.c", 1, {"a": {"b": 1}}) == {"a": {"b": 1, "c": 1}}
    assert call("map_put", "a.b", 1, {"a": 5}) == {"a": {"b": 1}}
    assert call("map_put", "a", UNDEFINED, {"b": 1}) == {"b": 1}
    assert call("map_put", "a", 1, "not a map") == {"a": 1}
    original = {"a": {"b": 1}}
    call("map_put", "a.b", 2, original)
    assert original == {"a": {"b": 1}}  # the input is never changed


def test_mget_mput():  # EMQX
    assert call("mget", "a", {"a": 1}) == 1
    assert call("mget", "a", '{"a" : 1}') == 1
    assert call("mget", "a", {}) is UNDEFINED
    assert call("mget", "a", {}, 0) == 0
    assert call("mput", "a", 1, {}) == {"a": 1}
    assert call("mput", "a.b", 2, {"a.b": 1}) == {"a.b": 2}


def test_map_listings():  # EMQX
    m = {"a": 1, "b": "b"}
    assert call("map_to_entries", {}) == []
    assert call("map_to_entries", m) == [{"key": "a", "value": 1}, {"key": "b", "value": "b"}]
    assert call("map_to_entries", '{"a":1,"b":"b"}') == [{"key": "a", "value": 1}, {"key": "b", "value": "b"}]
    assert call("map_size", {}) == 0 and call("map_size", "{}") == 0 and call("map_size", [["a", "b"]]) == 1
    assert call("map_keys", '{"a":"a","b":1}') == ["a", "b"]


def test_arrays():  # EMQX
    assert call("nth", 4, [1, 2, 3, 4]) == 4
    assert call("length", []) == 0
    assert call("sublist", 4, [1, 2, 3, 4]) == [1, 2, 3, 4]
    assert call("sublist", 2, [1, 2, 3, 4]) == [1, 2]
    assert call("sublist", 4, 1, [1, 2, 3, 4]) == [4]
    assert call("sublist", 4, 2, [1, 2, 3, 4]) == [4]
    assert call("sublist", 5, 2, [1, 2, 3, 4]) == []
    assert call("sublist", 1, 1, [1, 2, 3, 4]) == [1]
    fails("sublist", 6, 1, [1, 2, 3, 4], match="outside")
    fails("nth", 0, [1], match="outside")


def test_contains_uses_exact_matching():  # EMQX
    assert call("contains", 1, [1, 2, 3, 4]) is True
    assert call("contains", {"a": "b"}, [{"a": 1}, {"a": "b"}]) is True
    assert call("contains", {"a": "b"}, [{"a": 1}]) is False
    assert call("contains", 3, [1, 2]) is False
    assert call("contains", "c", ["", "ab", 3, "a"]) is False
    assert call("contains", 1, [1.0, True]) is False  # Erlang =:=


# --- hashes, encodings, JSON ----------------------------------------------------------------------


def test_hash_lengths():  # EMQX: hex digests of 32, 40 and 64 characters
    for s in ("", "a", "你好", "x" * 1000):
        assert len(call("md5", s)) == 32 and len(call("sha", s)) == 40 and len(call("sha256", s)) == 64
    assert call("md5", "你好") == hashlib.md5("你好".encode()).hexdigest()
    assert call("hash", "sha512", "abc") == hashlib.sha512(b"abc").hexdigest()
    assert len(call("hash", "shake128", "abc")) == 32 and len(call("hash", "shake256", "abc")) == 64


def test_base64_and_hex_round_trip():  # EMQX
    for s in ("", "a", "hello world", "你好🐸", "\x00\x7f"):
        assert call("base64_decode", call("base64_encode", s)) == s
        assert call("hexstr2bin", call("bin2hexstr", s)) == s
    assert call("hexstr2bin", "6364f") == "\x06\x36\x4f"  # an odd count reads a leading 0
    assert call("hexstr2bin", "a") == "\n"
    assert call("bin2hexstr", "\x11!") == "1121"
    assert call("bin2hexstr", "\x01\x02", "0x") == "0x0102"
    assert call("hexstr2bin", "0x0102", "0x") == "\x01\x02"
    fails("hexstr2bin", "0x6364f", "ab", match="does not start with")
    fails("base64_decode", "/w==", match="not UTF-8")  # bytes that are not text


def test_json():
    assert call("json_decode", "5") == 5
    assert call("json_decode", '[1, 2.0, "x", null]') == [1, 2.0, "x", None]
    assert call("json_encode", {"a": UNDEFINED}) == '{"a":null}'
    assert call("json_encode", "x") == '"x"'
    for bad in ("NaN", "1e400", "", "{'a': 1}"):
        fails("json_decode", bad, match="invalid JSON")
    fails("json_decode", {"a": 1}, match="expected JSON text")


# --- jq and JMESPath -----------------------------------------------------------------------------


def test_jq():  # EMQX: a list of every output
    assert call("jq", ".", call("json_decode", '{"b": 2}')) == [{"b": 2}]
    assert call("jq", ".+1", call("json_decode", "5")) == [6]
    assert call("jq", ".", '{"b": 2}', 10000) == [{"b": 2}]
    assert call("jq", ".a[] | select(. > 1)", {"a": [1, 2, 3]}) == [2, 3]
    assert call("jq", "empty", "{}") == []
    assert call("jq", ".Payload.status", MSG["payload"]) == ["Faulted"]
    fails("jq", ".", "{bad", match="invalid JSON")
    fails("jq", 'error("boom")', "1", match="jq error: boom")
    fails("jq", ".", "1", -1, match="cannot be negative")


def test_jmespath():
    data = {"locations": [{"name": "Seattle", "state": "WA"}, {"name": "Bellevue", "state": "WA"}]}
    assert call("jmespath", "locations[?state == 'WA'].name | sort(@)", data) == ["Bellevue", "Seattle"]
    assert call("jmespath", "a.b", '{"a": {"b": [1, 2]}}') == [1, 2]
    assert call("jmespath", "missing", {}) is UNDEFINED
    fails("jmespath", "abs(a)", {"a": "x"}, match="invalid type")
    fails("jmespath", "a", "{bad", match="invalid JSON")


# --- conditionals and ids -----------------------------------------------------------------------


def test_coalesce():  # EMQX
    assert call("coalesce", []) is UNDEFINED
    assert call("coalesce", [UNDEFINED, UNDEFINED]) is UNDEFINED
    assert call("coalesce", [UNDEFINED, 42, UNDEFINED]) == 42
    assert call("coalesce", "hello", "world") == "hello"
    assert call("coalesce", UNDEFINED, "world") == "world"
    assert call("coalesce", None, 0) == 0
    assert call("coalesce_ne", ["", UNDEFINED, ""]) is UNDEFINED
    assert call("coalesce_ne", ["", 42, UNDEFINED]) == 42
    assert call("coalesce_ne", "hello", "") == "hello"


def test_uuids_differ():
    assert call("uuid_v4") != call("uuid_v4")
    assert len(call("uuid_v4")) == 36 and len(call("uuid_v4_no_hyphen")) == 32


# --- the message ------------------------------------------------------------------------------


def test_message_functions():
    assert call("topic") == "ocpp/cp/CP1"
    assert call("topic", 1) == "ocpp"
    assert call("payload") == MSG["payload"]
    assert call("payload", "Payload.connectorId") == 1
    assert call("payload", "Nope.x") is UNDEFINED
    assert call("flag", "dup") is False and call("flag", "nope") is UNDEFINED
    fails("topic", 0, match="no level 0")


def test_message_functions_without_the_field():  # EMQX: undefined (flags: an empty map)
    empty: dict = {}
    for name in ("msgid", "clientid", "username", "qos", "peerhost", "clientip", "topic", "payload"):
        assert lookup(name).impl(empty) is UNDEFINED, name
    assert lookup("flags").impl(empty) == {}
    assert lookup("flag").impl(empty, "dup") is UNDEFINED
    assert lookup("payload").impl({"payload": "not json"}, "a") is UNDEFINED
    assert lookup("payload").impl({"payload": {"a": {"b": {"c": "c"}}}}, "a.b.c") == "c"  # EMQX


def test_contains_topic():
    subs = [{"topic": "t/a", "qos": 1}, {"topic": "t/+", "qos": 2}, "plain/topic"]
    assert call("contains_topic", subs, "t/a") is True
    assert call("contains_topic", subs, "t/a", 1) is True
    assert call("contains_topic", subs, "t/a", 2) is False
    assert call("contains_topic", subs, "t/b") is False
    assert call("contains_topic", subs, "plain/topic") is True
    assert call("contains_topic_match", subs, "t/#") is True
    assert call("contains_topic_match", subs, "t/+", 1) is True
    assert call("contains_topic_match", subs, "x/#") is False


# --- time -------------------------------------------------------------------------------------


def test_now_shapes():
    for unit, digits in (("second", 0), ("millisecond", 3), ("microsecond", 6), ("nanosecond", 9)):
        assert type(call("now_timestamp", unit)) is int
        stamp = call("now_rfc3339", unit)
        assert IS_RFC3339(stamp), stamp
        fraction = re.search(r"\.(\d+)", stamp)
        assert (len(fraction.group(1)) if fraction else 0) == digits
    assert type(call("now_timestamp")) is int


def test_rfc3339_with_fixed_timestamps(utc, monkeypatch):
    assert call("unix_ts_to_rfc3339", 1700000000) == "2023-11-14T22:13:20+00:00"
    assert call("unix_ts_to_rfc3339", 1700000000123, "millisecond") == "2023-11-14T22:13:20.123+00:00"
    assert call("unix_ts_to_rfc3339", 1700000000000005, "microsecond") == "2023-11-14T22:13:20.000005+00:00"
    assert call("unix_ts_to_rfc3339", 0) == "1970-01-01T00:00:00+00:00"
    assert call("unix_ts_to_rfc3339", -1) == "1969-12-31T23:59:59+00:00"
    assert call("rfc3339_to_unix_ts", "2024-02-23T15:56:30.87Z", "millisecond") == 1708703790870
    assert call("rfc3339_to_unix_ts", "2024-02-23T15:56:30.879Z") == 1708703790  # fractions cut off
    assert call("rfc3339_to_unix_ts", "2024-02-23 07:56:30-00:00", "nanosecond") == 1708674990 * 10**9
    monkeypatch.setattr(functions_time, "local_offset", lambda _s: 8 * 3600)
    assert call("unix_ts_to_rfc3339", 1700000000) == "2023-11-15T06:13:20+08:00"


def test_rfc3339_round_trips(utc):  # EMQX
    for unit in ("second", "millisecond", "microsecond", "nanosecond"):
        epoch = call("now_timestamp", unit)
        assert call("rfc3339_to_unix_ts", call("unix_ts_to_rfc3339", epoch, unit), unit) == epoch


def test_format_date():
    ts = 1700000000123
    assert (
        call("format_date", "millisecond", "+08:00", "%Y-%m-%dT%H:%M:%S.%3N%:z", ts) == "2023-11-15T06:13:20.123+08:00"
    )
    assert call("format_date", "millisecond", "-04:30", "%z %::z %6N %N", ts) == "-0430 -04:30:00 123000 123000000"
    assert call("format_date", "second", 0, "%Y/%m/%d %% %q", 0) == "1970/01/01 %% %q"  # others are literal
    assert call("format_date", "second", "Z", "%H", 3600) == "01"
    assert IS_RFC3339(call("format_date", "second", "local", "%Y-%m-%dT%H:%M:%S%:z"))


@pytest.mark.parametrize(
    ("unit", "offset", "fmt"),
    [  # EMQX: date_to_unix_ts reads what format_date wrote
        ("second", "+07:00", "%m--%d--%Y---%H:%M:%S%z"),
        ("millisecond", "+04:00", "--%m--%d--%Y---%H:%M:%S:%3N%z"),
        ("second", "+08:00", "%Y-%m-%d-%H:%M:%S%z"),
        ("nanosecond", "-02:30", "%Y-%m-%d %H:%M:%S.%N%::z"),
    ],
)
def test_format_date_round_trips(unit, offset, fmt):
    for ts in (0, 1700000000, 1709217100):
        stamp = ts * {"second": 1, "millisecond": 1000, "nanosecond": 10**9}[unit] + (7 if unit != "second" else 0)
        assert call("date_to_unix_ts", unit, fmt, call("format_date", unit, offset, fmt, stamp)) == stamp
    # no offset in the format: the same offset given to both
    text = call("format_date", "second", "+04:00", "--%m--%d--%Y---%H:%M:%S", 1700000000)
    assert call("date_to_unix_ts", "second", "+04:00", "--%m--%d--%Y---%H:%M:%S", text) == 1700000000


@pytest.mark.parametrize(
    ("args", "expected"),
    [  # EMQX
        (("second", "+08:00", "%Y-%m-%d %H-%M-%S", "2024-03-01 10:30:38"), 1709260238),
        (("second", "+08:00", "%Y-%m-%d %H-%M-%S.%3N", "2024-03-01 10:30:38.333"), 1709260238),
        (("millisecond", "+08:00", "%Y-%m-%d %H-%M-%S.%3N", "2024-03-01 10:30:38.333"), 1709260238333),
        (("microsecond", "+08:00", "%Y-%m-%d %H-%M-%S.%3N", "2024-03-01 10:30:38.333"), 1709260238333000),
        (("nanosecond", "+08:00", "%Y-%m-%d %H-%M-%S.%3N", "2024-03-01 10:30:38.333"), 1709260238333000000),
        (("microsecond", "+08:00", "%Y-%m-%d %H-%M-%S.%6N", "2024-03-01 10:30:38.333444"), 1709260238333444),
        (("second", "%Y-%m-%d %H:%M:%S", "2022-05-26 10:40:12"), 1653561612),
        (("second", "%Y-%m-%d %H-%M-%S", "2022-05-26 10:40:12"), 1653561612),  # literals are not compared
        (("second", "%Y-%m-%d %H:%M:%S", "2022-05-26 10-40-12"), 1653561612),
        (("second", "%Y-%m-%d %H:%M:%S", "2024-02-29 14:31:40"), 1709217100),
        (("second", "%Y-%m-%d %H:%M:%S", "2024-03-01 12:44:31"), 1709297071),
        (("second", "%Y-%m-%d %H:%M:%S", "2100-03-01 12:44:31"), 4107588271),
        (("second", "+08:00", "%Y-%m-%d %H:%M:%S", "2024-02-29 14:31:40"), 1709188300),
        (("second", "+08:00", "%Y-%m-%d %H:%M:%S", "2024-03-01 12:44:31"), 1709268271),
        (("second", "+08:00", "%Y-%m-%d %H:%M:%S", "2100-03-01 12:44:31"), 4107559471),
        (("second", "%Y-%m-%d %H:%M:%S.%3N%:z", "2024-02-23 15:00:00.123+08:00"), 1708671600),
    ],
)
def test_date_to_unix_ts(args, expected):
    assert call("date_to_unix_ts", *args) == expected


@pytest.mark.parametrize(
    ("args", "match"),
    [  # EMQX: each of these is an error
        (("%Y-%m-%d %H:%M:%S", "2022-059999-26 10:40:12"), "does not match the format"),
        (("%y-%m-%d %H:%M:%S", "2022-05-26 10:40:12"), "does not match the format"),
        (("%Y-%d %H:%M:%S", "2022-32 10:40:12"), "gives no month"),
        (("%H:%M:%S", "10:40:12"), "gives no year"),
        (("%Y-%m-%d %H:%M:%S", "2022-05-32 10:40:12"), "not a valid date"),
        (("%Y-%m-%d %H:%M:%S", "2024-02-30 10:40:12"), "not a valid date"),
        (("%Y-%m-%d %H:%M:%S", "2024-02-3"), "shorter than the format"),
    ],
)
def test_date_to_unix_ts_errors(args, match):
    fails("date_to_unix_ts", "second", *args, match=match)


def test_timezone_to_offset_seconds():  # EMQX, for both names
    for name in ("timezone_to_offset_seconds", "timezone_to_second"):
        assert call(name, "+02:00:00") == 7200
        assert call(name, "-02:00:00") == -7200
        assert call(name, "+00:01:42") == 102
        assert call(name, "+0800") == 28800
        assert call(name, "z") == 0 and call(name, "Z") == 0
        assert call(name, 42) == 42
        assert call(name, UNDEFINED) == 0
        assert type(call(name, "local")) is int
        fails(name, "+24:00", match="expected a time offset")


def test_message_functions_read_the_rule_engines_lazy_columns():
    """The compiler passes its Env, whose payload/id/flags columns are computed on first use."""
    from engine.bus.message import Message
    from rules.env import Env

    message = Message("ocpp/cp/CP9", b'{"a": {"b": [1, 2]}}', qos=1, retain=True, headers={"clientid": "CP9"})
    env = Env.for_message(message)
    assert lookup("payload").impl(env) == '{"a": {"b": [1, 2]}}'
    assert lookup("payload").impl(env, "a.b") == [1, 2]
    assert lookup("flags").impl(env) == {"retain": True, "dup": False}
    assert lookup("flag").impl(env, "retain") is True
    assert type(lookup("msgid").impl(env)) is str
    assert lookup("clientid").impl(env) == "CP9"
    assert lookup("topic").impl(env, 3) == "CP9"
    assert lookup("username").impl(env) is UNDEFINED
    not_json = Env.for_message(Message("t", b"plain text"))
    assert lookup("payload").impl(not_json, "a") is UNDEFINED


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("substr", ("abc", 1, None)),
        ("float", (1.5, None)),
        ("split", ("a,b", ",", None)),
        ("tokens", ("a,b", ",", None)),
        ("sublist", (1, 1, None)),
        ("join_to_string", (",", None)),
        ("topic", (None,)),
        ("payload", (None,)),
        ("format_date", ("second", 0, "%Y", None)),
        ("date_to_unix_ts", ("second", 0, "%Y", None)),
        ("jq", (".", "1", None)),
    ],
)
def test_a_null_argument_is_not_a_missing_one(name, args):
    fails(name, *args)
