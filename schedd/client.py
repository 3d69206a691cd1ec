"""The client half of the `schedd` command: `schedd schedules …` and `schedd runs …`, over
the HTTP API (SPEC §3), with the standard library only.

It finds the server and the key by itself (SPEC §6):
- server: `--url` > $SCHEDD_URL > `http://<host>:<port>` of the loaded config (a wildcard
  bind address, 0.0.0.0 or ::, is reached at 127.0.0.1);
- key: $SCHEDD_API_KEY > the file `<db>.key` of the configured database (`--db`,
  `--config`, as the admin commands take them). There is deliberately no key flag: a key
  on a command line leaks into shell history and `ps`. The key is never printed.

Output: aligned tables for lists, `key: value` lines for one object, the API's JSON with
`--json`. Exit status: 0 done; 1 the server could not be reached or refused the request
(one line: the API's detail; for a 422 `loc: msg` of each item); 2 bad usage or config.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path
from typing import Any, NoReturn

from schedd import __version__, config
from schedd.errors import ConfigError
from schedd.models import ActionType, RunStatus, ScheduleStatus, ScheduleType

TIMEOUT_S = 10.0

SCHEDULE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("ID", "id"), ("NAME", "name"), ("TYPE", "schedule_type"),
    ("EXPRESSION", "schedule_expression"), ("TZ", "timezone"), ("ACTION", "action_type"),
    ("STATUS", "status"), ("NEXT RUN", "next_run_at"),
)
RUN_COLUMNS: tuple[tuple[str, str], ...] = (
    ("ID", "id"), ("SCHEDULE", "schedule_id"), ("STATUS", "status"),
    ("TRIGGER", "trigger_type"), ("ATTEMPT", "attempt"), ("SCHEDULED FOR", "scheduled_for"),
    ("ERROR", "error"),
)
ACTION_COLUMNS: tuple[tuple[str, str], ...] = (
    ("ID", "action_id"), ("NAME", "name"), ("ENDPOINT", "endpoint_id"),
    ("TYPE", "schedule_type"), ("WHEN", "when"), ("ENABLED", "is_enabled"),
    ("NEXT RUN", "next_run_at"), ("RUNS", "total_runs"),
)
KRAGLE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("ID", "id"), ("NAME", "name"), ("ONCE", "once"), ("CONFIG", "config"),
)
ERROR_CELL_MAX = 80  # the last column of the runs table; `runs get` shows it whole


def _die(message: str, code: int = 2) -> NoReturn:
    print(f"schedd: {_clean(message)}", file=sys.stderr)
    raise SystemExit(code)


def _usage(args: argparse.Namespace, message: str) -> NoReturn:
    _die(f"{message} (see '{args.prog} --help')")


def _clean(text: str) -> str:
    """One printable line: a server's or a user's text must not move the terminal."""
    return "".join(c if c.isprintable() else " " for c in text)


# ---------------------------------------------------------------------------- target
@dataclass(frozen=True)
class Target:
    base_url: str
    key: str
    key_source: str  # where the key came from, for messages (never the key itself)


def _base_url(raw: str, source: str) -> str:
    url = raw.strip().rstrip("/")
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018  (raises on a bad port)
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        _die(f"{source}: {raw!r} is not an http:// or https:// URL")
    return url


def _default_url(settings: config.Settings) -> str:
    host = settings.host
    if host in ("0.0.0.0", "::", "[::]", ""):  # noqa: S104  (a wildcard bind, not a bind)
        host = "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{settings.port}"


def resolve_target(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> Target:
    """The server's base URL and the API key, found as the module docstring says."""
    env = os.environ if env is None else env
    url: str | None = args.server_url or env.get("SCHEDD_URL") or None
    url_source = "--url" if args.server_url else "SCHEDD_URL"
    key: str | None = env.get("SCHEDD_API_KEY", "").strip() or None
    settings: config.Settings | None = None
    if url is None or key is None:
        try:
            settings = config.load(args.config, {"db": args.db}, env)
        except ConfigError as exc:
            _die(str(exc))
    if url is None:
        assert settings is not None
        url, url_source = _default_url(settings), "config"
    base = _base_url(url, url_source)
    if key is not None:
        key_source = "$SCHEDD_API_KEY"
    else:
        assert settings is not None
        path = Path(settings.db + ".key")
        key_source = str(path)
        try:
            key = path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            _die(f"no API key: set SCHEDD_API_KEY, or point --db/--config at the daemon's "
                 f"database ({path} does not exist)")
        except (OSError, UnicodeDecodeError) as exc:
            _die(f"{path}: cannot read the API key: {getattr(exc, 'strerror', None) or exc}")
        if not key:
            _die(f"{path}: the key file is empty")
    if not all(c.isprintable() and not c.isspace() for c in key):
        _die(f"the API key from {key_source} holds spaces or control characters")
    return Target(base, key, key_source)


