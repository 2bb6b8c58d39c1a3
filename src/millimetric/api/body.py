"""Reading JSON request bodies: media type, byte limit enforced while reading."""

from __future__ import annotations

from starlette.requests import Request

from millimetric.errors import ApiError


def require_json(request: Request) -> None:
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        raise ApiError("unsupported_media_type", {"expected": "application/json"})


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refusing as soon as it is known to exceed `limit` bytes (413), so a huge
    body never sits in memory. A body that trickles in too slowly is cut off by the HTTP protocol
    (`api/protocol.py`, 408)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError("payload_too_large", {"limit_bytes": limit})
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError("payload_too_large", {"limit_bytes": limit})
        chunks.append(chunk)
    return b"".join(chunks)
