"""JSON responses encoded with msgspec, and the error envelope."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.responses import Response

from millimetric.errors import ApiError

_encode = msgspec.json.Encoder().encode


def json_response(content: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(_encode(content), status_code=status_code, headers=headers, media_type="application/json")


def error_response(error: ApiError) -> Response:
    return json_response(error.body(), error.status, error.headers)