# ---------------------------------------------------------------------------- HTTP
class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """The API never redirects; following one would carry the key to another place."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _opener(base_url: str) -> urllib.request.OpenerDirector:
    handlers: list[urllib.request.BaseHandler] = [_NoRedirect()]
    if _is_loopback(urllib.parse.urlsplit(base_url).hostname):
        handlers.append(urllib.request.ProxyHandler({}))  # a local daemon is never proxied
    return urllib.request.build_opener(*handlers)


def _error_text(status: int, reason: str, data: bytes) -> str:
    """The API's detail as one line: a string as is, a 422 list as `loc: msg; …`."""
    detail: Any = None
    try:
        doc = json.loads(data)
        if isinstance(doc, dict):
            detail = doc.get("detail")
    except ValueError:
        pass
    if isinstance(detail, list) and detail:
        parts = []
        for item in detail:
            if not isinstance(item, dict):
                parts.append(str(item))
                continue
            loc = ".".join(str(p) for p in item.get("loc") or [])
            msg = str(item.get("msg", ""))
            parts.append(f"{loc}: {msg}" if loc else msg)
        text = "; ".join(parts)
    elif isinstance(detail, str) and detail:
        text = detail
    else:
        text = f"HTTP {status} {reason}".rstrip()
    if status >= 500:
        text = f"server error (HTTP {status}): {text}"
    elif not 400 <= status < 500:
        text = f"unexpected answer (HTTP {status}): {text}"
    return text


def request(
    target: Target,
    method: str,
    path: str,
    *,
    query: Mapping[str, Any] | None = None,
    body: Any = None,
    answer_4xx: bool = False,
    timeout: float = TIMEOUT_S,
) -> tuple[int, Any]:
    """Send one request; (status, decoded JSON or None). Any failure exits 1 with one line;
    with answer_4xx a 4xx answer is returned instead (its decoded body), for the caller to
    explain (an import names the line of a refused record)."""
    url = target.base_url + path
    params = {k: v for k, v in (query or {}).items() if v is not None}
    if params:
        url += "?" + urllib.parse.urlencode(params)
    headers = {
        "Authorization": f"Bearer {target.key}",
        "Accept": "application/json",
        "User-Agent": f"schedd-cli/{__version__}",
    }
    data = None
    if body is not None:
        data = json.dumps(body).encode("utf-8")
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=data, headers=headers, method=method)  # noqa: S310
    base = target.base_url
    try:
        with _opener(base).open(req, timeout=timeout) as resp:
            status: int = resp.status
            raw: bytes = resp.read()
    except urllib.error.HTTPError as exc:
        try:
            err_body = exc.read()
        except (OSError, HTTPException):
            err_body = b""
        finally:
            exc.close()
        if answer_4xx and 400 <= exc.code < 500:
            try:
                return exc.code, json.loads(err_body)
            except ValueError:
                return exc.code, None
        text = _error_text(exc.code, str(exc.reason or ""), err_body)
        if exc.code == 401:
            text += f" (the key came from {target.key_source})"
        _die(text, 1)
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, ConnectionRefusedError):
            _die(f"cannot reach {base}: is the daemon running?", 1)
        if isinstance(reason, TimeoutError):
            _die(f"{base} did not answer within {timeout:g} s", 1)
        _die(f"cannot reach {base}: {getattr(reason, 'strerror', None) or reason}", 1)
    except TimeoutError:
        _die(f"{base} did not answer within {timeout:g} s", 1)
    except ConnectionRefusedError:
        _die(f"cannot reach {base}: is the daemon running?", 1)
    except (OSError, HTTPException) as exc:
        _die(f"cannot reach {base}: {type(exc).__name__}: {exc}", 1)
    if not raw:
        return status, None
    try:
        return status, json.loads(raw)
    except ValueError:
        _die(f"unexpected answer from {base}{path}: not JSON (HTTP {status})", 1)


