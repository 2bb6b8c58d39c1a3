"""GET / and GET /assets/{name}: the web dashboard, served by this server from the package.

The dashboard is static files (`millimetric/web/dashboard/`): a client of the admin and read APIs
with no query path of its own. The page is never cached, so a new release shows at once; it names
each asset with a hash of its content, so the assets themselves may be cached for a year.
"""

from __future__ import annotations

import hashlib
from functools import cache
from importlib import resources
from typing import NamedTuple

from starlette.requests import Request
from starlette.responses import Response

from millimetric.errors import ApiError

ASSET_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
# The page loads only its own scripts, styles and API answers; nothing from another origin.
POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


class Asset(NamedTuple):
    body: bytes
    media_type: str
    etag: str


@cache
def assets() -> dict[str, Asset]:
    """Every script and stylesheet, read once (the package cannot change while it runs)."""
    found: dict[str, Asset] = {}
    for entry in (resources.files("millimetric") / "web" / "dashboard").iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1]
        if suffix in ASSET_TYPES:
            body = entry.read_bytes()
            found[entry.name] = Asset(body, ASSET_TYPES[suffix], hashlib.sha256(body).hexdigest()[:16])
    return found


@cache
def page() -> bytes:
    """index.html with each `{{name}}` placeholder replaced by the asset's versioned URL."""
    text = (resources.files("millimetric") / "web" / "dashboard" / "index.html").read_text("utf-8")
    for name, asset in assets().items():
        text = text.replace("{{" + name + "}}", f"/assets/{name}?v={asset.etag}")
    return text.encode()


async def index(_request: Request) -> Response:
    return Response(page(), media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)


async def asset(request: Request) -> Response:
    found = assets().get(request.path_params["name"])
    if found is None:
        raise ApiError("not_found")
    etag = f'"{found.etag}"'
    headers = {
        "ETag": etag,
        "Cache-Control": "public, max-age=31536000, immutable",
        "X-Content-Type-Options": "nosniff",
    }
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(found.body, media_type=found.media_type, headers=headers)
