"""Workflows: chain, group, chord and map as one trackable id, and the tree behind that id.

Every task id is assigned here before anything is published, so the whole tree is known up
front. Its record (stores.workflows: kind, node ids and names, group and callback ids) is stored
in the result backend with the backend's own expiry (`result_expires`); `get_workflow` reads it
and the nodes' states (MGETs of 1,000 keys). The id
is what `get_status`/`get_result` accept: a chain's last step, a chord's callback, or a group
saved with `GroupResult.save()` (those two tools resolve a saved group to its aggregate).

Failure semantics are Celery's, made visible: a failed chain step marks the later steps
FAILURE without running them (shown here as NOT_RUN); a failed chord header task makes the
callback FAILURE with a ChordError naming it, once every header task has finished.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from celery import chain, chord, group
from celery.backends.base import BaseKeyValueStoreBackend
from celery.canvas import Signature, xstarmap
from celery.signals import after_task_publish
from celery.utils import uuid

from celery_mcp.errors import CeleryMcpError, InvalidArgument, NotFound, translate_errors
from celery_mcp.models.common import (
    FAILED_STATES,
    NOT_RUN,
    READY_STATES,
    Json,
    TaskState,
    Truncation,
)
from celery_mcp.models.tasks import GetResultInput, TaskOptions, TaskResult, TaskStatus
from celery_mcp.models.workflows import (
    NOT_SENT,
    ChainInput,
    ChordInput,
    GetWorkflowInput,
    GroupInput,
    MapInput,
    StepOptions,
    WorkflowKind,
    WorkflowNode,
    WorkflowResult,
    WorkflowStep,
    WorkflowTree,
)
from celery_mcp.service import cancel
from celery_mcp.service.catalog import app_spec, routed_queue, worker_view
from celery_mcp.service.cluster import Cluster
from celery_mcp.service.limits import cap_json
from celery_mcp.service.results import MGET_BATCH, check_result_backend, has_result_backend, metas
from celery_mcp.service.rpc_results import add_chord, uses_rpc
from celery_mcp.service.sending import (
    check_delays,
    ensure_sendable,
    forget_sent,
    noting_sent,
    publish_options,
    queue_warnings,
)
from celery_mcp.service.signatures import check_call
from celery_mcp.service.waiting import wait_for_result
from celery_mcp.stores import workflows as records
from celery_mcp.stores.history import SentTask
from celery_mcp.stores.workflows import NodeRecord, WorkflowRecord
from celery_mcp.task_failures import exception_text

#: Stands for the previous step's result when a chained step's args are checked.
PREVIOUS_RESULT = None
MIN_NODE_BYTES = 256
#: Messages one call may publish per second of CALL_TIMEOUT_S. Each is an LPUSH plus a
#: task-sent event; a 2-core machine shared with test runs did 360-1,200 a second.
PUBLISH_MSGS_PER_S = 200


# --- validation and canvas building -------------------------------------------------------


def check_size(count: int, what: str, cap: int) -> None:
    """Refuse an empty workflow or one of more than `cap` tasks (nothing is sent)."""
    if count == 0:
        raise InvalidArgument(
            f"empty workflow: {what} is an empty list",
            hint=f"give at least one entry in {what}; for a single task use send_task",
        )
    if count > cap:
        raise InvalidArgument(
            f"workflow of {count} tasks is over the cap of {cap} (CELERY_MCP_MAX_WORKFLOW_SIZE)",
            hint="split it into several workflows, or raise the cap",
        )


def check_publish_budget(plan_kind: str, messages: int, items: int, call_timeout_s: float) -> None:
    """Refuse a parallel workflow whose messages could not all be published within one call's
    bound (the caller would see a timeout while publishing went on): nothing is sent."""
    limit = max(1, int(call_timeout_s * PUBLISH_MSGS_PER_S))
    if messages <= limit:
        return
    if plan_kind == "map":
        size = -(-items // (limit // 2 or 1))
        hint = f"pass chunk_size={size} or more (one message per chunk)"
    else:
        hint = "split it, or use map_task with chunk_size for one task over many inputs"
    raise InvalidArgument(
        f"{messages} messages to publish in one call; at most {limit} fit in "
        f"CELERY_MCP_CALL_TIMEOUT_S={call_timeout_s:g}s",
        hint=f"{hint}, or raise CELERY_MCP_CALL_TIMEOUT_S",
    )


def _check_celery_typing(cluster: Cluster, sigs: Sequence[Signature]) -> None:
    """Celery's own arity check, done for every message before the first is published.

    `Task.apply_async` of a task registered here (with `typing`, the default) raises TypeError
    when args/kwargs do not fit; inside a group that would come after earlier members were
    sent. With validate_args=false this is the only check, so it runs up front.
    """
    for sig in sigs:
        task = cluster.app.tasks.get(sig.task)
        header = getattr(task, "__header__", None) if task is not None and task.typing else None
        if header is None:
            continue
        try:
            header(*(sig.args or ()), **(sig.kwargs or {}))
        except TypeError as exc:
            raise InvalidArgument(
                f"{sig.task} cannot take args={list(sig.args)} kwargs={dict(sig.kwargs)}: {exc}",
                hint="fix the arguments (describe_task shows the signature); nothing was sent",
            ) from exc


def _check_step(cluster: Cluster, step: WorkflowStep, *, after_result: bool) -> None:
    """ensure_sendable for one step; `after_result`: it will get a result prepended."""
    if not after_result or step.immutable:
        ensure_sendable(
            cluster, step.task_name, step.args, step.kwargs, validate=step.validate_args, opts=step
        )
        return
    args = [PREVIOUS_RESULT, *step.args]
    ensure_sendable(cluster, step.task_name, args, step.kwargs, validate=False, opts=step)
    if step.validate_args:
        _check_with_previous_result(cluster, step.task_name, args, step.kwargs)


def _check_with_previous_result(
    cluster: Cluster, name: str, args: list[Any], kwargs: dict[str, Any]
) -> None:
    """The signature check of a step whose first argument is a result not known yet: arity,
    keywords and the types of the given arguments; the first parameter accepts anything."""
    spec = app_spec(cluster, name) or worker_view(cluster).specs.get(name)
    if spec is None or spec.parameters_schema is None:
        return
    first = next((p for p in spec.parameters if p.kind != "keyword_only"), None)
    update: dict[str, Any] = {}
    if first is not None and first.kind == "var_positional":
        update["var_args_schema"] = None
    elif first is not None:
        schema = dict(spec.parameters_schema)
        schema["properties"] = {**schema.get("properties", {}), first.name: {}}
        update["parameters_schema"] = schema
    check_call(spec.model_copy(update=update), args, kwargs)


def _signature(
    cluster: Cluster, name: str, args: Sequence[Any], kwargs: dict[str, Any], opts: TaskOptions
) -> Signature:
    """A signature with its task id assigned now and send_task's options."""
    immutable = bool(getattr(opts, "immutable", False))
    sig: Signature = cluster.app.signature(
        name, args=list(args), kwargs=dict(kwargs), immutable=immutable
    )
    sig.set(task_id=uuid(), **publish_options(cluster, opts))
    return sig


