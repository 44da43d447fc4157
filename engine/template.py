"""`${var}` templates for actions: compiled once, rendered per output.

`${clientid}`, `${payload.Payload.status}` (a path; a JSON string on the way
is decoded, as EMQX does for a raw `payload`; a key in quotes, as
`${pub_props.'Content-Type'}`, is the key without them), `${.}` (the whole output).
Rendered into text, strings go in as they are, anything else as JSON;
`render_value` gives the value itself when the template is one variable
(for `qos`, `retain` and SQL parameters).
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from engine.undefined import UNDEFINED

_VAR = re.compile(r"\$\{([^{}]*)\}")


class TemplateError(ValueError):
    pass


def lookup(data: Any, path: tuple[str, ...]) -> Any:
    value = data
    for key in path:
        if type(value) is str:
            try:
                value = orjson.loads(value)
            except orjson.JSONDecodeError:
                return UNDEFINED
        if type(value) is dict:
            value = value.get(key, UNDEFINED)
        elif type(value) is list and key.isdigit() and 1 <= int(key) <= len(value):
            value = value[int(key) - 1]
        else:
            return UNDEFINED
    return value


def _json_default(value: Any) -> Any:
    if value is UNDEFINED:
        return None  # a missing field inside a JSON document is null
    return str(value)


def to_json(value: Any) -> bytes:
    """JSON of a rule output (or part of one), with `undefined` as null."""
    return orjson.dumps(value, default=_json_default)


def to_text(value: Any) -> str:
    if type(value) is str:
        return value
    if value is UNDEFINED:
        return "undefined"  # a placeholder on its own renders as EMQX does
    return to_json(value).decode()


def _getter(path: tuple[str, ...]) -> Any:
    """A function reading one placeholder's text from the data: the common one-key case direct."""
    if len(path) == 1:
        key = path[0]

        def one(data: Any) -> str:
            value = data.get(key, UNDEFINED) if type(data) is dict else lookup(data, path)
            return value if type(value) is str else to_text(value)

        return one
    return lambda data: to_text(lookup(data, path))


def _unquoted(step: str) -> str:
    """A path step as EMQX writes a key with a dash: `${pub_props.'Content-Type'}`."""
    if len(step) >= 2 and step[0] == step[-1] and step[0] in "'\"":
        return step[1:-1]
    return step


class Template:
    __slots__ = ("text", "parts", "single", "_literals", "_getters")

    def __init__(self, text: str) -> None:
        self.text = text
        self.parts: list[str | tuple[str, ...]] = []
        pos = 0
        for m in _VAR.finditer(text):
            if m.start() > pos:
                self.parts.append(text[pos : m.start()])
            name = m.group(1).strip()
            if not name:
                raise TemplateError(f"empty placeholder ${{}} in {text!r}")
            self.parts.append(() if name == "." else tuple(_unquoted(step) for step in name.split(".")))
            pos = m.end()
        if pos < len(text):
            self.parts.append(text[pos:])
        if "${" in "".join(p for p in self.parts if isinstance(p, str)):
            raise TemplateError(f"unclosed placeholder in {text!r}")
        self.single = len(self.parts) == 1 and isinstance(self.parts[0], tuple)
        # rendering interleaves fixed text with getters: literals[0] g0 literals[1] g1 ... literals[n]
        self._literals: list[str] = [""]
        self._getters: list[Any] = []
        for part in self.parts:
            if isinstance(part, str):
                self._literals[-1] += part
            else:
                self._getters.append(_getter(part))
                self._literals.append("")

    @property
    def variables(self) -> list[str]:
        return [".".join(p) or "." for p in self.parts if isinstance(p, tuple)]

    def render(self, data: Any) -> str:
        literals, getters = self._literals, self._getters
        if not getters:
            return literals[0]
        out = [literals[0]]
        for i, get in enumerate(getters):
            out.append(get(data))
            out.append(literals[i + 1])
        return "".join(out)

    def render_value(self, data: Any) -> Any:
        """The variable's value itself when the template is exactly one placeholder."""
        if self.single:
            return lookup(data, self.parts[0])  # type: ignore[arg-type]
        return self.render(data)

    def __repr__(self) -> str:
        return f"Template({self.text!r})"
