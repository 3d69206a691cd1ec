"""Actions: validate an action_config, and run webhook, command and noop actions.

`validate_action_config` turns what a client sent into the stored, normalised config
(defaults filled in) or raises `InvalidField`. `ActionRunner.run` performs one attempt
and *always* answers an `Outcome`: an action that fails is a value, never an exception.
Only cancellation propagates (the engine cancels the task running `run`), after the
request was aborted or the command's process group was ended.

Decisions (the spec leaves these open):

Validation
- Every error is one `InvalidField` with loc ``("body", "action_config", <field>)``
  (header names, env names and argv indexes are named in the message, not the loc);
  ``("body", "action_config")`` when the config is not an object; ``("body", "action_type")``
  for an unknown type or a command while commands are disabled. ``type`` is
  ``"missing"``, ``"extra_forbidden"`` (unknown key), ``"type_error"`` or ``"value_error"``.
  Unknown keys are reported first, so the answer does not depend on dict order.
- Fields with a real default are filled in (webhook ``method``, ``headers``,
  ``timeout_seconds``; command ``env``, ``timeout_seconds``; worker ``payload``). Optional
  fields whose absence means something stay absent (webhook ``body`` and ``secret``,
  command ``cwd``).
- ``body`` and ``payload`` are any JSON value, normalised through a msgspec JSON round trip,
  at most 1 MiB encoded.
- webhook ``url``: http or https, a host, no whitespace or control characters, at most
  4096 characters, and **no user:password part** (credentials belong in a header, where
  reads redact them; a url is shown as written). Placeholders may appear anywhere after
  the scheme; the url is checked again after substitution, at run time.
- webhook ``headers``: names are RFC 9110 tokens (<= 256 chars), values are strings
  without control characters other than TAB (<= 8192 chars), at most 64 headers, no two
  names equal ignoring case. Names schedd sets itself are refused with a 422 rather than
  silently dropped: ``Idempotency-Key``, any ``X-Schedd-*``, ``webhook-id``,
  ``webhook-timestamp``, ``webhook-signature`` (a receiver must be able to trust them), and
  the framing headers ``Content-Length``, ``Transfer-Encoding``, ``Connection``.
  ``Content-Type`` and ``User-Agent`` may be overridden.
- A secret, or a sensitive header or env value, equal to ``"********"`` is refused: it is
  the redaction placeholder, i.e. a client copied a read back without `merge_redacted`
  having an old value to restore. Services call ``merge_redacted(old, new)`` first.
- webhook ``secret``: 1..1024 chars; ``whsec_`` secrets must be strict base64 (padding
  included) decoding to at least one byte.
- command ``argv``: 1..1024 strings, argv[0] non-empty, no NUL; placeholders are
  substituted in argv items and env values (no shell, so plain text stays plain text).
  ``env`` names match ``[A-Za-z_][A-Za-z0-9_]*``; ``cwd`` must be an absolute path
  (existence is checked when the command runs: ``spawn_failed``).
  ``timeout_seconds`` defaults to **3600** (1..86400): commands are batch jobs (backups,
  reports) that a 60 s default would kill silently, while an hour still bounds a hung one.
- worker ``queue``: 1..200 chars of ``[A-Za-z0-9_.:-]``. noop: ``{}`` only.

Webhooks
- Request headers, in this order: ``Content-Type: application/json`` (only when a body is
  sent), ``User-Agent``, ``Idempotency-Key`` (run id), ``X-Schedd-Schedule-Id``,
  ``X-Schedd-Run-Id``, ``X-Schedd-Attempt``, ``X-Schedd-Scheduled-For``, then the config's
  headers (values substituted; they may replace Content-Type and User-Agent), then with a
  secret ``webhook-id`` (the first attempt's run id, the same on every retry),
  ``webhook-timestamp`` and ``webhook-signature``.
- Body: the substituted config ``body`` when the key is present (``"body": null`` means
  *no body at all*); otherwise the run envelope for POST, PUT and PATCH, and no body for GET
  and DELETE. A request without a body carries no Content-Type.
- The resolved payload is ``{"url", "method", "headers", "body"}`` with the headers above
  except the three ``webhook-*`` signature headers (they depend on the send time), and
  sensitive header values redacted.
- Error codes: ``timeout``; ``http_status`` (any non-2xx answer, including a 3xx that is not
  followed, and too many redirects when following); ``connection`` (refused, reset, DNS,
  TLS, disconnected ...); ``invalid_request`` (the url or a header value is invalid after
  substitution, e.g. a record field holding a newline). A 2xx answer whose body cannot be
  read in full is still a success: the status decides, the excerpt is what arrived.
  Error messages never echo a url's query string or user info, headers or bodies.

Commands
- Never a shell: argv is executed as given (after substitution), stdin ``/dev/null``,
  stdout and stderr merged into one pipe of which only the last 4096 bytes are kept
  (constant memory, whatever the output size), ``start_new_session``.
- Environment: not the daemon's. Only ``PATH`` (default ``/usr/local/bin:/usr/bin:/bin``),
  ``HOME``, ``LANG``, ``LC_ALL``, ``TZ`` and ``TMPDIR`` are passed on, then the config's
  ``env`` on top. The daemon's own environment may hold secrets.
- ``cwd`` absent: the daemon's working directory.
- Spawned through ``loop.subprocess_exec`` with a small protocol rather than
  ``asyncio.create_subprocess_exec``: on 3.11 ``Process.wait()`` only returns once every
  pipe is closed, so a background grandchild holding stdout would hide the main exit.
- A run is its process group: when the main process exits, anything it left in its group
  gets SIGTERM (and SIGKILL after the grace if something still holds the output pipe), as
  systemd does for a oneshot unit. On timeout or cancellation the group gets SIGTERM, up to
  ``ActionRunner.TERM_GRACE_SECONDS`` (5 s) to finish, then SIGKILL; the main process is
  reaped before `run` returns or re-raises. A process that left the group (setsid) escapes.
- Error codes: ``exit_status`` (non-zero exit, or killed by a signal: ``exit_status`` is
  then ``-signum`` and the message names the signal), ``timeout`` (result still carries the
  tail), ``spawn_failed`` (argv[0] not found or not executable, cwd missing ...; clearer
  than a fake exit status), ``commands_disabled`` (the config allowed commands when the
  schedule was created, not any more: the run fails instead of executing),
  ``invalid_request`` (a NUL byte after substitution).

Any other exception inside an action (a bug, an unforeseen library error) becomes
``internal_error`` with the exception's class name, so the engine's task survives it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import copy
import hashlib
import hmac
import logging
import os
import re
import signal
import subprocess
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import lru_cache
from operator import attrgetter
from types import TracebackType
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp
import msgspec

from schedd.errors import InvalidField
from schedd.webhook_http import ConnectError, LeanHttp

__all__ = [
    "ACTION_TYPES",
    "REDACTED",
    "ActionRunner",
    "Outcome",
    "RunContext",
    "merge_redacted",
    "redact_config",
    "sign_webhook",
    "substitute",
    "validate_action_config",
]

logger = logging.getLogger(__name__)

ACTION_TYPES = ("webhook", "command", "worker", "noop")
REDACTED = "********"

EXCERPT_BYTES: Final = 4096
MESSAGE_CHARS: Final = 500
WEBHOOK_TIMEOUT_DEFAULT: Final = 30
WEBHOOK_TIMEOUT_MAX: Final = 300
COMMAND_TIMEOUT_DEFAULT: Final = 3600
COMMAND_TIMEOUT_MAX: Final = 86400
JSON_MAX_BYTES: Final = 1024 * 1024
URL_MAX_CHARS: Final = 4096
HEADERS_MAX: Final = 64
HEADER_NAME_MAX: Final = 256
HEADER_VALUE_MAX: Final = 8192
SECRET_MAX: Final = 1024
ARGV_MAX: Final = 1024
ENV_MAX: Final = 256
ENV_VALUE_MAX: Final = 32768
QUEUE_MAX: Final = 200

WEBHOOK_METHODS: Final = ("GET", "POST", "PUT", "PATCH", "DELETE")
_BODYLESS_BY_DEFAULT: Final = frozenset({"GET", "DELETE"})
_RESERVED_HEADERS: Final = frozenset(
    {
        "idempotency-key",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "content-length",
        "transfer-encoding",
        "connection",
    }
)
_RESERVED_HEADER_PREFIX: Final = "x-schedd-"
_SENSITIVE_NAMES: Final = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key"}
)
_SENSITIVE_PARTS: Final = (
    "token",
    "secret",
    "key",
    "auth",
    "password",
    "passwd",
    "credential",
    "cookie",
)
_INHERITED_ENV: Final = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR")
_DEFAULT_PATH: Final = "/usr/local/bin:/usr/bin:/bin"

_TOKEN_RE: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HEADER_VALUE_BAD_RE: Final = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_URL_BAD_RE: Final = re.compile(r"[\x00-\x20\x7f]")
# A url sent as written by the lean client: RFC 3986 characters only (aiohttp would
# percent-encode anything else, so such urls stay on aiohttp and are sent as before).
_URL_AS_IS_RE: Final = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]*")
_ENV_NAME_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_QUEUE_RE: Final = re.compile(r"[A-Za-z0-9_.:\-]+")
_PLACEHOLDER_RE: Final = re.compile(r"\{\{\s*([^{}\s]+)\s*\}\}")
_URL_IN_TEXT_RE: Final = re.compile(r"(?i)\b(https?://)(?:[^\s/@'\"]*@)?([^\s?#'\"]*)[?#][^\s'\"]*")
_USERINFO_IN_TEXT_RE: Final = re.compile(r"(?i)\b(https?://)[^\s/@'\"]*@")

_WEBHOOK_KEYS: Final = (
    "url", "method", "headers", "body", "timeout_seconds", "secret", "payload",
)
_COMMAND_KEYS: Final = ("argv", "env", "cwd", "timeout_seconds")
_WORKER_KEYS: Final = ("queue", "payload")
_ACTION_TYPES: Final = frozenset({"webhook", "command", "worker", "noop"})


class Outcome(msgspec.Struct, kw_only=True):
    """How one attempt ended. `error_message` is one short line and never holds a secret."""

    ok: bool
    error_code: str | None = None
    error_message: str | None = None
    result: dict[str, Any] | None = None


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
    record: dict[str, Any] | None = None
    # the first attempt's run id: one webhook message across its retries (Standard Webhooks)
    attempt_root_run_id: str | None = None


# --------------------------------------------------------------------------- validation


def _loc(field: str) -> tuple[str, str, str]:
    return ("body", "action_config", field)


def _reject_unknown(config: dict[Any, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(str(k) for k in config if k not in allowed)
    if unknown:
        allowed_txt = ", ".join(allowed) if allowed else "none"
        raise InvalidField(
            _loc(unknown[0]), f"unknown field (allowed: {allowed_txt})", "extra_forbidden"
        )


def _str_field(config: dict[str, Any], field: str) -> str:
    value = config[field]
    if not isinstance(value, str):
        raise InvalidField(_loc(field), "must be a string", "type_error")
    return value


def _number_field(
    config: dict[str, Any], field: str, default: int, low: int, high: int
) -> int | float:
    if field not in config:
        return default
    value = config[field]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidField(_loc(field), "must be a number", "type_error")
    if not low <= value <= high:
        raise InvalidField(_loc(field), f"must be between {low} and {high}")
    return value


def _json_field(config: dict[str, Any], field: str) -> Any:
    try:
        encoded = msgspec.json.encode(config[field])
    except (TypeError, ValueError, OverflowError, RecursionError, msgspec.MsgspecError) as exc:
        raise InvalidField(_loc(field), "must be a JSON value", "type_error") from exc
    if len(encoded) > JSON_MAX_BYTES:
        raise InvalidField(_loc(field), "must be at most 1 MiB as JSON")
    return msgspec.json.decode(encoded)


@lru_cache(maxsize=4096)
def _url_problem(url: str) -> str | None:
    """Why `url` cannot be a webhook target, or None. Never echoes the url."""
    if not url:
        return "must not be empty"
    if len(url) > URL_MAX_CHARS:
        return f"must be at most {URL_MAX_CHARS} characters"
    if _URL_BAD_RE.search(url):
        return "must not contain whitespace or control characters"
    try:
        parts = urlsplit(url)
        _ = parts.port
    except ValueError:
        return "is not a valid URL"
    if parts.scheme.lower() not in ("http", "https"):
        return "must be an http or https URL"
    if not parts.hostname:
        return "must name a host"
    if parts.username is not None or parts.password is not None:
        return "must not contain user info; put credentials in a header (Authorization)"
    return None


def _is_reserved_header(name: str) -> bool:
    lowered = name.lower()
    return lowered in _RESERVED_HEADERS or lowered.startswith(_RESERVED_HEADER_PREFIX)


@lru_cache(maxsize=4096)
def _is_sensitive(name: str) -> bool:
    lowered = name.lower()
    return lowered in _SENSITIVE_NAMES or any(part in lowered for part in _SENSITIVE_PARTS)


def _header_value_problem(value: str) -> str | None:
    if len(value) > HEADER_VALUE_MAX:
        return f"is longer than {HEADER_VALUE_MAX} characters"
    if _HEADER_VALUE_BAD_RE.search(value):
        return "contains a control character (CR, LF, NUL ...)"
    return None


def _validate_headers(raw: Any) -> dict[str, str]:
    loc = _loc("headers")
    if not isinstance(raw, dict):
        raise InvalidField(loc, "must be an object of header names to string values", "type_error")
    if len(raw) > HEADERS_MAX:
        raise InvalidField(loc, f"at most {HEADERS_MAX} headers")
    out: dict[str, str] = {}
    seen: set[str] = set()
    for name, value in raw.items():
        if not isinstance(name, str) or not _TOKEN_RE.fullmatch(name):
            raise InvalidField(loc, f"header name {str(name)[:80]!r} is not a valid HTTP token")
        if len(name) > HEADER_NAME_MAX:
            raise InvalidField(loc, f"header name longer than {HEADER_NAME_MAX} characters")
        lowered = name.lower()
        if lowered in seen:
            raise InvalidField(loc, f"header {name!r} is given twice (names ignore case)")
        seen.add(lowered)
        if _is_reserved_header(name):
            raise InvalidField(loc, f"header {name!r} is set by schedd and cannot be overridden")
        if not isinstance(value, str):
            raise InvalidField(loc, f"header {name!r} must have a string value", "type_error")
        problem = _header_value_problem(value)
        if problem:
            raise InvalidField(loc, f"header {name!r} {problem}")
        if value == REDACTED and _is_sensitive(name):
            raise InvalidField(
                loc, f"header {name!r} holds the redaction placeholder; send the real value"
            )
        out[name] = value
    return out


def _validate_webhook(config: dict[str, Any]) -> dict[str, Any]:
    _reject_unknown(config, _WEBHOOK_KEYS)
    if "url" not in config:
        raise InvalidField(_loc("url"), "field required", "missing")
    url = _str_field(config, "url")
    problem = _url_problem(url)
    if problem:
        raise InvalidField(_loc("url"), problem)

    method = "POST"
    if "method" in config:
        method = _str_field(config, "method").upper()
        if method not in WEBHOOK_METHODS:
            raise InvalidField(_loc("method"), f"must be one of {', '.join(WEBHOOK_METHODS)}")

    headers = _validate_headers(config["headers"]) if "headers" in config else {}
    timeout = _number_field(
        config, "timeout_seconds", WEBHOOK_TIMEOUT_DEFAULT, 1, WEBHOOK_TIMEOUT_MAX
    )
    out: dict[str, Any] = {
        "url": url,
        "method": method,
        "headers": headers,
        "timeout_seconds": timeout,
    }
    if "body" in config:
        out["body"] = _json_field(config, "body")
    if "payload" in config:  # the run envelope's `payload` (when no body replaces it)
        out["payload"] = _json_field(config, "payload")
    if "secret" in config:
        out["secret"] = _validate_secret(config)
    return out


def _validate_secret(config: dict[str, Any]) -> str:
    secret = _str_field(config, "secret")
    loc = _loc("secret")
    if not secret:
        raise InvalidField(loc, "must not be empty")
    if len(secret) > SECRET_MAX:
        raise InvalidField(loc, f"must be at most {SECRET_MAX} characters")
    if secret == REDACTED:
        raise InvalidField(loc, "is the redaction placeholder; send the real secret")
    if secret.startswith("whsec_"):
        try:
            key = base64.b64decode(secret[len("whsec_") :], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidField(
                loc, "a whsec_ secret must be valid base64 after the prefix"
            ) from exc
        if not key:
            raise InvalidField(loc, "a whsec_ secret must not be empty after the prefix")
    return secret


def _validate_command(config: dict[str, Any]) -> dict[str, Any]:
    _reject_unknown(config, _COMMAND_KEYS)
    if "argv" not in config:
        raise InvalidField(_loc("argv"), "field required", "missing")
    argv = config["argv"]
    loc = _loc("argv")
    if not isinstance(argv, list):
        raise InvalidField(loc, "must be a list of strings (no shell)", "type_error")
    if not argv:
        raise InvalidField(loc, "must not be empty")
    if len(argv) > ARGV_MAX:
        raise InvalidField(loc, f"at most {ARGV_MAX} items")
    for i, arg in enumerate(argv):
        if not isinstance(arg, str):
            raise InvalidField(loc, f"item {i} must be a string", "type_error")
        if "\x00" in arg:
            raise InvalidField(loc, f"item {i} contains a NUL character")
    if not argv[0]:
        raise InvalidField(loc, "item 0 (the program) must not be empty")

    env: dict[str, str] = {}
    if "env" in config:
        raw = config["env"]
        loc = _loc("env")
        if not isinstance(raw, dict):
            raise InvalidField(loc, "must be an object of names to string values", "type_error")
        if len(raw) > ENV_MAX:
            raise InvalidField(loc, f"at most {ENV_MAX} variables")
        for name, value in raw.items():
            if not isinstance(name, str) or not _ENV_NAME_RE.fullmatch(name) or len(name) > 256:
                raise InvalidField(
                    loc, f"variable name {str(name)[:80]!r} must match [A-Za-z_][A-Za-z0-9_]*"
                )
            if not isinstance(value, str):
                raise InvalidField(loc, f"variable {name!r} must have a string value", "type_error")
            if "\x00" in value or len(value) > ENV_VALUE_MAX:
                raise InvalidField(
                    loc, f"variable {name!r} must be at most {ENV_VALUE_MAX} chars without NUL"
                )
            if value == REDACTED and _is_sensitive(name):
                raise InvalidField(
                    loc, f"variable {name!r} holds the redaction placeholder; send the real value"
                )
            env[name] = value

    out: dict[str, Any] = {"argv": list(argv), "env": env}
    if "cwd" in config:
        cwd = _str_field(config, "cwd")
        if not cwd.startswith("/") or "\x00" in cwd or len(cwd) > 4096:
            raise InvalidField(_loc("cwd"), "must be an absolute path")
        out["cwd"] = cwd
    out["timeout_seconds"] = _number_field(
        config, "timeout_seconds", COMMAND_TIMEOUT_DEFAULT, 1, COMMAND_TIMEOUT_MAX
    )
    return out


def _validate_worker(config: dict[str, Any]) -> dict[str, Any]:
    _reject_unknown(config, _WORKER_KEYS)
    if "queue" not in config:
        raise InvalidField(_loc("queue"), "field required", "missing")
    queue = _str_field(config, "queue")
    if not queue or len(queue) > QUEUE_MAX or not _QUEUE_RE.fullmatch(queue):
        raise InvalidField(
            _loc("queue"), f"must be 1..{QUEUE_MAX} characters of A-Z a-z 0-9 _ . : -"
        )
    payload = _json_field(config, "payload") if "payload" in config else None
    return {"queue": queue, "payload": payload}


def _validate_noop(config: dict[str, Any]) -> dict[str, Any]:
    _reject_unknown(config, ())
    return {}


_VALIDATORS: Final[dict[str, Callable[[dict[str, Any]], dict[str, Any]]]] = {
    "webhook": _validate_webhook,
    "command": _validate_command,
    "worker": _validate_worker,
    "noop": _validate_noop,
}


def validate_action_config(
    action_type: str, config: Any, *, allow_commands: bool
) -> dict[str, Any]:
    """Check a client's action_config; answer the normalised config with defaults filled in.

    Raises InvalidField (see the module docstring for locs, types and every rule).
    """
    if not isinstance(action_type, str) or action_type not in ACTION_TYPES:
        raise InvalidField(("body", "action_type"), f"must be one of {', '.join(ACTION_TYPES)}")
    if action_type == "command" and not allow_commands:
        raise InvalidField(
            ("body", "action_type"),
            "command actions are disabled; set [actions] allow_commands = true",
        )
    if not isinstance(config, dict):
        raise InvalidField(("body", "action_config"), "must be an object", "type_error")
    return _VALIDATORS[action_type](config)


# --------------------------------------------------------------------------- redaction


def redact_config(action_type: str, config: dict[str, Any]) -> dict[str, Any]:
    """A copy of `config` as reads show it: the webhook secret and sensitive-looking header
    and env values replaced by REDACTED. Bodies and payloads are shown as they are."""
    out = copy.deepcopy(config)
    if action_type == "webhook":
        if out.get("secret") is not None:
            out["secret"] = REDACTED
        section = "headers"
    elif action_type == "command":
        section = "env"
    else:
        return out
    values = out.get(section)
    if isinstance(values, dict):
        for name in values:
            if isinstance(name, str) and _is_sensitive(name):
                values[name] = REDACTED
    return out


def merge_redacted(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """`new` with every REDACTED put back to `old`'s value at the same place.

    The places are those `redact_config` fills: top-level values (the secret), and the
    values inside ``headers`` (names compared ignoring case) and ``env``. Bodies and
    payloads are never redacted, so a literal "********" in them is kept as sent.
    """
    out = copy.deepcopy(new)
    if not isinstance(old, dict) or not isinstance(new, dict):
        return out  # not an object: validation answers the 422, not this function
    for key, value in new.items():
        if value == REDACTED and old.get(key) is not None:
            out[key] = copy.deepcopy(old[key])
    for section, ignore_case in (("headers", True), ("env", False)):
        new_values, old_values = new.get(section), old.get(section)
        if not isinstance(new_values, dict) or not isinstance(old_values, dict):
            continue
        lookup = {str(k).lower(): v for k, v in old_values.items()} if ignore_case else old_values
        for name, value in new_values.items():
            if value != REDACTED:
                continue
            key = str(name).lower() if ignore_case else name
            if lookup.get(key) is not None:
                out[section][name] = lookup[key]
    return out


# --------------------------------------------------------------------------- placeholders


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


def _placeholder_value(name: str, ctx: RunContext) -> str | None:
    simple = _SIMPLE_PLACEHOLDERS.get(name)
    if simple is not None:
        return simple(ctx)
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
    for m in _PLACEHOLDER_RE.finditer(text):
        parts.append(text[at:m.start()])
        parts.append((m.group(1), m.group(0)))
        at = m.end()
    parts.append(text[at:])
    return tuple(parts)


_split_cached = lru_cache(maxsize=512)(_split_template)


def _substitute_text(text: str, ctx: RunContext) -> str:
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
        value = _placeholder_value(name, ctx)
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
        return _substitute_text(value, ctx)
    if isinstance(value, dict):
        return {k: substitute(v, ctx) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, ctx) for v in value]
    if isinstance(value, tuple):
        return tuple(substitute(v, ctx) for v in value)
    return value


# --------------------------------------------------------------------------- signing


def sign_webhook(secret: str, msg_id: str, timestamp_s: int, body: bytes) -> str:
    """Standard Webhooks signature: ``v1,<base64 HMAC-SHA256 of "id.timestamp.body">``.

    A ``whsec_<base64>`` secret signs with the decoded bytes, any other with its UTF-8 bytes.
    """
    if secret.startswith("whsec_"):
        key = base64.b64decode(secret[len("whsec_") :])
    else:
        key = secret.encode()
    signed = f"{msg_id}.{timestamp_s}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


# --------------------------------------------------------------------------- running


def _one_line(text: str, limit: int = MESSAGE_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _scrub(text: str) -> str:
    """Drop user info and query strings of any url quoted in an exception's text."""
    text = _URL_IN_TEXT_RE.sub(r"\1\2?...", text)
    return _USERINFO_IN_TEXT_RE.sub(r"\1", text)


