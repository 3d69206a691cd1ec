"""A lean HTTP/1.1 client for the webhook fast path: plain ``http://`` only.

``https://`` URLs (and anything else unusual: proxies, redirects) stay on aiohttp; this
client exists because a webhook through aiohttp costs several times more CPU than the
request itself needs (see ``bench/http_client.py``).

    async with LeanHttp(max_connections=64) as http:
        status, excerpt = await http.request(
            "POST", "example.com", 80, "/hook?x=1", headers, body, timeout=30.0, excerpt=4096
        )

What it does, and what it leaves to the caller:

- One request/response per connection at a time (no pipelining), written in one piece:
  request line, ``Host`` (unless the caller gives one), the caller's headers in their
  order and casing (values encoded as UTF-8, like aiohttp), then ``Content-Length`` —
  always computed here: ``len(body)``, or ``0`` for a bodyless request whose method is
  not GET/HEAD/OPTIONS/TRACE (aiohttp's rule). A caller's own ``Content-Length`` or
  ``Transfer-Encoding`` is left out. Nothing else is added (no ``Accept``,
  ``Accept-Encoding``, ``User-Agent`` or ``Connection``). The caller validates header
  names and values; as a last defence a request whose head holds a CR, LF or NUL other
  than its line ends raises :class:`InvalidRequest` before anything is sent.
- The response is parsed by httptools (llhttp): Content-Length, chunked and
  read-until-close bodies; 1xx interim responses are skipped; HEAD, 204 and 304 have no
  body. The result is the status and at most ``excerpt`` bytes of the (undecoded) body.
  As soon as that many bytes arrived the request returns; the rest is not awaited.
- A connection goes back to the idle pool only if its response was read completely and
  allowed keep-alive; otherwise it is closed. Idle connections are kept per
  (host, port), newest reused first, and closed after ``keepalive_timeout`` seconds.
  ``max_connections`` caps open connections (busy, idle and connecting) across all
  hosts: at the cap an idle connection to another host is closed to make room, or the
  request waits for one to come free.
- A server may close an idle keep-alive connection just as it is reused. If a request
  sent on a reused connection sees the connection end before any byte of the response,
  it is sent once more on a fresh connection — when it is replayable: an idempotent
  method, or an ``Idempotency-Key`` header (the rule of Go's net/http; aiohttp retries
  idempotent methods only).
- ``timeout`` bounds the whole request (waiting for a connection, DNS, connect, send,
  response) and raises TimeoutError — except when the status line and headers already
  arrived: then the status and the part of the body read so far are returned, which is
  what aiohttp plus a tolerant body read gives.
- Failures are OSError subclasses: :class:`ConnectError` (DNS or connect),
  :class:`ServerDisconnected` (closed before the response headers were complete),
  :class:`InvalidResponse` (not parseable as HTTP/1.x). Names are resolved with the
  loop's getaddrinfo on every new connection (keep-alive makes that rare).
- ``address_check(ip)``, when given, is called for every resolved address of a new
  connection; addresses it refuses (by raising an OSError) are not connected to, and when
  it refuses them all its first error is raised as is.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Final, cast

import httptools

IDEMPOTENT_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
# Methods for which a request without a body carries no Content-Length (aiohttp's list).
_NO_LENGTH_WHEN_EMPTY: Final = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
_DROPPED_HEADERS: Final = frozenset({"content-length", "transfer-encoding"})


class ConnectError(OSError):
    """The host could not be resolved or the connection could not be opened."""

    def __init__(self, host: str, port: int, cause: OSError) -> None:
        reason = cause.strerror or str(cause) or type(cause).__name__
        super().__init__(cause.errno, f"cannot connect to {host}:{port}: {reason}")
        self.host = host
        self.port = port


class ServerDisconnected(ConnectionError):
    """The connection ended before the response's status line and headers were read."""


class InvalidResponse(ConnectionError):
    """The server's answer is not a valid HTTP/1.x response."""


class InvalidRequest(ValueError):
    """A header name or value (or the request target) holds CR, LF or NUL: nothing sent."""


class _Refused(Exception):
    """Internal: every resolved address was refused by the address check."""

    def __init__(self, error: OSError) -> None:
        self.error = error


class _NothingReceived(Exception):
    """Internal: the connection ended before any byte of the response arrived."""


_Key = tuple[str, int]


