"""Pure planning of relative schedules (SPEC §3.7): entity field types, record validation,
filters, and the occurrence instant of one (schedule, record).

No I/O and no clock: `now` is an argument. Bad input raises InvalidField naming the place
the caller gives (`loc`), e.g. ("body", "data") or ("body", "upsert", 3, "data").

The occurrence of a record for a schedule is: the record's date field (a `datetime` is
first converted to the schedule's timezone and its local date taken), plus the offset in
days, at the schedule's time of day (`HH:MM`) as wall time in its timezone. A wall time in
a spring-forward gap resolves to the first instant after the jump; one that occurs twice
(fall-back) to its first occurrence (timing.wall_ms). It is planned only when:
- the field is set and holds a value of its type, and the record matches the filter;
- it is not before start_at and not after end_at;
- it is not older than the catch-up window at the time of planning (an occurrence already
  past the window when the schedule or the record is written predates the plan: it is not
  planned and not recorded as missed);
- it is later than the last occurrence this (schedule, record) fired (each occurrence
  fires at most once; a new date after a fired one is a new occurrence).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Any, Final

from schedd import policies, timing
from schedd.errors import InvalidField

FIELD_TYPES: Final = ("date", "datetime", "string", "number", "boolean")
DATE_TYPES: Final = frozenset({"date", "datetime"})
FIELD_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
MAX_FIELDS: Final = 100
DEFAULT_TIME_OF_DAY: Final = "00:00"
OPERATORS: Final = ("eq", "ne", "lt", "lte", "gt", "gte", "in", "exists")
_ORDERED_OPS: Final = frozenset({"lt", "lte", "gt", "gte"})
MAX_IN_VALUES: Final = 1000

_DATE_RE: Final = re.compile(r"\d{4}-\d{2}-\d{2}")
_DATETIME_RE: Final = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:\d{2})")
_TIME_OF_DAY_RE: Final = re.compile(r"([01]\d|2[0-3]):([0-5]\d)")
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


# --------------------------------------------------------------------------- field values


@lru_cache(maxsize=65536)
def parse_date(text: str) -> date | None:
    """`YYYY-MM-DD` as a date; None when it is not one."""
    if len(text) != 10 or not _DATE_RE.fullmatch(text):
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def parse_datetime(text: str) -> datetime | None:
    """An RFC 3339 date-time WITH an offset, as an aware datetime; None when it is not one."""
    if len(text) > 40 or not _DATETIME_RE.fullmatch(text):
        return None
    s = text.upper().replace(" ", "T")
    if "." in s:  # fromisoformat takes at most 6 fraction digits
        head, _, rest = s.partition(".")
        digits = re.match(r"\d+", rest)
        assert digits is not None
        s = f"{head}.{digits.group(0)[:6].ljust(6, '0')}{rest[digits.end():]}"
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        return None
    return dt if dt.tzinfo is not None else None


def datetime_ms(text: str) -> int | None:
    dt = parse_datetime(text)
    if dt is None:
        return None
    try:
        return (dt - _EPOCH) // timedelta(milliseconds=1)
    except OverflowError:
        return None


def value_error(ftype: str, value: Any) -> str | None:
    """Why `value` is not a value of a field of type `ftype` (None: it is; null always is)."""
    if value is None:
        return None
    if ftype == "string":
        return None if isinstance(value, str) else "Input should be a valid string"
    if ftype == "number":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return None if ok else "Input should be a valid number"
    if ftype == "boolean":
        return None if isinstance(value, bool) else "Input should be a valid boolean"
    if ftype == "date":
        ok = isinstance(value, str) and parse_date(value) is not None
        return None if ok else "Input should be a valid date (YYYY-MM-DD)"
    if ftype == "datetime":
        ok = isinstance(value, str) and parse_datetime(value) is not None
        return None if ok else "Input should be an RFC 3339 date-time with an offset"
    return f"unknown field type {ftype!r}"


def check_fields(fields: Any, loc: Sequence[str | int], *, allow_null: bool = False) -> None:
    """A definition's `fields` map: 1..100 names `[A-Za-z_][A-Za-z0-9_]{0,63}`, each a type
    of FIELD_TYPES (or null, to remove it, when allow_null: a PUT's merge)."""
    if not isinstance(fields, dict):
        raise InvalidField(loc, "Input should be an object", "type_error")
    if len(fields) > MAX_FIELDS:
        raise InvalidField(loc, f"at most {MAX_FIELDS} fields", "too_long")
    for name, ftype in fields.items():
        if not isinstance(name, str) or not FIELD_NAME.fullmatch(name):
            raise InvalidField([*loc, str(name)[:64]],
                               "a field name is 1..64 of [A-Za-z0-9_], not starting with a digit",
                               "string_pattern_mismatch")
        if ftype is None and allow_null:
            continue
        if ftype not in FIELD_TYPES:
            raise InvalidField([*loc, name], f"a field type is one of {', '.join(FIELD_TYPES)}",
                               "enum")


def check_data(fields: Mapping[str, str], data: Any, loc: Sequence[str | int]) -> None:
    """A record's `data`: an object whose declared fields hold values of their type (or
    null); undeclared fields are kept as they are."""
    if not isinstance(data, dict):
        raise InvalidField(loc, "Input should be an object", "type_error")
    for name, value in data.items():
        ftype = fields.get(name)
        if ftype is not None and value is not None:
            why = value_error(ftype, value)
            if why is not None:
                raise InvalidField([*loc, name], why, "type_error")


def parse_time_of_day(expr: str | None) -> tuple[int, int]:
    """`HH:MM` (00:00..23:59) as (hour, minute); None is the default 00:00."""
    m = _TIME_OF_DAY_RE.fullmatch(DEFAULT_TIME_OF_DAY if expr is None else expr.strip())
    if not m:
        raise timing.TimingError(
            f"{str(expr)[:60]!r} is not a time of day HH:MM (00:00 to 23:59)")
    return int(m.group(1)), int(m.group(2))


# --------------------------------------------------------------------------- filters


Predicate = Callable[[Mapping[str, Any]], bool]


def _comparable(ftype: str, value: Any) -> Any:
    """A value as it compares: datetimes as instants, the rest as they are."""
    if ftype == "datetime" and isinstance(value, str):
        return datetime_ms(value)
    return value


def _check_operand(ftype: str, op: str, value: Any, loc: list[str | int]) -> None:
    if op == "exists":
        if not isinstance(value, bool):
            raise InvalidField(loc, "exists takes true or false", "type_error")
        return
    if op == "in":
        if not isinstance(value, list) or not 1 <= len(value) <= MAX_IN_VALUES:
            raise InvalidField(loc, f"in takes a list of 1..{MAX_IN_VALUES} values",
                               "type_error")
        for i, v in enumerate(value):
            _check_operand(ftype, "eq", v, [*loc, i])
        return
    if op in _ORDERED_OPS:
        if ftype == "boolean":
            raise InvalidField(loc, f"{op} does not apply to a boolean field", "value_error")
        if value is None:
            raise InvalidField(loc, f"{op} needs a value, not null", "type_error")
    why = value_error(ftype, value)
    if why is not None:
        raise InvalidField(loc, f"{why} (field type {ftype})", "type_error")


def check_filter(fields: Mapping[str, str], flt: Any, loc: Sequence[str | int]) -> None:
    """A relative_filter: `{field: literal | {op: operand, ...}}` over declared fields."""
    if flt is None:
        return
    if not isinstance(flt, dict):
        raise InvalidField(loc, "Input should be an object", "type_error")
    for name, cond in flt.items():
        here: list[str | int] = [*loc, name]
        ftype = fields.get(name)
        if ftype is None:
            raise InvalidField(here, "not a field of the entity definition", "value_error")
        if isinstance(cond, dict):
            if not cond:
                raise InvalidField(here, f"a condition object needs one of "
                                         f"{', '.join(OPERATORS)}", "value_error")
            for op, operand in cond.items():
                if op not in OPERATORS:
                    raise InvalidField([*here, op],
                                       f"unknown operator; use one of {', '.join(OPERATORS)}",
                                       "value_error")
                _check_operand(ftype, op, operand, [*here, op])
        elif isinstance(cond, list):
            raise InvalidField(here, "a literal condition is a single value; use "
                                     "{\"in\": [...]} for several", "type_error")
        else:
            _check_operand(ftype, "eq", cond, here)


def _test(op: str, operand: Any, present: bool, value: Any) -> bool:
    if op == "exists":
        return present is bool(operand)
    if op == "eq":
        return bool(value == operand)
    if op == "ne":
        return bool(value != operand)
    if op == "in":
        return value in operand
    if value is None or type(value) is bool:
        return False
    try:
        if op == "lt":
            return bool(value < operand)
        if op == "lte":
            return bool(value <= operand)
        if op == "gt":
            return bool(value > operand)
        return bool(value >= operand)
    except TypeError:  # a value of another type than the field's (retyped since)
        return False


def compile_filter(fields: Mapping[str, str], flt: Mapping[str, Any] | None) -> Predicate:
    """A predicate over a record's data; the filter was checked by check_filter."""
    if not flt:
        return lambda data: True
    tests: list[tuple[str, str, str, Any]] = []
    for name, cond in flt.items():
        ftype = fields.get(name, "string")
        ops = cond.items() if isinstance(cond, dict) else [("eq", cond)]
        for op, operand in ops:
            if op == "in":
                operand = [_comparable(ftype, v) for v in operand]
            elif op != "exists":
                operand = _comparable(ftype, operand)
            tests.append((name, ftype, op, operand))

    def matches(data: Mapping[str, Any]) -> bool:
        for name, ftype, op, operand in tests:
            raw = data.get(name)
            value = _comparable(ftype, raw)
            if not _test(op, operand, raw is not None, value):
                return False
        return True

    return matches


# --------------------------------------------------------------------------- occurrences


@dataclass(frozen=True)
class RelativePlan:
    """What planning needs of one relative schedule (RelativePlan.of)."""

    schedule_id: str
    field: str
    field_type: str
    offset_days: int
    hour: int
    minute: int
    tz_name: str
    start_ms: int | None
    end_ms: int | None
    catchup_window_minutes: int
    matches: Predicate

    @classmethod
    def of(cls, *, schedule_id: str, fields: Mapping[str, str], field: str,
           offset_days: int | None, expression: str | None, tz_name: str,
           start_ms: int | None, end_ms: int | None, catchup_window_minutes: int,
           flt: Mapping[str, Any] | None) -> RelativePlan:
        hour, minute = parse_time_of_day(expression)
        timing.load_zone(tz_name)
        return cls(schedule_id=schedule_id, field=field, field_type=fields.get(field, "date"),
                   offset_days=offset_days or 0, hour=hour, minute=minute, tz_name=tz_name,
                   start_ms=start_ms, end_ms=end_ms,
                   catchup_window_minutes=catchup_window_minutes,
                   matches=compile_filter(fields, flt))

    def occurrence(self, data: Mapping[str, Any]) -> int | None:
        """The record's occurrence instant, before the window rules; None when it has none."""
        value = data.get(self.field)
        if not isinstance(value, str) or not self.matches(data):
            return None
        return occurrence_ms(value, self.field_type, self.offset_days, self.hour, self.minute,
                             self.tz_name)

    def plan(self, data: Mapping[str, Any], now_ms: int, fired_ms: int | None) -> int | None:
        """The pending occurrence to keep for this record, or None (see the module doc)."""
        o = self.occurrence(data)
        if o is None:
            return None
        if self.start_ms is not None and o < self.start_ms:
            return None
        if self.end_ms is not None and o > self.end_ms:
            return None
        if o < policies.missed_cutoff_ms(now_ms, self.catchup_window_minutes):
            return None
        if fired_ms is not None and o <= fired_ms:
            return None
        return o


@lru_cache(maxsize=65536)
def occurrence_ms(value: str, field_type: str, offset_days: int, hour: int, minute: int,
                  tz_name: str) -> int | None:
    """The instant of `value` (a date, or a datetime converted to tz_name) + offset_days at
    hour:minute wall time in tz_name; None when the value is not of its type or the date
    falls outside years 1970..9998. Cached: records share dates."""
    tz = timing.load_zone(tz_name)
    if field_type == "datetime":
        dt = parse_datetime(value)
        if dt is None:
            return None
        try:
            d = dt.astimezone(tz).date()
        except (OverflowError, ValueError):
            return None
    else:
        parsed = parse_date(value)
        if parsed is None:
            return None
        d = parsed
    try:
        d = d + timedelta(days=offset_days)
    except OverflowError:
        return None
    if not 1970 <= d.year <= 9998:
        return None
    return timing.wall_ms(datetime.combine(d, time(hour, minute)), tz)


def next_run_of(earliest_ms: int | None, end_ms: int | None) -> int | None:
    """A relative schedule's next_run_at: its earliest pending occurrence; with none and an
    end_at, the end_at itself (the loop wakes then and completes the schedule)."""
    return earliest_ms if earliest_ms is not None else end_ms


def flex_key(schedule_id: str, record_key: str) -> str:
    """The identity a record's occurrence is spread by in the flexible window: records of
    one schedule due at one instant get different offsets."""
    return f"{schedule_id}:{record_key}"
