"""The nodes' signals over a real PostgreSQL's LISTEN/NOTIFY (schedd/notify_pg.py): what one
node publishes reaches the others' handlers and not its own, a burst of wake-ups is folded
into one signal, and closing stops both threads."""

from __future__ import annotations

import asyncio
import threading

from schedd.notify import CANCEL, QUEUED, WAKE, decode, encode
from schedd.notify_pg import PgNotifier, _fold


async def _until(cond: object, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():  # type: ignore[operator]
        if loop.time() > end:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.01)


async def test_a_signal_reaches_the_other_nodes_and_not_its_sender(pg_url: str) -> None:
    a, b = PgNotifier(pg_url), PgNotifier(pg_url)
    got_a: list[tuple[str, str]] = []
    got_b: list[tuple[str, str]] = []
    a.subscribe("node-a", lambda kind, arg: got_a.append((kind, arg)))
    b.subscribe("node-b", lambda kind, arg: got_b.append((kind, arg)))
    await a.start()
    await b.start()
    try:
        a.publish("node-a", CANCEL, "run-1")
        a.publish("node-a", QUEUED)
        b.publish("node-b", WAKE, "1234")
        await _until(lambda: len(got_b) == 2 and len(got_a) == 1)
        assert got_b == [(CANCEL, "run-1"), (QUEUED, "")]
        assert got_a == [(WAKE, "1234")]
        await asyncio.sleep(0.2)  # nothing else comes: no echo of one's own signals
        assert len(got_a) == 1 and len(got_b) == 2
    finally:
        await a.close()
        await b.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("schedd-notify")]


def test_a_burst_of_wakes_is_folded_into_the_earliest() -> None:
    batch = [encode("n1", WAKE, "500"), encode("n1", CANCEL, "r1"), encode("n1", WAKE, "300"),
             encode("n2", WAKE, "900"), encode("n1", CANCEL, "r1"), encode("n1", QUEUED, "")]
    folded = [decode(p) for p in _fold(batch)]
    assert folded == [("n1", CANCEL, "r1"), ("n1", QUEUED, ""), ("n1", WAKE, "300"),
                      ("n2", WAKE, "900")]
    # a wake with no instant (now) wins over any instant
    assert [decode(p) for p in _fold([encode("n1", WAKE, "5"), encode("n1", WAKE, "")])] == [
        ("n1", WAKE, "")]