def _step(cluster: Cluster, step: WorkflowStep) -> Signature:
    return _signature(cluster, step.task_name, step.args, step.kwargs, step)


def _node(sig: Signature, items: int | None = None) -> NodeRecord:
    name = sig.task
    if name == "celery.starmap":
        name = sig.kwargs["task"]["task"]
    return NodeRecord(task_id=sig.id, task_name=name, items=items)


def _canvas_json(cluster: Cluster, canvas: Signature) -> tuple[Json, list[Truncation]]:
    plain = json.loads(json.dumps(canvas, default=str))  # a Signature is a dict
    value, cut = cap_json("canvas", plain, cluster.settings.max_output_bytes)
    return value, [cut] if cut else []


@dataclass(frozen=True)
class Plan:
    """A workflow ready to publish: its canvas and the record of its tree."""

    kind: WorkflowKind
    workflow_id: str
    canvas: Signature
    nodes: list[NodeRecord]
    group_id: str | None = None
    callback: NodeRecord | None = None
    save_group: bool = False
    sent_here: tuple[Signature, ...] = ()  # what this process publishes (the rest: workers)
    rpc_callback: Signature | None = None  # a chord's callback on rpc://, sent by the drain

    @property
    def task_count(self) -> int:
        return len(self.nodes) + (1 if self.callback else 0)

    def record(self) -> WorkflowRecord:
        return WorkflowRecord(
            kind=self.kind, nodes=self.nodes, group_id=self.group_id, callback=self.callback
        )


