"""The console's static files (CSS, a few lines of JS, vendored htmx), read once from the
package (works from a wheel or the single-file build) and served with a content hash in
the URL, so browsers may cache them for good."""

from __future__ import annotations

import hashlib
from functools import cache
from importlib import resources

from litestar import Response, get
from litestar.exceptions import NotFoundException
from litestar.params import FromPath

TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".svg": "image/svg+xml"}
FILES = ("console.css", "console.js", "htmx.min.js", "favicon.svg")


@cache
def _load(name: str) -> tuple[bytes, str]:
    data = resources.files("schedd.console").joinpath("static", name).read_bytes()
    return data, hashlib.sha256(data).hexdigest()[:12]


def url(name: str) -> str:
    return f"/ui/static/{name}?v={_load(name)[1]}"


@get("/{name:str}", sync_to_thread=False)
def serve(name: FromPath[str]) -> Response[bytes]:
    if name not in FILES:
        raise NotFoundException()
    data, _ = _load(name)
    ext = name[name.rfind("."):]
    return Response(data, media_type=TYPES[ext], headers={
        "Cache-Control": "public, max-age=31536000, immutable",
        "X-Content-Type-Options": "nosniff"})
