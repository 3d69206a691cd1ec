"""schedd.timing: parsing, DST rules (SPEC §3.3), bounds, counting, formatting."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from schedd.timing import (
    Timer,
    TimingError,
    compile_timer,
    format_local,
    format_ms,
    is_fixed_time,
    load_zone,
    parse_cron,
    parse_duration_ms,
    parse_instant_ms,
    preview,
)

UTC_ZONE = ZoneInfo("UTC")


def ms(iso: str) -> int:
    """An explicit-offset ISO string as epoch ms (test helper)."""
    return parse_instant_ms(iso, UTC_ZONE)


def cron(expr: str, zone: str, **bounds: int) -> Timer:
    return compile_timer("cron", expr, zone, anchor_ms=0, **bounds)


# --- the transitions the DST table relies on, read from zoneinfo ------------------------


def _transitions(zone: str, year: int) -> list[tuple[str, str, str]]:
    """(UTC instant, wall time just before, wall time at) for each offset change in year."""
    tz = ZoneInfo(zone)
    out = []
    t = datetime(year, 1, 1, tzinfo=UTC)
    while t.year == year:
        nxt = t + timedelta(minutes=30)
        if nxt.astimezone(tz).utcoffset() != t.astimezone(tz).utcoffset():
            out.append(
                (
                    nxt.strftime("%m-%dT%H:%MZ"),
                    (nxt - timedelta(seconds=1)).astimezone(tz).isoformat(),
                    nxt.astimezone(tz).isoformat(),
                )
            )
        t = nxt
    return out


@pytest.mark.parametrize(
    ("zone", "expected"),
    [
        (
            "America/New_York",
            [
                ("03-08T07:00Z", "2026-03-08T01:59:59-05:00", "2026-03-08T03:00:00-04:00"),
                ("11-01T06:00Z", "2026-11-01T01:59:59-04:00", "2026-11-01T01:00:00-05:00"),
            ],
        ),
        (
            "Europe/Berlin",
            [
                ("03-29T01:00Z", "2026-03-29T01:59:59+01:00", "2026-03-29T03:00:00+02:00"),
                ("10-25T01:00Z", "2026-10-25T02:59:59+02:00", "2026-10-25T02:00:00+01:00"),
            ],
        ),
        (
            "Australia/Lord_Howe",
            [
                ("04-04T15:00Z", "2026-04-05T01:59:59+11:00", "2026-04-05T01:30:00+10:30"),
                ("10-03T15:30Z", "2026-10-04T01:59:59+10:30", "2026-10-04T02:30:00+11:00"),
            ],
        ),
        (
            "Australia/Sydney",
            [
                ("04-04T16:00Z", "2026-04-05T02:59:59+11:00", "2026-04-05T02:00:00+10:00"),
                ("10-03T16:00Z", "2026-10-04T01:59:59+10:00", "2026-10-04T03:00:00+11:00"),
            ],
        ),
    ],
)
def test_2026_transitions_are_what_the_table_assumes(
    zone: str, expected: list[tuple[str, str, str]]
) -> None:
    assert _transitions(zone, 2026) == expected


# --- the DST table: (zone, expression, start, next occurrences as UTC) --------------------

# fmt: off
DST_CASES = [
    # --- America/New_York spring forward 2026-03-08 02:00 EST -> 03:00 EDT (07:00Z)
    #     (start 2026-03-08T00:40-05:00)
    # fixed, in the gap: once at the jump, 03:00-04:00
    ("America/New_York", "30 2 * * *", "2026-03-08T05:40:00Z", [
        "2026-03-08T07:00:00.000Z", "2026-03-09T06:30:00.000Z", "2026-03-10T06:30:00.000Z",
    ]),
    # fixed, ordinary: 01:30 EST, then 01:30 EDT
    ("America/New_York", "30 1 * * *", "2026-03-08T05:40:00Z", [
        "2026-03-08T06:30:00.000Z", "2026-03-09T05:30:00.000Z", "2026-03-10T05:30:00.000Z",
    ]),
    # fixed, ordinary: 09:00 local every day
    ("America/New_York", "0 9 * * *", "2026-03-08T05:40:00Z", [
        "2026-03-08T13:00:00.000Z", "2026-03-09T13:00:00.000Z", "2026-03-10T13:00:00.000Z",
    ]),
    # wildcard: 01:00 01:30 EST, gap skipped, 03:00 EDT on
    ("America/New_York", "*/30 * * * *", "2026-03-08T05:40:00Z", [
        "2026-03-08T06:00:00.000Z", "2026-03-08T06:30:00.000Z", "2026-03-08T07:00:00.000Z",
        "2026-03-08T07:30:00.000Z", "2026-03-08T08:00:00.000Z", "2026-03-08T08:30:00.000Z",
    ]),
    # wildcard: 01:05 EST, 02:05 does not exist, 03:05 EDT
    ("America/New_York", "5 * * * *", "2026-03-08T05:40:00Z", [
        "2026-03-08T06:05:00.000Z", "2026-03-08T07:05:00.000Z", "2026-03-08T08:05:00.000Z",
        "2026-03-08T09:05:00.000Z", "2026-03-08T10:05:00.000Z", "2026-03-08T11:05:00.000Z",
    ]),
    # --- America/New_York fall back 2026-11-01 02:00 EDT -> 01:00 EST (06:00Z)
    #     (start 2026-11-01T00:40-04:00)
    # fixed, repeated: once, first 01:30 (EDT)
    ("America/New_York", "30 1 * * *", "2026-11-01T04:40:00Z", [
        "2026-11-01T05:30:00.000Z", "2026-11-02T06:30:00.000Z", "2026-11-03T06:30:00.000Z",
    ]),
    # fixed, ordinary: 02:30 EST
    ("America/New_York", "30 2 * * *", "2026-11-01T04:40:00Z", [
        "2026-11-01T07:30:00.000Z", "2026-11-02T07:30:00.000Z", "2026-11-03T07:30:00.000Z",
    ]),
    # fixed, ordinary
    ("America/New_York", "0 9 * * *", "2026-11-01T04:40:00Z", [
        "2026-11-01T14:00:00.000Z", "2026-11-02T14:00:00.000Z", "2026-11-03T14:00:00.000Z",
    ]),
    # wildcard: 01:00 01:30 EDT, then 01:00 01:30 EST again
    ("America/New_York", "*/30 * * * *", "2026-11-01T04:40:00Z", [
        "2026-11-01T05:00:00.000Z", "2026-11-01T05:30:00.000Z", "2026-11-01T06:00:00.000Z",
        "2026-11-01T06:30:00.000Z", "2026-11-01T07:00:00.000Z", "2026-11-01T07:30:00.000Z",
    ]),
    # wildcard: 01:05 EDT and 01:05 EST
    ("America/New_York", "5 * * * *", "2026-11-01T04:40:00Z", [
        "2026-11-01T05:05:00.000Z", "2026-11-01T06:05:00.000Z", "2026-11-01T07:05:00.000Z",
        "2026-11-01T08:05:00.000Z", "2026-11-01T09:05:00.000Z", "2026-11-01T10:05:00.000Z",
    ]),
    # --- Europe/Berlin spring forward 2026-03-29 02:00 CET -> 03:00 CEST (01:00Z)
    #     (start 2026-03-29T00:40+01:00)
    # fixed, in the gap: once at the jump, 03:00+02:00
    ("Europe/Berlin", "30 2 * * *", "2026-03-28T23:40:00Z", [
        "2026-03-29T01:00:00.000Z", "2026-03-30T00:30:00.000Z", "2026-03-31T00:30:00.000Z",
    ]),
    # fixed, ordinary
    ("Europe/Berlin", "30 1 * * *", "2026-03-28T23:40:00Z", [
        "2026-03-29T00:30:00.000Z", "2026-03-29T23:30:00.000Z", "2026-03-30T23:30:00.000Z",
    ]),
    # fixed, ordinary
    ("Europe/Berlin", "0 9 * * *", "2026-03-28T23:40:00Z", [
        "2026-03-29T07:00:00.000Z", "2026-03-30T07:00:00.000Z", "2026-03-31T07:00:00.000Z",
    ]),
    # wildcard: 01:00 01:30 CET, gap skipped, 03:00 CEST on
    ("Europe/Berlin", "*/30 * * * *", "2026-03-28T23:40:00Z", [
        "2026-03-29T00:00:00.000Z", "2026-03-29T00:30:00.000Z", "2026-03-29T01:00:00.000Z",
        "2026-03-29T01:30:00.000Z", "2026-03-29T02:00:00.000Z", "2026-03-29T02:30:00.000Z",
    ]),
    # wildcard: 01:05 CET, 02:05 does not exist, 03:05 CEST
    ("Europe/Berlin", "5 * * * *", "2026-03-28T23:40:00Z", [
        "2026-03-29T00:05:00.000Z", "2026-03-29T01:05:00.000Z", "2026-03-29T02:05:00.000Z",
        "2026-03-29T03:05:00.000Z", "2026-03-29T04:05:00.000Z", "2026-03-29T05:05:00.000Z",
    ]),
    # --- Europe/Berlin fall back 2026-10-25 03:00 CEST -> 02:00 CET (01:00Z)
    #     (start 2026-10-25T00:40+02:00)
    # fixed, repeated: once, first 02:30 (CEST)
    ("Europe/Berlin", "30 2 * * *", "2026-10-24T22:40:00Z", [
        "2026-10-25T00:30:00.000Z", "2026-10-26T01:30:00.000Z", "2026-10-27T01:30:00.000Z",
    ]),
    # fixed, ordinary
    ("Europe/Berlin", "30 1 * * *", "2026-10-24T22:40:00Z", [
        "2026-10-24T23:30:00.000Z", "2026-10-26T00:30:00.000Z", "2026-10-27T00:30:00.000Z",
    ]),
    # fixed, ordinary
    ("Europe/Berlin", "0 9 * * *", "2026-10-24T22:40:00Z", [
        "2026-10-25T08:00:00.000Z", "2026-10-26T08:00:00.000Z", "2026-10-27T08:00:00.000Z",
    ]),
    # wildcard: 02:00 02:30 CEST, then 02:00 02:30 CET again
    ("Europe/Berlin", "*/30 * * * *", "2026-10-24T22:40:00Z", [
        "2026-10-24T23:00:00.000Z", "2026-10-24T23:30:00.000Z", "2026-10-25T00:00:00.000Z",
        "2026-10-25T00:30:00.000Z", "2026-10-25T01:00:00.000Z", "2026-10-25T01:30:00.000Z",
    ]),
    # wildcard: 02:05 CEST and 02:05 CET
    ("Europe/Berlin", "5 * * * *", "2026-10-24T22:40:00Z", [
        "2026-10-24T23:05:00.000Z", "2026-10-25T00:05:00.000Z", "2026-10-25T01:05:00.000Z",
        "2026-10-25T02:05:00.000Z", "2026-10-25T03:05:00.000Z", "2026-10-25T04:05:00.000Z",
    ]),
    # --- Australia/Lord_Howe spring forward 2026-10-04 02:00 +10:30 -> 02:30 +11 (10-03 15:30Z)
    #     (start 2026-10-04T00:40+10:30)
    # fixed, in the 30-minute gap: once at the jump, 02:30+11
    ("Australia/Lord_Howe", "15 2 * * *", "2026-10-03T14:10:00Z", [
        "2026-10-03T15:30:00.000Z", "2026-10-04T15:15:00.000Z", "2026-10-05T15:15:00.000Z",
    ]),
    # fixed, first wall time after the gap: 02:30+11, once
    ("Australia/Lord_Howe", "30 2 * * *", "2026-10-03T14:10:00Z", [
        "2026-10-03T15:30:00.000Z", "2026-10-04T15:30:00.000Z", "2026-10-05T15:30:00.000Z",
    ]),
    # fixed, ordinary
    ("Australia/Lord_Howe", "0 9 * * *", "2026-10-03T14:10:00Z", [
        "2026-10-03T22:00:00.000Z", "2026-10-04T22:00:00.000Z", "2026-10-05T22:00:00.000Z",
    ]),
    # wildcard: 01:00 01:30 +10:30, 02:00 skipped, 02:30 +11 on
    ("Australia/Lord_Howe", "*/30 * * * *", "2026-10-03T14:10:00Z", [
        "2026-10-03T14:30:00.000Z", "2026-10-03T15:00:00.000Z", "2026-10-03T15:30:00.000Z",
        "2026-10-03T16:00:00.000Z", "2026-10-03T16:30:00.000Z", "2026-10-03T17:00:00.000Z",
    ]),
    # wildcard: 01:05 +10:30, 02:05 does not exist, 03:05 +11
    ("Australia/Lord_Howe", "5 * * * *", "2026-10-03T14:10:00Z", [
        "2026-10-03T14:35:00.000Z", "2026-10-03T16:05:00.000Z", "2026-10-03T17:05:00.000Z",
        "2026-10-03T18:05:00.000Z", "2026-10-03T19:05:00.000Z", "2026-10-03T20:05:00.000Z",
    ]),
    # --- Australia/Lord_Howe fall back 2026-04-05 02:00 +11 -> 01:30 +10:30 (04-04 15:00Z)
    #     (start 2026-04-05T00:40+11:00)
    # fixed, repeated (01:30-02:00 twice): once, first 01:45 (+11)
    ("Australia/Lord_Howe", "45 1 * * *", "2026-04-04T13:40:00Z", [
        "2026-04-04T14:45:00.000Z", "2026-04-05T15:15:00.000Z", "2026-04-06T15:15:00.000Z",
    ]),
    # fixed, ordinary: 01:15 is not repeated
    ("Australia/Lord_Howe", "15 1 * * *", "2026-04-04T13:40:00Z", [
        "2026-04-04T14:15:00.000Z", "2026-04-05T14:45:00.000Z", "2026-04-06T14:45:00.000Z",
    ]),
    # fixed, ordinary
    ("Australia/Lord_Howe", "0 9 * * *", "2026-04-04T13:40:00Z", [
        "2026-04-04T22:30:00.000Z", "2026-04-05T22:30:00.000Z", "2026-04-06T22:30:00.000Z",
    ]),
    # wildcard: 01:30 01:45 +11, then 01:30 01:45 +10:30 again
    ("Australia/Lord_Howe", "*/15 * * * *", "2026-04-04T13:40:00Z", [
        "2026-04-04T13:45:00.000Z", "2026-04-04T14:00:00.000Z", "2026-04-04T14:15:00.000Z",
        "2026-04-04T14:30:00.000Z", "2026-04-04T14:45:00.000Z", "2026-04-04T15:00:00.000Z",
    ]),
    # wildcard: 01:05 +11, then 02:05 +10:30 (90 real minutes later)
    ("Australia/Lord_Howe", "5 * * * *", "2026-04-04T13:40:00Z", [
        "2026-04-04T14:05:00.000Z", "2026-04-04T15:35:00.000Z", "2026-04-04T16:35:00.000Z",
        "2026-04-04T17:35:00.000Z", "2026-04-04T18:35:00.000Z", "2026-04-04T19:35:00.000Z",
    ]),
    # --- Australia/Sydney spring forward 2026-10-04 02:00 AEST -> 03:00 AEDT (10-03 16:00Z)
    #     (start 2026-10-04T00:40+10:00)
    # fixed, in the gap: once at the jump, 03:00+11
    ("Australia/Sydney", "30 2 * * *", "2026-10-03T14:40:00Z", [
        "2026-10-03T16:00:00.000Z", "2026-10-04T15:30:00.000Z", "2026-10-05T15:30:00.000Z",
    ]),
    # fixed, ordinary
    ("Australia/Sydney", "30 1 * * *", "2026-10-03T14:40:00Z", [
        "2026-10-03T15:30:00.000Z", "2026-10-04T14:30:00.000Z", "2026-10-05T14:30:00.000Z",
    ]),
    # fixed, ordinary
    ("Australia/Sydney", "0 9 * * *", "2026-10-03T14:40:00Z", [
        "2026-10-03T22:00:00.000Z", "2026-10-04T22:00:00.000Z", "2026-10-05T22:00:00.000Z",
    ]),
    # wildcard: 01:00 01:30 AEST, gap skipped, 03:00 AEDT on
    ("Australia/Sydney", "*/30 * * * *", "2026-10-03T14:40:00Z", [
        "2026-10-03T15:00:00.000Z", "2026-10-03T15:30:00.000Z", "2026-10-03T16:00:00.000Z",
        "2026-10-03T16:30:00.000Z", "2026-10-03T17:00:00.000Z", "2026-10-03T17:30:00.000Z",
    ]),
    # wildcard: 01:05 AEST, 02:05 does not exist, 03:05 AEDT
    ("Australia/Sydney", "5 * * * *", "2026-10-03T14:40:00Z", [
        "2026-10-03T15:05:00.000Z", "2026-10-03T16:05:00.000Z", "2026-10-03T17:05:00.000Z",
        "2026-10-03T18:05:00.000Z", "2026-10-03T19:05:00.000Z", "2026-10-03T20:05:00.000Z",
    ]),
    # --- Australia/Sydney fall back 2026-04-05 03:00 AEDT -> 02:00 AEST (04-04 16:00Z)
    #     (start 2026-04-05T00:40+11:00)
    # fixed, repeated: once, first 02:30 (AEDT)
    ("Australia/Sydney", "30 2 * * *", "2026-04-04T13:40:00Z", [
        "2026-04-04T15:30:00.000Z", "2026-04-05T16:30:00.000Z", "2026-04-06T16:30:00.000Z",
    ]),
    # fixed, ordinary
    ("Australia/Sydney", "30 1 * * *", "2026-04-04T13:40:00Z", [
        "2026-04-04T14:30:00.000Z", "2026-04-05T15:30:00.000Z", "2026-04-06T15:30:00.000Z",
    ]),
    # fixed, ordinary
    ("Australia/Sydney", "0 9 * * *", "2026-04-04T13:40:00Z", [
        "2026-04-04T23:00:00.000Z", "2026-04-05T23:00:00.000Z", "2026-04-06T23:00:00.000Z",
    ]),
    # wildcard: 02:00 02:30 AEDT, then 02:00 02:30 AEST again
    ("Australia/Sydney", "*/30 * * * *", "2026-04-04T13:40:00Z", [
        "2026-04-04T14:00:00.000Z", "2026-04-04T14:30:00.000Z", "2026-04-04T15:00:00.000Z",
        "2026-04-04T15:30:00.000Z", "2026-04-04T16:00:00.000Z", "2026-04-04T16:30:00.000Z",
    ]),
    # wildcard: 02:05 AEDT and 02:05 AEST
    ("Australia/Sydney", "5 * * * *", "2026-04-04T13:40:00Z", [
        "2026-04-04T14:05:00.000Z", "2026-04-04T15:05:00.000Z", "2026-04-04T16:05:00.000Z",
        "2026-04-04T17:05:00.000Z", "2026-04-04T18:05:00.000Z", "2026-04-04T19:05:00.000Z",
    ]),
]
# fmt: on


@pytest.mark.parametrize(("zone", "expr", "start", "expected"), DST_CASES)
def test_dst_table(zone: str, expr: str, start: str, expected: list[str]) -> None:
    got = preview("cron", expr, zone, after_ms=ms(start), count=len(expected))
    assert [format_ms(t) for t in got] == expected
    # next_after walks the same chain
    timer = cron(expr, zone)
    chain = [timer.next_after(ms(start))]
    while len(chain) < len(expected):
        prev = chain[-1]
        assert prev is not None
        chain.append(timer.next_after(prev))
    assert chain == got


@pytest.mark.parametrize(
    ("expr", "start", "expected"),
    [
        # America/New_York fall back 2026-11-01: start at 01:10 EST (06:10Z), the second pass of
        # 01:xx. cronsim alone answers 05:30Z (01:30 EDT), before the start; fixed-time
        # 01:30 already fired at its first occurrence, so the next one is the next day.
        ("30 1 * * *", "2026-11-01T06:10:00Z", "2026-11-02T06:30:00.000Z"),
        # same, with every minute of the hour (cronsim hands back 49 stale minutes first)
        ("0-59 1 * * *", "2026-11-01T06:10:00Z", "2026-11-02T06:00:00.000Z"),
        ("0,30 1 * * *", "2026-11-01T06:10:00Z", "2026-11-02T06:00:00.000Z"),
        # a wildcard minute follows real time: 01:20 EST is still ahead
        ("*/20 1 * * *", "2026-11-01T06:10:00Z", "2026-11-01T06:20:00.000Z"),
        # started in the first pass (01:10 EDT = 05:10Z): the first 01:30
        ("30 1 * * *", "2026-11-01T05:10:00Z", "2026-11-01T05:30:00.000Z"),
    ],
)
def test_started_inside_repeated_hour_is_strictly_after(
    expr: str, start: str, expected: str
) -> None:
    got = cron(expr, "America/New_York").next_after(ms(start))
    assert got is not None
    assert format_ms(got) == expected


def _brute_wildcard(zone: str, minutes: set[int], hours: set[int], lo: int, hi: int) -> list[int]:
    """Real UTC minutes in [lo, hi) whose wall time in zone matches: wildcard semantics."""
    tz = ZoneInfo(zone)
    out = []
    for t in range(lo - lo % 60_000, hi, 60_000):
        wall = datetime.fromtimestamp(t / 1000, tz)
        if t >= lo and wall.minute in minutes and wall.hour in hours:
            out.append(t)
    return out


# fmt: off
BRUTE_CASES = [
    # Europe/Berlin fall-back day 2026-10-25 has 25 hours: 02:00-03:00 twice
    ("Europe/Berlin", "*/15 * * * *", {0, 15, 30, 45}, set(range(24)),
     "2026-10-25T00:00:00+02:00", "2026-10-26T00:00:00+01:00", 100),
    # America/New_York spring-forward day 2026-03-08 has 23 hours: no 02:xx
    ("America/New_York", "5 * * * *", {5}, set(range(24)),
     "2026-03-08T00:00:00-05:00", "2026-03-09T00:00:00-04:00", 23),
    # Australia/Lord_Howe fall-back day 2026-04-05: 01:30-02:00 twice (+30 min)
    ("Australia/Lord_Howe", "*/10 1-2 * * *", {0, 10, 20, 30, 40, 50}, {1, 2},
     "2026-04-05T00:00:00+11:00", "2026-04-06T00:00:00+10:30", 15),
    # Australia/Lord_Howe spring-forward day 2026-10-04: 02:00-02:30 missing
    ("Australia/Lord_Howe", "*/10 1-2 * * *", {0, 10, 20, 30, 40, 50}, {1, 2},
     "2026-10-04T00:00:00+10:30", "2026-10-05T00:00:00+11:00", 9),
    ("UTC", "*/7 3-5 * * *", set(range(0, 60, 7)), {3, 4, 5},
     "2026-06-01T00:00:00Z", "2026-06-02T00:00:00Z", 27),
]
# fmt: on


@pytest.mark.parametrize(
    ("zone", "expr", "minutes", "hours", "day_start", "day_end", "count"), BRUTE_CASES
)
def test_cron_count_between_matches_brute_force_over_a_day(
    zone: str,
    expr: str,
    minutes: set[int],
    hours: set[int],
    day_start: str,
    day_end: str,
    count: int,
) -> None:
    lo, hi = ms(day_start), ms(day_end)
    brute = _brute_wildcard(zone, minutes, hours, lo, hi)
    assert len(brute) == count
    assert cron(expr, zone).count_between(lo, hi) == (count, brute[-1])
    assert preview("cron", expr, zone, after_ms=lo - 1, count=count) == brute


def test_cron_count_between_fixed_time_matches_next_after_chain() -> None:
    # America/New_York, 2026-10-31 .. 2026-11-03 spans the fall-back: 01:30 fires once a day
    timer = cron("0,30 1 * * *", "America/New_York")
    lo, hi = ms("2026-10-31T00:00:00Z"), ms("2026-11-04T00:00:00Z")
    chain = []
    t = timer.next_after(lo - 1)
    while t is not None and t < hi:
        chain.append(t)
        t = timer.next_after(t)
    assert len(chain) == 8
    assert timer.count_between(lo, hi) == (8, chain[-1])
    # first is inclusive, before is exclusive
    assert timer.count_between(chain[0], chain[-1]) == (7, chain[-2])
    assert timer.count_between(chain[0], chain[0]) == (0, None)


def test_cron_count_between_stops_at_cap() -> None:
    timer = cron("* * * * *", "UTC")
    lo = ms("2026-01-01T00:00:00Z")
    assert timer.count_between(lo, lo + 86_400_000, cap=10) == (10, lo + 9 * 60_000)
    assert timer.count_between(lo, lo + 86_400_000) == (1440, lo + 1439 * 60_000)


# --- cron parsing -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "normalised"),
    [
        ("0 9 * * 1-5", "0 9 * * 1-5"),
        ("  0   9\t* *  MON-FRI ", "0 9 * * MON-FRI"),
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("@monthly", "0 0 1 * *"),
        ("@weekly", "0 0 * * 0"),
        ("@DAILY", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        (" @Hourly ", "0 * * * *"),
        ("0 0 L * *", "0 0 L * *"),
        ("0 18 LW * *", "0 18 LW * *"),
        ("0 0 * * 5L", "0 0 * * 5L"),
        ("0 0 * * FRI#3", "0 0 * * FRI#3"),
        ("0 0 * * 5#3", "0 0 * * 5#3"),
        ("*/15 0-6/2 1,15 JAN-MAR *", "*/15 0-6/2 1,15 JAN-MAR *"),
        ("0 12 * jan,jul sun", "0 12 * jan,jul sun"),
        ("0 0 29 2 *", "0 0 29 2 *"),
        ("0 0 * * 7", "0 0 * * 7"),
    ],
)
def test_parse_cron_valid(expr: str, normalised: str) -> None:
    assert parse_cron(expr) == normalised


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("", "expected 5 cron fields"),
        ("   ", "expected 5 cron fields"),
        ("garbage", "expected 5 cron fields"),
        ("* * * *", "expected 5 cron fields"),
        ("* * * * * *", "sub-minute schedules use interval"),
        ("*/10 * * * * *", "sub-minute schedules use interval"),
        ("61 * * * *", "bad minute"),
        ("0 24 * * *", "bad hour"),
        ("0 0 0 * *", "bad day-of-month"),
        ("0 0 31 2 *", "bad day-of-month"),
        ("0 0 * 13 *", "bad month"),
        ("0 0 * * 8", "bad day-of-week"),
        ("0 0 * * 5#6", "bad day-of-week"),
        ("*/0 * * * *", "bad minute"),
        ("5-1 * * * *", "bad minute"),
        ("0 0 ? * *", "bad day-of-month"),
        ("0 0 15W * *", "bad day-of-month"),
        ("a b c d e", "bad minute"),
        ("@reboot", "unknown cron macro"),
        ("@every 5m", "unknown cron macro"),
    ],
)
def test_parse_cron_invalid(expr: str, message: str) -> None:
    with pytest.raises(TimingError, match=message):
        parse_cron(expr)


@pytest.mark.parametrize(
    ("expr", "fixed"),
    [
        ("0 9 * * *", True),
        ("30 2 * * *", True),
        ("0,30 1-3 * * *", True),
        ("0 */2 * * *", False),
        ("*/15 * * * *", False),
        ("5 * * * *", False),
        ("* 2 * * *", False),
    ],
)
def test_is_fixed_time(expr: str, fixed: bool) -> None:
    assert is_fixed_time(expr) is fixed


# --- durations ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", 90_000),
        ("15m", 900_000),
        ("1h30m", 5_400_000),
        ("1h 30m", 5_400_000),
        ("2d", 172_800_000),
        ("1w", 604_800_000),
        ("1d2h3m4s", 93_784_000),
        ("1.5s", 1500),
        ("1.5h", 5_400_000),
        ("1500ms", 1500),
        ("1s500ms", 1500),
        ("1s", 1000),
        ("90S", 90_000),
        ("1M30S", 90_000),
        ("366d", 31_622_400_000),
        ("PT15M", 900_000),
        ("pt15m", 900_000),
        ("P1D", 86_400_000),
        ("PT1.5S", 1500),
        ("PT0,5M", 30_000),
        ("P1DT2H", 93_600_000),
        ("P1W", 604_800_000),
        ("PT1H30M", 5_400_000),
    ],
)
def test_parse_duration_valid(text: str, expected: int) -> None:
    assert parse_duration_ms(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "a duration is required"),
        ("0s", "at least 1 second"),
        ("999ms", "at least 1 second"),
        ("0.5s", "at least 1 second"),
        ("PT0S", "at least 1 second"),
        ("-5m", "must be positive"),
        ("367d", "at most 366 days"),
        ("1.0005s", "finer than a millisecond"),
        ("P1M", "years and months"),
        ("P1Y", "years and months"),
        ("P1Y2M3DT4H", "years and months"),
        ("90", "not a duration"),
        ("abc", "not a duration"),
        ("1m1h", "not a duration"),
        ("5m5m", "not a duration"),
        ("1,5s", "not a duration"),
        ("P", "not a duration"),
        ("PT", "not a duration"),
        ("P1DT", "not a duration"),
        ("1 day", "not a duration"),
    ],
)
def test_parse_duration_invalid(text: str, message: str) -> None:
    with pytest.raises(TimingError, match=message):
        parse_duration_ms(text)


# --- instants -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "zone", "expected"),
    [
        ("2026-12-01T09:00:00Z", "Europe/Berlin", "2026-12-01T09:00:00.000Z"),
        ("2026-12-01t09:00:00z", "UTC", "2026-12-01T09:00:00.000Z"),
        ("2026-12-01T09:00:00+01:00", "America/New_York", "2026-12-01T08:00:00.000Z"),
        ("2026-12-01T09:00:00-0530", "UTC", "2026-12-01T14:30:00.000Z"),
        ("2026-12-01 09:00:00.5Z", "UTC", "2026-12-01T09:00:00.500Z"),
        ("2026-12-01T09:00:00.123456789+01:00", "UTC", "2026-12-01T08:00:00.123Z"),
        ("2026-12-01T09:00", "UTC", "2026-12-01T09:00:00.000Z"),
        # naive: wall time in the zone (Berlin in December is +01:00)
        ("2026-12-01T09:00:00", "Europe/Berlin", "2026-12-01T08:00:00.000Z"),
        ("2026-12-01", "Europe/Berlin", "2026-11-30T23:00:00.000Z"),
        ("  2026-12-01T09:00:00  ", "Australia/Lord_Howe", "2026-11-30T22:00:00.000Z"),
        # America/New_York spring forward 2026-03-08 02:00 -> 03:00 (07:00Z):
        # anything in the gap resolves to the jump itself
        ("2026-03-08T02:00", "America/New_York", "2026-03-08T07:00:00.000Z"),
        ("2026-03-08T02:30", "America/New_York", "2026-03-08T07:00:00.000Z"),
        ("2026-03-08T02:59:59.999", "America/New_York", "2026-03-08T07:00:00.000Z"),
        ("2026-03-08T01:59:59.999", "America/New_York", "2026-03-08T06:59:59.999Z"),
        ("2026-03-08T03:00", "America/New_York", "2026-03-08T07:00:00.000Z"),
        # America/New_York fall back 2026-11-01 02:00 EDT -> 01:00 EST: first occurrence
        ("2026-11-01T01:30", "America/New_York", "2026-11-01T05:30:00.000Z"),
        ("2026-11-01T01:30-05:00", "America/New_York", "2026-11-01T06:30:00.000Z"),
        # Australia/Lord_Howe spring forward 2026-10-04 02:00 +10:30 -> 02:30 +11 (15:30Z)
        ("2026-10-04T02:15", "Australia/Lord_Howe", "2026-10-03T15:30:00.000Z"),
        # Australia/Lord_Howe fall back 2026-04-05 02:00 +11 -> 01:30 +10:30: first, +11
        ("2026-04-05T01:45", "Australia/Lord_Howe", "2026-04-04T14:45:00.000Z"),
        # Europe/Berlin fall back 2026-10-25 03:00 CEST -> 02:00 CET: first, CEST
        ("2026-10-25T02:30", "Europe/Berlin", "2026-10-25T00:30:00.000Z"),
        # Australia/Sydney spring forward 2026-10-04 02:00 -> 03:00 AEDT (16:00Z)
        ("2026-10-04T02:30", "Australia/Sydney", "2026-10-03T16:00:00.000Z"),
    ],
)
def test_parse_instant_valid(text: str, zone: str, expected: str) -> None:
    assert format_ms(parse_instant_ms(text, load_zone(zone))) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "garbage",
        "tomorrow",
        "2026-13-01T09:00:00",
        "2026-02-30",
        "2026-12-01T24:00",
        "2026-12-01T09:60",
        "2026-12-01T09",
        "2026-12-01T09:00:00+25:00",
        "2026-12-01Z",
        "20261201T0900",
        "2026-W48-1",
        "1700000000",
        "2026-12-01T09:00:00 Europe/Berlin",
        "0000-01-01",
    ],
)
def test_parse_instant_invalid(text: str) -> None:
    with pytest.raises(TimingError):
        parse_instant_ms(text, load_zone("Europe/Berlin"))


# --- zones --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["UTC", "Etc/UTC", "Europe/Berlin", "America/Argentina/Buenos_Aires", "Etc/GMT+5"]
)
def test_load_zone_valid(name: str) -> None:
    assert load_zone(name).key == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "Mars/Olympus_Mons",
        "utc",
        "Europe",
        "../etc",
        "../../etc/passwd",
        "America/../UTC",
        "/etc/localtime",
        "Europe/Berlin ",
        "localtime",
        "posixrules",
        "A" * 51,
        "Europe/Ber\x00lin",
    ],
)
def test_load_zone_invalid(name: str) -> None:
    with pytest.raises(TimingError, match="unknown timezone"):
        load_zone(name)


def test_load_zone_message() -> None:
    with pytest.raises(TimingError) as info:
        load_zone("Mars/Olympus_Mons")
    assert str(info.value) == "unknown timezone 'Mars/Olympus_Mons'"


# --- interval -----------------------------------------------------------------------------

ANCHOR = ms("2026-11-22T09:00:00.123Z")


def test_interval_without_start_is_anchored_at_created_plus_one_step() -> None:
    timer = compile_timer("interval", "15m", "UTC", anchor_ms=ANCHOR)
    assert timer.next_after(ANCHOR - 10**9) == ANCHOR + 900_000  # k >= 1, never the anchor
    assert timer.next_after(ANCHOR) == ANCHOR + 900_000
    assert timer.next_after(ANCHOR + 900_000 - 1) == ANCHOR + 900_000
    assert timer.next_after(ANCHOR + 900_000) == ANCHOR + 1_800_000
    assert timer.next_after(ANCHOR + 10 * 900_000 + 1) == ANCHOR + 11 * 900_000


def test_interval_with_start_fires_at_start() -> None:
    start = ANCHOR + 3_600_000 + 7
    timer = compile_timer("interval", "PT15M", "UTC", anchor_ms=ANCHOR, start_ms=start)
    assert timer.next_after(0) == start  # k >= 0: start itself
    assert timer.next_after(start - 1) == start
    assert timer.next_after(start) == start + 900_000


def test_interval_ignores_wall_clock() -> None:
    # America/New_York fall back 2026-11-01: hourly by elapsed time, 01:00 EDT -> 01:00 EST
    start = ms("2026-11-01T05:00:00Z")
    got = preview("interval", "1h", "America/New_York", after_ms=start, count=3)
    assert [format_ms(t) for t in got] == [
        "2026-11-01T06:00:00.000Z",
        "2026-11-01T07:00:00.000Z",
        "2026-11-01T08:00:00.000Z",
    ]


@pytest.mark.parametrize("expr", ["1.5s", "7m13s", "1h", "P1DT1S"])
def test_interval_has_no_drift_over_10000_steps(expr: str) -> None:
    step = parse_duration_ms(expr)
    for start in (None, ANCHOR + 12_345):
        timer = compile_timer("interval", expr, "UTC", anchor_ms=ANCHOR, start_ms=start)
        base, first_k = (ANCHOR, 1) if start is None else (start, 0)
        t = timer.next_after(ANCHOR - 1)
        assert t == base + first_k * step
        for _ in range(10_000):
            nxt = timer.next_after(t)
            assert nxt is not None
            t = nxt
        assert t == base + (first_k + 10_000) * step


def test_interval_count_between_matches_brute_force() -> None:
    rng = random.Random(20261122)
    for _ in range(300):
        step = rng.choice([1000, 1500, 60_000, 86_400_000 + 1])
        anchor = rng.randrange(-(10**9), 10**9)
        start = rng.choice([None, anchor + rng.randrange(-5 * step, 5 * step)])
        end = rng.choice([None, anchor + rng.randrange(0, 40 * step)])
        kw = {} if end is None else {"end_ms": end}
        if start is not None:
            kw["start_ms"] = start
        timer = compile_timer("interval", f"{step}ms", "UTC", anchor_ms=anchor, **kw)
        first = anchor + rng.randrange(-10 * step, 30 * step)
        before = first + rng.randrange(-step, 30 * step)
        brute = []
        t = timer.next_after(first - 1)
        while t is not None and t < before:
            brute.append(t)
            t = timer.next_after(t)
        assert timer.count_between(first, before) == (len(brute), brute[-1] if brute else None)


def test_interval_count_between_is_arithmetic() -> None:
    timer = compile_timer("interval", "1s", "UTC", anchor_ms=0)
    year = 366 * 86_400_000
    assert timer.count_between(0, year + 1) == (366 * 86_400, year)  # no cap, no loop


# --- bounds -------------------------------------------------------------------------------


def test_cron_start_and_end_bounds_are_inclusive() -> None:
    start, end = ms("2026-11-22T09:00:00Z"), ms("2026-11-24T09:00:00Z")
    timer = cron("0 9 * * *", "UTC", start_ms=start, end_ms=end)
    assert timer.next_after(0) == start  # an occurrence at start_ms fires
    assert timer.next_after(start) == start + 86_400_000
    assert timer.next_after(end - 1) == end  # an occurrence at end_ms still fires
    assert timer.next_after(end) is None
    assert timer.count_between(0, end + 10**9) == (3, end)


def test_interval_end_bound() -> None:
    timer = compile_timer("interval", "1h", "UTC", anchor_ms=0, end_ms=3 * 3_600_000)
    assert timer.next_after(2 * 3_600_000) == 3 * 3_600_000
    assert timer.next_after(3 * 3_600_000) is None
    assert timer.count_between(0, 10**12) == (3, 3 * 3_600_000)
    early = compile_timer("interval", "1h", "UTC", anchor_ms=0, end_ms=3_600_000 - 1)
    assert early.next_after(0) is None
    assert early.count_between(0, 10**12) == (0, None)


# --- once ---------------------------------------------------------------------------------


def test_once_fires_exactly_once() -> None:
    timer = compile_timer("once", "2026-12-01T09:00:00", "Europe/Berlin", anchor_ms=0)
    at = ms("2026-12-01T08:00:00Z")
    assert timer.next_after(at - 1) == at
    assert timer.next_after(at) is None
    assert timer.next_after(0) == at
    assert timer.count_between(at, at + 1) == (1, at)
    assert timer.count_between(0, at) == (0, None)
    assert preview("once", "2026-12-01T09:00:00Z", "UTC", after_ms=0, count=5) == [at + 3_600_000]


def test_once_in_a_gap_fires_right_after_the_jump() -> None:
    # America/New_York spring forward 2026-03-08 02:00 EST -> 03:00 EDT (07:00Z)
    timer = compile_timer("once", "2026-03-08T02:30:00", "America/New_York", anchor_ms=0)
    assert timer.next_after(0) == ms("2026-03-08T07:00:00Z")


def test_once_outside_bounds_never_fires() -> None:
    at = ms("2026-12-01T09:00:00Z")
    for bounds in ({"start_ms": at + 1}, {"end_ms": at - 1}):
        timer = compile_timer("once", "2026-12-01T09:00:00Z", "UTC", anchor_ms=0, **bounds)
        assert timer.next_after(0) is None


# --- compile_timer and preview ------------------------------------------------------------


@pytest.mark.parametrize(
    ("schedule_type", "expression", "zone", "message"),
    [
        ("relative", "09:00", "UTC", "fire per record"),
        ("hourly", "x", "UTC", "unknown schedule type"),
        ("cron", None, "UTC", "an expression is required"),
        ("interval", "", "UTC", "an expression is required"),
        ("once", "  ", "UTC", "an expression is required"),
        ("cron", "0 9 * *", "UTC", "expected 5 cron fields"),
        ("interval", "500ms", "UTC", "at least 1 second"),
        ("once", "soon", "UTC", "not an ISO 8601 date-time"),
        ("cron", "0 9 * * *", "Nowhere/City", "unknown timezone"),
    ],
)
def test_compile_timer_errors(
    schedule_type: str, expression: str | None, zone: str, message: str
) -> None:
    with pytest.raises(TimingError, match=message):
        compile_timer(schedule_type, expression, zone, anchor_ms=0)


def test_timing_error_is_a_value_error() -> None:
    assert issubclass(TimingError, ValueError)


def test_compile_timer_is_cached() -> None:
    a = compile_timer("cron", "0 9 * * *", "Europe/Berlin", anchor_ms=0)
    b = compile_timer("cron", "0 9 * * *", "Europe/Berlin", anchor_ms=0)
    assert a is b


def test_preview_is_strictly_after_and_counts() -> None:
    nine = ms("2026-11-23T08:00:00Z")  # 09:00 in Berlin
    got = preview("cron", "0 9 * * *", "Europe/Berlin", after_ms=nine, count=3)
    assert [format_local(t, load_zone("Europe/Berlin")) for t in got] == [
        "2026-11-24T09:00:00+01:00",
        "2026-11-25T09:00:00+01:00",
        "2026-11-26T09:00:00+01:00",
    ]
    assert preview("cron", "0 9 * * *", "Europe/Berlin", after_ms=nine - 1, count=1) == [nine]
    # sub-second after: the occurrence at the whole second is already past
    assert preview("cron", "* * * * *", "UTC", after_ms=nine + 999, count=1) == [nine + 60_000]
    assert len(preview("cron", "*/5 * * * *", "UTC", after_ms=nine, count=100)) == 100
    assert preview("cron", "*/5 * * * *", "UTC", after_ms=nine, count=0) == []


def test_preview_interval_anchor_defaults_to_after() -> None:
    after = ms("2026-11-22T09:00:00.250Z")
    got = preview("interval", "90s", "UTC", after_ms=after, count=2)
    assert got == [after + 90_000, after + 180_000]
    anchored = preview("interval", "90s", "UTC", after_ms=after, count=1, anchor_ms=after - 1000)
    assert anchored == [after + 89_000]


# --- formatting ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, "1970-01-01T00:00:00.000Z"),
        (1_795_338_000_000, "2026-11-22T09:00:00.000Z"),
        (1_795_338_000_007, "2026-11-22T09:00:00.007Z"),
        (1_795_338_000_999, "2026-11-22T09:00:00.999Z"),
        (-1, "1969-12-31T23:59:59.999Z"),
    ],
)
def test_format_ms(value: int, expected: str) -> None:
    assert format_ms(value) == expected


@pytest.mark.parametrize(
    ("iso", "zone", "expected"),
    [
        ("2026-11-23T08:00:00Z", "Europe/Berlin", "2026-11-23T09:00:00+01:00"),
        ("2026-11-23T08:00:00.250Z", "Europe/Berlin", "2026-11-23T09:00:00.250+01:00"),
        ("2026-11-23T08:00:00Z", "UTC", "2026-11-23T08:00:00+00:00"),
        ("2026-11-23T08:00:00Z", "Australia/Lord_Howe", "2026-11-23T19:00:00+11:00"),
        ("2026-06-23T08:00:00Z", "Australia/Lord_Howe", "2026-06-23T18:30:00+10:30"),
        # America/New_York fall back 2026-11-01: the two 01:30s differ only by offset
        ("2026-11-01T05:30:00Z", "America/New_York", "2026-11-01T01:30:00-04:00"),
        ("2026-11-01T06:30:00Z", "America/New_York", "2026-11-01T01:30:00-05:00"),
    ],
)
def test_format_local(iso: str, zone: str, expected: str) -> None:
    assert format_local(ms(iso), load_zone(zone)) == expected


def test_timers_are_shared_unless_the_anchor_matters() -> None:
    """One-shots and crons made at different instants with one expression share a compiled
    timer (a burst of 10,000 one-shots is one cache entry, not 10,000 parses); an interval
    counts from its anchor, so its timers differ."""
    once = [compile_timer("once", "2030-01-01T00:00:00Z", "UTC", anchor_ms=a)
            for a in (1, 2)]
    assert once[0] is once[1]
    cron = [compile_timer("cron", "*/5 * * * *", "Europe/Berlin", anchor_ms=a)
            for a in (1, 2)]
    assert cron[0] is cron[1]
    iv = [compile_timer("interval", "90s", "UTC", anchor_ms=a) for a in (0, 1_000)]
    assert iv[0] is not iv[1]
    assert iv[0].next_after(0) == 90_000 and iv[1].next_after(0) == 91_000
