"""The admin CLI: version, next, keys, init, backup; bad usage exits 2 with one line.

The commands that open a database run on each backend (tests/db_backend.py): on PostgreSQL
the test's database is given as SCHEDD_DATABASE_URL, as an operator would, and `--db` still
names where the key file goes."""

from __future__ import annotations

import re
import socket
import sqlite3
from pathlib import Path

import pg_kit
import psycopg
import pytest

from schedd import __version__
from schedd.cli import EXIT_DATABASE_UNREACHABLE, main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "version") == (0, f"schedd {__version__}\n", "")


def test_next_prints_local_times_with_the_zone_offset(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "next", "0 9 * * 1-5", "--tz", "Europe/Berlin", "-n", "4")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 4
    for line in lines:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT09:00:00\+0[12]:00", line), line
    assert lines == sorted(lines)


def test_next_interval_type(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "next", "90s", "--type", "interval", "-n", "2")
    assert code == 0 and len(out.splitlines()) == 2


@pytest.mark.parametrize(
    "argv",
    [
        ("next", "61 * * * *"),
        ("next", "0 9 * * *", "--tz", "Mars/Olympus"),
        ("next", "0 9 * * *", "-n", "0"),
        ("keys", "create"),
        ("nosuch",),
        ("serve", "--port", "x"),
    ],
)
def test_bad_usage_exits_2_with_one_line(capsys: pytest.CaptureFixture[str],
                                        argv: tuple[str, ...]) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("schedd: ")


