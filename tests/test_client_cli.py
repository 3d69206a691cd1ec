"""The API client commands (`schedd schedules …`, `schedd runs …`) against a REAL daemon.

One daemon (`python -m schedd serve`) serves the whole module; the CLI runs in-process via
schedd.cli.main with SCHEDD_URL and SCHEDD_API_KEY set, and once as a subprocess that finds
the server and the key by itself (a config file naming the port, the key file of --db).
The module runs twice, with the daemon on each backend (tests/db_backend.py): on PostgreSQL
it is given a fresh database as SCHEDD_DATABASE_URL, and `--db` still names its key file.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import db_backend
import pg_kit
import pytest

from schedd.cli import main
from schedd.client import resolve_target

pytestmark = pytest.mark.e2e

READY_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 10.0
MISSING = "6c5f0a52-1b7e-4c2b-9a57-0d7f1e0b8b11"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("SCHEDD_")}


@dataclass(frozen=True)
class Served:
    dir: Path
    db: Path
    port: int
    url: str
    key: str


def _wait_ready(proc: subprocess.Popen[bytes], url: str, key_path: Path) -> None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + READY_TIMEOUT_S
    last = "no answer"
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the daemon exited with {proc.returncode} before it was ready")
        try:
            with opener.open(url + "/readyz", timeout=2) as r:
                if r.status == 200 and key_path.is_file():
                    return
                last = str(r.status)
        except urllib.error.HTTPError as exc:
            exc.close()
            last = str(exc.code)
        except OSError as exc:
            last = type(exc).__name__
        if time.monotonic() > deadline:
            raise RuntimeError(f"not ready within {READY_TIMEOUT_S} s (last: {last})")
        time.sleep(0.05)


@pytest.fixture(scope="module", params=db_backend.BACKENDS)
def daemon(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    d = tmp_path_factory.mktemp("client")
    db = d / "s.db"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = _clean_env()
    env.update(SCHEDD_SHUTDOWN_GRACE_SECONDS="1", SCHEDD_SLEEP_CAP_SECONDS="5",
               PYTHONUNBUFFERED="1")
    database_url = ""
    if request.param == "postgres":
        pg_server = request.getfixturevalue("pg_server")
        database_url = db_backend.new_database(pg_server)
        env["SCHEDD_DATABASE_URL"] = database_url
        request.addfinalizer(lambda: pg_server.drop_database(pg_kit.dbname_of(database_url)))
    log_path = d / "daemon.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "schedd", "serve", "--db", str(db), "--host", "127.0.0.1",
             "--port", str(port)],
            cwd=d, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_ready(proc, url, Path(f"{db}.key"))
        assert db.exists() == (not database_url)  # on PostgreSQL, no SQLite file was made
        key = Path(f"{db}.key").read_text(encoding="utf-8").strip()
        yield Served(d, db, port, url, key)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        if proc.returncode not in (0, -signal.SIGTERM):
            print(log_path.read_text(errors="replace")[-4000:], file=sys.stderr)


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No SCHEDD_* from the outside, no ./schedd.toml: each test says what it uses."""
    for k in list(os.environ):
        if k.startswith("SCHEDD_"):
            monkeypatch.delenv(k)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def served(daemon: Served, monkeypatch: pytest.MonkeyPatch) -> Served:
    monkeypatch.setenv("SCHEDD_URL", daemon.url)
    monkeypatch.setenv("SCHEDD_API_KEY", daemon.key)
    return daemon


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def ok_json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    code, out, err = run(capsys, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


def fields(out: str) -> dict[str, str]:
    """`key: value` lines -> dict."""
    pairs = (line.split(":", 1) for line in out.splitlines())
    return {k: v.strip() for k, v in pairs}


def table(out: str) -> tuple[str, list[str]]:
    lines = out.splitlines()
    return lines[0], lines[1:]


def one_line_error(err: str) -> str:
    assert err.startswith("schedd: ") and len(err.strip().splitlines()) == 1, err
    return err


def create(capsys: pytest.CaptureFixture[str], *extra: str, name: str = "nightly",
           typ: str = "interval", expr: str = "15m", action: str = "noop") -> dict[str, Any]:
    doc: dict[str, Any] = ok_json(capsys, "schedules", "create", "--name", name, "--type", typ,
                                  "--expr", expr, "--action", action, *extra)
    return doc


# ---------------------------------------------------------------------------- usage
COMMANDS = [
    ("schedules",), ("schedules", "ls"), ("schedules", "get"), ("schedules", "create"),
    ("schedules", "pause"), ("schedules", "resume"), ("schedules", "trigger"),
    ("schedules", "rm"), ("runs",), ("runs", "ls"), ("runs", "get"), ("runs", "cancel"),
    ("runs", "retry"), ("actions",), ("actions", "ls"), ("kragle",), ("kragle", "ls"),
]


@pytest.mark.parametrize("cmd", COMMANDS, ids=" ".join)
def test_every_command_has_help(capsys: pytest.CaptureFixture[str], cmd: tuple[str, ...]) -> None:
    code, out, _ = run(capsys, *cmd, "--help")
    assert code == 0 and out.startswith(f"usage: schedd {' '.join(cmd)}")
    if len(cmd) == 2:
        assert "--json" in out and "--url URL" in out and "--db" in out and "--config" in out
        assert "api-key" not in out.lower()  # no key flag: it would leak into history and ps


@pytest.mark.parametrize("argv", [
    ("schedules",),
    ("runs", "get"),
    ("schedules", "create", "--type", "cron", "--expr", "0 9 * * *"),
    ("schedules", "create", "--name", "x", "--type", "hourly", "--action", "noop"),
    ("schedules", "create", "--name", "x", "--type", "once", "--action", "noop", "--set", "oops"),
    ("schedules", "create", "--name", "x", "--type", "once", "--action", "noop",
     "--action-config", "{bad"),
    ("schedules", "create", "--name", "x", "--type", "once", "--action", "noop",
     "--action-config", "[1]"),
    ("schedules", "create", "--json-body", "no-such-file.json"),
    ("runs", "ls", "--status", "bogus"),
    ("runs", "ls", "--limit", "many"),
    ("schedules", "ls", "--url", "ftp://example.org"),
])
def test_bad_usage_exits_2_with_one_line(capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch,
                                         argv: tuple[str, ...]) -> None:
    monkeypatch.setenv("SCHEDD_API_KEY", "sk_unused")
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    one_line_error(err)


# ---------------------------------------------------------------------------- schedules
def test_schedule_lifecycle_tables_and_json(served: Served,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "schedules", "create", "--name", "nightly report",
                         "--type", "cron", "--expr", "0 9 * * 1-5", "--tz", "Europe/Berlin",
                         "--action", "noop", "--set", "max_retries=5",
                         "--set", "description=runs at nine")
    assert code == 0 and err == ""
    s = fields(out)
    sid = s["id"]
    assert uuid.UUID(sid) and s["name"] == "nightly report" and s["status"] == "active"
    assert s["schedule_expression"] == "0 9 * * 1-5" and s["timezone"] == "Europe/Berlin"
    assert s["max_retries"] == "5" and s["description"] == "runs at nine"
    assert s["next_run_at"].endswith("Z") and s["last_run_at"] == "-"
    assert served.key not in out

    got = ok_json(capsys, "schedules", "get", sid)
    assert got["id"] == sid and got["schedule_type"] == "cron" and got["max_retries"] == 5
    assert got["action_config"] == {}
    code, out, _ = run(capsys, "schedules", "get", sid)
    assert code == 0 and fields(out)["id"] == sid

    code, out, _ = run(capsys, "schedules", "ls", "--limit", "200")
    header, rows = table(out)
    assert header.split() == ["ID", "NAME", "TYPE", "EXPRESSION", "TZ", "ACTION", "STATUS",
                              "NEXT", "RUN"]
    row = next(r for r in rows if r.startswith(sid + " "))  # the whole id, never cut
    assert "nightly report" in row and "0 9 * * 1-5" in row and "Europe/Berlin" in row
    assert row.split()[-2:] == ["active", got["next_run_at"]]
    # the columns line up under the header
    assert row.index("Europe/Berlin") == header.index("TZ")

    paused = ok_json(capsys, "schedules", "pause", sid)
    assert paused["status"] == "paused"
    page = ok_json(capsys, "schedules", "ls", "--status", "paused")
    assert sid in [x["id"] for x in page["schedules"]]
    assert all(x["status"] == "paused" for x in page["schedules"])
    assert {"total", "limit", "offset", "has_more"} <= set(page)
    code, out, _ = run(capsys, "schedules", "resume", sid)
    assert code == 0 and fields(out)["status"] == "active"

    run_doc = ok_json(capsys, "schedules", "trigger", sid)
    assert run_doc["schedule_id"] == sid and run_doc["trigger_type"] == "manual"
    deadline = time.monotonic() + 5
    while run_doc["status"] != "succeeded" and time.monotonic() < deadline:
        time.sleep(0.05)
        run_doc = ok_json(capsys, "runs", "get", run_doc["id"])
    assert run_doc["status"] == "succeeded"

    code, out, _ = run(capsys, "schedules", "rm", sid)
    assert (code, out) == (0, f"deleted {sid}\n")
    code, out, err = run(capsys, "schedules", "get", sid)
    assert code == 1 and out == ""
    assert one_line_error(err) == "schedd: Schedule not found\n"
    code, out, err = run(capsys, "schedules", "rm", sid, "--json")
    assert code == 1 and "Schedule not found" in err
    # the runs of a deleted schedule stay readable
    assert ok_json(capsys, "runs", "get", run_doc["id"])["status"] == "succeeded"


def test_rm_with_json_prints_nothing(served: Served, capsys: pytest.CaptureFixture[str]) -> None:
    sid = create(capsys)["id"]
    assert run(capsys, "schedules", "rm", sid, "--json") == (0, "", "")


def test_ls_filters_and_paging(served: Served, capsys: pytest.CaptureFixture[str]) -> None:
    ext = uuid.uuid4().hex
    customer = str(uuid.uuid4())
    ids = [create(capsys, "--set", f"external_id={ext}", "--set", f"customer_id={customer}",
                  name=f"paged {i}")["id"] for i in range(3)]
    page = ok_json(capsys, "schedules", "ls", "--external-id", ext)
    assert [s["id"] for s in page["schedules"]] == ids  # oldest first
    page = ok_json(capsys, "schedules", "ls", "--customer-id", customer, "--limit", "1",
                   "--offset", "1")
    assert [s["id"] for s in page["schedules"]] == ids[1:2]
    assert (page["total"], page["limit"], page["offset"], page["has_more"]) == (3, 1, 1, True)
    code, out, err = run(capsys, "schedules", "ls", "--external-id", ext, "--limit", "2")
    assert code == 0 and len(table(out)[1]) == 2
    assert "of 3" in err and "--offset 2" in err  # the hint goes to stderr, not the table
    code, out, err = run(capsys, "schedules", "ls", "--external-id", uuid.uuid4().hex)
    assert code == 0 and out.split() == ["ID", "NAME", "TYPE", "EXPRESSION", "TZ", "ACTION",
                                         "STATUS", "NEXT", "RUN"] and err == ""


def test_create_from_json_body_file_and_stdin(served: Served, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    body = {"name": "from file", "schedule_type": "interval", "schedule_expression": "1h",
            "action_type": "webhook", "action_config": {"url": "http://127.0.0.1:9/x",
                                                        "secret": "s3cret"},
            "max_retries": 0}
    f = tmp_path / "body.json"
    f.write_text(json.dumps(body))
    s = ok_json(capsys, "schedules", "create", "--json-body", str(f), "--name", "overridden",
                "--set", 'external_id="42"')
    assert s["name"] == "overridden" and s["max_retries"] == 0 and s["external_id"] == "42"
    assert s["action_config"]["url"] == "http://127.0.0.1:9/x"
    assert s["action_config"]["secret"] == "********"  # write-only, as the API shows it

    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps({**body, "name": "from stdin"})))
    s = ok_json(capsys, "schedules", "create", "--json-body", "-",
                "--webhook-url", "https://example.org/hook")
    assert s["name"] == "from stdin"
    assert s["action_config"]["url"] == "https://example.org/hook"  # merged, secret kept
    assert s["action_config"]["secret"] == "********"

    monkeypatch.setattr(sys, "stdin", io.StringIO("[]"))
    code, _, err = run(capsys, "schedules", "create", "--json-body", "-")
    assert code == 2 and "JSON object" in one_line_error(err)


