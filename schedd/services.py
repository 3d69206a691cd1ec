"""Use cases shared by the HTTP API and the CLI. No HTTP here: errors are domain errors.

The API layer decodes and range-checks request bodies into plain values; services check
what needs the domain (expressions, zones, instants, action configs), plan next_run_at and
write through the store in one transaction per use case.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import secrets
import uuid
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from schedd import action_config, auth, planning, timing
from schedd.clock import Clock
from schedd.config import Settings
from schedd.engine import AlsoTx, Engine, merge_config, missed_note, missed_run
from schedd.entities import Entities, due_of, occurrence_preview
from schedd.errors import Conflict, InvalidField, NotFound, Unauthorized
from schedd.models import (
    ActionType,
    ApiKey,
    EntityDefinition,
    Occurrence,
    Run,
    RunStatus,
    RunTally,
    Schedule,
    ScheduleExt,
    ScheduleStatus,
    ScheduleType,
    new_id,
)
from schedd.notify import LOST, REVOKED
from schedd.store import Store, Tx

if TYPE_CHECKING:
    from schedd.syncs import SyncService

log = logging.getLogger("schedd.services")

DEFAULT_TENANT = "default"
KEY_TOUCH_INTERVAL_MS = 60_000
# A verified key is trusted without a database read for this long (seconds), unless a
# revocation happened meanwhile (see _revocation_mark): a request's key lookup was a
# thread hop of its own, ~a tenth of a create's cost.
AUTH_CACHE_S = 5.0
AUTH_CACHE_MAX = 10_000
PAUSED_MANUAL = "manual"
#: paused_reason of a sync's schedule held paused by the sync (schedd/syncs.py): its
#: status and trigger mode decide whether it fires, not /v1's resume
PAUSED_BY_SYNC = "sync_"
# The health page looks at the tenant's newest runs of the last hour, at most this many.
HEALTH_RUN_SAMPLE = 10_000
# the name of the console's cookie-signing secret in table shared_secrets
CONSOLE_SECRET = "console"  # noqa: S105 (a name, not a secret)

# PUT may change these (seed 000 "Update Schedule"); status is handled as pause/resume.
UPDATABLE = (
    "action_config", "catchup_window_minutes", "description", "flexible_window_minutes",
    "max_retries", "name", "overlap_policy", "rate_limit_per_minute", "schedule_expression",
    "status", "timezone", "relative_field_name", "relative_offset_days", "relative_filter",
)
_RELATIVE_FIELDS = ("relative_entity_definition_id", "relative_field_name",
                    "relative_offset_days", "relative_filter")
# What the compatibility routers may also change (never through /v1's PUT, whose body has
# no such fields): a schedule's type, its action's type, its retry backoff.
_INTERNAL_UPDATABLE = ("schedule_type", "action_type", "retry_backoff_seconds")
_TIMING_FIELDS = frozenset({"schedule_expression", "timezone", "relative_field_name",
                            "relative_offset_days", "relative_filter", "schedule_type"})
MAX_OCCURRENCES_PAGE = 1000
# Instants schedd accepts (UTC): 1970-01-01 up to 9999-01-01. Past that, date arithmetic
# and RFC 3339 formatting overflow (year 10000); no schedule needs it.
MIN_INSTANT_MS = 0
MAX_INSTANT_MS = 253_370_764_800_000
_RANGE_MSG = "is outside the supported range (1970-01-01 to 9999-01-01 UTC)"
# How deeply action_config and relative_filter may nest. Deeper documents are refused here,
# before anything walks them recursively (redaction, substitution, deep copies).
MAX_JSON_DEPTH = 64


def _json_depth_exceeds(value: Any, limit: int) -> bool:
    """True when `value` nests containers deeper than `limit` (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list | tuple))
    return False


def _check_depth(field: str, value: Any) -> None:
    if _json_depth_exceeds(value, MAX_JSON_DEPTH):
        raise _body(field, f"nested too deeply (at most {MAX_JSON_DEPTH} levels)")


def _body(field: str, msg: str, type_: str = "value_error") -> InvalidField:
    return InvalidField(("body", field), msg, type_)


def _encode_cursor(*parts: Any) -> str:
    raw = "\x1f".join(str(p) for p in parts).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str, shape: tuple[type, ...]) -> tuple[Any, ...]:
    """An opaque cursor back to its parts; anything else a client sends is a 422 naming
    ["query", "cursor"] (never a 500, never a silently wrong page)."""
    bad = InvalidField(("query", "cursor"), "Invalid cursor: pass the next_cursor of a "
                       "previous page unchanged", "value_error")
    if len(cursor) > 200:
        raise bad
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        parts = text.split("\x1f")
        if len(parts) != len(shape):
            raise bad
        out = tuple(t(p) for t, p in zip(shape, parts, strict=True))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise bad from None
    for p in out:
        if isinstance(p, int) and not 0 <= p < 2**63:
            raise bad
    return out


def _read_secret_file(path: Path) -> str:
    try:
        return path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return ""


