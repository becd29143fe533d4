"""Task signatures: a task's parameters as a JSON schema, and args/kwargs checked against it.

`task_spec(task)` reads the task function's signature and type hints (pydantic builds the JSON
schema of each parameter; `bind=True` tasks have no `self`, `*args`/`**kwargs` stay open) and
the task's options. The result is plain JSON, so a worker can send it over the broker.
`check_call(spec, args, kwargs)` binds the arguments to the parameters (arity, unknown keyword)
and validates each value against its JSON schema (type), raising `InvalidArgument` with the
expected signature. Both sources (the imported app, a worker's reply) go through the same check.
"""

from __future__ import annotations

import inspect
import re
import warnings
from collections.abc import Callable
from typing import Any

from pydantic import TypeAdapter
from pydantic.json_schema import GenerateJsonSchema
from pydantic_core import to_jsonable_python

from celery_mcp.errors import InvalidArgument
from celery_mcp.models.catalog import ParamInfo, ParamKind, TaskSpec

DOC_MAX_CHARS = 2000
SUMMARY_MAX_CHARS = 160
TYPE_MAX_CHARS = 120
PROBLEM_MAX_CHARS = 300

_KINDS: dict[Any, ParamKind] = {
    inspect.Parameter.POSITIONAL_ONLY: "positional_only",
    inspect.Parameter.POSITIONAL_OR_KEYWORD: "positional_or_keyword",
    inspect.Parameter.KEYWORD_ONLY: "keyword_only",
    inspect.Parameter.VAR_POSITIONAL: "var_positional",
    inspect.Parameter.VAR_KEYWORD: "var_keyword",
}
_PY_KINDS = {v: k for k, v in _KINDS.items()}
_MODULE_PREFIX = re.compile(r"\b(?:[A-Za-z_]\w*\.)+(?=[A-Za-z_]\w*)")
_NAMED = ("positional_only", "positional_or_keyword", "keyword_only")


class _NoFieldTitles(GenerateJsonSchema):
    """Pydantic's JSON schema without a `title` on every property (noise for an agent)."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False


class _Text:
    """An object whose repr is `text`, to format a signature from strings."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


# -- docs ------------------------------------------------------------------------------------


def doc_parts(doc: str | None) -> tuple[str, str | None, bool]:
    """(summary line, capped docstring, truncated) of a docstring (user text)."""
    text = inspect.cleandoc(doc or "").strip()
    if not text:
        return "", None, False
    summary = text.splitlines()[0].strip()
    if len(summary) > SUMMARY_MAX_CHARS:
        summary = summary[: SUMMARY_MAX_CHARS - 1] + "…"
    if len(text) > DOC_MAX_CHARS:
        return summary, text[:DOC_MAX_CHARS] + "…", True
    return summary, text, False


# -- signature -> parameters and schema -------------------------------------------------------


def type_text(annotation: Any) -> str | None:
    """`list[int]`, `Point`, `int | None`: an annotation as written, without module paths."""
    if annotation is inspect.Parameter.empty:
        return None
    if isinstance(annotation, str):
        text = annotation
    elif isinstance(annotation, type) and not getattr(annotation, "__args__", None):
        text = annotation.__qualname__
    else:
        text = inspect.formatannotation(annotation)
    text = _MODULE_PREFIX.sub("", text)
    return text if len(text) <= TYPE_MAX_CHARS else text[: TYPE_MAX_CHARS - 1] + "…"


def _globals_of(func: Callable[..., Any]) -> dict[str, Any]:
    target: Any = inspect.unwrap(func)
    target = getattr(target, "__func__", target)
    return dict(getattr(target, "__globals__", {}))


def _resolve(annotation: Any, globalns: dict[str, Any]) -> Any:
    """A string annotation evaluated in the function's module, or the string if it fails."""
    if not isinstance(annotation, str):
        return annotation
    try:
        return eval(annotation, globalns)  # noqa: S307 (the module's own annotation text)
    except Exception:
        return annotation


def function_signature(func: Callable[..., Any]) -> inspect.Signature | None:
    """The signature of `func` with annotations resolved where possible (None: no signature)."""
    try:
        return inspect.signature(func, eval_str=True)
    except Exception:  # an annotation that does not evaluate (or no signature): go slower
        pass
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):
        return None
    globalns = _globals_of(func)
    params = [
        p.replace(annotation=_resolve(p.annotation, globalns)) for p in sig.parameters.values()
    ]
    return sig.replace(parameters=params)


_SCHEMAS: dict[Any, tuple[dict[str, Any], dict[str, Any]] | None] = {}


def _build_schema(annotation: Any) -> tuple[dict[str, Any], dict[str, Any]] | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            schema = TypeAdapter(annotation).json_schema(schema_generator=_NoFieldTitles)
    except Exception:  # a type pydantic cannot describe
        return None
    defs = schema.pop("$defs", {})
    return schema, defs