def _describe(exc: BaseException) -> str:
    name = type(exc).__name__
    if isinstance(exc, aiohttp.ClientConnectorError):
        os_error = exc.os_error
        reason = getattr(os_error, "strerror", None) or str(os_error) or type(os_error).__name__
        name, text = "ConnectError", f"cannot connect to {exc.host}:{exc.port}: {reason}"
    elif isinstance(exc, ConnectError):
        text = exc.strerror or str(exc)
    elif isinstance(exc, aiohttp.ClientResponseError):
        text = f"HTTP {exc.status} {exc.message}"
    else:
        text = str(exc)
    text = _scrub(text)
    return _one_line(f"{name}: {text}" if text else name)


def _fmt_seconds(seconds: float) -> str:
    return f"{seconds:g}"


@dataclass(slots=True)
class _WebhookRequest:
    url: str
    method: str
    headers: dict[str, str]
    has_body: bool
    body: Any


def _set_header(headers: dict[str, str], name: str, value: str) -> None:
    for existing in [k for k in headers if k.lower() == name.lower()]:
        del headers[existing]
    headers[name] = value


def _envelope(ctx: RunContext) -> dict[str, Any]:
    return {
        "schedule_id": ctx.schedule_id,
        "run_id": ctx.run_id,
        "attempt": ctx.attempt,
        "scheduled_for": ctx.scheduled_for,
        "triggered_at": ctx.triggered_at,
        "trigger_type": ctx.trigger_type,
        "payload": ctx.payload,
    }


