"""The admin CLI: version, next, keys, init, backup; bad usage exits 2 with one line."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from schedd import __version__
from schedd.cli import main


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


def test_keys_create_list_revoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
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
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, _ = run(capsys, "init", "--db", "data/s.db")
    assert code == 0
    assert (tmp_path / "schedd.toml").read_text().count('db = "data/s.db"') == 1
    key_file = tmp_path / "data" / "s.db.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert key_file.read_text().strip() not in out  # the key is in the file, not printed
    code, out, _ = run(capsys, "init", "--db", "data/s.db")  # a second init changes nothing
    assert code == 0 and "exists" in out and "first API key" not in out


def test_backup_makes_a_consistent_copy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
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
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "new.db"
    run(capsys, "keys", "create", "--tenant", "t", "--db", str(db))
    con = sqlite3.connect(db)
    con.execute("PRAGMA user_version = 99")
    con.commit()
    con.close()
    for argv in (("keys", "list"), ("serve",), ("backup", str(tmp_path / "b.db"))):
        code, _, err = run(capsys, *argv, "--db", str(db))
        assert code == 2 and len(err.strip().splitlines()) == 1 and "newer" in err, argv


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    code, _, err = run(capsys, "keys", "list", "--db", str(junk))
    assert code == 2 and "not a schedd database" in err
