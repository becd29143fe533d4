"""`skill.workflow()`: chains, groups, chords and maps, each returning a WorkflowHandle."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from celery_mcp.errors import InvalidArgument, WaitTimeout
from celery_mcp.interfaces.facade.types import Call, Result

if TYPE_CHECKING:
    from celery_mcp.interfaces.facade import CelerySkill

#: A workflow step: "demo.noop", ("demo.add", [2, 3]), ("demo.echo", [], {"k": 1}), or a dict
#: with task_name, args, kwargs and send_task options (the WorkflowStep model's fields).
Step = str | tuple[Any, ...] | list[Any] | dict[str, Any]

WORKFLOW_WAIT_SLICE_S = 1.0


def _step(step: Step) -> dict[str, Any]:
    """A WorkflowStep's fields from the short forms above."""
    if isinstance(step, str):
        return {"task_name": step}
    if isinstance(step, dict):
        return step
    if isinstance(step, tuple | list) and step and isinstance(step[0], str) and len(step) <= 3:
        fields: dict[str, Any] = {"task_name": step[0]}
        if len(step) > 1:
            fields["args"] = step[1]
        if len(step) > 2:
            fields["kwargs"] = step[2]
        return fields
    raise InvalidArgument(
        f"bad workflow step {step!r}",
        hint="give 'task.name', ('task.name', [args]), ('task.name', [args], {kwargs}) or a dict",
    )


class WorkflowHandle:
    """A workflow that was started: `.id`, `.ready()`, `.results`, `.result`, `.get(timeout)`.

    `.data` is what the workflow tool returned (workflow_id, task_count, group_id, message,
    ...); the rest reads the workflow back with get_workflow and get_result.
    """

    def __init__(self, skill: CelerySkill, kind: str, data: Result) -> None:
        self._call: Call = skill._call
        self.data = data
        self.kind = kind  # chain, group, chord or map
        self.id: str | None = data.get("workflow_id")

    def __repr__(self) -> str:
        return f"<WorkflowHandle {self.kind} {self.id}>"

    def _id(self) -> str:
        if self.id is None:
            raise InvalidArgument("a dry run has no workflow to read", hint="see .data['canvas']")
        return self.id

    def tree(self, *, states: list[str] | None = None, offset: int = 0, limit: int = 50) -> Result:
        """get_workflow: each task's state and result or error, counts, where it failed."""
        return self._call(
            "get_workflow", workflow_id=self._id(), states=states, offset=offset, limit=limit
        )

    def ready(self) -> bool:
        """True when nothing more will run (finished, or a chain stopped at a failed step)."""
        return bool(self.tree(limit=1)["ready"])

    @property
    def results(self) -> list[Any]:
        """Each step's or parallel task's result, in order (None where not SUCCESS yet)."""
        out: list[Any] = []
        offset = 0
        while True:
            page = self.tree(offset=offset, limit=500)
            out += [node["result"] for node in page["nodes"]]
            if not page["more"]:
                return out
            offset += len(page["nodes"])

    @property
    def result(self) -> Any:
        """The final result: the chord callback's, the chain's last step's, or the list of a
        group's results; None until it succeeded."""
        return self.tree(limit=1)["result"]

    def get(self, timeout: float = 10.0) -> Result:
        """Wait up to `timeout` seconds until ready; return the workflow tree (state, result,
        error, nodes, ...). Raises WaitTimeout when it is not ready in time."""
        workflow_id = self._id()
        deadline = time.monotonic() + timeout
        while True:
            tree = self.tree()
            if tree["ready"]:
                return tree
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WaitTimeout(
                    f"workflow {workflow_id} not ready after {timeout:.1f}s: {tree['counts']}",
                    hint="call get() again, or tree() to see which tasks are pending",
                )
            # a pub/sub wait on the final id, so it returns as soon as that finishes
            self._call(
                "get_result", task_id=workflow_id, timeout_s=min(WORKFLOW_WAIT_SLICE_S, remaining)
            )


class WorkflowManager:
    """Workflows: chain, group, chord, map (steps as in `Step`); each returns a WorkflowHandle."""

    def __init__(self, skill: CelerySkill) -> None:
        self._skill = skill
        self._call: Call = skill._call

    def _step(self, step: Step) -> dict[str, Any]:
        """The step's fields; a function registered here goes to this facade's queue.

        A step after the first (chain) or a chord callback is sent by the worker that ran the
        step before it, with that worker's routing: the queue must travel in the signature.
        """
        fields = _step(step)
        if fields.get("task_name") in self._skill._registered and not fields.get("queue"):
            fields = {**fields, "queue": self._skill.local_queue}
        return fields

    def _handle(self, op_name: str, **fields: Any) -> WorkflowHandle:
        kind = op_name.split("_")[0]
        return WorkflowHandle(self._skill, kind, self._call(op_name, **fields))

    def chain_tasks(self, steps: list[Step], *, dry_run: bool = False) -> WorkflowHandle:
        """Run steps one after another, each getting the previous result first (unless
        immutable); a failed step stops the chain."""
        return self._handle("chain_tasks", steps=[self._step(s) for s in steps], dry_run=dry_run)

    def group_tasks(self, tasks: list[Step], *, dry_run: bool = False) -> WorkflowHandle:
        """Run tasks in parallel; `.results` lists their results."""
        return self._handle("group_tasks", tasks=[self._step(s) for s in tasks], dry_run=dry_run)

    def chord_workflow(
        self, header: list[Step], callback: Step, *, dry_run: bool = False
    ) -> WorkflowHandle:
        """Run header tasks in parallel, then `callback` on the list of their results."""
        return self._handle(
            "chord_workflow",
            header=[self._step(s) for s in header],
            callback=self._step(callback),
            dry_run=dry_run,
        )

    def map_task(
        self,
        task_name: str,
        items: list[list[Any]],
        *,
        options: dict[str, Any] | None = None,
        chunk_size: int | None = None,
        chord_callback: Step | None = None,
        validate_args: bool = True,
        dry_run: bool = False,
    ) -> WorkflowHandle:
        """Run `task_name` once per args list in `items` (optionally chunked), optionally
        with a chord_callback on all results."""
        if task_name in self._skill._registered and not (options or {}).get("queue"):
            options = {**(options or {}), "queue": self._skill.local_queue}
        return self._handle(
            "map_task",
            task_name=task_name,
            items=items,
            options=options,
            chunk_size=chunk_size,
            chord_callback=None if chord_callback is None else self._step(chord_callback),
            validate_args=validate_args,
            dry_run=dry_run,
        )

    def get_workflow(
        self,
        workflow_id: str,
        *,
        states: list[str] | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> Result:
        """A workflow's tree by id (as returned in a handle's `.id`)."""
        return self._call(
            "get_workflow", workflow_id=workflow_id, states=states, offset=offset, limit=limit
        )
