"""Rule SQL conformance, expressions: operators, comparisons, logic, IN, =~ and CASE.

Each case is SQL + input → the exact output or the exact error. Cases marked
"EMQX <name>" restate the SQL, input and result of that case of EMQX's own
rule-engine suites (emqx_rule_engine_SUITE, emqx_rulesql_SUITE); where EMQX 4
and 5 differ, EMQX 5 (rules.md) is the reference.
"""

from __future__ import annotations

from typing import Any

import pytest

from rules.tester import NoMatch, run_rule_test
from rules.values import UNDEFINED, RuleError


def value(expr: str, **context: Any) -> Any:
    """What one SELECT expression gives for a message_publish context."""
    out = run_rule_test(f'SELECT {expr} AS v FROM "t/#"', context)
    assert list(out) == ["v"]
    return out["v"]


def where(cond: str, **context: Any) -> bool:
    """Whether a WHERE condition lets the message through."""
    try:
        run_rule_test(f'SELECT 1 AS x FROM "t/#" WHERE {cond}', context)
    except NoMatch:
        return False
    return True


# --- arithmetic -----------------------------------------------------------------------


@pytest.mark.parametrize(("expr", "expected"), [
    ("1 - 1", 0),  # EMQX t_sqlselect_00
    ("-1 + 1", 0),  # EMQX t_sqlselect_00
    ("1 + 1", 2),  # EMQX t_sqlselect_00
    ("+1", 1),  # EMQX t_sqlselect_00
    ("1.5 + 1", 2.5),
    ("7 - 10", -3),
    ("6 * 7", 42),
    ("2.5 * 2", 5.0),
    ("7 / 2", 3.5),
    ("-(1 + 2)", -3),
    ("- -4", 4),
    ("1 + 2 * 3", 7),
    ("(1 + 2) * 3", 9),
    ("10 - 2 - 3", 5),
    ("12 / 2 / 3", 2.0),
    ("2 mod 2", 0),  # EMQX t_sqlselect_002
    ("mod(3, 2)", 1),  # EMQX t_sqlselect_002
    ("4 div 2", 2),  # EMQX t_sqlselect_002
    ("div(7, 2)", 3),  # EMQX t_sqlselect_002
    ("7 div (2)", 3),
    ("7 MOD 4 * 2", 6),
    ("-7 div 2", -3),  # Erlang div truncates toward zero
    ("-7 mod 2", -1),  # EMQX's mod is Erlang rem: the dividend's sign
    ("7 mod -2", 1),
])
def test_arithmetic(expr, expected):
    result = value(expr)
    assert result == expected and type(result) is type(expected)


def test_division_always_gives_a_float():
    assert value("4 / 2") == 2.0 and type(value("4 / 2")) is float


def test_unary_minus_of_a_field():
    assert value("-payload.n", payload={"n": 5}) == -5
    assert value("-payload.n", payload={"n": -2.5}) == 2.5


@pytest.mark.parametrize(("expr", "expected"), [
    ("'a' + 'b'", "ab"),
    ("payload.msg1 + payload.msg2", "hello world"),  # EMQX t_sqlselect_00 (rulesql_SUITE)
    ("'n=' + 1", "n=1"),  # EMQX 5: the other side is converted to a string
    ("1 + 'x'", "1x"),
    ("'v' + 1.5", "v1.5"),
    ("'flag:' + true", "flag:true"),
    ("clientid + '/' + topic", "c_emqx/t/a"),
])
def test_plus_concatenates_when_a_side_is_a_string(expr, expected):
    assert value(expr, payload={"msg1": "hello", "msg2": " world"}) == expected


@pytest.mark.parametrize(("expr", "message"), [
    ("1 / 0", "operator /: "),
    ("1 div 0", "operator div: "),
    ("1 mod 0", "operator mod: "),
    ("7 div 2.0", "operator div: "),
    ("7.5 mod 2", "operator mod: "),
    ("'a' - 1", "operator -: "),
    ("2 * 'b'", "operator *: "),
    ("1 + true", "operator +: "),
    ("payload.missing + 1", "operator +: "),
    ("payload.missing * 2", "operator *: "),
])
def test_arithmetic_errors_name_the_operator(expr, message):
    with pytest.raises(RuleError) as err:
        value(expr)
    assert str(err.value).startswith(message)


def test_unary_minus_of_a_non_number():
    with pytest.raises(RuleError, match=r"^unary -: expected a number, got \"a\"$"):
        value("-'a'")
    with pytest.raises(RuleError, match="^unary -: expected a number, got undefined$"):
        value("-payload.missing")


# --- comparisons -----------------------------------------------------------------------


