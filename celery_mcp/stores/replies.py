"""rpc:// results and chords, kept in the state store (`service.rpc_results` fills it).

- A result: `<prefix>RPC_RESULT_PREFIX<task id>` -> the JSON meta the worker sent (the body of
  its reply message: status, result, traceback...), expiring after `result_expires`.
- A chord (rpc:// has none of its own): `<prefix>RPC_CHORD_PREFIX<group id>` -> JSON
  `{"header": [ids], "callback": <signature dict>}`; `...CHORD_OF_PREFIX<header id>` -> group id
  for each header task; `...CHORD_DONE_PREFIX<group id>` the set of header ids whose result
  arrived; `...CHORD_FIRED_PREFIX<group id>` set (NX) by the one process that sends the callback.
  Marks are sets and the guard is SET NX, so a reply delivered twice (a drain that died before
  its ack) is counted once and the callback is sent once.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from celery_mcp.models.common import READY_STATES
from celery_mcp.stores.keys import (
    RPC_CHORD_DONE_PREFIX,
    RPC_CHORD_FIRED_PREFIX,
    RPC_CHORD_OF_PREFIX,
    RPC_CHORD_PREFIX,
    RPC_RESULT_PREFIX,
)

PENDING: dict[str, Any] = {"status": "PENDING", "result": None}
_READY_LIST = "|" + "|".join(sorted(READY_STATES)) + "|"
_PUT_SCRIPT = """
local kept = redis.call('GET', KEYS[1])
if kept and ARGV[3] == '0' then
  local ok, meta = pcall(cjson.decode, kept)
  if ok and type(meta) == 'table' and meta['status'] and
     string.find(ARGV[4], '|' .. tostring(meta['status']) .. '|', 1, true) then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""


@dataclass(frozen=True)
class PendingChord:
    """A chord whose callback is sent once every header task has a result."""

    group_id: str
    header: list[str]
    callback: dict[str, Any]


@dataclass(frozen=True)
class ReplyStore:
    """The state store's rpc:// records under `prefix`, kept `ttl_s` seconds."""

    client: Any  # a decoding redis.Redis
    prefix: str
    ttl_s: int

    def _key(self, kind: str, ident: str) -> str:
        return self.prefix + kind + ident

    # -- results -----------------------------------------------------------------------------

    def put(self, task_id: str, meta: dict[str, Any]) -> None:
        """Keep `meta`, unless a ready one is kept already and this one is not: processes
        drain the queue side by side, so a task's STARTED may be stored after its SUCCESS."""
        ready = "1" if meta.get("status") in READY_STATES else "0"
        self.client.eval(
            _PUT_SCRIPT, 1, self._key(RPC_RESULT_PREFIX, task_id), json.dumps(meta), self.ttl_s,
            ready, _READY_LIST,
        )  # fmt: skip

    def get(self, task_id: str) -> dict[str, Any]:
        """The task's meta, PENDING when there is none (yet)."""
        raw = self.client.get(self._key(RPC_RESULT_PREFIX, task_id))
        return dict(json.loads(raw)) if raw else dict(PENDING)

    def get_many(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """id -> meta of the ids that have a result, one round trip."""
        if not ids:
            return {}
        raws = self.client.mget([self._key(RPC_RESULT_PREFIX, i) for i in ids])
        return {i: dict(json.loads(r)) for i, r in zip(ids, raws, strict=True) if r}

    # -- chords ------------------------------------------------------------------------------

    def add_chord(self, chord: PendingChord) -> None:
        """Keep the chord before its header is published (its results may come at once)."""
        body = json.dumps({"header": chord.header, "callback": chord.callback})
        with self.client.pipeline(transaction=True) as pipe:
            pipe.set(self._key(RPC_CHORD_PREFIX, chord.group_id), body, ex=self.ttl_s)
            for task_id in chord.header:
                pipe.set(self._key(RPC_CHORD_OF_PREFIX, task_id), chord.group_id, ex=self.ttl_s)
            pipe.execute()

    def complete_chord(self, task_id: str) -> PendingChord | None:
        """Mark the result of header task `task_id` arrived; the chord when it was the last
        one and this caller won the right to send the callback, else None."""
        group_id = self.client.get(self._key(RPC_CHORD_OF_PREFIX, task_id))
        if not group_id:
            return None
        raw = self.client.get(self._key(RPC_CHORD_PREFIX, group_id))
        if not raw:
            return None  # expired
        body = json.loads(raw)
        done_key = self._key(RPC_CHORD_DONE_PREFIX, group_id)
        with self.client.pipeline(transaction=True) as pipe:
            pipe.sadd(done_key, task_id)
            pipe.expire(done_key, self.ttl_s)
            pipe.scard(done_key)
            done = pipe.execute()[-1]
        if done < len(body["header"]):
            return None
        fired = self.client.set(
            self._key(RPC_CHORD_FIRED_PREFIX, group_id), "1", nx=True, ex=self.ttl_s
        )
        return PendingChord(group_id, body["header"], body["callback"]) if fired else None

    def unfire(self, group_id: str) -> None:
        """Let the callback be sent again (its publish failed)."""
        self.client.delete(self._key(RPC_CHORD_FIRED_PREFIX, group_id))