class _Conn(asyncio.Protocol):
    """One keep-alive connection; carries one request at a time."""

    __slots__ = (
        "broken",
        "busy",
        "chunks",
        "closed",
        "complete",
        "counted",
        "head",
        "headers_done",
        "idle_since",
        "interim",
        "keep_alive",
        "key",
        "limit",
        "parser",
        "pool",
        "received",
        "status",
        "taken",
        "transport",
        "used",
        "waiter",
    )

    def __init__(self, pool: LeanHttp, key: _Key) -> None:
        self.pool = pool
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.counted = False  # included in the pool's open count
        self.busy = False  # handed out to a request (not idle, not being connected)
        self.used = 0  # requests sent on this connection
        self.idle_since = 0.0
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self._reset(False, 0)

    def _reset(self, head: bool, limit: int) -> None:
        self.head = head
        self.limit = limit
        self.status = 0
        self.chunks: list[bytes] = []
        self.taken = 0
        self.received = False
        self.headers_done = False
        self.interim = False
        self.complete = False
        self.keep_alive = False
        self.broken = False

    # ------------------------------------------------------------------ requests

    def send(self, payload: bytes, head: bool, limit: int) -> asyncio.Future[tuple[int, bytes]]:
        transport = self.transport
        assert transport is not None
        self._reset(head, limit)
        self.used += 1
        waiter = self.waiter = self.pool.loop.create_future()
        if self.closed or transport.is_closing():
            waiter.set_exception(_NothingReceived())
        else:
            transport.write(payload)
        return waiter

    @property
    def reusable(self) -> bool:
        return self.complete and self.keep_alive and not self.broken and not self.closed

    def excerpt(self) -> bytes:
        return b"".join(self.chunks)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.pool._forget(self)
        if self.transport is not None:
            self.transport.close()

    # --------------------------------------------------------- protocol callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        waiter = self.waiter
        if waiter is None:  # nothing was asked: a misbehaving server
            self.close()
            return
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.broken = True  # a 101 we never asked for; its status is the answer
            self.complete = self.headers_done
        except httptools.HttpParserError as exc:
            self.broken = True
            if not waiter.done():
                if self.headers_done:  # a bad body (chunk syntax ...): keep what arrived
                    waiter.set_result((self.status, self.excerpt()))
                else:
                    waiter.set_exception(InvalidResponse(f"invalid HTTP response: {exc}"))
            self.close()
            return
        if not waiter.done() and (
            self.complete or (self.headers_done and self.taken >= self.limit)
        ):
            waiter.set_result((self.status, self.excerpt()))

    def eof_received(self) -> bool | None:
        return None  # close; connection_lost settles the request

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed:
            self.closed = True
            self.pool._forget(self)
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        if self.headers_done:  # read-until-close body, or a truncated one: keep what came
            waiter.set_result((self.status, self.excerpt()))
        elif not self.received:
            waiter.set_exception(_NothingReceived())
        else:
            waiter.set_exception(ServerDisconnected("connection closed mid-response headers"))

    # ----------------------------------------------------------- parser callbacks

    def on_message_begin(self) -> None:
        if self.complete:  # bytes after the response we asked for
            self.broken = True

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            self.interim = True  # 100 Continue, 103 Early Hints: the answer follows
            return
        self.status = status
        self.headers_done = True
        if self.head:
            # llhttp cannot be told that a HEAD response has no body: finish here and give
            # the connection a fresh parser for its next request.
            self.complete = True
            self.keep_alive = self.parser.should_keep_alive()
            self.parser = httptools.HttpResponseParser(self)

    def on_body(self, body: bytes) -> None:
        if self.complete:
            self.broken = True
            return
        room = self.limit - self.taken
        if room > 0:
            piece = body if len(body) <= room else body[:room]
            self.chunks.append(piece)
            self.taken += len(piece)

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            return
        if self.complete:
            return  # the old parser of a HEAD response
        self.complete = True
        self.keep_alive = self.parser.should_keep_alive()


