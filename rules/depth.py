"""How deep rule SQL may nest: refused with a clear error before anything recurses too far.

sqlglot's parser spends about 20-25 Python frames per level of parentheses,
CASE or function call (measured: 45 parentheses already exhaust Python's
default limit of 1,000 frames), and the compiler and the code generator
recurse once per node. So:

- `token_depth`: before sqlglot sees the SQL, the nesting of `(`, `[`, CASE
  and runs of prefix operators (NOT, unary -) is counted on the tokens;
  beyond `MAX_SQL_DEPTH` the rule is refused where the limit is crossed
  (2,000 parentheses cost one pass over the tokens, no parse);
- `tree_depth`: after parsing, the depth of each expression tree, walked
  without recursion, which catches long operator chains (`1+1+...+1` parses
  flat and compiles as a 1,000-deep tree);
- `room_to_recurse`: parsing and compiling run with Python's recursion limit
  raised by what `MAX_SQL_DEPTH` levels need (measured up to 3,000 levels
  without exhausting the C stack), restored afterwards; a RecursionError
  that still happens is reported as the same error, never a traceback.

At run time a compiled rule recurses at most once per level (the closures;
the generated function not at all), well inside the default limit.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlglot import exp
# sqlglot.tokens has them for every version we allow (newer ones define them in tokenizer_core and
# re-export without saying so, which strict mypy reports)
from sqlglot.tokens import Token, TokenType  # type: ignore[attr-defined]

from rules.limits import MAX_SQL_DEPTH

_FRAMES_PER_LEVEL = 30
_EXTRA_FRAMES = MAX_SQL_DEPTH * _FRAMES_PER_LEVEL + 2_000

_OPEN = {TokenType.L_PAREN, TokenType.L_BRACKET, TokenType.L_BRACE, TokenType.CASE}
_CLOSE = {TokenType.R_PAREN, TokenType.R_BRACKET, TokenType.R_BRACE, TokenType.END}
_PREFIX = {TokenType.NOT, TokenType.DASH, TokenType.PLUS}

TOO_DEEP = f"the expression is nested too deeply (the limit is {MAX_SQL_DEPTH} levels)"


def token_depth(tokens: list[Token]) -> Token | None:
    """The first token at which the nesting goes past MAX_SQL_DEPTH, or None."""
    depth = run = 0
    for token in tokens:
        kind = token.token_type
        if kind in _PREFIX:
            run += 1
        else:
            run = 0
            if kind in _OPEN:
                depth += 1
            elif kind in _CLOSE:
                depth = max(0, depth - 1)
        if depth + run > MAX_SQL_DEPTH:
            return token
    return None


def tree_depth(root: exp.Expression) -> exp.Expression | None:
    """A node deeper than MAX_SQL_DEPTH in the tree, or None (an explicit stack, no recursion)."""
    stack = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_SQL_DEPTH:
            return node
        stack.extend((child, depth + 1) for child in node.iter_expressions())
    return None


_lock = threading.Lock()
_users = 0
_saved = 0


@contextmanager
def room_to_recurse() -> Iterator[None]:
    """Python's recursion limit raised for parsing and compiling one rule (re-entrant)."""
    global _users, _saved
    with _lock:
        if _users == 0:
            _saved = sys.getrecursionlimit()
            sys.setrecursionlimit(_saved + _EXTRA_FRAMES)
        _users += 1
    try:
        yield
    finally:
        with _lock:
            _users -= 1
            if _users == 0:
                sys.setrecursionlimit(_saved)
