"""Action configs: validate what a client sent, and redact what reads show.

`validate_action_config` turns what a client sent into the stored, normalised config
(defaults filled in) or raises `InvalidField`. `redact_config` and `merge_redacted` hide
secrets on reads and put them back on updates.

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
"""

from __future__ import annotations

import base64
import binascii
import copy
import re
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import Any, Final
from urllib.parse import urlsplit

import msgspec

from schedd.errors import InvalidField

__all__ = [
    "ACTION_TYPES",
    "REDACTED",
    "header_value_problem",
    "is_reserved_header",
    "is_sensitive",
    "merge_redacted",
    "redact_config",
    "request_headers_problem",
    "url_problem",
    "validate_action_config",
]

ACTION_TYPES = ("webhook", "command", "worker", "noop")
REDACTED = "********"

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

_TOKEN_RE: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HEADER_VALUE_BAD_RE: Final = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_URL_BAD_RE: Final = re.compile(r"[\x00-\x20\x7f]")
_ENV_NAME_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_QUEUE_RE: Final = re.compile(r"[A-Za-z0-9_.:\-]+")

_WEBHOOK_KEYS: Final = (
    "url", "method", "headers", "body", "timeout_seconds", "secret", "payload",
)
_COMMAND_KEYS: Final = ("argv", "env", "cwd", "timeout_seconds")
_WORKER_KEYS: Final = ("queue", "payload")


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
def url_problem(url: str) -> str | None:
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


def is_reserved_header(name: str) -> bool:
    lowered = name.lower()
    return lowered in _RESERVED_HEADERS or lowered.startswith(_RESERVED_HEADER_PREFIX)


@lru_cache(maxsize=4096)
def is_sensitive(name: str) -> bool:
    lowered = name.lower()
    return lowered in _SENSITIVE_NAMES or any(part in lowered for part in _SENSITIVE_PARTS)


def header_value_problem(value: str) -> str | None:
    if len(value) > HEADER_VALUE_MAX:
        return f"is longer than {HEADER_VALUE_MAX} characters"
    if _HEADER_VALUE_BAD_RE.search(value):
        return "contains a control character (CR, LF, NUL ...)"
    return None


@lru_cache(maxsize=4096)
def _header_name_problem(name: Any) -> str | None:
    if not isinstance(name, str) or not _TOKEN_RE.fullmatch(name):
        return f"header name {str(name)[:80]!r} is not a valid HTTP token"
    if len(name) > HEADER_NAME_MAX:
        return f"header name longer than {HEADER_NAME_MAX} characters"
    return None


def request_headers_problem(headers: dict[str, str], names: Iterable[Any]) -> str | None:
    """Why the `names` headers of a built request cannot be sent, or None (SPEC §10:
    checked after placeholders are filled, whoever wrote the config). The caller passes
    the config's header names: schedd's own headers are built from ids, numbers,
    timestamps and the version, which hold no control character by construction. Never
    echoes a value."""
    for name in names:
        problem = _header_name_problem(name)
        if problem:
            return problem
        value = headers.get(name)
        if value is not None:
            problem = header_value_problem(value)
            if problem:
                return f"header {name} after substitution {problem}"
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
        if is_reserved_header(name):
            raise InvalidField(loc, f"header {name!r} is set by schedd and cannot be overridden")
        if not isinstance(value, str):
            raise InvalidField(loc, f"header {name!r} must have a string value", "type_error")
        problem = header_value_problem(value)
        if problem:
            raise InvalidField(loc, f"header {name!r} {problem}")
        if value == REDACTED and is_sensitive(name):
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
    problem = url_problem(url)
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
            if value == REDACTED and is_sensitive(name):
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
            if isinstance(name, str) and is_sensitive(name):
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

