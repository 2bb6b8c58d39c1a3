"""Request bodies of the compatible routes: JSON, optionally gzip, within byte limits."""

from __future__ import annotations

import base64
import binascii
import zlib

from starlette.requests import Request

from millimetric.api.body import read_body, require_json
from millimetric.errors import ApiError
from millimetric.ingest.schemas import invalid_payload


async def read_json(request: Request, limit: int) -> bytes:
    """The body, gunzipped when `Content-Encoding: gzip`; over `limit` bytes (sent or unzipped): 413."""
    require_json(request)
    body = await read_body(request, limit)
    encoding = request.headers.get("content-encoding", "").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding != "gzip":
        raise ApiError("unsupported_media_type", {"expected": "application/json, optionally Content-Encoding: gzip"})
    unzip = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        data = unzip.decompress(body, limit + 1)
        if len(data) > limit:
            raise ApiError("payload_too_large", {"limit_bytes": limit})
        if not unzip.eof:
            raise invalid_payload(form_error="Body is not a complete gzip stream")
    except zlib.error:
        raise invalid_payload(form_error="Body is not valid gzip") from None
    return data


def basic_username(authorization: str | None) -> str | None:
    """The user name of HTTP Basic credentials (Segment puts its write key there), if any."""
    if not authorization or authorization[:6].lower() != "basic ":
        return None
    try:
        decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    return decoded.split(":", 1)[0] or None


def is_basic(authorization: str | None) -> bool:
    return bool(authorization) and authorization[:6].lower() == "basic "  # type: ignore[index]
