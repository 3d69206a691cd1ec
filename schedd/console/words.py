"""A schedule's timing in words, for people: "every 15 minutes", "at 09:00 on weekdays,
Europe/Berlin". Cron text comes from cronsim's explain(), lightly reworded."""

from __future__ import annotations

import re
from datetime import datetime

from cronsim import CronSim

from schedd import timing

_STEP_MINUTES = re.compile(r"^\*/(\d+) \* \* \* \*$")
_STEP_HOURS = re.compile(r"^0 \*/(\d+) \* \* \*$")
_UNITS = (("day", 86_400_000), ("hour", 3_600_000), ("minute", 60_000), ("second", 1000))


def duration(ms: int) -> str:
    """90_000 -> "1 minute 30 seconds"; fractions of a second stay ("1.5 seconds")."""
    parts = []
    rest = ms
    for name, size in _UNITS:
        n, rest = divmod(rest, size)
        if n:
            parts.append(f"{n} {name}{'s' if n != 1 else ''}")
    if rest:
        secs = (ms % 60_000) / 1000
        parts = [p for p in parts if not p.endswith(("second", "seconds"))]
        parts.append(f"{secs:g} seconds")
    return " ".join(parts) or "0 seconds"


def _plural(n: int, unit: str) -> str:
    return f"every {unit}" if n == 1 else f"every {n} {unit}s"


def cron_words(expr: str) -> str:
    five = timing.parse_cron(expr)
    if m := _STEP_MINUTES.match(five):
        return _plural(int(m[1]), "minute")
    if m := _STEP_HOURS.match(five):
        return _plural(int(m[1]), "hour")
    text = CronSim(five, datetime(2000, 1, 1)).explain()  # noqa: DTZ001 (explain ignores it)
    text = text.replace("on Monday through Friday", "on weekdays")
    text = text.replace("on Saturday and Sunday", "on weekends")
    return text[:1].lower() + text[1:]


def _days(offset: int) -> str:
    n = abs(offset)
    unit = "day" if n == 1 else "days"
    return "on" if offset == 0 else f"{n} {unit} {'before' if offset < 0 else 'after'}"


def in_words(schedule_type: str, expression: str | None, tz: str, *,
             field: str | None = None, offset_days: int | None = None) -> str:
    """The schedule's timing in words; the expression itself when it cannot be read.
    A relative schedule's `field` and `offset_days` say which date of each record."""
    expr = expression or ""
    try:
        if schedule_type == "cron":
            return f"{cron_words(expr)}, {tz}"
        if schedule_type == "interval":
            text = duration(timing.parse_duration_ms(expr))
            return "every " + (text.removeprefix("1 ") if text.count(" ") == 1 else text)
        if schedule_type == "once":
            zone = timing.load_zone(tz)
            at = datetime.fromtimestamp(timing.parse_instant_ms(expr, zone) / 1000, zone)
            return f"once, on {at:%Y-%m-%d at %H:%M}, {tz}"
        if schedule_type == "relative":
            what = f"each record's {field}" if field else "each record's date"
            return f"at {expr or '00:00'}, {_days(offset_days or 0)} {what}, {tz}"
    except (timing.TimingError, ValueError, OverflowError):
        pass
    return expr
