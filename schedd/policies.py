"""Pure policy decisions (SPEC §5). No I/O, no clock: `now` and randomness are arguments."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from schedd.models import OverlapPolicy, TriggerType

# An occurrence claimed no later than this after its time is "scheduled"; later it is
# "catchup" (the loop was behind: downtime, suspend, overload), and past the catch-up window
# (never less than this grace) it is missed.
ON_TIME_MS = 1000


def backoff_ms(attempt: int, base_s: float, cap_s: float, rand: float) -> int:
    """Delay before attempt `attempt + 1` after attempt `attempt` failed:
    base × 2^(attempt−1) with ±10 % jitter, never more than the cap. `rand` is uniform
    in [0, 1)."""
    raw: float = base_s * float(2 ** min(max(0, attempt - 1), 60))
    return max(0, round(min(raw * (0.9 + 0.2 * rand), cap_s) * 1000))


def flex_offset_ms(schedule_id: str, occurrence_ms: int, window_minutes: int) -> int:
    """A pseudo-random start offset in [0, window], fixed per (schedule, occurrence), so a
    restart does not move it."""
    if window_minutes <= 0:
        return 0
    digest = hashlib.blake2b(f"{schedule_id}:{occurrence_ms}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % (window_minutes * 60_000 + 1)


def missed_cutoff_ms(now_ms: int, catchup_window_minutes: int) -> int:
    """Occurrences strictly before this instant are missed, not run."""
    return now_ms - max(catchup_window_minutes * 60_000, ON_TIME_MS)


def trigger_for(occurrence_ms: int, now_ms: int, newer_due: bool) -> TriggerType:
    """scheduled when claimed on time and nothing newer is due; catchup otherwise."""
    if newer_due or now_ms - occurrence_ms > ON_TIME_MS:
        return TriggerType.catchup
    return TriggerType.scheduled


@dataclass(frozen=True)
class OverlapDecision:
    run: bool  # start (or queue) it
    buffered: bool = False  # waits for the active run to end (BUFFER_*)
    cancel_active: bool = False  # CANCEL_OTHER: cancel the active runs first


# the four decisions there are, made once (a frozen dataclass costs ~1 µs to build, and one
# is asked for every occurrence claimed)
_RUN = OverlapDecision(run=True)
_SKIP = OverlapDecision(run=False)
_BUFFER = OverlapDecision(run=True, buffered=True)
_CANCEL_ACTIVE = OverlapDecision(run=True, cancel_active=True)


def overlap(policy: OverlapPolicy, active: int, buffered: int) -> OverlapDecision:
    """What to do with a new occurrence while `active` runs of the schedule are pending or
    running (`buffered` of them waiting on BUFFER_*)."""
    if active <= 0 or policy is OverlapPolicy.ALLOW:
        return _RUN
    if policy is OverlapPolicy.SKIP:
        return _SKIP
    if policy is OverlapPolicy.BUFFER_ONE:
        return _BUFFER if buffered == 0 else _SKIP
    if policy is OverlapPolicy.BUFFER_ALL:
        return _BUFFER
    return _CANCEL_ACTIVE


def rate_limited_start(due_ms: int, planned: list[int], per_minute: int | None) -> int:
    """The earliest start >= due_ms that keeps at most `per_minute` starts in any 60 s,
    given the schedule's other planned starts (sorted, the last minute's and any deferred
    ones). Deferred, never dropped: appending the result keeps `planned` valid."""
    if not per_minute or len(planned) < per_minute:
        return due_ms
    return max(due_ms, planned[-per_minute] + 60_000)
