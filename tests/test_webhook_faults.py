"""Webhook receivers that misbehave on purpose (issue 12 §3), through both HTTP clients:
each fault ends the attempt with a clear error_code and message within the run's timeout,
the client lets go of the connection, and the same runner goes on serving healthy
receivers. docs/operations.md, "What happens when… a webhook receiver misbehaves", says
what each fault does; these tests hold it to that."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from schedd.actions import ActionRunner, Outcome, RunContext

CLIENTS = ["lean", "aiohttp"]
CTX = RunContext(
    run_id="0190f7a4-0000-7000-8000-000000000001",
    schedule_id="0190f7a4-0000-7000-8000-0000000000aa",
    schedule_name="faults",
    attempt=1,
    scheduled_for="2026-11-22T09:00:00.000Z",
    triggered_at="2026-11-22T09:00:00.012Z",
    trigger_type="schedule",
)
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

Handler = Callable[["Receiver", asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Receiver:
    """A raw TCP receiver on 127.0.0.1 running one misbehaviour per connection. It records
    how many bytes it wrote and whether the client closed its side (`hung_up`)."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.port = 0
        self.connections = 0
        self.written = 0
        self.hung_up = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Receiver:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        try:
            await self.handler(self, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            self.hung_up.set()
        except asyncio.CancelledError:
            pass
        finally:
            writer.transport.abort()
            self._tasks.discard(task)

    async def until_client_hangs_up(self, reader: asyncio.StreamReader) -> None:
        while await reader.read(65536):
            pass
        self.hung_up.set()


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST instead of a FIN."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def hang(rx: Receiver, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    await r.readuntil(b"\r\n\r\n")
    await rx.until_client_hangs_up(r)  # never answers


async def reset_mid_request_body(rx: Receiver, r: asyncio.StreamReader,
                                 w: asyncio.StreamWriter) -> None:
    await r.readuntil(b"\r\n\r\n")
    await r.readexactly(1000)  # of a 200 KB body
    reset(w)


def reset_mid_answer(status: bytes) -> Handler:
    async def handler(rx: Receiver, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.readuntil(b"\r\n\r\n")
        w.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: 100000\r\n\r\n" + b"x" * 100)
        await w.drain()
        await asyncio.sleep(0.05)
        reset(w)
    return handler


def huge_answer(status: bytes) -> Handler:
    async def handler(rx: Receiver, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.readuntil(b"\r\n\r\n")
        w.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: 104857600\r\n\r\n")
        chunk = b"y" * 65536
        while rx.written < 104857600:  # 100 MB, as fast as the client takes it
            w.write(chunk)
            rx.written += len(chunk)
            await w.drain()
    return handler


def trickle(head_done: bool) -> Handler:
    """One byte a second: of the status line (head_done False), or of the body after a
    complete 200 head."""
    async def handler(rx: Receiver, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.readuntil(b"\r\n\r\n")
        data = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"
        if head_done:
            w.write(data)
            data = b"z" * 100
        for byte in data:
            w.write(bytes([byte]))
            await w.drain()
            await asyncio.sleep(1.0)
    return handler


async def garbage(rx: Receiver, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    await r.readuntil(b"\r\n\r\n")
    w.write(b"SSH-2.0-OpenSSH_9.6\r\n\x00\xff\xfe not http at all\r\n\r\n")
    await w.drain()
    await rx.until_client_hangs_up(r)


async def close_after_request_line(rx: Receiver, r: asyncio.StreamReader,
                                   w: asyncio.StreamWriter) -> None:
    await r.readuntil(b"\r\n")
    w.close()


@pytest.fixture(params=CLIENTS)
async def runner(request: pytest.FixtureRequest) -> AsyncIterator[ActionRunner]:
    async with ActionRunner(user_agent="schedd/0.0-test", now_s=time.time,
                            lean_http=request.param == "lean") as r:
        yield r


@pytest.fixture
async def healthy() -> AsyncIterator[Receiver]:
    async def answer(rx: Receiver, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while True:
            await r.readuntil(b"\r\n\r\n")
            w.write(OK)
            await w.drain()

    async with Receiver(answer) as rx:
        yield rx


def config(url: str, timeout: float = 2, **fields: Any) -> dict[str, Any]:
    return {"url": url, "method": "POST", "headers": {}, "timeout_seconds": timeout, **fields}


async def run_fault(runner: ActionRunner, handler: Handler, healthy: Receiver,
                    **fields: Any) -> tuple[Outcome, float, Receiver]:
    async with Receiver(handler) as rx:
        started = time.monotonic()
        outcome = await runner.run("webhook", config(rx.url(), **fields), CTX)
        elapsed = time.monotonic() - started
        # the same runner goes on serving: a healthy receiver gets its webhook at once
        after = await runner.run("webhook", config(healthy.url()), CTX)
        assert after.ok, after
        if outcome.error_message is not None:
            assert "\n" not in outcome.error_message and len(outcome.error_message) <= 500
        return outcome, elapsed, rx


async def test_a_receiver_that_hangs_times_out_and_is_let_go(
    runner: ActionRunner, healthy: Receiver
) -> None:
    outcome, elapsed, rx = await run_fault(runner, hang, healthy, timeout=1)
    assert (outcome.ok, outcome.error_code) == (False, "timeout")
    assert outcome.error_message == "no answer within 1 s"
    assert 0.9 <= elapsed < 5
    await asyncio.wait_for(rx.hung_up.wait(), 2)  # the connection was closed, not leaked


async def test_a_reset_in_the_middle_of_the_request_body(
    runner: ActionRunner, healthy: Receiver
) -> None:
    outcome, elapsed, _ = await run_fault(runner, reset_mid_request_body, healthy,
                                          body="b" * 200_000)
    assert (outcome.ok, outcome.error_code) == (False, "connection")
    assert outcome.error_message is not None
    assert any(w in outcome.error_message for w in ("reset", "closed", "Disconnected"))
    assert elapsed < 2


async def test_a_reset_in_the_middle_of_an_error_answer_keeps_what_arrived(
    runner: ActionRunner, healthy: Receiver
) -> None:
    outcome, _, _ = await run_fault(runner, reset_mid_answer(b"503 Unavailable"), healthy)
    assert (outcome.ok, outcome.error_code, outcome.error_message) == (
        False, "http_status", "HTTP 503")
    assert outcome.result == {"http_status": 503, "body_excerpt": "x" * 100}


async def test_a_reset_in_the_middle_of_a_2xx_answer_is_a_success(
    runner: ActionRunner, healthy: Receiver
) -> None:
    # the status decides: the receiver took the webhook (a retry would deliver it twice)
    outcome, _, _ = await run_fault(runner, reset_mid_answer(b"200 OK"), healthy)
    assert outcome.ok
    assert outcome.result == {"http_status": 200, "body_excerpt": "x" * 100}


@pytest.mark.parametrize(("status", "ok"), [(b"200 OK", True), (b"500 Oops", False)])
async def test_a_100_mb_answer_is_not_read(
    runner: ActionRunner, healthy: Receiver, status: bytes, ok: bool
) -> None:
    tracemalloc.start()
    try:
        outcome, elapsed, rx = await run_fault(runner, huge_answer(status), healthy)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert outcome.ok is ok
    assert outcome.result is not None
    assert outcome.result["body_excerpt"] == "y" * 4096  # the 4 KiB excerpt, no more
    # the client stopped reading after 4 KiB and hung up: the receiver could not write
    # the 100 MB (only what the socket buffers took), and nothing held it in memory
    await asyncio.wait_for(rx.hung_up.wait(), 2)
    assert rx.written < 32 * 1024 * 1024
    assert peak < 16 * 1024 * 1024
    assert elapsed < 2


async def test_a_status_line_trickled_a_byte_a_second_times_out(
    runner: ActionRunner, healthy: Receiver
) -> None:
    outcome, elapsed, _ = await run_fault(runner, trickle(head_done=False), healthy, timeout=1)
    assert (outcome.ok, outcome.error_code) == (False, "timeout")
    assert 0.9 <= elapsed < 5  # the run's timeout bounds it, not the trickle


async def test_a_body_trickled_after_a_2xx_head_ends_at_the_timeout(
    runner: ActionRunner, healthy: Receiver
) -> None:
    # the head arrived: the status decides, the excerpt is what arrived by the timeout
    outcome, elapsed, _ = await run_fault(runner, trickle(head_done=True), healthy, timeout=1)
    assert outcome.ok
    assert outcome.result is not None and outcome.result["http_status"] == 200
    assert 1 <= len(outcome.result["body_excerpt"]) <= 3
    assert 0.9 <= elapsed < 5


async def test_garbage_instead_of_http_is_a_connection_error(
    runner: ActionRunner, healthy: Receiver
) -> None:
    outcome, elapsed, rx = await run_fault(runner, garbage, healthy)
    assert (outcome.ok, outcome.error_code) == (False, "connection")
    assert outcome.error_message is not None
    assert outcome.error_message.startswith("InvalidResponse: ")
    assert elapsed < 2
    await asyncio.wait_for(rx.hung_up.wait(), 2)


async def test_a_close_right_after_the_request_line(
    runner: ActionRunner, healthy: Receiver
) -> None:
    outcome, elapsed, _ = await run_fault(runner, close_after_request_line, healthy)
    assert (outcome.ok, outcome.error_code) == (False, "connection")
    assert outcome.error_message is not None
    assert any(w in outcome.error_message for w in ("reset", "closed", "Disconnected"))
    assert elapsed < 2


# ---------------------------------------------------------------- the real daemon


@pytest.mark.parametrize("client", CLIENTS)
async def test_the_daemon_keeps_serving_through_every_fault(tmp_path: Path, client: str) -> None:
    try:
        from tests.daemon_kit import Daemon
    except ModuleNotFoundError:  # tests/ is not a package: pytest put tests/ on sys.path
        from daemon_kit import Daemon  # type: ignore[no-redef]

    async def answer(rx: Receiver, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while True:
            await r.readuntil(b"\r\n\r\n")
            w.write(OK)
            await w.drain()

    faults: dict[str, tuple[Handler, str, dict[str, Any]]] = {
        "hang": (hang, "timeout", {}),
        "reset": (reset_mid_request_body, "connection", {"body": "b" * 200_000}),
        "huge": (huge_answer(b"500 Oops"), "http_status", {}),
        "trickle": (trickle(head_done=False), "timeout", {}),
        "garbage": (garbage, "connection", {}),
        "close": (close_after_request_line, "connection", {}),
    }
    async with contextlib.AsyncExitStack() as stack:
        receivers = {name: await stack.enter_async_context(Receiver(h))
                     for name, (h, _, _) in faults.items()}
        healthy = await stack.enter_async_context(Receiver(answer))
        d = await stack.enter_async_context(
            Daemon(tmp_path / "d", env={"SCHEDD_WEBHOOK_CLIENT": client}))

        async def trigger(name: str, url: str, **config: Any) -> str:
            s = await d.create_schedule(
                name=name, schedule_type="interval", schedule_expression="1h",
                action_type="webhook", max_retries=0,
                action_config={"url": url, "timeout_seconds": 1, **config})
            r = await d.post(f"/v1/schedules/{s['id']}/trigger")
            assert r.status_code == 202, r.text
            run_id: str = r.json()["id"]
            return run_id

        run_ids = {name: await trigger(name, receivers[name].url(), **extra)
                   for name, (_, _, extra) in faults.items()}
        for name, (_, code, _) in faults.items():
            run = await d.wait_run(run_ids[name], lambda r: r["status"] in ("failed", "succeeded"),
                                   timeout=15, what=f"{name} ended")
            assert (run["status"], run["error_code"]) == ("failed", code), (name, run)
            assert run["error_message"] and "\n" not in run["error_message"]
        assert receivers["huge"].written < 32 * 1024 * 1024
        # still serving: the probes, and a healthy webhook after all of them
        assert (await d.get("/healthz")).status_code == 200
        assert (await d.get("/readyz")).status_code == 200
        ok = await d.wait_run(await trigger("healthy", healthy.url()),
                              lambda r: r["status"] == "succeeded", timeout=10)
        assert ok["result"]["http_status"] == 200
        assert "Traceback" not in d.log_text()
