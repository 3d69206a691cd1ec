"""Rules the OpenAPI document states in words because a JSON Schema cannot state them.

tests/test_openapi_fuzz.py accepts a 422 on a schema-valid ("positive") request only when
EVERY item of its `detail` is listed here for that operation: its `loc` starts with the
listed prefix and its `msg` matches the listed pattern. Anything else a schema-valid
request is refused for is a finding: put the constraint in the schema instead (msgspec
`Meta`, `forbid_unknown_fields`, Litestar `Parameter`; docs/openapi.md).

Each entry must be described in the field's or the operation's description in the
document (a test checks that the field has a description). Keys are schemathesis's
operation labels, "METHOD /path/{param}" as the document spells the path.
"""

from __future__ import annotations

from typing import Final

ANY: Final = r"(?s).*"
# timing.parse_instant_ms / the range check: an instant the schema's format allows but the
# server cannot place (outside 1970..9999, or a local time the zone does not have)
_INSTANT: Final = ANY
_ZONE: Final = ANY  # an IANA zone name: only the tz database knows the list
_EXPRESSION: Final = ANY  # cron / interval / once syntax, occurrences, the catch-up window

Rule = tuple[tuple[str | int, ...], str]
_ACTIONS: Final = "/v1/orgs/{org_id}/workspaces/{workspace_id}/apps/{app_id}/actions"
# an action's timing is the native one (cron / once-time / zone); thread_id is required by
# thread_mode fixed, thread_id_template by template; the payload nests at most 64 levels
_ACTION_FIELDS: Final[list[Rule]] = [
    (("body", "cron_expression"), _EXPRESSION),
    (("body", "scheduled_at"), _EXPRESSION),
    (("body", "timezone"), _ZONE),
    (("body", "thread_id"), r"required when thread_mode is 'fixed'"),
    (("body", "thread_id_template"), r"required when thread_mode is 'template'"),
    (("body", "payload"), r"nested too deeply"),
]
# exactly one of period / timestamp, matching once; a timestamp inside the catch-up window
_KRAGLE_FIELDS: Final[list[Rule]] = [
    (("body", "config"), ANY),
    (("body", "action"), ANY),  # action_config's shape depends on action_type
]

SEMANTIC_422: Final[dict[str, list[Rule]]] = {
    "POST /v1/schedules": [
        (("body", "schedule_expression"), _EXPRESSION),
        # relative schedules: the definition, field and filter must exist and fit; the
        # relative_* fields belong to relative schedules only
        (("body", "relative_entity_definition_id"), ANY),
        (("body", "relative_field_name"), ANY),
        (("body", "relative_offset_days"), r"only a relative schedule"),
        (("body", "relative_filter"), ANY),
        (("body", "timezone"), _ZONE),
        (("body", "start_at"), _INSTANT),
        (("body", "end_at"), _INSTANT),  # also: end_at must be after start_at
        (("body", "action_type"), r"command actions are disabled"),
        (("body", "action_config"), ANY),  # its shape depends on action_type
    ],
    "PUT /v1/schedules/{schedule_id}": [
        (("body", "schedule_expression"), _EXPRESSION),
        (("body", "relative_field_name"), ANY),
        (("body", "relative_offset_days"), r"only a relative schedule"),
        (("body", "relative_filter"), ANY),
        (("body", "timezone"), _ZONE),
        (("body", "action_config"), ANY),
    ],
    # the Syncs API (seed 004): executionConfig's shape depends on executionBackend and on
    # whether the sync is active; a schedule's expression and zone as for /v1; temporal
    # needs a build with Temporal support
    "POST /api/v1/syncs": [
        (("body", "executionConfig"), ANY),
        (("body", "executionBackend"), r"the temporal backend is not available"),
        (("body", "schedule"), ANY),
    ],
    "PATCH /api/v1/syncs/{sync_id}": [
        (("body", "executionConfig"), ANY),
        (("body", "executionBackend"), r"the temporal backend is not available"),
        (("body", "schedule"), ANY),
    ],
    # a record's declared fields must have their types (the definition is data, not schema)
    "PUT /v1/entity-definitions/{definition_id}/records/{key}": [
        (("body", "data"), ANY),
    ],
    "POST /v1/entity-definitions/{definition_id}/records/batch": [
        (("body", "upsert"), ANY),  # a data value of the wrong type; a repeated key; > 10,000
        (("body", "delete"), ANY),
    ],
    "PUT /v1/entity-definitions/{definition_id}": [
        (("body", "fields"), r"a definition (keeps at least|has at most)"),  # 1..100 fields
    ],
    # the compatibility routers (docs/compat.md): their fields map to the native ones
    "GET " + _ACTIONS: [(("query", "cursor"), r"Invalid cursor")],
    "GET " + _ACTIONS + "/{action_id}/runs": [(("query", "cursor"), r"Invalid cursor")],
    "POST " + _ACTIONS: _ACTION_FIELDS,
    "PUT " + _ACTIONS + "/{action_id}": _ACTION_FIELDS,
    "POST /kragle/schedules": _KRAGLE_FIELDS,
    "PUT /kragle/schedules/{id}": _KRAGLE_FIELDS,
    "GET /v1/preview": [
        (("query", "schedule_expression"), _EXPRESSION),
        (("query", "schedule_type"), r"relative"),
        (("query", "timezone"), _ZONE),
        (("query", "after"), _INSTANT),
    ],
}
