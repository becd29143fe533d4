"""`Cluster`: the one object every service call takes (settings, the Celery app, its clients
and what this process caches about the workers)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from celery import Celery

from celery_mcp.app import make_app
from celery_mcp.config import Settings, redact_url
from celery_mcp.errors import InvalidArgument, Unavailable
from celery_mcp.stores.clients import is_amqp_url, is_redis_transport, is_redis_url, redis_client
from celery_mcp.stores.history import HistoryStore, history_prefix
from celery_mcp.stores.schedules import ScheduleStore, store_location

if TYPE_CHECKING:  # types only: these modules import this one
    from celery_mcp.models.catalog import TaskSpec
    from celery_mcp.service.catalog import WorkerView
    from celery_mcp.service.discovery import Replies
    from celery_mcp.service.rpc_results import ReplyDrain

T = TypeVar("T")


@dataclass(frozen=True)
class Stamped(Generic[T]):
    """A value read at `at` (time.monotonic())."""

    at: float
    value: T

    def fresh(self, max_age_s: float) -> bool:
        return time.monotonic() - self.at < max_age_s


class Cluster:
    """Settings, the Celery app and the broker/backend clients of one process."""

    def __init__(self, settings: Settings, app: Celery | None = None) -> None:
        self.settings = settings
        self.app = app or make_app(settings)
        self.lock = threading.Lock()
        #: Hostnames that answered any broadcast of this process (expected on AMQP).
        self.workers_seen: frozenset[str] = frozenset()
        #: When a broadcast last waited its whole timeout (AMQP: a roll call finds new workers).
        self.last_roll_call = 0.0
        #: Task names live workers registered, and when they were asked.
        self.worker_tasks: Stamped[frozenset[str]] | None = None
        #: Live workers' `active_queues` replies, and when they were asked.
        self.queue_census: Stamped[Replies] | None = None
        #: Held while one call refreshes a worker census (the others wait for it and read it).
        self.census_lock = threading.Lock()
        #: What live workers reported to the catalog, and when.
        self.worker_view: Stamped[WorkerView] | None = None
        #: Specs of the imported app's tasks, derived once each.
        self.app_specs: dict[str, TaskSpec] = {}
        #: rpc:// only: the thread that drains the reply queue into the state store.
        self.reply_drain: ReplyDrain | None = None
        self._app_tasks: frozenset[str] | None = None

    # read once: Celery's conf lookups cost about 10 us each, and these are read on every call
    @cached_property
    def broker_url(self) -> str:
        return str(self.app.conf.broker_url)

    @cached_property
    def backend_url(self) -> str:
        return str(self.app.conf.result_backend)

    @cached_property
    def broker_is_redis(self) -> bool:
        """kombu's Redis transport, plain or behind Sentinel (`sentinel://`)."""
        return is_redis_transport(self.broker_url)

    @cached_property
    def broker_is_amqp(self) -> bool:
        return is_amqp_url(self.broker_url)

    @cached_property
    def broker_redis(self) -> Any:
        """A bounded redis client on the broker's database (Redis/Valkey brokers only; behind
        Sentinel, on the master its `master_name` names)."""
        return redis_client(
            self.broker_url,
            timeout_s=self.settings.broker_timeout_s,
            options=self.app.conf.broker_transport_options,
        )

    @cached_property
    def _state_place(self) -> tuple[str, str] | None:
        """(URL, key prefix) of the state store: the configured state_url, else the broker's
        Redis (under its `global_keyprefix`), else the result backend's; None: no Redis."""
        if self.settings.state_url:
            return self.settings.state_url, ""
        conf = self.app.conf
        places = (
            (self.broker_url, conf.broker_transport_options),
            (self.backend_url, conf.result_backend_transport_options),
        )
        for url, options in places:
            if is_redis_url(url):
                return url, str((options or {}).get("global_keyprefix") or "")
        return None

    @property
    def state_url(self) -> str | None:
        """Where this project keeps its own state (history, schedules, workflow records,
        rpc:// results), or None when no Redis/Valkey is at hand (`open_cluster` then fills in
        the embedded one)."""
        place = self._state_place
        return place[0] if place else None

    @cached_property
    def state(self) -> Any:
        """A bounded, decoding client on the state store."""
        place = self._state_place
        if place is None:
            raise Unavailable(
                "this needs a Redis or Valkey store: neither the broker nor the result backend "
                "is one, and no CELERY_MCP_STATE_URL is set",
                hint="set CELERY_MCP_STATE_URL to a redis:// URL (the embedded Valkey is used "
                "when celery-mcp starts the process)",
            )
        return redis_client(place[0], timeout_s=self.settings.broker_timeout_s, decode=True)

    @property
    def state_prefix(self) -> str:
        place = self._state_place
        return place[1] if place else ""

    @cached_property
    def history(self) -> HistoryStore:
        """The task history store, in the state store."""
        s = self.settings
        return HistoryStore(
            self.state,
            max_tasks=s.history_max_tasks,
            max_age_s=s.history_max_age_s,
            field_bytes=s.history_field_bytes,
            prefix=history_prefix(self.state_prefix),
        )

    @cached_property
    def schedules(self) -> ScheduleStore:
        """The RedBeat schedule store (the app's `redbeat_redis_url`, else the broker)."""
        url, prefix, lock_key = store_location(self.app, self.state_url)
        if url is None:
            raise InvalidArgument(
                f"schedules need a Redis/Valkey store; the broker is {redact_url(self.broker_url)}",
                hint="use a redis:// broker or set redbeat_redis_url in your Celery app",
            )
        client = redis_client(url, timeout_s=self.settings.broker_timeout_s, decode=True)
        return ScheduleStore(client=client, app=self.app, url=url, prefix=prefix, lock_key=lock_key)

    def app_task_names(self) -> frozenset[str]:
        """Task names registered in the imported app (its includes imported once)."""
        with self.lock:
            if self._app_tasks is None:
                self.app.loader.import_default_modules()
                self._app_tasks = frozenset(
                    n for n in self.app.tasks if not n.startswith("celery.")
                )
            return self._app_tasks

    def forget_app_tasks(self) -> None:
        """Read the app's task list again on next use (a task was registered since)."""
        with self.lock:
            self._app_tasks = None

    def close(self) -> None:
        """Close the clients this cluster opened and the app's connections (best effort)."""
        if self.reply_drain is not None:
            self.reply_drain.stop()
        for name in ("broker_redis", "state", "history", "schedules"):
            opened = self.__dict__.pop(name, None)
            client = getattr(opened, "client", getattr(opened, "r", opened))
            if client is not None and hasattr(client, "close"):
                client.close()
        self.app.close()
