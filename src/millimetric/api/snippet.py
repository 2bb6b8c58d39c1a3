"""GET /v1/a.js: the browser snippet (`millimetric/web/a.js`), served as its readable source.

Sites embed it on every page, so it is cacheable: a strong ETag (the content hash) lets browsers
revalidate with a 304, and clients that accept gzip get the pre-compressed bytes.
"""

from __future__ import annotations

import gzip
import hashlib
from functools import cache
from importlib import resources
from typing import NamedTuple

from starlette.requests import Request
from starlette.responses import Response

# Browsers and CDNs reuse it for an hour, then revalidate (cheap: a 304 by ETag); a new release
# reaches every page within that hour.
CACHE_CONTROL = "public, max-age=3600, stale-while-revalidate=86400"
MEDIA_TYPE = "text/javascript; charset=utf-8"


class Snippet(NamedTuple):
    source: bytes
    gzipped: bytes
    etag: str


@cache
def snippet() -> Snippet:
    """Read and compressed once (the file cannot change while the package is installed)."""
    source = (resources.files("millimetric") / "web" / "a.js").read_bytes()
    # mtime=0: the same source always gives the same bytes, on every worker and node.
    return Snippet(source, gzip.compress(source, 9, mtime=0), '"' + hashlib.sha256(source).hexdigest()[:32] + '"')


def _accepts_gzip(request: Request) -> bool:
    for coding in request.headers.get("accept-encoding", "").split(","):
        name, _, params = coding.strip().partition(";")
        if name.strip().lower() in ("gzip", "*") and params.replace(" ", "") not in ("q=0", "q=0.0", "q=0.00"):
            return True
    return False


async def a_js(request: Request) -> Response:
    current = snippet()
    headers = {"ETag": current.etag, "Cache-Control": CACHE_CONTROL, "Vary": "Accept-Encoding"}
    presented = {tag.strip().removeprefix("W/") for tag in request.headers.get("if-none-match", "").split(",")}
    if current.etag in presented or "*" in presented:
        return Response(status_code=304, headers=headers)
    if _accepts_gzip(request):
        return Response(current.gzipped, media_type=MEDIA_TYPE, headers={**headers, "Content-Encoding": "gzip"})
    return Response(current.source, media_type=MEDIA_TYPE, headers=headers)