def _group_plan(
    cluster: Cluster, kind: WorkflowKind, sigs: list[Signature], items: list[int]
) -> Plan:
    gid = uuid()
    nodes = [_node(s, n or None) for s, n in zip(sigs, items, strict=True)]
    canvas = group(sigs, app=cluster.app, task_id=gid)
    return Plan(kind, gid, canvas, nodes, group_id=gid, save_group=True, sent_here=tuple(sigs))


def _chord_plan(
    cluster: Cluster, kind: WorkflowKind, sigs: list[Signature], items: list[int], body: Signature
) -> Plan:
    gid = uuid()
    nodes = [_node(s, n or None) for s, n in zip(sigs, items, strict=True)]
    header = group(sigs, app=cluster.app, task_id=gid)
    rpc = uses_rpc(cluster)  # rpc:// has no chords: the reply drain sends the callback
    canvas = header if rpc else chord(header, body, app=cluster.app)
    return Plan(
        kind,
        body.id,
        canvas,
        nodes,
        group_id=gid,
        callback=_node(body),
        sent_here=tuple(sigs),
        rpc_callback=body if rpc else None,
    )


def _publish(
    cluster: Cluster,
    plan: Plan,
    dry_run: bool,
    wait_s: float = 0.0,
    progress: cancel.Progress | None = None,
) -> WorkflowResult:
    """Store the record (and saved group), then publish; or describe it on a dry run. With
    `wait_s`, wait for the workflow id's result too."""
    if wait_s and not dry_run:  # refused before anything is sent
        check_result_backend(cluster)
    if plan.kind != "chain":  # a chain publishes its first step; the worker sends the rest
        items = sum(n.items or 1 for n in plan.nodes)
        budget = cluster.settings.call_timeout_s
        check_publish_budget(plan.kind, len(plan.nodes), items, budget)
    _check_celery_typing(cluster, plan.sent_here)
    if dry_run:
        canvas, cuts = _canvas_json(cluster, plan.canvas)
        cut = f" (cut: {cuts[0]})" if cuts else ""
        return WorkflowResult(
            workflow_id=None,
            task_count=plan.task_count,
            canvas=canvas,
            message=f"dry run: {plan.task_count} task(s) validated, nothing was published{cut}",
        )
    kv, prefix = record_store(cluster)
    with translate_errors("backend"):
        records.save(kv, prefix, plan.workflow_id, plan.record())
        if plan.save_group and not uses_rpc(cluster):  # rpc:// saves no groups
            records.save_group(cluster.app, plan.workflow_id, [n.task_id for n in plan.nodes])
    if plan.rpc_callback is not None:
        header_ids = [n.task_id for n in plan.nodes]
        add_chord(cluster, str(plan.group_id), header_ids, plan.rpc_callback)
    notes = [_sent_note(sig) for sig in plan.sent_here if sig.task != "celery.starmap"]
    _published.ids = []
    try:
        with noting_sent(cluster, notes), translate_errors("broker"):
            result = plan.canvas.apply_async()
    except CeleryMcpError as exc:
        raise _partly_published(cluster, plan, set(_published.ids), notes, exc) from exc
    finally:
        _published.ids = None
    expected = plan.group_id if plan.rpc_callback is not None else plan.workflow_id
    if result.id != expected:  # ids are assigned above; Celery keeps them
        raise RuntimeError(f"workflow id {expected} became {result.id}")
    return WorkflowResult(
        workflow_id=plan.workflow_id,
        task_count=plan.task_count,
        message=f"published {plan.task_count} task(s); get_result waits for the outcome, "
        "get_workflow shows every task's state",
        warnings=queue_warnings(cluster, _queues(cluster, plan.canvas)),
        outcome=wait_for_result(cluster, plan.workflow_id, wait_s, progress) if wait_s else None,
    )


def _queues(cluster: Cluster, canvas: Signature) -> list[str | None]:
    """The queue each task of `canvas` goes to (None: the default queue)."""
    if isinstance(canvas, chord):
        parts = [*canvas.tasks, canvas.body]
    else:  # a chain or group holds its tasks; a task signature has no `tasks`
        parts = getattr(canvas, "tasks", None) or []
    if parts:
        return [q for part in parts for q in _queues(cluster, part)]
    return [canvas.options.get("queue") or routed_queue(cluster, _node(canvas).task_name)]


