"""Pure schedule logic: parsing, validation, next due times (against croniter), run claims."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from celery import Celery
from celery.schedules import crontab as celery_crontab
from croniter import croniter
from hypothesis import given, settings
from hypothesis import strategies as st

from celery_mcp.errors import InvalidArgument
from celery_mcp.models.schedules import Crontab, Every, ScheduleFields
from celery_mcp.service.schedule_rules import (
    ONE_OFF_DEADLINE_S,
    advance,
    build_schedule,
    crontab,
    describe,
    every_seconds,
    next_due,
    parse_crontab_string,
    run_deadline,
    run_task_id,
    skipped_runs,
)
from celery_mcp.stores.schedules import (
    MISSED_KEPT,
    MissedRun,
    PendingRun,
    RunLog,
    bind,
    decode,
    encode,
    to_score,
)

NOW = datetime(2026, 11, 25, 19, 0, 7, 250_000, tzinfo=UTC)


def app_in(zone: str) -> Celery:
    app = Celery("unit", set_as_current=False)
    app.conf.timezone = zone
    app.conf.enable_utc = True
    return app


def test_crontab_string_maps_to_fields_in_cron_order() -> None:
    fields = parse_crontab_string("*/15  9-17 1 * 1-5")
    assert fields == Crontab(
        minute="*/15", hour="9-17", day_of_month="1", month_of_year="*", day_of_week="1-5"
    )
    assert fields.expression() == "*/15 9-17 1 * 1-5"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("* * * *", "4 fields"),
        ("0 0 * * * *", "6 fields"),
        ("@daily", "1 fields"),
        ("0 9 * * mon;fri", "'mon;fri'"),
    ],
)
def test_bad_crontab_strings_say_what_is_expected(text: str, message: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        parse_crontab_string(text)
    assert message in str(err.value) and "*/15 * * * 1-5" in str(err.value)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"minute": "60"}, "minute='60'"),
        ({"hour": "24"}, "hour='24'"),
        ({"day_of_week": "8"}, "day_of_week='8'"),
        ({"day_of_month": "0"}, "day_of_month='0'"),
        ({"month_of_year": "13"}, "month_of_year='13'"),
        ({"minute": "*/0"}, "minute='*/0'"),
        ({"day_of_month": "30", "month_of_year": "2"}, "never occurs"),
    ],
)
def test_crontab_helper_names_the_bad_field(fields: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        crontab(**fields)
    assert message in str(err.value)


def test_crontab_helper_returns_the_schedule_model() -> None:
    fields = crontab(minute="*/15", day_of_week="mon-fri")
    assert isinstance(fields, Crontab) and fields.expression() == "*/15 * * * mon-fri"
    assert ScheduleFields(crontab=fields).crontab == fields


@pytest.mark.parametrize(
    ("every", "seconds"),
    [(1, 1.0), (2.5, 2.5), (Every(minutes=5), 300.0), (Every(days=1, hours=1), 90_000.0)],
)
def test_every_accepts_seconds_or_a_timedelta_like_object(
    every: float | Every, seconds: float
) -> None:
    assert every_seconds(every) == seconds


@pytest.mark.parametrize("every", [0, -5, 0.5, Every(), Every(days=400)])
def test_every_out_of_range_is_refused(every: float | Every) -> None:
    with pytest.raises(InvalidArgument, match="expected 1 s to 366 days"):
        every_seconds(every)


def test_exactly_one_schedule_kind_is_required() -> None:
    app = app_in("UTC")
    with pytest.raises(InvalidArgument, match="got none"):
        build_schedule(ScheduleFields(), app, NOW)
    with pytest.raises(InvalidArgument, match="got every, crontab"):
        build_schedule(ScheduleFields(every=5, crontab="* * * * *"), app, NOW)


def test_one_off_must_be_in_the_future_and_rounds_up_to_a_second() -> None:
    app = app_in("UTC")
    with pytest.raises(InvalidArgument, match="in the past"):
        build_schedule(ScheduleFields(run_at=NOW - timedelta(seconds=1)), app, NOW)
    sched = build_schedule(ScheduleFields(run_at=NOW + timedelta(seconds=2)), app, NOW)
    assert next_due(sched, NOW) == datetime(2026, 11, 25, 19, 0, 10, tzinfo=UTC)
    assert next_due(sched, datetime(2026, 11, 25, 19, 0, 10, tzinfo=UTC)) is None
    assert describe(sched, app).kind == "once"


cron_minute = st.sampled_from(["*", "0", "*/15", "5,35", "10-20", "59", "0-59/7"])
cron_hour = st.sampled_from(["*", "0", "9", "9-17", "*/6", "23", "1,13"])
cron_dom = st.sampled_from(["*", "1", "15", "31", "1-7", "*/10"])
cron_month = st.sampled_from(["*", "1", "2", "6-8", "*/3", "12"])
cron_dow = st.sampled_from(["*", "0", "1-5", "6", "1,3,5"])
zones = st.sampled_from(["UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata"])
starts = st.datetimes(
    min_value=datetime(2025, 1, 1), max_value=datetime(2028, 12, 31), timezones=st.just(UTC)
)


@settings(max_examples=300, deadline=None)
@given(cron_minute, cron_hour, cron_dom, cron_month, cron_dow, zones, starts)
def test_crontab_next_run_matches_croniter(
    minute: str, hour: str, dom: str, month: str, dow: str, zone: str, start: datetime
) -> None:
    """Celery's crontab (what beat evaluates) agrees with croniter with day_or=False."""
    try:
        sched = build_schedule(
            ScheduleFields(crontab=f"{minute} {hour} {dom} {month} {dow}"), app_in(zone), start
        )
    except InvalidArgument:
        return  # e.g. day 31 in February only
    tz = ZoneInfo(zone)
    local = start.astimezone(tz)
    got = next_due(bind(sched, app_in(zone)), start)
    expected = croniter(f"{minute} {hour} {dom} {month} {dow}", local, day_or=False).get_next(
        datetime
    )
    if near_offset_change(start, tz) or near_offset_change(expected, tz):
        return  # a skipped or repeated hour: see the DST tests below
    assert got == expected


