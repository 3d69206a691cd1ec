"""Command actions: run a local program as its own process group, keep its output's tail.

Decisions (the spec leaves these open):
- Never a shell: argv is executed as given (after substitution), stdin ``/dev/null``,
  stdout and stderr merged into one pipe of which only the last 4096 bytes are kept
  (constant memory, whatever the output size), ``start_new_session``.
- Environment: not the daemon's. Only ``PATH`` (default ``/usr/local/bin:/usr/bin:/bin``),
  ``HOME``, ``LANG``, ``LC_ALL``, ``TZ`` and ``TMPDIR`` are passed on, then the config's
  ``env`` on top. The daemon's own environment may hold secrets.
- ``cwd`` absent: the daemon's working directory.
- Spawned through ``loop.subprocess_exec`` with a small protocol rather than
  ``asyncio.create_subprocess_exec``: on 3.11 ``Process.wait()`` only returns once every
  pipe is closed, so a background grandchild holding stdout would hide the main exit.
- A run is its process group: when the main process exits, anything it left in its group
  gets SIGTERM (and SIGKILL after the grace if something still holds the output pipe), as
  systemd does for a oneshot unit. On timeout or cancellation the group gets SIGTERM, up to
  ``CommandRunner.term_grace_seconds`` (5 s) to finish, then SIGKILL; the main process is
  reaped before `run` returns or re-raises. A process that left the group (setsid) escapes.
- Error codes: ``exit_status`` (non-zero exit, or killed by a signal: ``exit_status`` is
  then ``-signum`` and the message names the signal), ``timeout`` (result still carries the
  tail), ``spawn_failed`` (argv[0] not found or not executable, cwd missing ...; clearer
  than a fake exit status), ``commands_disabled`` (the config allowed commands when the
  schedule was created, not any more: the run fails instead of executing),
  ``invalid_request`` (a NUL byte after substitution).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
from collections.abc import Awaitable
from typing import Any, Final

from schedd.action_config import COMMAND_TIMEOUT_DEFAULT
from schedd.outcomes import EXCERPT_BYTES, Outcome, RunContext, describe, fmt_seconds
from schedd.templates import substitute

__all__ = ["CommandRunner"]

logger = logging.getLogger(__name__)

_INHERITED_ENV: Final = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR")
_DEFAULT_PATH: Final = "/usr/local/bin:/usr/bin:/bin"


class CommandRunner:
    """Runs command actions (one attempt per `run`)."""

    def __init__(self, *, allow_commands: bool, term_grace_seconds: float = 5.0) -> None:
        self.allow_commands = allow_commands
        #: Seconds between SIGTERM and SIGKILL when a command's group is ended.
        self.term_grace_seconds = term_grace_seconds

    async def run(self, config: dict[str, Any], ctx: RunContext) -> Outcome:
        """One attempt. Failures are Outcomes; on cancellation the process group is ended
        and the main process reaped before CancelledError propagates."""
        if not self.allow_commands:
            return Outcome(
                ok=False,
                error_code="commands_disabled",
                error_message="command actions are disabled; set [actions] allow_commands = true",
            )
        argv: list[str] = substitute(list(config["argv"]), ctx)
        env = _minimal_env()
        env.update(substitute(dict(config.get("env") or {}), ctx))
        cwd: str | None = config.get("cwd")
        timeout = float(config.get("timeout_seconds", COMMAND_TIMEOUT_DEFAULT))
        if any("\x00" in s for s in [*argv, *env.values()]):
            return Outcome(
                ok=False,
                error_code="invalid_request",
                error_message="argv or env holds a NUL character after substitution",
            )

        loop = asyncio.get_running_loop()
        spawn = asyncio.ensure_future(loop.subprocess_exec(
            lambda: _TailProtocol(loop),
            *argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
        ))
        try:
            # shielded: the process runs before subprocess_exec returns (its pipes are
            # still being connected); cancelled there, asyncio would kill the leader
            # alone and leave the rest of its group running
            transport, proto = await asyncio.shield(spawn)
        except asyncio.CancelledError:
            await _finish_despite_cancel(self._end_spawned(spawn))
            raise
        except (OSError, ValueError) as exc:
            return Outcome(ok=False, error_code="spawn_failed", error_message=describe(exc))

        pgid = transport.get_pid()  # start_new_session: the child leads its own group
        timed_out = False
        try:
            if await _wait_done(proto.exited, timeout):
                await self._settle_after_exit(pgid, proto)
            else:
                timed_out = True
                await self._end_group(pgid, proto)
        except asyncio.CancelledError:
            await _finish_despite_cancel(self._end_group(pgid, proto))
            raise
        finally:
            transport.close()

        returncode = transport.get_returncode()
        result = {"exit_status": returncode, "output_tail": proto.output_tail()}
        if timed_out:
            return Outcome(
                ok=False,
                error_code="timeout",
                error_message=f"timed out after {fmt_seconds(timeout)} s; process group ended",
                result=result,
            )
        if returncode == 0:
            return Outcome(ok=True, result=result)
        if returncode is None:
            message = "exit status unknown"
        elif returncode < 0:
            message = f"killed by signal {_signal_name(-returncode)}"
        else:
            message = f"exit status {returncode}"
        return Outcome(ok=False, error_code="exit_status", error_message=message, result=result)

    async def _end_spawned(
        self, spawn: asyncio.Future[tuple[asyncio.SubprocessTransport, _TailProtocol]]
    ) -> None:
        """Cancelled while spawning: once the spawn is done, end the group it started."""
        try:
            transport, proto = await spawn
        except (OSError, ValueError):
            return  # nothing runs
        try:
            await self._end_group(transport.get_pid(), proto)
        finally:
            transport.close()

    async def _end_group(self, pgid: int, proto: _TailProtocol) -> None:
        """SIGTERM the process group, wait for the grace, then SIGKILL; reap the leader."""
        _killpg(pgid, signal.SIGTERM)
        if await _wait_done(proto.closed, self.term_grace_seconds):
            return
        _killpg(pgid, signal.SIGKILL)
        await _wait_done(proto.exited, 5.0)
        # Only a process that left the group (setsid) can still hold the pipe now.
        await _wait_done(proto.closed, 1.0)

    async def _settle_after_exit(self, pgid: int, proto: _TailProtocol) -> None:
        """The main process exited: end what it left in its group, drain the pipe."""
        if _group_alive(pgid):
            await self._end_group(pgid, proto)
        else:
            await _wait_done(proto.closed, 1.0)


class _TailProtocol(asyncio.SubprocessProtocol):
    """Keeps the last `limit` bytes of the merged output; signals exit and close."""

    def __init__(self, loop: asyncio.AbstractEventLoop, limit: int = EXCERPT_BYTES) -> None:
        self.limit = limit
        self.tail = bytearray()
        self.truncated = False
        self.exited: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()

    def pipe_data_received(self, fd: int, data: bytes | str) -> None:
        if isinstance(data, str):
            data = data.encode()
        self.tail += data
        if len(self.tail) > self.limit:
            del self.tail[: len(self.tail) - self.limit]
            self.truncated = True

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.exited.done():
            self.exited.set_result(None)
        if not self.closed.done():
            self.closed.set_result(None)

    def output_tail(self) -> str:
        data = bytes(self.tail)
        if self.truncated:
            # Do not start the tail in the middle of a UTF-8 sequence.
            skip = 0
            while skip < min(3, len(data)) and 0x80 <= data[skip] <= 0xBF:
                skip += 1
            data = data[skip:]
        return data.decode("utf-8", errors="replace")


async def _wait_done(fut: asyncio.Future[None], seconds: float) -> bool:
    """Wait up to `seconds` for `fut` without cancelling it; answer whether it is done."""
    if not fut.done():
        await asyncio.wait({fut}, timeout=seconds)
    return fut.done()


def _killpg(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def _finish_despite_cancel(aw: Awaitable[None]) -> None:
    """Run a (bounded) cleanup to its end even if the caller is cancelled again."""
    task = asyncio.ensure_future(aw)
    while not task.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(task)
    if not task.cancelled() and task.exception() is not None:
        logger.warning("command cleanup failed: %s", type(task.exception()).__name__)


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _minimal_env() -> dict[str, str]:
    env = {name: os.environ[name] for name in _INHERITED_ENV if name in os.environ}
    env.setdefault("PATH", _DEFAULT_PATH)
    return env