def record_store(cluster: Cluster) -> tuple[records.KeyValue, str]:
    """Where workflow records live, and their key prefix: the result backend when it is a
    key-value store, else (rpc://) the state store."""
    backend = cluster.app.backend
    if isinstance(backend, BaseKeyValueStoreBackend):
        return backend, records.backend_prefix(backend)
    ttl = int(cluster.settings.result_expires_s)
    with translate_errors("backend"):
        return records.StateKV(cluster.state, ttl), cluster.state_prefix


def _sent_note(sig: Signature) -> SentTask:
    queue = sig.options.get("queue")
    return SentTask(str(sig.id), sig.task, list(sig.args), dict(sig.kwargs), queue)


#: Ids this thread published during the current `_publish` (None: not publishing).
_published = threading.local()


def _count_published(headers: dict[str, Any] | None = None, **_: Any) -> None:
    ids = getattr(_published, "ids", None)
    if ids is not None and headers:
        ids.append(headers.get("id"))


# Celery's own hook after each message this process publishes: a publish that stops part-way
# (broker gone mid-group) then knows exactly which members went out.
after_task_publish.connect(_count_published, weak=False)


def _partly_published(
    cluster: Cluster, plan: Plan, published: set[str], notes: list[SentTask], exc: CeleryMcpError
) -> CeleryMcpError:
    """The error of a publish that stopped part-way: which tasks went out, which did not.

    The workflow's record marks the ones not sent (get_workflow shows them as NOT_SENT), so a
    retry sends those only; they are also dropped from the history's notes.
    """
    unsent = [n.task_id for n in plan.nodes if n.task_id not in published]
    if not published or not unsent or plan.kind == "chain":
        forget_sent(cluster, notes)
        return exc
    try:
        with translate_errors("backend"):
            record = plan.record().model_copy(update={"not_sent": unsent})
            records.save(*record_store(cluster), plan.workflow_id, record)
    except CeleryMcpError:
        pass  # the backend is down too: the message below still says what happened
    forget_sent(cluster, [n for n in notes if n.task_id not in published])
    return type(exc)(
        f"{plan.kind} {plan.workflow_id}: published {len(published)} of {len(plan.nodes)} "
        f"task(s), then {exc.message}; the other {len(unsent)} were not sent (the first of "
        "them may have reached the broker: its publish got no reply)",
        hint=f"get_workflow {plan.workflow_id} lists them as NOT_SENT: send those again, not "
        "the whole workflow",
    )


def chain_tasks(
    cluster: Cluster, request: ChainInput, progress: cancel.Progress | None = None
) -> WorkflowResult:
    """Publish a chain (its id is the last step's); with `wait_s`, wait for its result."""
    check_size(len(request.steps), "steps", cluster.settings.max_workflow_size)
    for i, step in enumerate(request.steps):
        _check_step(cluster, step, after_result=i > 0)
    sigs = [_step(cluster, s) for s in request.steps]
    canvas = chain(*sigs, app=cluster.app)
    plan = Plan("chain", sigs[-1].id, canvas, [_node(s) for s in sigs], sent_here=(sigs[0],))
    return _publish(cluster, plan, request.dry_run, request.wait_s, progress)


def group_tasks(cluster: Cluster, request: GroupInput) -> WorkflowResult:
    """Publish a group, saved so its id resolves to the members."""
    check_size(len(request.tasks), "tasks", cluster.settings.max_workflow_size)
    for step in request.tasks:
        _check_step(cluster, step, after_result=False)
    sigs = [_step(cluster, s) for s in request.tasks]
    plan = _group_plan(cluster, "group", sigs, [0] * len(sigs))
    return _publish(cluster, plan, request.dry_run)


def chord_workflow(
    cluster: Cluster, request: ChordInput, progress: cancel.Progress | None = None
) -> WorkflowResult:
    """Publish a chord (its id is the callback's); with `wait_s`, wait for its result."""
    check_size(len(request.header), "header", cluster.settings.max_workflow_size)
    for step in request.header:
        _check_step(cluster, step, after_result=False)
    _check_step(cluster, request.callback, after_result=True)
    sigs = [_step(cluster, s) for s in request.header]
    plan = _chord_plan(cluster, "chord", sigs, [0] * len(sigs), _step(cluster, request.callback))
    return _publish(cluster, plan, request.dry_run, request.wait_s, progress)


