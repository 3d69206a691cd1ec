"""The HTTP layer: create_app() builds the Litestar app over the services."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from litestar import Litestar, Router
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme

from schedd import __version__
from schedd.api import entities, metrics, runs, schedules, system
from schedd.api.common import AUTH_FAILED
from schedd.api.compat import actions as compat_actions
from schedd.api.compat import kragle as compat_kragle
from schedd.api.compat import syncs as compat_syncs
from schedd.api.errors import EXCEPTION_HANDLERS
from schedd.api.fastpath import App
from schedd.api.openapi import finalize_openapi
from schedd.auth import token_from_headers
from schedd.config import Settings
from schedd.services import Services

MAX_BODY_BYTES = 1024 * 1024


async def api_key_guard(
    connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler
) -> None:
    """Every /v1 route needs a key; the tenant it belongs to is kept on the request."""
    failed = connection.scope["state"].pop(AUTH_FAILED, None)
    if failed is not None:  # api/fastpath.py checked this request's key: once is enough
        raise failed
    svc: Services = connection.app.state.services
    token = token_from_headers(
        connection.headers.get("authorization"), connection.headers.get("x-api-key")
    )
    connection.state.key_id, connection.state.tenant_id = await svc.authenticate_key(token)


def create_app(
    services: Services | None,
    *,
    readiness: Callable[[], tuple[bool, dict[str, Any]]] | None = None,
    lifespan: Sequence[Any] = (),
    extra_v1_handlers: Sequence[Any] = (),
    syncs: bool = False,
    extra_routes: Sequence[Any] = (),
    template_config: Any = None,
    settings: Settings | None = None,
) -> Litestar:
    """The app. `settings` decides which compatibility routers are served (all when None:
    the defaults); `services` may come later, through app.state, as the daemon does."""
    settings = settings or (services.settings if services is not None else Settings())
    security: list[dict[str, list[str]]] = [{"bearer": []}, {"apiKey": []}]
    compat: list[Any] = []
    if settings.actions_enabled:
        compat.append(compat_actions.router([api_key_guard], security))
    if settings.kragle_enabled:
        compat.append(compat_kragle.router(api_key_guard, security,
                                           public_read=settings.kragle_public_read,
                                           tenant_name=settings.kragle_tenant))
    v1 = Router(
        "/v1",
        route_handlers=[*schedules.HANDLERS, *runs.HANDLERS, *entities.HANDLERS,
                        *extra_v1_handlers],
        guards=[api_key_guard],
        security=[{"bearer": []}, {"apiKey": []}],
    )
    preview = Router("/", route_handlers=[system.preview], guards=[api_key_guard],
                     security=[{"bearer": []}, {"apiKey": []}])
    if syncs:
        compat.append(compat_syncs.router())
    app = App(
        route_handlers=[system.healthz, system.readyz, metrics.metrics, v1, preview, *compat,
                        *extra_routes],
        template_config=template_config,
        exception_handlers=EXCEPTION_HANDLERS,
        openapi_config=OpenAPIConfig(
            title="schedd",
            version=__version__,
            description="Self-hosted scheduled-actions daemon: the native /v1 API, and the"
                        " Actions API (seed 002), Kragle (seed 003) and Syncs API (seed 004)"
                        " compatibility routers.",
            components=Components(security_schemes={
                "bearer": SecurityScheme(type="http", scheme="bearer"),
                "apiKey": SecurityScheme(type="apiKey", name="X-Api-Key",
                                         security_scheme_in="header"),
                "vaiToken": SecurityScheme(type="apiKey", name="vai_token",
                                           security_scheme_in="cookie"),
            }),
        ),
        lifespan=list(lifespan),
        logging_config=None,
        request_max_body_size=MAX_BODY_BYTES,
        debug=False,
    )
    app.state.services = services
    app.state.readiness = readiness
    # last, once every route is registered: the served document, made exact (docs/openapi.md)
    finalize_openapi(app)
    return app
