"""Every name this project writes or reads beside Celery's own: a compatibility contract.

Workers, beats, monitors and servers of this project (and of other versions of it) find each
other's data by these names: key prefixes in Redis/Valkey, message headers, remote-control
commands. Change one and they stop finding each other, so they live here, one comment each.
"""

from __future__ import annotations

# -- keys in Redis/Valkey ---------------------------------------------------------------------

#: Task history (stores.history): records, indexes, worker states, recorder lock.
HISTORY_PREFIX = "celery-mcp:history:"
#: A workflow's record (stores.workflows), in the result backend, with the backend's expiry.
WORKFLOW_RECORD_PREFIX = "celery-mcp-workflow-"
#: Hash fields of a RedBeat entry that RedBeat never reads (stores.schedules).
SCHEDULE_EXTRA_FIELD = "celery_mcp"  # created/updated times
SCHEDULE_RUN_FIELD = "celery_mcp_run"  # the last run beat sent: task id, due time, delay
#: Suffix of the hash of beat heartbeats, after the RedBeat key prefix: node -> JSON.
BEATS_SUFFIX = ":celery-mcp:beats"
#: Task id whose result the health check reads on a backend it cannot PING.
HEALTH_PROBE_ID = "celery-mcp-health-probe"
#: rpc:// results drained from the reply queue, and chords over rpc:// (stores.replies).
RPC_RESULT_PREFIX = "celery-mcp:rpc:"
RPC_CHORD_PREFIX = "celery-mcp:rpc-chord:"  # group id -> header ids and callback
RPC_CHORD_OF_PREFIX = "celery-mcp:rpc-chord-of:"  # header task id -> group id
RPC_CHORD_DONE_PREFIX = "celery-mcp:rpc-chord-done:"  # group id -> set of finished header ids
RPC_CHORD_FIRED_PREFIX = "celery-mcp:rpc-chord-fired:"  # group id -> set once, by who sends

#: Counter of the demo task `demo.flaky`, per caller-chosen key.
DEMO_FLAKY_PREFIX = "celery-mcp:demo:flaky:"

# -- queues --------------------------------------------------------------------------------

#: rpc:// reply queue every process of this project sends results to (client_backend).
RPC_REPLY_QUEUE = "celery-mcp.replies"

# -- message headers --------------------------------------------------------------------------

#: Caller-chosen retries (send_task retries/retry_delay_s/retry_delay_max_s), honoured by
#: `celery-mcp worker` (runtime.worker.retry); other workers ignore them.
RETRIES_HEADER = "x_mcp_retries"
RETRY_DELAY_HEADER = "x_mcp_retry_delay_s"
RETRY_DELAY_MAX_HEADER = "x_mcp_retry_delay_max_s"

# -- remote-control commands `celery-mcp worker` adds -----------------------------------------

#: Inspect command: the worker's task signatures (`{"version": SPECS_VERSION, "tasks": ...}`).
SPECS_COMMAND = "mcp_task_specs"
SPECS_VERSION = 1
#: Control command: set a task's time limits and apply them to the next task started.
TIME_LIMIT_COMMAND = "mcp_time_limit"
