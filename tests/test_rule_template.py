"""Action templates: compiled once, rendered per output."""

from __future__ import annotations

import pytest

from engine.template import Template, TemplateError
from engine.undefined import UNDEFINED

OUT = {"clientid": "CP1", "n": 5, "f": 1.5, "ok": True, "none": None, "m": {"a": [1, 2]},
       "payload": '{"Payload": {"status": "Faulted"}}', "list": ["x", "y"]}


@pytest.mark.parametrize(
    "text,expected",
    [
        ("ocpp/cs/${clientid}", "ocpp/cs/CP1"),
        ("${n}/${f}/${ok}/${none}", "5/1.5/true/null"),
        ("${m}", '{"a":[1,2]}'),
        ("${m.a}", "[1,2]"),
        ("${payload.Payload.status}", "Faulted"),  # a JSON string on the way is decoded
        ("${list.2}", "y"),
        ("${nope}", "undefined"),
        ("${m.a.b}", "undefined"),
        ("no placeholders", "no placeholders"),
        ("${ clientid }", "CP1"),
        ("a${clientid}b${n}c", "aCP1b5c"),
    ],
)
def test_render(text, expected):
    assert Template(text).render(OUT) == expected


def test_whole_output():
    import orjson

    assert orjson.loads(Template("${.}").render(OUT)) == OUT


def test_render_value_keeps_types_for_a_single_placeholder():
    assert Template("${n}").render_value(OUT) == 5
    assert Template("${ok}").render_value(OUT) is True
    assert Template("${nope}").render_value(OUT) is UNDEFINED
    assert Template("x${n}").render_value(OUT) == "x5"


def test_variables():
    assert Template("a/${b.c}/${.}").variables == ["b.c", "."]


@pytest.mark.parametrize("text", ["a/${", "${}", "${a}/${"])
def test_bad_templates(text):
    with pytest.raises(TemplateError):
        Template(text)


def test_undefined_inside_json_is_null_and_alone_is_undefined():
    import orjson

    out = {"a": UNDEFINED, "b": [1, UNDEFINED], "c": "x"}
    assert orjson.loads(Template("${.}").render(out)) == {"a": None, "b": [1, None], "c": "x"}
    assert Template("v=${a}").render(out) == "v=undefined"