@pytest.fixture
def on_backend(database_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The test's database as the CLI finds it: SCHEDD_DATABASE_URL on PostgreSQL, nothing
    (the --db file) on SQLite. The url, or ""."""
    for k in ("SCHEDD_DATABASE_URL", "SCHEDD_DB", "SCHEDD_CONFIG"):
        monkeypatch.delenv(k, raising=False)
    if database_url:
        monkeypatch.setenv("SCHEDD_DATABASE_URL", database_url)
    return database_url


def test_keys_create_list_revoke(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                 on_backend: str) -> None:
    db = str(tmp_path / "k.db")
    code, out, _ = run(capsys, "keys", "create", "--tenant", "acme", "--db", db)
    key = out.strip()
    assert code == 0 and re.fullmatch(r"sk_[\w-]{40,}", key) and out == key + "\n"
    code, out, _ = run(capsys, "keys", "list", "--db", db)
    assert code == 0 and "acme" in out and key not in out and key[:9] in out
    key_id = out.splitlines()[1].split()[0]
    assert run(capsys, "keys", "revoke", key_id, "--db", db)[0] == 0
    _, out, _ = run(capsys, "keys", "list", "--db", db)
    assert out.splitlines()[1].split()[-1].endswith("Z")  # the REVOKED column is filled
    code, _, err = run(capsys, "keys", "revoke", key_id, "--db", db)
    assert code == 1 and "already revoked" in err
    code, _, err = run(capsys, "keys", "revoke", "nope", "--db", db)
    assert code == 1 and "not found" in err


def test_init_writes_config_database_and_key(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch,
                                             on_backend: str) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, _ = run(capsys, "init", "--db", "data/s.db")
    assert code == 0
    if on_backend:  # the database is PostgreSQL's (named without its url); no SQLite file
        assert "database PostgreSQL 127.0.0.1:" in out
        assert not (tmp_path / "data" / "s.db").exists()
        with psycopg.connect(on_backend) as conn:
            assert conn.execute("SELECT count(*) FROM api_keys").fetchone() == (1,)
    else:
        assert (tmp_path / "data" / "s.db").is_file()
    assert (tmp_path / "schedd.toml").read_text().count('db = "data/s.db"') == 1
    key_file = tmp_path / "data" / "s.db.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert key_file.read_text().strip() not in out  # the key is in the file, not printed
    code, out, _ = run(capsys, "init", "--db", "data/s.db")  # a second init changes nothing
    assert code == 0 and "exists" in out and "first API key" not in out


@pytest.mark.sqlite_only("schedd backup copies the SQLite file (PostgreSQL: pg_dump, "
                        "test_migrate_data.py::test_backup_on_postgres_says_pg_dump)")
def test_backup_makes_a_consistent_copy(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        backend: str) -> None:
    db = str(tmp_path / "b.db")
    run(capsys, "keys", "create", "--tenant", "t", "--db", db)
    dest = tmp_path / "copy.db"
    code, _, _ = run(capsys, "backup", str(dest), "--db", db)
    assert code == 0
    con = sqlite3.connect(dest)
    assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert con.execute("SELECT count(*) FROM api_keys").fetchone() == (1,)
    con.close()
    code, _, err = run(capsys, "backup", str(dest), "--db", db)
    assert code == 2 and "exists" in err


def test_a_database_from_a_newer_schedd_is_refused_with_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], on_backend: str) -> None:
    db = tmp_path / "new.db"
    run(capsys, "keys", "create", "--tenant", "t", "--db", str(db))
    if on_backend:
        with psycopg.connect(on_backend) as conn:
            conn.execute("UPDATE schedd_schema SET version = 99")
    else:
        con = sqlite3.connect(db)
        con.execute("PRAGMA user_version = 99")
        con.commit()
        con.close()
    commands = [("keys", "list"), ("serve",)]
    if not on_backend:
        commands.append(("backup", str(tmp_path / "b.db")))
    for argv in commands:
        code, _, err = run(capsys, *argv, "--db", str(db))
        assert code == 2 and len(err.strip().splitlines()) == 1 and "newer" in err, argv


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port  # nothing listens there once the socket is closed


def test_serve_with_postgresql_unreachable_says_so_in_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    port = _closed_port()
    monkeypatch.setenv("SCHEDD_DATABASE_URL",
                       f"postgresql://schedd:hunter2@127.0.0.1:{port}/schedd?password=hunter2")
    code, out, err = run(capsys, "serve", "--db", str(tmp_path / "s.db"))
    assert code == EXIT_DATABASE_UNREACHABLE == 75
    assert out == ""
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"schedd: cannot reach PostgreSQL at postgresql://schedd:***@127.0.0.1:"
                          f"{port}/schedd?password=***: ")
    assert "Connection refused" in err  # the cause, as libpq says it
    assert "hunter2" not in err
    assert not (tmp_path / "s.db.key").exists()  # nothing was started


def _password_role(server: pg_kit.PgServer, password: str) -> None:
    """The server's password-checked role (pg_kit.PASSWORD_ROLE), with `password`."""
    role = pg_kit.PASSWORD_ROLE
    server.execute(f"DO $$ BEGIN CREATE ROLE {role} LOGIN; EXCEPTION WHEN duplicate_object"
                   f" THEN NULL; END $$")
    server.execute(f"ALTER ROLE {role} PASSWORD '{password}'")


def _serve_refused_for_good(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                            monkeypatch: pytest.MonkeyPatch, url: str, shown: str) -> str:
    """`schedd serve` on `url`: exit 2 (a configuration error, which systemd's
    Restart=on-failure does not retry forever), one line naming the url as `shown`, nothing
    started; the line's cause."""
    monkeypatch.setenv("SCHEDD_DATABASE_URL", url)
    code, out, err = run(capsys, "serve", "--db", str(tmp_path / "s.db"))
    assert code == 2 != EXIT_DATABASE_UNREACHABLE, err
    assert out == ""
    assert len(err.splitlines()) == 1, err
    prefix = (f"schedd: PostgreSQL at {shown} refused schedd (a configuration error, not"
              f" retried): ")
    assert err.startswith(prefix), err
    assert "hunter2" not in err and "Traceback" not in err
    assert not (tmp_path / "s.db.key").exists()  # nothing was started
    return err[len(prefix):]


def test_serve_with_a_wrong_postgresql_password_is_a_configuration_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        pg_server: pg_kit.PgServer, pg_url: str) -> None:
    _password_role(pg_server, "right-one")
    role, port, db = pg_kit.PASSWORD_ROLE, pg_server.port, pg_kit.dbname_of(pg_url)
    cause = _serve_refused_for_good(
        tmp_path, capsys, monkeypatch, f"postgresql://{role}:hunter2@127.0.0.1:{port}/{db}",
        f"postgresql://{role}:***@127.0.0.1:{port}/{db}")
    assert f'password authentication failed for user "{role}"' in cause
    # the right password gets past the check (then the role may not create the schema in
    # `public`, PostgreSQL 15's default for a role that does not own the database: a
    # permanent error too, told in one line rather than a traceback)
    cause = _serve_refused_for_good(
        tmp_path, capsys, monkeypatch, f"postgresql://{role}:right-one@127.0.0.1:{port}/{db}",
        f"postgresql://{role}:***@127.0.0.1:{port}/{db}")
    assert "permission denied for schema public" in cause and "right-one" not in cause


