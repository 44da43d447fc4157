"""The EMQX rule SQL dialect, parsed with sqlglot.

EMQX's SQL is not standard SQL: FROM takes quoted MQTT topic filters, FOREACH
/ DO / INCASE replace SELECT for arrays, `=~` matches topics, `div` and `mod`
are operators (and functions), aliases may be paths (`AS a.b[1].c`; `AS a[0]`
prepends to a list, `AS a[-0]` appends). We keep sqlglot's parser for
every expression and handle the statement shape around it: the statement is
tokenized with sqlglot, its top-level clauses found, and each expression part
handed to sqlglot in a text of the same length as the original with the
other parts blanked out, so every position sqlglot reports is the operator's
own line and column.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, ClassVar

import sqlglot
from sqlglot import Dialect, exp, parser, tokens
from sqlglot.errors import ParseError, TokenError
# sqlglot.tokens has them for every version we allow (newer ones define them in tokenizer_core and
# re-export without saying so, which strict mypy reports)
from sqlglot.tokens import Token, TokenType  # type: ignore[attr-defined]

from engine.bus.topic import TopicError, validate_filter
from rules import limits
from rules.depth import TOO_DEEP, room_to_recurse, token_depth, tree_depth
from rules.values import HEAD, TAIL

# tokens that can end an operand: after one, `mod` / `div` is the infix operator
_OPERAND_END = {
    TokenType.NUMBER, TokenType.STRING, TokenType.VAR, TokenType.IDENTIFIER, TokenType.R_PAREN,
    TokenType.R_BRACKET, TokenType.TRUE, TokenType.FALSE, TokenType.NULL,
}


class EmqxDialect(Dialect):
    class Tokenizer(tokens.Tokenizer):
        KEYWORDS = {
            **tokens.Tokenizer.KEYWORDS,
            "=~": TokenType.RLIKE,
            "DIV": TokenType.DIV,
            "MOD": TokenType.MOD,
        }

        def tokenize(self, sql: str) -> list[Token]:
            found = super().tokenize(sql)
            # `mod(3, 2)` and `div(7, 2)` are EMQX calls and `x.mod` a key: only between two
            # operands are they operators
            for i, token in enumerate(found):
                if token.token_type not in (TokenType.DIV, TokenType.MOD) or not i:
                    continue
                before = found[i - 1].token_type
                call = i + 1 < len(found) and found[i + 1].token_type == TokenType.L_PAREN
                if before == TokenType.DOT or (call and before not in _OPERAND_END):
                    token.token_type = TokenType.VAR
            return found

    class Parser(parser.Parser):
        # every call stays a plain named call (exp.Anonymous): the function
        # library, not sqlglot, decides what upper() or concat() mean
        FUNCTIONS: ClassVar[dict[str, Any]] = {}
        FUNCTION_PARSERS: ClassVar[dict[str, Any]] = {}
        NO_PAREN_FUNCTIONS: ClassVar[dict[Any, Any]] = {}
        FACTOR = {**parser.Parser.FACTOR, TokenType.DIV: exp.IntDiv}


class RuleSyntaxError(Exception):
    """SQL that cannot be a rule; the message names the rule, line, column and what was expected."""

    def __init__(self, message: str, line: int = 0, col: int = 0, rule_id: str = "") -> None:
        self.message = message
        self.line = line
        self.col = col
        self.rule_id = rule_id
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"line {self.line}, column {self.col}: " if self.line else ""
        rule = f"rule {self.rule_id}: " if self.rule_id else ""
        return f"{rule}{where}{self.message}"


@dataclass
class ParsedRule:
    sql: str
    foreach: bool
    fields: list[exp.Expression]  # SELECT list, or the FOREACH expressions (the last is the collection)
    topics: list[str]
    where: exp.Expression | None = None
    do_fields: list[exp.Expression] = field(default_factory=list)
    incase: exp.Expression | None = None
    path_aliases: dict[str, list[Any]] = field(default_factory=dict)  # placeholder alias → path


def parse_rule(sql: str, rule_id: str = "") -> ParsedRule:
    try:
        with room_to_recurse():
            return _Parser(sql).parse()
    except RuleSyntaxError as exc:
        exc.rule_id = rule_id
        raise


def literal_value(node: exp.Literal) -> str | int | float:
    """A SQL literal's value: a string, else an int or a float as written."""
    if node.is_string:
        return node.this
    text = node.this
    return float(text) if any(ch in text for ch in ".eE") else int(text)


