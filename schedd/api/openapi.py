"""Make the served OpenAPI document say exactly what the API accepts (docs/openapi.md).

Litestar builds `/schema/openapi.json` from the handlers. Two things in it are not what the
app does, and this module corrects them once, after the app is built:

- A msgspec Struct's component is Litestar's reading of the Struct, which loses part of
  what msgspec enforces: `forbid_unknown_fields` is not emitted as
  `additionalProperties: false`, a bound of 0 is dropped (`ge=0` is falsy), and a field
  typed `X | UnsetType` (a partial update) loses its minimum and its docstring. msgspec's
  own JSON Schema of the same Struct is, by construction, what its decoder enforces, so
  each request and response Struct's component is replaced by it (field descriptions and
  the Struct's docstring included).
- Every operation lists Litestar's 400 "Validation Exception"; schedd never answers 400
  (schedd/api/errors.py turns every validation failure into the 422 each route documents),
  so it is removed.
- A request body's examples are moved from an `allOf` wrapper of its schema to the media
  type's `examples`.

Rules a schema cannot state (a cron expression's syntax, an IANA zone name, end_at after
start_at...) are in the fields' descriptions.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterator
from typing import Any

import msgspec
from litestar import Litestar
from litestar._openapi.plugin import OpenAPIPlugin  # the class app.plugins holds (litestar <3)
from litestar.handlers import HTTPRouteHandler

REF_PREFIX = "#/components/schemas/"


def _structs_in(annotation: Any, seen: set[Any]) -> Iterator[type[msgspec.Struct]]:
    """The msgspec Structs an annotation names, at any depth of its type arguments."""
    stack = [annotation]
    while stack:
        t = stack.pop()
        if id(t) in seen:
            continue
        seen.add(id(t))
        if isinstance(t, type) and issubclass(t, msgspec.Struct):
            yield t
            continue
        origin = typing.get_origin(t)
        if origin is typing.Annotated:
            stack.append(typing.get_args(t)[0])
        elif origin is not None or isinstance(t, types.UnionType):
            stack.extend(typing.get_args(t))


def _documented_structs(app: Litestar) -> list[type[msgspec.Struct]]:
    found: dict[type[msgspec.Struct], None] = {}
    seen: set[Any] = set()
    for route in app.routes:
        for handler in getattr(route, "route_handlers", ()):
            if not isinstance(handler, HTTPRouteHandler) or not handler.include_in_schema:
                continue
            sig = handler.parsed_fn_signature
            annotations = [p.annotation for p in sig.parameters.values()]
            annotations.append(sig.return_type.annotation)
            annotations.extend(spec.data_container for spec in (handler.responses or {}).values())
            for a in annotations:
                for struct in _structs_in(a, seen):
                    found[struct] = None
    return list(found)


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str):
                yield v
            else:
                yield from _refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from _refs(v)


def exact_components(doc: dict[str, Any], structs: list[type[msgspec.Struct]]) -> list[str]:
    """Replace each Struct's component by msgspec's schema of it; answer the names replaced.

    A component is replaced only when it is unambiguously the same Struct: same name, same
    property names, and every component msgspec's version refers to exists in the document
    (Litestar renames colliding names; such a component is left as Litestar made it).
    """
    comps: dict[str, Any] = doc.setdefault("components", {}).setdefault("schemas", {})
    if not structs:
        return []
    _, generated = msgspec.json.schema_components(structs, ref_template=REF_PREFIX + "{name}")
    replaced = []
    for name, schema in generated.items():
        current = comps.get(name)
        if current is None or "properties" not in schema:
            continue  # not in the document, or an enum (Litestar's enums are exact)
        if set(current.get("properties", {})) != set(schema["properties"]):
            continue
        if any(r.removeprefix(REF_PREFIX) not in comps for r in _refs(schema)):
            continue
        comps[name] = schema
        replaced.append(name)
    return replaced


def drop_unused_400(doc: dict[str, Any]) -> None:
    """schedd answers every validation failure with 422; Litestar's 400 never happens."""
    for item in doc.get("paths", {}).values():
        for op in item.values():
            if isinstance(op, dict) and isinstance(op.get("responses"), dict):
                op["responses"].pop("400", None)


def unwrap_body_examples(doc: dict[str, Any]) -> None:
    """Litestar puts a request body's examples on an `allOf: [$ref]` wrapper of its schema;
    many client generators make a needless type of such a wrapper. The schema becomes the
    plain `$ref` again and the examples go to the media type's `examples`, where OpenAPI
    expects them."""
    for item in doc.get("paths", {}).values():
        for op in item.values():
            body = op.get("requestBody") if isinstance(op, dict) else None
            for media in (body or {}).get("content", {}).values():
                schema = media.get("schema", {})
                if set(schema) == {"allOf", "examples"} and len(schema["allOf"]) == 1:
                    media["schema"] = schema["allOf"][0]
                    media["examples"] = {f"example{i}": {"value": v}
                                         for i, v in enumerate(schema["examples"], 1)}


def served_openapi(app: Litestar) -> dict[str, Any]:
    """The document GET /schema/openapi.json answers: built once and cached by Litestar."""
    doc: dict[str, Any] = app.plugins.get(OpenAPIPlugin).provide_openapi_schema()
    return doc


class _ExactOpenAPIPlugin(OpenAPIPlugin):
    """Litestar's plugin, whose document is corrected (see the module docstring) when it is
    first built. Litestar builds it on first use; so do we: building and correcting it costs
    ~0.13 s of CPU, which an app that never serves it (every test's app) should not pay."""

    __slots__ = ()

    def provide_openapi_schema(self) -> dict[str, Any]:
        fresh = not self._openapi_schema
        doc = super().provide_openapi_schema()
        if fresh:
            exact_components(doc, _documented_structs(self.app))
            drop_unused_400(doc)
            unwrap_body_examples(doc)
        return doc


def finalize_openapi(app: Litestar) -> None:
    """Make the document the app serves exact, lazily (create_app calls this once): the
    app's own OpenAPI plugin becomes `_ExactOpenAPIPlugin` (same slots, same state)."""
    plugin = app.plugins.get(OpenAPIPlugin)
    plugin.__class__ = _ExactOpenAPIPlugin
