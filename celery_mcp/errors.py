"""Typed errors: every failure an agent can see is one of these.

    CeleryMcpError                 root; `code` is stable, `hint` says what to do next
    ├── InvalidArgument            bad input: nothing was sent
    │   └── UnknownTask            task name no worker or app knows
    ├── NotFound                   id or entry that does not exist
    ├── Forbidden                  refused by policy (read-only mode, task allowlist)
    ├── NoResultBackend            the app keeps no results (none configured)
    ├── ResultNotVisible           rpc:// gave the result to another client, not to us
    ├── Unavailable                a dependency did not answer in time
    │   ├── BrokerUnavailable
    │   ├── BackendUnavailable
    │   └── NoWorkers
    ├── WaitTimeout                a bounded wait ran out (the task may still finish)
    ├── Cancelled                  the call was cancelled, or ran out of time, mid-wait
    ├── TaskFailed                 a result handle's get(): the task or workflow failed
    ├── UnknownTool                an MCP call of a tool no front end has
    └── InternalError              anything unexpected (`detail()` of a foreign exception)

Foreign exceptions (kombu, redis, celery, OS) are mapped in one place, `translate_errors()`,
most specific first.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager

from celery_mcp.config import redact_url
from celery_mcp.models.common import ErrorDetail

__all__ = [
    "BackendUnavailable",
    "BrokerUnavailable",
    "Cancelled",
    "CeleryMcpError",
    "Forbidden",
    "InternalError",
    "InvalidArgument",
    "NoWorkers",
    "NoResultBackend",
    "NotFound",
    "ResultNotVisible",
    "TaskFailed",
    "Unavailable",
    "UnknownTask",
    "UnknownTool",
    "WaitTimeout",
    "detail",
    "translate_errors",
    "validation_message",
]


class CeleryMcpError(Exception):
    """Root of every error celery_mcp raises on purpose."""

    code = "error"

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(redact_url(message))
        self.message = redact_url(message)
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class InvalidArgument(CeleryMcpError):
    """An argument is malformed or out of range; nothing was sent."""

    code = "invalid_argument"


class UnknownTask(InvalidArgument):
    """No live worker and no imported app knows this task name."""

    code = "unknown_task"


class NotFound(CeleryMcpError):
    """The id or entry does not exist (or has expired)."""

    code = "not_found"


class Forbidden(CeleryMcpError):
    """Refused by policy: read-only mode or the task allowlist."""

    code = "forbidden"


class NoResultBackend(CeleryMcpError):
    """The app has no result backend: states and results are not kept, so none can be read."""

    code = "no_result_backend"


class ResultNotVisible(CeleryMcpError):
    """With rpc:// a result goes only to the client that sent the task: one sent by another
    client cannot be read here."""

    code = "result_not_visible"


class Unavailable(CeleryMcpError):
    """A dependency did not answer within its bound."""

    code = "unavailable"


class BrokerUnavailable(Unavailable):
    """The broker refused the connection or did not answer in time."""

    code = "broker_unavailable"


class BackendUnavailable(Unavailable):
    """The result backend refused the connection or did not answer in time."""

    code = "backend_unavailable"


class NoWorkers(Unavailable):
    """No worker answered within the bound."""

    code = "no_workers"


class WaitTimeout(CeleryMcpError):
    """A bounded wait ran out; the operation may still complete later."""

    code = "timeout"


class Cancelled(CeleryMcpError):
    """The call was cancelled (by its client, or at its time bound) while it waited."""

    code = "cancelled"


class TaskFailed(CeleryMcpError):
    """The task (or workflow) a result handle waited for ended in failure; raised by `get()`
    in Python, as Celery's `AsyncResult.get()` re-raises. Tools report failures as data."""

    code = "task_failed"


class UnknownTool(CeleryMcpError):
    """No operation has this name."""

    code = "unknown_tool"


class InternalError(CeleryMcpError):
    """An unexpected failure: a bug, or a foreign exception no rule maps."""

    code = "internal_error"