class LeanHttp:
    """Keep-alive HTTP/1.1 client for plain-http webhooks; see the module docstring."""

    def __init__(self, max_connections: int = 64, keepalive_timeout: float = 15.0,
                 address_check: Callable[[str], None] | None = None) -> None:
        """address_check(ip): raise an OSError to refuse connecting to that address."""
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self._limit = max_connections
        self._address_check = address_check
        self._keepalive = keepalive_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle: dict[_Key, list[_Conn]] = {}
        self._idle_order: dict[_Conn, None] = {}  # every idle connection, oldest first
        self._conns: set[_Conn] = set()  # every open connection
        self._open = 0  # open + connecting
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    @property
    def open_connections(self) -> int:
        """Connections open or being opened (for tests and metrics)."""
        return self._open

    async def __aenter__(self) -> LeanHttp:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every connection; requests in flight fail, later ones raise RuntimeError."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for conn in list(self._conns):
            conn.close()
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)  # it wakes, sees the client closed, and raises
        await asyncio.sleep(0)  # let the transports run connection_lost

    # ------------------------------------------------------------------ request

    async def request(
        self,
        method: str,
        host: str,
        port: int,
        target: str,
        headers: dict[str, str],
        body: bytes | None,
        timeout: float,  # noqa: ASYNC109 - a total per request (a timer, or asyncio.timeout)
        excerpt: int,
    ) -> tuple[int, bytes]:
        """Send one request; return (status, first `excerpt` bytes of the body)."""
        payload, replayable = _serialize(method, host, port, target, headers, body)
        head = method == "HEAD"
        key = (host, port)
        conn = None if self._closed else self._take_idle(key)
        if conn is None:
            return await self._request(payload, replayable, head, key, timeout, excerpt, 0)
        # The common case, a keep-alive connection ready: nothing to wait for but the
        # answer, so the deadline is a timer that fails the answer's future (what
        # asyncio.timeout does for the general path below, at a third of its cost).
        loop = self.loop
        timer: asyncio.TimerHandle | None = None
        try:
            answer = conn.send(payload, head, excerpt)
            timer = loop.call_later(timeout, _expire, answer)
            return await answer
        except _NothingReceived:
            if not replayable:
                raise ServerDisconnected("server closed the connection without answering"
                                         ) from None
        except TimeoutError:
            if conn.headers_done:
                return conn.status, conn.excerpt()
            raise
        finally:
            if timer is not None:
                timer.cancel()
            self._release(conn)
        # a stale keep-alive connection: once more on a fresh one, in the time left
        left = timer.when() - loop.time() if timer is not None else timeout
        return await self._request(payload, replayable, head, key, max(0.0, left), excerpt, 1)

    async def _request(self, payload: bytes, replayable: bool, head: bool, key: _Key,
                       timeout: float,  # noqa: ASYNC109 - applied with asyncio.timeout
                       excerpt: int, first: int) -> tuple[int, bytes]:
        """request() when no idle connection was ready (first=0), or its replay (first=1):
        waits for a connection under asyncio.timeout."""
        conn: _Conn | None = None
        try:
            async with asyncio.timeout(timeout):
                for attempt in (0, 1)[first:]:
                    conn = await self._acquire(key, fresh=attempt > 0)
                    reused = conn.used > 0
                    try:
                        return await conn.send(payload, head, excerpt)
                    except _NothingReceived:
                        if attempt == 0 and reused and replayable:
                            self._release(conn)
                            conn = None
                            continue
                        raise ServerDisconnected(
                            "server closed the connection without answering"
                        ) from None
                raise AssertionError("unreachable")
        except TimeoutError:
            if conn is not None and conn.headers_done:
                return conn.status, conn.excerpt()
            raise
        finally:
            if conn is not None:
                self._release(conn)

    # --------------------------------------------------------------- the pool

    async def _acquire(self, key: _Key, fresh: bool) -> _Conn:
        while True:
            if self._closed:
                raise RuntimeError("LeanHttp is closed")
            if not fresh:
                idle_conn = self._take_idle(key)
                if idle_conn is not None:
                    return idle_conn
            if self._open < self._limit:
                return await self._connect(key)
            if self._idle_order:  # at the cap: make room by closing the oldest idle one
                next(iter(self._idle_order)).close()
                continue
            fut = self.loop.create_future()
            self._waiters.append(fut)
            try:
                await fut
            except asyncio.CancelledError:
                if fut.done() and not fut.cancelled():
                    self._wake()  # pass on the turn this waiter was given
                raise

    def _take_idle(self, key: _Key) -> _Conn | None:
        """The newest idle open connection to `key`, now busy; None if there is none."""
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            del self._idle_order[conn]
            if not conn.closed:
                conn.busy = True
                return conn
        return None

    async def _connect(self, key: _Key) -> _Conn:
        host, port = key
        conn = _Conn(self, key)
        conn.counted = True
        self._open += 1
        self._conns.add(conn)
        try:
            if self._address_check is None:
                transport, _ = await self.loop.create_connection(lambda: conn, host, port)
            else:
                transport = await self._connect_checked(conn, host, port, self._address_check)
        except _Refused as refused:
            conn.close()
            raise refused.error from None
        except OSError as exc:
            conn.close()
            raise ConnectError(host, port, exc) from exc
        except BaseException:
            conn.close()  # also a connection that completed as we were cancelled
            raise
        if self._closed:
            conn.close()
            raise RuntimeError("LeanHttp is closed")
        conn.transport = transport
        if conn.closed:  # lost already, before we got here
            conn.close()
            raise ServerDisconnected("connection closed as it was opened")
        conn.busy = True
        return conn

    async def _connect_checked(self, conn: _Conn, host: str, port: int,
                               check: Callable[[str], None]) -> asyncio.Transport:
        """Resolve `host` here (not in create_connection), keep the addresses `check`
        accepts, and connect to the first of them that answers: the address checked is
        the address connected to."""
        loop = self.loop
        if _is_ip_literal(host):
            addresses = [host]
        else:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        permitted: list[str] = []
        refusal: OSError | None = None
        for address in addresses:
            try:
                check(address)
            except OSError as exc:
                refusal = refusal or exc
                continue
            permitted.append(address)
        if not permitted:
            raise _Refused(refusal or OSError(f"{host} resolved to no address"))
        error: OSError | None = None
        for address in permitted:
            try:
                transport, _ = await loop.create_connection(lambda: conn, address, port)
                return transport
            except OSError as exc:
                error = exc
        assert error is not None
        raise error

    def _release(self, conn: _Conn) -> None:
        if not conn.busy:
            return
        conn.busy = False
        waiter, conn.waiter = conn.waiter, None
        if waiter is not None and waiter.done() and not waiter.cancelled():
            waiter.exception()  # mark it retrieved, should a cancel have raced the answer
        if not conn.reusable or self._closed:
            conn.close()
            return
        conn.idle_since = self.loop.time()
        self._idle.setdefault(conn.key, []).append(conn)
        self._idle_order[conn] = None
        if self._sweeper is None:
            self._sweeper = self.loop.call_at(conn.idle_since + self._keepalive, self._sweep)
        self._wake()

    def _forget(self, conn: _Conn) -> None:
        """`conn` has closed (either side): uncount it and free its slot."""
        self._conns.discard(conn)
        if not conn.counted:
            return
        conn.counted = False
        self._open -= 1
        if conn in self._idle_order:
            del self._idle_order[conn]
            self._idle[conn.key].remove(conn)
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    def _sweep(self) -> None:
        self._sweeper = None
        deadline = self.loop.time() - self._keepalive
        for conn in list(self._idle_order):
            if conn.idle_since > deadline:
                self._sweeper = self.loop.call_at(conn.idle_since + self._keepalive, self._sweep)
                return
            conn.close()


