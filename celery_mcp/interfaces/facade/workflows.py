"""`skill.workflow()`: chains, groups, chords and maps, each returning a WorkflowHandle."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from celery_mcp.errors import InvalidArgument
from celery_mcp.interfaces.facade.handles import WorkflowHandle
from celery_mcp.interfaces.facade.types import Call, Result

if TYPE_CHECKING:
    from celery_mcp.interfaces.facade import CelerySkill

#: A workflow step: "demo.noop", ("demo.add", (2, 3)), ("demo.echo", [], {"k": 1}), or a dict
#: with task_name, args, kwargs and send_task options (the WorkflowStep model's fields).
Step = str | tuple[Any, ...] | list[Any] | dict[str, Any]


def _one_step(value: list[Any]) -> bool:
    """True when a list is one step (`["name", [args], {kwargs}]`), not a list of steps."""
    return (
        0 < len(value) <= 3
        and isinstance(value[0], str)
        and (len(value) < 2 or isinstance(value[1], list | tuple))
        and (len(value) < 3 or isinstance(value[2], dict))
    )


def _steps(steps: tuple[Any, ...]) -> list[Step]:
    """Steps given one by one (the seed's `chain_tasks(step, step, ...)`), or as one list."""
    if len(steps) == 1 and isinstance(steps[0], list) and not _one_step(steps[0]):
        return list(steps[0])
    return list(steps)


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
        return WorkflowHandle(self._call, kind, self._call(op_name, **fields))

    def chain_tasks(
        self, *steps: Step, dry_run: bool = False, wait_s: float = 0.0
    ) -> WorkflowHandle:
        """Run steps one after another, each getting the previous result first (unless
        immutable); a failed step stops the chain. `chain_tasks(("t.a", (1,)), ("t.b",))`
        or `chain_tasks([...])`; `wait_s` also waits for the result (`handle["outcome"]`)."""
        fields = [self._step(s) for s in _steps(steps)]
        return self._handle("chain_tasks", steps=fields, dry_run=dry_run, wait_s=wait_s)

    def group_tasks(self, *tasks: Step, dry_run: bool = False) -> WorkflowHandle:
        """Run tasks in parallel; `.results` has a handle per task, `.get()` the list of
        results. `group_tasks(("t.a", (1,)), ("t.a", (2,)))` or `group_tasks([...])`."""
        fields = [self._step(s) for s in _steps(tasks)]
        return self._handle("group_tasks", tasks=fields, dry_run=dry_run)

    def chord_workflow(
        self,
        header_tasks: list[Step],
        callback_task: Step,
        *,
        dry_run: bool = False,
        wait_s: float = 0.0,
    ) -> WorkflowHandle:
        """Run header tasks in parallel, then `callback_task` on the list of their results;
        `wait_s` also waits for the result (`handle["outcome"]`)."""
        return self._handle(
            "chord_workflow",
            header=[self._step(s) for s in header_tasks],
            callback=self._step(callback_task),
            dry_run=dry_run,
            wait_s=wait_s,
        )

    def map_task(
        self,
        task_name: str,
        items: list[list[Any]] | list[tuple[Any, ...]],
        chord_callback: Step | None = None,
        *,
        options: dict[str, Any] | None = None,
        chunk_size: int | None = None,
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
        status: list[str] | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> Result:
        """A workflow's tree by id (as returned in a handle's `.id`)."""
        return self._call(
            "get_workflow", workflow_id=workflow_id, status=status, offset=offset, limit=limit
        )
