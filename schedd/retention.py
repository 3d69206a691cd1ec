"""Run history retention: runs older than run_retention_days are deleted in small write
transactions, each schedule keeping at least its newest 100 runs. Batches are short and
the pruner yields between them, so the scheduler loop (which shares the writer) is never
held up for more than one batch."""

from __future__ import annotations

import asyncio
import logging

from schedd.clock import Clock
from schedd.store import Store

log = logging.getLogger("schedd.retention")

KEEP_PER_SCHEDULE = 100
BATCH = 200
DAY_MS = 86_400_000


async def prune_once(store: Store, now_ms: int, retention_days: int, *,
                     keep: int = KEEP_PER_SCHEDULE, batch: int = BATCH,
                     pause_s: float = 0.0) -> int:
    """One pass over the runs table; returns how many runs were deleted."""
    cutoff = now_ms - retention_days * DAY_MS
    deleted, after = 0, 0
    while True:
        n, last = await store.db.write(store.prune_runs_batch, after, cutoff, keep, batch)
        deleted += n
        if last is None:
            break
        after = last
        await asyncio.sleep(pause_s)  # let the loop and the API have the writer
    if deleted:
        log.info("pruned %d run(s) older than %d day(s)", deleted, retention_days)
    return deleted


async def pruner(store: Store, clock: Clock, retention_days: int,
                 interval_s: float = 3600.0) -> None:
    """Prune at start and then every interval_s, until cancelled."""
    while True:
        try:
            await prune_once(store, clock.now_ms(), retention_days, pause_s=0.005)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("pruning run history failed; trying again later")
        await asyncio.sleep(interval_s)
