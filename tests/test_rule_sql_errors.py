"""Rule SQL conformance, compile-time errors: each names the rule, the line and the column.

A rule that does not parse, or names an unknown function or calls one with the
wrong number of arguments, is rejected when it is compiled (at load and at
reload), never when a message arrives. The exact text of each message is
asserted: `rule <id>: line <l>, column <c>: <what is wrong>`.
"""

from __future__ import annotations

import pytest

from rules.compiler import compile_sql
from rules.sql import RuleSyntaxError
from rules.tester import run_rule_test


def error(sql: str, rule_id: str = "r1") -> RuleSyntaxError:
    with pytest.raises(RuleSyntaxError) as err:
        compile_sql(sql, rule_id)
    return err.value


@pytest.mark.parametrize(("sql", "message"), [
    # syntax errors
    ('SELECT a b c FROM "t/#"', "line 1, column 12: Invalid expression / Unexpected token near 'c'"),
    ('SELECT a,\n  b c d\nFROM "t"', "line 2, column 7: Invalid expression / Unexpected token near 'd'"),
    ('SELECT a FROM "t/#" WHERE a = = 1', "line 1, column 31: incomplete expression near '='"),
    ('SELECT a FROM "t" WHERE a = 1 AND', "line 1, column 31: incomplete expression near 'AND'"),
    ('SELECT a FROM "t/#" WHERE a =~ ', "line 1, column 29: incomplete expression near '=~'"),
    ('SELECT a AS b AS c FROM "t"', "line 1, column 15: Invalid expression / Unexpected token near 'AS'"),
    ('SELECT case when a then 1 FROM "t/#"', "line 1, column 25: Expected END after CASE near '1'"),
    ('SELECT a,\nFROM "t/#"', "line 1, column 9: ',' needs something after it"),
    ('SELECT a AS FROM "t"', "line 1, column 10: 'AS' needs something after it"),
    ('FOREACH payload.xs DO item, FROM "t"', "line 1, column 27: ',' needs something after it"),
    ("SELECT 'abc FROM \"t/#\"", "line 1, column 8: the string starting with ' is never closed"),
    ('SELECT a -- it\'s\nFROM "t/#" WHERE b = \'x', "line 2, column 22: the string starting with ' is never closed"),
    ('SELECT "abc FROM t', 'line 1, column 8: the string starting with " is never closed'),
    ('SELECT a /* x FROM "t"', "line 1, column 10: the comment starting with /* is never closed"),
    ("", 'line 1, column 1: the SQL is empty; expected SELECT ... FROM "topic"'),
    ("  \n ", 'line 1, column 1: the SQL is empty; expected SELECT ... FROM "topic"'),
    ("UPDATE x SET a = 1", "line 1, column 1: expected SELECT or FOREACH, found 'UPDATE'"),
    ('SELECT FROM "t/#"', "line 1, column 1: SELECT needs something after it"),
    ('foreach FROM "t/#"', "line 1, column 1: FOREACH needs something after it"),
    ('SELECT a FROM "t/#" WHERE', "line 1, column 21: WHERE needs something after it"),
    ('SELECT a FROM "t" WHERE b = 1 WHERE c = 2', "line 1, column 31: WHERE appears twice"),
    ('SELECT a WHERE b = 1 FROM "t"', "line 1, column 22: FROM must come before WHERE: SELECT ... FROM ... WHERE"),
    ('FOREACH payload.xs INCASE item > 1 DO item FROM "t"',
     "line 1, column 36: DO must come before INCASE: FOREACH ... DO ... INCASE ... FROM ... WHERE"),
    ('SELECT a FROM "t" WHERE a = 1 DO b', "line 1, column 31: DO is not allowed here"),
    ('SELECT a FROM "t/#" LIMIT 1', "line 1, column 21: LIMIT is not allowed here"),
    ('SELECT a FROM "t/#" GROUP BY a', "line 1, column 21: expected ',' or WHERE after the topic, found 'GROUP BY'"),
    ('FOREACH * FROM "t"', "line 1, column 9: FOREACH needs an expression for its list, not *"),
    ('SELECT 1 AS c[x] FROM "t"',
     "line 1, column 14: an index in an alias is a whole number: a[1], a[-1], a[0], a[-0]"),
    ('SELECT a FROM "t" WHERE a LIKE \'x%\'', "line 1, column 25: \"a LIKE 'x%'\" is not supported in rule SQL"),
    ('SELECT x FROM "t" WHERE a IN (SELECT 1)', "line 1, column 25: IN takes a list of values"),
    # unknown functions, wrong arity
    ('SELECT nosuch(1) FROM "t/#"', "line 1, column 8: unknown function nosuch()"),
    ('SELECT upper(a) AS x,\n       upper(nosuch(b)) AS y FROM "t"', "line 2, column 14: unknown function nosuch()"),
    ('SELECT a FROM "t" WHERE NoSuch(a) = 1 AND b = 2', "line 1, column 25: unknown function NoSuch()"),
    ('SELECT count(*) FROM "t"', "line 1, column 8: unknown function count()"),
    ('SELECT\n  upper(a, b, c) AS x\nFROM "t/#"', "line 2, column 3: upper() takes 1 argument, not 3"),
    ('SELECT upper(a) AS x,\n       upper(a, b) AS y FROM "t"', "line 2, column 8: upper() takes 1 argument, not 2"),
    ('SELECT abs() FROM "t/#"', "line 1, column 8: abs() takes 1 argument, not 0"),
    ('SELECT mod(1) FROM "t/#"', "line 1, column 8: mod() takes 2 arguments, not 1"),
    ('FOREACH payload.xs DO upper() AS u FROM "t/#"', "line 1, column 23: upper() takes 1 argument, not 0"),
    ('FOREACH payload.xs INCASE nosuch(item) FROM "t/#"', "line 1, column 27: unknown function nosuch()"),
    # missing FROM, bad topic filters
    ("SELECT a", 'line 1, column 9: FROM is missing: a rule needs FROM "topic/filter"'),
    ('SELECT a\nWHERE a = 1', 'line 2, column 12: FROM is missing: a rule needs FROM "topic/filter"'),
    ("SELECT a FROM", "line 1, column 10: FROM needs something after it"),
    ("SELECT a FROM t/#", "line 1, column 15: expected a quoted topic filter after FROM, found 't'"),
    ("SELECT a FROM 5", "line 1, column 15: expected a quoted topic filter after FROM, found '5'"),
    ('SELECT a FROM "t/#/x"', "line 1, column 15: bad topic filter 't/#/x': # must be a whole level and the last one"),
    ('SELECT a FROM "t/a+"', "line 1, column 15: bad topic filter 't/a+': + must be a whole level"),
    ("SELECT a\nFROM 't/1',\n     'a#'",
     "line 3, column 6: bad topic filter 'a#': # must be a whole level and the last one"),
    ('SELECT a FROM ""', "line 1, column 15: bad topic filter '': a topic cannot be empty"),
    ('SELECT a FROM "t/#",', "line 1, column 20: expected a topic filter after ','"),
    ('SELECT a FROM "t/#" "u/#"', "line 1, column 21: expected ',' or WHERE after the topic, found 'u/#'"),
    ('SELECT a FROM "t/#" WHERE a = 1 FROM "x"', "line 1, column 33: FROM appears twice"),
    # unbalanced parentheses and brackets
    ('SELECT (a + 1 FROM "t/#"', "line 1, column 8: '(' is never closed"),
    ('SELECT a + 1) FROM "t/#"', "line 1, column 13: unbalanced ')'"),
    ('SELECT a FROM "t/#" WHERE (a = 1', "line 1, column 27: '(' is never closed"),
    ('SELECT a FROM "t/#"\nWHERE ((a = 1) OR b = 2', "line 2, column 7: '(' is never closed"),
    ('SELECT a FROM "t/#" WHERE a = 1)', "line 1, column 32: unbalanced ')'"),
    ('SELECT a FROM "t" WHERE (a = 1]', "line 1, column 31: unbalanced ']'"),
    ('SELECT a.b.c[1 FROM "t/#"', "line 1, column 13: '[' is never closed"),
    ('SELECT upper(a FROM "t/#"', "line 1, column 13: '(' is never closed"),
    # INCASE takes a condition
    ('FOREACH payload.s AS s INCASE s.x = 1 AS y FROM "t/#"',
     "line 1, column 39: INCASE takes a condition, not a field with an alias"),
    ('FOREACH payload.s AS s\nINCASE s.x AS y\nFROM "t/#"',
     "line 2, column 12: INCASE takes a condition, not a field with an alias"),
    ('FOREACH payload.s AS s INCASE s.x = 1, s.y = 2 FROM "t/#"', "line 1, column 24: INCASE takes one condition"),
])
def test_compile_errors(sql, message):
    err = error(sql)
    assert str(err) == f"rule r1: {message}"
    assert (err.rule_id, f"line {err.line}, column {err.col}: {err.message}") == ("r1", message)


def test_the_message_names_the_rule():
    sql = 'SELECT payload.Payload.connectorId AS c\nFROM "ocpp/cp/+"\nWHERE nope(c)'
    assert str(error(sql, "faults")) == "rule faults: line 3, column 7: unknown function nope()"
    with pytest.raises(RuleSyntaxError) as err:
        run_rule_test(sql)
    assert str(err.value) == "rule rule_test: line 3, column 7: unknown function nope()"


def test_keywords_and_functions_are_case_insensitive():
    assert compile_sql('select UPPER(clientid) as u from "t/#" where payload.x = 1', "r1").topics == ["t/#"]
    assert compile_sql('Foreach payload.xs As x Do x InCase x > 1 From "t/#" Where true', "r1").foreach