def map_task(cluster: Cluster, request: MapInput) -> WorkflowResult:
    """Publish one task per item (or per chunk), as a group or a chord."""
    check_size(len(request.items), "items", cluster.settings.max_workflow_size)
    opts = request.options or StepOptions()
    for item in request.items:
        ensure_sendable(cluster, request.task_name, item, {}, validate=request.validate_args)
    check_delays(cluster, opts)
    if request.chord_callback is not None:
        _check_step(cluster, request.chord_callback, after_result=True)
    if request.chunk_size:
        n = request.chunk_size
        parts = [request.items[i : i + n] for i in range(0, len(request.items), n)]
        task = cluster.app.signature(request.task_name)
        sigs = []
        for part in parts:
            sig = xstarmap(task, part, app=cluster.app)
            sig.set(task_id=uuid(), **publish_options(cluster, opts))
            sigs.append(sig)
        sizes = [len(p) for p in parts]
    else:
        sigs = [_signature(cluster, request.task_name, it, {}, opts) for it in request.items]
        sizes = [0] * len(sigs)
    if request.chord_callback is not None:
        plan = _chord_plan(cluster, "map", sigs, sizes, _step(cluster, request.chord_callback))
    else:
        plan = _group_plan(cluster, "map", sigs, sizes)
    return _publish(cluster, plan, request.dry_run)


# --- reading states -----------------------------------------------------------------------


@dataclass(frozen=True)
class Members:
    """The tasks behind one workflow id."""

    kind: str
    task_ids: list[str]


def workflow_members(cluster: Cluster, workflow_id: str) -> Members | None:
    """Every task of the workflow `workflow_id` names (its record, or a saved group), or None
    when it is no workflow's id (a plain task; or no key-value backend to keep records)."""
    if not has_result_backend(cluster):
        return None
    with translate_errors("backend"):
        record = records.load(*record_store(cluster), workflow_id)
    if record is not None:
        return Members(record.kind, record.task_ids())
    ids = _saved_group_ids(cluster, workflow_id)
    return Members("group", ids) if ids else None


def _saved_group_ids(cluster: Cluster, group_id: str) -> list[str] | None:
    """Member ids of a group saved by id (rpc:// saves none: then a group's record)."""
    with translate_errors("backend"):
        if not uses_rpc(cluster):
            return records.saved_group_ids(cluster.app, group_id)
        record = records.load(*record_store(cluster), group_id)
    if record is None or record.callback is not None or record.kind == "chain":
        return None
    return [n.task_id for n in record.nodes]


def parallel_state(states: Sequence[str]) -> tuple[str, bool]:
    """(state, ready) of tasks run in parallel: ready when all are (a task never sent counts as
    failed), SUCCESS only if all succeeded, FAILURE if any failed, else PENDING until one
    starts, then STARTED."""
    if all(s in READY_STATES or s == NOT_SENT for s in states):
        failed = any(s in FAILED_STATES or s == NOT_SENT for s in states)
        return ("FAILURE" if failed else "SUCCESS"), True
    return ("PENDING" if all(s == "PENDING" for s in states) else "STARTED"), False


def chain_states(states: Sequence[str]) -> tuple[list[str], int | None]:
    """Steps' states with NOT_RUN after the first failed step, and that step's index.

    Celery marks the steps after a failed one FAILURE with the same error without running
    them (so the chain's last id does not hang); here they read NOT_RUN.
    """
    failed_at = next((i for i, s in enumerate(states) if s in FAILED_STATES), None)
    if failed_at is None:
        return list(states), None
    tail = [NOT_RUN if s == "PENDING" or s in FAILED_STATES else s for s in states[failed_at + 1 :]]
    return [*states[: failed_at + 1], *tail], failed_at


