"""schedd.actions: validation tables, redaction, placeholders, signing, and real runs
against a local webhook sink and real child processes."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from schedd.actions import (
    ACTION_TYPES,
    REDACTED,
    ActionRunner,
    Outcome,
    RunContext,
    merge_redacted,
    redact_config,
    sign_webhook,
    substitute,
    validate_action_config,
)
from schedd.commands import CommandRunner
from schedd.errors import InvalidField

try:
    from tests.sink import Sink
except ModuleNotFoundError:  # tests/ is not a package: pytest put tests/ itself on sys.path
    from sink import Sink

NOW_S = 1_800_000_000.25
UA = "schedd/0.0-test"
WHSEC = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


def make_ctx(**overrides: Any) -> RunContext:
    fields: dict[str, Any] = {
        "run_id": "0190f7a4-0000-7000-8000-000000000001",
        "schedule_id": "0190f7a4-0000-7000-8000-0000000000aa",
        "schedule_name": "nightly report",
        "attempt": 2,
        "scheduled_for": "2026-11-22T09:00:00.000Z",
        "triggered_at": "2026-11-22T09:00:00.012Z",
        "trigger_type": "retry",
        "payload": {"customer": 42},
        "record": None,
    }
    fields.update(overrides)
    return RunContext(**fields)


def webhook(url: str, **fields: Any) -> dict[str, Any]:
    return validate_action_config("webhook", {"url": url, **fields}, allow_commands=False)


def command(argv: list[str], **fields: Any) -> dict[str, Any]:
    return validate_action_config("command", {"argv": argv, **fields}, allow_commands=True)


@pytest.fixture(params=["lean", "aiohttp"])
async def runner(request: pytest.FixtureRequest) -> AsyncIterator[ActionRunner]:
    """Every webhook test runs through both clients: plain-http urls take the lean one
    (schedd/webhook_http.py) unless lean_http is off; https and redirects take aiohttp."""
    async with ActionRunner(user_agent=UA, allow_commands=True, now_s=lambda: NOW_S,
                            lean_http=request.param == "lean") as r:
        yield r


def assert_short_message(outcome: Outcome) -> None:
    assert outcome.error_message is not None
    assert "\n" not in outcome.error_message
    assert len(outcome.error_message) <= 500


# =============================================================================== validation

CFG = ("body", "action_config")

VALID_CASES: list[tuple[str, Any, dict[str, Any]]] = [
    # webhook: defaults filled in
    (
        "webhook",
        {"url": "https://example.com/hook"},
        {"url": "https://example.com/hook", "method": "POST", "headers": {}, "timeout_seconds": 30},
    ),
    (
        "webhook",
        {"url": "http://127.0.0.1:8080/a?b=c", "method": "get"},
        {
            "url": "http://127.0.0.1:8080/a?b=c",
            "method": "GET",
            "headers": {},
            "timeout_seconds": 30,
        },
    ),
    *[
        (
            "webhook",
            {"url": "https://h.example/", "method": m},
            {
                "url": "https://h.example/",
                "method": m.upper(),
                "headers": {},
                "timeout_seconds": 30,
            },
        )
        for m in ("post", "Put", "PATCH", "delete")
    ],
    (
        "webhook",
        {"url": "https://h.example/{{schedule.id}}?run={{run.id}}", "timeout_seconds": 1},
        {
            "url": "https://h.example/{{schedule.id}}?run={{run.id}}",
            "method": "POST",
            "headers": {},
            "timeout_seconds": 1,
        },
    ),
    (
        "webhook",
        {"url": "https://h.example/", "timeout_seconds": 300},
        {"url": "https://h.example/", "method": "POST", "headers": {}, "timeout_seconds": 300},
    ),
    (
        "webhook",
        {"url": "https://h.example/", "timeout_seconds": 2.5},
        {"url": "https://h.example/", "method": "POST", "headers": {}, "timeout_seconds": 2.5},
    ),
    (
        "webhook",
        {
            "url": "https://h.example/",
            "headers": {
                "Authorization": "Bearer t",
                "X-Trace": "{{run.id}}",
                "Content-Type": "a/b",
            },
        },
        {
            "url": "https://h.example/",
            "method": "POST",
            "headers": {
                "Authorization": "Bearer t",
                "X-Trace": "{{run.id}}",
                "Content-Type": "a/b",
            },
            "timeout_seconds": 30,
        },
    ),
    (
        "webhook",
        {"url": "https://h.example/", "headers": {"User-Agent": "mine", "X-Tab": "a\tb"}},
        {
            "url": "https://h.example/",
            "method": "POST",
            "headers": {"User-Agent": "mine", "X-Tab": "a\tb"},
            "timeout_seconds": 30,
        },
    ),
    *[
        (
            "webhook",
            {"url": "https://h.example/", "body": body},
            {
                "url": "https://h.example/",
                "method": "POST",
                "headers": {},
                "timeout_seconds": 30,
                "body": body,
            },
        )
        for body in ({"a": [1, 2.5, {"b": None}], "c": True}, None, "text", 3, [])
    ],
    *[
        (
            "webhook",
            {"url": "https://h.example/", "secret": secret},
            {
                "url": "https://h.example/",
                "method": "POST",
                "headers": {},
                "timeout_seconds": 30,
                "secret": secret,
            },
        )
        for secret in ("s3cret", WHSEC, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    ],
    # command
    (
        "command",
        {"argv": ["echo", "hi"]},
        {"argv": ["echo", "hi"], "env": {}, "timeout_seconds": 3600},
    ),
    (
        "command",
        {
            "argv": ["/usr/bin/env", "", "{{run.id}}"],
            "env": {"A_1": "x", "_B": ""},
            "cwd": "/tmp",
            "timeout_seconds": 86400,
        },
        {
            "argv": ["/usr/bin/env", "", "{{run.id}}"],
            "env": {"A_1": "x", "_B": ""},
            "cwd": "/tmp",
            "timeout_seconds": 86400,
        },
    ),
    (
        "command",
        {"argv": ["true"], "timeout_seconds": 1},
        {"argv": ["true"], "env": {}, "timeout_seconds": 1},
    ),
    # worker
    ("worker", {"queue": "emails"}, {"queue": "emails", "payload": None}),
    (
        "worker",
        {"queue": "a.b:c-d_E9", "payload": {"x": [1, "{{record.email}}"]}},
        {"queue": "a.b:c-d_E9", "payload": {"x": [1, "{{record.email}}"]}},
    ),
    ("worker", {"queue": "q" * 200, "payload": "p"}, {"queue": "q" * 200, "payload": "p"}),
    # noop
    ("noop", {}, {}),
]


@pytest.mark.parametrize(("action_type", "config", "expected"), VALID_CASES)
def test_validate_valid(action_type: str, config: Any, expected: dict[str, Any]) -> None:
    assert validate_action_config(action_type, config, allow_commands=True) == expected


def test_validate_does_not_alias_the_input() -> None:
    config = {"url": "https://h.example/", "headers": {"X-A": "1"}, "body": {"k": [1]}}
    out = validate_action_config("webhook", config, allow_commands=False)
    out["headers"]["X-A"] = "2"
    out["body"]["k"].append(2)
    assert config == {"url": "https://h.example/", "headers": {"X-A": "1"}, "body": {"k": [1]}}


def _loc(field: str) -> tuple[str, ...]:
    return (*CFG, field)


URL = "https://h.example/"
INVALID_CASES: list[tuple[str, Any, tuple[str, ...], str]] = [
    # type and shape
    ("email", {}, ("body", "action_type"), "value_error"),
    ("", {}, ("body", "action_type"), "value_error"),
    ("webhook", [], CFG, "type_error"),
    ("webhook", None, CFG, "type_error"),
    ("noop", "x", CFG, "type_error"),
    ("worker", 3, CFG, "type_error"),
    # webhook url
    ("webhook", {}, _loc("url"), "missing"),
    ("webhook", {"url": 123}, _loc("url"), "type_error"),
    ("webhook", {"url": ""}, _loc("url"), "value_error"),
    ("webhook", {"url": "ftp://h.example/x"}, _loc("url"), "value_error"),
    ("webhook", {"url": "h.example/x"}, _loc("url"), "value_error"),
    ("webhook", {"url": "https://"}, _loc("url"), "value_error"),
    ("webhook", {"url": "https:///path"}, _loc("url"), "value_error"),
    ("webhook", {"url": "https://h.example/a b"}, _loc("url"), "value_error"),
    ("webhook", {"url": "https://h.example/\r\nX: y"}, _loc("url"), "value_error"),
    ("webhook", {"url": "https://user:pw@h.example/"}, _loc("url"), "value_error"),
    ("webhook", {"url": "http://h.example:99999/"}, _loc("url"), "value_error"),
    ("webhook", {"url": "https://h.example/" + "a" * 5000}, _loc("url"), "value_error"),
    ("webhook", {"url": "{{record.url}}"}, _loc("url"), "value_error"),
    # webhook method
    ("webhook", {"url": URL, "method": "HEAD"}, _loc("method"), "value_error"),
    ("webhook", {"url": URL, "method": "OPTIONS"}, _loc("method"), "value_error"),
    ("webhook", {"url": URL, "method": ""}, _loc("method"), "value_error"),
    ("webhook", {"url": URL, "method": 1}, _loc("method"), "type_error"),
    # webhook headers
    ("webhook", {"url": URL, "headers": []}, _loc("headers"), "type_error"),
    ("webhook", {"url": URL, "headers": "X-A: 1"}, _loc("headers"), "type_error"),
    ("webhook", {"url": URL, "headers": {"Bad Name": "x"}}, _loc("headers"), "value_error"),
    ("webhook", {"url": URL, "headers": {"X-A:": "x"}}, _loc("headers"), "value_error"),
    ("webhook", {"url": URL, "headers": {"": "x"}}, _loc("headers"), "value_error"),
    ("webhook", {"url": URL, "headers": {"X-A": "a\r\nX-B: b"}}, _loc("headers"), "value_error"),
    ("webhook", {"url": URL, "headers": {"X-A": "a\nb"}}, _loc("headers"), "value_error"),
    ("webhook", {"url": URL, "headers": {"X-A": "a\x00"}}, _loc("headers"), "value_error"),
    ("webhook", {"url": URL, "headers": {"X-A\r\n": "a"}}, _loc("headers"), "value_error"),
    ("webhook", {"url": URL, "headers": {"X-A": 1}}, _loc("headers"), "type_error"),
    ("webhook", {"url": URL, "headers": {"X-A": None}}, _loc("headers"), "type_error"),
    ("webhook", {"url": URL, "headers": {"X-A": "1", "x-a": "2"}}, _loc("headers"), "value_error"),
    ("webhook", {"url": URL, "headers": {"X-Schedd-Run-Id": "x"}}, _loc("headers"), "value_error"),
    (
        "webhook",
        {"url": URL, "headers": {"x-schedd-anything": "x"}},
        _loc("headers"),
        "value_error",
    ),
    ("webhook", {"url": URL, "headers": {"Idempotency-Key": "x"}}, _loc("headers"), "value_error"),
    (
        "webhook",
        {"url": URL, "headers": {"webhook-signature": "v1,x"}},
        _loc("headers"),
        "value_error",
    ),
    ("webhook", {"url": URL, "headers": {"Webhook-Id": "x"}}, _loc("headers"), "value_error"),
    ("webhook", {"url": URL, "headers": {"Content-Length": "3"}}, _loc("headers"), "value_error"),
    (
        "webhook",
        {"url": URL, "headers": {"Authorization": REDACTED}},
        _loc("headers"),
        "value_error",
    ),
    ("webhook", {"url": URL, "headers": {"X-A": "v" * 9000}}, _loc("headers"), "value_error"),
    (
        "webhook",
        {"url": URL, "headers": {f"X-{i}": "v" for i in range(65)}},
        _loc("headers"),
        "value_error",
    ),
    # webhook body
    ("webhook", {"url": URL, "body": object()}, _loc("body"), "type_error"),
    (
        "webhook",
        {"url": URL, "body": {"big": "x" * (1024 * 1024 + 1)}},
        _loc("body"),
        "value_error",
    ),
    # webhook timeout
    ("webhook", {"url": URL, "timeout_seconds": 0}, _loc("timeout_seconds"), "value_error"),
    ("webhook", {"url": URL, "timeout_seconds": 0.5}, _loc("timeout_seconds"), "value_error"),
    ("webhook", {"url": URL, "timeout_seconds": 301}, _loc("timeout_seconds"), "value_error"),
    ("webhook", {"url": URL, "timeout_seconds": -1}, _loc("timeout_seconds"), "value_error"),
    (
        "webhook",
        {"url": URL, "timeout_seconds": float("nan")},
        _loc("timeout_seconds"),
        "value_error",
    ),
    (
        "webhook",
        {"url": URL, "timeout_seconds": float("inf")},
        _loc("timeout_seconds"),
        "value_error",
    ),
    ("webhook", {"url": URL, "timeout_seconds": "30"}, _loc("timeout_seconds"), "type_error"),
    ("webhook", {"url": URL, "timeout_seconds": True}, _loc("timeout_seconds"), "type_error"),
    ("webhook", {"url": URL, "timeout_seconds": None}, _loc("timeout_seconds"), "type_error"),
    # webhook secret
    ("webhook", {"url": URL, "secret": ""}, _loc("secret"), "value_error"),
    ("webhook", {"url": URL, "secret": 5}, _loc("secret"), "type_error"),
    ("webhook", {"url": URL, "secret": None}, _loc("secret"), "type_error"),
    ("webhook", {"url": URL, "secret": "whsec_"}, _loc("secret"), "value_error"),
    ("webhook", {"url": URL, "secret": "whsec_!!not base64!!"}, _loc("secret"), "value_error"),
    ("webhook", {"url": URL, "secret": "whsec_YWJj"[:-1]}, _loc("secret"), "value_error"),
    ("webhook", {"url": URL, "secret": REDACTED}, _loc("secret"), "value_error"),
    ("webhook", {"url": URL, "secret": "s" * 1025}, _loc("secret"), "value_error"),
    # webhook unknown keys (reported first, by name)
    ("webhook", {"url": URL, "retries": 3}, _loc("retries"), "extra_forbidden"),
    ("webhook", {"url": 5, "zzz": 1, "aaa": 2}, _loc("aaa"), "extra_forbidden"),
    # command
    ("command", {}, _loc("argv"), "missing"),
    ("command", {"argv": "echo hi"}, _loc("argv"), "type_error"),
    ("command", {"argv": []}, _loc("argv"), "value_error"),
    ("command", {"argv": ["echo", 1]}, _loc("argv"), "type_error"),
    ("command", {"argv": [""]}, _loc("argv"), "value_error"),
    ("command", {"argv": ["echo", "a\x00b"]}, _loc("argv"), "value_error"),
    ("command", {"argv": ["x"] * 1025}, _loc("argv"), "value_error"),
    ("command", {"argv": ["true"], "env": []}, _loc("env"), "type_error"),
    ("command", {"argv": ["true"], "env": {"1BAD": "x"}}, _loc("env"), "value_error"),
    ("command", {"argv": ["true"], "env": {"A=B": "x"}}, _loc("env"), "value_error"),
    ("command", {"argv": ["true"], "env": {"": "x"}}, _loc("env"), "value_error"),
    ("command", {"argv": ["true"], "env": {"A": 1}}, _loc("env"), "type_error"),
    ("command", {"argv": ["true"], "env": {"A": "x\x00"}}, _loc("env"), "value_error"),
    ("command", {"argv": ["true"], "env": {"API_TOKEN": REDACTED}}, _loc("env"), "value_error"),
    ("command", {"argv": ["true"], "cwd": "relative/dir"}, _loc("cwd"), "value_error"),
    ("command", {"argv": ["true"], "cwd": ""}, _loc("cwd"), "value_error"),
    ("command", {"argv": ["true"], "cwd": 5}, _loc("cwd"), "type_error"),
    ("command", {"argv": ["true"], "timeout_seconds": 0}, _loc("timeout_seconds"), "value_error"),
    (
        "command",
        {"argv": ["true"], "timeout_seconds": 86401},
        _loc("timeout_seconds"),
        "value_error",
    ),
    ("command", {"argv": ["true"], "timeout_seconds": "1"}, _loc("timeout_seconds"), "type_error"),
    ("command", {"argv": ["true"], "shell": True}, _loc("shell"), "extra_forbidden"),
    # worker
    ("worker", {}, _loc("queue"), "missing"),
    ("worker", {"queue": ""}, _loc("queue"), "value_error"),
    ("worker", {"queue": "has space"}, _loc("queue"), "value_error"),
    ("worker", {"queue": "slash/no"}, _loc("queue"), "value_error"),
    ("worker", {"queue": "q" * 201}, _loc("queue"), "value_error"),
    ("worker", {"queue": 5}, _loc("queue"), "type_error"),
    ("worker", {"queue": "q", "payload": object()}, _loc("payload"), "type_error"),
    ("worker", {"queue": "q", "lease": 5}, _loc("lease"), "extra_forbidden"),
    # noop
    ("noop", {"x": 1}, _loc("x"), "extra_forbidden"),
    ("noop", {"url": "https://h.example/"}, _loc("url"), "extra_forbidden"),
]


@pytest.mark.parametrize(("action_type", "config", "loc", "type_"), INVALID_CASES)
def test_validate_invalid(action_type: str, config: Any, loc: tuple[str, ...], type_: str) -> None:
    with pytest.raises(InvalidField) as info:
        validate_action_config(action_type, config, allow_commands=True)
    assert tuple(info.value.loc) == loc
    assert info.value.type == type_
    assert info.value.msg


def test_validate_command_refused_unless_allowed() -> None:
    with pytest.raises(InvalidField) as info:
        validate_action_config("command", {"argv": ["true"]}, allow_commands=False)
    assert info.value.loc == ["body", "action_type"]
    assert info.value.msg == "command actions are disabled; set [actions] allow_commands = true"


def test_validate_messages_never_echo_secrets_or_header_values() -> None:
    with pytest.raises(InvalidField) as info:
        validate_action_config(
            "webhook",
            {"url": URL, "headers": {"Authorization": "Bearer sekrit\r\n"}},
            allow_commands=False,
        )
    assert "sekrit" not in str(info.value)
    with pytest.raises(InvalidField) as info:
        validate_action_config(
            "webhook", {"url": URL, "secret": "whsec_sekrit!"}, allow_commands=False
        )
    assert "sekrit" not in str(info.value)


def test_action_types() -> None:
    assert ACTION_TYPES == ("webhook", "command", "worker", "noop")


# =============================================================================== redaction

STORED_WEBHOOK = {
    "url": "https://h.example/",
    "method": "POST",
    "headers": {
        "Authorization": "Bearer abc",
        "X-Api-Key": "k1",
        "X-Session-Token": "t1",
        "Cookie": "sid=1",
        "Content-Type": "application/json",
        "X-Trace": "{{run.id}}",
    },
    "timeout_seconds": 30,
    "body": {"password": "********-is-literal", "mask": REDACTED},
    "secret": WHSEC,
}


def test_redact_webhook() -> None:
    shown = redact_config("webhook", STORED_WEBHOOK)
    assert shown["secret"] == REDACTED
    assert shown["headers"] == {
        "Authorization": REDACTED,
        "X-Api-Key": REDACTED,
        "X-Session-Token": REDACTED,
        "Cookie": REDACTED,
        "Content-Type": "application/json",
        "X-Trace": "{{run.id}}",
    }
    assert shown["body"] == STORED_WEBHOOK["body"]  # bodies are shown as they are
    assert STORED_WEBHOOK["secret"] == WHSEC  # a copy, the input is untouched
    assert STORED_WEBHOOK["headers"]["Authorization"] == "Bearer abc"


@pytest.mark.parametrize(
    ("name", "sensitive"),
    [
        ("authorization", True),
        ("Proxy-Authorization", True),
        ("COOKIE", True),
        ("x-api-key", True),
        ("X-Auth-User", True),
        ("X-My-Secret", True),
        ("Private-Token", True),
        ("DB_PASSWORD", True),
        ("X-Request-Id", False),
        ("Accept", False),
        ("Content-Type", False),
    ],
)
def test_redact_header_names(name: str, sensitive: bool) -> None:
    shown = redact_config("webhook", {"url": URL, "headers": {name: "v"}})
    assert shown["headers"][name] == (REDACTED if sensitive else "v")


def test_redact_command_env_and_others() -> None:
    config = {"argv": ["x"], "env": {"API_TOKEN": "t", "DB_PASSWORD": "p", "MODE": "fast"}}
    assert redact_config("command", config)["env"] == {
        "API_TOKEN": REDACTED,
        "DB_PASSWORD": REDACTED,
        "MODE": "fast",
    }
    worker = {"queue": "q", "payload": {"secret": "visible"}}
    assert redact_config("worker", worker) == worker
    assert redact_config("noop", {}) == {}


def test_merge_redacted_round_trip() -> None:
    shown = redact_config("webhook", STORED_WEBHOOK)
    assert merge_redacted(STORED_WEBHOOK, shown) == STORED_WEBHOOK
    # Validating the merged config accepts it and gives it back unchanged.
    assert (
        validate_action_config(
            "webhook", merge_redacted(STORED_WEBHOOK, shown), allow_commands=False
        )
        == STORED_WEBHOOK
    )


def test_merge_redacted_with_edits() -> None:
    shown = redact_config("webhook", STORED_WEBHOOK)
    shown["url"] = "https://other.example/"
    headers = shown["headers"]
    headers["authorization"] = headers.pop("Authorization")  # a client that lower-cases names
    headers["X-Api-Key"] = "k2"  # a real change wins
    headers["X-New-Token"] = REDACTED  # nothing to restore: stays, and validation refuses it
    del headers["Cookie"]
    merged = merge_redacted(STORED_WEBHOOK, shown)
    assert merged["url"] == "https://other.example/"
    assert merged["secret"] == WHSEC
    assert merged["headers"]["authorization"] == "Bearer abc"
    assert merged["headers"]["X-Api-Key"] == "k2"
    assert merged["headers"]["X-Session-Token"] == "t1"
    assert merged["headers"]["X-New-Token"] == REDACTED
    assert "Cookie" not in merged["headers"]
    assert merged["body"] == STORED_WEBHOOK["body"]
    with pytest.raises(InvalidField) as info:
        validate_action_config("webhook", merged, allow_commands=False)
    assert info.value.loc == ["body", "action_config", "headers"]


def test_merge_redacted_secret_removed_or_replaced() -> None:
    shown = redact_config("webhook", STORED_WEBHOOK)
    del shown["secret"]
    assert "secret" not in merge_redacted(STORED_WEBHOOK, shown)
    shown["secret"] = "new-secret"
    assert merge_redacted(STORED_WEBHOOK, shown)["secret"] == "new-secret"


def test_merge_redacted_body_literal_is_not_restored() -> None:
    old = {"url": URL, "body": {"mask": "old"}}
    new = {"url": URL, "body": {"mask": REDACTED}}
    assert merge_redacted(old, new)["body"] == {"mask": REDACTED}


def test_merge_redacted_command_env() -> None:
    old = {"argv": ["x"], "env": {"API_TOKEN": "t", "MODE": "a"}}
    new = redact_config("command", old)
    new["env"]["MODE"] = "b"
    assert merge_redacted(old, new) == {"argv": ["x"], "env": {"API_TOKEN": "t", "MODE": "b"}}


@pytest.mark.parametrize("new", [[1, 2], None, "x", 3])
def test_merge_redacted_non_object_is_left_to_validation(new: Any) -> None:
    assert merge_redacted(STORED_WEBHOOK, new) == new
    with pytest.raises(InvalidField) as info:
        validate_action_config("webhook", merge_redacted(STORED_WEBHOOK, new), allow_commands=False)
    assert info.value.loc == ["body", "action_config"]


def test_merge_redacted_from_nothing() -> None:
    new = {"url": URL, "secret": REDACTED}
    assert merge_redacted({}, new) == new


# =============================================================================== substitute


def test_substitute_nested() -> None:
    ctx = make_ctx(record={"email": "a@b.example", "age": 41, "vip": True, "none": None})
    value = {
        "{{run.id}}": "{{run.id}}",
        "list": ["{{run.attempt}}", {"deep": "at {{run.scheduled_for}} ({{run.trigger_type}})"}],
        "schedule": "{{schedule.id}}/{{schedule.name}}",
        "spaces": "{{ run.id }}",
        "record": "{{record.email}} {{record.age}} {{record.vip}} {{record.none}}",
        "triggered": "{{run.triggered_at}}",
        "numbers": [1, 2.5, None, True],
    }
    assert substitute(value, ctx) == {
        "{{run.id}}": ctx.run_id,
        "list": ["2", {"deep": "at 2026-11-22T09:00:00.000Z (retry)"}],
        "schedule": f"{ctx.schedule_id}/nightly report",
        "spaces": ctx.run_id,
        "record": "a@b.example 41 true null",
        "triggered": "2026-11-22T09:00:00.012Z",
        "numbers": [1, 2.5, None, True],
    }


@pytest.mark.parametrize(
    "text",
    [
        "{{run.id.__class__}}",
        "{{run.nope}}",
        "{{ run }}",
        "{{schedule}}",
        "{{record.missing}}",
        "{{__import__('os').system('true')}}",
        "{{run.attempt + 1}}",
        "{run.id}",
        "{{}}",
        "plain text",
    ],
)
def test_substitute_leaves_unknown_as_written(text: str) -> None:
    assert substitute(text, make_ctx(record={"email": "x"})) == text


def test_substitute_record_without_record() -> None:
    assert substitute("{{record.email}}", make_ctx(record=None)) == "{{record.email}}"


def test_substitute_is_one_pass() -> None:
    ctx = make_ctx(record={"evil": "{{run.id}}", "braces": "}}{{"})
    assert substitute("{{record.evil}}", ctx) == "{{run.id}}"
    assert substitute("{{record.braces}}{{run.attempt}}", ctx) == "}}{{2"


@pytest.mark.parametrize("text", [
    "", "plain", "{{run.id}}", "a{{run.id}}b{{ schedule.name }}c", "{{run.id}}{{run.id}}",
    "{{ run.attempt}} {{unknown.x}} {{record.email}} {{record.n}} <{{record.empty}}>",
    "{{{run.id}}}", "{{run.id}",
    "{{run .id}}", "x{{\trun.trigger_type\n}}y{{}}", "{{record.evil}}", "é{{schedule.id}}ü" * 3,
    # longer than the cache keeps
    "{{run.triggered_at}}" + "-" * 1100 + "{{run.scheduled_for}}",
])
def test_substitute_matches_one_regex_pass(text: str) -> None:
    # the split templates are cached; the result must be what one re.sub pass gives
    import re

    from schedd.templates import PLACEHOLDER_RE, placeholder_value
    ctx = make_ctx(record={"email": "x@y", "n": 3, "evil": "{{run.id}}", "empty": ""})

    def expected(t: str) -> str:
        def one(m: re.Match[str]) -> str:
            value = placeholder_value(m.group(1), ctx)
            return m.group(0) if value is None else value
        return PLACEHOLDER_RE.sub(one, t)
    for _ in range(2):  # once filling the cache, once from it
        assert substitute(text, ctx) == expected(text)


def test_substitute_does_not_mutate() -> None:
    value = {"a": ["{{run.id}}"]}
    substitute(value, make_ctx())
    assert value == {"a": ["{{run.id}}"]}


# =============================================================================== signing


def test_sign_webhook_standard_webhooks_vector() -> None:
    # The published Standard Webhooks test vector.
    assert (
        sign_webhook(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            b'{"test": 2432232314}',
        )
        == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )


@pytest.mark.parametrize(
    ("secret", "key"),
    [
        (WHSEC, b"0123456789abcdef0123456789abcdef"),
        ("plain secret", b"plain secret"),
        ("clé", "clé".encode()),
    ],
)
def test_sign_webhook_independent(secret: str, key: bytes) -> None:
    body = b'{"run_id": "r1", "x": [1, 2]}'
    mac = hmac.new(key, b"run-1.1700000000." + body, hashlib.sha256).digest()
    expected = "v1," + base64.b64encode(mac).decode()
    assert sign_webhook(secret, "run-1", 1700000000, body) == expected


# =============================================================================== webhooks


def envelope(ctx: RunContext) -> dict[str, Any]:
    return {
        "schedule_id": ctx.schedule_id,
        "run_id": ctx.run_id,
        "attempt": ctx.attempt,
        "scheduled_for": ctx.scheduled_for,
        "triggered_at": ctx.triggered_at,
        "trigger_type": ctx.trigger_type,
        "payload": ctx.payload,
    }


async def test_webhook_envelope_and_headers(sink: Sink, runner: ActionRunner) -> None:
    ctx = make_ctx()
    config = webhook(sink.url("/hook"))
    outcome = await runner.run("webhook", config, ctx)
    assert outcome == Outcome(ok=True, result={"http_status": 200, "body_excerpt": '{"ok": true}'})
    [req] = await sink.wait_for(1)
    assert req.method == "POST"
    assert req.path == "/hook"
    assert req.json() == envelope(ctx)
    h = req.headers
    assert h["content-type"] == "application/json"
    assert h["user-agent"] == UA
    assert h["idempotency-key"] == ctx.run_id
    assert h["x-schedd-schedule-id"] == ctx.schedule_id
    assert h["x-schedd-run-id"] == ctx.run_id
    assert h["x-schedd-attempt"] == "2"
    assert h["x-schedd-scheduled-for"] == "2026-11-22T09:00:00.000Z"
    assert "webhook-signature" not in h and "webhook-id" not in h
    assert "cookie" not in h

    resolved = runner.resolve("webhook", config, ctx)
    assert resolved["url"] == sink.url("/hook")
    assert resolved["method"] == "POST"
    assert resolved["body"] == req.json()
    assert {k.lower(): v for k, v in resolved["headers"].items()}.items() <= h.items()


async def test_webhook_custom_body_placeholders(sink: Sink, runner: ActionRunner) -> None:
    ctx = make_ctx(record={"email": "ann@example.com"})
    config = webhook(
        sink.url("/s/{{schedule.id}}") + "?run={{run.id}}",
        method="put",
        headers={"Authorization": "Bearer {{record.email}}", "X-Trace": "t-{{run.attempt}}"},
        body={"text": "Hi {{record.email}}, run {{run.id}}", "n": 1, "keep": "{{nope}}"},
    )
    outcome = await runner.run("webhook", config, ctx)
    assert outcome.ok
    [req] = await sink.wait_for(1)
    assert req.method == "PUT"
    assert req.path == f"/s/{ctx.schedule_id}"
    assert req.query == f"run={ctx.run_id}"
    assert req.json() == {
        "text": f"Hi ann@example.com, run {ctx.run_id}",
        "n": 1,
        "keep": "{{nope}}",
    }
    assert req.headers["authorization"] == "Bearer ann@example.com"
    assert req.headers["x-trace"] == "t-2"

    resolved = runner.resolve("webhook", config, ctx)
    assert resolved["headers"]["Authorization"] == REDACTED
    assert resolved["headers"]["X-Trace"] == "t-2"
    assert resolved["body"] == req.json()
    assert resolved["url"] == sink.url(f"/s/{ctx.schedule_id}") + f"?run={ctx.run_id}"


async def test_webhook_config_can_override_content_type_and_user_agent(
    sink: Sink, runner: ActionRunner
) -> None:
    config = webhook(
        sink.url("/ct"),
        headers={"content-type": "application/cloudevents+json", "User-Agent": "custom/1"},
    )
    assert (await runner.run("webhook", config, make_ctx())).ok
    [req] = await sink.wait_for(1)
    assert req.headers["content-type"] == "application/cloudevents+json"
    assert req.headers["user-agent"] == "custom/1"


async def test_webhook_reserved_headers_cannot_be_forged(sink: Sink, runner: ActionRunner) -> None:
    # Validation refuses these; a config that skipped validation still cannot override them.
    ctx = make_ctx()
    config = {
        "url": sink.url("/f"),
        "method": "POST",
        "headers": {"X-Schedd-Run-Id": "forged", "idempotency-key": "forged"},
        "timeout_seconds": 5,
    }
    assert (await runner.run("webhook", config, ctx)).ok
    [req] = await sink.wait_for(1)
    assert req.headers["x-schedd-run-id"] == ctx.run_id
    assert req.headers["idempotency-key"] == ctx.run_id


@pytest.mark.parametrize("method", ["GET", "DELETE"])
async def test_webhook_get_delete_send_no_body_by_default(
    sink: Sink, runner: ActionRunner, method: str
) -> None:
    ctx = make_ctx()
    config = webhook(sink.url("/g"), method=method)
    assert (await runner.run("webhook", config, ctx)).ok
    [req] = await sink.wait_for(1)
    assert req.method == method
    assert req.body == b""
    assert "content-type" not in req.headers
    assert runner.resolve("webhook", config, ctx)["body"] is None


async def test_webhook_get_with_explicit_body(sink: Sink, runner: ActionRunner) -> None:
    config = webhook(sink.url("/g"), method="GET", body={"q": "{{run.attempt}}"})
    assert (await runner.run("webhook", config, make_ctx())).ok
    [req] = await sink.wait_for(1)
    assert req.json() == {"q": "2"}
    assert req.headers["content-type"] == "application/json"


async def test_webhook_null_body_sends_nothing(sink: Sink, runner: ActionRunner) -> None:
    config = webhook(sink.url("/n"), body=None)
    assert (await runner.run("webhook", config, make_ctx())).ok
    [req] = await sink.wait_for(1)
    assert req.method == "POST"
    assert req.body == b""


@pytest.mark.parametrize(
    ("secret", "key"),
    [(WHSEC, b"0123456789abcdef0123456789abcdef"), ("not-whsec", b"not-whsec")],
)
async def test_webhook_signature_verifies(
    sink: Sink, runner: ActionRunner, secret: str, key: bytes
) -> None:
    ctx = make_ctx()
    config = webhook(sink.url("/signed"), secret=secret)
    assert (await runner.run("webhook", config, ctx)).ok
    [req] = await sink.wait_for(1)
    h = req.headers
    assert h["webhook-id"] == ctx.run_id
    assert h["webhook-timestamp"] == str(int(NOW_S))
    signed = f"{h['webhook-id']}.{h['webhook-timestamp']}.".encode() + req.body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    assert h["webhook-signature"] == f"v1,{expected}"

    resolved = runner.resolve("webhook", config, ctx)
    assert secret not in repr(resolved)
    assert "webhook-signature" not in {k.lower() for k in resolved["headers"]}


async def test_webhook_500_is_http_status_with_excerpt(sink: Sink, runner: ActionRunner) -> None:
    sink.route("/down", status=500, body=b"upstream exploded", content_type="text/plain")
    outcome = await runner.run("webhook", webhook(sink.url("/down")), make_ctx())
    assert outcome == Outcome(
        ok=False,
        error_code="http_status",
        error_message="HTTP 500",
        result={"http_status": 500, "body_excerpt": "upstream exploded"},
    )


async def test_webhook_excerpt_is_capped(sink: Sink, runner: ActionRunner) -> None:
    big = ("é" + "x" * 99) * 200  # 20200 chars, multi-byte included
    sink.route("/big", status=200, body=big.encode(), content_type="text/plain")
    outcome = await runner.run("webhook", webhook(sink.url("/big")), make_ctx())
    assert outcome.ok
    assert outcome.result is not None
    assert outcome.result["body_excerpt"] == big.encode()[:4096].decode("utf-8", errors="replace")


async def test_webhook_redirect_not_followed(sink: Sink, runner: ActionRunner) -> None:
    sink.route("/moved", redirect="/target")
    outcome = await runner.run("webhook", webhook(sink.url("/moved")), make_ctx())
    assert not outcome.ok
    assert outcome.error_code == "http_status"
    assert outcome.error_message is not None and outcome.error_message.startswith("HTTP 302")
    assert outcome.result is not None and outcome.result["http_status"] == 302
    await sink.wait_for(1)
    assert sink.requests_to("/target") == []


async def test_webhook_redirect_followed_when_enabled(sink: Sink) -> None:
    sink.route("/moved", redirect="/target", status=307)
    async with ActionRunner(user_agent=UA, follow_redirects=True, now_s=lambda: NOW_S) as runner:
        outcome = await runner.run("webhook", webhook(sink.url("/moved")), make_ctx())
    assert outcome.ok
    assert [r.path for r in sink.requests] == ["/moved", "/target"]


async def test_webhook_timeout(sink: Sink, runner: ActionRunner) -> None:
    sink.route("/slow", delay=2.0)
    started = time.monotonic()
    outcome = await runner.run("webhook", webhook(sink.url("/slow"), timeout_seconds=1), make_ctx())
    elapsed = time.monotonic() - started
    assert outcome.error_code == "timeout"
    assert not outcome.ok
    assert_short_message(outcome)
    assert elapsed >= 0.9  # it waited for the timeout (the answer would have come at 2 s)


async def test_webhook_connection_refused(runner: ActionRunner) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/hook?token=hunter2"
    outcome = await runner.run(
        "webhook", webhook(url, headers={"Authorization": "Bearer hunter3"}), make_ctx()
    )
    assert not outcome.ok
    assert outcome.error_code == "connection"
    assert_short_message(outcome)
    assert outcome.error_message is not None
    assert outcome.error_message.startswith(f"ConnectError: cannot connect to 127.0.0.1:{port}")
    assert "hunter" not in outcome.error_message


async def test_webhook_cancellation_aborts_request(sink: Sink, runner: ActionRunner) -> None:
    sink.route("/slow", delay=5.0)
    task = asyncio.create_task(runner.run("webhook", webhook(sink.url("/slow")), make_ctx()))
    [req] = await sink.wait_for(1)
    started = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - started < 4.0  # not the sink's 5 s answer
    await sink.wait_until(lambda s: req.aborted, timeout=2.0, what="the request aborted")
    assert not req.answered


async def test_webhook_no_cookie_jar(sink: Sink, runner: ActionRunner) -> None:
    sink.route("/login", headers={"Set-Cookie": "sid=abc; Path=/"})
    assert (await runner.run("webhook", webhook(sink.url("/login")), make_ctx())).ok
    assert (await runner.run("webhook", webhook(sink.url("/next")), make_ctx())).ok
    first, second = await sink.wait_for(2)
    assert (first.path, second.path) == ("/login", "/next")
    assert "cookie" not in second.headers


@pytest.mark.parametrize(
    ("url", "headers", "record"),
    [
        ("https://{{record.host}}/x", {}, {"host": "bad host"}),
        ("https://h.example/x", {"X-A": "{{record.v}}"}, {"v": "a\r\nInjected: 1"}),
    ],
)
async def test_webhook_invalid_after_substitution(
    runner: ActionRunner, url: str, headers: dict[str, str], record: dict[str, Any]
) -> None:
    outcome = await runner.run("webhook", webhook(url, headers=headers), make_ctx(record=record))
    assert not outcome.ok
    assert outcome.error_code == "invalid_request"
    assert_short_message(outcome)


async def test_run_misuse_raises() -> None:
    runner = ActionRunner(user_agent=UA, now_s=lambda: NOW_S)
    with pytest.raises(RuntimeError):
        await runner.run("webhook", webhook("https://h.example/"), make_ctx())
    async with runner:
        with pytest.raises(ValueError, match="worker"):
            await runner.run("worker", {"queue": "q", "payload": None}, make_ctx())
        with pytest.raises(ValueError):
            await runner.run("email", {}, make_ctx())
        assert await runner.run("noop", {}, make_ctx()) == Outcome(ok=True)


def test_resolve_worker_noop_command() -> None:
    runner = ActionRunner(user_agent=UA, now_s=lambda: NOW_S)
    ctx = make_ctx(record={"email": "e@x.example"})
    worker = {"queue": "q", "payload": {"to": "{{record.email}}", "run": "{{run.id}}", "n": 3}}
    assert runner.resolve("worker", worker, ctx) == {"to": "e@x.example", "run": ctx.run_id, "n": 3}
    assert runner.resolve("worker", {"queue": "q", "payload": None}, ctx) is None
    assert runner.resolve("noop", {}, ctx) is None
    cmd = command(["report", "--for", "{{run.scheduled_for}}"], env={"TOKEN": "t"}, cwd="/tmp")
    assert runner.resolve("command", cmd, ctx) == {
        "argv": ["report", "--for", "2026-11-22T09:00:00.000Z"],
        "cwd": "/tmp",
    }
    assert runner.resolve("command", command(["true"]), ctx) == {"argv": ["true"], "cwd": None}


# =============================================================================== commands


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")  # a zombie is dead


async def wait_gone(pid: int, timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


async def wait_pids(path: Path, timeout: float = 5.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, "the command never wrote its pids"
        await asyncio.sleep(0.01)
    return [int(p) for p in path.read_text().split()]


async def test_command_exit_zero_with_output(runner: ActionRunner) -> None:
    outcome = await runner.run(
        "command", command(["sh", "-c", "echo out; echo err >&2"]), make_ctx()
    )
    assert outcome == Outcome(ok=True, result={"exit_status": 0, "output_tail": "out\nerr\n"})


async def test_command_exit_status(runner: ActionRunner) -> None:
    outcome = await runner.run("command", command(["sh", "-c", "echo bye; exit 3"]), make_ctx())
    assert outcome == Outcome(
        ok=False,
        error_code="exit_status",
        error_message="exit status 3",
        result={"exit_status": 3, "output_tail": "bye\n"},
    )


async def test_command_killed_by_signal(runner: ActionRunner) -> None:
    outcome = await runner.run("command", command(["sh", "-c", "kill -9 $$"]), make_ctx())
    assert outcome.error_code == "exit_status"
    assert outcome.error_message == "killed by signal SIGKILL"
    assert outcome.result is not None and outcome.result["exit_status"] == -9


async def test_command_timeout_kills(runner: ActionRunner, tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"
    script = f"echo started; echo $$ > {pidfile}.t && mv {pidfile}.t {pidfile}; exec sleep 30"
    started = time.monotonic()
    outcome = await runner.run(
        "command", command(["sh", "-c", script], timeout_seconds=1), make_ctx()
    )
    elapsed = time.monotonic() - started
    assert outcome.error_code == "timeout"
    assert_short_message(outcome)
    assert outcome.result == {"exit_status": -15, "output_tail": "started\n"}
    assert 0.9 <= elapsed < 15  # killed at its 1 s timeout, not after the 30 s sleep
    [pid] = await wait_pids(pidfile)
    assert await wait_gone(pid)


async def test_command_cancellation_kills_process_group(
    runner: ActionRunner, tmp_path: Path
) -> None:
    pidfile = tmp_path / "pids"
    script = f'sleep 30 & echo "$$ $!" > {pidfile}.t && mv {pidfile}.t {pidfile}; wait'
    task = asyncio.create_task(runner.run("command", command(["sh", "-c", script]), make_ctx()))
    shell_pid, sleep_pid = await wait_pids(pidfile)
    assert pid_alive(shell_pid) and pid_alive(sleep_pid)
    started = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - started < 15  # not the 30 s sleep
    assert not pid_alive(shell_pid)  # the leader is reaped before run() re-raises
    assert await wait_gone(sleep_pid)


async def test_command_cancellation_sigkills_after_grace(
    runner: ActionRunner, tmp_path: Path
) -> None:
    runner.TERM_GRACE_SECONDS = 0.3
    pidfile = tmp_path / "pids"
    script = (
        f"trap '' TERM; sleep 30 & echo \"$$ $!\" > {pidfile}.t && mv {pidfile}.t {pidfile}; wait"
    )
    task = asyncio.create_task(runner.run("command", command(["sh", "-c", script]), make_ctx()))
    shell_pid, sleep_pid = await wait_pids(pidfile)
    started = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert 0.25 <= time.monotonic() - started < 15  # waited the grace, then SIGKILL
    assert not pid_alive(shell_pid)
    assert await wait_gone(sleep_pid)


async def test_command_cancelled_while_spawning_ends_its_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The process runs before loop.subprocess_exec returns (its pipes are still being
    # connected). A cancel in that window once left the group's other members running
    # (asyncio killed the leader alone), and the grace test flaked on a busy box.
    pidfile = tmp_path / "pids"
    loop = asyncio.get_running_loop()
    real = loop.subprocess_exec
    in_spawn = asyncio.Event()

    async def slow_exec(*args: Any, **kwargs: Any) -> Any:
        result = await real(*args, **kwargs)
        await wait_pids(pidfile)
        in_spawn.set()
        await asyncio.sleep(0.2)  # still "spawning" when the cancel comes
        return result

    monkeypatch.setattr(loop, "subprocess_exec", slow_exec)
    script = (f"trap '' TERM; sleep 30 & echo \"$$ $!\" > {pidfile}.t"
              f" && mv {pidfile}.t {pidfile}; wait")
    commands = CommandRunner(allow_commands=True, term_grace_seconds=0.3)
    task = asyncio.create_task(commands.run(command(["sh", "-c", script]), make_ctx()))
    await asyncio.wait_for(in_spawn.wait(), 5)
    shell_pid, sleep_pid = await wait_pids(pidfile)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not pid_alive(shell_pid)
    assert await wait_gone(sleep_pid)


async def test_command_leftovers_are_ended_when_main_exits(runner: ActionRunner) -> None:
    # The background sleep keeps the output pipe open after sh exits.
    started = time.monotonic()
    outcome = await runner.run("command", command(["sh", "-c", "sleep 30 & echo $!"]), make_ctx())
    assert outcome.ok
    assert time.monotonic() - started < 15  # not the leftover 30 s sleep
    assert outcome.result is not None
    assert await wait_gone(int(outcome.result["output_tail"]))


async def test_command_large_output_keeps_tail(runner: ActionRunner) -> None:
    code = "import sys\nfor i in range(100000): sys.stdout.write(f'line {i:08d}\\n')"
    expected = "".join(f"line {i:08d}\n" for i in range(100000))
    assert len(expected) > 1_000_000
    outcome = await runner.run("command", command([sys.executable, "-c", code]), make_ctx())
    assert outcome.ok
    assert outcome.result == {"exit_status": 0, "output_tail": expected[-4096:]}


async def test_command_tail_does_not_start_mid_character(runner: ActionRunner) -> None:
    # 6001 bytes: the last 4096 start on the second byte of an "é".
    code = "import sys\nsys.stdout.buffer.write('é'.encode() * 3000 + b'x')"
    outcome = await runner.run("command", command([sys.executable, "-c", code]), make_ctx())
    assert outcome.result is not None
    assert outcome.result["output_tail"] == "é" * 2047 + "x"


async def test_command_minimal_env_and_placeholders(
    runner: ActionRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCHEDD_TEST_DAEMON_SECRET", "leaked")
    ctx = make_ctx()
    config = command(
        [
            "sh",
            "-c",
            'echo "$1|$GREETING|${SCHEDD_TEST_DAEMON_SECRET:-unset}|${PATH:+path}"',
            "sh",
            "{{run.id}}",
        ],
        env={"GREETING": "hi {{schedule.name}}"},
    )
    outcome = await runner.run("command", config, ctx)
    assert outcome.ok
    assert outcome.result is not None
    assert outcome.result["output_tail"] == f"{ctx.run_id}|hi nightly report|unset|path\n"


async def test_command_cwd(runner: ActionRunner, tmp_path: Path) -> None:
    outcome = await runner.run("command", command(["pwd"], cwd=str(tmp_path)), make_ctx())
    assert outcome.result is not None
    assert outcome.result["output_tail"] == f"{tmp_path}\n"


@pytest.mark.parametrize(
    "config",
    [
        {"argv": ["/nonexistent/program"], "env": {}, "timeout_seconds": 5},
        {"argv": ["definitely-not-a-command-xyz"], "env": {}, "timeout_seconds": 5},
        {"argv": ["true"], "env": {}, "cwd": "/nonexistent-dir-xyz", "timeout_seconds": 5},
        {"argv": [os.devnull], "env": {}, "timeout_seconds": 5},
    ],
)
async def test_command_spawn_failed(runner: ActionRunner, config: dict[str, Any]) -> None:
    outcome = await runner.run("command", config, make_ctx())
    assert not outcome.ok
    assert outcome.error_code == "spawn_failed"
    assert_short_message(outcome)


async def test_command_disabled_at_run_time(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    async with ActionRunner(user_agent=UA, allow_commands=False, now_s=lambda: NOW_S) as runner:
        outcome = await runner.run("command", command(["touch", str(marker)]), make_ctx())
    assert outcome.error_code == "commands_disabled"
    assert not marker.exists()


def test_a_webhook_payload_is_kept_for_the_run_envelope() -> None:
    # SPEC 3.4: the default body is the run envelope, whose `payload` comes from the config
    config = validate_action_config(
        "webhook", {"url": "http://127.0.0.1:9/h", "payload": {"invoice": 7}},
        allow_commands=False)
    assert config["payload"] == {"invoice": 7}
    ctx = make_ctx(payload=config["payload"])
    runner = ActionRunner(user_agent=UA, now_s=lambda: NOW_S)
    assert runner.resolve("webhook", config, ctx)["body"]["payload"] == {"invoice": 7}


async def test_a_records_run_carries_its_record(sink: Sink, runner: ActionRunner) -> None:
    # a relative schedule's run: envelope "record", X-Schedd-Record-Key, {{record.*}}
    ctx = make_ctx(record_key="cus 42/ü", record={"email": "ann@example.com", "seats": 3,
                                                  "key": "a field named key"})
    outcome = await runner.run("webhook", webhook(sink.url("/r")), ctx)
    assert outcome.ok
    [req] = await sink.wait_for(1)
    assert req.json()["record"] == {"key": "cus 42/ü", "data": ctx.record}
    assert req.headers["x-schedd-record-key"] == "cus%2042%2F%C3%BC"  # percent-encoded UTF-8
    config = webhook(sink.url("/t/{{record.email}}"), headers={"X-Who": "{{record.key}}"},
                     body={"k": "{{record.key}}", "n": "{{record.seats}}",
                           "gone": "{{record.nope}}"})
    assert (await runner.run("webhook", config, ctx)).ok
    [_, req] = await sink.wait_for(2)
    assert req.path == "/t/ann@example.com"
    assert req.json() == {"k": "cus 42/ü", "n": "3", "gone": "{{record.nope}}"}
    # the record was deleted before the run started: its key, data null
    gone = make_ctx(record_key="cus_1", record=None)
    assert (await runner.run("webhook", webhook(sink.url("/g")), gone)).ok
    [*_, req] = await sink.wait_for(3)
    assert req.json()["record"] == {"key": "cus_1", "data": None}
    assert req.headers["x-schedd-record-key"] == "cus_1"
    # a schedule that is not relative: no record, no header
    assert (await runner.run("webhook", webhook(sink.url("/n")), make_ctx())).ok
    [*_, req] = await sink.wait_for(4)
    assert "record" not in req.json() and "x-schedd-record-key" not in req.headers


def test_an_outcome_message_never_holds_nul() -> None:
    # PostgreSQL's text cannot store U+0000: a message quoting a receiver or a backend that
    # held one would make the outcome's write fail forever. It is shown as U+FFFD instead.
    import msgspec

    from schedd.outcomes import Outcome

    assert Outcome(ok=False, error_code="x", error_message="a\x00b").error_message == "a\ufffdb"
    decoded = msgspec.json.decode(b'{"ok": false, "error_message": "c\\u0000"}', type=Outcome)
    assert decoded.error_message == "c\ufffd"
    assert Outcome(ok=True).error_message is None
