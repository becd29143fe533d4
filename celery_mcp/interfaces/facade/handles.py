"""Result handles, shaped like Celery's `AsyncResult` / `GroupResult`: `.id`, `.status`,
`.ready()`, `.successful()`, `.failed()`, `.result`, `.get(timeout)`.

`get` returns the value, raises `TaskFailed` when the task (or workflow) failed, and
`WaitTimeout` when it is not done within `timeout`: the same as Celery's `get()`, bounded.
"""

from __future__ import annotations

import time
from typing import Any

from celery_mcp.errors import InvalidArgument, TaskFailed, WaitTimeout
from celery_mcp.interfaces.facade.types import Call, Result

#: Longest single wait while a handle waits for a workflow (it re-reads the tree after each).
WAIT_SLICE_S = 1.0


class TaskHandle:
    """One task's result, read through the get_result and get_status operations."""

    def __init__(self, call: Call, task_id: str) -> None:
        self._call = call
        self.id = task_id

    def __repr__(self) -> str:
        return f"<TaskHandle {self.id}>"

    def _read(self, timeout: float = 0.0) -> Result:
        return self._call("get_result", task_id=self.id, timeout_s=timeout)

    @property
    def status(self) -> str:
        """The task's state now (PENDING, STARTED, SUCCESS, FAILURE, ...)."""
        return str(self._read()["status"])

    state = status

    def ready(self) -> bool:
        return bool(self._read()["ready"])

    def successful(self) -> bool:
        return bool(self._read()["success"])

    def failed(self) -> bool:
        read = self._read()
        return bool(read["ready"] and not read["success"])

    @property
    def result(self) -> Any:
        """The return value once it succeeded, the error text once it failed, else None."""
        read = self._read()
        return read["result"] if read["success"] else read["error"]

    def get(self, timeout: float = 10.0, propagate: bool = True) -> Any:
        """Wait up to `timeout` seconds; return the value (TaskFailed if it failed)."""
        read = self._read(timeout)
        if not read["ready"]:
            raise WaitTimeout(
                f"task {self.id} is {read['status']} after {timeout:.1f}s",
                hint="call get() again with a longer timeout",
            )
        if read["success"] or not propagate:
            return read["result"] if read["success"] else read["error"]
        raise TaskFailed(f"task {self.id} {read['status']}: {read['error']}")


class WorkflowHandle:
    """A started workflow: its one id, its nodes (`.results`: a TaskHandle each), its outcome.

    `.data` is what the workflow tool returned (workflow_id, task_count, message, ...);
    `.tree()` reads every node's status and result (get_workflow).
    """

    def __init__(self, call: Call, kind: str, data: Result) -> None:
        self._call = call
        self.data = data
        self.kind = kind  # chain, group, chord or map
        self.id: str | None = data.get("workflow_id")

    def __repr__(self) -> str:
        return f"<WorkflowHandle {self.kind} {self.id}>"

    def _id(self) -> str:
        if self.id is None:
            raise InvalidArgument("a dry run has no workflow to read", hint="see .data['canvas']")
        return self.id

    def tree(self, *, status: list[str] | None = None, offset: int = 0, limit: int = 50) -> Result:
        """get_workflow: each node's status and result or error, counts, where it failed."""
        return self._call(
            "get_workflow", workflow_id=self._id(), status=status, offset=offset, limit=limit
        )

    @property
    def status(self) -> str:
        """Overall: PENDING, STARTED, SUCCESS or FAILURE."""
        return str(self.tree(limit=1)["status"])

    state = status

    def ready(self) -> bool:
        """True when nothing more will run (finished, or a chain stopped at a failed step)."""
        return bool(self.tree(limit=1)["ready"])

    def successful(self) -> bool:
        return self.status == "SUCCESS"

    def failed(self) -> bool:
        tree = self.tree(limit=1)
        return bool(tree["ready"] and tree["status"] != "SUCCESS")

    @property
    def results(self) -> list[TaskHandle]:
        """A handle per step or parallel task, in order (a chunked map: one per chunk)."""
        handles: list[TaskHandle] = []
        offset = 0
        while True:
            page = self.tree(offset=offset, limit=500)
            handles += [TaskHandle(self._call, node["task_id"]) for node in page["nodes"]]
            if not page["more"]:
                return handles
            offset += len(page["nodes"])

    @property
    def result(self) -> Any:
        """The final result: the chord callback's, the chain's last step's, or the list of a
        group's results; None until it succeeded."""
        return self.tree(limit=1)["result"]

    def get(self, timeout: float = 10.0, propagate: bool = True) -> Any:
        """Wait up to `timeout` seconds until ready; return the final result (TaskFailed when
        the workflow failed, WaitTimeout when it is not ready in time)."""
        workflow_id = self._id()
        deadline = time.monotonic() + timeout
        while True:
            tree = self.tree(limit=1)
            if tree["ready"]:
                if tree["status"] == "SUCCESS" or not propagate:
                    return tree["result"] if tree["status"] == "SUCCESS" else tree["error"]
                raise TaskFailed(f"workflow {workflow_id} {tree['status']}: {tree['error']}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WaitTimeout(
                    f"workflow {workflow_id} not ready after {timeout:.1f}s: {tree['counts']}",
                    hint="call get() again, or tree() to see which tasks are pending",
                )
            # a pub/sub wait on the final id, so it returns as soon as that finishes
            self._call("get_result", task_id=workflow_id, timeout_s=min(WAIT_SLICE_S, remaining))
