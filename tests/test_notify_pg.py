"""The nodes' signals over a real PostgreSQL's LISTEN/NOTIFY (schedd/notify_pg.py): what one
node publishes reaches the others' handlers and not its own, a burst of wake-ups is folded
into one signal, closing stops both threads, and a listener that reconnected tells its
subscribers that signals were lost."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import psycopg
import pytest

from schedd import notify_pg
from schedd.notify import CANCEL, LOST, QUEUED, REVOKED, WAKE, decode, encode
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


def hold_reconnect(notifier: PgNotifier) -> tuple[threading.Event, threading.Event]:
    """(reconnecting, allow): the notifier's listener, once it has listened, waits at its
    next connect (a reconnect) until `allow` is set, having set `reconnecting`: a test can
    then act in the gap however slow the box is. Started or not."""
    reconnecting, allow = threading.Event(), threading.Event()
    real = notifier._connect

    def connect(role: str) -> Any:
        if role == "listen" and notifier._listening.is_set():
            reconnecting.set()
            assert allow.wait(30)
        return real(role)

    notifier._connect = connect  # type: ignore[method-assign]
    return reconnecting, allow


def terminate_listener(url: str) -> None:
    """End the listening connections' backends on `url`'s database, as a server restart or
    a network failure would."""
    with psycopg.connect(url, autocommit=True) as conn:
        ended = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name"
            " = 'schedd-notify-listen' AND datname = current_database()").fetchall()
    assert ended and all(ok for (ok,) in ended), ended


async def test_a_reconnected_listener_tells_every_subscriber_that_signals_were_lost(
        pg_url: str) -> None:
    a, b = PgNotifier(pg_url), PgNotifier(pg_url)
    got: dict[str, list[tuple[str, str]]] = {"engine": [], "auth": []}
    a.subscribe("node-a", lambda kind, arg: None)
    b.subscribe("node-b", lambda kind, arg: got["engine"].append((kind, arg)))
    b.subscribe("node-b/auth", lambda kind, arg: got["auth"].append((kind, arg)))
    reconnecting, allow = hold_reconnect(b)
    await a.start()
    await b.start()
    try:
        a.publish("node-a", WAKE, "1")
        await _until(lambda: got["engine"] == [(WAKE, "1")])
        terminate_listener(pg_url)  # a's listener too: it reconnects at once (not held)
        await _until(reconnecting.is_set)
        # sent in the gap (committed before b listens again, whatever the box's pace:
        # a.publish would go out from a's sender thread, maybe only after that): b cannot
        # hear them
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute("SELECT pg_notify('schedd', %s)", (encode("-", REVOKED, "key-1"),))
            conn.execute("SELECT pg_notify('schedd', %s)", (encode("node-a", CANCEL, "run-1"),))
        await asyncio.sleep(0.2)
        assert got["engine"] == [(WAKE, "1")] and got["auth"] == [(WAKE, "1")]
        allow.set()
        # back: both subscribers hear LOST (once), not the signals of the gap
        await _until(lambda: (LOST, "") in got["engine"] and (LOST, "") in got["auth"])
        a.publish("node-a", QUEUED)  # and signals flow again
        await _until(lambda: got["engine"][-1:] == [(QUEUED, "")])
        assert got["engine"] == got["auth"] == [(WAKE, "1"), (LOST, ""), (QUEUED, "")]
    finally:
        allow.set()
        await a.close()
        await b.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("schedd-notify")]


async def test_a_listener_that_listens_only_after_the_start_went_on_says_signals_were_lost(
        pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(notify_pg, "START_WAIT_S", 0.2)
    n = PgNotifier(pg_url)
    got: list[tuple[str, str]] = []
    n.subscribe("node", lambda kind, arg: got.append((kind, arg)))
    allow = threading.Event()
    real = n._connect

    def connect(role: str) -> Any:
        assert allow.wait(30)  # the server answers only after start() gave up waiting
        return real(role)

    n._connect = connect  # type: ignore[method-assign]
    try:
        await n.start()  # goes on without the listener
        assert not n._listening.is_set()
        allow.set()
        await _until(lambda: got == [(LOST, "")])
    finally:
        allow.set()
        await n.close()


def test_a_burst_of_wakes_is_folded_into_the_earliest() -> None:
    batch = [encode("n1", WAKE, "500"), encode("n1", CANCEL, "r1"), encode("n1", WAKE, "300"),
             encode("n2", WAKE, "900"), encode("n1", CANCEL, "r1"), encode("n1", QUEUED, "")]
    folded = [decode(p) for p in _fold(batch)]
    assert folded == [("n1", CANCEL, "r1"), ("n1", QUEUED, ""), ("n1", WAKE, "300"),
                      ("n2", WAKE, "900")]
    # a wake with no instant (now) wins over any instant
    assert [decode(p) for p in _fold([encode("n1", WAKE, "5"), encode("n1", WAKE, "")])] == [
        ("n1", WAKE, "")]
