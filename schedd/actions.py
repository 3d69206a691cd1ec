"""Actions: resolve and run one attempt of a webhook, command, worker or noop action.

`ActionRunner.prepare` resolves an action once per run (placeholders filled; what the run's
record keeps as resolved_payload), `ActionRunner.run_prepared` performs one attempt and
*always* answers an `Outcome`: an action that fails is a value, never an exception. Only
cancellation propagates (the engine cancels the task running it), after the request was
aborted or the command's process group was ended.

Each kind lives in its own module, and `ActionRunner` dispatches through one
``{ActionType: executor}`` table:

- schedd/action_config.py: validation of a client's action_config, and redaction;
- schedd/templates.py: placeholders;
- schedd/webhooks.py: building, signing and sending webhook requests;
- schedd/commands.py: running commands as process groups;
- schedd/outcomes.py: `Outcome`, `RunContext` and short, secret-free error messages.

Worker actions are not run here: the engine hands them to queues; their resolved payload is
the substituted config ``payload``. Any other exception inside an action (a bug, an
unforeseen library error) becomes ``internal_error`` with the exception's class name, so the
engine's task survives it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol

from schedd.action_config import (
    ACTION_TYPES,
    REDACTED,
    merge_redacted,
    redact_config,
    validate_action_config,
)
from schedd.commands import CommandRunner
from schedd.config import Settings
from schedd.models import ActionType
from schedd.netpolicy import DEFAULT_DENY_NETWORKS, NetworkPolicy
from schedd.outcomes import EXCERPT_BYTES, Outcome, RunContext, describe
from schedd.templates import substitute
from schedd.webhooks import (
    WebhookRequest,
    WebhookSender,
    build_request,
    redacted_request,
    sign_webhook,
)

__all__ = [
    "ACTION_TYPES",
    "EXCERPT_BYTES",
    "REDACTED",
    "ActionRunner",
    "Outcome",
    "Prepared",
    "RunContext",
    "merge_redacted",
    "redact_config",
    "sign_webhook",
    "substitute",
    "validate_action_config",
]

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class Prepared:
    """An action resolved once for one run: what its record keeps (`resolved`) and what
    running it needs (`request`: the built webhook request, None for other kinds)."""

    action_type: str
    config: dict[str, Any]
    ctx: RunContext
    resolved: Any
    request: Any = None
    error: BaseException | None = None


class _Executor(Protocol):
    def resolve(self, config: dict[str, Any], ctx: RunContext) -> tuple[Any, Any]:
        """(resolved payload, what `run` needs besides config and ctx)."""
        ...

    def start(self, p: Prepared) -> Awaitable[Outcome]:
        """The attempt, to await. Raises at once for misuse (RuntimeError: not open;
        ValueError: not run here)."""
        ...


class _Webhook:
    def __init__(self, sender: WebhookSender, user_agent: str) -> None:
        self._sender = sender
        self._user_agent = user_agent

    def resolve(self, config: dict[str, Any], ctx: RunContext) -> tuple[Any, WebhookRequest]:
        req = build_request(config, ctx, self._user_agent)
        return redacted_request(req), req

    def start(self, p: Prepared) -> Awaitable[Outcome]:
        if not self._sender.is_open:
            raise RuntimeError("ActionRunner is not open (use `async with`)")
        return self._sender.send(p.config, p.ctx, p.request)


class _Command:
    def __init__(self, commands: CommandRunner) -> None:
        self.commands = commands

    def resolve(self, config: dict[str, Any], ctx: RunContext) -> tuple[Any, None]:
        return {"argv": substitute(list(config["argv"]), ctx), "cwd": config.get("cwd")}, None

    def start(self, p: Prepared) -> Awaitable[Outcome]:
        return self.commands.run(p.config, p.ctx)


class _Worker:
    def resolve(self, config: dict[str, Any], ctx: RunContext) -> tuple[Any, None]:
        return substitute(config.get("payload"), ctx), None

    def start(self, p: Prepared) -> Awaitable[Outcome]:
        raise ValueError("worker actions are handed to queues by the engine, not run here")


class _Noop:
    def resolve(self, config: dict[str, Any], ctx: RunContext) -> tuple[None, None]:
        return None, None

    def start(self, p: Prepared) -> Awaitable[Outcome]:
        return _succeed()


async def _succeed() -> Outcome:
    return Outcome(ok=True)


def _internal_error(action_type: str, exc: BaseException) -> Outcome:
    # A bug or an unforeseen library error must not kill the engine's task.
    logger.warning("%s action failed unexpectedly: %s", action_type, type(exc).__name__)
    logger.debug("unexpected action error", exc_info=exc)
    return Outcome(ok=False, error_code="internal_error", error_message=describe(exc))


class ActionRunner:
    """Runs webhook, command and noop actions. Open it once (`async with`) for the
    daemon's lifetime: it holds the one shared aiohttp ClientSession."""

    def __init__(
        self,
        *,
        user_agent: str,
        max_connections: int = 256,
        max_per_host: int = 64,
        follow_redirects: bool = False,
        allow_commands: bool = False,
        lean_http: bool = True,
        deny_networks: Iterable[str] = DEFAULT_DENY_NETWORKS,
        allow_private: bool = True,
        now_s: Callable[[], float],
    ) -> None:
        """lean_http: plain-http webhooks go through schedd.webhook_http (not when
        redirects are followed); everything else, and all with False, through aiohttp.
        deny_networks, allow_private: the network policy (schedd/netpolicy.py), checked
        on the resolved address of every new webhook connection."""
        self._webhooks = WebhookSender(max_connections=max_connections,
                                       max_per_host=max_per_host,
                                       follow_redirects=follow_redirects,
                                       lean_http=lean_http,
                                       policy=NetworkPolicy(deny_networks, allow_private),
                                       now_s=now_s)
        self._commands = CommandRunner(allow_commands=allow_commands)
        self._executors: dict[str, _Executor] = {
            ActionType.webhook: _Webhook(self._webhooks, user_agent),
            ActionType.command: _Command(self._commands),
            ActionType.worker: _Worker(),
            ActionType.noop: _Noop(),
        }

    @classmethod
    def from_settings(cls, settings: Settings, *, user_agent: str,
                      now_s: Callable[[], float]) -> ActionRunner:
        """The runner the daemon uses: every [actions] setting applied."""
        return cls(
            user_agent=user_agent,
            max_connections=settings.webhook_max_connections,
            max_per_host=settings.webhook_max_connections_per_host,
            follow_redirects=settings.webhook_follow_redirects,
            allow_commands=settings.allow_commands,
            lean_http=settings.webhook_client == "lean",
            deny_networks=settings.webhook_deny_networks,
            allow_private=settings.webhook_allow_private,
            now_s=now_s,
        )

    def set_wait_hook(self, hook: Callable[[str], None] | None) -> None:
        """hook(run_id) is called when a webhook must wait for one of its host's
        connections (the engine then stops counting the run against its capacity)."""
        self._webhooks.on_wait = hook

    @property
    def TERM_GRACE_SECONDS(self) -> float:
        """Seconds between SIGTERM and SIGKILL when a command's group is ended."""
        return self._commands.term_grace_seconds

    @TERM_GRACE_SECONDS.setter
    def TERM_GRACE_SECONDS(self, seconds: float) -> None:
        self._commands.term_grace_seconds = seconds

    async def __aenter__(self) -> ActionRunner:
        if self._webhooks.is_open:
            raise RuntimeError("ActionRunner is already open")
        await self._webhooks.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._webhooks.__aexit__(exc_type, exc, tb)

    def _executor(self, action_type: str) -> _Executor:
        try:
            return self._executors[action_type]
        except KeyError:
            raise ValueError(f"unknown action type {action_type!r}") from None

    # ---------------------------------------------------------------- resolve

    def resolve(self, action_type: str, config: dict[str, Any], ctx: RunContext) -> Any:
        """What the action will send, kept as the run's resolved_payload (never a secret)."""
        return self._executor(action_type).resolve(config, ctx)[0]

    def prepare(self, action_type: str, config: dict[str, Any], ctx: RunContext) -> Prepared:
        """Resolve an action once for both its record and its run (placeholders filled,
        headers built). Never raises: a config that cannot be resolved is kept as an error
        in `resolved`, and running it fails with internal_error. An unknown action type is
        a bug of the caller and raises ValueError."""
        executor = self._executor(action_type)
        try:
            resolved, request = executor.resolve(config, ctx)
            return Prepared(action_type, config, ctx, resolved, request)
        except Exception as exc:
            return Prepared(action_type, config, ctx,
                            {"error": f"cannot resolve the action: {type(exc).__name__}"},
                            None, exc)

    # ---------------------------------------------------------------- run

    async def run(self, action_type: str, config: dict[str, Any], ctx: RunContext) -> Outcome:
        """One attempt. Failures are Outcomes; only cancellation (and misuse) raises."""
        if action_type == ActionType.worker:
            raise ValueError("worker actions are handed to queues by the engine, not run here")
        return await self.run_prepared(self.prepare(action_type, config, ctx))

    async def run_prepared(self, p: Prepared) -> Outcome:
        """Run what prepare() resolved (see run())."""
        if p.error is not None:
            return _internal_error(p.action_type, p.error)
        attempt = self._executor(p.action_type).start(p)
        try:
            return await attempt
        except Exception as exc:
            return _internal_error(p.action_type, exc)