def test_create_deduplicated_says_so(served: Served, capsys: pytest.CaptureFixture[str]) -> None:
    dedup = f"dedup={uuid.uuid4().hex}"
    first = create(capsys, "--set", f"deduplication_key={dedup}")
    code, out, err = run(capsys, "schedules", "create", "--name", "again", "--type", "interval",
                         "--expr", "15m", "--action", "noop",
                         "--set", f"deduplication_key={dedup}")
    assert code == 0 and fields(out)["id"] == first["id"]
    assert "deduplication_key" in err and first["id"] in err


@pytest.mark.parametrize(("argv", "loc"), [
    (("--type", "cron", "--expr", "61 * * * *", "--action", "noop"),
     "body.schedule_expression: "),
    (("--type", "interval", "--expr", "15m", "--action", "noop", "--set", "max_retries=99"),
     "body.max_retries: "),
    (("--type", "interval", "--expr", "15m", "--action", "noop", "--tz", "Mars/Olympus"),
     "body.timezone: "),
    (("--type", "interval", "--expr", "15m", "--action", "webhook"), "body.action_config"),
    (("--type", "interval", "--expr", "15m", "--action", "noop", "--set", "colour=blue"),
     "body.colour: "),
])
def test_create_422_names_the_field(served: Served, capsys: pytest.CaptureFixture[str],
                                    argv: tuple[str, ...], loc: str) -> None:
    code, out, err = run(capsys, "schedules", "create", "--name", "bad", *argv)
    assert code == 1 and out == ""
    assert loc in one_line_error(err)


