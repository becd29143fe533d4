"""`Cluster`: the one object every service call takes (settings + Celery app + clients)."""

from __future__ import annotations

import threading
from functools import cached_property
from typing import Any

from celery import Celery

from celery_mcp.config import Settings


class Cluster:
    """Settings, the Celery app and the broker/backend clients of one process."""

    def __init__(self, settings: Settings | None = None, app: Celery | None = None) -> None:
        from celery_mcp.app import make_app

        self.settings = settings or Settings()
        self.app = app or make_app(self.settings)
        self.lock = threading.Lock()
        self.cache: dict[str, tuple[float, Any]] = {}

    @property
    def broker_url(self) -> str:
        return str(self.app.conf.broker_url)

    @property
    def backend_url(self) -> str:
        return str(self.app.conf.result_backend)

    @property
    def broker_is_redis(self) -> bool:
        return self.broker_url.startswith(("redis://", "rediss://", "valkey://", "redis+socket"))

    @cached_property
    def broker_redis(self) -> Any:
        """A redis client on the broker's database (Redis/Valkey brokers only), bounded."""
        import redis

        t = self.settings.broker_timeout_s
        return redis.Redis.from_url(
            self.broker_url.replace("valkey://", "redis://"),
            socket_timeout=t,
            socket_connect_timeout=t,
            retry_on_timeout=False,
            health_check_interval=0,
        )

    def app_task_names(self) -> frozenset[str]:
        """Task names registered in the imported app (its includes imported once)."""
        with self.lock:
            if "app_tasks" not in self.cache:
                self.app.loader.import_default_modules()
                names = frozenset(n for n in self.app.tasks if not n.startswith("celery."))
                self.cache["app_tasks"] = (0.0, names)
            names = self.cache["app_tasks"][1]
            assert isinstance(names, frozenset)
            return names
