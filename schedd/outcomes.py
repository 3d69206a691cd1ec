"""What every action kind shares: the run's context, the attempt's outcome, and how an
error becomes a short, secret-free message.

An action that fails is an `Outcome`, never an exception. `error_message` is one line of at
most `MESSAGE_CHARS` characters and never echoes a url's query string or user info, a
header, a body or a secret.
"""

from __future__ import annotations

import re
from typing import Any, Final

import msgspec

__all__ = [
    "EXCERPT_BYTES",
    "MESSAGE_CHARS",
    "Outcome",
    "RunContext",
    "describe",
    "fmt_seconds",
    "one_line",
    "scrub",
]

#: Bytes of a webhook answer or a command's output kept in a run's result.
EXCERPT_BYTES: Final = 4096
MESSAGE_CHARS: Final = 500

_URL_IN_TEXT_RE: Final = re.compile(r"(?i)\b(https?://)(?:[^\s/@'\"]*@)?([^\s?#'\"]*)[?#][^\s'\"]*")
_USERINFO_IN_TEXT_RE: Final = re.compile(r"(?i)\b(https?://)[^\s/@'\"]*@")


class Outcome(msgspec.Struct, kw_only=True):
    """How one attempt ended. `error_message` is one short line and never holds a secret."""

    ok: bool
    error_code: str | None = None
    error_message: str | None = None
    result: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        # A message quoting what a receiver, a process or a backend said may hold U+0000,
        # which PostgreSQL's text cannot store: such a write would be refused, and the
        # outcome could never be recorded. Shown as U+FFFD on both backends instead.
        if self.error_message is not None and "\x00" in self.error_message:
            self.error_message = self.error_message.replace("\x00", "\ufffd")


class RunContext(msgspec.Struct, kw_only=True):
    """What an action may know about its run (placeholders, headers, the envelope)."""

    run_id: str
    schedule_id: str
    schedule_name: str
    attempt: int
    scheduled_for: str
    triggered_at: str
    trigger_type: str
    payload: Any = None
    # relative schedules: the run's record key, and its data as it is when the run starts
    # (None: the record was deleted meanwhile)
    record_key: str | None = None
    record: dict[str, Any] | None = None
    # the first attempt's run id: one webhook message across its retries (Standard Webhooks)
    attempt_root_run_id: str | None = None


def one_line(text: str, limit: int = MESSAGE_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def scrub(text: str) -> str:
    """Drop user info and query strings of any url quoted in an exception's text."""
    text = _URL_IN_TEXT_RE.sub(r"\1\2?...", text)
    return _USERINFO_IN_TEXT_RE.sub(r"\1", text)


def describe(exc: BaseException, name: str | None = None, text: str | None = None) -> str:
    """``"<class name>: <text>"`` in one scrubbed line; `name` and `text` replace the
    exception's own (the webhook client names its connection errors this way)."""
    if name is None:
        name = type(exc).__name__
    if text is None:
        text = str(exc)
    text = scrub(text)
    return one_line(f"{name}: {text}" if text else name)


def fmt_seconds(seconds: float) -> str:
    return f"{seconds:g}"
