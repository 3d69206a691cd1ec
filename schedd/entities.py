"""Use cases of entity definitions and records (SPEC §3.7), and the re-planning of relative
schedules that every record write and schedule change runs in its own transaction.

A record write and its re-planning are one transaction: the record rows, the occurrence
rows of every relative schedule of the definition, and each schedule's next_run_ms (its
earliest pending occurrence) commit together. A batch is one transaction, all or none:
every item is checked before anything is written.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgspec

from schedd import planning, policies, timing
from schedd.clock import Clock
from schedd.engine import missed_run
from schedd.errors import Conflict, InvalidField, NotFound
from schedd.models import (
    EntityDefinition,
    EntityRecord,
    Run,
    Schedule,
    ScheduleStatus,
    new_id,
)
from schedd.store import Store, Tx

log = logging.getLogger("schedd.entities")

MAX_KEY_CHARS = 200
MAX_BATCH_ITEMS = 10_000
REPLAN_PAGE = 5000  # records read at a time when a whole definition is re-planned

_enc = msgspec.json.Encoder()


def check_key(key: Any, loc: Sequence[str | int]) -> str:
    if not isinstance(key, str):
        raise InvalidField(loc, "Input should be a valid string", "type_error")
    if not key:
        raise InvalidField(loc, "a record key is 1 to 200 characters", "string_too_short")
    if len(key) > MAX_KEY_CHARS:
        raise InvalidField(loc, "a record key is 1 to 200 characters", "string_too_long")
    if "\x00" in key:
        raise InvalidField(loc, "a record key may not contain NUL (U+0000)",
                           "string_pattern_mismatch")
    return key


def plan_of(s: Schedule, d: EntityDefinition) -> planning.RelativePlan:
    assert s.relative_field_name is not None
    return planning.RelativePlan.of(
        schedule_id=s.id, fields=d.fields, field=s.relative_field_name,
        offset_days=s.relative_offset_days, expression=s.schedule_expression,
        tz_name=s.timezone, start_ms=s.start_ms, end_ms=s.end_ms,
        catchup_window_minutes=s.catchup_window_minutes, flt=s.relative_filter)


def used_fields(schedules: Sequence[Schedule]) -> dict[str, str]:
    """field -> the id of a schedule that uses it (its date field or a filter field)."""
    used: dict[str, str] = {}
    for s in schedules:
        if s.relative_field_name is not None:
            used.setdefault(s.relative_field_name, s.id)
        for name in s.relative_filter or {}:
            used.setdefault(name, s.id)
    return used


class Planner:
    """Re-planning on the writer thread, inside the caller's transaction."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def replan_records(self, c: Tx, plans: Sequence[tuple[Schedule, planning.RelativePlan]],
                       items: Sequence[tuple[str, Mapping[str, Any]]], now: int,
                       new_keys: set[str] | None = None) -> None:
        """Records were written: plan each one's occurrence for each schedule. Keys in
        `new_keys` were just created: they have no occurrence rows to read (a deleted
        record's rows went with it)."""
        keys = [k for k, _ in items if not new_keys or k not in new_keys]
        for s, plan in plans:
            rows = self.store.occurrence_rows(c, s.id, keys) if keys else {}
            self._apply(c, s, plan, items, rows, now)
            self._set_next(c, s, now)

    def _apply(self, c: Tx, s: Schedule, plan: planning.RelativePlan,
               items: Sequence[tuple[str, Mapping[str, Any]]],
               rows: Mapping[str, tuple[int | None, int | None]], now: int) -> None:
        writes: list[tuple[str, int | None, int | None]] = []
        drops: list[str] = []
        for key, data in items:
            old_next, fired = rows.get(key, (None, None))
            new_next = plan.plan(data, now, fired)
            if key in rows:
                if new_next == old_next:
                    continue
                if new_next is None and fired is None:
                    drops.append(key)
                    continue
            elif new_next is None:
                continue
            writes.append((key, new_next, fired))
        self.store.write_occurrences(c, s.id, writes)
        self.store.delete_occurrences(c, s.id, drops)

    def replan_schedule(self, c: Tx, s: Schedule, d: EntityDefinition, now: int) -> None:
        """A relative schedule was created or its timing changed: plan every record of its
        definition, a page at a time (all in the caller's transaction)."""
        plan = plan_of(s, d)
        after: str | None = None
        while True:
            page = self.store.record_page(c, d.id, after, REPLAN_PAGE)
            if not page:
                break
            rows = self.store.occurrence_rows(c, s.id, [k for k, _ in page])
            self._apply(c, s, plan, page, rows, now)
            after = page[-1][0]
        s.next_run_ms = planning.next_run_of(self.store.earliest_occurrence(c, s.id), s.end_ms)

    def miss_passed(self, c: Tx, s: Schedule, now: int) -> list[Run]:
        """A relative schedule resumes: its occurrences that passed while it was paused are
        not caught up; each is recorded missed (per record) and marked fired."""
        missed: list[Run] = []
        while True:
            due = self.store.due_occurrences(c, s.id, now - 1, 1000)
            if not due:
                break
            for key, occ in due:
                missed.append(missed_run(s, occ, occ, 1, now,
                                         "its time passed while the schedule was paused",
                                         record_key=key))
            self.store.fire_occurrences(c, s.id, due)
        self.store.insert_runs(c, missed)
        return missed

    def drop_records(self, c: Tx, schedules: Sequence[Schedule], keys: Sequence[str],
                     now: int) -> None:
        """Records were deleted: their pending occurrences and not-yet-started runs go."""
        for s in schedules:
            self.store.delete_occurrences(c, s.id, keys)
            self.store.cancel_pending_runs_of_records(c, s.id, keys, now, "record deleted")
            self._set_next(c, s, now)

    def _set_next(self, c: Tx, s: Schedule, now: int) -> None:
        if s.status is ScheduleStatus.completed:
            return
        nxt = planning.next_run_of(self.store.earliest_occurrence(c, s.id), s.end_ms)
        if nxt != s.next_run_ms:
            s.next_run_ms = nxt
            self.store.set_next_run(c, s.id, nxt, now)


