"""The one place that maps errors to HTTP. Every answer that is not a success has a
`detail`: a list of {loc, msg, type} for 422, a string otherwise. Nothing a client sends
may produce a 500; an unexpected exception is logged and answers a bare 500."""

from __future__ import annotations

import logging
import re
from typing import Any

import msgspec
from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, ValidationException

from schedd.errors import Conflict, InvalidField, NotFound, StorageUnavailable, Unauthorized

log = logging.getLogger("schedd.api")

_TYPES = [  # msgspec message -> pydantic-style error type
    (re.compile(r"^Object missing required field `([^`]*)`"), "missing"),
    (re.compile(r"^Object contains unknown field `([^`]*)`"), "extra_forbidden"),
    (re.compile(r"^Expected `str` of length <= "), "string_too_long"),
    (re.compile(r"^Expected `str` of length >= "), "string_too_short"),
    (re.compile(r"^Expected `array` of length <= "), "too_long"),
    (re.compile(r"^Expected `array` of length >= "), "too_short"),
    (re.compile(r"^Expected `(int|float|number)` >= "), "greater_than_equal"),
    (re.compile(r"^Expected `(int|float|number)` > "), "greater_than"),
    (re.compile(r"^Expected `(int|float|number)` <= "), "less_than_equal"),
    (re.compile(r"^Expected `(int|float|number)` < "), "less_than"),
    (re.compile(r"^Expected `str` matching regex"), "string_pattern_mismatch"),
    (re.compile(r"^Invalid enum value"), "enum"),
    (re.compile(r"^Invalid UUID"), "uuid_parsing"),
    (re.compile(r"^Expected `(\w+)`, got `(\w+)`"), "type_error"),
]
_PART = re.compile(r"\.([A-Za-z_][\w-]*)|\[(\d+)\]|\[([^\]]+)\]")
# Litestar's own wording for a parameter the request lacks.
_MISSING_PARAM = re.compile(r"^Missing required (\w+) parameter '([^']*)'")


def _loc(key: str) -> list[Any]:
    key = key.removeprefix("$")
    if key and not key.startswith((".", "[")):
        key = "." + key
    return [m[1] or (int(m[2]) if m[2] else m[3]) for m in _PART.finditer(key)]


def _item(msg: str, source: str, key: str | None) -> dict[str, Any]:
    loc: list[Any] = [source] + (_loc(key) if key and key != "data" else [])
    typ = "value_error"
    for rx, t in _TYPES:
        if m := rx.search(msg):
            typ = t
            if t in ("missing", "extra_forbidden"):
                loc.append(m.group(1))  # msgspec points at the parent object
            break
    return {"loc": loc, "msg": msg, "type": typ}


def _detail(status: int, detail: Any, headers: dict[str, str] | None = None) -> Response[Any]:
    return Response(
        {"detail": detail}, status_code=status, headers=headers, media_type=MediaType.JSON
    )


def _extra_item(e: dict[str, Any]) -> dict[str, Any]:
    msg = str(e.get("message", ""))
    source = str(getattr(s := e.get("source", "body"), "value", s) or "body")
    key = e.get("key")
    if key == "data" and msg == "'data'":
        # No body at all: Litestar reports the KeyError of its `data` kwarg.
        return {"loc": ["body"], "msg": "Field required", "type": "missing"}
    return _item(msg, source, key)


def validation_handler(request: Request[Any, Any, Any], exc: ValidationException) -> Response[Any]:
    extra = exc.extra if isinstance(exc.extra, list) else []
    detail = [_extra_item(e) for e in extra if isinstance(e, dict)]
    if not detail and (m := _MISSING_PARAM.match(str(exc.detail))):
        detail = [{"loc": [m[1], m[2]], "msg": "Field required", "type": "missing"}]
    if not detail:
        text = str(exc.detail)
        typ = "json_invalid" if "JSON is malformed" in text or "malformed" in text else (
            "value_error")
        detail = [{"loc": ["body"], "msg": text, "type": typ}]
    return _detail(422, detail)


def body_error_item(exc: msgspec.ValidationError) -> dict[str, Any]:
    """The 422 item of a body that failed to decode (the console shows the same message)."""
    msg, _, path = str(exc).partition(" - at `")
    return _item(msg, "body", path.rstrip("`") or None)


def msgspec_handler(request: Request[Any, Any, Any], exc: msgspec.ValidationError) -> Response[Any]:
    return _detail(422, [body_error_item(exc)])


def http_handler(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    if exc.status_code == 400:
        # Litestar answers a body it cannot parse (malformed JSON, wrong content) with 400.
        return _detail(422, [{"loc": ["body"], "msg": str(exc.detail), "type": "json_invalid"}])
    headers = dict(exc.headers or {})
    return _detail(exc.status_code, str(exc.detail), headers)


def invalid_field_handler(request: Request[Any, Any, Any], exc: InvalidField) -> Response[Any]:
    return _detail(422, [{"loc": exc.loc, "msg": exc.msg, "type": exc.type}])


def not_found_handler(request: Request[Any, Any, Any], exc: NotFound) -> Response[Any]:
    return _detail(404, f"{exc.what} not found")


def conflict_handler(request: Request[Any, Any, Any], exc: Conflict) -> Response[Any]:
    return _detail(409, str(exc))


def unauthorized_handler(request: Request[Any, Any, Any], exc: Unauthorized) -> Response[Any]:
    return _detail(401, str(exc), {"WWW-Authenticate": "Bearer"})


def recursion_handler(request: Request[Any, Any, Any], exc: RecursionError) -> Response[Any]:
    # Only a client's document nests deeply enough for this (decoding it, mostly): a 422.
    log.warning("nesting too deep on %s %s", request.method, request.url.path)
    return _detail(422, [{"loc": ["body"], "msg": "JSON is nested too deeply",
                          "type": "json_invalid"}])


def unicode_handler(request: Request[Any, Any, Any], exc: UnicodeError) -> Response[Any]:
    # msgspec raises UnicodeDecodeError for a string that is not UTF-8 (a raw surrogate).
    return _detail(422, [{"loc": ["body"], "msg": "JSON is malformed: invalid UTF-8",
                          "type": "json_invalid"}])


def storage_handler(request: Request[Any, Any, Any], exc: StorageUnavailable) -> Response[Any]:
    # Nothing of the request was kept; the daemon logged the fault once and /readyz says it.
    return _detail(503, f"The database cannot be written right now ({exc.kind}); nothing was "
                        "changed, try again later", {"Retry-After": "5"})


def internal_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return _detail(500, "Internal Server Error")


EXCEPTION_HANDLERS: dict[Any, Any] = {
    ValidationException: validation_handler,
    msgspec.ValidationError: msgspec_handler,
    InvalidField: invalid_field_handler,
    NotFound: not_found_handler,
    Conflict: conflict_handler,
    Unauthorized: unauthorized_handler,
    StorageUnavailable: storage_handler,
    HTTPException: http_handler,
    RecursionError: recursion_handler,
    UnicodeDecodeError: unicode_handler,
    Exception: internal_handler,
}
