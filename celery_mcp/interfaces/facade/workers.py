"""`skill.worker_manager()`: inspect and control workers, queues and pools."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from celery_mcp.interfaces.facade.types import Call, Result

if TYPE_CHECKING:
    from celery_mcp.interfaces.facade import CelerySkill


class WorkerManager:
    """Workers: inspect, ping, tasks held, queues, control, shutdown.

    `destination` (worker hostnames; None: every worker) and `timeout_s` (wait for replies;
    None: the inspect timeout setting) mean the same in every method.
    """

    def __init__(self, skill: CelerySkill) -> None:
        self._call: Call = skill._call

    def inspect_workers(
        self,
        destination: list[str] | None = None,
        *,
        timeout_s: float | None = None,
        max_tasks: int = 20,
    ) -> Result:
        """Every answering worker in detail (pool, queues, tasks held, totals) and who is silent."""
        return self._call(
            "inspect_workers", destination=destination, timeout_s=timeout_s, max_tasks=max_tasks
        )

    def ping_workers(
        self, destination: list[str] | None = None, *, timeout_s: float | None = None
    ) -> Result:
        """Workers that answer ping, with latencies."""
        return self._call("ping_workers", destination=destination, timeout_s=timeout_s)

    def get_active_tasks(
        self,
        destination: list[str] | None = None,
        *,
        timeout_s: float | None = None,
        include_reserved: bool = True,
        include_scheduled: bool = True,
        max_tasks: int = 50,
    ) -> Result:
        """Tasks running on workers (and prefetched or waiting for their ETA)."""
        return self._call(
            "get_active_tasks",
            destination=destination,
            timeout_s=timeout_s,
            include_reserved=include_reserved,
            include_scheduled=include_scheduled,
            max_tasks=max_tasks,
        )

    def get_registered_tasks(
        self, destination: list[str] | None = None, *, timeout_s: float | None = None
    ) -> Result:
        """Task names each worker can run, and their union."""
        return self._call("get_registered_tasks", destination=destination, timeout_s=timeout_s)

    def queue_lengths(
        self,
        queues: list[str] | None = None,
        *,
        timeout_s: float | None = None,
        consumers: bool = True,
    ) -> Result:
        """Messages waiting per queue on the broker, and (`consumers`) who consumes each."""
        return self._call("queue_lengths", queues=queues, timeout_s=timeout_s, consumers=consumers)

    def purge_queue(self, queue: str, *, confirm: bool | None = None) -> Result:
        """Delete every message waiting in `queue` (confirm=False: a dry run)."""
        return self._call("purge_queue", queue=queue, confirm=confirm)

    def control_workers(
        self,
        command: str,
        destination: list[str] | None = None,
        *,
        timeout_s: float | None = None,
        confirm: bool | None = None,
        **arguments: Any,
    ) -> Result:
        """One remote-control command: pool_restart, pool_grow/pool_shrink (n), autoscale
        (max, min), add_consumer/cancel_consumer (queue), rate_limit (task_name, rate),
        time_limit (task_name, soft, hard)."""
        return self._call(
            "control_workers",
            command=command,
            destination=destination,
            timeout_s=timeout_s,
            confirm=confirm,
            **arguments,
        )

    def pool_restart(
        self,
        destination: list[str] | None = None,
        *,
        timeout_s: float | None = None,
        confirm: bool | None = None,
    ) -> Result:
        """Replace every pool process (prefork workers); confirm=False: a dry run."""
        return self.control_workers(
            "pool_restart", destination, timeout_s=timeout_s, confirm=confirm
        )

    def shutdown_workers(
        self,
        destination: list[str] | None = None,
        *,
        confirm: bool | None = None,
        wait_s: float = 10.0,
        timeout_s: float | None = None,
    ) -> Result:
        """Warm-stop workers (all of them when destination is None); confirm=False: a
        dry run; waits up to wait_s for them to leave."""
        return self._call(
            "shutdown_workers",
            destination=destination,
            confirm=confirm,
            wait_s=wait_s,
            timeout_s=timeout_s,
        )