def _prepare_webhook(config: dict[str, Any], ctx: RunContext, user_agent: str) -> _WebhookRequest:
    method = str(config.get("method", "POST")).upper()
    if "body" in config:
        body = substitute(config["body"], ctx)
        has_body = body is not None
    elif method in _BODYLESS_BY_DEFAULT:
        body, has_body = None, False
    else:
        body, has_body = _envelope(ctx), True
    headers: dict[str, str] = {}
    if has_body:
        headers["Content-Type"] = "application/json"
    headers["User-Agent"] = user_agent
    headers["Idempotency-Key"] = ctx.run_id
    headers["X-Schedd-Schedule-Id"] = ctx.schedule_id
    headers["X-Schedd-Run-Id"] = ctx.run_id
    headers["X-Schedd-Attempt"] = str(ctx.attempt)
    headers["X-Schedd-Scheduled-For"] = ctx.scheduled_for
    for name, value in (config.get("headers") or {}).items():
        if _is_reserved_header(name):
            continue  # validation refuses these; a stored config cannot sneak one in
        _set_header(headers, name, _substitute_text(value, ctx))
    return _WebhookRequest(
        url=_substitute_text(str(config["url"]), ctx),
        method=method,
        headers=headers,
        has_body=has_body,
        body=body,
    )


