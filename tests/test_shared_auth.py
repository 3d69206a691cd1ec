"""What the nodes of one database share for authentication (issue 16): a key revoked
through one node (or by `schedd keys revoke`) is refused by every other node within a
bounded time, though they had verified and cached it; a console session signed in through
one node is valid on another (the cookie-signing secret is in the database); and an
upgrade from a SQLite database made before that keeps its revocations and its secret.

The two-node tests run two apps in this process on one PostgreSQL database, each with its
own `--db` path (so the files beside it, like `<db>.revocations`, are not shared: only the
database and its NOTIFY signals are), node B on a fake clock that never moves, so that its
auth cache never expires by time and only the signal can make it forget a key."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient, TestClient
from test_notify_pg import hold_reconnect, terminate_listener

from schedd.cli import main
from schedd.clock import FakeClock
from schedd.config import Settings
from schedd.console import session
from schedd.daemon import build_app
from schedd.notify_pg import PgNotifier
from schedd.services import CONSOLE_SECRET

T0 = 1_795_338_000_000
# How long a revocation may take to reach another node's cache: the NOTIFY is delivered at
# the commit; the listener hands it over within its 0.5 s wait. Far below AUTH_CACHE_S on
# node B's clock, which never moves here anyway.
SIGNAL_BOUND_S = 3.0
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


async def _refused_within(client: AsyncTestClient[Any], key: str, bound_s: float) -> float:
    """Seconds until `client` refuses `key` (bounded poll: the signal crosses threads)."""
    start = time.monotonic()
    while True:
        r = await client.get("/v1/schedules", headers={"X-Api-Key": key})
        if r.status_code == 401:
            assert r.json() == {"detail": "Invalid or revoked API key"}
            return time.monotonic() - start
        assert r.status_code == 200, r.text
        assert time.monotonic() - start < bound_s, f"still accepted after {bound_s} s"
        time.sleep(0.05)  # the app runs on the client's own thread, not this loop


def _two_nodes(make_settings: Callable[..., Settings], tmp_path: Path) -> tuple[Any, Any]:
    a = build_app(make_settings(db=str(tmp_path / "a" / "schedd.db")), FakeClock(T0))
    b = build_app(make_settings(db=str(tmp_path / "b" / "schedd.db")), FakeClock(T0))
    return a, b


@pytest.mark.parametrize("backend", ["postgres"])
async def test_a_key_revoked_through_one_node_is_refused_by_another(
        make_settings: Callable[..., Settings], tmp_path: Path, backend: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    app_a, app_b = _two_nodes(make_settings, tmp_path)
    async with AsyncTestClient(app=app_a) as a, AsyncTestClient(app=app_b) as b:
        svc_a, svc_b = a.app.state.services, b.app.state.services
        keys = [a.blocking_portal.call(svc_a.create_key, "default") for _ in range(3)]
        lookups: list[str] = []
        real = svc_b.store.active_key_by_hash
        monkeypatch.setattr(svc_b.store, "active_key_by_hash",
                            lambda c, digest: lookups.append(digest) or real(c, digest))
        for _ in range(2):  # B verifies each key once, then trusts its cache
            for _, key in keys:
                r = await b.get("/v1/schedules", headers={"X-Api-Key": key})
                assert r.status_code == 200
        assert len(lookups) == 3

        # through node A's services (what its admin commands call)
        a.blocking_portal.call(svc_a.revoke_key, keys[0][0])
        took = await _refused_within(b, keys[0][1], SIGNAL_BOUND_S)
        assert took < SIGNAL_BOUND_S
        # the other keys still work on B (looked up again: B forgot what it had verified)
        assert (await b.get("/v1/schedules", headers={"X-Api-Key": keys[1][1]})
                ).status_code == 200

        # through `schedd keys revoke`, another process with its own --db path
        env = {**os.environ, "SCHEDD_DATABASE_URL": svc_a.settings.database_url}
        proc = subprocess.run(
            [sys.executable, "-m", "schedd", "keys", "revoke", keys[1][0],
             "--db", str(tmp_path / "c" / "schedd.db")],
            capture_output=True, text=True, timeout=60, env=env)
        assert proc.returncode == 0, proc.stderr
        await _refused_within(b, keys[1][1], SIGNAL_BOUND_S)
        await _refused_within(a, keys[1][1], SIGNAL_BOUND_S)  # and on A, of course
        assert (await b.get("/v1/schedules", headers={"X-Api-Key": keys[2][1]})
                ).status_code == 200
        assert svc_a.settings.database_url not in proc.stdout + proc.stderr


@pytest.mark.parametrize("backend", ["postgres"])
async def test_a_key_revoked_while_a_nodes_listener_reconnects_is_refused_once_it_is_back(
        make_settings: Callable[..., Settings], tmp_path: Path, backend: str) -> None:
    """The revocation's signal is lost for B (its listener's connection was ended and it
    has not listened again yet); B's reconnect counts as "anything may have been
    signalled" (LOST), so B forgets the key then, not when its cache would expire (never
    here: B's clock does not move)."""
    app_a, app_b = _two_nodes(make_settings, tmp_path)
    async with AsyncTestClient(app=app_a) as a, AsyncTestClient(app=app_b) as b:
        svc_a, svc_b = a.app.state.services, b.app.state.services
        key_id, key = a.blocking_portal.call(svc_a.create_key, "default")
        assert (await b.get("/v1/schedules", headers={"X-Api-Key": key})).status_code == 200
        assert svc_b.engine is not None and isinstance(svc_b.engine.notifier, PgNotifier)
        reconnecting, allow = hold_reconnect(svc_b.engine.notifier)
        try:
            terminate_listener(svc_a.settings.database_url)  # A's and B's listeners
            assert reconnecting.wait(10)  # B noticed, and waits to connect again
            a.blocking_portal.call(svc_a.revoke_key, key_id)  # its NOTIFY: lost for B
            time.sleep(0.3)  # were it heard, B would refuse the key within this
            r = await b.get("/v1/schedules", headers={"X-Api-Key": key})
            assert r.status_code == 200  # B trusts what it verified: the window closed below
            allow.set()
            await _refused_within(b, key, SIGNAL_BOUND_S)
        finally:
            allow.set()


