"""What every path that publishes a task shares: the checks before, the options it is sent with,
and the note of what this process sent.

send_task, each workflow step, each periodic entry and each retry call `ensure_sendable` first
(nothing is published when it raises), send with `publish_options`, and `noting_sent` keeps the
exact arguments in the task history (a retry then knows them even from a stock worker of an
app without `result_extended`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from celery_mcp.app import visibility_timeout_s
from celery_mcp.client_backend import reply_options
from celery_mcp.errors import (
    CeleryMcpError,
    InvalidArgument,
    Unavailable,
    translate_errors,
)
from celery_mcp.models.tasks import TaskOptions
from celery_mcp.service.catalog import check_arguments
from celery_mcp.service.cluster import Cluster
from celery_mcp.service.discovery import is_known_task, unconsumed_queue_warning, unknown_task
from celery_mcp.service.limits import check_payload
from celery_mcp.service.policy import check_task_allowed
from celery_mcp.service.priority import to_broker
from celery_mcp.service.rpc_results import drain, uses_rpc
from celery_mcp.stores.history import PendingNote, SentTask
from celery_mcp.stores.keys import (
    RETRIES_HEADER,
    RETRY_DELAY_HEADER,
    RETRY_DELAY_MAX_HEADER,
)

log = logging.getLogger("celery_mcp.sending")


def retry_headers(retries: int, delay_s: float, delay_max_s: float) -> dict[str, Any]:
    """Message headers asking a celery-mcp worker for up to `retries` retries with backoff."""
    return {
        RETRIES_HEADER: retries,
        RETRY_DELAY_HEADER: delay_s,
        RETRY_DELAY_MAX_HEADER: delay_max_s,
    }


def publish_options(cluster: Cluster, opts: TaskOptions) -> dict[str, Any]:
    """Celery `apply_async` options for `opts`: routing, delays, priority, retry headers, and
    where results go.

    `retry=True` applies the app's `task_publish_retry_policy`; client apps set it to no retry
    (see `app.bounded_config`), so a broker that does not answer fails the call at once.
    """
    options: dict[str, Any] = {"retry": True, **reply_options(cluster.app)}
    for key in ("countdown", "eta", "expires", "queue"):
        value = getattr(opts, key)
        if value is not None:
            options[key] = value
    if opts.priority is not None:
        options["priority"] = to_broker(cluster, opts.priority)
    if opts.retries:
        options["headers"] = retry_headers(opts.retries, opts.retry_delay_s, opts.retry_delay_max_s)
    return options


def longest_delay_s(opts: TaskOptions, now: datetime) -> tuple[float, str]:
    """(seconds, what) of the longest time a worker may hold this task before it runs: its
    countdown or eta, or its last retry's delay."""
    delays = [(0.0, "")]
    if opts.countdown is not None:
        delays.append((opts.countdown, f"countdown={opts.countdown:g}"))
    if opts.eta is not None:
        delays.append(((opts.eta - now).total_seconds(), f"eta {opts.eta.isoformat()}"))
    if opts.retries:
        last = min(opts.retry_delay_s * 2 ** (opts.retries - 1), opts.retry_delay_max_s)
        delays.append((last, f"retry {opts.retries} after {last:g}s"))
    return max(delays)


def check_delays(cluster: Cluster, opts: TaskOptions) -> None:
    """Refuse a delay at or beyond the Redis visibility timeout (unless accept_redelivery):
    the broker would deliver the held message again, and the task would run more than once."""
    if not cluster.broker_is_redis or opts.accept_redelivery:
        return
    if opts.countdown is None and opts.eta is None and not opts.retries:
        return  # nothing held back
    delay, what = longest_delay_s(opts, datetime.now(UTC))
    limit = visibility_timeout_s(cluster.app)
    if delay >= limit:
        raise InvalidArgument(
            f"{what} reaches the broker's visibility timeout ({limit:g}s): Redis would deliver "
            "the task again while a worker holds it, and it would run more than once",
            hint="use a periodic schedule (run_at) for work that far out, raise the app's "
            "broker_transport_options visibility_timeout (CELERY_MCP_VISIBILITY_TIMEOUT_S) on "
            "workers and server, or pass accept_redelivery=true",
        )