def type_schema(annotation: Any) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(JSON schema, its $defs) of a type, cached per type; None when it cannot be described."""
    if annotation is inspect.Parameter.empty:
        annotation = Any
    if isinstance(annotation, str):
        return None
    try:
        return _SCHEMAS[annotation]
    except KeyError:
        found = _SCHEMAS[annotation] = _build_schema(annotation)
        return found
    except TypeError:  # unhashable annotation
        return _build_schema(annotation)


def _json_default(value: Any) -> Any:
    try:
        return to_jsonable_python(value)
    except Exception:
        return repr(value)


def _has_default(p: ParamInfo) -> bool:
    return not p.required and p.kind in _NAMED


def signature_text(name: str, params: list[ParamInfo]) -> str:
    """`name(x: int, *rest: int, flag: bool = False)`: how to call the task, Python-style."""
    py_params = [
        inspect.Parameter(
            p.name,
            _PY_KINDS[p.kind],
            annotation=_Text(p.type) if p.type else inspect.Parameter.empty,
            default=_Text(repr(p.default)) if _has_default(p) else inspect.Parameter.empty,
        )
        for p in params
    ]
    try:
        return f"{name}{inspect.Signature(py_params)}"
    except ValueError:  # inconsistent order (a worker's odd reply): list them plainly
        return f"{name}({', '.join(p.name for p in params)})"


def _merge_defs(into: dict[str, Any], defs: dict[str, Any]) -> bool:
    """Add `defs` to `into`; False (nothing added) if a name means another type there."""
    if any(name in into and into[name] != schema for name, schema in defs.items()):
        return False
    into.update(defs)
    return True


def _admits_null(schema: dict[str, Any], defs: dict[str, Any]) -> bool:
    from jsonschema import Draft202012Validator  # type: ignore[import-untyped]  # 70 ms: lazy

    return bool(Draft202012Validator({**schema, "$defs": defs}).is_valid(None))


def parameters_of(
    sig: inspect.Signature,
) -> tuple[list[ParamInfo], dict[str, Any], dict[str, Any] | None, list[str]]:
    """(parameters, keyword schema, *args schema, unchecked names) of a signature."""
    infos: list[ParamInfo] = []
    unchecked: list[str] = []
    properties: dict[str, Any] = {}
    required_names: list[str] = []
    additional: Any = False
    var_args: dict[str, Any] | None = None
    defs: dict[str, Any] = {}
    for p in sig.parameters.values():
        kind = _KINDS[p.kind]
        info = ParamInfo(
            name=p.name,
            kind=kind,
            type=type_text(p.annotation),
            required=p.default is inspect.Parameter.empty and kind in _NAMED,
            default=None if p.default is inspect.Parameter.empty else _json_default(p.default),
        )
        infos.append(info)
        annotation = p.annotation
        found = type_schema(annotation)
        if found is None or not _merge_defs(defs, found[1]):
            unchecked.append(p.name)
            annotation, found = Any, ({}, {})
        if kind == "var_positional":
            found = type_schema(list[annotation]) or ({"type": "array"}, {})  # type: ignore[valid-type]
            _merge_defs(defs, found[1])
        schema = dict(found[0])
        if kind == "var_positional":
            var_args = schema
        elif kind == "var_keyword":
            additional = schema or True
        else:
            if p.default is None and not _admits_null(schema, defs):  # `x: int = None`
                schema = {"anyOf": [schema, {"type": "null"}]}
            if not info.required:
                schema["default"] = info.default
            properties[p.name] = schema
            if info.required:
                required_names.append(p.name)
    keyword_schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required_names:
        keyword_schema["required"] = required_names
    keyword_schema["additionalProperties"] = additional
    if defs:
        keyword_schema["$defs"] = defs
    return infos, keyword_schema, var_args, unchecked


# -- task -> spec -----------------------------------------------------------------------------


def _seconds(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _queue(task: Any) -> str | None:
    """The queue `task` is routed to by default (task_routes, task.queue, default queue)."""
    try:
        options = {"queue": task.queue} if getattr(task, "queue", None) else {}
        route = task.app.amqp.router.route(options, task.name, (), {}, task_type=task)
        queue = route.get("queue")
        return str(getattr(queue, "name", queue)) if queue else None
    except Exception:  # a router that needs real arguments: fall back to the default queue
        default = getattr(task.app.conf, "task_default_queue", None)
        return str(default) if default else None


def task_options(task: Any) -> dict[str, Any]:
    """Routing, limits and retry policy of a Celery task object (JSON values)."""
    conf = task.app.conf
    autoretry = getattr(task, "autoretry_for", None) or ()
    backoff = getattr(task, "retry_backoff", None)
    return {
        "queue": _queue(task),
        "rate_limit": str(task.rate_limit) if task.rate_limit else None,
        "time_limit_s": _seconds(task.time_limit or conf.task_time_limit),
        "soft_time_limit_s": _seconds(task.soft_time_limit or conf.task_soft_time_limit),
        "max_retries": task.max_retries if isinstance(task.max_retries, int) else None,
        "default_retry_delay_s": _seconds(task.default_retry_delay),
        "autoretry_for": [getattr(e, "__name__", str(e)) for e in autoretry],
        "retry_backoff": backoff if isinstance(backoff, bool | int | float) else None,
        "acks_late": bool(task.acks_late) if task.acks_late is not None else None,
        "ignore_result": bool(task.ignore_result) if task.ignore_result is not None else None,
    }


def task_spec(task: Any) -> TaskSpec:
    """Everything a caller needs to know about a Celery task object, as a `TaskSpec`."""
    task = getattr(task, "_get_current_object", lambda: task)()  # a lazy task proxy
    summary, doc, cut = doc_parts(getattr(task, "__doc__", None))
    spec: dict[str, Any] = {"name": task.name, "summary": summary, "doc": doc, "doc_truncated": cut}
    spec.update(task_options(task))
    run = getattr(task, "run", None)
    sig = function_signature(run) if callable(run) else None
    if sig is not None:
        params, schema, var_args, unchecked = parameters_of(sig)
        spec.update(
            signature=signature_text(task.name, params),
            parameters=params,
            parameters_schema=schema,
            var_args_schema=var_args,
            unchecked=unchecked,
        )
    return TaskSpec.model_validate(spec)


# -- args/kwargs -> check ---------------------------------------------------------------------


def _python_signature(spec: TaskSpec) -> inspect.Signature:
    required = inspect.Parameter.empty
    return inspect.Signature(
        [
            inspect.Parameter(
                p.name, _PY_KINDS[p.kind], default=None if _has_default(p) else required
            )
            for p in spec.parameters
        ]
    )


def _where(name: str, path: Any) -> str:
    return name + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in path)


def _type_error(spec: TaskSpec, name: str, schema: dict[str, Any], value: Any) -> str | None:
    """A message for the first way `value` fails `schema` (refs into the spec's $defs)."""
    defs = (spec.parameters_schema or {}).get("$defs")
    full = {**schema, "$defs": defs} if defs else schema
    from jsonschema import Draft202012Validator  # 70 ms at import: not at server start
    from jsonschema.exceptions import best_match  # type: ignore[import-untyped]

    try:
        error = best_match(Draft202012Validator(full).iter_errors(value))
    except Exception:  # a schema the validator cannot use (odd worker reply): unchecked
        return None
    if error is None:
        return None
    message = str(error.message)
    if len(message) > PROBLEM_MAX_CHARS:  # it quotes the value, which may be large
        message = message[: PROBLEM_MAX_CHARS - 1] + "…"
    return f"{_where(name, error.absolute_path)}: {message}"


def call_problems(spec: TaskSpec, args: list[Any], kwargs: dict[str, Any]) -> str | None:
    """What is wrong with calling `spec` with args/kwargs (arity, keyword, type), or None."""
    if spec.signature is None or spec.parameters_schema is None:
        return None
    try:
        python_signature = _python_signature(spec)
    except ValueError:  # parameters in an impossible order (an odd worker reply): unchecked
        return None
    try:
        bound = python_signature.bind(*args, **kwargs)
    except TypeError as exc:
        return str(exc)
    kinds = {p.name: p.kind for p in spec.parameters}
    properties = spec.parameters_schema.get("properties", {})
    for name, value in bound.arguments.items():
        if kinds[name] == "var_positional":
            schema: Any = spec.var_args_schema or {}
            problem = _type_error(spec, "*" + name, schema, list(value))
        elif kinds[name] == "var_keyword":
            extra = spec.parameters_schema.get("additionalProperties", True)
            schema = {"type": "object", "additionalProperties": extra}
            problem = _type_error(spec, "**" + name, schema, dict(value))
        else:
            problem = _type_error(spec, name, properties.get(name, {}), value)
        if problem:
            return problem
    return None


def check_call(spec: TaskSpec, args: list[Any], kwargs: dict[str, Any]) -> None:
    """Raise InvalidArgument (showing the expected signature) when args/kwargs do not fit."""
    problem = call_problems(spec, args, kwargs)
    if problem:
        raise InvalidArgument(
            f"invalid arguments for {spec.name}: {problem}; expected {spec.signature}",
            hint="fix args/kwargs (describe_task shows each parameter's JSON schema), or send "
            "with validate_args=false if the task's signature is dynamic",
        )
