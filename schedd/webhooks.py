"""Webhooks: build the request (placeholders filled), sign it, send it, read the answer.

`build_request` resolves a webhook once per run (the engine keeps its redacted form as the
run's resolved_payload); `WebhookSender.send` performs one attempt. Plain ``http://`` urls
go through the lean keep-alive client (schedd/webhook_http.py) unless it is off or
redirects are followed; everything else through one shared aiohttp ClientSession.

Decisions (the spec leaves these open):
- Request headers, in this order: ``Content-Type: application/json`` (only when a body is
  sent), ``User-Agent``, ``Idempotency-Key`` (run id), ``X-Schedd-Schedule-Id``,
  ``X-Schedd-Run-Id``, ``X-Schedd-Attempt``, ``X-Schedd-Scheduled-For`` (and
  ``X-Schedd-Record-Key`` for a record's run), then the config's
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
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from types import TracebackType
from typing import Any, Final
from urllib.parse import quote, urlsplit

import aiohttp
import msgspec

from schedd.action_config import (
    REDACTED,
    WEBHOOK_TIMEOUT_DEFAULT,
    is_reserved_header,
    is_sensitive,
    request_headers_problem,
    url_problem,
)
from schedd.netpolicy import ForbiddenAddress, NetworkPolicy
from schedd.outcomes import EXCERPT_BYTES, Outcome, RunContext, describe, fmt_seconds, one_line
from schedd.templates import substitute, substitute_text
from schedd.webhook_http import ConnectError, InvalidRequest, LeanHttp

__all__ = [
    "WebhookRequest",
    "WebhookSender",
    "build_request",
    "read_excerpt",
    "redacted_request",
    "sign_webhook",
]

_BODYLESS_BY_DEFAULT: Final = frozenset({"GET", "DELETE"})
# A url sent as written by the lean client: RFC 3986 characters only (aiohttp would
# percent-encode anything else, so such urls stay on aiohttp and are sent as before).
_URL_AS_IS_RE: Final = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]*")


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


# --------------------------------------------------------------------------- building


@dataclass(slots=True)
class WebhookRequest:
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
    env = {
        "schedule_id": ctx.schedule_id,
        "run_id": ctx.run_id,
        "attempt": ctx.attempt,
        "scheduled_for": ctx.scheduled_for,
        "triggered_at": ctx.triggered_at,
        "trigger_type": ctx.trigger_type,
        "payload": ctx.payload,
    }
    if ctx.record_key is not None:
        env["record"] = {"key": ctx.record_key, "data": ctx.record}
    return env


def record_key_header(key: str) -> str:
    """X-Schedd-Record-Key: the key percent-encoded as UTF-8 (RFC 3986; letters, digits and
    -._~ stay as they are), so that any key makes a valid header value."""
    return quote(key, safe="")


def build_request(config: dict[str, Any], ctx: RunContext, user_agent: str) -> WebhookRequest:
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
    if ctx.record_key is not None:
        headers["X-Schedd-Record-Key"] = record_key_header(ctx.record_key)
    for name, value in (config.get("headers") or {}).items():
        if is_reserved_header(name):
            continue  # validation refuses these; a stored config cannot sneak one in
        _set_header(headers, name, substitute_text(value, ctx))
    return WebhookRequest(
        url=substitute_text(str(config["url"]), ctx),
        method=method,
        headers=headers,
        has_body=has_body,
        body=body,
    )


def _redact_headers(headers: dict[str, str]) -> dict[str, str]:
    """Sensitive-looking values redacted; schedd's own headers (Idempotency-Key holds "key"
    but is the run id) are shown as sent."""
    return {
        k: (REDACTED if is_sensitive(k) and not is_reserved_header(k) else v)
        for k, v in headers.items()
    }



def redacted_request(req: WebhookRequest) -> dict[str, Any]:
    """The run's resolved_payload: what will be sent, sensitive header values redacted and
    without the signature headers (they depend on the send time)."""
    return {
        "url": req.url,
        "method": req.method,
        "headers": _redact_headers(req.headers),
        "body": req.body if req.has_body else None,
    }


# --------------------------------------------------------------------------- sending


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


def _forbidden(exc: ForbiddenAddress, url: str = "", where: str = "") -> Outcome:
    """forbidden_address, naming the host, the address and the rule (never a query)."""
    if not where:
        try:
            parts = urlsplit(url)
            where = f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"
        except ValueError:
            where = "the host"
    return Outcome(ok=False, error_code="forbidden_address",
                   error_message=one_line(f"ForbiddenAddress: will not connect to {where}: "
                                          f"{exc.describe()}"))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        os_error = exc.os_error
        reason = getattr(os_error, "strerror", None) or str(os_error) or type(os_error).__name__
        return describe(exc, "ConnectError", f"cannot connect to {exc.host}:{exc.port}: {reason}")
    if isinstance(exc, ConnectError):
        return describe(exc, text=exc.strerror or str(exc))
    if isinstance(exc, aiohttp.ClientResponseError):
        return describe(exc, text=f"HTTP {exc.status} {exc.message}")
    return describe(exc)


async def read_excerpt(resp: aiohttp.ClientResponse) -> bytes:
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


class _Gate:
    """Requests in flight to one host (scheme, name, port), and those waiting for one."""

    __slots__ = ("active", "waiters")

    def __init__(self) -> None:
        self.active = 0
        self.waiters: deque[asyncio.Future[None]] = deque()

    def wake_one(self) -> bool:
        """Give the turn to the first live waiter; False when there is none."""
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return True
        return False


_IDLE_GATES_KEPT: Final = 1024


@lru_cache(maxsize=4096)
def _gate_key(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        port = 0
    return scheme, (parts.hostname or ""), port


class WebhookSender:
    """Sends webhook requests. Open it once (`async with`) for the daemon's lifetime: it
    holds the one shared aiohttp ClientSession and the lean client's pool."""

    def __init__(
        self,
        *,
        max_connections: int = 256,
        max_per_host: int = 64,
        follow_redirects: bool = False,
        lean_http: bool = True,
        policy: NetworkPolicy | None = None,
        now_s: Callable[[], float],
    ) -> None:
        """lean_http: plain-http webhooks go through schedd.webhook_http (not when
        redirects are followed); everything else, and all with False, through aiohttp.
        policy: checked on the resolved address of every new connection, in both
        clients (None: no check)."""
        self._policy = policy
        self._max_connections = max_connections
        self._per_host = max_per_host
        self._gates: dict[tuple[str, str, int], _Gate] = {}
        #: called with the run id when a request must wait for one of its host's slots
        self.on_wait: Callable[[str], None] | None = None
        self._follow_redirects = follow_redirects
        self._now_s = now_s
        self._session: aiohttp.ClientSession | None = None
        self._lean: LeanHttp | None = None
        self._use_lean = lean_http and not follow_redirects

    @property
    def is_open(self) -> bool:
        return self._session is not None

    async def __aenter__(self) -> WebhookSender:
        if self._session is not None:
            raise RuntimeError("WebhookSender is already open")
        policy = self._policy
        connector = aiohttp.TCPConnector(
            limit=self._max_connections, limit_per_host=self._per_host, ttl_dns_cache=300,
            # called for every address aiohttp connects to, IP literals and redirects too
            socket_factory=policy.socket_factory if policy is not None else None)
        self._session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=None),
            raise_for_status=False,
        )
        if self._use_lean:
            self._lean = LeanHttp(max_connections=self._max_connections,
                                  address_check=policy.check if policy is not None else None)
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

    async def _wait_for_gate(self, gate: _Gate, run_id: str, seconds: float) -> float | None:
        """Wait for a slot of `gate`; answer the time left of `seconds`, None when they ran
        out first."""
        if self.on_wait is not None:
            self.on_wait(run_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while gate.active >= self._per_host:
            fut: asyncio.Future[None] = loop.create_future()
            gate.waiters.append(fut)
            try:
                async with asyncio.timeout_at(deadline):
                    await fut
            except (TimeoutError, asyncio.CancelledError) as exc:
                if fut.done() and not fut.cancelled():
                    gate.wake_one()  # pass on the turn this waiter was given
                if isinstance(exc, TimeoutError):
                    return None
                raise
        return max(0.0, deadline - loop.time())

    def _drop_idle_gate(self, key: tuple[str, str, int], gate: _Gate) -> None:
        if not gate.active and not any(not f.done() for f in gate.waiters):
            self._gates.pop(key, None)

    def _sweep_gates(self) -> None:
        """Forget the gates of hosts with nothing in flight (they are kept while there
        are few: a gate per request would cost more than the request's bookkeeping)."""
        for key, gate in list(self._gates.items()):
            if not gate.active and not any(not f.done() for f in gate.waiters):
                del self._gates[key]

    async def send(self, config: dict[str, Any], ctx: RunContext,
                   req: WebhookRequest) -> Outcome:
        """One attempt of a built request. Failures are Outcomes; only cancellation raises
        (and RuntimeError when the sender is not open)."""
        session = self._session
        if session is None:
            raise RuntimeError("ActionRunner is not open (use `async with`)")
        problem = url_problem(req.url)
        if problem:
            return Outcome(
                ok=False,
                error_code="invalid_request",
                error_message=f"url after substitution {problem}",
            )
        names = config.get("headers")
        if names:
            problem = request_headers_problem(req.headers, names)
            if problem:
                return Outcome(ok=False, error_code="invalid_request",
                               error_message=one_line(problem))

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
        # at most per_host requests to one host at a time (a host that hangs keeps only
        # those connections); the others wait here, without a connection, and tell the
        # engine they wait (they stop counting against max_concurrent_actions)
        key = _gate_key(req.url)
        gate = self._gates.get(key)
        if gate is None:
            gate = self._gates[key] = _Gate()
        request_timeout = timeout
        if gate.active >= self._per_host:
            left = await self._wait_for_gate(gate, ctx.run_id, timeout)
            if left is None:
                self._drop_idle_gate(key, gate)
                return Outcome(
                    ok=False,
                    error_code="timeout",
                    error_message=f"no answer within {fmt_seconds(timeout)} s (all "
                                  f"{self._per_host} connections to the host were busy)",
                )
            request_timeout = left
        gate.active += 1
        try:
            plain = _plain_http_target(req.url) if self._lean is not None else None
            try:
                if plain is not None and self._lean is not None:
                    # plain http (the common case on a LAN): the lean keep-alive client, about
                    # a third of aiohttp's CPU per request (bench/http_client.py)
                    host, port, target = plain
                    status, excerpt = await self._lean.request(
                        req.method, host, port, target, headers, data, request_timeout,
                        EXCERPT_BYTES)
                else:
                    async with session.request(
                        req.method,
                        req.url,
                        data=data,
                        headers=headers,
                        timeout=aiohttp.ClientTimeout(total=request_timeout),
                        allow_redirects=self._follow_redirects,
                    ) as resp:
                        status = resp.status
                        excerpt = await read_excerpt(resp)
            except TimeoutError:
                return Outcome(
                    ok=False,
                    error_code="timeout",
                    error_message=f"no answer within {fmt_seconds(timeout)} s",
                )
            except aiohttp.InvalidURL:
                return Outcome(
                    ok=False, error_code="invalid_request", error_message="InvalidURL: invalid url"
                )
            except aiohttp.TooManyRedirects as exc:
                return Outcome(ok=False, error_code="http_status", error_message=_describe(exc))
            except aiohttp.ClientResponseError as exc:
                # raise_for_status is off: any other one means the answer was not HTTP (aiohttp
                # reports a bad status line as a 400 the receiver never sent); named like the
                # lean client's InvalidResponse
                return Outcome(ok=False, error_code="connection",
                               error_message=describe(exc, "InvalidResponse",
                                                      f"invalid HTTP response: {exc.message}"))
            except ForbiddenAddress as exc:  # the lean client
                return _forbidden(exc, url=req.url)
            except InvalidRequest:  # the lean client's last defence; checked above first
                return Outcome(ok=False, error_code="invalid_request",
                               error_message="a header holds CR, LF or NUL")
            except aiohttp.ClientConnectorError as exc:
                if isinstance(exc.os_error, ForbiddenAddress):
                    # the connection's host: a redirect's, when one was followed
                    return _forbidden(exc.os_error, where=f"{exc.host}:{exc.port}")
                return Outcome(ok=False, error_code="connection", error_message=_describe(exc))
            except (aiohttp.ClientError, OSError) as exc:
                return Outcome(ok=False, error_code="connection", error_message=_describe(exc))
        finally:
            gate.active -= 1
            if gate.waiters:
                gate.wake_one()
            elif not gate.active and len(self._gates) > _IDLE_GATES_KEPT:
                self._sweep_gates()

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
