"""`schedd migrate-data`: a SQLite deployment copied into PostgreSQL reads the same through
the API, keeps its keys and ids, continues its sequences, and the command refuses what it
must refuse (a non-empty target, bad URLs, a file that is not schedd's) with exit 2."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import T0, schedule_body
from litestar.testing import AsyncTestClient

from schedd import cli
from schedd.clock import FakeClock
from schedd.config import Settings
from schedd.daemon import build_app
from schedd.migrate_data import ORDER, MigrateError, migrate, redact

try:
    from tests.pg_kit import PgServer, dbname_of
except ImportError:
    from pg_kit import PgServer, dbname_of

DEFS = "/v1/entity-definitions"
SYNCS = "/api/v1/syncs"
DAY = 86_400_000


class Client:
    def __init__(self, client: AsyncTestClient[Any], key: str) -> None:
        self.client = client
        self.h = {"Authorization": f"Bearer {key}"}

    async def get(self, path: str, **kw: Any) -> Any:
        r = await self.client.get(path, headers=self.h, **kw)
        assert r.status_code == 200, (path, r.status_code, r.text)
        return r.json()

    async def post(self, path: str, body: Any = None, status: int = 201) -> Any:
        r = await self.client.post(path, json=body, headers=self.h)
        assert r.status_code == status, (path, r.status_code, r.text)
        return r.json() if r.content else None

    async def put(self, path: str, body: Any, status: int = 201) -> Any:
        r = await self.client.put(path, json=body, headers=self.h)
        assert r.status_code == status, (path, r.status_code, r.text)
        return r.json()

    def call(self, fn: Any, *args: Any) -> Any:
        return self.client.blocking_portal.call(fn, *args)

    def tick(self, clock: FakeClock) -> None:
        engine = self.client.app.state.services.engine
        self.call(engine.tick, clock.now_ms())


async def settle(c: Client, clock: FakeClock) -> None:
    """Tick the engine until no run is pending or running (noop actions finish at once)."""
    for _ in range(300):
        c.tick(clock)
        runs = (await c.get("/v1/runs", params={"limit": 100}))["runs"]
        if all(r["status"] not in ("pending", "running") for r in runs):
            return
        c.call(asyncio.sleep, 0.005)
    raise AssertionError(f"runs still active: {runs}")


async def populate(c: Client, clock: FakeClock) -> None:
    """A bit of everything the API can write: schedules of each kind (one paused, one
    with a dedup key), runs (ticks and manual triggers), a second tenant and key, a
    definition with records and a relative schedule (occurrences), a sync."""
    every = await c.post("/v1/schedules", schedule_body(name="every 15m"))
    await c.post("/v1/schedules", schedule_body(
        name="nightly", schedule_type="cron", schedule_expression="0 3 * * *",
        timezone="Europe/Paris", deduplication_key="nightly"))  # fmt: skip
    paused = await c.post("/v1/schedules", schedule_body(name="paused one"))
    await c.post(f"/v1/schedules/{paused['id']}/pause", None, 200)
    await c.post(f"/v1/schedules/{every['id']}/trigger", None, 202)
    clock_advance = c.call(clock.advance, 31 * 60_000)  # two interval occurrences
    assert clock_advance > T0
    await settle(c, clock)
    d = await c.post(DEFS, {"name": "customers", "fields": {"renewal": "date", "plan": "string"}})
    for i in range(5):
        data = {"renewal": f"2027-0{i + 1}-15", "plan": "pro" if i % 2 else "free"}
        await c.put(f"{DEFS}/{d['id']}/records/cust-{i}", {"data": data})
    await c.post("/v1/schedules", schedule_body(
        name="renewals", schedule_type="relative", schedule_expression="09:00",
        relative_entity_definition_id=d["id"], relative_field_name="renewal",
        relative_offset_days=-3))  # fmt: skip
    noop = {"action_type": "noop", "action_config": {}}
    sync = await c.post(SYNCS, {"connectionId": "84b500d7-71c8-4b1f-adf4-f1eb0000973d",
                                "name": "orders", "executionConfig": noop})
    await c.post(f"{SYNCS}/{sync['id']}/trigger", {}, 202)
    await settle(c, clock)
    _, other_key = c.call(c.client.app.state.services.create_key, "other")
    other = Client(c.client, other_key)
    await other.post("/v1/schedules", schedule_body(name="theirs"))


async def snapshot(c: Client) -> dict[str, Any]:
    """What the API shows of everything populate() wrote."""
    out: dict[str, Any] = {}
    out["schedules"] = await c.get("/v1/schedules", params={"limit": 100})
    out["runs"] = await c.get("/v1/runs", params={"limit": 100})
    for s in out["schedules"]["schedules"]:
        out[f"schedule {s['id']}"] = await c.get(f"/v1/schedules/{s['id']}")
        out[f"runs of {s['id']}"] = await c.get(f"/v1/schedules/{s['id']}/runs")
        out[f"occurrences of {s['id']}"] = await c.get(f"/v1/schedules/{s['id']}/occurrences")
    for r in out["runs"]["runs"]:
        out[f"run {r['id']}"] = await c.get(f"/v1/runs/{r['id']}")
    out["definitions"] = await c.get(DEFS)
    for d in out["definitions"]["entity_definitions"]:
        out[f"records of {d['id']}"] = await c.get(f"{DEFS}/{d['id']}/records")
    out["syncs"] = await c.get(SYNCS)
    return out


async def test_round_trip_sqlite_to_postgres(tmp_path: Path, pg_url: str) -> None:
    db = tmp_path / "schedd.db"
    clock = FakeClock(T0)
    app = build_app(Settings(db=str(db), allow_commands=True), clock)
    async with AsyncTestClient(app=app) as client:
        key = Path(str(db) + ".key").read_text().strip()
        c = Client(client, key)
        await populate(c, clock)
        before = await snapshot(c)
        end_ms = clock.now_ms()
    with sqlite3.connect(db) as con:
        source_counts = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                         for t in ORDER}  # fmt: skip
    assert all(source_counts[t] > 0 for t in (
        "tenants", "api_keys", "schedules", "runs", "entity_definitions", "records",
        "occurrences", "syncs", "sync_runs"))  # fmt: skip

    report = migrate(f"sqlite:{db}", pg_url)
    assert report.tables == source_counts
    assert report.sequences["schedules.seq"] == _max(db, "schedules", "seq") + 1
    assert report.sequences["runs.seq"] == _max(db, "runs", "seq") + 1

    # the same key file (beside --db), the same clock: the API shows the same
    clock = FakeClock(end_ms)
    app = build_app(Settings(db=str(db), database_url=pg_url, allow_commands=True), clock)
    async with AsyncTestClient(app=app) as client:
        c = Client(client, key)
        after = await snapshot(c)
        assert after.keys() == before.keys()
        for k in before:
            assert after[k] == before[k], k
        # the sequences continue: a new schedule lists last, a new run first
        new = await c.post("/v1/schedules", schedule_body(name="made on postgres"))
        listed = (await c.get("/v1/schedules", params={"limit": 100}))["schedules"]
        assert listed[-1]["id"] == new["id"]
        run = await c.post(f"/v1/schedules/{new['id']}/trigger", None, 202)
        assert (await c.get("/v1/runs", params={"limit": 1}))["runs"][0]["id"] == run["id"]


def _max(db: Path, table: str, col: str) -> int:
    with sqlite3.connect(db) as con:
        return int(con.execute(f"SELECT max({col}) FROM {table}").fetchone()[0])


def _fresh_sqlite(tmp_path: Path) -> Path:
    """A schedd SQLite database made by `schedd init`-like means: the daemon's own key."""
    db = tmp_path / "schedd.db"
    assert cli.main(["keys", "create", "--tenant", "acme", "--db", str(db)]) == 0
    return db