class Services:
    def __init__(self, store: Store, clock: Clock, settings: Settings) -> None:
        self.store = store
        self.db = store.db
        self.clock = clock
        self.settings = settings
        self.engine: Engine | None = None
        self._key_touched: dict[str, int] = {}
        self.syncs: SyncService | None = None  # the Syncs API's use cases (schedd.syncs)
        # awaited before /metrics renders (gauges read from the database at scrape time)
        self.metrics_hooks: list[Callable[[], Awaitable[None]]] = []
        self.entities = Entities(store, clock, self._wake)
        self.console_secret: bytes | None = None  # set by the daemon when the console is on
        # key hash -> (key id, tenant id, verified at on clock.monotonic())
        self._auth_cache: dict[str, tuple[str, str, float]] = {}
        # revocations other nodes signalled (on_signal): part of the revocation mark
        self._revocations = 0
        self._auth_mark = self._revocation_mark()

    def attach_engine(self, engine: Engine) -> None:
        self.engine = engine

    def _engine(self) -> Engine:
        if self.engine is None:
            raise RuntimeError("the scheduler engine is not running")
        return self.engine

    def _wake(self, due_ms: int | None) -> None:
        if self.engine is not None and due_ms is not None:
            self.engine.changed(due_ms)

    async def database_readiness(self) -> tuple[bool, str]:
        """(ok, what /readyz says of the database): it answers a read, and no write has
        failed since the last one that succeeded."""
        try:
            await self.db.read(self.store.ping)
        except Exception as exc:
            return False, f"error: {type(exc).__name__}"
        fault = self.db.fault
        if fault is not None:
            return False, f"not writable ({fault.kind}): {fault.message}"
        return True, "ok"

    def engine_readiness(self) -> tuple[bool, dict[str, Any]]:
        if self.engine is None:
            return False, {"alive": False}
        return self.engine.readiness()

    # ------------------------------------------------------------------ keys and tenants
    async def create_key(self, tenant_name: str) -> tuple[str, str]:
        """A new key for `tenant_name` (created if new): (key id, key). The key is shown once."""
        name = tenant_name.strip()
        if not name or len(name) > 100:
            raise InvalidField(("tenant",), "a tenant name is 1 to 100 characters")
        now = self.clock.now_ms()
        key = auth.generate_key()
        key_id = str(uuid.uuid4())

        def tx(c: Tx) -> None:
            tenant_id = self.store.tenant_id_by_name(c, name)
            if tenant_id is None:
                tenant_id = str(uuid.uuid4())
                self.store.insert_tenant(c, tenant_id, name, now)
            self.store.insert_key(
                c, key_id, tenant_id, auth.display_prefix(key), auth.hash_key(key), now
            )

        await self.db.write(tx)
        return key_id, key

    async def ensure_first_key(self, key_path: str | Path) -> Path | None:
        """On first start (no key at all), create one for tenant `default` and write it to
        `key_path` with mode 0600. Returns the path written, or None when keys exist."""
        if await self.db.read(self.store.count_keys) > 0:
            return None
        path = Path(key_path)
        # before the key exists: on PostgreSQL nothing else made <db>'s directory (SQLite's
        # file did), and a key that could not be written would be shown to nobody
        path.parent.mkdir(parents=True, exist_ok=True)
        _, key = await self.create_key(DEFAULT_TENANT)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(key + "\n")
        os.chmod(path, 0o600)
        return path

    async def list_keys(self) -> list[ApiKey]:
        return await self.db.read(self.store.list_keys)

    async def revoke_key(self, key_id: str) -> None:
        revoked = await self.db.write(self.store.revoke_key, key_id, self.clock.now_ms())
        self._auth_cache.clear()
        if revoked:
            self._signal_revocation()
        if not revoked:
            if await self.db.read(self.store.key_exists, key_id):
                raise Conflict(f"key {key_id} is already revoked")
            raise NotFound("Key")

    # A revocation, in whichever process made it (`schedd keys revoke` is another process
    # than the daemon), replaces the file <db>.revocations after its commit (a new file
    # each time: a new inode, so two revocations within one mtime tick still differ).
    # Every request stats it (~1 µs, no thread hop); when it changed, the daemon forgets
    # every key it had verified and looks the next ones up again.
    def _revocation_path(self) -> str | None:
        db = self.settings.db
        return None if db == ":memory:" else db + ".revocations"

    #
    # On a shared database (PostgreSQL) the nodes do not share that file: the revoking
    # transaction also NOTIFYs every node (store.signal_revocation), whose listener calls
    # on_signal, which changes the mark the same way. A signal lost while a node's
    # listener reconnects is made up for by the LOST the listener delivers once it is back
    # (the node forgets every verified key then); a signal lost any other way (a node's
    # listener that has not noticed its connection is gone) leaves that node trusting the
    # key for at most AUTH_CACHE_S.
    def _revocation_mark(self) -> tuple[tuple[int, int, int] | None, int]:
        return self._revocation_file_mark(), self._revocations

    def _revocation_file_mark(self) -> tuple[int, int, int] | None:
        path = self._revocation_path()
        if path is None:
            return None
        try:
            st = os.stat(path)
        except OSError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    def on_signal(self, kind: str, arg: str) -> None:
        """Another node's signal (schedd/notify.py): a revoked key (any node's, or
        `schedd keys revoke`'s) makes this node forget the keys it verified lately. The
        revoked key's id is not needed: the cache is keyed by hash, and revocations are
        rare. LOST (signals may have been missed: the listener reconnected) counts as a
        revocation."""
        if kind in (REVOKED, LOST):
            self._revocations += 1

    def _signal_revocation(self) -> None:
        path = self._revocation_path()
        if path is None:
            return
        tmp = f"{path}.{os.getpid()}.tmp"
        try:
            with open(tmp, "w") as f:
                f.write(f"{self.clock.now_ms()}\n")
            os.replace(tmp, path)
        except OSError as exc:
            # the revocation is committed; a daemon that cached the key trusts it for at
            # most AUTH_CACHE_S more
            log.warning("could not write %s (%s): a running daemon may accept the revoked key "
                        "for up to %.0f s more", path, exc, AUTH_CACHE_S)

    async def authenticate(self, key: str | None) -> str:
        """The tenant id of a valid, unrevoked key; Unauthorized otherwise. A key verified
        in the last AUTH_CACHE_S is trusted without a read, unless a revocation happened
        since (the <db>.revocations mark changed): revocation takes effect at once."""
        _, tenant_id = await self._authenticate(key)
        return tenant_id

    async def tenant_by_name(self, name: str) -> str | None:
        """The id of the tenant named `name`, if there is one."""
        return await self.db.read(self.store.tenant_id_by_name, name)

    async def authenticate_key(self, key: str | None) -> tuple[str, str]:
        """(key id, tenant id) of a valid, unrevoked key; Unauthorized otherwise."""
        return await self._authenticate(key)

    async def _authenticate(self, key: str | None) -> tuple[str, str]:
        if not key:
            raise Unauthorized("Missing API key: send 'Authorization: Bearer KEY' or 'X-Api-Key'")
        digest = auth.hash_key(key)
        mark = self._revocation_mark()
        if mark != self._auth_mark:
            self._auth_cache.clear()
            self._auth_mark = mark
        mono = self.clock.monotonic()
        hit = self._auth_cache.get(digest)
        if hit is not None and mono - hit[2] < AUTH_CACHE_S:
            key_id, tenant_id = hit[0], hit[1]
        else:
            found = await self.db.read(self.store.active_key_by_hash, digest)
            if found is None:
                self._auth_cache.pop(digest, None)
                raise Unauthorized("Invalid or revoked API key")
            key_id, tenant_id, last_used = found
            if last_used is not None and last_used > self._key_touched.get(key_id, 0):
                self._key_touched[key_id] = last_used
            # cached only if no revocation was signalled while the read was on its way (it
            # may have read before the revocation's commit)
            if self._revocation_mark() == mark == self._auth_mark:
                if len(self._auth_cache) >= AUTH_CACHE_MAX:
                    self._auth_cache.clear()
                self._auth_cache[digest] = (key_id, tenant_id, mono)
        now = self.clock.now_ms()
        seen = self._key_touched.get(key_id, 0)
        if now - seen >= KEY_TOUCH_INTERVAL_MS:
            self._key_touched[key_id] = now
            await self.db.write(self.store.touch_key, key_id, now)
        return key_id, tenant_id

    # ------------------------------------------------------------------ console sessions
    async def load_console_secret(self, legacy_path: str | Path) -> bytes:
        """The console's cookie-signing secret, which every node of the database shares
        (table shared_secrets): made at the first start with the console on, from the file
        `legacy_path` (<db>.console-secret, where earlier versions kept it, so that
        sessions signed in before the upgrade stay valid) when it holds one, else 32
        random bytes (hex). Never logged."""
        got = await self.db.read(self.store.shared_secret, CONSOLE_SECRET)
        if got is None:
            p = Path(legacy_path)
            text = _read_secret_file(p)
            carried = len(text) >= 32
            if not carried:
                text = secrets.token_hex(32)
            got = await self.db.write(self.store.ensure_shared_secret, CONSOLE_SECRET, text,
                                      self.clock.now_ms())
            if carried and got == text:
                log.info("the console's session secret was moved from %s into the database "
                         "(shared by every node); the file is no longer read", p)
        return got.encode("ascii")

    async def open_console_session(self, key: str, lifetime_ms: int) -> tuple[str, str]:
        """Sign in to the console with an API key: (session token, tenant id). The token is
        random; only its hash is stored. Unauthorized for a wrong or revoked key."""
        key_id, tenant_id = await self._authenticate(key)
        token = secrets.token_urlsafe(32)
        now = self.clock.now_ms()
        await self.db.write(self.store.insert_console_session, auth.hash_key(token), key_id,
                            tenant_id, now, now + lifetime_ms)
        return token, tenant_id

    async def console_session_tenant(self, token: str) -> str | None:
        """The tenant of a live console session, None when it is unknown, expired, signed
        out, or its key was revoked."""
        return await self.db.read(self.store.console_session_tenant, auth.hash_key(token),
                                  self.clock.now_ms())

    async def close_console_session(self, token: str) -> None:
        await self.db.write(self.store.delete_console_session, auth.hash_key(token))

    async def tenant_health(self, tenant_id: str) -> dict[str, Any]:
        """What the console's health page shows: the daemon's due backlog and loop state,
        and the tenant's runs of the last hour (lateness of their starts, failures)."""
        now = self.clock.now_ms()
        backlog = await self.db.read(self.store.due_backlog, now)
        recent = await self.db.read(self.store.tenant_recent_runs, tenant_id, now - 3_600_000,
                                    HEALTH_RUN_SAMPLE)
        late = sorted(max(0, started - due) for _, started, due, _ in recent
                      if started is not None)
        by_status: dict[str, int] = {}
        for status, *_ in recent:
            by_status[status] = by_status.get(status, 0) + 1

        def pct(q: float) -> int | None:
            return late[min(len(late) - 1, int(q * len(late)))] if late else None

        ready, loop = self.engine_readiness()
        return {
            "ready": ready, "loop": loop, "backlog": backlog, "runs_last_hour": len(recent),
            "sampled": len(recent) >= HEALTH_RUN_SAMPLE, "by_status": by_status,
            "failed_last_hour": by_status.get("failed", 0),
            "lateness_ms": {"p50": pct(0.5), "p95": pct(0.95),
                            "max": late[-1] if late else None},
        }

    # ------------------------------------------------------------------ validation helpers
    def _zone(self, name: str) -> None:
        try:
            timing.load_zone(name)
        except timing.TimingError as exc:
            raise _body("timezone", str(exc)) from None

    def _instant(self, field: str, text: str | None, tz: str) -> int | None:
        if text is None:
            return None
        try:
            ms = timing.parse_instant_ms(text, timing.load_zone(tz))
        except timing.TimingError as exc:
            raise _body(field, str(exc)) from None
        if not MIN_INSTANT_MS <= ms <= MAX_INSTANT_MS:
            raise _body(field, f"{text[:60]!r} {_RANGE_MSG}")
        return ms

    def _action(self, action_type: str, config: Any) -> dict[str, Any]:
        return action_config.validate_action_config(
            action_type, config, allow_commands=self.settings.allow_commands
        )

    def plan_first_run(self, s: Schedule, now_ms: int) -> int | None:
        """The first occurrence of a new, resumed or re-timed schedule, planned from now.
        Raises InvalidField on a bad expression. A once-time in the past but inside the
        catch-up window stays due (it fires at once); older ones are refused by create."""
        field = "schedule_type" if s.schedule_type is ScheduleType.relative else (
            "schedule_expression")
        try:
            timer = timing.compile_timer(
                s.schedule_type.value, s.schedule_expression, s.timezone,
                anchor_ms=s.created_ms, start_ms=s.start_ms, end_ms=s.end_ms,
            )
            if s.schedule_type is ScheduleType.once:
                first = timer.next_after(-(2**62))
            else:
                first = timer.next_after(now_ms - 1)
        except timing.TimingError as exc:
            raise _body(field, str(exc)) from None
        except (OverflowError, ValueError):
            # date arithmetic beyond year 9999 (e.g. a cron day that never comes before it)
            raise _body(field, f"the next occurrence {_RANGE_MSG}") from None
        if first is not None and not MIN_INSTANT_MS <= first <= MAX_INSTANT_MS:
            raise _body(field, f"the next occurrence {_RANGE_MSG}")
        return first

    def _check_once_window(self, s: Schedule, first: int | None, now_ms: int) -> None:
        if s.schedule_type is ScheduleType.once and first is not None:
            window_ms = s.catchup_window_minutes * 60_000
            if first < now_ms - window_ms:
                raise _body(
                    "schedule_expression",
                    f"the once-time {timing.format_ms(first)} is older than the catch-up window "
                    f"({s.catchup_window_minutes} min)",
                )

    # ------------------------------------------------------------------ schedules
    async def create_schedule(
        self, tenant_id: str, fields: Mapping[str, Any], ext: ScheduleExt | None = None
    ) -> tuple[Schedule, bool]:
        """(schedule, created). With a matching deduplication_key the existing schedule is
        returned unchanged and created is False. `ext` (a compatibility router's own fields)
        is written beside it in the same transaction; `status` "paused" creates it paused."""
        f = dict(fields)
        now = self.clock.now_ms()
        stype = ScheduleType(f["schedule_type"])
        if stype is ScheduleType.relative:
            if not f.get("schedule_expression"):
                f["schedule_expression"] = planning.DEFAULT_TIME_OF_DAY
            if f.get("relative_offset_days") is None:
                f["relative_offset_days"] = 0
        else:
            for key in _RELATIVE_FIELDS:
                if f.get(key) is not None:
                    raise _body(key, "only a relative schedule takes this field")
        tz = f.get("timezone")
        if tz is None:
            tz = "UTC"
        self._zone(tz)
        start_ms = self._instant("start_at", f.get("start_at"), tz)
        end_ms = self._instant("end_at", f.get("end_at"), tz)
        if start_ms is not None and end_ms is not None and end_ms <= start_ms:
            raise _body("end_at", "end_at must be after start_at")
        _check_depth("action_config", f.get("action_config"))
        _check_depth("relative_filter", f.get("relative_filter"))
        if not f.get("schedule_expression"):
            raise _body("schedule_expression", f"required for schedule_type {stype.value!r}",
                        "missing")
        config = self._action(f["action_type"], f.get("action_config"))
        s = Schedule(
            id=new_id(now),
            tenant_id=tenant_id,
            name=f["name"],
            description=f.get("description"),
            schedule_type=stype,
            schedule_expression=f["schedule_expression"],
            timezone=tz,
            start_ms=start_ms,
            end_ms=end_ms,
            action_type=ActionType(f["action_type"]),
            action_config=config,
            customer_id=f.get("customer_id"),
            external_id=f.get("external_id"),
            deduplication_key=f.get("deduplication_key"),
            created_ms=now,
            updated_ms=now,
            **{k: f[k] for k in (
                "overlap_policy", "catchup_window_minutes", "catchup_policy",
                "flexible_window_minutes", "max_retries", "retry_backoff_seconds",
                "pause_on_failure_count", "rate_limit_per_minute", "action_after_completion",
                "relative_entity_definition_id", "relative_field_name", "relative_offset_days",
                "relative_filter",
            ) if f.get(k) is not None},
        )
        if stype is ScheduleType.relative:
            self._time_of_day(s.schedule_expression)
            if end_ms is not None and end_ms <= now:
                raise _body("end_at", "the schedule has no occurrence in the future")
        else:
            first = self.plan_first_run(s, now)
            self._check_once_window(s, first, now)
            if first is None:
                field = "end_at" if end_ms is not None else "schedule_expression"
                raise _body(field, "the schedule has no occurrence in the future")
            s.next_run_ms = first
        if f.get("status") == ScheduleStatus.paused:
            s.status = ScheduleStatus.paused
            s.paused_reason = PAUSED_MANUAL

        def tx(c: Tx) -> Schedule | None:
            if s.deduplication_key is not None:
                existing = self.store.find_by_dedup_key(c, tenant_id, s.deduplication_key)
                if existing is not None:
                    return existing
            d = self._relative_definition(c, s) if stype is ScheduleType.relative else None
            self.store.insert_schedule(c, s)
            if d is not None:
                self.entities.planner.replan_schedule(c, s, d, now)
                self.store.set_next_run(c, s.id, s.next_run_ms, now)
            if ext is not None:
                self.store.insert_ext(c, s, ext)
            return None

        existing = await self.db.write(tx)
        if existing is not None:
            return existing, False
        self._wake(s.next_run_ms)
        return s, True

    def _time_of_day(self, expr: str | None) -> None:
        try:
            planning.parse_time_of_day(expr)
        except timing.TimingError as exc:
            raise _body("schedule_expression", str(exc)) from None

    def _relative_definition(self, c: Tx, s: Schedule) -> EntityDefinition:
        """Check a relative schedule's definition, field and filter; its definition."""
        if s.relative_entity_definition_id is None:
            raise _body("relative_entity_definition_id", "required for a relative schedule",
                        "missing")
        d = self.store.get_definition(c, s.tenant_id, s.relative_entity_definition_id)
        if d is None:
            raise _body("relative_entity_definition_id",
                        "no entity definition of this tenant has this id")
        name = s.relative_field_name
        if name is None:
            raise _body("relative_field_name", "required for a relative schedule", "missing")
        ftype = d.fields.get(name)
        if ftype is None:
            raise _body("relative_field_name", f"{name[:64]!r} is not a field of the entity "
                        "definition")
        if ftype not in planning.DATE_TYPES:
            raise _body("relative_field_name", f"{name!r} is a {ftype} field; a relative "
                        "schedule needs a date or datetime field")
        planning.check_filter(d.fields, s.relative_filter, ("body", "relative_filter"))
        return d

    async def get_schedule(self, tenant_id: str, schedule_id: str) -> Schedule:
        s = await self.db.read(self.store.get_schedule, tenant_id, schedule_id)
        if s is None:
            raise NotFound("Schedule")
        return s

    async def list_schedules(
        self,
        tenant_id: str,
        *,
        customer_id: str | None = None,
        external_id: str | None = None,
        status: str | None = None,
        limit: int = 50,
        offset: int = 0,
        text: str | None = None,
    ) -> tuple[list[Schedule], int]:
        return await self.db.read(
            self.store.list_schedules, tenant_id, customer_id=customer_id,
            external_id=external_id, status=status, limit=limit, offset=offset, text=text,
        )

    async def update_schedule(
        self, tenant_id: str, schedule_id: str, patch: Mapping[str, Any],
        ext_data: dict[str, Any] | None = None,
    ) -> Schedule:
        """Partial update: only the keys present in `patch` change (None clears a nullable
        field). Timing changes recompute next_run_at from now; status pauses or resumes.
        `ext_data` replaces the compatibility fields kept beside it, in the same transaction."""
        unknown = set(patch) - set(UPDATABLE) - set(_INTERNAL_UPDATABLE)
        if unknown:
            raise _body(sorted(unknown)[0], "this field cannot be changed", "extra_forbidden")
        now = self.clock.now_ms()
        s = await self.db.write(self._update_tx, tenant_id, schedule_id, patch, now, ext_data)
        self._wake(s.next_run_ms)
        return s

    def _update_tx(self, c: Tx, tenant_id: str, schedule_id: str, patch: Mapping[str, Any],
                   now: int, ext_data: dict[str, Any] | None = None) -> Schedule:
        s = self.store.get_schedule(c, tenant_id, schedule_id)
        if s is None:
            raise NotFound("Schedule")
        if ext_data is not None:
            self.store.update_ext_data(c, schedule_id, ext_data)
        if "schedule_type" in patch:
            stype = ScheduleType(patch["schedule_type"])
            if stype is ScheduleType.relative or s.schedule_type is ScheduleType.relative:
                raise _body("schedule_type", "a relative schedule's type cannot change")
            s.schedule_type = stype
        if "action_type" in patch:
            s.action_type = ActionType(patch["action_type"])
            if "action_config" not in patch:
                raise _body("action_config", "required when action_type changes", "missing")
            s.action_config = {}
        if "retry_backoff_seconds" in patch:
            s.retry_backoff_seconds = patch["retry_backoff_seconds"]
        for key in ("name", "max_retries", "catchup_window_minutes",
                    "flexible_window_minutes", "overlap_policy", "schedule_expression",
                    "timezone", "action_config", "status"):
            if key in patch and patch[key] is None:
                raise _body(key, "may not be null", "none_forbidden")
        if "timezone" in patch:
            self._zone(patch["timezone"])
        relative = s.schedule_type is ScheduleType.relative
        for key in ("relative_field_name", "relative_offset_days", "relative_filter"):
            if key in patch and not relative:
                raise _body(key, "only a relative schedule takes this field")
        for key in ("relative_field_name", "relative_offset_days"):
            if key in patch and patch[key] is None:
                raise _body(key, "may not be null", "none_forbidden")
        if relative and "schedule_expression" in patch:
            self._time_of_day(patch["schedule_expression"])
        if "relative_filter" in patch:
            _check_depth("relative_filter", patch["relative_filter"])
        if "action_config" in patch:
            _check_depth("action_config", patch["action_config"])
            merged = action_config.merge_redacted(s.action_config, patch["action_config"])
            s.action_config = self._action(s.action_type.value, merged)
        for key in ("name", "description", "max_retries", "catchup_window_minutes",
                    "flexible_window_minutes", "overlap_policy", "rate_limit_per_minute",
                    "schedule_expression", "timezone", "relative_field_name",
                    "relative_offset_days", "relative_filter"):
            if key in patch:
                setattr(s, key, patch[key])
        if relative:
            d = self._relative_definition(c, s)
            return self._update_relative_tx(c, s, d, patch, now)
        retime = bool(_TIMING_FIELDS & set(patch))
        if "status" in patch:
            new = ScheduleStatus(patch["status"])
            if new is ScheduleStatus.completed:
                raise _body("status", "status may be set to 'active' or 'paused'", "enum")
            if new is not s.status:
                if s.status is ScheduleStatus.completed:
                    raise Conflict("Schedule is completed; it cannot be resumed or paused")
                s.status = new
                if new is ScheduleStatus.paused:
                    s.paused_reason = PAUSED_MANUAL
                else:
                    self._resumed(s)
                    retime = True
        if retime and s.status is not ScheduleStatus.completed:
            self._replan(c, s, now, resuming=s.status is ScheduleStatus.active
                         and "status" in patch,
                         retimed=bool(_TIMING_FIELDS & set(patch)))
        s.updated_ms = now
        self.store.update_schedule(c, s)
        return s

    def _update_relative_tx(self, c: Tx, s: Schedule, d: EntityDefinition,
                            patch: Mapping[str, Any], now: int) -> Schedule:
        """A relative schedule's update: a timing change (expression, timezone, field,
        offset, filter) re-plans every record; a resume misses what passed while paused."""
        if "status" in patch:
            new = ScheduleStatus(patch["status"])
            if new is ScheduleStatus.completed:
                raise _body("status", "status may be set to 'active' or 'paused'", "enum")
            if new is not s.status:
                if s.status is ScheduleStatus.completed:
                    raise Conflict("Schedule is completed; it cannot be resumed or paused")
                if new is ScheduleStatus.paused:
                    s.status = new
                    s.paused_reason = PAUSED_MANUAL
                else:
                    self._resumed(s)
                    self._miss_paused(c, s, now)
        if _TIMING_FIELDS & set(patch) and s.status is not ScheduleStatus.completed:
            self.entities.planner.replan_schedule(c, s, d, now)
        elif s.status is not ScheduleStatus.completed:
            s.next_run_ms = planning.next_run_of(self.store.earliest_occurrence(c, s.id),
                                                 s.end_ms)
        s.last_error = None
        s.updated_ms = now
        self.store.update_schedule(c, s)
        return s

    def _miss_paused(self, c: Tx, s: Schedule, now: int) -> None:
        missed = self.entities.planner.miss_passed(c, s, now)
        if missed:
            log.warning("schedule %s missed %d record occurrence(s) while paused", s.id,
                        len(missed))
            if self.engine is not None:
                self.engine.metrics.missed.inc(len(missed))
        s.next_run_ms = planning.next_run_of(self.store.earliest_occurrence(c, s.id),
                                                 s.end_ms)

    def _replan(self, c: Tx, s: Schedule, now: int, *, resuming: bool,
                      retimed: bool) -> None:
        """Plan next_run_at from now after a resume or a timing change. Paused time is not
        caught up: a once-time that passed while paused is recorded as missed. A timing
        change that leaves no future occurrence is refused, as create refuses it."""
        first = self.plan_first_run(s, now)
        if s.schedule_type is ScheduleType.once and first is not None:
            if retimed:
                self._check_once_window(s, first, now)
            elif resuming and first < now:
                self.store.insert_runs(c, [missed_run(
                    s, first, first, 1, now, "its time passed while the schedule was paused")])
                msg, args = missed_note(s, first, first, 1)
                log.warning(msg, *args)
                if self.engine is not None:
                    self.engine.metrics.missed.inc()
                first = None
        if first is None:
            if retimed:
                raise _body("schedule_expression", "the schedule has no occurrence in the future")
            s.status = ScheduleStatus.completed
        s.next_run_ms = first
        s.last_error = None

    def _resumed(self, s: Schedule) -> None:
        reason = s.paused_reason or ""
        if reason.startswith(PAUSED_BY_SYNC):
            # a draft, paused, archived or unscheduled sync: resuming its schedule here
            # would fire it (on a placeholder timing when it has no schedule) while the
            # sync still says it does not
            raise Conflict(f"This schedule belongs to a sync that holds it paused "
                           f"({reason}); change the sync with PATCH /api/v1/syncs/{s.id}")
        s.status = ScheduleStatus.active
        s.paused_reason = None
        s.consecutive_failures = 0

    async def delete_schedule(self, tenant_id: str, schedule_id: str) -> None:
        now = self.clock.now_ms()

        def tx(c: Tx) -> None:
            if self.store.get_schedule(c, tenant_id, schedule_id) is None:
                raise NotFound("Schedule")
            self.store.cancel_pending_runs_of(c, schedule_id, now, "schedule deleted")
            self.store.delete_schedule(c, schedule_id)

        await self.db.write(tx)

    async def pause_schedule(self, tenant_id: str, schedule_id: str) -> Schedule:
        return await self.db.write(self._pause_tx, tenant_id, schedule_id, self.clock.now_ms())

    def _not_completed(self, c: Tx, tenant_id: str, schedule_id: str, verb: str) -> Schedule:
        s = self.store.get_schedule(c, tenant_id, schedule_id)
        if s is None:
            raise NotFound("Schedule")
        if s.status is ScheduleStatus.completed:
            raise Conflict(f"Schedule is completed; it cannot be {verb}")
        return s

    def _pause_tx(self, c: Tx, tenant_id: str, schedule_id: str, now: int) -> Schedule:
        s = self._not_completed(c, tenant_id, schedule_id, "paused")
        if s.status is ScheduleStatus.active:
            s.status = ScheduleStatus.paused
            s.paused_reason = PAUSED_MANUAL
            s.updated_ms = now
            self.store.update_schedule(c, s)
        return s

    async def resume_schedule(self, tenant_id: str, schedule_id: str) -> Schedule:
        s = await self.db.write(self._resume_tx, tenant_id, schedule_id, self.clock.now_ms())
        self._wake(s.next_run_ms)
        return s

    def _resume_tx(self, c: Tx, tenant_id: str, schedule_id: str, now: int) -> Schedule:
        s = self._not_completed(c, tenant_id, schedule_id, "resumed")
        if s.status is ScheduleStatus.paused and s.schedule_type is ScheduleType.relative:
            self._resumed(s)
            self._miss_paused(c, s, now)
            s.updated_ms = now
            self.store.update_schedule(c, s)
        elif s.status is ScheduleStatus.paused:
            self._resumed(s)
            try:
                self._replan(c, s, now, resuming=True, retimed=False)
            except InvalidField as exc:
                s.next_run_ms = None
                s.status = ScheduleStatus.completed
                s.last_error = exc.msg
            s.updated_ms = now
            self.store.update_schedule(c, s)
        return s

    def public_action_config(self, s: Schedule) -> dict[str, Any]:
        """The action config as reads show it: secrets and sensitive headers redacted."""
        return action_config.redact_config(s.action_type.value, s.action_config)

    async def trigger_schedule(self, tenant_id: str, schedule_id: str,
                               config_patch: dict[str, Any] | None = None) -> Run:
        """A manual run now. `config_patch` is merged over the action's config for this run
        (and its retries) only: objects key by key, other values replace; the result must
        be a valid config (422 naming the field under action_config otherwise)."""
        s = await self.get_schedule(tenant_id, schedule_id)
        if s.paused_reason == f"{PAUSED_BY_SYNC}archived":
            # as POST /api/v1/syncs/{id}/trigger: an archived sync does not run
            raise Conflict("This schedule belongs to an archived sync; it cannot be "
                           "triggered")
        if config_patch is not None:
            _check_depth("action_config", config_patch)
            self._action(s.action_type.value, merge_config(s.action_config, config_patch))
        return await self._engine().trigger(s, config_patch=config_patch)

    # ------------------------------------------------------------------ extended schedules
    async def get_extended(self, tenant_id: str, schedule_id: str, kind: str,
                           scope: str | None = None, what: str = "Schedule"
                           ) -> tuple[Schedule, ScheduleExt]:
        """A schedule made through a compatibility router (`kind`), found only in its tenant
        and, when given, its scope: NotFound(what) otherwise, exactly as a missing one."""
        found = await self.db.read(self.store.get_ext, tenant_id, schedule_id)
        if found is None or found[1].kind != kind or (scope is not None
                                                      and found[1].scope != scope):
            raise NotFound(what)
        return found

    async def page_extended(
        self, tenant_id: str, kind: str, scope: str, *, search: str | None = None,
        cursor: str | None = None, limit: int = 50,
    ) -> tuple[list[tuple[Schedule, ScheduleExt]], int, str | None]:
        """Keyset pages, oldest first: (items, total, next cursor or None on the last page).
        A row added while a client pages lands after every cursor already handed out."""
        after = _decode_cursor(cursor, (int, str)) if cursor else None
        rows, total = await self.db.read(
            self.store.page_ext, tenant_id, kind, scope, search=search,
            after=None if after is None else (after[0], after[1]), limit=limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        nxt = _encode_cursor(rows[-1][0], rows[-1][1].id) if more else None
        return [(s, e) for _, s, e in rows], total, nxt

    async def list_extended(self, tenant_id: str, kind: str, scope: str, *, limit: int,
                            offset: int) -> tuple[list[tuple[Schedule, ScheduleExt]], int]:
        rows, total = await self.db.read(
            self.store.page_ext, tenant_id, kind, scope, search=None, after=None, limit=limit,
            offset=offset)
        return [(s, e) for _, s, e in rows], total

    async def run_tallies(self, schedule_ids: list[str]) -> dict[str, RunTally]:
        return await self.db.read(self.store.run_tallies, schedule_ids)

    async def page_schedule_runs(
        self, tenant_id: str, schedule_id: str, *, status: RunStatus | None = None,
        cursor: str | None = None, limit: int = 50,
    ) -> tuple[list[Run], int, str | None]:
        """A schedule's runs newest first, by keyset: (runs, total, next cursor or None)."""
        before = int(_decode_cursor(cursor, (int,))[0]) if cursor else None
        rows, total = await self.db.read(
            self.store.page_schedule_runs, tenant_id, schedule_id,
            status=None if status is None else status.value, before_seq=before,
            limit=limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        nxt = _encode_cursor(rows[-1][0]) if more else None
        return [r for _, r in rows], total, nxt

    async def occurrences(self, tenant_id: str, schedule_id: str,
                          limit: int) -> list[Occurrence]:
        """The pending occurrences, soonest first: a relative schedule's rows; for the
        other types, the next fire times from next_run_at on."""
        def read(c: Tx) -> list[Occurrence]:
            s = self.store.get_schedule(c, tenant_id, schedule_id)
            if s is None:
                raise NotFound("Schedule")
            if s.schedule_type is ScheduleType.relative:
                if s.status is ScheduleStatus.completed:
                    return []
                rows = self.store.pending_occurrences(c, s.id, limit)
                return [Occurrence(record_key=k, scheduled_for_ms=o,
                                   due_ms=due_of(s, k, o)) for k, o in rows]
            if s.next_run_ms is None or s.status is ScheduleStatus.completed:
                return []
            try:
                times = occurrence_preview(s, s.next_run_ms, limit)
            except (timing.TimingError, OverflowError, ValueError):
                times = [s.next_run_ms]
            return [Occurrence(record_key=None, scheduled_for_ms=o, due_ms=due_of(s, None, o))
                    for o in times if MIN_INSTANT_MS <= o <= MAX_INSTANT_MS]

        return await self.db.read(read)

    # ------------------------------------------------------------------ runs
    async def get_run(self, tenant_id: str, run_id: str) -> Run:
        run = await self.db.read(self.store.get_run, tenant_id, run_id)
        if run is None:
            raise NotFound("Run")
        return run

    async def list_runs(
        self,
        tenant_id: str,
        *,
        schedule_id: str | None = None,
        status: RunStatus | None = None,
        limit: int = 20,
        offset: int = 0,
    ) -> tuple[list[Run], int]:
        return await self.db.read(
            self.store.list_runs, tenant_id, schedule_id=schedule_id,
            status=None if status is None else status.value, limit=limit, offset=offset,
        )

    async def list_schedule_runs(
        self, tenant_id: str, schedule_id: str, *, limit: int, offset: int
    ) -> tuple[list[Run], int]:
        await self.get_schedule(tenant_id, schedule_id)
        return await self.list_runs(tenant_id, schedule_id=schedule_id, limit=limit,
                                    offset=offset)

    async def cancel_run(self, tenant_id: str, run_id: str, reason: str | None, *,
                         also: AlsoTx | None = None) -> Run:
        return await self._engine().cancel(tenant_id, run_id, reason, also=also)

    async def retry_run(self, tenant_id: str, run_id: str) -> Run:
        return await self._engine().retry(tenant_id, run_id, also=self.not_archived_tx)

    def not_archived_tx(self, c: Tx, run: Run) -> None:
        """In a retry's transaction: a run of an archived sync is not run again (the sync's
        own trigger and retry refuse it too)."""
        s = self.store.get_schedule(c, None, run.schedule_id)
        if s is not None and s.paused_reason == f"{PAUSED_BY_SYNC}archived":
            raise Conflict("This run belongs to an archived sync; it cannot be retried")

    # ------------------------------------------------------------------ workers
    async def claim_work(self, tenant_id: str, queues: list[str], worker_id: str,
                         wait_s: float, lease_s: float) -> Run | None:
        run = await self._engine().claim_for_worker(tenant_id, queues, worker_id, wait_s,
                                                    lease_s)
        if run is not None and self.syncs is not None:
            run = await self.syncs.for_worker(run)  # only the claim carries a sourceConfig
        return run

    async def heartbeat(self, tenant_id: str, run_id: str, worker_id: str,
                        lease_s: float) -> bool:
        _, cancel_requested = await self._engine().heartbeat(tenant_id, run_id, worker_id,
                                                            lease_s)
        return cancel_requested

    async def complete_run(self, tenant_id: str, run_id: str, worker_id: str, succeeded: bool,
                           result: Any, error_message: str | None) -> Run:
        return await self._engine().complete(tenant_id, run_id, worker_id, succeeded, result,
                                             error_message)

    # ------------------------------------------------------------------ preview
    def preview(
        self,
        schedule_type: str,
        expression: str,
        tz: str,
        *,
        after_ms: int | None,
        count: int,
    ) -> list[int]:
        self._zone_query(tz)
        after = self.clock.now_ms() if after_ms is None else after_ms
        if not MIN_INSTANT_MS <= after <= MAX_INSTANT_MS:
            raise InvalidField(("query", "after"), f"the instant {_RANGE_MSG}")
        loc = "schedule_type" if schedule_type == "relative" else "schedule_expression"
        try:
            times = timing.preview(schedule_type, expression, tz, after_ms=after, count=count)
        except timing.TimingError as exc:
            raise InvalidField(("query", loc), str(exc)) from None
        except (OverflowError, ValueError):
            raise InvalidField(("query", loc), f"the occurrences {_RANGE_MSG}") from None
        return [t for t in times if MIN_INSTANT_MS <= t <= MAX_INSTANT_MS]

    def _zone_query(self, tz: str) -> None:
        try:
            timing.load_zone(tz)
        except timing.TimingError as exc:
            raise InvalidField(("query", "timezone"), str(exc)) from None

    # ------------------------------------------------------------------ metrics
    async def metrics_text(self) -> bytes:
        """Prometheus text: the engine's counters plus gauges read at scrape time."""
        engine = self._engine()
        m = engine.metrics
        now = self.clock.now_ms()
        m.backlog.set(await self.db.read(self.store.due_backlog, now))
        counts = await self.db.read(self.store.count_schedules_by_status)
        for status in ScheduleStatus:
            m.schedules.labels(status.value).set(counts.get(status.value, 0))
        m.running.set(len(engine.inflight))
        m.db_writable.set(0 if self.db.fault is not None else 1)
        for hook in self.metrics_hooks:
            await hook()
        _, info = engine.readiness()
        ago = info.get("last_wake_seconds_ago")
        if ago is not None:
            m.loop_wake.set(ago)
        return m.render()
