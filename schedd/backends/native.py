"""The `native` backend: schedd runs the sync itself, as a native action (SPEC 3.4).

executionConfig is `{"action_type": "webhook" | "command" | "noop", "action_config": {...}}`,
validated exactly as /v1 validates an action (errors are named under
`["body", "executionConfig", ...]`), plus the common knobs `maxRetries` and
`retryBackoffSeconds`. The engine runs it like any schedule's action.
"""

from __future__ import annotations

from typing import Any

from schedd import actions
from schedd.errors import InvalidField

NAME = "native"
ACTION_TYPES = ("webhook", "command", "noop")
KEYS = ("action_type", "action_config", "maxRetries", "retryBackoffSeconds")


def has_action(config: dict[str, Any]) -> bool:
    return "action_type" in config


def validate(config: dict[str, Any], *, allow_commands: bool) -> tuple[str, dict[str, Any]]:
    """(action_type, normalised action_config) of a native executionConfig that has one."""
    unknown = sorted(set(config) - set(KEYS))
    if unknown:
        raise InvalidField(("body", "executionConfig", unknown[0]),
                           "unknown key; a native executionConfig has action_type, "
                           "action_config, maxRetries, retryBackoffSeconds", "extra_forbidden")
    action_type = config.get("action_type")
    if action_type not in ACTION_TYPES:
        raise InvalidField(("body", "executionConfig", "action_type"),
                           f"must be one of {', '.join(ACTION_TYPES)} (a worker queue is the "
                           f"`external` backend)", "enum")
    try:
        normalised = actions.validate_action_config(
            action_type, config.get("action_config", {}), allow_commands=allow_commands)
    except InvalidField as exc:
        raise InvalidField(("body", "executionConfig", *exc.loc[1:]), exc.msg, exc.type) from None
    return str(action_type), normalised


def redact(config: dict[str, Any]) -> dict[str, Any]:
    """executionConfig as reads show it: secrets and sensitive headers/env redacted."""
    out = dict(config)
    inner = config.get("action_config")
    if isinstance(inner, dict) and isinstance(config.get("action_type"), str):
        out["action_config"] = actions.redact_config(config["action_type"], inner)
    return out
