"""SKILL.md matches the real tools: every tool it names exists, every tool is named."""

from __future__ import annotations

import json
import re
from functools import cache

from pydantic import BaseModel

from celery_mcp import errors
from celery_mcp.config import DEFAULT_TOOLSETS, TOOLSETS, Settings
from celery_mcp.interfaces.mcp.prompts import PROCEDURES
from celery_mcp.models.workers import ControlCommand
from celery_mcp.service.registry import OPERATIONS
from tests.support import ROOT

SKILL = ROOT / "SKILL.md"
SPAN = re.compile(r"`([^`\n]+)`")
IDENT = re.compile(r"^[a-z][a-z0-9]*(?:_[a-z0-9]+)+$")  # snake_case with an underscore

#: snake_case words in backticks that are neither tools, fields nor error codes.
#: Words in backticks that are neither tools nor fields: a reply reason, the package names
#: (old and new), the Python spelling of retry_delay_s.
NOT_TOOLS = {"no_reply", "celery_mcp", "celery_skill", "retry_delay"}


def _text() -> str:
    return SKILL.read_text(encoding="utf-8")


def _front_matter() -> dict[str, str]:
    match = re.match(r"^---\n(.*?)\n---\n", _text(), re.S)
    assert match, "SKILL.md must start with a --- front matter block ---"
    pairs = (line.partition(":") for line in match.group(1).splitlines() if line.strip())
    return {k.strip(): v.strip() for k, _, v in pairs}


def _model_fields(model: type[BaseModel], seen: set[type[BaseModel]]) -> set[str]:
    """Field names of `model` and of the models nested in it."""
    if model in seen:
        return set()
    seen.add(model)
    names = set(model.model_fields)
    for field in model.model_fields.values():
        for arg in _types(field.annotation):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                names |= _model_fields(arg, seen)
    return names


def _types(annotation: object) -> list[object]:
    args = list(getattr(annotation, "__args__", ()) or ())
    return [annotation, *[t for a in args for t in _types(a)]]


@cache
def _known_words() -> set[str]:
    """Every snake_case word SKILL.md may use in backticks that is not a tool name."""
    seen: set[type[BaseModel]] = set()
    words: set[str] = set()
    for op in OPERATIONS.values():
        words |= _model_fields(op.input_model, seen) | _model_fields(op.output_model, seen)
    words |= set(Settings.model_fields) | set(TOOLSETS) | {c.value for c in ControlCommand}
    words |= {cls.code for cls in _subclasses(errors.CeleryMcpError)}
    words |= {p.name for p in PROCEDURES} | {a.name for p in PROCEDURES for a in p.arguments}
    return words | NOT_TOOLS


def _subclasses(cls: type) -> list[type]:
    return [cls, *[s for sub in cls.__subclasses__() for s in _subclasses(sub)]]


def _tool_mentions() -> set[str]:
    """The first word of every backtick span that looks like a tool name."""
    names = set()
    for span in SPAN.findall(_text()):
        word = span.split()[0]
        if IDENT.match(word):
            names.add(word)
    return names


def test_front_matter_has_name_and_description() -> None:
    meta = _front_matter()
    assert re.fullmatch(r"[a-z0-9-]+", meta.get("name", "")), meta
    assert len(meta.get("description", "")) > 80, meta


def test_every_tool_named_exists() -> None:
    tools = set(OPERATIONS)
    unknown = sorted(_tool_mentions() - tools - _known_words())
    assert not unknown, f"SKILL.md names tools that do not exist: {unknown}"


def test_every_tool_is_documented() -> None:
    text = _text()
    missing = [name for name in OPERATIONS if f"`{name} " not in text]
    assert not missing, f"SKILL.md has no example call (`name {{...}}`) for: {missing}"


def test_json_examples_are_valid_tool_arguments() -> None:
    """Every `tool {...}` example is JSON that validates against the tool's input model."""
    operations = OPERATIONS
    checked = 0
    for span in SPAN.findall(_text()):
        name, _, arguments = span.partition(" ")
        if name not in operations or not arguments.startswith("{"):
            continue
        values = json.loads(arguments)  # examples are complete JSON, not abbreviations
        operations[name].input_model.model_validate(values)
        checked += 1
    assert checked >= len(operations), checked


def test_toolset_table_counts_match_the_registry() -> None:
    counts: dict[str, int] = {}
    for op in OPERATIONS.values():
        counts[op.toolset] = counts.get(op.toolset, 0) + 1
    rows = dict(re.findall(r"^\| (\w+) \| (\d+) \|", _text(), re.M))
    assert {k: int(v) for k, v in rows.items()} == counts
    default = sum(counts[t] for t in DEFAULT_TOOLSETS)
    assert f"Default (`{','.join(t for t in DEFAULT_TOOLSETS if t != 'health')}`): {default}" in (
        _text()
    )
    assert f"Everything (`all`): {sum(counts.values())} tools" in _text()


def test_every_prompt_is_named() -> None:
    missing = [p.name for p in PROCEDURES if f"`{p.name}`" not in _text()]
    assert not missing, f"SKILL.md does not name the prompts: {missing}"


def test_detects_a_misspelled_tool() -> None:
    # the check itself: a tool that does not exist is caught
    assert "retry_tasks" not in _known_words() | set(OPERATIONS)
    assert IDENT.match("retry_tasks")
