"""Reading JSON request bodies: media type, byte limit enforced while reading."""

from __future__ import annotations

import asyncio

from starlette.requests import Request

from millimetric.errors import ApiError

BODY_TIMEOUT_SECONDS = 10.0


def require_json(request: Request) -> None:
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        raise ApiError("unsupported_media_type", {"expected": "application/json"})


async def read_body(request: Request, limit: int, timeout: float = BODY_TIMEOUT_SECONDS) -> bytes:
    """The whole body, refusing as soon as it is known to exceed `limit` bytes (413), or when it
    trickles in slower than `timeout` seconds in all (408): neither a huge nor a slow body may
    hold memory or a connection."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError("payload_too_large", {"limit_bytes": limit})
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise ApiError("payload_too_large", {"limit_bytes": limit})
                chunks.append(chunk)
    except TimeoutError:
        raise ApiError("request_timeout", {"timeout_s": timeout}) from None
    return b"".join(chunks)
