"""MCP prompts: short procedures over the tools, listed by clients as slash commands.

Each prompt names the operations it needs; it is offered only when the server offers all of
them (toolsets, read-only mode), and a step that needs a state-changing tool is left out in
read-only mode. Arguments that name a task, queue, worker or schedule entry complete (see
`completions`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.prompts.base import Prompt, PromptArgument

from celery_mcp.config import Settings
from celery_mcp.service.policy import offers
from celery_mcp.service.registry import OPERATIONS
from celery_mcp.service.views import Kind


@dataclass(frozen=True)
class Argument:
    name: str
    description: str
    required: bool = False
    default: str = ""
    #: what completes it (None: free text)
    kind: Kind | None = None


@dataclass(frozen=True)
class Procedure:
    """One prompt: its arguments, the operations it uses, and its text."""

    name: str
    title: str
    description: str
    arguments: tuple[Argument, ...]
    needs: tuple[str, ...]
    #: (values, the `writes` the server offers) -> the text
    text: Callable[[Mapping[str, str], frozenset[str]], str]
    #: state-changing operations its optional steps use
    writes: tuple[str, ...] = field(default=())


def _triage(a: Mapping[str, str], can: frozenset[str]) -> str:
    retry = (
        "4. Retry safely: for transient causes only (timeouts, connection errors, a worker "
        "lost), call retry_failed with the same task_name and within_s and confirm=false "
        "first; read the dry run, then call it again with confirm=true. Never retry a task "
        "that failed on its input (ValueError, KeyError, validation): say what input to fix."
        if "retry_failed" in can
        else "4. This server does not retry tasks (read-only): say which ones are safe to retry."
    )
    return (
        f"Triage the recent failures of tasks matching {a['task_name']!r} "
        f"(last {a['within_hours']} hours).\n"
        f"1. Find: call list_tasks with status=['FAILURE'], task_name={a['task_name']!r}, "
        f"within_s={float(a['within_hours']) * 3600:.0f}, limit=50. Note counts_by_status.\n"
        "2. Explain: group the failures by error; for one task of each group call get_task "
        "(traceback, args, worker, retries) and describe_task on its task name.\n"
        "3. Classify each group: transient (broker/network/timeouts, worker lost) or "
        "permanent (bad input, bug). Call diagnose if workers or queues look involved.\n"
        f"{retry}\n"
        "5. Report: one line per group with count, cause, and what was done or must be done."
    )


def _etl(a: Mapping[str, str], can: frozenset[str]) -> str:
    return (
        "Run an extract-transform-load chain.\n"
        f"1. Check each step: describe_task on {a['extract_task']!r}, {a['transform_task']!r} "
        f"and {a['load_task']!r}; each later step receives the previous result as its first "
        "argument, so its first parameter must accept it.\n"
        f"2. Call chain_tasks with steps [{{task_name: {a['extract_task']!r}, args: "
        f"[{a['source']!r}]}}, {{task_name: {a['transform_task']!r}}}, {{task_name: "
        f"{a['load_task']!r}}}] and dry_run=true; fix any error it reports, then call it "
        "again without dry_run.\n"
        "3. Follow it: subscribe to celery://workflows/{workflow_id} (or call get_workflow) "
        "and get_result on the returned task_id with timeout_s=60 (call again if timed_out).\n"
        "4. If a step failed, get_workflow shows which one and its error (the steps after it "
        "are NOT_RUN). Report what the load step returned, or the failing step and why."
    )


def _schedule(a: Mapping[str, str], can: frozenset[str]) -> str:
    return (
        f"Schedule {a['task_name']!r} as periodic entry {a['name']!r} on cron {a['cron']!r} "
        f"in timezone {a['timezone']!r}.\n"
        f"1. describe_task {a['task_name']!r}: check the arguments it needs.\n"
        "2. Crontab fields are read in the cluster timezone (the timezone field of any "
        "periodic task result; list_periodic_tasks shows it). If it differs from "
        f"{a['timezone']!r}, convert the hour (and day) fields, mind daylight saving, and say "
        "so.\n"
        f"3. Call add_periodic_task with name={a['name']!r}, task_name={a['task_name']!r}, "
        "the converted crontab and the arguments. Check next_run_at in the result is the "
        "time you meant.\n"
        "4. Check beat runs: health must show beat ok (else start `celery-mcp beat`).\n"
        f"5. After next_run_at, call get_periodic_task {a['name']!r}: total_run_count grew "
        "and last_task_id is set; get_result on it shows the run's outcome."
        + (
            " If it did not fire, run_periodic_task_now tests the task itself."
            if "run_periodic_task_now" in can
            else ""
        )
    )


def _stuck(a: Mapping[str, str], can: frozenset[str]) -> str:
    steps = [
        ("control_workers", "control_workers add_consumer for the queue on an idle worker, or "
         "pool_grow"),
        ("revoke", "revoke a hung task only if it is known safe to stop"),
        ("purge_queue", "purge_queue only with the user's explicit yes (dry run first)"),
    ]  # fmt: skip
    offered = [text for name, text in steps if name in can]
    act = (
        f"5. Act, least disruptive first: {'; '.join(offered)}."
        if offered
        else "5. This server does not change workers (read-only): recommend the fix (a "
        "consumer on the queue, a bigger pool, stopping a hung task) and say why."
    )
    return (
        f"Investigate why queue {a['queue']!r} is not draining.\n"
        f"1. queue_lengths queues=[{a['queue']!r}]: depth and the workers consuming it. "
        "Call it again after 30 s to see if it moves.\n"
        "2. No consumer? inspect_workers shows which queues each worker reads; the fix is a "
        "worker on that queue (or add_consumer).\n"
        "3. Consumers but no progress? get_active_tasks: long-running or hung tasks holding "
        "every slot (compare started time with the task's time limit), reserved tasks piling "
        "up behind them, ETA tasks waiting.\n"
        "4. diagnose: lost workers, stuck tasks, failure rates and risky broker settings, "
        "ranked.\n"
        f"{act}\n"
        "6. Report the cause and the evidence (numbers from the calls above)."
    )


PROCEDURES: tuple[Procedure, ...] = (
    Procedure(
        "triage_failures", "Triage recent failures",
        "Find recent task failures, explain them from their tracebacks, and retry only the "
        "safe ones.",
        (
            Argument("task_name", "Task name or glob, e.g. 'billing.*'.", default="*",
                     kind="task_name"),
            Argument("within_hours", "How far back to look, in hours.", default="24"),
        ),
        needs=("list_tasks", "get_task", "describe_task", "diagnose"),
        writes=("retry_failed",),
        text=_triage,
    ),
    Procedure(
        "run_etl_chain", "Run an ETL chain",
        "Run extract, transform and load tasks as one chain, follow it, report where it "
        "failed.",
        (
            Argument("extract_task", "Task that reads the source.", True, kind="task_name"),
            Argument("transform_task", "Task that transforms the rows.", True,
                     kind="task_name"),
            Argument("load_task", "Task that writes the result.", True, kind="task_name"),
            Argument("source", "What the extract task reads (its first argument).", True),
        ),
        needs=("describe_task", "chain_tasks", "get_workflow", "get_result"),
        text=_etl,
    ),
    Procedure(
        "schedule_job", "Schedule a job",
        "Add a periodic task on a cron schedule in a given timezone and check that it fired.",
        (
            Argument("task_name", "Task to run.", True, kind="task_name"),
            Argument("cron", "Cron 'minute hour day_of_month month day_of_week', e.g. "
                     "'0 6 * * mon-fri'.", True),
            Argument("timezone", "Timezone the cron is meant in, e.g. 'Europe/Paris'.",
                     default="UTC"),
            Argument("name", "Entry name (new, or an existing one to replace).", True,
                     kind="schedule"),
        ),
        needs=(
            "describe_task", "list_periodic_tasks", "add_periodic_task", "get_periodic_task",
            "get_result", "health",
        ),
        writes=("run_periodic_task_now",),
        text=_schedule,
    ),
    Procedure(
        "investigate_stuck_queue", "Investigate a stuck queue",
        "Find why a queue is not draining (no consumer, hung tasks, lost workers) and the "
        "least disruptive fix.",
        (Argument("queue", "Queue name.", True, kind="queue"),),
        needs=("queue_lengths", "inspect_workers", "get_active_tasks", "diagnose"),
        writes=("control_workers", "revoke", "purge_queue"),
        text=_stuck,
    ),
)  # fmt: skip


def _offered(settings: Settings, name: str) -> bool:
    op = OPERATIONS[name]
    return offers(settings, op.toolset, op.read_only, "mcp")


def offered_procedures(settings: Settings) -> list[Procedure]:
    """The prompts whose every needed operation the server offers under `settings`."""
    return [p for p in PROCEDURES if all(_offered(settings, n) for n in p.needs)]


def render(procedure: Procedure, settings: Settings, values: Mapping[str, str]) -> str:
    """The prompt's text for `values` (defaults filled in)."""
    known = {a.name for a in procedure.arguments}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(
            f"unknown argument(s) {', '.join(unknown)} for {procedure.name}; it takes: "
            f"{', '.join(sorted(known))}"
        )
    filled = {a.name: values.get(a.name) or a.default for a in procedure.arguments}
    if procedure.name == "triage_failures":
        try:
            float(filled["within_hours"])
        except ValueError:
            raise ValueError(
                f"within_hours must be a number of hours, got {filled['within_hours']!r}"
            ) from None
    can = frozenset(n for n in procedure.writes if _offered(settings, n))
    return procedure.text(filled, can)


def register_prompts(server: MCPServer, settings: Settings) -> list[Procedure]:
    """Add the prompts `settings` offers; return them."""
    procedures = offered_procedures(settings)
    for procedure in procedures:

        def fn(_procedure: Procedure = procedure, **values: str) -> str:
            return render(_procedure, settings, values)

        server.add_prompt(
            Prompt(
                name=procedure.name,
                title=procedure.title,
                description=procedure.description,
                arguments=[
                    PromptArgument(name=a.name, description=a.description, required=a.required)
                    for a in procedure.arguments
                ],
                fn=fn,
            )
        )
    return procedures