async def _sign_in(client: AsyncTestClient[Any], key: str) -> str:
    page = await client.get("/ui/signin")
    r = await client.post("/ui/signin", data={"key": key, "csrf": CSRF.findall(page.text)[0]},
                          follow_redirects=False)
    assert r.status_code == 303, r.text
    cookie: str = client.cookies[session.SESSION_COOKIE]
    return cookie


@pytest.mark.parametrize("backend", ["postgres"])
async def test_a_console_session_made_through_one_node_is_valid_on_another(
        make_settings: Callable[..., Settings], tmp_path: Path, backend: str) -> None:
    app_a, app_b = _two_nodes(make_settings, tmp_path)
    async with AsyncTestClient(app=app_a) as a, AsyncTestClient(app=app_b) as b:
        svc_a, svc_b = a.app.state.services, b.app.state.services
        assert svc_a.console_secret == svc_b.console_secret is not None
        _, key = a.blocking_portal.call(svc_a.create_key, "default")
        cookie = await _sign_in(a, key)
        b.cookies.set(session.SESSION_COOKIE, cookie)
        page = await b.get("/ui/schedules", follow_redirects=False)
        assert page.status_code == 200, (page.status_code, page.headers.get("location"))
        # signing out through B ends it on A too (the session row was shared already)
        r = await b.post("/ui/signout", data={"csrf": CSRF.findall(page.text)[0]},
                         follow_redirects=False)
        assert r.status_code == 303
        r = await a.get("/ui/schedules", follow_redirects=False)  # A's cookie jar has it
        assert r.status_code == 303 and r.headers["location"] == "/ui/signin"
    # neither node wrote a secret file beside its --db
    assert not list(tmp_path.glob("*/schedd.db.console-secret"))


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main(list(argv)) == 0
    out: str = capsys.readouterr().out
    return out


@pytest.mark.sqlite_only("an upgrade of a SQLite file made before migration 0011")
def test_an_upgraded_sqlite_database_keeps_its_revocations_and_console_secret(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], backend: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    for k in ("SCHEDD_DATABASE_URL", "SCHEDD_DB", "SCHEDD_CONFIG"):
        monkeypatch.delenv(k, raising=False)
    db = str(tmp_path / "schedd.db")
    revoked = _cli(capsys, "keys", "create", "--tenant", "t", "--db", db).strip()
    kept = _cli(capsys, "keys", "create", "--tenant", "t", "--db", db).strip()
    listing = _cli(capsys, "keys", "list", "--db", db).splitlines()[1:]
    revoked_id = next(line.split()[0] for line in listing if revoked[:9] in line)
    _cli(capsys, "keys", "revoke", revoked_id, "--db", db)
    assert Path(db + ".revocations").is_file()
    # back to what a schedd before migration 0011 left: no table, version 10, the secret in
    # the file beside the database
    with sqlite3.connect(db) as con:
        con.execute("DROP TABLE shared_secrets")
        con.execute("PRAGMA user_version = 10")
    old_secret = "5e" * 32
    Path(db + ".console-secret").write_text(old_secret + "\n")
    old_cookie = session.session_cookie(old_secret.encode(), "a-session-token")

    with TestClient(app=build_app(Settings(db=db), FakeClock(T0))) as client:
        assert client.get("/v1/schedules", headers={"X-Api-Key": revoked}).status_code == 401
        assert client.get("/v1/schedules", headers={"X-Api-Key": kept}).status_code == 200
        secret = client.app.state.services.console_secret
        assert secret == old_secret.encode()
        # a cookie signed before the upgrade still carries a valid signature
        assert session.token_of(secret, old_cookie) == "a-session-token"
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA user_version").fetchone()[0] >= 11
        assert con.execute("SELECT value FROM shared_secrets WHERE name = ?",
                           (CONSOLE_SECRET,)).fetchone() == (old_secret,)
