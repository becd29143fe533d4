"""The run records `celery-mcp beat` writes in the schedule store, each a compare-and-set.

A due run is claimed (the entry advances, the run is kept as claimed and not yet sent), then
recorded sent (counted in total_run_count), failed (the error kept, tried again) or missed
(past its deadline, with the reason). Every write after the claim applies only while the run
is still the entry's pending run with the attempt the writer loaded, so two beats never both
record, or both re-send, the same attempt.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from redbeat.schedulers import RedBeatSchedulerEntry
from redbeat.schedules import rrule

from celery_mcp.service.schedule_rules import (
    advance,
    next_due,
    run_deadline,
    run_task_id,
    skipped_runs,
)
from celery_mcp.stores.schedules import (
    Entry,
    MissedRun,
    PendingRun,
    ScheduleStore,
    Write,
    to_score,
)


@dataclass(frozen=True)
class RunBook:
    """The run records of one beat (`node`) in `store`."""

    store: ScheduleStore
    node: str

    def claim(
        self, entry: RedBeatSchedulerEntry, *, fire: bool, refused: str | None = None
    ) -> tuple[PendingRun | None, datetime | None] | None:
        """Advance the entry's meta iff nobody did since it was loaded and no run of it is
        pending, and record the due run as claimed, not yet sent (`refused`: passed over, with
        the reason kept). Runs coalesced into it (no beat could send them) are recorded missed.

        Returns (the claimed run, or None when refused or not firing; next due time), or None
        when it was not this beat's to claim.
        """
        now = datetime.now(UTC)
        sched = entry.schedule
        due, new_last = advance(sched, entry.last_run_at, now) if fire else (now, now)
        following = next_due(sched, new_last)
        run: PendingRun | None = None
        if fire and refused is None:
            expires = (entry.options or {}).get("expires")
            run = PendingRun(
                task_id=run_task_id(entry.name, due),
                due_at=due,
                deadline=run_deadline(
                    following, now, float(expires) if isinstance(expires, int | float) else None
                ),
                claimed_by=self.node,
            )
        skipped, first_skipped = skipped_runs(sched, due, now) if fire else (0, None)

        def change(stored: Entry | None) -> Write | None:
            if stored is None or not stored.enabled or stored.last_run_at != entry.last_run_at:
                return None
            if stored.run.pending is not None:
                return None  # settled first (maybe_due), then the next run is claimed
            stored.last_run_at = new_last
            if fire:
                if first_skipped is not None:
                    stored.run.miss(
                        MissedRun(
                            due_at=first_skipped,
                            runs=skipped,
                            recorded_at=now,
                            reason="due while no beat could send it (none leading, or the "
                            f"leader was busy); coalesced into the run due {due.isoformat()}",
                        )
                    )
                if run is None:
                    stored.run.refuse(str(refused), due)
                stored.run.pending = run
                if following is None and isinstance(sched, rrule):
                    stored.definition["enabled"] = False  # a one-off that ran: keep it, disabled
            return stored, to_score(following) if stored.enabled else -1

        if self.store.update(entry.name, change) is None:
            return None
        return run, following

    def _settle_write(
        self, name: str, run: PendingRun, apply: Callable[[Entry, PendingRun], None]
    ) -> Entry | None:
        """Apply `apply` to the stored entry iff `run` is still its pending run, as loaded."""

        def change(stored: Entry | None) -> Write | None:
            if stored is None:
                return None
            pending = stored.run.pending
            if pending is None or (pending.task_id, pending.attempts) != (
                run.task_id,
                run.attempts,
            ):
                return None
            apply(stored, pending)
            last = stored.last_run_at
            following = next_due(stored.schedule, last) if stored.enabled and last else None
            return stored, to_score(following) if stored.enabled else -1

        return self.store.update(name, change)

    def take_attempt(self, name: str, run: PendingRun) -> PendingRun | None:
        """Take the next publish attempt of a pending run (None: it is no longer pending)."""

        def take(stored: Entry, pending: PendingRun) -> None:
            pending.attempts += 1
            pending.claimed_by = self.node

        written = self._settle_write(name, run, take)
        return written.run.pending if written is not None else None

    def sent(self, name: str, run: PendingRun, delay_ms: float) -> None:
        """The run was published: count it, keep its id, delay and attempts."""

        def sent(stored: Entry, pending: PendingRun) -> None:
            stored.run.sent(pending, delay_ms)
            stored.total_run_count += 1

        self._settle_write(name, run, sent)

    def failed(self, name: str, run: PendingRun, error: str) -> None:
        """The attempt failed: keep why (the run stays pending, tried again next tick)."""

        def failed(stored: Entry, pending: PendingRun) -> None:
            pending.error = error

        self._settle_write(name, run, failed)

    def missed(self, name: str, run: PendingRun, reason: str) -> bool:
        """The run can no longer be sent: record it missed (False: someone else settled it)."""
        now = datetime.now(UTC)

        def missed(stored: Entry, pending: PendingRun) -> None:
            stored.run.miss(
                MissedRun(due_at=run.due_at, reason=reason, recorded_at=now, task_id=run.task_id)
            )

        return self._settle_write(name, run, missed) is not None
