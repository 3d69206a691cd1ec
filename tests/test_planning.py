"""planning.py, pure: field values, filters and the occurrence of one record (tables)."""

from __future__ import annotations

from typing import Any

import pytest

from schedd import planning
from schedd.errors import InvalidField
from schedd.timing import format_ms, load_zone, parse_instant_ms

MIN = 60_000
FIELDS = {"renewal": "date", "signed": "datetime", "plan": "string", "seats": "number",
          "active": "boolean"}


def ms(text: str) -> int:
    return parse_instant_ms(text, load_zone("UTC"))


@pytest.mark.parametrize(("ftype", "value", "ok"), [
    ("date", "2027-02-28", True), ("date", "2027-02-29", False), ("date", "2027-2-1", False),
    ("date", "2027-01-01T00:00:00Z", False), ("date", 20270101, False), ("date", None, True),
    ("datetime", "2027-01-01T09:00:00Z", True), ("datetime", "2027-01-01T09:00:00.123+05:30", True),
    ("datetime", "2027-01-01t09:00:00z", True), ("datetime", "2027-01-01T09:00:00", False),
    ("datetime", "2027-01-01", False), ("datetime", "2027-01-01T25:00:00Z", False),
    ("string", "x", True), ("string", 1, False),
    ("number", 1, True), ("number", 1.5, True), ("number", True, False), ("number", "1", False),
    ("boolean", False, True), ("boolean", 0, False),
])
def test_value_types(ftype: str, value: Any, ok: bool) -> None:
    assert (planning.value_error(ftype, value) is None) is ok


@pytest.mark.parametrize(("zone", "value", "ftype", "offset", "hhmm", "expected"), [
    ("UTC", "2027-01-10", "date", 0, "09:00", "2027-01-10T09:00:00.000Z"),
    ("UTC", "2027-01-10", "date", -10, "00:00", "2026-12-31T00:00:00.000Z"),
    ("UTC", "2027-12-25", "date", 7, "23:59", "2028-01-01T23:59:00.000Z"),
    ("UTC", "2028-02-28", "date", 1, "12:00", "2028-02-29T12:00:00.000Z"),  # leap day
    # Europe/Berlin springs forward 2027-03-28 02:00 -> 03:00: 02:30 fires at 03:00 CEST
    ("Europe/Berlin", "2027-03-28", "date", 0, "02:30", "2027-03-28T01:00:00.000Z"),
    # ... and falls back 2027-10-31 03:00 -> 02:00: 02:30 fires at its first (CEST) pass
    ("Europe/Berlin", "2027-10-31", "date", 0, "02:30", "2027-10-31T00:30:00.000Z"),
    ("Europe/Berlin", "2027-11-01", "date", 0, "02:30", "2027-11-01T01:30:00.000Z"),
    # a datetime's date is its date in the schedule's zone: 23:30Z is the next day in Berlin
    ("Europe/Berlin", "2027-06-01T23:30:00Z", "datetime", 0, "08:00",
     "2027-06-02T06:00:00.000Z"),
    # 13:00-05:00 is 18:00Z, June 2 06:00 in Auckland (NZST, +12): a day before, 08:00
    ("Pacific/Auckland", "2027-06-01T13:00:00-05:00", "datetime", -1, "08:00",
     "2027-05-31T20:00:00.000Z"),
])
def test_occurrence_instants(zone: str, value: str, ftype: str, offset: int, hhmm: str,
                             expected: str) -> None:
    h, m = planning.parse_time_of_day(hhmm)
    got = planning.occurrence_ms(value, ftype, offset, h, m, zone)
    assert got is not None and format_ms(got) == expected


def _plan(**kw: Any) -> planning.RelativePlan:
    base: dict[str, Any] = {"schedule_id": "s", "fields": FIELDS, "field": "renewal",
                            "offset_days": 0, "expression": "09:00", "tz_name": "UTC",
                            "start_ms": None, "end_ms": None, "catchup_window_minutes": 10,
                            "flt": None}
    base.update(kw)
    return planning.RelativePlan.of(**base)