def _redact_headers(headers: dict[str, str]) -> dict[str, str]:
    """Sensitive-looking values redacted; schedd's own headers (Idempotency-Key holds "key"
    but is the run id) are shown as sent."""
    return {
        k: (REDACTED if _is_sensitive(k) and not _is_reserved_header(k) else v)
        for k, v in headers.items()
    }


async def _read_excerpt(resp: aiohttp.ClientResponse) -> bytes:
    buf = bytearray()
    try:
        while len(buf) < EXCERPT_BYTES:
            chunk = await resp.content.read(EXCERPT_BYTES - len(buf))
            if not chunk:
                break
            buf += chunk
    except (aiohttp.ClientError, TimeoutError, OSError):
        pass  # the status decides; keep what arrived
    return bytes(buf)


class _TailProtocol(asyncio.SubprocessProtocol):
    """Keeps the last `limit` bytes of the merged output; signals exit and close."""

    def __init__(self, loop: asyncio.AbstractEventLoop, limit: int = EXCERPT_BYTES) -> None:
        self.limit = limit
        self.tail = bytearray()
        self.truncated = False
        self.exited: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()

    def pipe_data_received(self, fd: int, data: bytes | str) -> None:
        if isinstance(data, str):
            data = data.encode()
        self.tail += data
        if len(self.tail) > self.limit:
            del self.tail[: len(self.tail) - self.limit]
            self.truncated = True

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.exited.done():
            self.exited.set_result(None)
        if not self.closed.done():
            self.closed.set_result(None)

    def output_tail(self) -> str:
        data = bytes(self.tail)
        if self.truncated:
            # Do not start the tail in the middle of a UTF-8 sequence.
            skip = 0
            while skip < min(3, len(data)) and 0x80 <= data[skip] <= 0xBF:
                skip += 1
            data = data[skip:]
        return data.decode("utf-8", errors="replace")