def test_refuses_a_non_empty_target(
    tmp_path: Path, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    db = _fresh_sqlite(tmp_path)
    assert cli.main(["migrate-data", "--from", f"sqlite:{db}", "--to", pg_url]) == 0
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        cli.main(["migrate-data", "--from", f"sqlite:{db}", "--to", pg_url])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "not empty" in err and "table" in err
    with psycopg.connect(pg_url) as conn:  # nothing was added by the refused second copy
        assert conn.execute("SELECT count(*) FROM api_keys").fetchone() == (1,)


def test_a_failed_copy_leaves_the_target_empty(tmp_path: Path, pg_url: str) -> None:
    """PostgreSQL text cannot hold NUL: the copy fails naming the column, and commits
    nothing (the next attempt, once the row is fixed, finds an empty target)."""
    db = _fresh_sqlite(tmp_path)
    with sqlite3.connect(db) as con:
        con.execute("UPDATE tenants SET name = 'ac' || char(0) || 'me'")
    with pytest.raises(MigrateError, match=r"tenants\.name: .*NUL"):
        migrate(f"sqlite:{db}", pg_url)
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT count(*) FROM tenants").fetchone() == (0,)
    with sqlite3.connect(db) as con:
        con.execute("UPDATE tenants SET name = 'acme'")
    assert migrate(f"sqlite:{db}", pg_url).tables["api_keys"] == 1


@pytest.mark.parametrize(
    ("source", "target", "message"),
    [
        ("{db}", "{pg}", "--from must be sqlite:PATH"),
        ("sqlite:", "{pg}", "needs a PATH"),
        ("sqlite:{tmp}/nope.db", "{pg}", "no such SQLite database"),
        ("sqlite:{tmp}/junk.db", "{pg}", "not a SQLite database"),
        ("sqlite:{db}", "mysql://localhost/x", "must be a postgresql://"),
        ("sqlite:{db}", "postgresql://127.0.0.1:99999/x", "not a valid URL"),
        ("sqlite:{db}", "postgresql://127.0.0.1:{port}", "names no database"),
        ("sqlite:{db}", "postgresql://postgres:s3cret@127.0.0.1:1/x", "cannot connect"),
        ("sqlite:{db}", "postgresql://postgres@127.0.0.1:{port}/nosuchdb", "cannot connect"),
    ],
)
def test_bad_arguments_exit_2_with_a_clear_message(
    tmp_path: Path, pg_server: PgServer, capsys: pytest.CaptureFixture[str],
    source: str, target: str, message: str,
) -> None:  # fmt: skip
    db = _fresh_sqlite(tmp_path)
    (tmp_path / "junk.db").write_bytes(b"not sqlite at all" * 100)
    fill = {"db": str(db), "tmp": str(tmp_path), "pg": pg_server.url(), "port": pg_server.port}
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        cli.main(["migrate-data", "--from", source.format(**fill), "--to", target.format(**fill)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert "s3cret" not in err  # a password is never shown
    assert err.count("\n") == 1  # one line


def test_an_older_or_foreign_sqlite_file_is_refused(tmp_path: Path, pg_url: str) -> None:
    old = _fresh_sqlite(tmp_path)
    with sqlite3.connect(old) as con:
        con.execute("PRAGMA user_version = 3")
    with pytest.raises(MigrateError, match="older than this schedd's"):
        migrate(f"sqlite:{old}", pg_url)
    foreign = tmp_path / "other.db"
    with sqlite3.connect(foreign) as con:
        con.execute("CREATE TABLE t (x)")
    with pytest.raises(MigrateError, match="not a schedd database"):
        migrate(f"sqlite:{foreign}", pg_url)


def test_redact_hides_the_password() -> None:
    assert redact("postgresql://u:p%40ss@h:5432/db") == "postgresql://u:********@h:5432/db"
    assert redact("postgresql://h/db") == "postgresql://h/db"


def test_a_database_with_other_tables_is_refused_and_left_as_it_was(
    pg_server: PgServer, tmp_path: Path
) -> None:
    """A target that already has a table of schedd's name (someone else's) is refused
    with exit 2, and keeps its rows."""
    db = _fresh_sqlite(tmp_path)
    url = pg_server.create_database()
    try:
        with psycopg.connect(url) as conn:
            conn.execute("CREATE TABLE tenants (id text PRIMARY KEY, name text, created_ms bigint)")
            conn.execute("INSERT INTO tenants VALUES ('x', 'someone else', 0)")
        with pytest.raises(MigrateError) as exc:
            migrate(f"sqlite:{db}", url)
        assert exc.value.code == 2
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT id FROM tenants").fetchall() == [("x",)]
    finally:
        pg_server.drop_database(dbname_of(url))


def test_backup_on_postgres_says_pg_dump(
    tmp_path: Path, pg_url: str, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setenv("SCHEDD_DATABASE_URL", pg_url)
    with pytest.raises(SystemExit) as exc:
        cli.main(["backup", str(tmp_path / "copy.db"), "--db", str(tmp_path / "schedd.db")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "pg_dump" in err and err.count("\n") == 1
    assert not (tmp_path / "copy.db").exists()
