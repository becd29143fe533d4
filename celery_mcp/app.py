"""Build the Celery app from Settings: json only, bounded timeouts, events on, results kept.

With `Settings.app` the user's app is imported and keeps its own configuration; this module
only adds the bounds that keep every call of this process finite, the json-only accept list,
and (when set) the broker/backend URLs from Settings. Settings must name a broker: front ends
and processes fill in the embedded server first (`runtime.embedded.resolve`).
"""

from __future__ import annotations

import importlib
from typing import Any

from celery import Celery

from celery_mcp.client_backend import ALIASES
from celery_mcp.config import Settings
from celery_mcp.errors import InvalidArgument
from celery_mcp.stores.clients import is_redis_url

DEMO_MODULE = "celery_mcp.demo_tasks"
#: The only content type this process decodes.
JSON_ONLY = ["json"]


def json_only(app: Celery) -> None:
    """Make `app` (a client-side or recording Celery app) decode JSON only, on every path.

    The conf covers backends and mailboxes created from now on; the control mailbox and this
    thread's result backend may already exist (a user's module can touch `app.control` or
    `app.backend` at import), so their accept lists are reset too. Events are read with
    `event_serializer` + json, so it becomes json. A pickle planted in the backend is then
    refused, never unpickled.
    """
    app.conf.accept_content = JSON_ONLY
    app.conf.result_accept_content = JSON_ONLY
    app.conf.event_serializer = "json"
    app.control.mailbox.accept = JSON_ONLY
    app.backend.accept = {"application/json"}  # a backend's accept holds content types


def resolve_urls(settings: Settings) -> tuple[str, str]:
    """(broker_url, result_backend) of settings that name a broker (backend: the broker's
    Redis, else rpc://)."""
    if settings.broker_url is None:
        raise InvalidArgument(
            "no broker URL: the embedded server was not started",
            hint="set CELERY_MCP_BROKER_URL, or resolve settings with runtime.embedded.resolve",
        )
    backend = settings.result_backend
    if backend is None:
        backend = settings.broker_url if is_redis_url(settings.broker_url) else "rpc://"
    return settings.broker_url, backend


def bounded_config(settings: Settings) -> dict[str, Any]:
    """Client-side settings that put a bound on every wait (see NOTES.md for the measurements)."""
    t = settings.broker_timeout_s
    return {
        "broker_connection_timeout": t,
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": 1,
        "broker_transport_options": {
            "socket_connect_timeout": t,
            "socket_timeout": t,
            "max_retries": 1,
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.2,
        },
        "redis_socket_connect_timeout": t,
        "redis_socket_timeout": t,
        "redis_retry_on_timeout": False,
        "result_backend_transport_options": {"retry_policy": {"max_retries": 1}},
        # Publish once: redis-py already reconnects a stale pooled connection (a restarted
        # broker), and a retry against a frozen broker only added two more socket timeouts
        # (kombu reconnects twice): send_task took 3 s to fail instead of 1 s.
        "task_publish_retry_policy": {
            "max_retries": 0,
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.2,
        },
    }


#: The Redis visibility timeout of the app this project builds: a task delayed (countdown, eta,
#: retry) longer than this would be delivered again and run twice, so it is well above the
#: delays agents ask for (Celery's own default, 1 h, refused a seed example's countdown=3600).
#: A hard-killed worker's late-acked tasks come back after it; set VISIBILITY_TIMEOUT_S lower
#: for a faster return when no delay is that long.
DEFAULT_VISIBILITY_TIMEOUT_S = 12 * 3600.0
#: Celery's (kombu's) visibility timeout when an app sets none.
CELERY_VISIBILITY_TIMEOUT_S = 3600.0


def merge_options(conf: Any, key: str, bounds: dict[str, Any]) -> None:
    """Set `bounds` in the dict setting `key`, keeping every other option the app has there
    (`global_keyprefix`, `sep`, `priority_steps`, `visibility_timeout`, Sentinel's
    `master_name`...): replacing the dict sent tasks to unprefixed queues no worker read."""
    conf[key] = {**(conf.get(key) or {}), **bounds}