def _position(sql: str, offset: int) -> tuple[int, int]:
    line = sql.count("\n", 0, offset) + 1
    col = offset - (sql.rfind("\n", 0, offset) + 1) + 1
    return line, col


class _Parser:
    def __init__(self, sql: str) -> None:
        self.sql = sql
        try:
            self.tokens: list[Token] = EmqxDialect().tokenize(sql)
        except TokenError as exc:
            raise self._unreadable(exc) from None

    def _unreadable(self, exc: TokenError) -> RuleSyntaxError:
        """sqlglot does not say where it stopped: find the quote or comment that never ends."""
        sql, i = self.sql, 0
        while i < len(sql):
            if sql[i] in "'\"":
                end = i + 1
                while (end := sql.find(sql[i], end)) >= 0 and sql[end + 1 : end + 2] == sql[i]:
                    end += 2  # a doubled quote is the quote itself
                if end < 0:
                    return self.fail(f"the string starting with {sql[i]} is never closed", offset=i)
                i = end + 1
            elif sql.startswith("--", i):
                end = sql.find("\n", i)
                i = len(sql) if end < 0 else end + 1
            elif sql.startswith("/*", i):
                end = sql.find("*/", i + 2)
                if end < 0:
                    return self.fail("the comment starting with /* is never closed", offset=i)
                i = end + 2
            else:
                i += 1
        return RuleSyntaxError(f"cannot read the SQL: {exc}")

    def fail(self, message: str, token: Token | None = None, offset: int | None = None) -> RuleSyntaxError:
        if token is not None:
            offset = token.start
        if offset is None:
            return RuleSyntaxError(message)
        return RuleSyntaxError(message, *_position(self.sql, offset))

    # --- statement shape ----------------------------------------------------------------

    def parse(self) -> ParsedRule:
        if not self.tokens:
            raise self.fail("the SQL is empty; expected SELECT ... FROM \"topic\"", offset=0)
        first = self.tokens[0]
        word = first.text.upper()
        if word not in ("SELECT", "FOREACH"):
            raise self.fail(f"expected SELECT or FOREACH, found {first.text!r}", first)
        foreach = word == "FOREACH"
        deep = token_depth(self.tokens)
        if deep is not None:
            limits.count("sql_depth")
            raise self.fail(TOO_DEEP, deep)
        clauses = self._clauses(foreach)
        if "FROM" not in clauses:
            raise self.fail("FROM is missing: a rule needs FROM \"topic/filter\"", offset=len(self.sql.rstrip()))
        topics = self._topics(clauses)
        rule = ParsedRule(self.sql, foreach, [], topics)
        main, aliases = self._text_with(clauses, keep={word, "FROM", "WHERE"})
        rule.path_aliases.update(aliases)
        select = self._sqlglot(main)
        rule.fields = list(select.expressions)
        if foreach and isinstance(rule.fields[-1], exp.Star):
            start, end = clauses["FOREACH"]
            star = next(t for t in reversed(self.tokens[start:end]) if t.token_type == TokenType.STAR)
            raise self.fail("FOREACH needs an expression for its list, not *", star)
        where = select.args.get("where")
        rule.where = where.this if where is not None else None
        if "DO" in clauses:
            text, aliases = self._text_with(clauses, keep={"DO"})
            rule.path_aliases.update(aliases)
            rule.do_fields = list(self._sqlglot(text).expressions)
        if "INCASE" in clauses:
            text, _ = self._text_with(clauses, keep={"INCASE"})
            incase = self._sqlglot(text).expressions
            start, end = clauses["INCASE"]
            if len(incase) != 1:
                raise self.fail("INCASE takes one condition", self.tokens[start])
            if isinstance(incase[0], exp.Alias):
                alias = next((t for t in self.tokens[start:end] if t.token_type == TokenType.ALIAS), None)
                raise self.fail("INCASE takes a condition, not a field with an alias", alias or self.tokens[start])
            rule.incase = incase[0]
        for node in (*rule.fields, rule.where, *rule.do_fields, rule.incase):
            if node is not None and (deep_node := tree_depth(node)) is not None:
                limits.count("sql_depth")
                deep_start = next((n.meta["start"] for n in deep_node.walk() if "start" in n.meta), None)
                raise self.fail(TOO_DEEP, offset=deep_start)
        return rule

    def _clauses(self, foreach: bool) -> dict[str, tuple[int, int]]:
        """Top-level clause keyword → (index of its keyword token, index after its last token)."""
        allowed = ["FOREACH", "DO", "INCASE", "FROM", "WHERE"] if foreach else ["SELECT", "FROM", "WHERE"]
        found: list[tuple[str, int]] = []
        opened: list[Token] = []
        closing = {TokenType.R_PAREN: TokenType.L_PAREN, TokenType.R_BRACKET: TokenType.L_BRACKET}
        for i, token in enumerate(self.tokens):
            kind = token.token_type
            if kind in (TokenType.L_PAREN, TokenType.L_BRACKET):
                opened.append(token)
            elif kind in closing:
                if not opened or opened[-1].token_type != closing[kind]:
                    raise self.fail(f"unbalanced {token.text!r}", token)
                opened.pop()
            if opened:
                continue
            word = token.text.upper() if kind not in (TokenType.STRING, TokenType.IDENTIFIER) else ""
            if word in allowed and (i == 0 or word != allowed[0]):
                if word in dict(found):
                    raise self.fail(f"{word} appears twice", token)
                found.append((word, i))
            elif word in ("SELECT", "FOREACH", "DO", "INCASE", "GROUP", "ORDER", "LIMIT", "JOIN", "HAVING", "UNION") and i:
                raise self.fail(f"{word} is not allowed here", token)
        if opened:
            raise self.fail(f"{opened[-1].text!r} is never closed", opened[-1])
        for (before, _), (word, i) in itertools.pairwise(found):
            if allowed.index(word) < allowed.index(before):
                raise self.fail(f"{word} must come before {before}: " + " ... ".join(allowed), self.tokens[i])
        clauses = {}
        for n, (word, start) in enumerate(found):
            end = found[n + 1][1] if n + 1 < len(found) else len(self.tokens)
            if end == start + 1:
                raise self.fail(f"{word} needs something after it", self.tokens[start])
            last = self.tokens[end - 1]
            if word != "FROM" and last.token_type in (TokenType.COMMA, TokenType.ALIAS):
                # sqlglot takes `SELECT a, FROM`; EMQX does not
                raise self.fail(f"{last.text!r} needs something after it", last)
            clauses[word] = (start, end)
        return clauses

    def _topics(self, clauses: dict[str, tuple[int, int]]) -> list[str]:
        start, end = clauses["FROM"]
        topics = []
        expect_topic = True
        for token in self.tokens[start + 1 : end]:
            if expect_topic:
                if token.token_type not in (TokenType.STRING, TokenType.IDENTIFIER) or not self._quoted(token):
                    raise self.fail(f"expected a quoted topic filter after FROM, found {token.text!r}", token)
                try:
                    validate_filter(token.text)
                except TopicError as exc:
                    raise self.fail(f"bad topic filter {token.text!r}: {exc}", token) from None
                topics.append(token.text)
            elif token.token_type != TokenType.COMMA:
                raise self.fail(f"expected ',' or WHERE after the topic, found {token.text!r}", token)
            expect_topic = not expect_topic
        if expect_topic:
            raise self.fail("expected a topic filter after ','", self.tokens[end - 1])
        return topics

    def _quoted(self, token: Token) -> bool:
        return self.sql[token.start] in "'\""

    # --- handing parts to sqlglot ---------------------------------------------------------

    def _text_with(self, clauses: dict[str, tuple[int, int]], keep: set[str]) -> tuple[str, dict[str, list[Any]]]:
        """The SQL with every clause not in `keep` blanked, FROM's topics replaced by a table
        name, and the first kept keyword turned into SELECT: same length, same lines."""
        chars = [ch if ch == "\n" else " " for ch in self.sql]
        first = True
        aliases: dict[str, list[Any]] = {}
        for word, (start, end) in clauses.items():
            if word not in keep:
                continue
            lo = self.tokens[start].start
            hi = self.tokens[end - 1].end + 1
            chars[lo:hi] = self.sql[lo:hi]
            keyword = self.tokens[start]
            if first:
                # FOREACH/DO/INCASE become SELECT; the keyword's own room (or, for DO and
                # INCASE, the blanked text before it) holds the six letters
                at = keyword.start if word in ("SELECT", "FOREACH") else 0
                chars[keyword.start : keyword.end + 1] = " " * (keyword.end + 1 - keyword.start)
                chars[at : at + 6] = "SELECT"
                first = False
            if word == "FROM":
                topics_start = self.tokens[start + 1].start
                chars[topics_start:hi] = [ch if ch == "\n" else " " for ch in self.sql[topics_start:hi]]
                chars[topics_start] = "t"
            else:
                self._placeholder_path_aliases(start, end, chars, aliases)
        return "".join(chars), aliases

    def _placeholder_path_aliases(self, start: int, end: int, chars: list[str], aliases: dict[str, list[Any]]) -> None:
        """`AS a.b[1].c` is not SQL: give sqlglot a one-word alias of the same length instead."""
        toks = self.tokens
        i = start
        while i < end:
            if toks[i].token_type == TokenType.ALIAS and i + 2 < end:
                parts, after = self._alias_path(i + 1, end)
                if len(parts) > 1:
                    lo, hi = toks[i + 1].start, toks[after - 1].end + 1
                    name = f"ǂ{len(aliases)}".ljust(hi - lo, "_")
                    if len(name) > hi - lo:
                        raise self.fail("too many path aliases in one rule", toks[i + 1])
                    chars[lo:hi] = name
                    aliases[name] = parts
                    i = after
                    continue
            i += 1

    def _alias_path(self, i: int, end: int) -> tuple[list[Any], int]:
        """The steps of the alias starting at token i (names, 1-based indexes, HEAD for `[0]`,
        TAIL for `[-0]`) and the index of the token after it."""
        toks = self.tokens
        parts: list[Any] = [toks[i].text]
        i += 1
        while i < end:
            kind = toks[i].token_type
            if kind == TokenType.DOT and i + 1 < end and toks[i].end + 1 == toks[i + 1].start:
                parts.append(toks[i + 1].text)
                i += 2
            elif kind == TokenType.L_BRACKET:
                at = i + 1 + (i + 1 < end and toks[i + 1].token_type == TokenType.DASH)
                if not (at + 1 < end and toks[at].text.isdigit() and toks[at + 1].token_type == TokenType.R_BRACKET):
                    raise self.fail("an index in an alias is a whole number: a[1], a[-1], a[0], a[-0]", toks[i])
                n = int(toks[at].text)
                negative = at > i + 1
                parts.append((TAIL if negative else HEAD) if n == 0 else (-n if negative else n))
                i = at + 2
            else:
                break
        return parts, i

    def _sqlglot(self, text: str) -> exp.Select:
        try:
            tree = sqlglot.parse_one(text, dialect=EmqxDialect)
        except ParseError as exc:
            info = exc.errors[0] if exc.errors else {}
            message = info.get("description") or str(exc)
            if message.startswith("Required keyword"):
                message = "incomplete expression"  # sqlglot names its node class here
            near = (info.get("highlight") or "").strip()
            col = info.get("col", 0)
            if near:
                message += f" near {near!r}"
                col = max(1, col - len(near) + 1)  # sqlglot points at the end of the token
            raise RuleSyntaxError(message, info.get("line", 0), col) from None
        except TokenError as exc:
            raise RuleSyntaxError(f"cannot read the SQL: {exc}") from None
        except RecursionError:
            limits.count("sql_depth")  # deeper than the tokens showed (a run of prefix operators)
            raise self.fail(TOO_DEEP) from None
        if not isinstance(tree, exp.Select):
            raise self.fail("expected SELECT ... FROM \"topic\"")
        return tree
