"""INSERT templates: placeholders become bound parameters, batches become multi-row INSERTs."""

from __future__ import annotations

import re

import pytest

from connectors.sql_template import SqlTemplate, SqlTemplateError
from engine.undefined import UNDEFINED


def test_placeholders_and_quoted_placeholders():
    t = SqlTemplate("INSERT INTO t (a, b, c) VALUES (${a}, '${b.c}', 'literal')", "qmark")
    assert t.statement() == "INSERT INTO t (a, b, c) VALUES (?, ?, 'literal')"
    assert t.values({"a": 1, "b": {"c": "x"}}) == [1, "x"]


def test_multi_row_keeps_what_follows_values():
    t = SqlTemplate("INSERT INTO t (id, v) VALUES (${id}, ${v}) ON CONFLICT (id) DO NOTHING", "format")
    assert t.multi_row
    assert t.statement(3) == "INSERT INTO t (id, v) VALUES (%s, %s), (%s, %s), (%s, %s) ON CONFLICT (id) DO NOTHING"


def test_format_style_escapes_percent():
    t = SqlTemplate("INSERT INTO t (pct, v) VALUES ('100%', ${v})", "format")
    assert t.statement() == "INSERT INTO t (pct, v) VALUES ('100%%', %s)"


def test_not_an_insert_values_is_one_row_at_a_time():
    t = SqlTemplate("UPDATE cp SET status = ${s} WHERE id = ${id}", "qmark")
    assert not t.multi_row and t.statement(5) == "UPDATE cp SET status = ? WHERE id = ?"


def test_value_conversion():
    out = {"n": 1, "f": 1.5, "b": True, "m": {"k": [1]}, "none": None, "s": "x"}
    sqlite = SqlTemplate("INSERT INTO t VALUES (${n}, ${f}, ${b}, ${m}, ${none}, ${s}, ${missing}, ${.})", "qmark")
    assert sqlite.values(out)[:7] == [1, 1.5, 1, '{"k":[1]}', None, "x", None]
    pg = SqlTemplate("INSERT INTO t VALUES (${n}, ${f}, ${b}, ${m}, ${none}, ${s}, ${missing})", "format")
    assert pg.values(out) == ["1", "1.5", "true", '{"k":[1]}', None, "x", None]
    assert pg.values({"n": UNDEFINED})[0] is None


def test_escaped_quotes_in_literals():
    t = SqlTemplate("INSERT INTO t VALUES ('it''s', ${x})", "qmark")
    assert t.statement() == "INSERT INTO t VALUES ('it''s', ?)"


@pytest.mark.parametrize(
    "sql,message",
    [
        ("INSERT INTO t VALUES (1)", "no ${...} placeholders"),
        ("INSERT INTO t VALUES (${})", "empty placeholder"),
        ("INSERT INTO t VALUES (${x)", "unclosed placeholder"),
        ("INSERT INTO t VALUES ('${x}-suffix')", "must be a whole value"),
        ("INSERT INTO t VALUES ('open, ${x})", "unclosed string literal"),
    ],
)
def test_bad_templates(sql, message):
    with pytest.raises(SqlTemplateError, match=re.escape(message)):
        SqlTemplate(sql, "qmark")
