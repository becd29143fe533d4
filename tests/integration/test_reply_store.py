"""The rpc:// reply store on a real Valkey: out-of-order replies, twice-delivered replies and
chords completed by processes draining side by side."""

from __future__ import annotations

import uuid

import redis

from celery_mcp.runtime.embedded import EmbeddedServer
from celery_mcp.stores.replies import PendingChord, ReplyStore

DB = 34


def store(embedded: EmbeddedServer) -> ReplyStore:
    client = redis.Redis.from_url(embedded.url_for_db(DB), decode_responses=True)
    return ReplyStore(client, f"t{uuid.uuid4().hex[:6]}:", 60)


def test_a_late_started_never_hides_the_result(embedded: EmbeddedServer) -> None:
    replies = store(embedded)
    replies.put("t1", {"status": "SUCCESS", "result": 5})
    replies.put("t1", {"status": "STARTED", "result": None})  # drained later by another process
    assert replies.get("t1") == {"status": "SUCCESS", "result": 5}
    replies.put("t2", {"status": "STARTED"})
    replies.put("t2", {"status": "PROGRESS", "result": {"done": 1}})
    assert replies.get("t2")["status"] == "PROGRESS"
    assert replies.get("unknown") == {"status": "PENDING", "result": None}
    assert replies.get_many(["t1", "unknown"]).keys() == {"t1"}


def test_a_chord_fires_once_whoever_stores_its_last_result(embedded: EmbeddedServer) -> None:
    replies = store(embedded)
    other = ReplyStore(replies.client, replies.prefix, 60)  # a second process, same store
    callback = {"task": "user.total", "options": {"task_id": "cb"}}
    replies.add_chord(PendingChord("g1", ["a", "b", "c"], callback))
    assert replies.complete_chord("a") is None
    assert other.complete_chord("a") is None  # delivered twice: counted once
    assert other.complete_chord("b") is None
    fired = replies.complete_chord("c")
    assert fired == PendingChord("g1", ["a", "b", "c"], callback)
    assert other.complete_chord("c") is None  # the callback is sent once
    replies.unfire("g1")  # its publish failed: the next delivery sends it
    assert other.complete_chord("c") is not None
    assert replies.complete_chord("not-in-a-chord") is None
