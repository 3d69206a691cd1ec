"""/v1/entity-definitions and their records (SPEC §3.7)."""

from __future__ import annotations

import urllib.parse
from typing import Annotated, Any

from litestar import Request, Response, delete, get, post, put
from litestar.params import JSONBody, PathParameter, QueryParameter

from schedd.api.common import ERRORS, path_uuid, services_of, tenant_of
from schedd.api.schemas import (
    MAX_LIST_OFFSET,
    NO_NUL,
    BatchIn,
    BatchOut,
    DefinitionCreate,
    DefinitionList,
    DefinitionOut,
    DefinitionUpdate,
    RecordIn,
    RecordList,
    RecordOut,
)
from schedd.errors import InvalidField
from schedd.models import EntityDefinition, EntityRecord
from schedd.timing import format_ms

R = Request[Any, Any, Any]
DID = "/{definition_id:str}"
KEY = "/{key:str}"
DefinitionIdPath = Annotated[str, PathParameter(format="uuid", title="Definition Id")]
KeyPath = Annotated[str, PathParameter(
    title="Key", min_length=1, max_length=200, pattern=NO_NUL,
    description="1..200 characters, no NUL; percent-encoded, as UTF-8 (other bytes: 422).")]
# A batch of 10,000 records is larger than other requests' 1 MiB limit.
BATCH_MAX_BODY_BYTES = 32 * 1024 * 1024


def _key(request: R, key: str) -> str:
    """The path's record key. Percent-encoded bytes that are not UTF-8 reach the handler
    decoded to U+FFFD, so %FF and %FE would be one key: the raw path tells them apart."""
    if "\ufffd" in key:
        raw = request.scope.get("raw_path")
        if isinstance(raw, bytes):
            segment = raw.partition(b"?")[0].rsplit(b"/", 1)[-1]
            try:
                urllib.parse.unquote_to_bytes(segment).decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidField(("path", "key"), "the key's percent-encoded bytes are not "
                                   "valid UTF-8", "string_unicode") from None
    return key


def definition_out(d: EntityDefinition) -> DefinitionOut:
    return DefinitionOut(id=d.id, tenant_id=d.tenant_id, name=d.name,
                         description=d.description, fields=d.fields,
                         record_count=d.record_count, created_at=format_ms(d.created_ms),
                         updated_at=format_ms(d.updated_ms))


def record_out(r: EntityRecord) -> RecordOut:
    return RecordOut(key=r.key, data=r.data, created_at=format_ms(r.created_ms),
                     updated_at=format_ms(r.updated_ms))


def _did(value: str) -> str:
    return path_uuid(value, "definition_id")


@post("/entity-definitions", responses=ERRORS, summary="Create Entity Definition")
async def create_definition(request: R,
                            data: JSONBody[DefinitionCreate]) -> Response[DefinitionOut]:
    ent = services_of(request).entities
    d = await ent.create_definition(tenant_of(request), data.name, data.description, data.fields)
    return Response(definition_out(d), status_code=201)


@get("/entity-definitions", responses=ERRORS, summary="List Entity Definitions")
async def list_definitions(
    request: R,
    limit: Annotated[int, QueryParameter(ge=1, le=200)] = 50,
    offset: Annotated[int, QueryParameter(ge=0, le=MAX_LIST_OFFSET)] = 0,
) -> DefinitionList:
    ent = services_of(request).entities
    items, total = await ent.list_definitions(tenant_of(request), limit, offset)
    return DefinitionList(entity_definitions=[definition_out(d) for d in items], total=total,
                          limit=limit, offset=offset, has_more=offset + len(items) < total)


@get("/entity-definitions" + DID, responses=ERRORS, summary="Get Entity Definition")
async def get_definition(request: R, definition_id: DefinitionIdPath) -> DefinitionOut:
    ent = services_of(request).entities
    return definition_out(await ent.get_definition(tenant_of(request), _did(definition_id)))


@put("/entity-definitions" + DID, responses=ERRORS, summary="Update Entity Definition")
async def update_definition(request: R, definition_id: DefinitionIdPath,
                            data: JSONBody[DefinitionUpdate]) -> DefinitionOut:
    ent = services_of(request).entities
    d = await ent.update_definition(tenant_of(request), _did(definition_id), data.present())
    return definition_out(d)


@delete("/entity-definitions" + DID, responses=ERRORS, summary="Delete Entity Definition",
        status_code=204)
async def delete_definition(request: R, definition_id: DefinitionIdPath) -> None:
    ent = services_of(request).entities
    await ent.delete_definition(tenant_of(request), _did(definition_id))


@put("/entity-definitions" + DID + "/records" + KEY, responses=ERRORS, summary="Put Record")
async def put_record(request: R, definition_id: DefinitionIdPath, key: KeyPath,
                     data: JSONBody[RecordIn]) -> Response[RecordOut]:
    ent = services_of(request).entities
    rec, created = await ent.put_record(tenant_of(request), _did(definition_id),
                                        _key(request, key), data.data)
    return Response(record_out(rec), status_code=201 if created else 200)


@get("/entity-definitions" + DID + "/records" + KEY, responses=ERRORS, summary="Get Record")
async def get_record(request: R, definition_id: DefinitionIdPath, key: KeyPath) -> RecordOut:
    ent = services_of(request).entities
    return record_out(await ent.get_record(tenant_of(request), _did(definition_id),
                                           _key(request, key)))


@delete("/entity-definitions" + DID + "/records" + KEY, responses=ERRORS,
        summary="Delete Record", status_code=204)
async def delete_record(request: R, definition_id: DefinitionIdPath, key: KeyPath) -> None:
    ent = services_of(request).entities
    await ent.delete_record(tenant_of(request), _did(definition_id), _key(request, key))


@get("/entity-definitions" + DID + "/records", responses=ERRORS, summary="List Records")
async def list_records(
    request: R,
    definition_id: DefinitionIdPath,
    limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
    after: Annotated[str | None, QueryParameter(max_length=200, pattern=NO_NUL)] = None,
) -> RecordList:
    ent = services_of(request).entities
    page, next_after = await ent.list_records(tenant_of(request), _did(definition_id), after,
                                              limit)
    return RecordList(records=[record_out(r) for r in page], next_after=next_after)


@post("/entity-definitions" + DID + "/records/batch", responses=ERRORS,
      summary="Batch Upsert And Delete Records", status_code=200,
      request_max_body_size=BATCH_MAX_BODY_BYTES)
async def batch_records(request: R, definition_id: DefinitionIdPath,
                        data: JSONBody[BatchIn]) -> BatchOut:
    ent = services_of(request).entities
    n, m = await ent.batch(tenant_of(request), _did(definition_id),
                           [(i.key, i.data) for i in data.upsert], data.delete)
    return BatchOut(upserted=n, deleted=m)


HANDLERS = [
    create_definition, list_definitions, get_definition, update_definition, delete_definition,
    batch_records, list_records, put_record, get_record, delete_record,
]