_BROKER_HINT = "check the broker is running (health tool) and CELERY_MCP_BROKER_URL is right"


def _foreign(exc: BaseException, where: str) -> CeleryMcpError | None:
    """Map one foreign exception to a typed error, or None when it is not ours to map."""
    # imported when there is an error to map: every front end imports this module at start,
    # before it needs Celery, kombu or redis (0.2 s of imports)
    import celery.exceptions as cex
    import kombu.exceptions as kex
    import redis.exceptions as rex

    unavailable = BackendUnavailable if where == "backend" else BrokerUnavailable
    if isinstance(exc, cex.TimeoutError):
        return WaitTimeout(f"timed out waiting on the {where}", hint="try again with a longer wait")
    if isinstance(exc, rex.AuthenticationError | rex.AuthorizationError):
        return unavailable(f"{where} refused the credentials: {exc}", hint=_BROKER_HINT)
    if isinstance(exc, rex.TimeoutError | socket.timeout | TimeoutError):
        return unavailable(f"{where} did not answer in time: {exc}", hint=_BROKER_HINT)
    if isinstance(exc, rex.ConnectionError | kex.OperationalError | ConnectionError | OSError):
        return unavailable(f"{where} unreachable: {exc}", hint=_BROKER_HINT)
    if isinstance(exc, kex.ContentDisallowed | kex.DecodeError):  # json only: never unpickle
        return Forbidden(
            f"refused to decode data from the {where}: not JSON ({exc})",
            hint="this server accepts only JSON; make producers use the json serializer",
        )
    if getattr(exc, "reply_code", None) == 406:  # AMQP PRECONDITION_FAILED: a redeclaration
        return _precondition_failed(exc)
    if isinstance(exc, kex.EncodeError):
        return InvalidArgument(f"arguments are not JSON serializable: {exc}")
    if isinstance(exc, RuntimeError) and "Retry limit exceeded" in str(exc):
        # Celery's result consumer gives up reconnecting to the result backend with this.
        return BackendUnavailable(f"result backend unreachable: {exc}", hint=_BROKER_HINT)
    return None


def _precondition_failed(exc: BaseException) -> CeleryMcpError:
    """RabbitMQ refused to redeclare a queue (or exchange) with other arguments."""
    found = re.search(r"inequivalent arg '([^']+)' for (\w+) '([^']+)'", str(exc))
    if found is None:
        return InvalidArgument(f"the broker refused a declaration: {exc}")
    arg, kind, name = found.groups()
    return InvalidArgument(
        f"{kind} {name!r} exists on the broker with another {arg!r} than this app declares "
        f"it with ({exc})",
        hint=f"declare {name!r} in the app's task_queues exactly as it exists (same "
        f"queue_arguments), or delete it on the broker so it is declared anew",
    )


def validation_message(exc: Exception) -> str:
    """A pydantic ValidationError as one line: 'field: problem; other: problem'."""
    errors = getattr(exc, "errors", None)
    if errors is None:
        return str(exc)
    parts = []
    for err in errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or "arguments"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


@contextmanager
def translate_errors(where: str = "broker") -> Iterator[None]:
    """Re-raise kombu/redis/celery/OS errors as typed `CeleryMcpError`s."""
    try:
        yield
    except CeleryMcpError:
        raise
    except Exception as exc:
        mapped = _foreign(exc, where)
        if mapped is None:
            raise
        raise mapped from exc


INTERNAL_HINT = "run health; report it if it persists"


def detail(exc: BaseException) -> ErrorDetail:
    """Any exception as the error every front end reports: ours keep their code and hint, a
    foreign one is InternalError with 'Type: message'."""
    if not isinstance(exc, CeleryMcpError):
        exc = InternalError(f"{type(exc).__name__}: {exc}", hint=INTERNAL_HINT)
    return ErrorDetail(code=exc.code, message=exc.message, hint=exc.hint)