@pytest.mark.parametrize(("expr", "expected"), [
    ("1 = 1", True),
    ("1 = 2", False),
    ("1.0 = 1", True),  # Erlang ==
    ("'1' = 1", True),  # a string against a number becomes a number
    ("1 = '1'", True),
    ("'1.0' = 1", True),
    ("'1.5' = 1.5", True),
    ("'-1.5e2' = -150", True),
    ("'+7' = 7", True),
    ("'10' > 9", True),  # compared as numbers ...
    ("'10' > '9'", False),  # ... but two strings compare as strings
    ("'abc' = 'abc'", True),
    ("'abc' < 'abd'", True),
    ("'b' >= 'a'", True),
    ("1 != 2", True),
    ("1 <> 1", False),
    ("2 >= 2", True),
    ("2 <= 1", False),
    ("3 > 2.5", True),
    ("2.5 < 2", False),
    ("true = 'true'", True),  # true/false/null against a string compare as text
    ("'true' = true", True),
    ("false = 'false'", True),
    ("true = 'True'", False),
    ("true != 'false'", True),
    ("payload.n = 'null'", True),
    ("payload.n != 'null'", False),
    ("null = 'null'", True),
    ("payload.n = null", True),  # the literal null is JSON's null ...
    ("payload.missing = null", False),  # ... not a missing field
    ("true = true", True),
    ("true = 1", False),  # true is not the number 1
    ("true > 1", True),  # across kinds, values order as Erlang terms: number < atom < string
    ("'a' > true", False),  # ... but a string against true compares with "true"
    ("payload.o = payload.o", True),
    ("payload.l = payload.l", True),
])
def test_comparisons(expr, expected):
    assert value(expr, payload={"n": None, "o": {"a": 1}, "l": [1, 2]}) is expected


def test_comparison_with_a_payload_field():
    assert where("payload.n = '5'", payload={"n": 5})
    assert where("payload.n > 4.5", payload={"n": 5})
    assert where("payload.s = 5", payload={"s": "5"})
    assert not where("payload.s = 6", payload={"s": "5"})


@pytest.mark.parametrize("expr", [
    "'abc' = 1",
    "1 < 'abc'",
    "' 1' = 1",  # Erlang's binary_to_integer takes no spaces ...
    "'1_000' = 1000",  # ... no underscores
    "'1e5' = 100000",  # ... and binary_to_float wants "1.0e5"
    "'.5' = 0.5",
    "'nan' = 1",
    "'inf' > 1",
    "'1.0e999' > 1",
])
def test_a_string_that_is_not_a_number_against_a_number_is_an_error(expr):
    text = expr.split("'")[1]
    with pytest.raises(RuleError) as err:
        value(expr)
    assert str(err.value) == f"cannot convert {text!r} to a number"


def test_a_comparison_error_in_where_is_an_error_not_a_no_match():
    with pytest.raises(RuleError, match="^cannot convert 'hello' to a number$"):
        run_rule_test('SELECT 1 AS x FROM "t/#" WHERE payload.msg > 5')


# `undefined` (a missing field) equals only undefined; any other comparison with it is false
@pytest.mark.parametrize(("op", "both_undefined", "one_undefined"), [
    ("=", True, False),  # EMQX t_sqlparse_compare_null_null / _null_notnull / _notnull_null
    ("!=", False, False),
    ("<>", False, False),
    (">", False, False),
    ("<", False, False),
    ("<=", True, False),
    (">=", True, False),
])
def test_undefined_on_one_or_both_sides(op, both_undefined, one_undefined):
    assert value(f"a {op} b") is both_undefined
    assert run_rule_test(f'SELECT \'b\' AS b, a {op} b AS c FROM "t/#"')["c"] is one_undefined
    assert run_rule_test(f'SELECT \'a\' AS a, a {op} b AS c FROM "t/#"')["c"] is one_undefined
    assert value(f"payload.missing {op} 1") is one_undefined
    assert value(f"1 {op} payload.missing") is one_undefined


def test_undefined_compared_with_the_word_undefined():
    # EMQX t_sqlparse_compare_undefined (EMQX 5 semantics: one side undefined is always false)
    sql = 'SELECT * FROM "t/#" WHERE dev != undefined'
    with pytest.raises(NoMatch):
        run_rule_test(sql, {"payload": "{}"})
    with pytest.raises(NoMatch):
        run_rule_test('SELECT \'d\' AS dev FROM "t/#" WHERE dev != undefined', {"payload": "{}"})
    with pytest.raises(NoMatch):
        run_rule_test('SELECT * FROM "t/#" WHERE dev != \'undefined\'', {"payload": "{}"})
    assert where("dev = undefined")


def test_undefined_variables_in_where():
    # EMQX t_sqlparse_undefined_variable
    out = run_rule_test('SELECT a, b FROM "t/#" WHERE a = b', {"payload": ""})
    assert out == {"a": UNDEFINED, "b": UNDEFINED}
    with pytest.raises(NoMatch):
        run_rule_test('SELECT a, b FROM "t/#" WHERE a > b', {"payload": '{"b":1}'})
    assert run_rule_test('SELECT a < b AS c FROM "t/#"', {"payload": '{"b":1}'}) == {"c": False}