def test_plan_window_rules() -> None:
    p = _plan()
    now = ms("2027-01-10T09:05:00Z")
    assert p.plan({"renewal": "2027-01-10"}, now, None) == ms("2027-01-10T09:00:00Z")
    assert p.plan({"renewal": "2027-01-09"}, now, None) is None  # past the window
    assert p.plan({"renewal": "2027-01-10"}, now, ms("2027-01-10T09:00:00Z")) is None  # fired
    assert p.plan({"renewal": "2027-01-11"}, now, ms("2027-01-10T09:00:00Z")) == ms(
        "2027-01-11T09:00:00Z")
    assert p.plan({"renewal": None}, now, None) is None
    assert p.plan({}, now, None) is None
    assert p.plan({"renewal": "garbage"}, now, None) is None  # a value from before a retype
    bounded = _plan(start_ms=ms("2027-01-12T00:00:00Z"), end_ms=ms("2027-01-13T09:00:00Z"))
    assert bounded.plan({"renewal": "2027-01-11"}, now, None) is None
    assert bounded.plan({"renewal": "2027-01-13"}, now, None) == ms("2027-01-13T09:00:00Z")
    assert bounded.plan({"renewal": "2027-01-14"}, now, None) is None
    zero = _plan(catchup_window_minutes=0)  # never less than the 1 s on-time grace
    assert zero.plan({"renewal": "2027-01-10"}, ms("2027-01-10T09:00:00.500Z"), None) == ms(
        "2027-01-10T09:00:00Z")


@pytest.mark.parametrize(("flt", "data", "match"), [
    ({"plan": "pro"}, {"plan": "pro"}, True),
    ({"plan": "pro"}, {"plan": "free"}, False),
    ({"plan": "pro"}, {}, False),
    ({"plan": None}, {}, True),
    ({"plan": {"ne": "pro"}}, {}, True),
    ({"plan": {"in": ["a", "b"]}}, {"plan": "b"}, True),
    ({"plan": {"exists": True}}, {"plan": None}, False),
    ({"plan": {"exists": False}}, {"plan": None}, True),
    ({"seats": {"gte": 5, "lt": 10}}, {"seats": 9.5}, True),
    ({"seats": {"gte": 5, "lt": 10}}, {"seats": 10}, False),
    ({"seats": {"gt": 1}}, {}, False),
    ({"seats": {"gt": 1}}, {"seats": "7"}, False),  # a value of another type never orders
    ({"renewal": {"gte": "2027-01-01", "lt": "2028-01-01"}}, {"renewal": "2027-06-30"}, True),
    ({"renewal": {"gte": "2027-01-01", "lt": "2028-01-01"}}, {"renewal": "2028-01-01"}, False),
    # datetimes compare as instants, whatever their offsets
    ({"signed": {"lt": "2027-01-01T10:00:00+01:00"}}, {"signed": "2027-01-01T08:59:59Z"}, True),
    ({"signed": {"lt": "2027-01-01T10:00:00+01:00"}}, {"signed": "2027-01-01T09:00:00Z"}, False),
    ({"signed": "2027-01-01T10:00:00+01:00"}, {"signed": "2027-01-01T09:00:00Z"}, True),
    ({"active": True, "plan": "pro"}, {"active": True, "plan": "pro"}, True),
    ({"active": True, "plan": "pro"}, {"active": False, "plan": "pro"}, False),
])
def test_filters(flt: dict[str, Any], data: dict[str, Any], match: bool) -> None:
    planning.check_filter(FIELDS, flt, ("body", "relative_filter"))
    assert planning.compile_filter(FIELDS, flt)(data) is match


@pytest.mark.parametrize(("flt", "loc"), [
    ({"nope": 1}, ["nope"]),
    ({"plan": {"regex": "x"}}, ["plan", "regex"]),
    ({"plan": {}}, ["plan"]),
    ({"plan": ["a"]}, ["plan"]),
    ({"seats": "1"}, ["seats"]),
    ({"seats": {"in": [1, "2"]}}, ["seats", "in", 1]),
    ({"active": {"gte": False}}, ["active", "gte"]),
    ({"renewal": {"lt": None}}, ["renewal", "lt"]),
    ({"signed": {"gt": "2027-01-01"}}, ["signed", "gt"]),
    ({"plan": {"exists": 1}}, ["plan", "exists"]),
    ({"plan": {"in": []}}, ["plan", "in"]),
])
def test_bad_filters_name_their_place(flt: dict[str, Any], loc: list[Any]) -> None:
    with pytest.raises(InvalidField) as exc:
        planning.check_filter(FIELDS, flt, ("body", "relative_filter"))
    assert exc.value.loc == ["body", "relative_filter", *loc]


@pytest.mark.parametrize("expr", ["9:00", "24:00", "09:60", "0900", "09:00:00", "", " "])
def test_bad_times_of_day(expr: str) -> None:
    with pytest.raises(ValueError, match="time of day"):
        planning.parse_time_of_day(expr)
