"""The `external` backend: workers anywhere do the work (SPEC 3.6).

A run waits on worker queue `executionConfig.queue` (default `sync.<providerKey>`); a
worker claims it (`POST /v1/worker/claim`), heartbeats it (`POST /v1/runs/{id}/heartbeat`,
shown as the sync run's lastHeartbeatAt; the answer says when the run was cancelled) and
completes it (`POST /v1/runs/{id}/complete`, its `result` is the sync run's summary). A
lease that runs out fails the attempt with `heartbeat_timeout`, and the schedule's retry
policy chains the next attempt. The claimed run's `resolved_payload` is the sync envelope
built by `payload()`.
"""

from __future__ import annotations

import re
from typing import Any

from schedd.errors import InvalidField

NAME = "external"
KEYS = ("queue", "payload", "maxRetries", "retryBackoffSeconds")
_QUEUE = re.compile(r"[A-Za-z0-9_.:-]{1,200}")


def default_queue(provider_key: str) -> str:
    return f"sync.{provider_key}"


def validate(config: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(config) - set(KEYS))
    if unknown:
        raise InvalidField(("body", "executionConfig", unknown[0]),
                           "unknown key; an external executionConfig has queue, payload, "
                           "maxRetries, retryBackoffSeconds", "extra_forbidden")
    out: dict[str, Any] = {}
    if "queue" in config:
        queue = config["queue"]
        if not isinstance(queue, str) or not _QUEUE.fullmatch(queue):
            raise InvalidField(("body", "executionConfig", "queue"),
                               "must be 1..200 characters of A-Z a-z 0-9 _ . : -")
        out["queue"] = queue
    if "payload" in config:
        out["payload"] = config["payload"]
    return out


def action_config(queue: str, envelope: dict[str, Any]) -> dict[str, Any]:
    """The `worker` action a sync's schedule carries."""
    return {"queue": queue, "payload": envelope}
