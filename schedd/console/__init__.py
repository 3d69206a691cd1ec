"""The web console at /ui: server-rendered pages for people (SPEC §9, docs/console.md).

Its own HTTP layer beside `schedd.api`: it calls services only, with the tenant of the
signed-in key. The daemon mounts it with route_handlers() and template_config().
"""

from __future__ import annotations

from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from litestar import Router
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.template.config import TemplateConfig

from schedd.console import routes, static
from schedd.timing import format_ms

# Every console answer: never framed, no referrer leaves it, nothing loads from elsewhere
# (no CDN, no remote font: the page works on a box without internet), never cached.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def _environment() -> Environment:
    env = Environment(loader=PackageLoader("schedd.console", "templates"),
                      autoescape=select_autoescape(["html"]), trim_blocks=True,
                      lstrip_blocks=True)
    env.globals["static"] = static.url
    env.filters["ms"] = format_ms
    return env


def template_config() -> TemplateConfig[JinjaTemplateEngine]:
    return TemplateConfig(instance=JinjaTemplateEngine.from_environment(_environment()))


def route_handlers() -> list[Any]:
    from litestar.datastructures import ResponseHeader

    headers = [ResponseHeader(name=k, value=v) for k, v in SECURITY_HEADERS.items()]
    return [
        Router("/ui", route_handlers=routes.HANDLERS, exception_handlers=routes.EXCEPTION_HANDLERS,
               include_in_schema=False, response_headers=headers),
        Router("/ui/static", route_handlers=[static.serve], include_in_schema=False),
    ]
