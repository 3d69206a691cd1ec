"""The throwaway PostgreSQL server of tests/pg_kit.py: it runs, listens only on 127.0.0.1,
hands out empty and isolated databases, and stops without leaving anything behind."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psycopg
import pytest

try:
    from tests.pg_kit import PgServer, dbname_of, missing_reason
except ImportError:
    from pg_kit import PgServer, dbname_of, missing_reason


def test_server_is_postgres_15_on_loopback_with_test_settings(pg_server: PgServer) -> None:
    with psycopg.connect(pg_server.url()) as conn:
        version = conn.execute("SHOW server_version_num").fetchone()
        assert version is not None and 150000 <= int(version[0]) < 160000
        settings = dict(
            conn.execute(
                "SELECT name, setting FROM pg_settings WHERE name IN "
                "('listen_addresses', 'fsync', 'synchronous_commit', 'port', 'TimeZone')"
            ).fetchall()
        )
    assert settings == {
        "listen_addresses": "127.0.0.1",
        "fsync": "off",
        "synchronous_commit": "off",
        "port": str(pg_server.port),
        "TimeZone": "UTC",
    }


def test_fresh_database_is_empty(pg_url: str) -> None:
    with psycopg.connect(pg_url) as conn:
        tables = conn.execute(
            "SELECT count(*) FROM information_schema.tables "
            "WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
        ).fetchone()
        seqs = conn.execute("SELECT count(*) FROM pg_class WHERE relkind = 'S'").fetchone()
    assert tables == (0,)
    assert seqs == (0,)


def test_two_databases_are_isolated(pg_server: PgServer) -> None:
    a, b = pg_server.create_database(), pg_server.create_database()
    try:
        assert dbname_of(a) != dbname_of(b)
        with psycopg.connect(a) as conn:
            conn.execute("CREATE TABLE t (id bigserial PRIMARY KEY, v text)")
            conn.execute("INSERT INTO t (v) VALUES ('in a')")
        with psycopg.connect(b) as conn:
            conn.execute("CREATE TABLE t (id bigserial PRIMARY KEY, v text)")
            assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)
        with psycopg.connect(a) as conn:
            assert conn.execute("SELECT v FROM t").fetchall() == [("in a",)]
    finally:
        pg_server.drop_database(dbname_of(a))
        pg_server.drop_database(dbname_of(b))
    names = {r[0] for r in pg_server.execute("SELECT datname FROM pg_database")}
    assert dbname_of(a) not in names and dbname_of(b) not in names


def test_template_copies_its_schema(pg_server: PgServer) -> None:
    tpl = pg_server.make_template("kit_tpl")
    with psycopg.connect(tpl) as conn:
        conn.execute("CREATE TABLE migrated (id bigserial PRIMARY KEY)")
    url = pg_server.create_database(template="kit_tpl")
    try:
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT count(*) FROM migrated").fetchone() == (0,)
    finally:
        pg_server.drop_database(dbname_of(url))
        pg_server.execute('ALTER DATABASE "kit_tpl" WITH IS_TEMPLATE false')
        pg_server.drop_database("kit_tpl")


def test_fresh_database_cost(pg_server: PgServer) -> None:
    """Not a timing assertion: prints what a fresh database costs (create + drop), so the
    figure in the kit's docstring can be checked with `pytest -s -k cost`."""
    n = 10
    t0 = time.perf_counter()
    names = [dbname_of(pg_server.create_database()) for _ in range(n)]
    t1 = time.perf_counter()
    for name in names:
        pg_server.drop_database(name)
    t2 = time.perf_counter()
    print(f"\nCREATE DATABASE: {(t1 - t0) / n * 1000:.1f} ms, DROP: {(t2 - t1) / n * 1000:.1f} ms")
    left = {r[0] for r in pg_server.execute("SELECT datname FROM pg_database")}
    assert not left & set(names)


@pytest.mark.skipif(missing_reason() is not None, reason="PostgreSQL 15 is not installed")
def test_a_killed_pytest_leaves_no_server(tmp_path: Path) -> None:
    """The watchdog stops the server and removes its directory when the process that
    started it dies without any cleanup (SIGKILL: no fixture teardown, no atexit)."""
    kit_dir = Path(__file__).parent
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(kit_dir)!r})
        from pg_kit import PgServer
        srv = PgServer().start()
        print(srv.root, srv.port, flush=True)
        time.sleep(600)
    """)
    with subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=tmp_path
    ) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline().split()
            assert line, "the child did not start a server"
            root, port = Path(line[0]), int(line[1])
            url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
            with psycopg.connect(url) as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
            assert (root / "data" / "postmaster.pid").exists()
        finally:
            proc.kill()  # SIGKILL: the child runs no cleanup of its own
    deadline = time.monotonic() + 60
    while root.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not root.exists(), "the watchdog did not remove the server's directory"
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(url, connect_timeout=5).close()