def test_not_found_and_malformed_ids(served: Served, capsys: pytest.CaptureFixture[str]) -> None:
    for argv, want in [
        (("schedules", "get", MISSING), "schedd: Schedule not found\n"),
        (("schedules", "pause", MISSING), "schedd: Schedule not found\n"),
        (("schedules", "trigger", MISSING), "schedd: Schedule not found\n"),
        (("runs", "get", MISSING), "schedd: Run not found\n"),
        (("runs", "retry", MISSING), "schedd: Run not found\n"),
    ]:
        code, out, err = run(capsys, *argv)
        assert (code, out, err) == (1, "", want), argv
    code, _, err = run(capsys, "schedules", "get", "not-a-uuid")
    assert code == 1 and "path.schedule_id: " in one_line_error(err)
    code, _, err = run(capsys, "runs", "cancel", "x?y#z")  # one path segment, quoted
    assert code == 1 and "path.run_id: " in one_line_error(err)
    code, _, err = run(capsys, "runs", "cancel", "../schedules")  # never another route
    assert code == 1 and one_line_error(err) == "schedd: Not Found\n"
    code, _, err = run(capsys, "runs", "ls", "--limit", "0")
    assert code == 1 and "query.limit: " in one_line_error(err)


# ---------------------------------------------------------------------------- runs
def test_runs_ls_get_cancel_retry(served: Served, capsys: pytest.CaptureFixture[str]) -> None:
    # A worker schedule: its triggered run stays pending (no worker claims it).
    sid = create(capsys, "--action-config", '{"queue": "nobody-listens"}', name="queued",
                 action="worker")["id"]
    first = ok_json(capsys, "schedules", "trigger", sid)
    assert first["status"] == "pending" and first["attempt"] == 1

    code, out, _ = run(capsys, "runs", "ls", "--schedule", sid)
    header, rows = table(out)
    assert header.split() == ["ID", "SCHEDULE", "STATUS", "TRIGGER", "ATTEMPT", "SCHEDULED",
                              "FOR", "ERROR"]
    assert len(rows) == 1
    assert rows[0].split() == [first["id"], sid, "pending", "manual", "1",
                               first["scheduled_for"], "-"]

    code, out, _ = run(capsys, "runs", "get", first["id"])
    got = fields(out)
    assert code == 0 and got["id"] == first["id"] and got["queue"] == "nobody-listens"
    assert got["result"] == "-" and got["resolved_payload"] != ""

    code, out, _ = run(capsys, "runs", "cancel", first["id"], "--reason", "not today")
    cancelled = fields(out)
    assert code == 0 and cancelled["status"] == "cancelled"
    assert cancelled["cancel_reason"] == "not today"
    code, out, err = run(capsys, "runs", "cancel", first["id"])
    assert code == 1 and out == "" and "cancelled" in one_line_error(err)  # 409

    second = ok_json(capsys, "runs", "retry", first["id"])
    assert second["attempt"] == 2 and second["trigger_type"] == "manual"
    assert second["previous_attempt_run_id"] == first["id"]
    assert second["scheduled_for"] == first["scheduled_for"]
    code, _, err = run(capsys, "runs", "retry", first["id"])  # no longer ends its chain
    assert code == 1 and one_line_error(err)

    page = ok_json(capsys, "runs", "ls", "--schedule", sid)
    assert [r["id"] for r in page["runs"]] == [second["id"], first["id"]]  # newest first
    assert page["total"] == 2 and page["has_more"] is False
    page = ok_json(capsys, "runs", "ls", "--schedule", sid, "--status", "cancelled")
    assert [r["id"] for r in page["runs"]] == [first["id"]]
    code, out, _ = run(capsys, "runs", "ls", "--schedule", sid, "--status", "cancelled")
    header, rows = table(out)
    assert rows[0].endswith("  cancelled: not today")  # ERROR: error_code: error_message
    assert rows[0].index("cancelled: not today") == header.index("ERROR")
    assert ok_json(capsys, "runs", "cancel", second["id"])["status"] == "cancelled"
    page = ok_json(capsys, "runs", "ls", "--limit", "1", "--offset", "1")
    assert page["limit"] == 1 and page["offset"] == 1 and len(page["runs"]) == 1