def _call(args: argparse.Namespace, method: str, path: str, **kw: Any) -> tuple[int, Any]:
    return request(resolve_target(args), method, path, **kw)


def _seg(value: str) -> str:
    """An id as one path segment, whatever it holds (the API answers 422 for a non-uuid)."""
    return urllib.parse.quote(value, safe="")


# ---------------------------------------------------------------------------- output
def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return _clean(json.dumps(value, ensure_ascii=False, separators=(",", ":")))
    return _clean(str(value))


def print_table(columns: Sequence[tuple[str, str]], items: Sequence[Mapping[str, Any]]) -> None:
    rows = [[title for title, _ in columns]]
    rows += [[_cell(item.get(field)) for _, field in columns] for item in items]
    widths = [max(len(r[i]) for r in rows) for i in range(len(columns))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def print_object(obj: Mapping[str, Any]) -> None:
    width = max((len(k) for k in obj), default=0) + 1
    for k, v in obj.items():
        print(f"{k + ':':<{width}} {_cell(v)}".rstrip())


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False))


def _show(args: argparse.Namespace, obj: Any) -> None:
    if args.json:
        print_json(obj)
    elif isinstance(obj, Mapping):
        print_object(obj)


def _run_error(run: Mapping[str, Any]) -> str | None:
    code, msg = run.get("error_code"), run.get("error_message")
    if not code and not msg:
        return None
    text = _clean(f"{code}: {msg}" if code and msg else str(code or msg))
    return text if len(text) <= ERROR_CELL_MAX else text[: ERROR_CELL_MAX - 1] + "…"


def _show_page(args: argparse.Namespace, page: Any, key: str,
               columns: Sequence[tuple[str, str]]) -> None:
    if args.json:
        print_json(page)
        return
    items = (page.get(key) or []) if isinstance(page, Mapping) else []
    if key == "runs":
        items = [{**r, "error": _run_error(r)} for r in items]
    print_table(columns, items)
    if isinstance(page, Mapping) and page.get("has_more"):
        first = int(page.get("offset") or 0)
        print(f"({first + 1}-{first + len(items)} of {page.get('total')}; "
              f"the next page: --offset {first + len(items)})", file=sys.stderr)


# ---------------------------------------------------------------------------- schedules
def cmd_schedules_ls(args: argparse.Namespace) -> int:
    _, page = _call(args, "GET", "/v1/schedules", query={
        "status": args.status, "customer_id": args.customer_id,
        "external_id": args.external_id, "limit": args.limit, "offset": args.offset,
    })
    _show_page(args, page, "schedules", SCHEDULE_COLUMNS)
    return 0


def cmd_schedules_get(args: argparse.Namespace) -> int:
    _, s = _call(args, "GET", f"/v1/schedules/{_seg(args.id)}")
    _show(args, s)
    return 0