def near_offset_change(moment: datetime, tz: ZoneInfo) -> bool:
    offsets = {(moment + timedelta(hours=h)).astimezone(tz).utcoffset() for h in (-2, 0, 2)}
    return len(offsets) > 1


def test_repeated_dst_hour_never_yields_a_time_before_the_last_run() -> None:
    """Celery's crontab loses `fold` in the repeated hour; next_due stays after last_run_at."""
    app = app_in("Europe/Paris")
    sched = bind(build_schedule(ScheduleFields(crontab="*/15 * * * *"), app, NOW), app)
    start = datetime(2026, 10, 24, 23, 0, tzinfo=UTC)
    last = start
    fired = []
    while last < start + timedelta(hours=4):
        due = next_due(sched, last)
        assert due is not None and due > last, (last, due)
        fired.append(due)
        last = due
    assert len(fired) == len(set(fired))
    assert 12 <= len(fired) <= 16  # 4 UTC hours of */15, the repeated wall-clock hour at most once
    inside = datetime(2026, 10, 25, 1, 7, tzinfo=UTC)  # 02:07 CET, the second 02:07 that night
    after = next_due(sched, inside)
    assert after is not None and after > inside


def test_skipped_dst_hour_runs_once_after_the_gap() -> None:
    app = app_in("Europe/Paris")
    sched = bind(build_schedule(ScheduleFields(crontab="30 2 * * *"), app, NOW), app)
    due = next_due(sched, datetime(2026, 3, 28, 12, 0, tzinfo=UTC))
    assert due == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)  # 03:30 CEST: 02:30 does not exist
    assert next_due(sched, due) == datetime(2026, 3, 30, 0, 30, tzinfo=UTC)  # 02:30 CEST


def test_interval_runs_stay_on_their_grid() -> None:
    sched = build_schedule(ScheduleFields(every=10), app_in("UTC"), NOW)
    last = NOW
    due, new_last = advance(sched, last, NOW + timedelta(seconds=10.03))
    assert due == NOW + timedelta(seconds=10) and new_last == due


def test_missed_runs_are_coalesced_into_one() -> None:
    sched = build_schedule(ScheduleFields(every=10), app_in("UTC"), NOW)
    late = NOW + timedelta(seconds=47)
    due, new_last = advance(sched, NOW, late)
    assert due == NOW + timedelta(seconds=10) and new_last == late
    assert next_due(sched, new_last) == late + timedelta(seconds=10)


