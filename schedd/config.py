"""Settings, declared once. Precedence: flags > SCHEDD_* environment > TOML file > defaults.

Every field carries its TOML section and a one-line description in its Meta; the
example file and the docs are checked against this declaration by the tests.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
import tomllib
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from schedd.errors import ConfigError

log = logging.getLogger("schedd.config")

#: Link-local ranges (cloud metadata at 169.254.169.254) and the other cloud metadata
#: addresses: AWS over IPv6, Alibaba Cloud. See schedd/netpolicy.py.
WEBHOOK_DENY_NETWORKS_DEFAULT: tuple[str, ...] = (
    "169.254.0.0/16",
    "fe80::/10",
    "fd00:ec2::254/128",
    "100.100.100.200/32",
)
#: Settings given as a list: an environment variable holds them comma-separated.
_LIST_FIELDS = frozenset({"webhook_deny_networks"})


def _m(section: str, doc: str, key: str | None = None, **kw: Any) -> Meta:
    """A setting's TOML place: `section` (dotted for a sub-table, "compat.kragle") and
    `key` in it (default: the field's name, which is also its SCHEDD_<NAME> variable)."""
    extra = {"section": section, "doc": doc}
    if key is not None:
        extra["key"] = key
    return Meta(extra=extra, **kw)


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    # [server]
    host: Annotated[str, _m("server", "address the HTTP API binds to", min_length=1)] = "127.0.0.1"
    port: Annotated[int, _m("server", "TCP port of the HTTP API", ge=1, le=65535)] = 8321
    # [storage]
    db: Annotated[str, _m("storage", "path of the SQLite database file", min_length=1)] = (
        "./schedd.db"
    )
    run_retention_days: Annotated[
        int, _m("storage", "runs older than this are pruned (the last 100 per schedule stay)", ge=1)
    ] = 30
    # [database]
    database_url: Annotated[
        str, _m("database", "PostgreSQL instead of the SQLite file: postgresql://user:pass@host/db"
                " (empty: SQLite at `db`; the key file is still written beside `db`)", key="url")
    ] = ""
    # [engine]
    max_concurrent_actions: Annotated[
        int, _m("engine", "actions running at the same time, at most", ge=1, le=10000)
    ] = 64
    sleep_cap_seconds: Annotated[
        float, _m("engine", "longest single sleep of the loop (notices clock jumps)", gt=0, le=300)
    ] = 30.0
    engine_thread: Annotated[
        bool, _m("engine", "run the scheduler loop on its own thread and event loop, apart "
                 "from the HTTP API's")
    ] = False
    api_yields_to_fires: Annotated[
        bool, _m("engine", "while a burst of due runs fires, the HTTP server reads no new "
                 "requests (at most 150 ms per burst, then at least 100 ms of reading)")
    ] = True
    claim_batch_size: Annotated[
        int, _m("engine", "due schedules and runs taken in one write transaction, at most",
                ge=1, le=10000)
    ] = 500
    retry_backoff_cap_seconds: Annotated[
        float, _m("engine", "upper bound of the delay between two attempts", ge=0)
    ] = 3600.0
    shutdown_grace_seconds: Annotated[
        float, _m("engine", "on SIGTERM, how long running actions may finish", ge=0, le=3600)
    ] = 30.0
    node_lease_seconds: Annotated[
        float, _m("engine", "lease of a run this node runs, renewed every third of it; once it"
                  " ran out (the node died), any node fails the run interrupted and retries it",
                  ge=3, le=3600)
    ] = 15.0
    # [actions]
    allow_commands: Annotated[
        bool, _m("actions", "allow `command` actions (local processes) to be created and run")
    ] = False
    webhook_max_connections: Annotated[
        int, _m("actions", "open webhook connections, at most", ge=1, le=10000)
    ] = 256
    webhook_max_connections_per_host: Annotated[
        int, _m("actions", "webhook requests in flight to one host, at most; more wait",
                ge=1, le=10000)
    ] = 64
    webhook_follow_redirects: Annotated[
        bool, _m("actions", "follow HTTP redirects of webhook answers")
    ] = False
    webhook_deny_networks: Annotated[
        tuple[str, ...],
        _m("actions", "networks webhooks never connect to (CIDR), checked on resolved addresses"),
    ] = WEBHOOK_DENY_NETWORKS_DEFAULT
    webhook_allow_private: Annotated[
        bool, _m("actions", "let webhooks reach loopback and private addresses")
    ] = True
    webhook_client: Annotated[
        Literal["lean", "aiohttp"],
        _m("actions", "HTTP client of plain-http webhooks: the lean one, or aiohttp for all"),
    ] = "lean"
    # [compat]: the compatibility routers (SPEC 7, docs/compat.md). Each is switched by
    # `[compat] actions | kragle | syncs = true|false`, SPEC's spelling; a router with
    # settings of its own keeps them in its table, where `enabled` is its switch (TOML
    # cannot hold both `[compat] syncs = ...` and a [compat.syncs] table).
    actions_enabled: Annotated[
        bool, _m("compat", "serve the Actions API (seed 002) under /v1/orgs/...", key="actions")
    ] = True
    compat_endpoints: Annotated[
        dict[str, str],
        _m("compat", "Actions API endpoint_id -> webhook URL; unmapped endpoints are worker"
           " queues", key="endpoints"),
    ] = msgspec.field(default_factory=dict)
    kragle_enabled: Annotated[
        bool, _m("compat.kragle", "serve the Kragle schedules API (seed 003) under /kragle"
                 " ([compat] kragle = false says the same)", key="enabled")
    ] = True
    kragle_public_read: Annotated[
        bool, _m("compat.kragle", "serve the Kragle GETs without a key (tenant below)",
                 key="public_read")
    ] = False
    kragle_tenant: Annotated[
        str, _m("compat.kragle", "the tenant whose schedules public Kragle GETs show",
                key="tenant", min_length=1)
    ] = "default"
    syncs_enabled: Annotated[
        bool, _m("compat.syncs", "serve the Syncs API (seed 004) under /api/v1/syncs"
                 " ([compat] syncs = false says the same)", key="enabled")
    ] = True
    syncs_catalog_dir: Annotated[
        str, _m("compat.syncs", "a directory of provider catalog JSON files that add to or"
                " replace the shipped ones (empty: none)", key="catalog_dir")
    ] = ""
    # [console]
    console_enabled: Annotated[
        bool, _m("console", "serve the web console at /ui (sign in with an API key)")
    ] = True
    console_session_hours: Annotated[
        float, _m("console", "a console sign-in lasts this long, then asks for the key again",
                  gt=0, le=720)
    ] = 12.0
    # [logging]
    log_level: Annotated[
        Literal["debug", "info", "warning", "error"], _m("logging", "least severe level logged")
    ] = "info"
    log_format: Annotated[Literal["text", "json"], _m("logging", "text lines or JSON lines")] = (
        "text"
    )


FIELDS: tuple[str, ...] = Settings.__struct_fields__
#: Earlier spellings still read, each with a warning naming the one to use (deprecated:
#: they go in a later release). TOML (section, key) -> field; environment variable -> field.
DEPRECATED_TOML: dict[tuple[str, str], str] = {
    ("compat", "syncs_enabled"): "syncs_enabled",
    ("compat", "syncs_catalog_dir"): "syncs_catalog_dir",
}
DEPRECATED_ENV: dict[str, str] = {"SCHEDD_COMPAT_ACTIONS": "actions_enabled"}


def database_label(settings: Settings) -> str:
    """The database in a log line or a message: the SQLite file, or PostgreSQL's host,
    port and database name (never the url itself, which may hold a password)."""
    if not settings.database_url:
        return settings.db
    parts = urllib.parse.urlsplit(settings.database_url)
    where = parts.hostname or "local socket"
    if parts.port:
        where += f":{parts.port}"
    return f"PostgreSQL {where}/{parts.path.lstrip('/')}"


def redacted_url(url: str) -> str:
    """A database url fit for a message: its password (in the user part, or a `password`
    or `sslpassword` parameter, also in key=value form) replaced by `***`; everything else
    as given."""
    scheme, sep, rest = url.partition("://")
    if sep:
        cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
        authority, tail = rest[:cut], rest[cut:]
        if "@" in authority:
            userinfo, _, hostport = authority.rpartition("@")
            if ":" in userinfo:
                userinfo = userinfo.split(":", 1)[0] + ":***"
            authority = f"{userinfo}@{hostport}"
        url = f"{scheme}://{authority}{tail}"
    return re.sub(r"(?i)\b((?:ssl)?password\s*=\s*)('[^']*'|[^&\s]*)", r"\1***", url)


def field_info() -> dict[str, tuple[str, str, Any]]:
    """name -> (section, description, default), in declaration order."""
    out: dict[str, tuple[str, str, Any]] = {}
    info = msgspec.inspect.type_info(Settings)
    assert isinstance(info, msgspec.inspect.StructType)
    for f in info.fields:
        extra: dict[str, Any] = {}
        t = f.type
        if isinstance(t, msgspec.inspect.Metadata):
            extra = t.extra or {}
        default = f.default if f.default is not msgspec.NODEFAULT else f.default_factory()
        out[f.name] = (extra.get("section", ""), extra.get("doc", ""), default)
    return out


def toml_keys() -> dict[str, str]:
    """name -> its key inside its TOML section (the name unless declared otherwise)."""
    info = msgspec.inspect.type_info(Settings)
    assert isinstance(info, msgspec.inspect.StructType)
    out: dict[str, str] = {}
    for f in info.fields:
        extra = f.type.extra or {} if isinstance(f.type, msgspec.inspect.Metadata) else {}
        out[f.name] = extra.get("key", f.name)
    return out


def _deprecated(source: str, old: str, name: str) -> None:
    section, _, _ = field_info()[name]
    log.warning("%s: %s is deprecated; use %s in [%s] (or SCHEDD_%s)", source, old,
                toml_keys()[name], section, name.upper())


def _flatten_toml(data: Mapping[str, Any], source: str) -> dict[str, Any]:
    """TOML tables -> {field name: value}. Sections may be dotted ([compat.kragle]); a bool
    given where a section with an `enabled` key is expected (`[compat] kragle = false`)
    sets that key, since TOML cannot hold both `kragle = ...` and a [compat.kragle] table;
    likewise a table `[compat.actions]` holding only `enabled` sets `[compat] actions`."""
    info = field_info()
    keys = toml_keys()
    by_place = {(info[n][0], keys[n]): n for n in FIELDS}
    sections = {info[n][0] for n in FIELDS}
    where = {keys[n]: info[n][0] for n in FIELDS}
    flat: dict[str, Any] = {}

    def walk(table: Mapping[str, Any], path: str) -> None:
        for key, value in table.items():
            sub = f"{path}.{key}" if path else key
            name = by_place.get((path, key))
            if (name is not None and isinstance(value, dict) and set(value) == {"enabled"}
                    and isinstance(info[name][2], bool)):
                flat[name] = value["enabled"]
            elif name is not None:
                flat[name] = value
            elif (path, key) in DEPRECATED_TOML:
                flat[DEPRECATED_TOML[(path, key)]] = value
                _deprecated(source, f"[{path}] {key}", DEPRECATED_TOML[(path, key)])
            elif isinstance(value, dict) and sub in sections:
                walk(value, sub)
            elif isinstance(value, bool) and (sub, "enabled") in by_place:
                flat[by_place[(sub, "enabled")]] = value
            elif not path:
                raise ConfigError(f"{source}: unknown section [{key}]")
            elif key in where and where[key] != path:
                raise ConfigError(f"{source}: {key} belongs in [{where[key]}]")
            else:
                raise ConfigError(f"{source}: unknown setting {key!r}")

    walk(data, "")
    return flat


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for var, name in DEPRECATED_ENV.items():
        if var in env and "SCHEDD_" + name.upper() not in env:
            out[name] = env[var]
            _deprecated("environment", var, name)
    for name in FIELDS:
        raw = env.get("SCHEDD_" + name.upper())
        if raw is not None:
            out[name] = ([v.strip() for v in raw.split(",") if v.strip()]
                         if name in _LIST_FIELDS else raw)
            if isinstance(field_info()[name][2], dict):  # a table: given as a JSON object
                try:
                    out[name] = json.loads(raw)
                except ValueError:
                    raise ConfigError(f"SCHEDD_{name.upper()}: not a JSON object") from None
    return out


def _convert(values: dict[str, Any], source: str, *, strict: bool) -> dict[str, Any]:
    """Validate values against Settings, naming the key in the error."""
    for k in values:
        if k not in FIELDS:
            raise ConfigError(f"{source}: unknown setting {k!r}")
    try:
        msgspec.convert({**msgspec.structs.asdict(Settings()), **values}, Settings, strict=strict)
    except msgspec.ValidationError as exc:
        msg, _, path = str(exc).partition(" - at `$.")
        key = path.rstrip("`") or "?"
        raise ConfigError(f"{source}: {key}: {msg}") from None
    for network in values.get("webhook_deny_networks", ()):
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise ConfigError(f"{source}: webhook_deny_networks: {network!r} is not an IP "
                              "network (CIDR, e.g. 10.0.0.0/8)") from None
    return values


def default_config_path(env: Mapping[str, str]) -> Path | None:
    if p := env.get("SCHEDD_CONFIG"):
        return Path(p)
    local = Path("schedd.toml")
    return local if local.is_file() else None


def load(
    config_path: str | Path | None = None,
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> Settings:
    """Build Settings from flags > SCHEDD_* env > TOML file > defaults.

    `config_path` None means SCHEDD_CONFIG, else ./schedd.toml when present.
    A bad value raises ConfigError whose message names the key.
    """
    env = os.environ if env is None else env
    path = Path(config_path) if config_path is not None else default_config_path(env)
    merged: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        merged.update(_convert(_flatten_toml(raw, str(path)), str(path), strict=True))
    merged.update(_convert(_from_env(env), "environment (SCHEDD_*)", strict=False))
    given = {k: v for k, v in (flags or {}).items() if v is not None}
    merged.update(_convert(given, "command line", strict=False))
    settings = msgspec.convert(
        {**msgspec.structs.asdict(Settings()), **merged}, Settings, strict=False
    )
    if settings.database_url and urllib.parse.urlsplit(settings.database_url).scheme not in (
            "postgresql", "postgres"):
        # the value itself is not shown: it may hold a password
        raise ConfigError("database_url: not a postgresql:// URL")
    for endpoint, url in settings.compat_endpoints.items():
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"compat_endpoints: {endpoint!r}: {url!r} is not an http(s) URL")
    return settings


def render_example() -> str:
    """The commented config file `schedd init` writes; schedd.toml.example is this text."""
    lines = [
        "# schedd configuration. Every key is shown with its default.",
        "# Precedence: command-line flags > SCHEDD_<KEY> environment variables > this file.",
    ]
    current = None
    keys = toml_keys()
    for name, (section, doc, default) in field_info().items():
        if section != current:
            lines += ["", f"[{section}]"]
            current = section
        lines.append(f"# {doc}")
        lines.append(f"{keys[name]} = {_toml_value(default)}")
    return "\n".join(lines) + "\n"


def _toml_value(v: Any) -> str:
    if isinstance(v, tuple | list):
        return "[" + ", ".join(_toml_value(item) for item in v) + "]"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_toml_value(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"
    return repr(v)