def ensure_sendable(
    cluster: Cluster,
    name: str,
    args: Any,
    kwargs: Any,
    *,
    validate: bool = True,
    opts: TaskOptions | None = None,
) -> None:
    """Raise when `name` is not allowed or unknown, args/kwargs exceed the caps or do not fit
    its signature, or `opts` delay it past what the broker keeps; nothing is sent.
    `validate=False` skips the signature check (tasks with dynamic signatures)."""
    s = cluster.settings
    check_task_allowed(s, name)
    check_payload(args, kwargs, max_bytes=s.max_payload_bytes, max_depth=s.max_depth)
    if not is_known_task(cluster, name):
        raise unknown_task(cluster, name)
    if validate:
        check_arguments(cluster, name, args, kwargs)
    if opts is not None:
        check_delays(cluster, opts)


@contextmanager
def noting_sent(cluster: Cluster, sent: list[SentTask]) -> Iterator[None]:
    """Keep what the `with` body publishes in the task history (exact arguments, so a retry
    can re-send them). The note's request goes out before the body runs and its reply is read
    after, so it costs the send no round trip of its own. When the history lives on the broker
    and the broker does not answer, the send fails here, before anything is published; when the
    publish itself gets no answer (it may have gone out), the note stays and its reply is not
    waited for; a note that fails after a publish is logged (the task went out).

    On rpc:// it also makes sure this process drains the reply queue, so results are kept.

    Kept even when the app records sends itself (task-sent events, result_extended): those
    reach the history only while a monitor runs, and without the note this server would not
    know the tasks it sent (get_result's unknown-id note, completions of recent ids)."""
    if uses_rpc(cluster):
        drain(cluster)
    note = _begin_note(cluster, sent)
    try:
        yield
    except Unavailable:
        if note is not None:
            note.abandon()
        raise
    except BaseException:
        finish_note(note)
        raise
    finish_note(note)


def note_published(cluster: Cluster, sent: list[SentTask]) -> PendingNote | None:
    """Send the note of tasks just published, for a caller that waits for their result next:
    the note's round trip then overlaps the wait, not the publish. `finish_note` reads its
    reply. A note that fails is logged (the tasks went out)."""
    try:
        return _begin_note(cluster, sent)
    except Unavailable:
        log.warning("could not note sent tasks in the history", exc_info=True)
        return None


def _begin_note(cluster: Cluster, sent: list[SentTask]) -> PendingNote | None:
    """Send the note's writes (None: nothing to note, or no history to note it in)."""
    if not sent:
        return None
    try:
        store = cluster.history
    except CeleryMcpError:
        return None  # no Redis for a history (e.g. AMQP + rpc://): nothing to note
    try:
        with translate_errors("broker"):
            return store.begin_note_sent(sent, at=time.time())
    except Unavailable:
        if cluster.broker_is_redis:
            raise
        log.debug("could not note sent tasks in the history", exc_info=True)
        return None


def finish_note(note: PendingNote | None) -> None:
    """Read the reply of a note sent by `note_published` or `noting_sent` (a failure is
    logged: the tasks went out)."""
    if note is None:
        return
    try:
        with translate_errors("broker"):
            note.finish()
    except CeleryMcpError:
        log.warning("could not note sent tasks in the history", exc_info=True)


def forget_sent(cluster: Cluster, sent: list[SentTask]) -> None:
    """Drop notes of tasks whose publish failed (they were never sent)."""
    try:
        cluster.history.forget(sent)
    except Exception:
        log.debug("could not drop notes of unsent tasks", exc_info=True)


def queue_warnings(cluster: Cluster, queues: Iterable[str | None]) -> list[str]:
    """A warning per queue (None: the default queue) that no live worker consumes. Asked after
    the publish: a census that fails costs the caller a warning, never the call."""
    default = str(cluster.app.conf.task_default_queue)
    targets = dict.fromkeys(q or default for q in queues)
    try:
        return [w for w in (unconsumed_queue_warning(cluster, q) for q in targets) if w]
    except CeleryMcpError as exc:
        return [f"could not check which workers consume {', '.join(targets)}: {exc.message}"]