def _expire(answer: asyncio.Future[tuple[int, bytes]]) -> None:
    if not answer.done():
        answer.set_exception(TimeoutError())


def _serialize(
    method: str,
    host: str,
    port: int,
    target: str,
    headers: dict[str, str],
    body: bytes | None,
) -> tuple[bytes, bool]:
    """The request head (+ body) as bytes, and whether it may be sent twice."""
    lines = [f"{method} {target} HTTP/1.1\r\n"]
    has_host = False
    replayable = method in IDEMPOTENT_METHODS
    for name, value in headers.items():
        lower = name.lower()
        if lower in _DROPPED_HEADERS:
            continue
        if lower == "host":
            has_host = True
        elif lower == "idempotency-key":
            replayable = True
        lines.append(f"{name}: {value}\r\n")
    if not has_host:
        lines.insert(1, f"Host: {_host_header(host, port)}\r\n")
    if body is not None:
        lines.append(f"Content-Length: {len(body)}\r\n\r\n")
    elif method not in _NO_LENGTH_WHEN_EMPTY:
        lines.append("Content-Length: 0\r\n\r\n")
    else:
        lines.append("\r\n")
    head = "".join(lines)
    # Every line ends in the one CRLF put there above, the last one twice: any other CR,
    # LF or NUL came from a header name or value (or the target), and would split the
    # request (header injection, request smuggling). The caller checks first; this is
    # the last line of defence, three C scans of the head.
    breaks = len(lines) + (lines[-1] != "\r\n")
    if head.count("\n") != breaks or head.count("\r") != breaks or "\x00" in head:
        raise InvalidRequest("a header name or value holds CR, LF or NUL")
    data = head.encode("utf-8")
    return (data + body if body else data), replayable


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return False
    return True


def _host_header(host: str, port: int) -> str:
    if not host.isascii():
        with contextlib.suppress(UnicodeError):
            host = host.encode("idna").decode("ascii")
    if ":" in host:
        host = f"[{host}]"  # an IPv6 literal
    return host if port == 80 else f"{host}:{port}"
