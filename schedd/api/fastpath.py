"""A lean path in front of Litestar for the two hottest, well-defined requests:
`POST /v1/schedules` (create) and `GET /v1/schedules/{id}` (read one).

Why: under 16 keep-alive clients creating schedules, Litestar's request path (scope set-up,
routing, guards, the kwargs and signature models, the response object) was ~65% of the
daemon's CPU per create (bench/RESULTS.md §S5). This path does only what these two
requests need, with the same pieces: the same API-key check (`Services.authenticate_key`),
the same JSON decoding and conversion Litestar applies to the body (`msgspec` decode, then
`convert(strict=False, str_keys=True)` into the same `ScheduleCreate`), the same service
call, the same `ScheduleOut`, encoded by the same encoder, with the same headers.

It only ever answers a SUCCESS. Anything unusual goes to Litestar untouched, which then
answers exactly as it always did (every 401, 422, 404, 413, 503 keeps its shape):
a path with a query string or a root path, a duplicate or missing header, a body without
a Content-Length or over the limit, a content type other than JSON, a body that does not
decode, a key that does not authenticate, and any error the service raises. A request
that falls through after its body was read gets the body replayed to Litestar. The key
is checked before the body is read, as Litestar's guard runs before its body parsing. What the
key check or the create raised is left in the request's scope state, and Litestar's guard
and handler raise it again instead of doing the work twice (`_failed_once`), so the
request Litestar then handles is the client's one request, done once.
`docs/api.md` ("How requests are served") says the same for users.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import msgspec
from litestar import Litestar
from litestar.serialization import default_serializer

from schedd.api.common import AUTH_FAILED, schedule_out
from schedd.api.schedules import CREATE_FAILED, create_fields
from schedd.api.schemas import ScheduleCreate
from schedd.auth import token_from_headers
from schedd.services import Services

log = logging.getLogger("schedd.api")

CREATE_PATH = "/v1/schedules"
_ONE = re.compile(r"/v1/schedules/([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-"
                  r"[0-9a-f]{12})\Z")
# Litestar's own JSON decoder and encoder settings (litestar.serialization.msgspec_hooks)
_DECODE = msgspec.json.Decoder()
_ENCODE = msgspec.json.Encoder(enc_hook=default_serializer)
_JSON_TYPE = b"application/json"
_INTERNAL = _ENCODE.encode({"detail": "Internal Server Error"})

Scope = dict[str, Any]
Receive = Any
Send = Any


def _headers(scope: Scope) -> dict[bytes, bytes] | None:
    """The headers this path reads, or None when one of them comes twice (Litestar then
    decides which counts) or the body is chunked."""
    found: dict[bytes, bytes] = {}
    for name, value in scope["headers"]:
        name = name.lower()
        if name in (b"authorization", b"x-api-key", b"content-type", b"content-length"):
            if name in found:
                return None
            found[name] = value
        elif name == b"transfer-encoding":
            return None
    return found


def _token(h: dict[bytes, bytes]) -> str | None:
    auth, key = h.get(b"authorization"), h.get(b"x-api-key")
    return token_from_headers(None if auth is None else auth.decode("latin-1"),
                              None if key is None else key.decode("latin-1"))


def _replay(body: bytes, receive: Receive, last: Any = None) -> Receive:
    """A receive that hands Litestar the body already read (then `last`, a message already
    taken, e.g. the client's disconnect), then the client's own."""
    pending = [] if last is None else [last]
    if body or last is None:
        pending.insert(0, {"type": "http.request", "body": body, "more_body": last is not None})

    async def again() -> Any:
        if pending:
            return pending.pop(0)
        return await receive()

    return again


def _failed_once(scope: Scope, key: str, exc: Exception) -> None:
    """What the service raised for this request, for Litestar's route to raise again (the
    key check in api_key_guard, the create in schedules.create_schedule) instead of doing
    it a second time: a refused write is then tried, counted and logged once, as without
    this path, and a fault that is over by a second attempt cannot turn the 503 a plain
    Litestar route answers into a success (nor a failure after a commit into two creates)."""
    scope.setdefault("state", {})[key] = exc


async def _answer(send: Send, status: int, body: bytes) -> None:
    """The same two messages (and headers, in the same order) Litestar sends for a JSON
    answer."""
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", _JSON_TYPE),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _failed(send: Send, method: str, path: str, exc: Exception) -> None:
    """After a commit nothing may fall through (it would create twice): an error here
    (there is none to expect) answers what Litestar's handler of last resort answers."""
    log.error("unhandled error on %s %s", method, path, exc_info=exc)
    await _answer(send, 500, _INTERNAL)


class App(Litestar):
    """schedd's Litestar app, with the fast path (module docstring) in front of it."""

    #: off: every request goes through Litestar (tests compare the two, byte for byte)
    fast_path = True

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and self.fast_path and not scope.get("root_path") \
                and not scope.get("query_string") and not self.before_send:
            method, path = scope["method"], scope["path"]
            if method == "POST" and path == CREATE_PATH:
                receive = await self._create(scope, receive, send)
                if receive is None:
                    return
            elif method == "GET" and (m := _ONE.match(path)) is not None \
                    and await self._get_one(scope, send, m[1]):
                return
        await super().__call__(scope, receive, send)

    def _services(self) -> Services | None:
        svc: Services | None = self.state.get("services")
        return svc

    async def _create(self, scope: Scope, receive: Receive, send: Send) -> Receive | None:
        """None when answered; otherwise the receive Litestar must use."""
        svc = self._services()
        h = _headers(scope)
        if svc is None or h is None:
            return receive
        ctype = h.get(b"content-type", b"").lower()
        if ctype != _JSON_TYPE and not ctype.startswith(b"application/json;"):
            return receive
        length = h.get(b"content-length", b"")
        if not length.isdigit() or not 0 < int(length) <= self.request_max_body_size:  # type: ignore[operator]
            return receive
        # the key first, as Litestar's guard comes before its body parsing: a request
        # without a valid key has nothing of its body read or decoded here either
        try:
            _, tenant = await svc.authenticate_key(_token(h))
        except Exception as exc:
            _failed_once(scope, AUTH_FAILED, exc)
            return receive
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                # the client went away: Litestar sees the same (its body read ends there)
                return _replay(b"".join(chunks), receive, message)
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if len(body) != int(length):
            return _replay(body, receive)
        try:
            data = msgspec.convert(_DECODE.decode(body), ScheduleCreate, strict=False,
                                   str_keys=True)
        except Exception:
            return _replay(body, receive)
        try:
            # as schedules.create_schedule does
            s, created = await svc.create_schedule(tenant, create_fields(data))
        except Exception as exc:
            _failed_once(scope, CREATE_FAILED, exc)
            return _replay(body, receive)
        try:
            out = _ENCODE.encode(schedule_out(svc, s))
        except Exception as exc:
            await _failed(send, "POST", CREATE_PATH, exc)
            return None
        await _answer(send, 201 if created else 200, out)
        return None

    async def _get_one(self, scope: Scope, send: Send, schedule_id: str) -> bool:
        """True when answered (a schedule of the key's tenant exists)."""
        svc = self._services()
        h = _headers(scope)
        if svc is None or h is None:
            return False
        try:
            _, tenant = await svc.authenticate_key(_token(h))
        except Exception as exc:
            _failed_once(scope, AUTH_FAILED, exc)
            return False
        try:
            s = await svc.get_schedule(tenant, schedule_id)
            out = _ENCODE.encode(schedule_out(svc, s))
        except Exception:
            return False  # Litestar answers it (401, 404, 503), reading again
        await _answer(send, 200, out)
        return True
