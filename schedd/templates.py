"""Placeholders: ``{{run.id}}``, ``{{record.<field>}}`` ... filled in an action's strings.

One pass of plain text replacement (see `substitute`): nothing is evaluated, a substituted
value is not scanned again, unknown placeholders stay as written. Templates are split once
and cached (texts up to 1 KiB): a schedule's templates are the same on every run.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache
from operator import attrgetter
from typing import Any, Final

import msgspec

from schedd.outcomes import RunContext

__all__ = ["PLACEHOLDER_RE", "placeholder_value", "substitute", "substitute_text"]

PLACEHOLDER_RE: Final = re.compile(r"\{\{\s*([^{}\s]+)\s*\}\}")

_SIMPLE_PLACEHOLDERS: Final[dict[str, Callable[[RunContext], str]]] = {
    "run.id": attrgetter("run_id"),
    "run.scheduled_for": attrgetter("scheduled_for"),
    "run.attempt": lambda ctx: str(ctx.attempt),
    "run.trigger_type": attrgetter("trigger_type"),
    "run.triggered_at": attrgetter("triggered_at"),
    "schedule.id": attrgetter("schedule_id"),
    "schedule.name": attrgetter("schedule_name"),
}
_CACHED_TEMPLATE_CHARS: Final = 1024  # longer texts are split on every use, not kept


def placeholder_value(name: str, ctx: RunContext) -> str | None:
    simple = _SIMPLE_PLACEHOLDERS.get(name)
    if simple is not None:
        return simple(ctx)
    if name == "record.key" and ctx.record_key is not None:
        return ctx.record_key
    if name.startswith("record.") and ctx.record is not None:
        field = name[len("record.") :]
        if field in ctx.record:
            value = ctx.record[field]
            if isinstance(value, str):
                return value
            try:
                return msgspec.json.encode(value).decode()
            except (TypeError, ValueError, msgspec.MsgspecError):
                return str(value)
    return None


def _split_template(text: str) -> tuple[Any, ...]:
    """`text` as literal, (name, as written), literal, ...: the matches of one pass of the
    placeholder pattern, as re.sub would find them."""
    parts: list[Any] = []
    at = 0
    for m in PLACEHOLDER_RE.finditer(text):
        parts.append(text[at:m.start()])
        parts.append((m.group(1), m.group(0)))
        at = m.end()
    parts.append(text[at:])
    return tuple(parts)


_split_cached = lru_cache(maxsize=512)(_split_template)


def substitute_text(text: str, ctx: RunContext) -> str:
    if "{{" not in text:
        return text
    # a schedule's templates are the same on every run, and many schedules share one
    parts = (_split_cached(text) if len(text) <= _CACHED_TEMPLATE_CHARS
             else _split_template(text))
    if len(parts) == 1:
        return text
    out = [parts[0]]
    for i in range(1, len(parts), 2):
        name, raw = parts[i]
        value = placeholder_value(name, ctx)
        out.append(raw if value is None else value)
        out.append(parts[i + 1])
    return "".join(out)


def substitute(value: Any, ctx: RunContext) -> Any:
    """Fill placeholders in every string of `value`, recursively; dict keys are untouched.

    ``{{run.id}}``, ``{{run.scheduled_for}}``, ``{{run.attempt}}``, ``{{run.trigger_type}}``,
    ``{{run.triggered_at}}``, ``{{schedule.id}}``, ``{{schedule.name}}``,
    ``{{record.<field>}}`` (a non-string field is written as JSON: 3, true, null). Spaces
    inside the braces are allowed. One pass of plain text replacement: nothing is evaluated,
    a substituted value is not scanned again, and unknown placeholders stay as written.
    """
    if isinstance(value, str):
        return substitute_text(value, ctx)
    if isinstance(value, dict):
        return {k: substitute(v, ctx) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, ctx) for v in value]
    if isinstance(value, tuple):
        return tuple(substitute(v, ctx) for v in value)
    return value