async def _wait_done(fut: asyncio.Future[None], seconds: float) -> bool:
    """Wait up to `seconds` for `fut` without cancelling it; answer whether it is done."""
    if not fut.done():
        await asyncio.wait({fut}, timeout=seconds)
    return fut.done()


def _killpg(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def _finish_despite_cancel(aw: Awaitable[None]) -> None:
    """Run a (bounded) cleanup to its end even if the caller is cancelled again."""
    task = asyncio.ensure_future(aw)
    while not task.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(task)
    if not task.cancelled() and task.exception() is not None:
        logger.warning("command cleanup failed: %s", type(task.exception()).__name__)


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _minimal_env() -> dict[str, str]:
    env = {name: os.environ[name] for name in _INHERITED_ENV if name in os.environ}
    env.setdefault("PATH", _DEFAULT_PATH)
    return env


@lru_cache(maxsize=4096)
def _plain_http_target(url: str) -> tuple[str, int, str] | None:
    """(host, port, request target) of a plain-http url the lean client sends as written;
    None for https and for urls aiohttp would rewrite (non-ASCII, characters to escape)."""
    if not url.isascii() or _URL_AS_IS_RE.fullmatch(url) is None:
        return None
    parts = urlsplit(url)
    if parts.scheme.lower() != "http" or not parts.hostname:
        return None
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return parts.hostname, parts.port or 80, target


def _internal_error(action_type: str, exc: BaseException) -> Outcome:
    # A bug or an unforeseen library error must not kill the engine's task.
    logger.warning("%s action failed unexpectedly: %s", action_type, type(exc).__name__)
    logger.debug("unexpected action error", exc_info=exc)
    return Outcome(ok=False, error_code="internal_error", error_message=_describe(exc))


@dataclass(slots=True)
class Prepared:
    """An action resolved once for one run: what its record keeps (`resolved`) and what
    running it needs (the built webhook request)."""

    action_type: str
    config: dict[str, Any]
    ctx: RunContext
    resolved: Any
    request: _WebhookRequest | None = None
    error: BaseException | None = None


class ActionRunner:
    """Runs webhook, command and noop actions. Open it once (`async with`) for the
    daemon's lifetime: it holds the one shared aiohttp ClientSession."""

    #: Seconds between SIGTERM and SIGKILL when a command's group is ended.
    TERM_GRACE_SECONDS: float = 5.0

    def __init__(
        self,
        *,
        user_agent: str,
        max_connections: int = 100,
        follow_redirects: bool = False,
        allow_commands: bool = False,
        lean_http: bool = True,
        now_s: Callable[[], float],
    ) -> None:
        """lean_http: plain-http webhooks go through schedd.webhook_http (not when
        redirects are followed); everything else, and all with False, through aiohttp."""
        self._user_agent = user_agent
        self._max_connections = max_connections
        self._follow_redirects = follow_redirects
        self._allow_commands = allow_commands
        self._now_s = now_s
        self._session: aiohttp.ClientSession | None = None
        self._lean: LeanHttp | None = None
        self._use_lean = lean_http and not follow_redirects

    async def __aenter__(self) -> ActionRunner:
        if self._session is not None:
            raise RuntimeError("ActionRunner is already open")
        connector = aiohttp.TCPConnector(limit=self._max_connections, ttl_dns_cache=300)
        self._session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=None),
            raise_for_status=False,
        )
        if self._use_lean:
            self._lean = LeanHttp(max_connections=self._max_connections)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        session, self._session = self._session, None
        lean, self._lean = self._lean, None
        if lean is not None:
            await lean.aclose()
        if session is not None:
            await session.close()

    # ---------------------------------------------------------------- resolve

    def resolve(self, action_type: str, config: dict[str, Any], ctx: RunContext) -> Any:
        """What the action will send, kept as the run's resolved_payload (never a secret)."""
        return self._resolved(action_type, config, ctx, self._webhook_request(action_type,
                                                                              config, ctx))

    def _webhook_request(self, action_type: str, config: dict[str, Any],
                         ctx: RunContext) -> _WebhookRequest | None:
        return (_prepare_webhook(config, ctx, self._user_agent) if action_type == "webhook"
                else None)

    def _resolved(self, action_type: str, config: dict[str, Any], ctx: RunContext,
                  req: _WebhookRequest | None) -> Any:
        if req is not None:
            return {
                "url": req.url,
                "method": req.method,
                "headers": _redact_headers(req.headers),
                "body": req.body if req.has_body else None,
            }
        if action_type == "command":
            return {"argv": substitute(list(config["argv"]), ctx), "cwd": config.get("cwd")}
        if action_type == "worker":
            return substitute(config.get("payload"), ctx)
        if action_type == "noop":
            return None
        raise ValueError(f"unknown action type {action_type!r}")

    def prepare(self, action_type: str, config: dict[str, Any], ctx: RunContext) -> Prepared:
        """Resolve an action once for both its record and its run (placeholders filled,
        headers built). Never raises: a config that cannot be resolved is kept as an error
        in `resolved`, and running it fails with internal_error. An unknown action type is
        a bug of the caller and raises ValueError."""
        if action_type not in _ACTION_TYPES:
            raise ValueError(f"unknown action type {action_type!r}")
        try:
            req = self._webhook_request(action_type, config, ctx)
            return Prepared(action_type, config, ctx,
                            self._resolved(action_type, config, ctx, req), req)
        except Exception as exc:
            return Prepared(action_type, config, ctx,
                            {"error": f"cannot resolve the action: {type(exc).__name__}"},
                            None, exc)

    # ---------------------------------------------------------------- run

    async def run(self, action_type: str, config: dict[str, Any], ctx: RunContext) -> Outcome:
        """One attempt. Failures are Outcomes; only cancellation (and misuse) raises."""
        if action_type == "worker":
            raise ValueError("worker actions are handed to queues by the engine, not run here")
        return await self.run_prepared(self.prepare(action_type, config, ctx))

    async def run_prepared(self, p: Prepared) -> Outcome:
        """Run what prepare() resolved (see run())."""
        action_type = p.action_type
        if p.error is not None:
            return _internal_error(action_type, p.error)
        if action_type == "noop":
            return Outcome(ok=True)
        if action_type == "worker":
            raise ValueError("worker actions are handed to queues by the engine, not run here")
        if p.request is not None:
            session = self._session
            if session is None:
                raise RuntimeError("ActionRunner is not open (use `async with`)")
            action = self._run_webhook(session, p.config, p.ctx, p.request)
        elif action_type == "command":
            action = self._run_command(p.config, p.ctx)
        else:
            raise ValueError(f"unknown action type {action_type!r}")
        try:
            return await action
        except Exception as exc:
            return _internal_error(action_type, exc)

    async def _run_webhook(
        self,
        session: aiohttp.ClientSession,
        config: dict[str, Any],
        ctx: RunContext,
        req: _WebhookRequest,
    ) -> Outcome:
        problem = _url_problem(req.url)
        if problem:
            return Outcome(
                ok=False,
                error_code="invalid_request",
                error_message=f"url after substitution {problem}",
            )
        for name in config.get("headers") or ():
            # the config's headers, after substitution; schedd's own are built from ids,
            # numbers and timestamps and cannot hold a control character
            value = req.headers.get(name)
            problem = None if value is None else _header_value_problem(value)
            if problem:
                return Outcome(
                    ok=False,
                    error_code="invalid_request",
                    error_message=_one_line(f"header {name} after substitution {problem}"),
                )

        data = msgspec.json.encode(req.body) if req.has_body else None
        headers = dict(req.headers)
        secret = config.get("secret")
        if secret:
            timestamp = int(self._now_s())
            msg_id = ctx.attempt_root_run_id or ctx.run_id
            headers["webhook-id"] = msg_id
            headers["webhook-timestamp"] = str(timestamp)
            headers["webhook-signature"] = sign_webhook(secret, msg_id, timestamp, data or b"")

        timeout = float(config.get("timeout_seconds", WEBHOOK_TIMEOUT_DEFAULT))
        plain = _plain_http_target(req.url) if self._lean is not None else None
        try:
            if plain is not None and self._lean is not None:
                # plain http (the common case on a LAN): the lean keep-alive client, about
                # a third of aiohttp's CPU per request (bench/http_client.py)
                host, port, target = plain
                status, excerpt = await self._lean.request(
                    req.method, host, port, target, headers, data, timeout, EXCERPT_BYTES)
            else:
                async with session.request(
                    req.method,
                    req.url,
                    data=data,
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=timeout),
                    allow_redirects=self._follow_redirects,
                ) as resp:
                    status = resp.status
                    excerpt = await _read_excerpt(resp)
        except TimeoutError:
            return Outcome(
                ok=False,
                error_code="timeout",
                error_message=f"no answer within {_fmt_seconds(timeout)} s",
            )
        except aiohttp.InvalidURL:
            return Outcome(
                ok=False, error_code="invalid_request", error_message="InvalidURL: invalid url"
            )
        except aiohttp.ClientResponseError as exc:  # e.g. too many redirects
            return Outcome(ok=False, error_code="http_status", error_message=_describe(exc))
        except (aiohttp.ClientError, OSError) as exc:
            return Outcome(ok=False, error_code="connection", error_message=_describe(exc))

        result = {
            "http_status": status,
            "body_excerpt": excerpt.decode("utf-8", errors="replace"),
        }
        if 200 <= status < 300:
            return Outcome(ok=True, result=result)
        message = f"HTTP {status}"
        if 300 <= status < 400 and not self._follow_redirects:
            message += " (redirects are not followed)"
        return Outcome(ok=False, error_code="http_status", error_message=message, result=result)

    async def _run_command(self, config: dict[str, Any], ctx: RunContext) -> Outcome:
        if not self._allow_commands:
            return Outcome(
                ok=False,
                error_code="commands_disabled",
                error_message="command actions are disabled; set [actions] allow_commands = true",
            )
        argv: list[str] = substitute(list(config["argv"]), ctx)
        env = _minimal_env()
        env.update(substitute(dict(config.get("env") or {}), ctx))
        cwd: str | None = config.get("cwd")
        timeout = float(config.get("timeout_seconds", COMMAND_TIMEOUT_DEFAULT))
        if any("\x00" in s for s in [*argv, *env.values()]):
            return Outcome(
                ok=False,
                error_code="invalid_request",
                error_message="argv or env holds a NUL character after substitution",
            )

        loop = asyncio.get_running_loop()
        try:
            transport, proto = await loop.subprocess_exec(
                lambda: _TailProtocol(loop),
                *argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
                start_new_session=True,
            )
        except (OSError, ValueError) as exc:
            return Outcome(ok=False, error_code="spawn_failed", error_message=_describe(exc))

        pgid = transport.get_pid()  # start_new_session: the child leads its own group
        timed_out = False
        try:
            if await _wait_done(proto.exited, timeout):
                await self._settle_after_exit(pgid, proto)
            else:
                timed_out = True
                await self._end_group(pgid, proto)
        except asyncio.CancelledError:
            await _finish_despite_cancel(self._end_group(pgid, proto))
            raise
        finally:
            transport.close()

        returncode = transport.get_returncode()
        result = {"exit_status": returncode, "output_tail": proto.output_tail()}
        if timed_out:
            return Outcome(
                ok=False,
                error_code="timeout",
                error_message=f"timed out after {_fmt_seconds(timeout)} s; process group ended",
                result=result,
            )
        if returncode == 0:
            return Outcome(ok=True, result=result)
        if returncode is None:
            message = "exit status unknown"
        elif returncode < 0:
            message = f"killed by signal {_signal_name(-returncode)}"
        else:
            message = f"exit status {returncode}"
        return Outcome(ok=False, error_code="exit_status", error_message=message, result=result)

    async def _end_group(self, pgid: int, proto: _TailProtocol) -> None:
        """SIGTERM the process group, wait for the grace, then SIGKILL; reap the leader."""
        _killpg(pgid, signal.SIGTERM)
        if await _wait_done(proto.closed, self.TERM_GRACE_SECONDS):
            return
        _killpg(pgid, signal.SIGKILL)
        await _wait_done(proto.exited, 5.0)
        # Only a process that left the group (setsid) can still hold the pipe now.
        await _wait_done(proto.closed, 1.0)

    async def _settle_after_exit(self, pgid: int, proto: _TailProtocol) -> None:
        """The main process exited: end what it left in its group, drain the pipe."""
        if _group_alive(pgid):
            await self._end_group(pgid, proto)
        else:
            await _wait_done(proto.closed, 1.0)
