"""Time, injected. Only this module reads the system clock.

Wall time (epoch milliseconds) decides what is due; monotonic time paces sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Protocol


class Clock(Protocol):
    def now_ms(self) -> int:
        """Wall-clock time as integer epoch milliseconds."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (for liveness, not for due times)."""
        ...

    async def sleep_until(self, due_ms: int, wake: asyncio.Event, cap_s: float) -> None:
        """Return at due_ms, when `wake` is set, or after cap_s seconds, whichever is first."""
        ...


class SystemClock:
    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep_until(self, due_ms: int, wake: asyncio.Event, cap_s: float) -> None:
        delay = min(max(0.0, (due_ms - self.now_ms()) / 1000.0), cap_s)
        if delay <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), timeout=delay)


class FakeClock:
    """A clock tests move by hand. Nothing waits on real time: sleep_until returns once the
    fake time reaches the deadline (through advance()/set()) or `wake` is set."""

    def __init__(self, start_ms: int) -> None:
        self._now = start_ms
        self._moved: asyncio.Event | None = None
        self.sleeps: list[int] = []

    def now_ms(self) -> int:
        return self._now

    def monotonic(self) -> float:
        return self._now / 1000.0

    def set(self, ms: int) -> None:
        self._now = ms
        if self._moved is not None:
            self._moved.set()
            self._moved = None

    def advance(self, ms: int) -> int:
        self.set(self._now + ms)
        return self._now

    async def sleep_until(self, due_ms: int, wake: asyncio.Event, cap_s: float) -> None:
        deadline = min(due_ms, self._now + int(cap_s * 1000))
        self.sleeps.append(deadline)
        while self._now < deadline and not wake.is_set():
            if self._moved is None:
                self._moved = asyncio.Event()
            moved = asyncio.ensure_future(self._moved.wait())
            woken = asyncio.ensure_future(wake.wait())
            try:
                await asyncio.wait({moved, woken}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                moved.cancel()
                woken.cancel()
        await asyncio.sleep(0)