def test_compare_selected_values():
    # EMQX t_sqlparse_compare
    assert run_rule_test('SELECT \'a\' AS a, \'a\' AS b, a = b AS c FROM "t/#"') == {"a": "a", "b": "a", "c": True}
    assert run_rule_test('SELECT is_null(a) AS c FROM "t/#"') == {"c": True}
    for op, expected in [("<", True), (">", False), ("=", False), (">=", False), ("<=", True)]:
        out = run_rule_test(f'SELECT 1 AS a, 2 AS b, a {op} b AS c FROM "t/#"')
        assert out == {"a": 1, "b": 2, "c": expected}


def test_is_null():
    assert value("payload.n IS NULL", payload={"n": None})
    assert value("payload.missing IS NULL")
    assert value("payload.msg IS NOT NULL")
    assert not value("payload.msg IS NULL")


# --- AND / OR / NOT -----------------------------------------------------------------------


@pytest.mark.parametrize(("expr", "expected"), [
    ("true AND true", True),
    ("true AND false", False),
    ("false OR true", True),
    ("false OR false", False),
    ("NOT false", True),
    ("NOT true", False),
    ("NOT (1 = 2)", True),
    ("true OR false AND false", True),  # AND binds tighter than OR
    ("(true OR false) AND false", False),
    ("NOT true OR true", True),  # NOT binds tighter than OR
    ("NOT 1", False),  # EMQX: NOT of anything but a boolean is false
    ("NOT 'true'", False),
    ("NOT x", False),
    ("NOT payload.n", False),
    ("1 AND true", False),  # only true is true
    ("'true' OR false", False),
    ("x OR true", True),
])
def test_logic(expr, expected):
    assert value(expr, payload={"n": None}) is expected


def test_where_with_and_or_not():
    # EMQX t_sqlselect_1: WHERE p.x = 1 and p.y = 2
    sql = 'SELECT json_decode(payload) AS p, payload FROM "t1" WHERE p.x = 1 and p.y = 2'
    assert run_rule_test(sql, {"topic": "t1", "payload": '{"x":1,"y":2}'}) == {
        "p": {"x": 1, "y": 2}, "payload": '{"x":1,"y":2}'}
    with pytest.raises(NoMatch):
        run_rule_test(sql, {"topic": "t1", "payload": '{"x":1,"y":1}'})
    # EMQX t_sqlselect_03 (rulesql_SUITE): + and = and OR in WHERE, "11" a string concatenation
    cond = "payload.x + payload.y = 2 or payload.x + payload.y = '11'"
    assert where(cond, payload={"x": 1, "y": 1})
    assert where(cond, payload={"x": "1", "y": "1"})
    assert not where(cond, payload={"x": 1, "y": 2})


def test_and_or_short_circuit():
    assert not where("false AND 'abc' > 1")
    assert where("true OR 'abc' > 1")
    with pytest.raises(RuleError):
        where("true AND 'abc' > 1")


# --- IN ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("expr", "expected"), [
    ("1 IN (1, 2)", True),
    ("3 IN (1, 2)", False),
    ("'a' IN ('a', 'b')", True),
    ("3 NOT IN (1, 2)", True),
    ("1 NOT IN (1, 2)", False),
    ("payload.status IN ('Faulted', 'Unavailable')", True),
    ("payload.status NOT IN ('Faulted', 'Unavailable')", False),
    ("clientid IN (username, 'c_emqx')", True),
    ("1 + 1 IN (2)", True),
    ("1 IN (1.0)", False),  # EMQX's IN is lists:member: an exact match, no conversion
    ("'1' IN (1)", False),
    ("true IN (1)", False),
    ("payload.missing IN (1, 'undefined')", False),
    ("x IN (y)", True),  # undefined is a member of a list holding undefined
])
def test_in(expr, expected):
    assert value(expr, payload={"status": "Faulted"}) is expected


def test_in_in_where():
    sql = 'SELECT clientid FROM "ocpp/#" WHERE payload.Action IN (\'BootNotification\', \'Heartbeat\')'
    assert run_rule_test(sql, {"topic": "ocpp/cp/CP1", "payload": {"Action": "Heartbeat"}}) == {"clientid": "c_emqx"}
    with pytest.raises(NoMatch):
        run_rule_test(sql, {"topic": "ocpp/cp/CP1", "payload": {"Action": "Authorize"}})


# --- =~ (topic filter match) -------------------------------------------------------------------------