def visibility_timeout_s(app: Celery) -> float:
    """How long a Redis broker leaves a delivered, unacked message before delivering it again."""
    options = app.conf.broker_transport_options or {}
    return float(options.get("visibility_timeout") or CELERY_VISIBILITY_TIMEOUT_S)


def base_config(settings: Settings) -> dict[str, Any]:
    """Defaults of the app this project builds (not applied to a user's app)."""
    return {
        "broker_transport_options": {"visibility_timeout": DEFAULT_VISIBILITY_TIMEOUT_S},
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "result_extended": True,
        "result_expires": settings.result_expires_s,
        "task_track_started": True,
        "task_send_sent_event": True,
        "worker_send_task_events": True,
        "worker_prefetch_multiplier": 1,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "timezone": settings.timezone,
        "enable_utc": True,
        "broker_connection_retry_on_startup": True,
    }


def import_user_app(path: str) -> Celery:
    """Import `module:attr` (or `module`, taking `app`/`celery`) and return the Celery app."""
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InvalidArgument(
            f"cannot import app module {module_name!r}: {exc}",
            hint="pass --app as 'package.module:app' and run from the project directory",
        ) from exc
    for name in [attr] if attr else ["app", "celery"]:
        candidate = getattr(module, name, None)
        if isinstance(candidate, Celery):
            return candidate
    raise InvalidArgument(f"{path!r} does not name a Celery app", hint="use 'module:attr'")


def make_app(settings: Settings, *, worker: bool = False) -> Celery:
    """The Celery app this process uses: the user's (`settings.app`) or our own.

    A client process (server, CLI, facade) gets `bounded_config` so no call waits unboundedly;
    a worker keeps Celery's reconnect-forever defaults, which is what a worker should do.
    """
    if settings.app:
        app = import_user_app(settings.app)
        if settings.broker_url:
            app.conf.broker_url = settings.broker_url
        if settings.result_backend:
            app.conf.result_backend = settings.result_backend
    else:
        broker, backend = resolve_urls(settings)
        app = Celery("celery_mcp", broker=broker, backend=backend, set_as_current=False)
        app.conf.update(base_config(settings))
        app.conf.include = [DEMO_MODULE]
    if worker and not settings.app:
        # Ride out a broker/backend restart: storing a state (STARTED, the result) waits for
        # the backend to come back instead of failing the task with ConnectionError.
        app.conf.result_backend_always_retry = True
    app.loader.override_backends = {**app.loader.override_backends, **ALIASES}
    if not worker:
        bounds = bounded_config(settings)
        for key in ("broker_transport_options", "result_backend_transport_options"):
            merge_options(app.conf, key, bounds.pop(key))
        app.conf.update(bounds)
        json_only(app)  # accept lists, and a control mailbox or backend made at import
    if settings.visibility_timeout_s is not None:
        app.conf.broker_transport_options = redelivery_options(
            app.conf.broker_transport_options, settings.visibility_timeout_s
        )
    return app


def redelivery_options(options: dict[str, Any] | None, visibility_s: float) -> dict[str, Any]:
    """Redis transport options that redeliver an unacked task `visibility_s` after delivery.

    A task whose worker died (acks_late) stays unacked until then; kombu then restores it in
    a sweep every `unacked_restore_interval` x `unacked_restore_throttle` seconds (10 x 10 by
    default), so the sweep is shortened too. Tasks running longer than `visibility_s`, or
    delayed (countdown/eta) beyond it, are delivered again: keep it above the longest.
    """
    return {
        **(options or {}),
        "visibility_timeout": visibility_s,
        "unacked_restore_interval": max(1.0, min(10.0, visibility_s / 2)),
        "unacked_restore_throttle": 1,
    }