# ---------------------------------------------------------------------------- reaching it
def _post(served: Served, path: str, body: Any) -> Any:
    req = urllib.request.Request(served.url + path, data=json.dumps(body).encode(),
                                 method="POST", headers={"Authorization": f"Bearer {served.key}",
                                                         "Content-Type": "application/json"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(req, timeout=5) as r:
        return json.loads(r.read())


def test_actions_and_kragle_ls(served: Served, capsys: pytest.CaptureFixture[str]) -> None:
    base = "/v1/orgs/o-cli/workspaces/w-cli/apps/a-cli/actions"
    ids = [_post(served, base, {"name": f"cli action {i}", "endpoint_id": "ep",
                                "namespace_id": "ns", "cron_expression": "0 9 * * *"}
                 )["action_id"] for i in range(3)]
    code, out, err = run(capsys, "actions", "ls", "o-cli", "w-cli", "a-cli", "--limit", "2")
    assert code == 0, err
    head, rows = table(out)
    assert head.split()[:3] == ["ID", "NAME", "ENDPOINT"]
    assert len(rows) == 2 and "--cursor" in err
    cursor = err.split("--cursor", 1)[1].strip().rstrip(")")
    page = ok_json(capsys, "actions", "ls", "o-cli", "w-cli", "a-cli", "--cursor", cursor)
    assert [a["action_id"] for a in page["actions"]] == sorted(ids)[2:]
    assert page["next_cursor"] is None
    page = ok_json(capsys, "actions", "ls", "o-cli", "w-cli", "a-cli", "--search", "action 1")
    assert page["total"] == 1
    code, _, err = run(capsys, "actions", "ls", "o-cli", "w-cli", "a-cli", "--cursor", "junk")
    assert code == 1 and "cursor" in one_line_error(err)
    sid = _post(served, "/kragle/schedules", {"config": {"period": 60}, "name": "cli k"})["id"]
    code, out, err = run(capsys, "kragle", "ls")
    assert code == 0, err
    assert any(sid in line and "cli k" in line and '{"period":60}' in line
               for line in table(out)[1])
    assert "page 1" in err
    code, _, err = run(capsys, "kragle", "ls", "--page", "0")
    assert code == 1 and "page" in one_line_error(err)


def test_unreachable_server_exits_1(capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("SCHEDD_URL", url)
    monkeypatch.setenv("SCHEDD_API_KEY", "sk_whatever")
    for argv in (("schedules", "ls"), ("runs", "get", MISSING), ("schedules", "rm", MISSING)):
        code, out, err = run(capsys, *argv)
        assert (code, out) == (1, "")
        assert err == f"schedd: cannot reach {url}: is the daemon running?\n"


def test_url_flag_beats_environment(served: Served, capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCHEDD_URL", f"http://127.0.0.1:{free_port()}")
    assert "schedules" in ok_json(capsys, "schedules", "ls", "--url", served.url + "/")


def test_wrong_key_is_refused_and_never_printed(served: Served,
                                                capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    wrong = "sk_" + "x" * 43
    monkeypatch.setenv("SCHEDD_API_KEY", wrong)
    code, out, err = run(capsys, "schedules", "ls")
    assert code == 1 and out == ""
    assert "SCHEDD_API_KEY" in one_line_error(err) and wrong not in err
    assert served.key not in err


def test_no_key_anywhere_exits_2(served: Served, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SCHEDD_API_KEY")
    code, out, err = run(capsys, "schedules", "ls", "--db", str(tmp_path / "other.db"))
    assert code == 2 and out == ""
    assert "SCHEDD_API_KEY" in one_line_error(err) and "other.db.key" in err


def test_key_from_the_db_key_file_in_process(served: Served,
                                             capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SCHEDD_API_KEY")
    assert "schedules" in ok_json(capsys, "schedules", "ls", "--db", str(served.db))
    monkeypatch.setenv("SCHEDD_DB", str(served.db))  # the config's environment works too
    assert "runs" in ok_json(capsys, "runs", "ls")


def test_discovery_subprocess_config_port_and_db_key_file(daemon: Served,
                                                          tmp_path: Path) -> None:
    """No SCHEDD_URL, no SCHEDD_API_KEY: the URL comes from the config file (its wildcard
    host reached at 127.0.0.1), the key from <db>.key of --db."""
    toml = tmp_path / "client.toml"
    toml.write_text(f'[server]\nhost = "0.0.0.0"\nport = {daemon.port}\n')
    proc = subprocess.run(
        [sys.executable, "-m", "schedd", "schedules", "ls", "--config", str(toml),
         "--db", str(daemon.db), "--json"],
        cwd=tmp_path, env=_clean_env(), capture_output=True, text=True, timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    page = json.loads(proc.stdout)
    assert {"schedules", "total", "limit", "offset", "has_more"} <= set(page)
    assert daemon.key not in proc.stdout + proc.stderr


def test_discovery_in_process_config_names_port_and_db(daemon: Served, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    toml = tmp_path / "schedd.toml"  # found as ./schedd.toml, no flag at all
    toml.write_text(f'[server]\nport = {daemon.port}\n\n[storage]\ndb = "{daemon.db}"\n')
    code, out, err = run(capsys, "runs", "ls")
    assert code == 0, err
    assert table(out)[0].startswith("ID")


def test_resolve_target_precedence(tmp_path: Path) -> None:
    (tmp_path / "x.db.key").write_text("sk_from_file\n")
    args = argparse.Namespace(server_url=None, db=str(tmp_path / "x.db"), config=None)
    t = resolve_target(args, {})
    assert (t.base_url, t.key) == ("http://127.0.0.1:8321", "sk_from_file")
    assert t.key_source.endswith("x.db.key")
    env = {"SCHEDD_URL": "https://h.example:9/", "SCHEDD_API_KEY": "sk_e",
           "SCHEDD_HOST": "::", "SCHEDD_PORT": "1"}
    t = resolve_target(args, env)
    assert (t.base_url, t.key, t.key_source) == ("https://h.example:9", "sk_e", "$SCHEDD_API_KEY")
    t = resolve_target(args, {"SCHEDD_HOST": "::", "SCHEDD_PORT": "1234"})
    assert t.base_url == "http://127.0.0.1:1234"  # a wildcard bind is reached on loopback
    assert resolve_target(args, {"SCHEDD_HOST": "::1"}).base_url == "http://[::1]:8321"
    args.server_url = "http://flag:1"
    assert resolve_target(args, {"SCHEDD_URL": "http://env:2"}).base_url == "http://flag:1"


# ---------------------------------------------------------------------------- entities, records
def test_entities_and_records_round_trip(served: Served, capsys: pytest.CaptureFixture[str],
                                         tmp_path: Path) -> None:
    d = ok_json(capsys, "entities", "create", "--name", f"customers-{uuid.uuid4().hex[:6]}",
                "--field", "renewal=date", "--field", "seats=number", "--field", "vip=boolean")
    assert d["fields"] == {"renewal": "date", "seats": "number", "vip": "boolean"}
    code, out, _ = run(capsys, "entities", "ls")
    assert code == 0 and d["id"] in out
    code, _, err = run(capsys, "entities", "create", "--name", "x", "--field", "a=text")
    assert code == 2 and "NAME=TYPE" in one_line_error(err)
    u = ok_json(capsys, "entities", "update", d["id"], "--field", "plan=string",
                "--remove-field", "vip")
    assert u["fields"] == {"renewal": "date", "seats": "number", "plan": "string"}

    rec = ok_json(capsys, "records", "put", d["id"], "cus 1", "--data",
                  '{"renewal": "2027-01-01", "seats": 3}')
    assert rec["key"] == "cus 1"
    assert ok_json(capsys, "records", "get", d["id"], "cus 1")["data"]["seats"] == 3
    code, _, err = run(capsys, "records", "put", d["id"], "k", "--data", '{"seats": "x"}')
    assert code == 1 and "body.data.seats" in one_line_error(err)

    nd = tmp_path / "in.ndjson"
    nd.write_text("".join(json.dumps({"key": f"n{i:03d}", "data": {"renewal": "2027-02-01"}})
                          + "\n" for i in range(250)) + "\n")
    assert ok_json(capsys, "records", "import", d["id"], str(nd), "--batch", "100") == {
        "upserted": 250}
    csv_path = tmp_path / "in.csv"
    csv_path.write_text("id,renewal,seats,plan\nc1,2027-03-01,5,pro\nc2,,,\n")
    code, out, _ = run(capsys, "records", "import", d["id"], str(csv_path),
                       "--key-column", "id")
    assert code == 0 and "2 record(s) imported" in out
    assert ok_json(capsys, "records", "get", d["id"], "c1")["data"] == {
        "renewal": "2027-03-01", "seats": 5, "plan": "pro"}
    assert ok_json(capsys, "records", "get", d["id"], "c2")["data"] == {
        "renewal": None, "seats": None, "plan": None}
    assert ok_json(capsys, "entities", "get", d["id"])["record_count"] == 253

    # a bad record: the batch is refused, its line named, earlier batches applied
    bad = tmp_path / "bad.ndjson"
    lines = [json.dumps({"key": f"z{i}", "data": {"renewal": "2027-01-01"}}) for i in range(5)]
    lines[3] = json.dumps({"key": "z3", "data": {"renewal": "not a date"}})
    bad.write_text("\n".join(lines) + "\n")
    code, _, err = run(capsys, "records", "import", d["id"], str(bad), "--batch", "2")
    assert code == 1
    progress, last = err.splitlines()  # progress on stderr, then the error
    assert progress == "imported 2 record(s)"
    assert "line 4 (data.renewal)" in one_line_error(last) and "2 record(s) imported" in last
    assert ok_json(capsys, "entities", "get", d["id"])["record_count"] == 255

    page = ok_json(capsys, "records", "ls", d["id"], "--limit", "2")
    assert [r["key"] for r in page["records"]] == ["c1", "c2"] and page["next_after"] == "c2"
    code, out, _ = run(capsys, "records", "rm", d["id"], "cus 1")
    assert code == 0 and "deleted cus 1" in out
    code, _, err = run(capsys, "records", "get", d["id"], "cus 1")
    assert code == 1 and "Record not found" in one_line_error(err)
    code, out, _ = run(capsys, "entities", "rm", d["id"])
    assert code == 0
