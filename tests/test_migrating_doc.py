"""docs/migrating-from-emqx.md stays true: every ```hocon block in it loads through the config loader
(warnings allowed: the doc shows the keys that have no effect), and every key the schema accepts
without effect is named in it."""

from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path

import pytest

from engine.config import ConfigError, load_settings_with_warnings
from engine.config.schema import NoEffect, Settings

DOC = Path(__file__).resolve().parent.parent / "docs" / "migrating-from-emqx.md"
BLOCK = re.compile(r"^```hocon\n(.*?)^```", re.MULTILINE | re.DOTALL)


def hocon_blocks(text: str) -> list[tuple[int, str]]:
    """(line number, text) of each ```hocon block."""
    return [(text.count("\n", 0, m.start()) + 1, m.group(1)) for m in BLOCK.finditer(text)]


BLOCKS = hocon_blocks(DOC.read_text(encoding="utf-8"))


def test_the_doc_has_hocon_examples():
    assert len(BLOCKS) >= 5  # the config section alone has six


def test_the_extractor_finds_each_block_whole():
    text = "a\n```hocon\nx = 1\ny { z = 2 }\n```\nb\n```\nnot = hocon\n```\n```hocon\nw = 3\n```\n"
    assert hocon_blocks(text) == [(2, "x = 1\ny { z = 2 }\n"), (10, "w = 3\n")]


@pytest.mark.parametrize("line,block", BLOCKS, ids=[f"line{line}" for line, _ in BLOCKS])
def test_each_hocon_example_loads(tmp_path, line, block):
    path = tmp_path / "example.conf"
    path.write_text(block)
    try:
        load_settings_with_warnings(path, {}, overlay=False)
    except ConfigError as exc:
        pytest.fail(f"{DOC.name}:{line}: the example does not load:\n" + "\n".join(exc.errors))


def no_effect_keys(cls: type = Settings, seen: set[type] | None = None) -> set[str]:
    """The names of every schema key marked NoEffect."""
    seen = set() if seen is None else seen
    if cls in seen:
        return set()
    seen.add(cls)
    names: set[str] = set()
    for name, tp in typing.get_type_hints(cls, include_extras=True).items():
        if typing.get_origin(tp) is typing.Annotated and any(isinstance(m, NoEffect) for m in typing.get_args(tp)[1:]):
            names.add(name)
        stack = [tp]
        while stack:  # dataclasses inside Annotated, unions, lists and maps
            t = stack.pop()
            if dataclasses.is_dataclass(t):
                names |= no_effect_keys(t, seen)  # type: ignore[arg-type]
            stack.extend(typing.get_args(t))
    return names


def test_every_key_without_effect_is_named_in_the_doc():
    text = DOC.read_text(encoding="utf-8")
    named = {word for span in re.findall(r"`([^`\n]+)`", text) for word in re.findall(r"\w+", span)}
    missing = sorted(no_effect_keys() - named)
    assert not missing, f"keys accepted with no effect but not named (in `...`) in {DOC.name}: {missing}"