def overall_state(kind: str, states: Sequence[str], callback: str | None) -> tuple[str, bool]:
    """(state, ready) of a whole workflow from its nodes' states (chain: after chain_states)."""
    if callback is not None:  # chord, or map with a callback: the callback decides
        if NOT_SENT in states:  # a header task that was never sent: the callback never runs
            return "FAILURE", True
        if callback in READY_STATES:
            return ("SUCCESS" if callback == "SUCCESS" else "FAILURE"), True
        state, _ = parallel_state(states)
        return ("PENDING" if state == "PENDING" else "STARTED"), False
    if kind == "chain":
        if any(s in FAILED_STATES for s in states):
            return "FAILURE", True
        if states[-1] == "SUCCESS":
            return "SUCCESS", True
        return ("PENDING" if all(s == "PENDING" for s in states) else "STARTED"), False
    return parallel_state(states)


@dataclass(frozen=True)
class Aggregate:
    """The combined state of a group's members."""

    state: str
    ready: bool
    counts: dict[str, int]
    results: list[Any]
    error: str | None


def aggregate(cluster: Cluster, ids: Sequence[str]) -> Aggregate:
    """A saved group's state (see parallel_state) and its results in order."""
    found = metas(cluster, ids)
    states = [m.get("status", "PENDING") for m in found]
    state, ready = parallel_state(states)
    failed = [i for i, s in enumerate(states) if s in FAILED_STATES]
    error = None
    if failed:
        first = failed[0]
        error = (
            f"{len(failed)} of {len(ids)} tasks failed; first: #{first} "
            f"({ids[first]}): {exception_text(found[first].get('result'))}"
        )
    results = [
        m.get("result") if s == "SUCCESS" else None for m, s in zip(found, states, strict=True)
    ]
    return Aggregate(state, ready, dict(Counter(states)), results, error)


def saved_group_status(cluster: Cluster, group_id: str) -> TaskStatus | None:
    """get_status of a saved group id (None when `group_id` is not one)."""
    ids = _saved_group_ids(cluster, group_id)
    if ids is None:
        return None
    agg = aggregate(cluster, ids)
    done = sum(n for s, n in agg.counts.items() if s in READY_STATES)
    return TaskStatus(
        task_id=group_id,
        status=agg.state,
        ready=agg.ready,
        task_name=f"group of {len(ids)} tasks",
        note=f"saved group: {done}/{len(ids)} done, by state {agg.counts}; "
        "get_workflow lists its tasks",
    )


def _group_result(cluster: Cluster, group_id: str, agg: Aggregate, waited_s: float) -> TaskResult:
    payload, cut = cap_json("result", agg.results, cluster.settings.max_output_bytes)
    return TaskResult(
        task_id=group_id,
        status=agg.state,
        ready=agg.ready,
        success=agg.state == TaskState.SUCCESS,
        result=payload if agg.ready else None,
        error=agg.error,
        waited_s=round(waited_s, 4),
        timed_out=not agg.ready,
        truncated=[cut] if cut and agg.ready else [],
    )


def saved_group_result(
    cluster: Cluster, request: GetResultInput, progress: cancel.Progress | None = None
) -> TaskResult | None:
    """get_result of a saved group id: bounded wait for all members (None if not a group)."""
    ids = _saved_group_ids(cluster, request.task_id)
    if ids is None:
        return None
    start = time.monotonic()
    deadline = start + min(request.timeout_s, cluster.settings.result_wait_max_s)
    interval, reported = 0.02, start
    longest = 0.1 if len(ids) <= MGET_BATCH else 0.25  # one poll is one MGET per 1,000 ids
    while True:
        agg = aggregate(cluster, ids)
        now = time.monotonic()
        if agg.ready or now >= deadline:
            return _group_result(cluster, request.task_id, agg, now - start)
        if progress is not None and now - reported >= 1.0:
            reported = now
            done = sum(n for s, n in agg.counts.items() if s in READY_STATES)
            progress(done, len(ids), f"{done}/{len(ids)} tasks done")
        cancel.sleep(min(interval, max(0.0, deadline - now)))
        interval = min(interval * 1.5, longest)


# --- the tree -----------------------------------------------------------------------------


def _load_record(cluster: Cluster, workflow_id: str) -> WorkflowRecord:
    with translate_errors("backend"):
        record = records.load(*record_store(cluster), workflow_id)
    if record is not None:
        return record
    ids = _saved_group_ids(cluster, workflow_id)
    if ids is not None:  # a group saved by someone else: names come from the metas
        nodes = [NodeRecord(task_id=i) for i in ids]
        return WorkflowRecord(kind="group", group_id=workflow_id, nodes=nodes)
    raise NotFound(
        f"no workflow {workflow_id!r}: not made by a workflow tool, or expired "
        f"(kept {cluster.settings.result_expires_s}s)",
        hint="pass the workflow_id a workflow tool returned; for one task use get_status",
    )


