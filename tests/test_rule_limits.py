"""Limits of rule functions and rule SQL (issue 12, items 2, 3, 4, 12): each refusal is a clear
rule error, counted in rules.limits, and the process keeps working."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.config.schema import RuleEngineSettings
from engine.config.types import Duration, Size
from rules import limits
from rules.compiler import compile_sql
from rules.functions import OPERATORS, lookup
from rules.limits import MAX_SQL_DEPTH
from rules.sql import RuleSyntaxError
from rules.tester import rule_test_response, run_rule_test
from rules.values import RuleError

pytestmark = pytest.mark.timeout(60)


def call(name, *args):
    return lookup(name).impl(*args)


def refused(limit: str):
    """Context: the block raises a RuleError counted under `limit`."""
    class Check:
        def __enter__(self):
            self.before = limits.REFUSED[limit]
            self.raises = pytest.raises(RuleError)
            self.error = self.raises.__enter__()
            return self.error

        def __exit__(self, *exc):
            swallowed = self.raises.__exit__(*exc)
            assert limits.REFUSED[limit] == self.before + 1, (limit, limits.REFUSED)
            return swallowed

    return Check()


@pytest.fixture
def small_strings(monkeypatch):
    monkeypatch.setattr(limits, "_current", limits.FunctionLimits(max_string_size=1000))


# --- item 12: deep SQL ---------------------------------------------------------------------------

DEEP = [
    ("2,000 parentheses", "SELECT " + "(" * 2000 + "1" + ")" * 2000 + ' AS x FROM "t/#"'),
    ("500 nested CASE", "SELECT " + "CASE WHEN true THEN " * 500 + "1" + " END" * 500 + ' AS x FROM "t/#"'),
    ("500 nested calls", "SELECT " + "abs(" * 500 + "1" + ")" * 500 + ' AS x FROM "t/#"'),
    ("500 nested arrays", "SELECT " + "[" * 500 + "1" + "]" * 500 + ' AS x FROM "t/#"'),
    ("1,000 NOTs", 'SELECT 1 AS x FROM "t/#" WHERE ' + "NOT " * 1000 + "false"),
    ("a chain of 5,000 +", "SELECT " + "+".join(["1"] * 5000) + ' AS x FROM "t/#"'),
    ("a chain of 2,000 AND", 'SELECT 1 AS x FROM "t/#" WHERE ' + " AND ".join(["true"] * 2000)),
    ("a path of 1,000 steps", "SELECT payload" + ".a" * 1000 + ' AS x FROM "t/#"'),
    ("deep in FOREACH ... DO", "FOREACH payload.xs DO " + "(" * 2000 + "item" + ")" * 2000 + ' AS v FROM "t/#"'),
]


@pytest.mark.parametrize(("what", "sql"), DEEP, ids=[d[0] for d in DEEP])
def test_deep_sql_is_a_syntax_error_not_a_recursion_error(what, sql):
    before = limits.REFUSED["sql_depth"]
    with pytest.raises(RuleSyntaxError, match=f"rule r1: .*nested too deeply \\(the limit is {MAX_SQL_DEPTH} levels\\)"):
        compile_sql(sql, "r1")
    assert limits.REFUSED["sql_depth"] == before + 1
    status, answer = rule_test_response({"sql": sql, "context": {}})
    assert status == 400 and answer["code"] == "BAD_REQUEST" and "nested too deeply" in answer["message"]


def test_the_limit_is_where_the_error_says():
    """The token check points at the parenthesis that crosses the limit."""
    sql = "SELECT " + "(" * 2000 + "1" + ")" * 2000 + ' AS x FROM "t/#"'
    with pytest.raises(RuleSyntaxError) as err:
        compile_sql(sql)
    assert (err.value.line, err.value.col) == (1, len("SELECT ") + MAX_SQL_DEPTH + 1)


@pytest.mark.parametrize("generate", [True, False])
def test_rules_below_the_limit_compile_and_run(generate):
    """Just below the limit rules still work, generated or as closures, at the default recursion
    limit (the generated function falls back to the closures past Python's 200 nested parentheses)."""
    n = MAX_SQL_DEPTH - 10
    cases = [
        ("SELECT " + "abs(" * n + "-1" + ")" * n + ' AS x FROM "t/#"', {"x": 1}),
        ("SELECT " + "+".join(["1"] * n) + ' AS x FROM "t/#"', {"x": n}),
        ("SELECT " + "(" * n + "2" + ")" * n + ' AS x FROM "t/#"', {"x": 2}),
        ("SELECT " + "CASE WHEN true THEN " * (n // 2) + "3" + " END" * (n // 2) + ' AS x FROM "t/#"', {"x": 3}),
        ('SELECT 1 AS x FROM "t/#" WHERE ' + " AND ".join(["payload.msg = 'hello'"] * n), {"x": 1}),
    ]
    from rules.env import Env

    for sql, expected in cases:
        rule = compile_sql(sql, "deep", generate=generate)
        assert rule.apply(Env({"payload": '{"msg": "hello"}'})) == [expected], sql[:60]


def test_a_deep_rule_in_the_config_is_a_config_error(tmp_path):
    import subprocess

    from tests.gateway import BIN

    deep = "(" * 2000 + "1" + ")" * 2000
    conf = tmp_path / "gateway.conf"
    conf.write_text(f'rule_engine.rules.deep.sql = """SELECT {deep} AS x FROM "t/#" """\n')
    out = subprocess.run([BIN, "check-config", "-c", str(conf)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out
    assert "config error: rule deep: line 1, column" in out.stderr and "nested too deeply" in out.stderr
    assert "Traceback" not in out.stderr and "RecursionError" not in out.stderr
    out = subprocess.run([BIN, "run", "-c", str(conf)], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 3, out  # `run` refuses every rule that does not load this way ("cannot start")
    assert "rules do not load:\n  rule deep: line 1, column" in out.stderr and "nested too deeply" in out.stderr
    assert "Traceback" not in out.stderr + out.stdout


# --- item 4: strings a function builds ------------------------------------------------------------


def test_pad_with_a_long_filler_is_refused_before_it_is_built():
    """The issue's case: 1,000,000 missing characters, each padded by a 2,000-character filler,
    would be 2 GB; refused from the sizes alone."""
    with refused("string_size") as err:
        call("pad", "abc", 1_000_000, "trailing", "x" * 2000)
    assert "pad(): the result would be 1999994003 characters, over the limit of 8388608" in str(err.value)
    assert "rule_engine.max_string_size" in str(err.value)
    assert call("pad", "abc", 7, "both", "xy") == "xyxyabcxyxy"  # the usual case is unchanged


def test_every_string_building_function_checks_the_cap(small_strings):
    big = "a" * 600
    cases = [
        ("pad", ("abc", 600, "leading", "xy")),
        ("concat", (big, big)),
        ("concat", ([big, big],)),
        ("join_to_string", ("-", [big, big])),
        ("replace", ("aaa", "a", big)),
        ("replace", (big, "a", "aa", "all")),
        ("regex_replace", (big, "a", "&&")),
        ("sprintf", ("~s~s", big, big)),
        ("sprintf", ("~*c", 2000, 97)),
        ("bin2hexstr", (big,)),
        ("base64_encode", (big * 2,)),
        ("json_encode", ([big, big],)),
        ("str", ({"a": big, "b": big},)),
        ("upper", ("ß" * 600,)),
    ]
    for name, args in cases:
        with refused("string_size") as err:
            call(name, *args)
        assert str(err.value).startswith(f"{name}(): ") and "max_string_size" in str(err.value), (name, err.value)
    with refused("string_size") as err:
        OPERATORS["+"](big, big)
    assert str(err.value).startswith("operator +: ")
    # at the cap, all is well
    assert call("concat", "a" * 500, "b" * 500) == "a" * 500 + "b" * 500
    assert call("pad", "", 500, "trailing", "xy") == "xy" * 500


def test_json_of_a_shared_value_is_measured_before_it_is_encoded(small_strings):
    """[a, a] nested 40 times is 40 small lists in memory and 2^40 copies of `a` as JSON."""
    value = ["x" * 10]
    for _ in range(40):
        value = [value, value]
    with refused("string_size"):
        call("json_encode", value)
    with refused("string_size"):
        run_rule_test('SELECT concat(payload.v, payload.v) AS x FROM "t/#"', {"payload": {"v": "y" * 600}})


def test_the_limits_come_from_the_rule_engine_settings(monkeypatch):
    monkeypatch.setattr(limits, "_current", limits._current)
    limits.configure(RuleEngineSettings(jq_function_default_timeout=Duration(0.05), jq_function_max_memory=Size(0),
                                        max_string_size=Size(10)))
    assert limits.current() == limits.FunctionLimits(jq_timeout=0.05, jq_max_memory=0, max_string_size=10)
    with refused("string_size"):
        call("concat", "123456", "789012")
    defaults = RuleEngineSettings()
    assert (defaults.jq_function_default_timeout, defaults.jq_function_max_memory, defaults.max_string_size) == (
        0.2, 256 * 1024 * 1024, 8 * 1024 * 1024)


# --- item 3: regular expressions -------------------------------------------------------------------


def test_a_backtracking_pattern_answers_at_once():
    """The issue's pattern doubles its time per character on a backtracking engine (27 letters:
    7.6 s); on RE2 100,000 letters are nothing."""
    pattern = "^([a-zA-Z0-9]+)+$"
    for text in ("a" * 27 + "!", "a" * 100_000 + "!"):
        assert call("regex_match", text, pattern) is False
        assert call("regex_extract", text, pattern) == []
        assert call("regex_replace", text, pattern, "x") == text
    assert call("regex_match", "a" * 100_000, pattern) is True
    assert call("regex_match", "x" * 50_000, "(x+x+)+y") is False


@pytest.mark.parametrize(("pattern", "named"), [
    (r"(a)\1", r"backreferences (\1)"),
    ("(?P<n>a)(?P=n)", "named backreferences (?P=name)"),
    ("a(?=b)", "lookahead (?=...)"),
    ("a(?!b)", "negative lookahead (?!...)"),
    ("(?<=a)b", "lookbehind (?<=...)"),
    ("(?<!a)b", "negative lookbehind (?<!...)"),
    ("a++", "possessive quantifiers (++)"),
    ("x{2000}", "too large"),
])
def test_what_re2_cannot_do_is_refused_by_name(pattern, named):
    for name, args in (("regex_match", ("ab", pattern)), ("regex_replace", ("ab", pattern, "x")),
                       ("regex_extract", ("ab", pattern))):
        with refused("regex") as err:
            call(name, *args)
        assert str(err.value).startswith(f"{name}(): invalid regular expression") and named in str(err.value)


def test_a_malformed_pattern_is_an_error_but_not_a_limit():
    before = dict(limits.REFUSED)
    with pytest.raises(RuleError, match=r"regex_match\(\): invalid regular expression \"\(a\": missing \)"):
        call("regex_match", "a", "(a")
    assert limits.REFUSED == before


def test_regex_replace_stops_past_its_match_limit(monkeypatch):
    """RE2 is linear, but its wrapper spends a few µs a match: a pattern matching the empty
    string on 2 MB of text is 2 million matches (~10 s). Refused past regex_max_matches."""
    with refused("regex") as err:
        call("regex_replace", "1" * 2_000_000, "[^0-9]*", "")
    assert str(err.value) == ("regex_replace(): the pattern matches more than 10000 times in the text "
                              "(rule_engine.regex_max_matches)")
    assert call("regex_replace", "a1b2" * 2000, "[^0-9]*", "") == "12" * 2000  # 8,001 matches
    monkeypatch.setattr(limits, "_current", limits.FunctionLimits(regex_max_matches=3))
    assert call("regex_replace", "abc", "b", "x") == "axc"
    with refused("regex"):
        call("regex_replace", "abcd", "", "-")
    limits.configure(RuleEngineSettings(regex_max_matches=0))  # 0: no cap
    assert call("regex_replace", "abcd", "", "-") == "-a-b-c-d-"


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
                    | st.text(), lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner), max_leaves=30))
def test_the_json_size_check_never_overestimates(value):
    """The pre-check is a lower bound of the real text: a value under the cap is never refused."""
    import json

    from rules.functions_base import _json_size_at_least

    assert _json_size_at_least(value, 10**9) <= len(json.dumps(value, ensure_ascii=False, separators=(",", ":")))