@pytest.mark.parametrize(("expr", "expected"), [
    ("topic =~ 't/+'", True),
    ("topic =~ 't/#'", True),
    ("topic =~ '#'", True),
    ("topic =~ 'x/+'", False),
    ("'t/a/b' =~ 't/+'", False),
    ("'t/a/b' =~ 't/+/b'", True),
    ("'t' =~ 't/#'", True),  # '#' also matches the parent level
    ("'$SYS/x' =~ '#'", False),  # top-level wildcards never match $-topics
    ("'$SYS/x' =~ '+/x'", False),
    ("'$SYS/x' =~ '$SYS/#'", True),
    ("'$events/client_connected' =~ '$events/+'", True),
    ("payload.missing =~ 't/#'", False),
    ("topic =~ payload.missing", False),
])
def test_topic_match(expr, expected):
    assert value(expr) is expected


def test_topic_match_in_where():
    sql = 'SELECT clientid FROM "ocpp/#" WHERE topic =~ \'ocpp/cp/+\''
    assert run_rule_test(sql, {"topic": "ocpp/cp/CP1"}) == {"clientid": "c_emqx"}
    with pytest.raises(NoMatch):
        run_rule_test(sql, {"topic": "ocpp/cs/CP1"})


def test_topic_match_needs_strings():
    with pytest.raises(RuleError) as err:
        value("1 =~ 't/#'")
    assert str(err.value) == "=~ compares a topic with a topic filter, got 1 and 't/#'"


# --- CASE ---------------------------------------------------------------------------------------


CASE_ELSE = 'SELECT case when payload.x < 0 then 0 when payload.x > 7 then 7 else payload.x end AS y FROM "t/#"'
CASE_SWITCH = 'SELECT case payload.x when 1 then 2 when 2 then 3 else 4 end AS y FROM "t/#"'
CASE_NO_ELSE = 'SELECT case when payload.x < 0 then 0 when payload.x > 7 then 7 end AS y FROM "t/#"'


@pytest.mark.parametrize(("x", "y"), [(1, 1), (0, 0), (-1, 0), (7, 7), (8, 7)])
def test_case_when_else(x, y):
    # EMQX t_sqlparse_case_when_1
    assert run_rule_test(CASE_ELSE, {"payload": {"x": x}}) == {"y": y}


@pytest.mark.parametrize(("x", "y"), [(1, 2), (2, 3), (4, 4), (7, 4), (8, 4)])
def test_case_switch(x, y):
    # EMQX t_sqlparse_case_when_2
    assert run_rule_test(CASE_SWITCH, {"payload": {"x": x}}) == {"y": y}


@pytest.mark.parametrize(("x", "y"), [(1, UNDEFINED), (5, UNDEFINED), (0, UNDEFINED), (-1, 0), (7, UNDEFINED), (8, 7)])
def test_case_without_else_and_no_match_is_undefined(x, y):
    # EMQX t_sqlparse_case_when_3
    assert run_rule_test(CASE_NO_ELSE, {"payload": {"x": x}}) == {"y": y}


def test_case_switch_matches_exactly():
    # the switch form is a pattern match in EMQX: 1.0 is not WHEN 1, '1' is not WHEN 1
    assert run_rule_test(CASE_SWITCH, {"payload": {"x": 1.0}}) == {"y": 4}
    assert run_rule_test(CASE_SWITCH, {"payload": {"x": "1"}}) == {"y": 4}
    sql = 'SELECT case payload.s when \'Faulted\' then \'alarm\' end AS y FROM "t/#"'
    assert run_rule_test(sql, {"payload": {"s": "Faulted"}}) == {"y": "alarm"}
    assert run_rule_test(sql, {"payload": {"s": "Available"}}) == {"y": UNDEFINED}


def test_case_when_takes_only_true():
    sql = 'SELECT case when payload.f then \'yes\' else \'no\' end AS y FROM "t/#"'
    assert run_rule_test(sql, {"payload": {"f": True}}) == {"y": "yes"}
    assert run_rule_test(sql, {"payload": {"f": 1}}) == {"y": "no"}
    assert run_rule_test(sql, {"payload": {}}) == {"y": "no"}


def test_case_in_where_and_nested():
    sql = ('SELECT payload.x AS x FROM "t/#" '
           "WHERE (case when x > 0 then case when x > 10 then 'big' else 'small' end else 'neg' end) = 'small'")
    assert run_rule_test(sql, {"payload": {"x": 3}}) == {"x": 3}
    with pytest.raises(NoMatch):
        run_rule_test(sql, {"payload": {"x": 30}})


def test_case_branches_are_evaluated_lazily():
    sql = 'SELECT case when payload.x = 1 then 1 else 1 / 0 end AS y FROM "t/#"'
    assert run_rule_test(sql, {"payload": {"x": 1}}) == {"y": 1}
    with pytest.raises(RuleError, match="^operator /: "):
        run_rule_test(sql, {"payload": {"x": 2}})