def test_serve_with_a_missing_postgresql_database_or_role_is_a_configuration_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        pg_server: pg_kit.PgServer) -> None:
    port = pg_server.port
    url = f"postgresql://postgres:hunter2@127.0.0.1:{port}/no_such_db"
    cause = _serve_refused_for_good(tmp_path, capsys, monkeypatch, url,
                                    f"postgresql://postgres:***@127.0.0.1:{port}/no_such_db")
    assert 'database "no_such_db" does not exist' in cause
    url = f"postgresql://no_such_role:hunter2@127.0.0.1:{port}/postgres"
    cause = _serve_refused_for_good(tmp_path, capsys, monkeypatch, url,
                                    f"postgresql://no_such_role:***@127.0.0.1:{port}/postgres")
    assert 'role "no_such_role" does not exist' in cause


@pytest.mark.parametrize("query", ["no_such_option=1", "sslmode=bogus"])
def test_serve_with_an_invalid_postgresql_url_option_is_a_configuration_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        query: str) -> None:
    port = _closed_port()  # refused before anything is sent
    base = f"postgresql://schedd:hunter2@127.0.0.1:{port}/schedd"
    cause = _serve_refused_for_good(tmp_path, capsys, monkeypatch, f"{base}?{query}",
                                    f"postgresql://schedd:***@127.0.0.1:{port}/schedd?{query}")
    assert query.split("=")[0] in cause


def test_a_url_that_cannot_be_parsed_is_told_without_its_password(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """psycopg's parser quotes the part it cannot read, here the password itself."""
    port = _closed_port()
    for url, secret in ((f"postgresql://schedd:sec%ZZret@127.0.0.1:{port}/schedd", "sec%ZZret"),
                        (f"postgresql://schedd@127.0.0.1:{port}/schedd?password=sec%ZZret",
                         "sec%ZZret")):
        monkeypatch.setenv("SCHEDD_DATABASE_URL", url)
        code, out, err = run(capsys, "serve", "--db", str(tmp_path / "s.db"))
        assert code == 2 and out == "" and len(err.splitlines()) == 1, err
        assert secret not in err and "sec%" not in err and "ZZret" not in err, err
        assert "Traceback" not in err


def test_an_sqlite_database_that_cannot_be_read_now_exits_75(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Locked by another process or an I/O error at start: temporary (75, which the systemd
    unit retries), not \"not a schedd database\" (2, which it does not)."""
    import schedd.db

    def locked(path: object) -> None:
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(schedd.db, "check_schema", locked)
    code, _, err = run(capsys, "serve", "--db", str(tmp_path / "s.db"))
    assert code == EXIT_DATABASE_UNREACHABLE, err
    assert "cannot be read now" in err and "database is locked" in err
    (tmp_path / "junk.db").write_bytes(b"not sqlite at all" * 100)
    monkeypatch.undo()
    code, _, err = run(capsys, "serve", "--db", str(tmp_path / "junk.db"))
    assert code == 2 and "not a schedd database" in err, err


def test_serve_with_postgresql_too_busy_exits_75(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        pg_server: pg_kit.PgServer, pg_url: str) -> None:
    """A server that answers "too many connections" (here for one role, at its limit of
    0) will take schedd later: temporary, exit 75."""
    pg_server.execute("DO $$ BEGIN CREATE ROLE schedd_busy LOGIN CONNECTION LIMIT 0;"
                      " EXCEPTION WHEN duplicate_object THEN NULL; END $$")
    port, db = pg_server.port, pg_kit.dbname_of(pg_url)
    monkeypatch.setenv("SCHEDD_DATABASE_URL", f"postgresql://schedd_busy@127.0.0.1:{port}/{db}")
    code, out, err = run(capsys, "serve", "--db", str(tmp_path / "s.db"))
    assert code == EXIT_DATABASE_UNREACHABLE, err
    assert out == "" and len(err.splitlines()) == 1 and "too many connections" in err, err
    assert err.startswith("schedd: cannot reach PostgreSQL at postgresql://schedd_busy@"), err


@pytest.mark.sqlite_only("a file that is not a SQLite database")
def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str],
                                                  backend: str) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    code, _, err = run(capsys, "keys", "list", "--db", str(junk))
    assert code == 2 and "not a schedd database" in err