def _json_arg(args: argparse.Namespace, text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        _usage(args, f"{what}: not valid JSON: {exc}")


def _set_value(raw: str) -> Any:
    """`--set key=value`: the value as JSON when it is valid JSON (5, true, null, {...}),
    else as a string."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def create_body(args: argparse.Namespace) -> dict[str, Any]:
    """The POST /v1/schedules body: --json-body, then the named flags, then --set."""
    body: dict[str, Any] = {}
    if args.json_body is not None:
        src = args.json_body
        try:
            text = sys.stdin.read() if src == "-" else Path(src).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            _usage(args, f"--json-body {src}: cannot read: {getattr(exc, 'strerror', None) or exc}")
        doc = _json_arg(args, text, f"--json-body {src}")
        if not isinstance(doc, dict):
            _usage(args, f"--json-body {src}: must hold a JSON object")
        body.update(doc)
    else:
        missing = [flag for flag, value in (("--name", args.name), ("--type", args.type),
                                            ("--action", args.action)) if value is None]
        if missing:
            _usage(args, f"the following arguments are required: {', '.join(missing)} "
                         f"(or give a whole body with --json-body)")
    named = {"name": args.name, "schedule_type": args.type, "schedule_expression": args.expr,
             "timezone": args.tz, "action_type": args.action}
    body.update({k: v for k, v in named.items() if v is not None})
    if args.action_config is not None:
        cfg = _json_arg(args, args.action_config, "--action-config")
        if not isinstance(cfg, dict):
            _usage(args, "--action-config must be a JSON object")
        body["action_config"] = cfg
    if args.webhook_url is not None:
        cfg = body.get("action_config")
        cfg = dict(cfg) if isinstance(cfg, dict) else {}
        cfg["url"] = args.webhook_url
        body["action_config"] = cfg
    body.setdefault("action_config", {})
    for item in args.set or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            _usage(args, f"--set {item!r}: expected KEY=VALUE")
        body[key.strip()] = _set_value(raw)
    return body


def cmd_schedules_create(args: argparse.Namespace) -> int:
    body = create_body(args)
    status, s = _call(args, "POST", "/v1/schedules", body=body)
    if status == 200 and isinstance(s, Mapping):
        print(f"schedd: a schedule with this deduplication_key exists: {s.get('id')} "
              "(nothing created)", file=sys.stderr)
    _show(args, s)
    return 0


def _schedule_action(verb: str) -> Any:
    def cmd(args: argparse.Namespace) -> int:
        _, obj = _call(args, "POST", f"/v1/schedules/{_seg(args.id)}/{verb}")
        _show(args, obj)
        return 0

    cmd.__name__ = f"cmd_schedules_{verb}"
    return cmd


def cmd_schedules_rm(args: argparse.Namespace) -> int:
    _call(args, "DELETE", f"/v1/schedules/{_seg(args.id)}")
    if not args.json:  # the API answers 204 without a body: nothing to print as JSON
        print(f"deleted {_clean(args.id)}")
    return 0


# ---------------------------------------------------------------------------- runs
def cmd_runs_ls(args: argparse.Namespace) -> int:
    _, page = _call(args, "GET", "/v1/runs", query={
        "schedule_id": args.schedule, "status": args.status,
        "limit": args.limit, "offset": args.offset,
    })
    _show_page(args, page, "runs", RUN_COLUMNS)
    return 0


def cmd_runs_get(args: argparse.Namespace) -> int:
    _, run = _call(args, "GET", f"/v1/runs/{_seg(args.id)}")
    _show(args, run)
    return 0


def cmd_runs_cancel(args: argparse.Namespace) -> int:
    body = {} if args.reason is None else {"reason": args.reason}
    _, run = _call(args, "POST", f"/v1/runs/{_seg(args.id)}/cancel", body=body)
    _show(args, run)
    return 0


def cmd_runs_retry(args: argparse.Namespace) -> int:
    _, run = _call(args, "POST", f"/v1/runs/{_seg(args.id)}/retry")
    _show(args, run)
    return 0


# ---------------------------------------------------------------------------- compat
def cmd_actions_ls(args: argparse.Namespace) -> int:
    path = (f"/v1/orgs/{_seg(args.org)}/workspaces/{_seg(args.workspace)}"
            f"/apps/{_seg(args.app)}/actions")
    _, page = _call(args, "GET", path, query={
        "search": args.search, "limit": args.limit, "cursor": args.cursor})
    if args.json:
        print_json(page)
        return 0
    items = (page.get("actions") or []) if isinstance(page, Mapping) else []
    print_table(ACTION_COLUMNS, [
        {**a, "when": a.get("cron_expression") or a.get("scheduled_at")} for a in items])
    if isinstance(page, Mapping) and page.get("next_cursor"):
        print(f"({len(items)} of {page.get('total')}; the next page: --cursor "
              f"{_clean(str(page['next_cursor']))})", file=sys.stderr)
    return 0


def cmd_kragle_ls(args: argparse.Namespace) -> int:
    _, page = _call(args, "GET", "/kragle/schedules", query={"page": args.page})
    if args.json:
        print_json(page)
        return 0
    items = (page.get("schedules") or []) if isinstance(page, Mapping) else []
    print_table(KRAGLE_COLUMNS, items)
    if isinstance(page, Mapping):
        print(f"(page {page.get('page')}: {page.get('pagesize')} of {page.get('count')})",
              file=sys.stderr)
    return 0


# ---------------------------------------------------------------------------- parser
def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the API's JSON answer")
    g = p.add_argument_group("finding the daemon",
                             "The key comes from $SCHEDD_API_KEY, else from <db>.key.")
    g.add_argument("--url", dest="server_url", metavar="URL",
                   help="the daemon's base URL (default $SCHEDD_URL, else http://HOST:PORT "
                        "of the config)")
    g.add_argument("--db", help="the daemon's database; its key file <db>.key holds the key "
                                "(default ./schedd.db)")
    g.add_argument("--config",
                   help="TOML config file (default $SCHEDD_CONFIG or ./schedd.toml)")


def _leaf(group: Any, name: str, help_: str, func: Any, *, aliases: Sequence[str] = (),
          id_of: str | None = None) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = group.add_parser(name, help=help_, description=help_ + ".",
                                                  aliases=list(aliases))
    if id_of is not None:
        p.add_argument("id", metavar="ID", help=f"the {id_of}'s id")
    _common(p)
    p.set_defaults(func=func, prog=p.prog)
    return p


def _paging(p: argparse.ArgumentParser, default: int, most: int) -> None:
    p.add_argument("--limit", type=int, metavar="N",
                   help=f"at most N (1..{most}, default {default})")
    p.add_argument("--offset", type=int, metavar="N", help="skip the first N (default 0)")


def add_commands(sub: Any) -> None:
    """Add `schedules`, `runs`, `actions` and `kragle` to the `schedd` parser's
    subcommands."""
    g = sub.add_parser("schedules", help="list and manage schedules (through the API)")
    parser_class = type(g)
    gs = g.add_subparsers(dest="schedules_command", metavar="ACTION",
                          parser_class=parser_class, required=True)

    p = _leaf(gs, "ls", "list schedules, oldest first", cmd_schedules_ls, aliases=["list"])
    p.add_argument("--status", choices=[s.value for s in ScheduleStatus])
    p.add_argument("--customer-id", metavar="UUID")
    p.add_argument("--external-id", metavar="ID")
    _paging(p, 50, 200)

    _leaf(gs, "get", "show one schedule", cmd_schedules_get, id_of="schedule")

    p = _leaf(gs, "create", "create a schedule", cmd_schedules_create)
    p.add_argument("--name", help="its name (required without --json-body)")
    p.add_argument("--type", choices=[t.value for t in ScheduleType],
                   help="the schedule type (required without --json-body)")
    p.add_argument("--expr", metavar="EXPR",
                   help="cron expression, interval (15m, PT1H) or once-time (ISO 8601)")
    p.add_argument("--tz", metavar="ZONE", help="IANA timezone (the API's default: UTC)")
    p.add_argument("--action", choices=[a.value for a in ActionType
                                             if a is not ActionType.backend],
                   help="the action type (required without --json-body)")
    p.add_argument("--action-config", metavar="JSON",
                   help="the action's config, a JSON object (default {})")
    p.add_argument("--webhook-url", metavar="URL", help="shorthand: action_config.url")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="any other create field, e.g. max_retries=5 or description=nightly; "
                        "VALUE is JSON when it parses as JSON, else a string (quote it, "
                        "external_id='\"42\"', to force a string); repeatable")
    p.add_argument("--json-body", metavar="FILE",
                   help="read the whole request body (a JSON object) from FILE, or stdin "
                        "with -; the flags above override its fields")

    _leaf(gs, "pause", "pause a schedule", _schedule_action("pause"), id_of="schedule")
    _leaf(gs, "resume", "resume a paused schedule (next run computed from now)",
          _schedule_action("resume"), id_of="schedule")
    _leaf(gs, "trigger", "run a schedule now (prints the new run)",
          _schedule_action("trigger"), id_of="schedule")
    _leaf(gs, "rm", "delete a schedule (its pending runs are cancelled)", cmd_schedules_rm,
          aliases=["delete"], id_of="schedule")

    g = sub.add_parser("runs", help="list, cancel and retry runs (through the API)")
    gr = g.add_subparsers(dest="runs_command", metavar="ACTION",
                          parser_class=parser_class, required=True)
    p = _leaf(gr, "ls", "list runs, newest first", cmd_runs_ls, aliases=["list"])
    p.add_argument("--schedule", metavar="ID", help="only this schedule's runs")
    p.add_argument("--status", choices=[s.value for s in RunStatus])
    _paging(p, 20, 100)
    _leaf(gr, "get", "show one run", cmd_runs_get, id_of="run")
    p = _leaf(gr, "cancel", "cancel a pending or running run", cmd_runs_cancel, id_of="run")
    p.add_argument("--reason", help="kept on the run as cancel_reason")
    _leaf(gr, "retry", "start a new attempt of a failed or cancelled run", cmd_runs_retry,
          id_of="run")

    # The compatibility routers (docs/compat.md): what they make is an ordinary schedule,
    # so `schedules` and `runs` manage it too; these list it in the router's own terms.
    g = sub.add_parser("actions", help="list Actions API actions (seed 002 router)")
    ga = g.add_subparsers(dest="actions_command", metavar="ACTION",
                          parser_class=parser_class, required=True)
    p = _leaf(ga, "ls", "list the actions of one org/workspace/app, oldest first",
              cmd_actions_ls, aliases=["list"])
    p.add_argument("org", metavar="ORG", help="the org id of the path")
    p.add_argument("workspace", metavar="WORKSPACE", help="the workspace id of the path")
    p.add_argument("app", metavar="APP", help="the app id of the path")
    p.add_argument("--search", metavar="TEXT", help="only names or descriptions holding TEXT")
    p.add_argument("--limit", type=int, metavar="N", help="at most N (1..200, default 50)")
    p.add_argument("--cursor", metavar="CURSOR", help="the next page's cursor")
    g = sub.add_parser("kragle", help="list Kragle schedules (seed 003 router)")
    gk = g.add_subparsers(dest="kragle_command", metavar="ACTION",
                          parser_class=parser_class, required=True)
    p = _leaf(gk, "ls", "list Kragle schedules, 10 a page", cmd_kragle_ls, aliases=["list"])
    p.add_argument("--page", type=int, metavar="N", help="the page, from 1 (default 1)")
