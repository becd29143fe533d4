"""How a task's failure reads, wherever it comes from: 'Type: message', and tracebacks without
the frames of this project's own worker wrappers.

A failure reaches us three ways: the exception itself (rpc://, a local worker), the result
backend's exception dict (`exc_type`, `exc_message`), and a task event's `exception`, which
Celery fills with the exception's repr (`RuntimeError('boom')`). All three read the same here.
"""

from __future__ import annotations

import ast
import re
from typing import Any

_REPR = re.compile(r"^(?P<type>[A-Za-z_][\w.]*)\((?P<args>.*)\)$", re.DOTALL)
#: Frames of the wrappers `celery-mcp worker` puts around every task (the retry headers):
#: they are ours, not the user's code, and say nothing about the failure.
_OWN_FRAME = re.compile(r'^  File ".*[/\\]celery_mcp[/\\]runtime[/\\]worker[/\\][^"]+", line \d+')


def _message(args: Any, kind: str = "") -> str:
    """An exception's str() from its args, as BaseException.__str__ does (KeyError quotes its
    one argument)."""
    if isinstance(args, list | tuple):
        if len(args) == 1:
            return repr(args[0]) if kind.endswith("KeyError") else str(args[0])
        return str(tuple(args)) if args else ""
    return str(args)


def exception_text(value: Any) -> str | None:
    """'Type: message' of an exception, a stored exception dict, an exception's repr, or the
    text of anything else."""
    if value is None:
        return None
    if isinstance(value, BaseException):
        return f"{type(value).__name__}: {value}"
    if isinstance(value, dict) and "exc_type" in value:
        kind = str(value["exc_type"])
        return f"{kind}: {_message(value.get('exc_message'), kind)}"
    text = str(value)
    found = _REPR.match(text)
    if found is None:
        return text
    try:
        args = ast.literal_eval(f"({found['args']},)") if found["args"] else ()
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text  # a custom repr: keep it as it is
    return f"{found['type']}: {_message(args, found['type'])}"


def user_traceback(text: str | None) -> str | None:
    """`text` without the frames of this project's worker wrappers."""
    if not text or "celery_mcp" not in text:
        return text
    kept: list[str] = []
    skipping = False
    for line in text.splitlines(keepends=True):
        if line.startswith("  File "):
            skipping = bool(_OWN_FRAME.match(line))
        elif not line.startswith("    "):  # the end of the frame list
            skipping = False
        if not skipping:
            kept.append(line)
    return "".join(kept)