def test_coalesced_runs_are_counted_as_skipped() -> None:
    every = build_schedule(ScheduleFields(every=10), app_in("UTC"), NOW)
    due, _ = advance(every, NOW, NOW + timedelta(seconds=47))
    assert skipped_runs(every, due, NOW + timedelta(seconds=47)) == (3, due + timedelta(seconds=10))
    assert skipped_runs(every, due, due + timedelta(seconds=9.9)) == (0, None)
    cron = bind(
        build_schedule(ScheduleFields(crontab="*/15 * * * *"), app_in("UTC"), NOW), app_in("UTC")
    )
    first = datetime(2026, 11, 25, 19, 15, tzinfo=UTC)
    assert skipped_runs(cron, first, first + timedelta(minutes=50)) == (
        3,
        first + timedelta(minutes=15),
    )
    assert skipped_runs(cron, first, first + timedelta(days=30), limit=5)[0] == 5


def test_a_claimed_run_may_be_sent_until_the_next_run_or_its_expiry() -> None:
    claimed, following = NOW, NOW + timedelta(seconds=60)
    assert run_deadline(following, claimed, None) == following
    assert run_deadline(following, claimed, 5.0) == claimed + timedelta(seconds=5)
    assert run_deadline(None, claimed, None) == claimed + timedelta(seconds=ONE_OFF_DEADLINE_S)


def test_run_log_round_trips_and_reads_the_earlier_format() -> None:
    run = PendingRun("e:1", NOW, NOW + timedelta(seconds=1), "host:1", attempts=2, error="boom")
    log = RunLog(pending=run)
    log.miss(MissedRun(NOW, "gone", NOW, runs=3))
    assert RunLog.from_json(json.loads(json.dumps(log.to_json()))) == log
    log.sent(run, 12.5)
    assert (log.task_id, log.attempts, log.pending, log.missed_count) == ("e:1", 2, None, 3)
    assert RunLog.from_json(log.to_json()) == log
    old = RunLog.from_json({"task_id": "e:0", "due_at": NOW.isoformat(), "delay_ms": 3.0})
    assert (old.task_id, old.due_at, old.delay_ms, old.attempts) == ("e:0", NOW, 3.0, 1)
    refused = RunLog.from_json({"refused": "not allowed", "due_at": NOW.isoformat()})
    assert refused.refused == "not allowed" and refused.task_id is None


def test_missed_runs_keep_the_newest_and_count_them_all() -> None:
    log = RunLog()
    for i in range(MISSED_KEPT + 5):
        log.miss(MissedRun(NOW + timedelta(seconds=i), "late", NOW, runs=2))
    assert len(log.missed) == MISSED_KEPT and log.missed_count == 2 * (MISSED_KEPT + 5)
    assert log.missed[-1].due_at == NOW + timedelta(seconds=MISSED_KEPT + 4)


def test_crontab_run_advances_to_its_due_minute() -> None:
    sched = bind(
        build_schedule(ScheduleFields(crontab="*/15 * * * *"), app_in("UTC"), NOW), app_in("UTC")
    )
    now = datetime(2026, 11, 25, 19, 15, 0, 20_000, tzinfo=UTC)
    due, new_last = advance(sched, NOW, now)
    assert due == datetime(2026, 11, 25, 19, 15, tzinfo=UTC) == new_last
    assert next_due(sched, new_last) == datetime(2026, 11, 25, 19, 30, tzinfo=UTC)


def test_run_task_id_is_deterministic_and_a_valid_task_id() -> None:
    task_id = run_task_id("nightly-report", datetime(2026, 11, 25, 9, 0, 0, 123_456, tzinfo=UTC))
    assert task_id == "nightly-report:20261125T090000.123Z"
    assert re.fullmatch(r"[A-Za-z0-9_.:\-]+", task_id)


def test_scores_are_whole_epoch_seconds_like_redbeat() -> None:
    assert to_score(datetime(1970, 1, 1, 0, 0, 5, 900_000, tzinfo=UTC)) == 5
    assert to_score(None) == -1


def test_definitions_round_trip_through_redbeat_json() -> None:
    app = app_in("Europe/Paris")
    cron = build_schedule(ScheduleFields(crontab="30 9 * * mon-fri"), app, NOW)
    back = decode(encode({"schedule": cron}))["schedule"]
    assert isinstance(back, celery_crontab)
    assert describe(bind(back, app), app).crontab == "30 9 * * mon-fri"
    once = build_schedule(ScheduleFields(run_at=NOW + timedelta(hours=1)), app, NOW)
    again = bind(decode(encode({"schedule": once}))["schedule"], app)
    assert next_due(again, NOW) == datetime(2026, 11, 25, 20, 0, 8, tzinfo=UTC)
    meta = decode(encode({"last_run_at": NOW, "total_run_count": 3}))
    assert meta["last_run_at"] == NOW
