"""Pure timing: parse schedule expressions, find occurrences with the DST rules, format instants.

No I/O and no clock reads: every instant is an argument. Instants are integer epoch
milliseconds (UTC). Bad input raises TimingError with a short message that names no field;
the caller adds the field.

Cron expressions are evaluated by cronsim, which implements the daylight-saving rules of
SPEC §3.3 (Debian cron) for 5-field expressions:

- fixed-time (neither the minute nor the hour field starts with ``*``): a wall time in the
  spring-forward gap fires once, at the transition instant; a repeated (fall-back) wall time
  fires once, at its first occurrence;
- wildcard: follows real elapsed time; gap times do not fire, repeated times fire each time.

Bounds: nothing fires before ``start_ms``; an occurrence exactly at ``end_ms`` still fires,
nothing after it does.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from functools import lru_cache
from itertools import islice
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

__all__ = [
    "Timer",
    "TimingError",
    "compile_timer",
    "format_local",
    "format_ms",
    "is_fixed_time",
    "load_zone",
    "parse_cron",
    "parse_duration_ms",
    "parse_instant_ms",
    "preview",
    "wall_ms",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_SECOND_MS = 1000
_MAX_INTERVAL_MS = 366 * 86_400_000
# cronsim can hand back instants at or before the start (started inside the second pass of a
# repeated hour, a fixed-time expression yields that hour's first pass). At most a few hours of
# minutes can be stale; a day's worth bounds the skip loop.
_MAX_STALE = 1440


class TimingError(ValueError):
    """A schedule expression, duration, instant or timezone that cannot be used."""


# --- instants -----------------------------------------------------------------------------


def _to_ms(dt: datetime) -> int:
    """An aware datetime as epoch milliseconds (floored), exact integer arithmetic."""
    return (dt - _EPOCH) // _MS


def _from_ms(ms: int, tz: ZoneInfo | timezone = UTC) -> datetime:
    return (_EPOCH + timedelta(milliseconds=ms)).astimezone(tz)


@lru_cache(maxsize=4096)
def format_ms(ms: int) -> str:
    """``2026-11-22T09:00:00.000Z``: UTC, millisecond precision. Cached: a burst formats
    the same few instants for thousands of runs."""
    return _from_ms(ms).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def format_local(ms: int, tz: ZoneInfo) -> str:
    """``2026-11-23T09:00:00+01:00``: wall time in ``tz`` with its offset; ``.fff`` only if set."""
    spec = "milliseconds" if ms % 1000 else "seconds"
    return _from_ms(ms, tz).isoformat(timespec=spec)


_ZONE_NAME = re.compile(r"[A-Za-z0-9_+\-]+(?:/[A-Za-z0-9_+\-]+)*")


@lru_cache(maxsize=512)
def load_zone(name: str) -> ZoneInfo:
    """An IANA zone by name (``UTC`` included). Host-dependent aliases are refused."""
    if (
        not name
        or len(name) > 50
        or ".." in name
        or name.startswith("/")
        or not _ZONE_NAME.fullmatch(name)
        or name in ("localtime", "posixrules")
    ):
        raise TimingError(f"unknown timezone {name[:60]!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise TimingError(f"unknown timezone {name!r}") from None


_INSTANT = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})"
    r"(?:[T ](?P<time>\d{2}:\d{2}(?::\d{2}(?:[.,]\d{1,9})?)?)"
    r"(?P<offset>Z|[+-]\d{2}:?\d{2})?)?"
)


def _resolve_wall(naive: datetime, tz: ZoneInfo) -> int:
    """A wall time in ``tz`` as epoch ms.

    A time that occurs twice (fall-back) resolves to its first occurrence (fold=0). A time
    in a spring-forward gap does not exist; it resolves to the transition instant itself, the
    first real instant after the gap (America/New_York 2026-03-08T02:30 -> 07:00Z, which is
    03:00-04:00), matching what cronsim does for fixed-time cron expressions.
    """
    first = naive.replace(tzinfo=tz, fold=0)
    if first.astimezone(UTC).astimezone(tz).replace(tzinfo=None) == naive:
        return _to_ms(first)
    # In the gap, fold=1 reads it with the offset after the jump (an instant before the
    # transition) and fold=0 with the offset before it (an instant after): bisect between.
    lo = _to_ms(naive.replace(tzinfo=tz, fold=1))
    hi = _to_ms(first)
    target = _from_ms(hi, tz).utcoffset()
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _from_ms(mid, tz).utcoffset() == target:
            hi = mid
        else:
            lo = mid
    return hi


def wall_ms(naive: datetime, tz: ZoneInfo) -> int:
    """A naive wall time in ``tz`` as epoch ms: a gap time resolves to the first instant
    after the jump, a repeated time to its first occurrence (``_resolve_wall``)."""
    return _resolve_wall(naive, tz)


def parse_instant_ms(text: str, tz: ZoneInfo) -> int:
    """An ISO 8601 / RFC 3339 date-time as epoch ms.

    Accepts ``2026-12-01T09:00:00``, a space instead of ``T``, optional seconds and fraction,
    and ``Z`` or ``+01:00``. Without an offset it is wall time in ``tz`` (see ``_resolve_wall``
    for gaps and repeated times); a date alone is midnight wall time.
    """
    s = text.strip().upper()
    m = _INSTANT.fullmatch(s)
    if not m:
        raise TimingError(f"{text[:60]!r} is not an ISO 8601 date-time")
    try:
        if m["time"] is None:
            return _resolve_wall(datetime.fromisoformat(m["date"]), tz)
        dt = datetime.fromisoformat(s)
        if dt.tzinfo is not None:
            return _to_ms(dt)
        return _resolve_wall(dt, tz)
    except (ValueError, OverflowError):
        raise TimingError(f"{text[:60]!r} is not a valid date-time") from None


# --- durations ----------------------------------------------------------------------------

_NUM = r"(\d+(?:\.\d+)?)"
_INUM = r"(\d+(?:[.,]\d+)?)"
_UNIT_MS = (604_800_000, 86_400_000, 3_600_000, 60_000, 1000, 1)
_SIMPLE = re.compile(rf"(?:{_NUM}W)?(?:{_NUM}D)?(?:{_NUM}H)?(?:{_NUM}M)?(?:{_NUM}S)?(?:{_NUM}MS)?")
_ISO = re.compile(
    rf"P(?:{_INUM}Y)?(?:{_INUM}M)?(?:{_INUM}W)?(?:{_INUM}D)?"
    rf"(?:T(?=\d)(?:{_INUM}H)?(?:{_INUM}M)?(?:{_INUM}S)?)?"
)


def parse_duration_ms(text: str) -> int:
    """A positive duration as milliseconds, at least 1 s and at most 366 days.

    Forms (case-insensitive): units in this order, each at most once, ``w d h m s ms``, any
    of them with a decimal fraction (``90s``, ``15m``, ``1h30m``, ``2d``, ``1w``,
    ``1d2h3m4s``, ``1.5s``, ``1500ms``); or ISO 8601 ``PnWnDTnHnMnS`` (``PT15M``, ``P1D``,
    ``PT1.5S``, ``P1DT2H``). ISO years and months are refused: their length varies.
    The total must be a whole number of milliseconds.
    """
    s = "".join(text.split()).upper()
    if not s:
        raise TimingError("a duration is required, e.g. 90s, 15m, 1h30m or PT15M")
    if s.startswith("-"):
        raise TimingError("an interval must be positive")
    if s.startswith("P"):
        m = _ISO.fullmatch(s)
        if m and (m[1] or m[2]):
            raise TimingError("years and months have no fixed length; use weeks or days")
        groups = m.groups()[2:] if m else ()
        units: tuple[int, ...] = _UNIT_MS[:5]
    else:
        m = _SIMPLE.fullmatch(s)
        groups = m.groups() if m else ()
        units = _UNIT_MS
    if not any(groups):
        raise TimingError(f"{text[:60]!r} is not a duration; use e.g. 90s, 15m, 1h30m or PT15M")
    total = sum(
        (Decimal(g.replace(",", ".")) * unit for g, unit in zip(groups, units, strict=True) if g),
        Decimal(0),
    )
    if total < _SECOND_MS:
        raise TimingError("an interval must be at least 1 second")
    if total > _MAX_INTERVAL_MS:
        raise TimingError("an interval must be at most 366 days")
    if total != total.to_integral_value():
        raise TimingError("an interval cannot be finer than a millisecond")
    return int(total)


# --- cron ---------------------------------------------------------------------------------

_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


def parse_cron(expr: str) -> str:
    """A 5-field cron expression or macro, validated; returns the normalised 5 fields.

    Whitespace is collapsed and macros (``@yearly @annually @monthly @weekly @daily
    @midnight @hourly``, any case) are expanded. Everything cronsim accepts is accepted:
    ranges, steps, lists, month and day names, ``L`` and ``LW`` (day of month), ``5L`` and
    ``5#3`` (day of week).
    """
    e = " ".join(expr.split())
    if e.startswith("@"):
        if e.lower() not in _MACROS:
            raise TimingError(f"unknown cron macro {e[:30]!r}")
        return _MACROS[e.lower()]
    n = len(e.split())
    if n == 6:
        raise TimingError("expected 5 cron fields; sub-minute schedules use interval")
    if n != 5:
        raise TimingError(
            "expected 5 cron fields (minute hour day-of-month month day-of-week) or a macro"
        )
    try:
        CronSim(e, datetime(2000, 1, 1, tzinfo=UTC))
    except (CronSimError, ValueError) as exc:
        raise TimingError(f"invalid cron expression ({str(exc).lower()})") from None
    return e


def is_fixed_time(expr5: str) -> bool:
    """True when neither the minute nor the hour field starts with ``*`` (SPEC §3.3)."""
    minute, hour = expr5.split()[:2]
    return not minute.startswith("*") and not hour.startswith("*")


# --- timers -------------------------------------------------------------------------------


class Timer:
    """A compiled schedule. Immutable, so it can be shared from a cache."""

    __slots__ = ("end_ms", "start_ms")

    def __init__(self, start_ms: int | None, end_ms: int | None) -> None:
        self.start_ms = start_ms
        self.end_ms = end_ms

    def _after(self, after_ms: int) -> Iterator[int]:
        """Occurrences strictly after ``after_ms``, increasing, ignoring ``end_ms``."""
        raise NotImplementedError

    def _iter(self, after_ms: int) -> Iterator[int]:
        if self.start_ms is not None:
            after_ms = max(after_ms, self.start_ms - 1)
        for ms in self._after(after_ms):
            if self.end_ms is not None and ms > self.end_ms:
                return
            yield ms

    def next_after(self, after_ms: int) -> int | None:
        """The first occurrence strictly after ``after_ms`` within the bounds, or None."""
        return next(self._iter(after_ms), None)

    def count_between(
        self, first_ms: int, before_ms: int, cap: int = 100_000
    ) -> tuple[int, int | None]:
        """Occurrences ``o`` with ``first_ms <= o < before_ms``: (count, the last such o).

        Exact for interval and once. Cron iterates and stops at ``cap``: a count equal to
        ``cap`` means "at least", with the cap-th occurrence as last; continue from last + 1.
        """
        count = 0
        last: int | None = None
        for ms in self._iter(first_ms - 1):
            if ms >= before_ms or count >= cap:
                break
            count += 1
            last = ms
        return count, last


class _CronTimer(Timer):
    __slots__ = ("expr", "tz")

    def __init__(self, expr: str, tz: ZoneInfo, start_ms: int | None, end_ms: int | None) -> None:
        super().__init__(start_ms, end_ms)
        self.expr = expr
        self.tz: ZoneInfo | timezone = UTC if tz.key in ("UTC", "Etc/UTC") else tz

    def _after(self, after_ms: int) -> Iterator[int]:
        last = after_ms
        stale = 0
        try:
            it = CronSim(self.expr, _from_ms(after_ms, self.tz))
        except (OverflowError, ValueError):  # beyond datetime's range: nothing
            return
        while True:
            try:
                ms = _to_ms(next(it))
            except (StopIteration, OverflowError, ValueError):
                return
            if ms <= last:  # cronsim quirk in the second pass of a repeated hour: skip
                stale += 1
                if stale > _MAX_STALE:
                    raise TimingError("cron evaluation did not advance")
                continue
            stale = 0
            last = ms
            yield ms


class _IntervalTimer(Timer):
    __slots__ = ("base_ms", "first_k", "interval_ms")

    def __init__(
        self, interval_ms: int, anchor_ms: int, start_ms: int | None, end_ms: int | None
    ) -> None:
        super().__init__(start_ms, end_ms)
        self.interval_ms = interval_ms
        # with start_at: start + k*iv, k >= 0; else created_at + k*iv, k >= 1
        self.base_ms = anchor_ms if start_ms is None else start_ms
        self.first_k = 1 if start_ms is None else 0

    def _k_after(self, after_ms: int) -> int:
        return max(self.first_k, (after_ms - self.base_ms) // self.interval_ms + 1)

    def _after(self, after_ms: int) -> Iterator[int]:
        k = self._k_after(after_ms)
        while True:
            yield self.base_ms + k * self.interval_ms
            k += 1

    def count_between(
        self, first_ms: int, before_ms: int, cap: int = 100_000
    ) -> tuple[int, int | None]:
        lo = self._k_after(first_ms - 1)
        hi_ms = before_ms - 1 if self.end_ms is None else min(before_ms - 1, self.end_ms)
        hi = (hi_ms - self.base_ms) // self.interval_ms
        if hi < lo:
            return 0, None
        return hi - lo + 1, self.base_ms + hi * self.interval_ms


class _OnceTimer(Timer):
    __slots__ = ("at_ms",)

    def __init__(self, at_ms: int, start_ms: int | None, end_ms: int | None) -> None:
        super().__init__(start_ms, end_ms)
        self.at_ms = at_ms

    def _after(self, after_ms: int) -> Iterator[int]:
        if self.at_ms > after_ms:
            yield self.at_ms


def compile_timer(
    schedule_type: str,
    expression: str | None,
    tz_name: str,
    *,
    anchor_ms: int,
    start_ms: int | None = None,
    end_ms: int | None = None,
) -> Timer:
    """Compile a schedule (cached; the result is immutable). Only an interval depends on
    its anchor: the others are cached without it, so schedules made at different instants
    with one expression (a burst of one-shots, a fleet of crons) share one timer instead of
    each filling a cache slot and parsing again on every claim."""
    return _compile_timer(schedule_type, expression, tz_name,
                          anchor_ms if schedule_type == "interval" else 0, start_ms, end_ms)


@lru_cache(maxsize=4096)
def _compile_timer(
    schedule_type: str,
    expression: str | None,
    tz_name: str,
    anchor_ms: int,
    start_ms: int | None,
    end_ms: int | None,
) -> Timer:
    """compile_timer's cached work.

    ``cron``: occurrences in ``tz_name`` with the DST rules of the module docstring.
    ``interval``: elapsed time, no drift: ``start_ms + k*iv`` (k >= 0) when start_ms is
    given, else ``anchor_ms + k*iv`` (k >= 1); ``anchor_ms`` is the schedule's created_at.
    ``once``: the instant of ``parse_instant_ms(expression, tz)``.
    Nothing fires before ``start_ms``; an occurrence exactly at ``end_ms`` still fires.
    """
    tz = load_zone(tz_name)
    if schedule_type == "relative":
        raise TimingError("relative schedules fire per record, at dates read from their "
                          "records: see GET /v1/schedules/{id}/occurrences")
    if schedule_type not in ("cron", "interval", "once"):
        raise TimingError(f"unknown schedule type {schedule_type[:30]!r}")
    if expression is None or not expression.strip():
        raise TimingError(f"an expression is required for a {schedule_type} schedule")
    if schedule_type == "cron":
        return _CronTimer(parse_cron(expression), tz, start_ms, end_ms)
    if schedule_type == "interval":
        return _IntervalTimer(parse_duration_ms(expression), anchor_ms, start_ms, end_ms)
    return _OnceTimer(parse_instant_ms(expression, tz), start_ms, end_ms)


def preview(
    schedule_type: str,
    expression: str | None,
    tz_name: str,
    *,
    after_ms: int,
    count: int,
    anchor_ms: int | None = None,
) -> list[int]:
    """The next ``count`` occurrences strictly after ``after_ms`` (interval anchor defaults
    to ``after_ms``)."""
    if schedule_type != "interval":
        anchor_ms = 0  # unused: keep one cache entry per expression
    elif anchor_ms is None:
        anchor_ms = after_ms
    timer = compile_timer(schedule_type, expression, tz_name, anchor_ms=anchor_ms)
    return list(islice(timer._iter(after_ms), max(count, 0)))
