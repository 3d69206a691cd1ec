"""SPEC §10, through both HTTP clients: header names and values checked after placeholders
are filled (nothing is sent), and the network policy checked on the resolved address of
every new connection (a name that resolves to a denied address is refused too)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from schedd.actions import ActionRunner, RunContext, validate_action_config
from schedd.config import Settings
from schedd.netpolicy import DEFAULT_DENY_NETWORKS, ForbiddenAddress, NetworkPolicy

UA = "schedd/0.0-test"
CLIENTS = ["lean", "aiohttp"]


def make_ctx(**overrides: Any) -> RunContext:
    fields: dict[str, Any] = {
        "run_id": "0190f7a4-0000-7000-8000-000000000001",
        "schedule_id": "0190f7a4-0000-7000-8000-0000000000aa",
        "schedule_name": "policy",
        "attempt": 1,
        "scheduled_for": "2026-11-22T09:00:00.000Z",
        "triggered_at": "2026-11-22T09:00:00.012Z",
        "trigger_type": "schedule",
    }
    fields.update(overrides)
    return RunContext(**fields)


def webhook(url: str, **fields: Any) -> dict[str, Any]:
    return validate_action_config("webhook", {"url": url, **fields}, allow_commands=False)


class Counter:
    """A raw HTTP server on 127.0.0.1 that counts the connections it accepts and the bytes
    it receives: 'nothing sent' means no connection at all."""

    def __init__(self) -> None:
        self.connections = 0
        self.received = bytearray()
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Counter:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            data = await reader.readuntil(b"\r\n\r\n")
            self.received += data
            length = 0
            for line in data.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            if length:
                self.received += await reader.readexactly(length)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    def url(self, host: str = "127.0.0.1", path: str = "/hook") -> str:
        return f"http://{host}:{self.port}{path}"


@pytest.fixture
async def counter() -> AsyncIterator[Counter]:
    async with Counter() as c:
        yield c


def runner(client: str, **kw: Any) -> ActionRunner:
    return ActionRunner(user_agent=UA, now_s=lambda: 1_800_000_000.0,
                        lean_http=client == "lean", **kw)


# ============================================================== headers, checked at send


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("value", ["a\r\nInjected: 1", "a\nInjected: 1", "a\rb", "a\x00b"])
async def test_a_header_value_with_cr_lf_or_nul_after_substitution_sends_nothing(
    counter: Counter, client: str, value: str
) -> None:
    config = webhook(counter.url(), headers={"X-Customer": "{{record.v}}"})
    async with runner(client) as r:
        outcome = await r.run("webhook", config, make_ctx(record={"v": value}))
    assert (outcome.ok, outcome.error_code) == (False, "invalid_request")
    assert outcome.error_message is not None
    assert "X-Customer" in outcome.error_message
    assert "Injected" not in outcome.error_message  # the value is never echoed
    assert counter.connections == 0


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("headers", [
    {"X Bad": "v"},  # a space: not an HTTP token
    {"X-A\r\nInjected": "v"},
    {"": "v"},
    {"X-A": "v\r\n\r\nGET /smuggled HTTP/1.1"},
])
async def test_a_stored_config_that_skipped_validation_is_still_checked(
    counter: Counter, client: str, headers: dict[str, str]
) -> None:
    # a config written by another path (an older version, a compatibility router) is
    # checked where the request is built, not trusted
    config = {"url": counter.url(), "method": "POST", "headers": headers, "timeout_seconds": 5}
    async with runner(client) as r:
        outcome = await r.run("webhook", config, make_ctx())
    assert outcome.error_code == "invalid_request"
    assert counter.connections == 0


@pytest.mark.parametrize("client", CLIENTS)
async def test_a_clean_header_is_sent(counter: Counter, client: str) -> None:
    config = webhook(counter.url(), headers={"X-Customer": "{{record.v}}"})
    async with runner(client) as r:
        outcome = await r.run("webhook", config, make_ctx(record={"v": "tab\tok"}))
    assert outcome.ok, outcome
    assert b"X-Customer: tab\tok\r\n" in bytes(counter.received)


# ============================================================== the network policy


@pytest.mark.parametrize(("address", "refused_by_default", "refused_private_off"), [
    ("169.254.169.254", True, True),
    ("169.254.0.1", True, True),
    ("fe80::1", True, True),
    ("fd00:ec2::254", True, True),
    ("100.100.100.200", True, True),
    ("::ffff:169.254.169.254", True, True),  # an IPv4-mapped address is its IPv4 one
    ("127.0.0.1", False, True),
    ("::1", False, True),
    ("10.1.2.3", False, True),
    ("172.16.0.1", False, True),
    ("192.168.1.1", False, True),
    ("100.64.0.1", False, True),  # shared address space (CGNAT)
    ("fc00::1", False, True),
    ("0.0.0.0", False, True),
    ("93.184.215.14", False, False),
    ("2606:2800:21f:cb07:6820:80da:af6b:8b2c", False, False),
])
def test_policy_table(address: str, refused_by_default: bool, refused_private_off: bool) -> None:
    assert (NetworkPolicy().refusal(address) is not None) is refused_by_default
    policy = NetworkPolicy(allow_private=False)
    assert (policy.refusal(address) is not None) is refused_private_off


def test_policy_deny_list_is_exactly_what_is_given() -> None:
    policy = NetworkPolicy(deny=["10.0.0.0/8"])
    assert policy.refusal("169.254.169.254") is None  # the default list was replaced
    reason = policy.refusal("10.9.9.9")
    assert reason is not None and "10.0.0.0/8" in reason
    with pytest.raises(ValueError, match="not an IP network"):
        NetworkPolicy(deny=["10.0.0.0/33"])
    with pytest.raises(ForbiddenAddress) as info:
        policy.check("10.0.0.1")
    assert info.value.address == "10.0.0.1"


# The default list's addresses (metadata services) are covered by the table above, never
# as real targets: a test must not send a packet anywhere but loopback, even if it breaks.


LOOPBACK_DENIED: list[dict[str, Any]] = [
    {"deny_networks": ["127.0.0.0/8", "::1/128"]},
    {"allow_private": False},
]


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("policy", LOOPBACK_DENIED)
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_a_denied_address_is_refused_by_ip_and_by_name(
    counter: Counter, client: str, policy: dict[str, Any], host: str
) -> None:
    async with runner(client, **policy) as r:
        outcome = await r.run("webhook", webhook(counter.url(host), timeout_seconds=5),
                              make_ctx())
    assert outcome.error_code == "forbidden_address", outcome
    assert outcome.error_message is not None
    assert "127.0.0.1" in outcome.error_message or "::1" in outcome.error_message
    assert counter.connections == 0


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_the_same_target_is_reached_under_the_default_policy(
    counter: Counter, client: str, host: str
) -> None:
    # the control for the test above: it is the policy that refuses, not the name
    async with runner(client) as r:
        outcome = await r.run("webhook", webhook(counter.url(host), timeout_seconds=5),
                              make_ctx())
    assert outcome.ok, outcome
    assert counter.connections == 1


async def test_a_redirect_to_a_denied_address_is_refused(counter: Counter) -> None:
    # redirects are followed by aiohttp only; the redirect's connection is checked too
    # (127.0.0.1 allowed; the redirect's target, ::1, refused before any connect)
    async def redirect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 307 Temporary Redirect\r\nLocation: "
                     + f"http://[::1]:{counter.port}/\r\n".encode()
                     + b"Content-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(redirect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with runner("aiohttp", follow_redirects=True,
                          deny_networks=["::1/128"]) as r:
            outcome = await r.run("webhook", webhook(f"http://127.0.0.1:{port}/",
                                                     timeout_seconds=5), make_ctx())
    finally:
        server.close()
        await server.wait_closed()
    assert outcome.error_code == "forbidden_address", outcome
    assert outcome.error_message is not None and "::1" in outcome.error_message
    assert counter.connections == 0


# ============================================================== settings


def test_settings_defaults() -> None:
    s = Settings()
    assert s.webhook_deny_networks == DEFAULT_DENY_NETWORKS
    assert s.webhook_allow_private is True
    assert s.webhook_client == "lean"


@pytest.mark.parametrize(("client", "aiohttp_headers"), [("lean", False), ("aiohttp", True)])
async def test_webhook_client_setting_chooses_the_client(
    counter: Counter, client: str, aiohttp_headers: bool
) -> None:
    settings = Settings(webhook_client=client)  # type: ignore[arg-type]
    async with ActionRunner.from_settings(settings, user_agent=UA,
                                          now_s=lambda: 1_800_000_000.0) as r:
        assert (await r.run("webhook", webhook(counter.url()), make_ctx())).ok
    # aiohttp adds Accept and Accept-Encoding; the lean client sends only what it is given
    assert (b"\r\nAccept-Encoding:" in bytes(counter.received)) is aiohttp_headers


async def test_settings_policy_reaches_the_runner(counter: Counter) -> None:
    settings = Settings(webhook_deny_networks=("127.0.0.0/8",))
    async with ActionRunner.from_settings(settings, user_agent=UA,
                                          now_s=lambda: 1_800_000_000.0) as r:
        outcome = await r.run("webhook", webhook(counter.url()), make_ctx())
    assert outcome.error_code == "forbidden_address"
    assert counter.connections == 0


def test_localhost_is_loopback_here() -> None:
    # localhost must resolve to loopback on the test box, or the by-name tests prove nothing
    addresses = {info[4][0] for info in socket.getaddrinfo("localhost", 80)}
    assert addresses <= {"127.0.0.1", "::1"} and addresses
