"""GET /metrics: Prometheus text, no key (like /healthz)."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get

from schedd.api.common import services_of

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@get("/metrics", opt={"public": True}, summary="Prometheus metrics", include_in_schema=False)
async def metrics(request: Request[Any, Any, Any]) -> Response[bytes]:
    body = await services_of(request).metrics_text()
    return Response(body, media_type=CONTENT_TYPE)