def member_ids(cluster: Cluster, workflow_id: str) -> list[str]:
    """Every task id of a workflow (its nodes, then its callback; NotFound when unknown)."""
    return _load_record(cluster, workflow_id).task_ids()


def _view(
    index: int, node: NodeRecord, meta: dict[str, Any], state: str, cap: int, prior: str | None
) -> tuple[WorkflowNode, Truncation | None]:
    value, cut = cap_json(f"nodes[{index}].result", meta.get("result"), cap)
    error = None
    if state == NOT_RUN:
        error = f"not run: {prior}"
    elif state in FAILED_STATES or state == "RETRY":
        error = exception_text(meta.get("result"))
    return (
        WorkflowNode(
            index=index,
            task_id=node.task_id,
            task_name=node.task_name or meta.get("name") or "?",
            status=state,
            items=node.items,
            result=value if state == "SUCCESS" else None,
            error=error,
        ),
        cut if state == "SUCCESS" else None,
    )


def get_workflow(cluster: Cluster, request: GetWorkflowInput) -> WorkflowTree:
    """A workflow's tree with each node's state, a page of nodes at a time."""
    record = _load_record(cluster, request.workflow_id)
    kind, nodes, callback = record.kind, record.nodes, record.callback
    ids = record.task_ids()
    found = metas(cluster, ids)
    raw = [m.get("status", "PENDING") for m in found]
    not_sent = set(record.not_sent)
    raw = [
        NOT_SENT if s == "PENDING" and i in not_sent else s for i, s in zip(ids, raw, strict=True)
    ]
    states = raw[: len(nodes)]
    if kind == "chain":
        states, failed_at = chain_states(states)
    else:
        failed_at = next((i for i, s in enumerate(states) if s in FAILED_STATES), None)
    cb_state = raw[-1] if callback else None
    state, ready = overall_state(kind, states, cb_state)
    cap = max(MIN_NODE_BYTES, cluster.settings.max_output_bytes // (request.limit + 2))
    prior = None
    if failed_at is not None:
        failed_name = nodes[failed_at].task_name or found[failed_at].get("name")
        prior = f"step {failed_at} ({failed_name}) failed"
    wanted = set(request.status or [])
    chosen = [i for i, s in enumerate(states) if not wanted or s in wanted]
    page = chosen[request.offset : request.offset + request.limit]
    cuts: list[Truncation] = []
    views: list[WorkflowNode] = []
    room = cluster.settings.max_output_bytes // 2  # the nodes' share of the output cap
    for i in page:
        view, cut = _view(i, nodes[i], found[i], states[i], cap, prior)
        room -= len(view.model_dump_json())
        if room < 0 and views:
            cuts.append(f"nodes: {len(page) - len(views)} of this page left for the next call")
            break
        views.append(view)
        cuts += [cut] if cut else []
    cb_view = None
    if callback and cb_state:
        cb_view, cut = _view(len(nodes), callback, found[-1], cb_state, cap, None)
        cuts += [cut] if cut else []
    result: Any = None
    error = None
    if state == "SUCCESS":
        if callback:
            result = found[-1].get("result")
        elif kind == "chain":
            result = found[len(nodes) - 1].get("result")
        else:
            result = [m.get("result") for m in found]
    elif callback and cb_state in FAILED_STATES:
        error = exception_text(found[-1].get("result"))
    elif failed_at is not None:
        error = f"{prior}: {exception_text(found[failed_at].get('result'))}"
        if kind != "chain":
            error = error.replace("step", "task", 1)
    payload, cut = cap_json("result", result, cluster.settings.max_output_bytes // 2)
    cuts += [cut] if cut else []
    return WorkflowTree(
        workflow_id=request.workflow_id,
        kind=kind,
        status=state,
        ready=ready,
        counts=dict(Counter(states + ([cb_state] if cb_state else []))),
        total=len(ids),
        failed_at=failed_at,
        result=payload,
        error=error,
        group_id=record.group_id,
        nodes=views,
        callback=cb_view,
        more=len(chosen) > request.offset + len(views),
        truncated=cuts,
    )