class Entities:
    def __init__(self, store: Store, clock: Clock, wake: Callable[[int | None], None]) -> None:
        self.store = store
        self.db = store.db
        self.clock = clock
        self.planner = Planner(store)
        self._wake = wake

    # ------------------------------------------------------------------ definitions
    async def create_definition(self, tenant_id: str, name: str, description: str | None,
                                fields: Any) -> EntityDefinition:
        planning.check_fields(fields, ("body", "fields"))
        if not fields:
            raise InvalidField(("body", "fields"), "at least one field", "too_short")
        now = self.clock.now_ms()
        d = EntityDefinition(id=new_id(now), tenant_id=tenant_id, name=name,
                             description=description, fields=dict(fields), created_ms=now,
                             updated_ms=now)

        def tx(c: Tx) -> None:
            if self.store.definition_name_taken(c, tenant_id, name):
                raise Conflict(f"An entity definition named {name!r} already exists")
            self.store.insert_definition(c, d)

        await self.db.write(tx)
        return d

    async def get_definition(self, tenant_id: str, definition_id: str) -> EntityDefinition:
        d = await self.db.read(self.store.get_definition, tenant_id, definition_id)
        if d is None:
            raise NotFound("Entity definition")
        return d

    async def list_definitions(self, tenant_id: str, limit: int,
                               offset: int) -> tuple[list[EntityDefinition], int]:
        return await self.db.read(self.store.list_definitions, tenant_id, limit, offset)

    async def update_definition(self, tenant_id: str, definition_id: str,
                                patch: Mapping[str, Any]) -> EntityDefinition:
        """`description` replaces; `fields` merges (a null type removes the field). Retyping
        or removing a field a schedule uses is a conflict."""
        if "fields" in patch:
            if patch["fields"] is None:
                raise InvalidField(("body", "fields"), "may not be null", "none_forbidden")
            planning.check_fields(patch["fields"], ("body", "fields"), allow_null=True)
        now = self.clock.now_ms()

        def tx(c: Tx) -> EntityDefinition:
            d = self._definition(c, tenant_id, definition_id)
            if "description" in patch:
                d.description = patch["description"]
            if "fields" in patch:
                merged = dict(d.fields)
                changed: list[str] = []
                for name, ftype in patch["fields"].items():
                    if ftype is None:
                        if name in merged:
                            changed.append(name)
                            del merged[name]
                    else:
                        if name in merged and merged[name] != ftype:
                            changed.append(name)
                        merged[name] = ftype
                if not merged:
                    raise InvalidField(("body", "fields"), "a definition keeps at least one "
                                       "field", "too_short")
                if len(merged) > planning.MAX_FIELDS:
                    raise InvalidField(("body", "fields"),
                                       f"a definition has at most {planning.MAX_FIELDS} fields",
                                       "too_long")
                if changed:
                    used = used_fields(self.store.schedules_of_definition(c, d.id))
                    for name in changed:
                        if name in used:
                            raise Conflict(f"Field {name!r} is used by schedule {used[name]}; "
                                           "it cannot be retyped or removed")
                d.fields = merged
            d.updated_ms = now
            self.store.update_definition(c, d)
            return d

        return await self.db.write(tx)

    async def delete_definition(self, tenant_id: str, definition_id: str) -> None:
        def tx(c: Tx) -> None:
            d = self._definition(c, tenant_id, definition_id)
            users = self.store.schedules_of_definition(c, d.id)
            if users:
                raise Conflict(f"Entity definition is used by {len(users)} schedule(s) "
                               f"(e.g. {users[0].id}); delete or change them first")
            self.store.delete_definition(c, d.id)

        await self.db.write(tx)

    def _definition(self, c: Tx, tenant_id: str, definition_id: str) -> EntityDefinition:
        d = self.store.get_definition(c, tenant_id, definition_id)
        if d is None:
            raise NotFound("Entity definition")
        return d

    def _plans(self, c: Tx, d: EntityDefinition
               ) -> list[tuple[Schedule, planning.RelativePlan]]:
        return [(s, plan_of(s, d)) for s in self.store.schedules_of_definition(c, d.id)
                if s.status is not ScheduleStatus.completed]

    # ------------------------------------------------------------------ records
    async def put_record(self, tenant_id: str, definition_id: str, key: str,
                         data: Any) -> tuple[EntityRecord, bool]:
        """(record, created). Re-plans every relative schedule of the definition for it."""
        check_key(key, ("path", "key"))
        now = self.clock.now_ms()

        def tx(c: Tx) -> tuple[EntityRecord, bool, list[int | None]]:
            d = self._definition(c, tenant_id, definition_id)
            planning.check_data(d.fields, data, ("body", "data"))
            old = self.store.get_record(c, d.id, key)
            self.store.upsert_records(c, d.id, [(key, _enc.encode(data).decode())], now)
            if old is None:
                self.store.add_record_count(c, d.id, 1, now)
            plans = self._plans(c, d)
            self.planner.replan_records(c, plans, [(key, data)], now)
            rec = EntityRecord(key=key, data=data, updated_ms=now,
                               created_ms=now if old is None else old.created_ms)
            return rec, old is None, [s.next_run_ms for s, _ in plans]

        rec, created, nexts = await self.db.write(tx)
        self._wake_any(nexts)
        return rec, created

    async def get_record(self, tenant_id: str, definition_id: str, key: str) -> EntityRecord:
        check_key(key, ("path", "key"))

        def read(c: Tx) -> EntityRecord:
            d = self._definition(c, tenant_id, definition_id)
            rec = self.store.get_record(c, d.id, key)
            if rec is None:
                raise NotFound("Record")
            return rec

        return await self.db.read(read)

    async def delete_record(self, tenant_id: str, definition_id: str, key: str) -> None:
        check_key(key, ("path", "key"))
        now = self.clock.now_ms()

        def tx(c: Tx) -> None:
            d = self._definition(c, tenant_id, definition_id)
            if not self.store.delete_records(c, d.id, [key]):
                raise NotFound("Record")
            self.store.add_record_count(c, d.id, -1, now)
            schedules = self.store.schedules_of_definition(c, d.id)
            self.planner.drop_records(c, schedules, [key], now)

        await self.db.write(tx)

    async def list_records(self, tenant_id: str, definition_id: str, after: str | None,
                           limit: int) -> tuple[list[EntityRecord], str | None]:
        def read(c: Tx) -> tuple[list[EntityRecord], str | None]:
            d = self._definition(c, tenant_id, definition_id)
            page = self.store.list_records(c, d.id, after, limit + 1)
            more = len(page) > limit
            page = page[:limit]
            return page, (page[-1].key if more and page else None)

        return await self.db.read(read)

    async def batch(self, tenant_id: str, definition_id: str,
                    upsert: Sequence[tuple[Any, Any]], delete: Sequence[Any]) -> tuple[int, int]:
        """Upserts (key, data) and deletes (keys), all or none, in one transaction with their
        re-planning: (upserted, deleted: keys that existed)."""
        if len(upsert) + len(delete) > MAX_BATCH_ITEMS:
            raise InvalidField(("body", "upsert" if upsert else "delete"),
                               f"a batch holds at most {MAX_BATCH_ITEMS:,} items in all "
                               f"(upsert and delete), not {len(upsert) + len(delete):,}",
                               "too_long")
        seen: set[str] = set()
        items: list[tuple[str, dict[str, Any]]] = []
        for i, (key, data) in enumerate(upsert):
            check_key(key, ("body", "upsert", i, "key"))
            if key in seen:
                raise InvalidField(("body", "upsert", i, "key"),
                                   "this key is already in the batch", "value_error")
            seen.add(key)
            if not isinstance(data, dict):
                raise InvalidField(("body", "upsert", i, "data"), "Input should be an object",
                                   "type_error")
            items.append((key, data))
        keys_del: list[str] = []
        for i, key in enumerate(delete):
            check_key(key, ("body", "delete", i))
            if key in seen:
                raise InvalidField(("body", "delete", i), "this key is already in the batch",
                                   "value_error")
            seen.add(key)
            keys_del.append(key)
        encoded = [(k, _enc.encode(data).decode()) for k, data in items]
        now = self.clock.now_ms()

        def tx(c: Tx) -> tuple[int, int, list[int | None]]:
            d = self._definition(c, tenant_id, definition_id)
            fields = d.fields
            for i, (_, data) in enumerate(items):
                planning.check_data(fields, data, ("body", "upsert", i, "data"))
            existing = self.store.existing_record_keys(c, d.id, [k for k, _ in items]) if (
                items) else set()
            created = len(items) - len(existing)
            self.store.upsert_records(c, d.id, encoded, now)
            deleted = self.store.delete_records(c, d.id, keys_del) if keys_del else 0
            self.store.add_record_count(c, d.id, created - deleted, now)
            schedules = self.store.schedules_of_definition(c, d.id)
            live = [s for s in schedules if s.status is not ScheduleStatus.completed]
            if items:
                new_keys = {k for k, _ in items if k not in existing}
                self.planner.replan_records(c, [(s, plan_of(s, d)) for s in live], items, now,
                                            new_keys)
            if keys_del:
                self.planner.drop_records(c, live, keys_del, now)
            return len(items), deleted, [s.next_run_ms for s in live]

        n, m, nexts = await self.db.write(tx)
        self._wake_any(nexts)
        return n, m

    def _wake_any(self, nexts: Sequence[int | None]) -> None:
        found = [n for n in nexts if n is not None]
        if found:
            self._wake(min(found))


def occurrence_preview(s: Schedule, start_ms: int, limit: int) -> list[int]:
    """The next `limit` fire times of a timer schedule from its next_run_ms on."""
    timer = timing.compile_timer(s.schedule_type, s.schedule_expression, s.timezone,
                                 anchor_ms=s.created_ms, start_ms=s.start_ms, end_ms=s.end_ms)
    out = [start_ms]
    while len(out) < limit:
        nxt = timer.next_after(out[-1])
        if nxt is None:
            break
        out.append(nxt)
    return out


def due_of(s: Schedule, record_key: str | None, occurrence_ms: int) -> int:
    """When an occurrence is planned to start: its flexible-window offset added (the rate
    limit may defer it further when it is claimed)."""
    ident = s.id if record_key is None else planning.flex_key(s.id, record_key)
    return occurrence_ms + policies.flex_offset_ms(ident, occurrence_ms,
                                                   s.flexible_window_minutes)
